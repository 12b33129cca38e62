/**
 * `slipway image`: the content library, on the server's data folder (like `bootimage`):
 * import an image file as signed, chunked content; list, show and delete manifests.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openSite, siteExists } from "../site/site.ts";
import { addImage, deleteImage, deploymentsUsing, findImage } from "../site/content-library.ts";
import { ImportError } from "../content/import.ts";
import { imageFormats, isManifestName, type ImageFormat } from "../content/manifest.ts";
import { stores } from "../storage/stores.ts";
import { createLogger } from "../log.ts";
import { SlipwayError } from "../errors.ts";
import { dataOption, parse } from "./arguments.ts";
import { siteOptions } from "./server-commands.ts";
import { buildDebianImage, debianImageProblems, type DebianImageResult } from "../media/debian-image.ts";
import { formatFields, formatTable, printable } from "./table.ts";
import { CliError, ExitCode, type Command } from "./command.ts";

const USAGE = `Usage: slipway image import FILE --name NAME [--format tar|tar.gz|tar.zst|raw] [--data DIR] [--json]
       slipway image build debian --name NAME [--suite bookworm] [--packages P,P…] [--mirror URL] [--output FILE.tar.zst] [--cache DIR] [--data DIR] [--json]
       slipway image list [--data DIR] [--json]
       slipway image show NAME|DIGEST [--data DIR] [--json]
       slipway image delete DIGEST [--data DIR] [--json]
  import cuts the file into 4 MiB chunks stored by SHA-256 in DIR/content and records a manifest
  signed with the site key; the format is detected from the file's first bytes unless given.
  A task sequence's apply-image step names an image by NAME (the newest import with that name)
  or by DIGEST. delete refuses while an enabled deployment applies the image, and keeps chunks
  other images still use.
  build debian makes a minimal bootable Debian (kernel and initramfs, systemd, ifupdown with DHCP,
  no SSH server unless --packages names one) from Debian's packages with mmdebstrap (as root, or
  with unprivileged user namespaces) and imports it like import. Packages are cached in --cache
  (default DIR/cache, or SLIPWAY_CACHE_DIR); file times come from SOURCE_DATE_EPOCH or the
  archive's release date, so the same archive state gives the same bytes. --output keeps the
  archive too.`;

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
      suite: { type: "string" }, packages: { type: "string" }, mirror: { type: "string" }, output: { type: "string" }, cache: { type: "string" },
    });
    const [action, ...rest] = positionals;
    const arity: Record<string, number> = { import: 1, build: 1, list: 0, show: 1, delete: 1 };
    if (values.help) {
      process.stdout.write(USAGE + "\n");
      return ExitCode.OK;
    }
    if (!action || !(action in arity) || rest.length !== arity[action]) throw new CliError(USAGE, ExitCode.USAGE);
    const json = Boolean(values.json);
    const format = values.format as string | undefined;
    const buildOnly = ["suite", "packages", "mirror", "output", "cache"].filter((k) => values[k] !== undefined);
    if (action === "import" || action === "build") {
      if (!values.name) throw new CliError("--name NAME is required", ExitCode.USAGE);
      if (format !== undefined && !imageFormats.includes(format as ImageFormat)) throw new CliError(`--format is one of ${imageFormats.join(", ")}`, ExitCode.USAGE);
    } else if (values.name !== undefined || format !== undefined) {
      throw new CliError(`--name and --format belong to "image import" and "image build"`, ExitCode.USAGE);
    }
    if (action !== "build" && buildOnly.length) throw new CliError(`--${buildOnly[0]} belongs to "image build"`, ExitCode.USAGE);
    if (action === "build") {
      if (rest[0] !== "debian") throw new CliError(`Cannot build a "${printable(rest[0])}" image: Slipway builds "debian" images (bring others with image import)`, ExitCode.USAGE);
      if (format !== undefined) throw new CliError("--format belongs to \"image import\" (a built image is tar.zst)", ExitCode.USAGE);
    }
    const dataDir = dataOption(values.data as string | undefined);
    if (!siteExists(dataDir)) throw new CliError(`No site in ${dataDir}`, ExitCode.NOT_FOUND);
    const site = await openSite({ ...siteOptions(dataDir), log: createLogger({ level: "warn", write: (l) => process.stderr.write(l + "\n") }) });
    const who = `local:${os.userInfo().username}`;
    let built: { result: DebianImageResult; cleanup: () => void } | undefined;
    try {
      if (action === "build") built = await buildImage(dataDir, values);
      if (action === "import" || action === "build") {
        const progress = progressPrinter(values.name as string);
        let r;
        try {
          r = await addImage(site, {
            file: built?.result.output ?? rest[0], name: values.name as string, format: format as ImageFormat | undefined, actor: who, onProgress: progress.update,
            built: built && { by: "image build debian", suite: built.result.suite, mirror: built.result.mirror, packages: built.result.packages, sourceDateEpoch: built.result.sourceDateEpoch },
          });
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
      built?.cleanup();
      await site.close();
    }
  },
};

/** `image build debian`: the archive in a temporary folder of the cache (or --output), progress on stderr. */
async function buildImage(dataDir: string, values: Record<string, unknown>): Promise<{ result: DebianImageResult; cleanup: () => void }> {
  const cacheDir = path.resolve((values.cache as string | undefined) ?? (process.env.SLIPWAY_CACHE_DIR || path.join(dataDir, "cache")));
  const keep = values.output as string | undefined;
  if (keep !== undefined && !/\.tar\.zst$/.test(keep)) throw new CliError("--output names a .tar.zst file", ExitCode.USAGE);
  if (keep !== undefined && fs.existsSync(keep)) throw new CliError(`Cannot write ${keep}: it exists`, ExitCode.CONFLICT);
  const packages = ((values.packages as string | undefined) ?? "").split(/[\s,]+/).filter(Boolean);
  const wanted = { suite: (values.suite as string | undefined) ?? "bookworm", packages, mirror: values.mirror as string | undefined };
  const problems = debianImageProblems(wanted);
  if (!isManifestName(values.name as string)) problems.unshift(`a name is 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  if (problems.length) throw new CliError(`Cannot build image "${printable(values.name as string)}": ${problems.join("; ")}`, ExitCode.INVALID);
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  const tmp = fs.mkdtempSync(path.join(cacheDir, ".image-"));
  const output = keep ? path.resolve(keep) : path.join(tmp, "image.tar.zst");
  const cleanup = () => fs.rmSync(tmp, { recursive: true, force: true });
  try {
    const result = await buildDebianImage({
      ...wanted, cacheDir, output, onLine: (l) => process.stderr.write(`Building ${printable(values.name as string)}: ${printable(l)}\n`),
    });
    return { result, cleanup };
  } catch (err) {
    cleanup();
    throw new CliError(`Cannot build image "${printable(values.name as string)}": ${(err as Error).message}`, ExitCode.FAILURE);
  }
}

export const imageCommands: Record<string, Command> = { image: imageCommand };
