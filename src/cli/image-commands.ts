/**
 * `slipway image`: the content library, on the server's data folder (like `bootimage`):
 * import an image file as signed, chunked content; list, show and delete manifests.
 */
import os from "node:os";
import { openSite, siteExists } from "../roles/site/site.ts";
import { addImage, deleteImage, deploymentsUsing, findImage } from "../roles/site/content-library.ts";
import { ImportError } from "../content/import.ts";
import { imageFormats, type ImageFormat } from "../content/manifest.ts";
import { stores } from "../storage/stores.ts";
import { createLogger } from "../log.ts";
import { SlipwayError } from "../errors.ts";
import { dataOption, parse, siteOptions } from "./server-commands.ts";
import { formatFields, formatTable, printable } from "./table.ts";
import { CliError, ExitCode, type Command } from "./command.ts";

const USAGE = `Usage: slipway image import FILE --name NAME [--format tar|tar.gz|tar.zst|raw] [--data DIR] [--json]
       slipway image list [--data DIR] [--json]
       slipway image show NAME|DIGEST [--data DIR] [--json]
       slipway image delete DIGEST [--data DIR] [--json]
  import cuts the file into 4 MiB chunks stored by SHA-256 in DIR/content and records a manifest
  signed with the site key; the format is detected from the file's first bytes unless given.
  A task sequence's apply-image step names an image by NAME (the newest import with that name)
  or by DIGEST. delete refuses while an enabled deployment applies the image, and keeps chunks
  other images still use.`;

const EXIT_FOR: Partial<Record<SlipwayError["code"], number>> = {
  NOT_FOUND: ExitCode.NOT_FOUND, IN_USE: ExitCode.CONFLICT, CONFLICT: ExitCode.CONFLICT, VALIDATION: ExitCode.INVALID, BAD_REQUEST: ExitCode.INVALID,
};

function cliError(err: unknown): unknown {
  if (err instanceof ImportError) return new CliError(err.message, err.reason === "not-found" ? ExitCode.NOT_FOUND : ExitCode.INVALID);
  if (err instanceof SlipwayError) return new CliError(err.message, EXIT_FOR[err.code] ?? ExitCode.FAILURE);
  const e = err as { code?: string; message?: string };
  if (e?.code === "23505" || /UNIQUE constraint failed/.test(e?.message ?? "")) return new CliError("Cannot import: that exact manifest is already recorded", ExitCode.CONFLICT);
  return err;
}

const size = (n: number) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
};

/** Prints "NAME: P%" to stderr each time the whole percentage changes (in place on a terminal). */
function progressPrinter(name: string): { update(done: number, total: number): void; end(): void } {
  const tty = process.stderr.isTTY === true;
  let last = -1;
  return {
    update(done, total) {
      const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
      if (pct === last) return;
      last = pct;
      process.stderr.write(`${tty ? "\r" : ""}Importing ${printable(name)}: ${pct}%${tty ? "" : "\n"}`);
    },
    end() {
      if (tty && last >= 0) process.stderr.write("\n");
    },
  };
}

