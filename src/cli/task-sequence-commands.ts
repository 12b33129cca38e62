/**
 * `slipway ts`: task sequences. Documents are read from YAML or JSON files and sent as text,
 * so the server reports problems with the same paths and line numbers the file has.
 */
import fs from "node:fs";
import path from "node:path";
import { CliError, ExitCode } from "./command.ts";
import { ApiError, apiPath } from "./client.ts";
import { commandGroup, type Invocation } from "./command-group.ts";
import { oneOf, version } from "./arguments.ts";
import { readStdin } from "./secret-input.ts";
import { printable } from "./table.ts";
import { parseTaskSequenceText, readTaskSequenceText } from "../domain/task-sequence/validate.ts";

type TaskSequence = { id: string; name: string; description: string; latestVersion: number; createdAt: string; updatedAt: string };
type VersionSummary = { version: number; digest: string; publishedBy: string; publishedAt: string };
type SignedVersion = { version: number; name: string; digest: string; signature: string; [k: string]: unknown };
type Issue = { path: string; pointer?: string; message: string };
type Validation = { ok: boolean; errors: Issue[]; secrets?: string[] };

type Format = "yaml" | "json";

/** The file's text ("-" is standard input) and its format from --format or the extension. */
async function readDocument(inv: Invocation, file: string): Promise<{ text: string; format: Format | undefined }> {
  let text: string;
  if (file === "-") text = await readStdin();
  else {
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (err) {
      throw new CliError(`Cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.USAGE);
    }
  }
  const given = inv.str("format");
  const ext = path.extname(file).toLowerCase();
  const format = given ? oneOf(given, ["yaml", "json"] as const, "--format") : ext === ".json" ? "json" : ext === ".yaml" || ext === ".yml" ? "yaml" : undefined;
  return { text, format };
}

/** One line per problem: `path: message`, the document itself shown as "(document)". */
function issueLines(issues: Issue[]): string[] {
  return issues.map((i) => `  ${printable(i.path || "(document)")}: ${printable(i.message)}`);
}

const FORMAT = { type: "string", value: "FORMAT", description: "yaml or json (default: from the file extension; YAML also reads JSON)" } as const;

export const taskSequenceCommand = commandGroup("ts", "Task sequences: signed, versioned deployment recipes", {
  list: {
    summary: "List task sequences",
    async run(inv) {
      const rows = await inv.api().get<TaskSequence[]>("/api/v1/task-sequences");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (t) => t.name, max: 40 },
        { header: "LATEST", value: (t) => t.latestVersion, align: "right" },
        { header: "DESCRIPTION", value: (t) => t.description, max: 48 },
        { header: "UPDATED", value: (t) => t.updatedAt },
        { header: "ID", value: (t) => t.id },
      ], "No task sequences."));
    },
  },
  show: {
    summary: "Show one task sequence (by name or id)",
    args: "TS",
    async run(inv) {
      const t = await inv.api().get<TaskSequence>(apiPath`/api/v1/task-sequences/${inv.positionals[0]}`);
      inv.out.result(t, () => inv.out.fields([
        ["Name", t.name], ["ID", t.id], ["Description", t.description], ["Latest version", t.latestVersion], ["Created", t.createdAt], ["Updated", t.updatedAt],
      ]));
    },
  },
  versions: {
    summary: "List a task sequence's published versions",
    args: "TS",
    async run(inv) {
      const rows = await inv.api().get<VersionSummary[]>(apiPath`/api/v1/task-sequences/${inv.positionals[0]}/versions`);
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "VERSION", value: (v) => v.version, align: "right" },
        { header: "PUBLISHED", value: (v) => v.publishedAt },
        { header: "BY", value: (v) => v.publishedBy, max: 32 },
        { header: "DIGEST", value: (v) => v.digest, max: 80 },
      ], "No versions."));
    },
  },
  get: {
    summary: "Print a signed version as JSON: the envelope, its digest and the site's signature",
    args: "TS",
    options: { version: { type: "string", value: "N", description: 'Version number or "latest" (default)' } },
    async run(inv) {
      const v = version(inv.str("version") ?? "latest");
      const body = await inv.api().get<SignedVersion>(apiPath`/api/v1/task-sequences/${inv.positionals[0]}/versions/${v}`);
      inv.out.line(JSON.stringify(body, null, 2));
    },
  },
  publish: {
    summary: "Publish a document: version 1 of a new task sequence, or the next version of the one it names",
    args: "FILE",
    options: { format: FORMAT, description: { type: "string", value: "TEXT", description: "Description of the task sequence" } },
    notes: 'FILE "-" reads standard input. Invalid documents are refused with every problem listed (exit 7).',
    async run(inv) {
      const { text, format } = await readDocument(inv, inv.positionals[0]);
      const api = inv.api();
      const body = { document: text, ...(format ? { format } : {}), ...(inv.str("description") !== undefined ? { description: inv.str("description") } : {}) };
      // The name decides between "create" and "new version"; an unreadable document goes to
      // "create", whose answer lists its problems.
      const read = readTaskSequenceText(text, format);
      const name = read.ok && read.value && typeof read.value === "object" ? (read.value as { name?: unknown }).name : undefined;
      let exists = false;
      if (typeof name === "string" && name) {
        try {
          await api.get(apiPath`/api/v1/task-sequences/${name}`);
          exists = true;
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 404)) throw err;
        }
      }
      const published = exists
        ? await api.post<SignedVersion>(apiPath`/api/v1/task-sequences/${name as string}/versions`, body)
        : (await api.post<TaskSequence & { version: SignedVersion }>("/api/v1/task-sequences", body));
      const v: SignedVersion = "latestVersion" in published ? (published as { version: SignedVersion }).version : published;
      inv.out.result(published, () => inv.out.line(`Published "${v.name}" version ${v.version} (${v.digest})`));
    },
  },
  validate: {
    summary: "Check a document without publishing it; prints every problem with its path",
    args: "FILE",
    options: { format: FORMAT, offline: { type: "boolean", description: "Check here, without a server (does not check that named secrets exist)" } },
    notes: 'Exits 0 when valid and 7 when not. FILE "-" reads standard input.',
    async run(inv) {
      const file = inv.positionals[0];
      const { text, format } = await readDocument(inv, file);
      let r: Validation;
      if (inv.values.offline) {
        const local = parseTaskSequenceText(text, format);
        r = local.ok ? { ok: true, errors: [] } : { ok: false, errors: local.errors };
      } else {
        r = await inv.api().post<Validation>("/api/v1/task-sequences/validate", { document: text, ...(format ? { format } : {}) });
      }
      const errors = Array.isArray(r.errors) ? r.errors : [];
      inv.out.result(r, () => {
        if (r.ok) {
          inv.out.line(`${file}: valid${r.secrets?.length ? ` (uses secrets: ${r.secrets.join(", ")})` : ""}`);
        } else {
          inv.out.line(`${file}: ${errors.length} problem${errors.length === 1 ? "" : "s"}`);
          inv.out.line(issueLines(errors).join("\n"));
        }
      });
      return r.ok ? ExitCode.OK : ExitCode.INVALID;
    },
  },
  delete: {
    summary: "Delete a task sequence that no deployment uses, with all its versions",
    args: "TS",
    async run(inv) {
      await inv.api().delete(apiPath`/api/v1/task-sequences/${inv.positionals[0]}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted task sequence "${inv.positionals[0]}"`));
    },
  },
  schema: {
    summary: "Print the JSON Schema of task sequence documents (for editors)",
    async run(inv) {
      inv.out.line(JSON.stringify(await inv.api().get("/api/v1/schemas/task-sequence.json"), null, 2));
    },
  },
});
