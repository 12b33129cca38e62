/**
 * Device identities from the command line: `certificate`, `credential` (media enrollment
 * credentials), `pxe password` and `run` (deployment runs and their step history).
 */
import { CliError, ExitCode } from "./command.ts";
import { commandGroup, type Invocation, type OptionSpec, type Subcommand } from "./command-group.ts";
import { apiPath, namesById } from "./client.ts";
import { integer, oneOf } from "./arguments.ts";
import { canPrompt, promptNewSecret, stdinValue } from "./secret-input.ts";

type Certificate = {
  serial: string; kind: string; device: string | null; subject: string; fingerprint256: string; issued?: string;
  expires: string; status: string; reason?: string | null; lastUsedAt?: string | null;
};
type Credential = { id: string; name: string; usesLeft: number; expiresAt: string; createdBy: string; revokedAt: string | null; lastUsedAt: string | null; secret?: string };
type RunEvent = { seq: number; at: string; step: string; state: string; progress: number | null; exitCode: number | null; message: string | null };
type Run = { id: string; deploymentId: string; deviceId: string; state: string; currentStep: string | null; startedAt: string; endedAt: string | null; events?: RunEvent[] };

const REASONS = ["keyCompromise", "superseded", "cessationOfOperation", "unspecified"] as const;

function statusChange(action: "block" | "unblock" | "revoke", summary: string): Subcommand {
  const options: Record<string, OptionSpec> = action === "unblock" ? {} : { reason: { type: "string", value: "REASON", description: `One of ${REASONS.join(", ")}` } };
  return {
    summary, args: "SERIAL", options,
    async run(inv: Invocation) {
      const reason = inv.str("reason");
      const c = await inv.api().post<Certificate>(apiPath`/api/v1/certificates/${inv.positionals[0]}/${action}`,
        reason ? { reason: oneOf(reason, REASONS, "--reason") } : {});
      inv.out.result(c, () => inv.out.line(`Certificate ${c.serial} is now ${c.status}`));
    },
  };
}

export const certificateCommand = commandGroup("certificate", "Certificates the site CA issued: inventory, block, revoke (Security Administrator)", {
  list: {
    summary: "List the site's and every device's certificates",
    options: {
      device: { type: "string", value: "DEVICE", description: "Only this device's certificates" },
      status: { type: "string", value: "STATUS", description: "Only active, blocked or revoked ones" },
    },
    async run(inv) {
      const status = inv.str("status");
      const api = inv.api();
      const rows = await api.get<Certificate[]>("/api/v1/certificates", { device: inv.str("device"), status: status ? oneOf(status, ["active", "blocked", "revoked"] as const, "--status") : undefined });
      const names = await namesById(api, "/api/v1/devices");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "SERIAL", value: (c) => c.serial, max: 34 },
        { header: "KIND", value: (c) => c.kind },
        { header: "DEVICE", value: (c) => (c.device ? names.get(c.device) ?? c.device : ""), max: 28 },
        { header: "STATUS", value: (c) => c.status },
        { header: "EXPIRES", value: (c) => c.expires },
        { header: "LAST USED", value: (c) => c.lastUsedAt ?? "" },
      ], "No certificates."));
    },
  },
  block: statusChange("block", "Block a certificate: refused on its very next request"),
  unblock: statusChange("unblock", "Unblock a blocked certificate"),
  revoke: statusChange("revoke", "Revoke a certificate for good; it is listed in the CRL"),
  crl: {
    summary: "Print the certificate revocation list (PEM)",
    async run(inv) {
      const r = await inv.api().get<{ pem: string }>("/api/v1/crl.pem");
      inv.out.result(r, () => inv.out.line(r.pem.trimEnd()));
    },
  },
});