export const imageCommand: Command = {
  summary: "The content library: import an image (signed, chunked), list, show or delete — on the server's data folder",
  async run(args) {
    const { values, positionals } = parse(args, {
      data: { type: "string" }, name: { type: "string" }, format: { type: "string" }, json: { type: "boolean" },
    });
    const [action, ...rest] = positionals;
    const arity: Record<string, number> = { import: 1, list: 0, show: 1, delete: 1 };
    if (values.help) {
      process.stdout.write(USAGE + "\n");
      return ExitCode.OK;
    }
    if (!action || !(action in arity) || rest.length !== arity[action]) throw new CliError(USAGE, ExitCode.USAGE);
    const json = Boolean(values.json);
    const format = values.format as string | undefined;
    if (action === "import") {
      if (!values.name) throw new CliError("--name NAME is required", ExitCode.USAGE);
      if (format !== undefined && !imageFormats.includes(format as ImageFormat)) throw new CliError(`--format is one of ${imageFormats.join(", ")}`, ExitCode.USAGE);
    } else if (values.name !== undefined || format !== undefined) {
      throw new CliError(`--name and --format belong to "image import"`, ExitCode.USAGE);
    }
    const dataDir = dataOption(values.data as string | undefined);
    if (!siteExists(dataDir)) throw new CliError(`No site in ${dataDir}`, ExitCode.NOT_FOUND);
    const site = await openSite({ ...siteOptions(dataDir), log: createLogger({ level: "warn", write: (l) => process.stderr.write(l + "\n") }) });
    const who = `local:${os.userInfo().username}`;
    try {
      if (action === "import") {
        const progress = progressPrinter(values.name as string);
        let r;
        try {
          r = await addImage(site, { file: rest[0], name: values.name as string, format: format as ImageFormat | undefined, actor: who, onProgress: progress.update });
        } finally {
          progress.end();
        }
        const { signed: _manifest, ...summary } = r.record;
        if (json) process.stdout.write(JSON.stringify({ ...summary, chunksWritten: r.chunksWritten, chunksReused: r.chunksReused }) + "\n");
        else {
          process.stdout.write(`Imported "${printable(summary.name)}" (${summary.format}, ${size(summary.size)}, ${summary.chunkCount} chunks, ${r.chunksReused} already stored)\n`);
          process.stdout.write(`Manifest ${summary.digest}\n`);
        }
        return ExitCode.OK;
      }
      if (action === "list") {
        const list = await stores(site.db).content.list();
        if (json) process.stdout.write(JSON.stringify(list) + "\n");
        else if (!list.length) process.stdout.write("No images: import one with slipway image import FILE --name NAME\n");
        else process.stdout.write(formatTable(list, [
          { header: "NAME", value: (i) => i.name },
          { header: "DIGEST", value: (i) => i.digest, max: 71 },
          { header: "FORMAT", value: (i) => i.format },
          { header: "SIZE", value: (i) => size(i.size), align: "right" },
          { header: "CHUNKS", value: (i) => i.chunkCount, align: "right" },
          { header: "CREATED", value: (i) => i.createdAt },
        ]) + "\n");
        return ExitCode.OK;
      }
      if (action === "show") {
        const record = await findImage(site, rest[0]);
        if (!record) throw new CliError(`Cannot find image "${rest[0]}": no manifest has that name or digest`, ExitCode.NOT_FOUND);
        const users = await deploymentsUsing(site, record);
        if (json) process.stdout.write(JSON.stringify({ ...record, usedBy: users }) + "\n");
        else {
          const m = record.signed.manifest;
          process.stdout.write(formatFields([
            ["Name", record.name], ["Digest", record.digest], ["Format", record.format], ["Size", `${size(record.size)} (${record.size} bytes)`],
            ["SHA-256", record.sha256], ["Chunks", `${record.chunkCount} × ${size(m.chunkSize)}`], ["Created", record.createdAt],
            ["Created by", record.createdBy], ["Used by", users.map((u) => u.name)],
          ]) + "\n");
        }
        return ExitCode.OK;
      }
      const r = await deleteImage(site, rest[0], who);
      if (json) process.stdout.write(JSON.stringify({ digest: r.record.digest, name: r.record.name, chunksRemoved: r.chunksRemoved, chunksKept: r.chunksKept }) + "\n");
      else process.stdout.write(`Deleted ${r.record.digest} ("${printable(r.record.name)}"): ${r.chunksRemoved} chunks removed, ${r.chunksKept} kept for other images\n`);
      return ExitCode.OK;
    } catch (err) {
      throw cliError(err);
    } finally {
      await site.close();
    }
  },
};

export const imageCommands: Record<string, Command> = { image: imageCommand };
