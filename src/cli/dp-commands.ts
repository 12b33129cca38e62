/**
 * `slipway dp`: distribution points — register one (its one-time enrollment secret is printed
 * once, or written to a file), list and show them with their content's replication state,
 * assign and unassign images, issue a new secret, remove one.
 */
import fs from "node:fs";
import { commandGroup } from "./command-group.ts";
import { apiPath } from "./client.ts";
import { CliError, ExitCode } from "./command.ts";

type DpView = {
  id: string; name: string; url: string; hostNames: string[]; status: string; enrolledAt: string | null; lastSeenAt: string | null;
  secretExpiresAt: string | null; content: { assigned: number; ready: number; failed: number }; secret?: string;
};
type DpAssignment = { digest: string; image: string | null; size: number | null; state: string; message: string | null; assignedAt: string };
type DpDetail = DpView & { assignments: DpAssignment[]; certificates: { serial: string; kind: string; status: string; expires: string; lastUsedAt: string | null }[] };

/** Hands a new secret to the administrator: into a 0600 file when asked, else on stdout once. */
function deliverSecret(secret: string, file: string | undefined): string {
  if (!file) return secret;
  try {
    fs.writeFileSync(file, secret + "\n", { mode: 0o600, flag: "wx" });
  } catch (err) {
    throw new CliError(`Cannot write the enrollment secret to ${file}: ${(err as NodeJS.ErrnoException).code === "EEXIST" ? "the file exists" : (err as Error).message}`, ExitCode.FAILURE);
  }
  return `written to ${file} (mode 0600)`;
}

const SECRET_FILE = { type: "string" as const, value: "FILE", description: "Write the one-time enrollment secret to this new file (0600) instead of printing it" };
const ENROLL_NOTE = "On the distribution point's host: slipway up --role distribution --site https://MP:8444 --ca ca.crt --data DIR --enroll-secret-file FILE";

export const dpCommand = commandGroup("dp", "Distribution points: register, assign content, watch replication (Infrastructure Administrator)", {
  list: {
    summary: "List distribution points with their enrollment and replication state",
    async run(inv) {
      const rows = await inv.api().get<DpView[]>("/api/v1/distribution-points");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (d) => d.name, max: 32 },
        { header: "URL", value: (d) => d.url, max: 48 },
        { header: "STATUS", value: (d) => d.status },
        { header: "READY", value: (d) => `${d.content.ready}/${d.content.assigned}`, align: "right" },
        { header: "FAILED", value: (d) => d.content.failed, align: "right" },
        { header: "LAST SEEN", value: (d) => d.lastSeenAt ?? "" },
      ], "No distribution points."));
    },
  },
  show: {
    summary: "Show a distribution point, each assigned image's replication state and its certificates",
    args: "NAME",
    async run(inv) {
      const d = await inv.api().get<DpDetail>(apiPath`/api/v1/distribution-points/${inv.positionals[0]}`);
      inv.out.result(d, () => {
        inv.out.fields([["Name", d.name], ["URL", d.url], ["Host names", d.hostNames.join(", ")], ["Status", d.status],
          ["Enrolled", d.enrolledAt ?? ""], ["Last seen", d.lastSeenAt ?? ""], ["ID", d.id]]);
        inv.out.line("");
        inv.out.table(d.assignments, [
          { header: "IMAGE", value: (a) => a.image ?? "", max: 32 },
          { header: "STATE", value: (a) => a.state },
          { header: "DIGEST", value: (a) => a.digest, max: 24 },
          { header: "MESSAGE", value: (a) => a.message ?? "", max: 70 },
        ], "No content assigned.");
        if (d.certificates.length) {
          inv.out.line("");
          inv.out.table(d.certificates, [
            { header: "CERTIFICATE", value: (c) => c.serial, max: 34 },
            { header: "KIND", value: (c) => c.kind },
            { header: "STATUS", value: (c) => c.status },
            { header: "EXPIRES", value: (c) => c.expires },
          ], "");
        }
      });
    },
  },
  add: {
    summary: "Register a distribution point; prints its one-time enrollment secret (valid 24 hours)",
    args: "NAME",
    options: {
      url: { type: "string", value: "URL", description: "https://HOST:PORT devices reach it at (required)" },
      alias: { type: "string", multiple: true, value: "HOST", description: "Another host name or address its server certificate may carry" },
      "secret-file": SECRET_FILE,
    },
    notes: ENROLL_NOTE,
    async run(inv) {
      const url = inv.str("url");
      if (!url) throw new CliError("--url https://HOST:PORT is required", ExitCode.USAGE);
      const d = await inv.api().post<DpView>("/api/v1/distribution-points", { name: inv.positionals[0], url, aliases: inv.list("alias") });
      const shown = deliverSecret(d.secret!, inv.str("secret-file"));
      inv.out.result(inv.str("secret-file") ? { ...d, secret: undefined } : d, () => inv.out.fields([["Name", d.name], ["URL", d.url], ["Host names", d.hostNames.join(", ")],
        ["Secret expires", d.secretExpiresAt ?? ""], ["Enrollment secret (shown once)", shown]]));
    },
  },
  secret: {
    summary: "Issue a new one-time enrollment secret (to enroll the distribution point again, e.g. after it lost its keys)",
    args: "NAME",
    options: { "secret-file": SECRET_FILE },
    notes: ENROLL_NOTE,
    async run(inv) {
      const r = await inv.api().post<{ name: string; secret: string; secretExpiresAt: string }>(apiPath`/api/v1/distribution-points/${inv.positionals[0]}/secret`);
      const shown = deliverSecret(r.secret, inv.str("secret-file"));
      inv.out.result(inv.str("secret-file") ? { ...r, secret: undefined } : r, () => inv.out.fields([["Name", r.name], ["Secret expires", r.secretExpiresAt], ["Enrollment secret (shown once)", shown]]));
    },
  },
  remove: {
    summary: "Remove a distribution point: its certificates are revoked and policies stop naming it",
    args: "NAME",
    async run(inv) {
      await inv.api().delete(apiPath`/api/v1/distribution-points/${inv.positionals[0]}`);
      inv.out.result(undefined, () => inv.out.line(`Removed distribution point ${inv.positionals[0]}`));
    },
  },
  assign: {
    summary: "Assign an image (its newest manifest, or a manifest by sha256:… digest) to a distribution point",
    args: "NAME IMAGE",
    async run(inv) {
      const [name, image] = inv.positionals;
      const a = await inv.api().post<DpAssignment>(apiPath`/api/v1/distribution-points/${name}/content`, { image });
      inv.out.result(a, () => inv.out.line(`Assigned "${a.image}" (${a.digest}) to ${name}: ${a.state}`));
    },
  },
  unassign: {
    summary: "Unassign an image (every assigned manifest of that name, or one by digest); the distribution point deletes it",
    args: "NAME IMAGE",
    async run(inv) {
      const [name, image] = inv.positionals;
      await inv.api().delete(apiPath`/api/v1/distribution-points/${name}/content/${image}`);
      inv.out.result(undefined, () => inv.out.line(`Unassigned "${image}" from ${name}`));
    },
  },
});