export const credentialCommand = commandGroup("credential", "Enrollment credentials for boot media (Security Administrator)", {
  list: {
    summary: "List media enrollment credentials (never their secret)",
    async run(inv) {
      const rows = await inv.api().get<Credential[]>("/api/v1/enrollment-credentials");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (c) => c.name, max: 32 },
        { header: "USES LEFT", value: (c) => c.usesLeft, align: "right" },
        { header: "EXPIRES", value: (c) => c.expiresAt },
        { header: "REVOKED", value: (c) => c.revokedAt ?? "" },
        { header: "ID", value: (c) => c.id },
      ], "No enrollment credentials."));
    },
  },
  create: {
    summary: "Create a media enrollment credential; its secret is printed once",
    args: "NAME",
    options: {
      uses: { type: "string", value: "N", description: "How many machines may enroll with it (default 1)" },
      hours: { type: "string", value: "H", description: "Hours until it expires (default 168)" },
    },
    async run(inv) {
      const uses = inv.str("uses");
      const hours = inv.str("hours");
      const c = await inv.api().post<Credential>("/api/v1/enrollment-credentials", {
        name: inv.positionals[0], ...(uses ? { uses: integer(uses, "--uses", 1, 10_000) } : {}), ...(hours ? { expiresInHours: integer(hours, "--hours", 1, 8760) } : {}),
      });
      inv.out.result(c, () => inv.out.fields([["Name", c.name], ["Uses", c.usesLeft], ["Expires", c.expiresAt], ["Secret (shown once)", c.secret ?? ""]]));
    },
  },
  revoke: {
    summary: "Revoke a media enrollment credential",
    args: "ID",
    async run(inv) {
      await inv.api().delete(apiPath`/api/v1/enrollment-credentials/${inv.positionals[0]}`);
      inv.out.result(undefined, () => inv.out.line(`Revoked credential ${inv.positionals[0]}`));
    },
  },
});

export const pxeCommand = commandGroup("pxe", "Network boot settings", {
  password: {
    summary: "set (reads the password from standard input or a hidden prompt), clear, or status",
    args: "ACTION",
    notes: "The PXE password is checked only inside TLS when a machine redeems its boot token; only an Argon2id verifier is stored.",
    async run(inv) {
      const action = oneOf(inv.positionals[0], ["set", "clear", "status"] as const, "the action");
      const api = inv.api();
      if (action === "status") {
        const r = await api.get<{ set: boolean }>("/api/v1/pxe/password");
        inv.out.result(r, () => inv.out.line(r.set ? "A PXE password is set." : "No PXE password is set."));
        return;
      }
      if (action === "clear") {
        await api.delete("/api/v1/pxe/password");
        inv.out.result(undefined, () => inv.out.line("PXE password removed."));
        return;
      }
      const password = process.stdin.isTTY && canPrompt() ? await promptNewSecret("PXE password") : await stdinValue();
      if (!password) throw new CliError("Give the PXE password on standard input", ExitCode.USAGE);
      await api.put("/api/v1/pxe/password", { password });
      inv.out.result(undefined, () => inv.out.line("PXE password set."));
    },
  },
});

export const runCommand = commandGroup("run", "Deployment runs on devices and their step-by-step status", {
  list: {
    summary: "List runs, newest first",
    options: {
      device: { type: "string", value: "DEVICE", description: "Only this device's runs" },
      deployment: { type: "string", value: "ID", description: "Only this deployment's runs" },
      state: { type: "string", value: "STATE", description: "Only running, succeeded, failed or cancelled runs" },
    },
    async run(inv) {
      const api = inv.api();
      const state = inv.str("state");
      const rows = await api.get<Run[]>("/api/v1/runs", { device: inv.str("device"), deployment: inv.str("deployment"),
        state: state ? oneOf(state, ["running", "succeeded", "failed", "cancelled"] as const, "--state") : undefined });
      const [devices, deployments] = [await namesById(api, "/api/v1/devices"), await namesById(api, "/api/v1/deployments")];
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "DEVICE", value: (r) => devices.get(r.deviceId) ?? r.deviceId, max: 28 },
        { header: "DEPLOYMENT", value: (r) => deployments.get(r.deploymentId) ?? r.deploymentId, max: 28 },
        { header: "STATE", value: (r) => r.state },
        { header: "STEP", value: (r) => r.currentStep ?? "", max: 30 },
        { header: "STARTED", value: (r) => r.startedAt },
        { header: "ID", value: (r) => r.id },
      ], "No runs."));
    },
  },
  show: {
    summary: "Show a run and every step event in order",
    args: "RUN",
    async run(inv) {
      const r = await inv.api().get<Run>(apiPath`/api/v1/runs/${inv.positionals[0]}`);
      inv.out.result(r, () => {
        inv.out.fields([["Run", r.id], ["State", r.state], ["Started", r.startedAt], ["Ended", r.endedAt ?? ""]]);
        inv.out.line("");
        inv.out.table(r.events ?? [], [
          { header: "#", value: (e) => e.seq, align: "right" },
          { header: "AT", value: (e) => e.at },
          { header: "STEP", value: (e) => e.step, max: 32 },
          { header: "STATE", value: (e) => e.state },
          { header: "EXIT", value: (e) => e.exitCode ?? "", align: "right" },
          { header: "MESSAGE", value: (e) => e.message ?? "", max: 60 },
        ], "No events yet.");
      });
    },
  },
});
