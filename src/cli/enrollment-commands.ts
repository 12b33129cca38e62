/** `slipway enrollment`: review and approve sniffable enrollments (machines that proved only their MAC and UUID). */
import { CliError, ExitCode } from "./command.ts";
import { commandGroup, type Invocation, type Subcommand } from "./command-group.ts";
import { integer } from "./arguments.ts";

type Pending = {
  serial: string; deviceId: string; deviceName: string; macs: string[]; smbiosUuid: string | null; link: string | null;
  enrolledAt: string; ekFingerprint: string | null; contested: number;
};

const filter = {
  link: { type: "string", value: "NAME", description: "Only machines of devices first seen on this PXE link (network interface)" },
  since: { type: "string", value: "WHEN", description: "Only enrollments made within this long (90s, 10m, 2h, 1d) or since an ISO time" },
} as const;

function table(inv: Invocation, rows: Pending[], empty: string): void {
  inv.out.table(rows, [
    { header: "DEVICE", value: (e) => e.deviceName, max: 28 },
    { header: "LINK", value: (e) => e.link },
    { header: "MAC", value: (e) => e.macs, max: 40 },
    { header: "SMBIOS UUID", value: (e) => e.smbiosUuid, max: 36 },
    { header: "EK FINGERPRINT", value: (e) => (e.ekFingerprint ? e.ekFingerprint.slice(0, 23) + "…" : null) },
    { header: "ENROLLED", value: (e) => e.enrolledAt },
    { header: "CONTESTED", value: (e) => (e.contested ? `yes (${e.contested} more)` : null) },
    // Whole: it is what an administrator types (or copies) to approve.
    { header: "SERIAL", value: (e) => e.serial },
  ], empty);
}

const subcommands: Record<string, Subcommand> = {
  pending: {
    summary: "List live sniffable enrollments awaiting approval: link, MACs, UUID, the TPM endorsement key proven, when",
    options: filter,
    async run(inv) {
      const rows = await inv.api().get<Pending[]>("/api/v1/enrollments/pending", { link: inv.str("link"), since: inv.str("since") });
      inv.out.result(rows, () => table(inv, rows, "No enrollment awaits approval."));
    },
  },
  approve: {
    summary: "Approve enrollments (by SERIAL, or every one --link/--since name) in one transaction: they get their deployments and secrets",
    args: "[SERIAL...]",
    options: {
      ...filter,
      all: { type: "boolean", description: "Every pending enrollment you may see" },
      expect: { type: "string", value: "N", description: "Refuse, changing nothing, unless exactly N enrollments match" },
      "dry-run": { type: "boolean", description: "Show what would be approved; change nothing" },
    },
    notes: [
      "Needs the device.approve permission; a scoped administrator approves only enrollments of devices in its scopes.",
      "Approving records on the device the TPM endorsement key the enrollment proved (when it has none): its later enrollments are then `tpm`, unattended.",
      "Review first: slipway enrollment pending --link lab0 --since 10m, then slipway enrollment approve --link lab0 --since 10m --expect 40.",
      "A contested enrollment (its device enrolled more than once within the hour: an impostor may be among them) is approved only by SERIAL; the machine's agent shows its serial on the console while it waits.",
    ].join("\n"),
    async run(inv) {
      const serials = inv.positionals;
      const filtered = inv.str("link") !== undefined || inv.str("since") !== undefined || inv.values.all === true;
      if (!serials.length && !filtered) throw new CliError("Give SERIALs, or --link/--since (or --all)", ExitCode.USAGE);
      const expect = inv.str("expect");
      const dryRun = inv.values["dry-run"] === true;
      const r = await inv.api().post<{ dryRun: boolean; enrollments: Pending[]; contested: Pending[] }>("/api/v1/enrollments/approve", {
        ...(serials.length ? { serials } : {}), link: inv.str("link"), since: inv.str("since"), ...(inv.values.all === true ? { all: true } : {}),
        ...(expect !== undefined ? { expect: integer(expect, "--expect", 0, 100_000) } : {}), dryRun,
      });
      inv.out.result(r, () => {
        for (const e of r.contested) {
          inv.out.line(`Not approved: ${e.deviceName} (serial ${e.serial}) is contested — its device enrolled ${e.contested + 1} times within the hour; check the serial on the machine's console and approve it by serial`);
        }
        if (!r.enrollments.length) return inv.out.line("No pending enrollment matches.");
        table(inv, r.enrollments, "");
        const n = `${r.enrollments.length} enrollment${r.enrollments.length === 1 ? "" : "s"}`;
        inv.out.line(dryRun ? `Would approve ${n} (dry run: nothing changed)` : `Approved ${n}`);
      });
    },
  },
};

export const enrollmentCommand = commandGroup("enrollment", "Enrollments: approve machines that proved only what the wire carries", subcommands);
