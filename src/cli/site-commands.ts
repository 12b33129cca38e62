/** `slipway audit list`, `slipway keys` and `slipway site`: the site itself. */
import { CliError, ExitCode } from "./command.ts";
import { commandGroup } from "./command-group.ts";
import { integer, oneOf } from "./arguments.ts";
import { serverCommands } from "./server-commands.ts";
import { printable } from "./table.ts";

type AuditEntry = {
  seq: number; at: string; actor: string; action: string; object: string | null; outcome: string;
  details: Record<string, unknown> | null;
};

export const auditCommand = commandGroup("audit", "The audit log: every change and every refused request, hash-chained and signed", {
  list: {
    summary: "List audit entries in order",
    options: {
      after: { type: "string", value: "SEQ", description: "Only entries after this sequence number (to page on)" },
      limit: { type: "string", value: "N", description: "At most N entries, 1-1000" },
      action: { type: "string", value: "ACTION", description: "Only this action, e.g. device.approve" },
      actor: { type: "string", value: "ACTOR", description: "Only this actor, e.g. admin:alice" },
      outcome: { type: "string", value: "OUTCOME", description: "Only success, denied or failure" },
    },
    notes: '"slipway audit verify [--data DIR]" checks the hash chain and signatures offline, on the server machine.',
    async run(inv) {
      const after = inv.str("after");
      const limit = inv.str("limit");
      const outcome = inv.str("outcome");
      const rows = await inv.api().get<AuditEntry[]>("/api/v1/audit", {
        after: after === undefined ? undefined : integer(after, "--after", 0),
        limit: limit === undefined ? undefined : integer(limit, "--limit", 1, 1000),
        action: inv.str("action"), actor: inv.str("actor"),
        outcome: outcome === undefined ? undefined : oneOf(outcome, ["success", "denied", "failure"] as const, "--outcome"),
      });
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "SEQ", value: (e) => e.seq, align: "right" },
        { header: "AT", value: (e) => e.at },
        { header: "ACTOR", value: (e) => e.actor, max: 28 },
        { header: "ACTION", value: (e) => e.action, max: 28 },
        { header: "OBJECT", value: (e) => e.object, max: 48 },
        { header: "OUTCOME", value: (e) => e.outcome },
        { header: "DETAILS", value: (e) => (e.details ? JSON.stringify(e.details) : ""), max: 60 },
      ], "No audit entries."));
    },
  },
  verify: {
    // main.ts sends "audit verify" to the offline verifier; listed here so help shows it.
    summary: "Verify the hash chain, signatures and head checkpoint offline, on the server machine",
    args: "[...]",
    connects: false,
    run: (inv) => serverCommands["audit-verify"].run(["verify", ...inv.positionals]),
  },
});

export const keysCommand = commandGroup("keys", "The site master key that wraps every secret variable's data key", {
  status: {
    summary: "Show the current master key and how many secrets each key wraps",
    async run(inv) {
      const r = await inv.api().get<{ current: string; secretsByKey: Record<string, number> }>("/api/v1/keys");
      inv.out.result(r, () => inv.out.fields([["Current key", r.current], ["Secrets by key", Object.keys(r.secretsByKey).length ? r.secretsByKey : "none"]]));
    },
  },
  rotate: {
    summary: "Make a new master key, rewrap every secret under it and destroy the old key",
    notes: "Secret values are not decrypted or re-encrypted; only their data keys are rewrapped. The site keeps serving.",
    async run(inv) {
      const r = await inv.api().post<{ from: string; to: string; rewrapped: number; retired: string[] }>("/api/v1/keys/rotate");
      inv.out.result(r, () => inv.out.fields([["From", r.from], ["To", r.to], ["Rewrapped", r.rewrapped], ["Retired keys", r.retired.length ? r.retired : "none"]]));
    },
  },
});

type Posture = {
  pxeServed: boolean; pxe: { host: string; links: { name: string; address: string }[]; mode: string; unknown: string; since: string }[];
  pxePasswordSet: boolean; enrollmentApproval: boolean; sniffableEnrollment: boolean;
  sniffableDeployments: { name: string; enabled: boolean; usesSecrets: boolean; why: string }[];
  outsideScopes: number; unprotected: boolean; warnings: string[];
};
type SiteInfo = { version: string; database: string; signingKeyFingerprint: string; caFingerprint256: string; posture: Posture };

/** The posture section of `slipway site`: where PXE is served, what protects it, what is open to sniffable enrollments. */
function postureFields(p: Posture): [string, unknown][] {
  const served = p.pxe.flatMap((x) => x.links.map((l) => `${l.name} (${l.address}, ${x.mode}, unknown computers: ${x.unknown}, on ${x.host})`));
  const opened = p.sniffableDeployments.map((d) => `${d.name} (${d.why}${d.usesSecrets ? ", USES SECRETS" : ", no secrets"}${d.enabled ? "" : ", disabled"})`);
  if (p.outsideScopes) opened.push(`${p.outsideScopes} outside your scopes`);
  return [
    ["PXE served", p.pxeServed ? served : "no"],
    ["PXE password", p.pxePasswordSet ? "set" : "not set"],
    ["Enrollment approval", p.enrollmentApproval ? "required" : "not required"],
    ["PXE enrollments", !p.pxeServed ? "-" : p.sniffableEnrollment ? "sniffable (a boot token alone: anyone on the link who sees a machine's MAC and UUID can enroll as it)" : "need more than what the wire shows"],
    ["Open to sniffable", opened.length ? opened : "none"],
    ["Protected", p.unprotected ? "NO" : "yes"],
  ];
}

export const siteCommand = commandGroup("site", "The site: version, database, key fingerprints, certificates and network-boot posture", {
  info: {
    summary: "Show site facts and the network-boot posture (the default)",
    async run(inv) {
      const r = await inv.api().get<SiteInfo>("/api/v1/site");
      inv.out.result(r, () => {
        inv.out.fields([
          ["Server", inv.connection().server], ["Version", r.version], ["Database", r.database],
          ["Signing key", r.signingKeyFingerprint], ["CA (SHA-256)", r.caFingerprint256],
        ]);
        if (!r.posture) return;
        inv.out.line("");
        inv.out.line("Network-boot posture");
        inv.out.fields(postureFields(r.posture));
        for (const w of r.posture.warnings) inv.out.line(printable(w));
      });
    },
  },
  "signing-key": {
    summary: "Print the site's public signing key (PEM), which agents pin",
    async run(inv) {
      const r = await inv.api().get<{ pem: string; fingerprint: string }>("/api/v1/site/signing-key.pem");
      if (typeof r?.pem !== "string") throw new CliError("The server sent no signing key", ExitCode.FAILURE);
      inv.out.result(r, () => {
        process.stderr.write(`Fingerprint: ${r.fingerprint}\n`);
        inv.out.line(r.pem);
      });
    },
  },
}, { defaultSubcommand: "info" });
