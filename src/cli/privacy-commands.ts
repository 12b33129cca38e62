/** `slipway privacy`: what Slipway holds about a machine, and how long it keeps run logs. */
import { apiPath } from "./client.ts";
import { commandGroup } from "./command-group.ts";
import { integer } from "./arguments.ts";

type Report = {
  device: { id: string; name: string; state: string; macs: string[]; smbiosUuid: string | null; serial: string | null; attributes: Record<string, unknown>; createdAt: string; lastSeenAt: string | null; tpmEndorsementKey: string | null };
  variables: { name: string; secret: boolean }[];
  certificates: { serial: string; status: string; notAfter: string }[];
  leases: { mac: string; ip: string; expiresAt: string }[];
  runs: { id: string; state: string; startedAt: string; endedAt: string | null; logLines: number; logsKeptUntil: string | null }[];
  associations: { id: string; kind: string; state: string; storedBytes: number; deleteAt: string | null; expiresAt: string }[];
  audit: { entries: number; first: string | null; last: string | null; actions: Record<string, number>; note: string };
  retention: { runLogDays: number; deleting: string };
};

export const privacyCommand = commandGroup("privacy", "What Slipway holds about machines, and for how long", {
  report: {
    summary: "Everything held about one device",
    args: "DEVICE",
    async run(inv) {
      const r = await inv.api().get<Report>(apiPath`/api/v1/devices/${inv.positionals[0]}/privacy-report`);
      inv.out.result(r, () => {
        const d = r.device;
        inv.out.fields([
          ["Device", `${d.name} (${d.id}), ${d.state}`], ["MACs", d.macs], ["SMBIOS UUID", d.smbiosUuid ?? "none"], ["Serial", d.serial ?? "none"],
          ["Attributes", Object.entries(d.attributes).map(([k, v]) => `${k}=${String(v)}`)], ["Recorded", d.createdAt], ["Last seen", d.lastSeenAt ?? "never"],
          ["TPM endorsement key", d.tpmEndorsementKey ?? "none"],
          ["Variables", r.variables.map((v) => `${v.name}${v.secret ? " (secret)" : ""}`)],
          ["Certificates", r.certificates.map((c) => `${c.serial} ${c.status} until ${c.notAfter}`)],
          ["Leases", r.leases.map((l) => `${l.ip} (${l.mac}) until ${l.expiresAt}`)],
          ["Runs", r.runs.map((x) => `${x.id} ${x.state} ${x.startedAt}: ${x.logLines} log lines${x.logsKeptUntil ? `, kept until ${x.logsKeptUntil}` : ""}`)],
          ["Associations", r.associations.map((a) => `${a.id} ${a.kind} ${a.state}, ${a.storedBytes} bytes stored, ${a.deleteAt ? `deleted at ${a.deleteAt}` : `expires ${a.expiresAt}`}`)],
          ["Audit entries", `${r.audit.entries}${r.audit.first ? ` from ${r.audit.first} to ${r.audit.last}` : ""} (${r.audit.note})`],
          ["Run logs kept", `${r.retention.runLogDays} days after a run ends`], ["Deleting", r.retention.deleting],
        ]);
      });
    },
  },
  settings: {
    summary: "Show or change how long run step output is kept",
    options: { "run-log-days": { type: "string", value: "DAYS", description: "Keep step output this many days after a run ends (1–3650; default 90)" } },
    async run(inv) {
      const days = inv.str("run-log-days");
      const api = inv.api();
      const s = days === undefined
        ? await api.get<{ runLogDays: number }>("/api/v1/privacy/settings")
        : await api.put<{ runLogDays: number }>("/api/v1/privacy/settings", { runLogDays: integer(days, "--run-log-days", 1, 3650) });
      inv.out.result(s, () => inv.out.line(`Run step output is kept ${s.runLogDays} days after a run ends`));
    },
  },
});
