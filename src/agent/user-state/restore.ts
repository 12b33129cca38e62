/**
 * User-state restore: writes a capture (capture.ts) into a new system mounted read-write at
 * `root`, mapping owners by name, and restoring nothing half-way.
 *
 * Owners: the archive carries the old system's numeric ids and, in its manifest, their names.
 * GNU tar would look names up in the *running* system (the deploy environment, which lacks
 * these users), so we map ids ourselves: a streaming rewriter (protocol/tar.ts) replaces each
 * member's uid/gid and the qualifiers of its ACL records with the new system's ids for the same
 * names, and GNU tar extracts with `--numeric-owner`. A name the new system lacks keeps its
 * old id and is reported in `unmappedOwners`.
 *
 * All or nothing: GNU tar extracts into a staging folder on the target file system
 * (`<root>/.slipway-restore-*`). Only when the whole stream ended cleanly (source done, the
 * archive's end-of-archive marker read, tar finished) are entries moved into place by
 * rename(2). If the source throws (a tampered chunk), the archive is truncated or tar fails as
 * a whole, the staging folder is removed and no file of the archive appears in the real paths.
 *
 * Merging into what the new system already has (e.g. /home/alice made by the image): an entry
 * that is not there is moved in; a directory that is there is merged entry by entry and then
 * takes the archive's owner, mode, times, ACLs and xattrs; a file that is there is replaced by
 * the user's own and reported in `conflicts`; an entry whose type differs from what is there
 * (a file where the new system has a directory, or the other way round) is not restored and
 * is reported in `notRestored`.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { lstat, mkdtemp, readdir, readlink, rename, rm } from "node:fs/promises";
import path from "node:path";
import { TarRewriter, type TarMember } from "../../protocol/tar.ts";
import { indexAccounts, mapAclText, readAccounts } from "./accounts.ts";
import { DEFAULT_TAR, MANIFEST_FORMAT, MANIFEST_NAME, type UserStateManifest } from "./capture.ts";

export interface RestoreOptions {
  /** The new system's root file system, mounted read-write. */
  root: string;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** GNU tar (default /usr/bin/tar). */
  tar?: string;
}

export interface RestoreSummary {
  /** Members in the archive (files, directories, links), not counting the manifest. */
  members: number;
  /** Regular files and their bytes of data, as the archive holds them. */
  files: number;
  bytes: number;
  /** Paths that could not be restored, with tar's (or the merge's) reason. */
  notRestored: { path: string; reason: string }[];
  /** Names the new system lacks: their files keep the old numeric id (-1: an ACL's name with no id known). */
  unmappedOwners: { kind: "user" | "group"; name: string | null; id: number }[];
  /** Files the new system already had that the user's own replaced. */
  conflicts: { path: string; action: string }[];
}

const STAGING_PREFIX = ".slipway-restore-";

/** Restores `source` (a capture's stream) into `root`; see the module comment. */
export async function restoreUserState(source: AsyncIterable<Uint8Array>, opts: RestoreOptions): Promise<RestoreSummary> {
  const log = opts.log ?? (() => {});
  const root = path.resolve(opts.root);
  const tarBin = opts.tar ?? DEFAULT_TAR;
  opts.signal?.throwIfAborted();
  const now = await readAccounts(root);
  const newUsers = indexAccounts(now.users).byName;
  const newGroups = indexAccounts(now.groups).byName;
  const summary: RestoreSummary = { members: 0, files: 0, bytes: 0, notRestored: [], unmappedOwners: [], conflicts: [] };

  let manifest: UserStateManifest | undefined;
  let oldUsers = new Map<number, string>();
  let oldGroups = new Map<number, string>();
  const unmapped = new Map<string, RestoreSummary["unmappedOwners"][number]>();
  const mapId = (kind: "user" | "group", id: number): number => {
    const name = (kind === "user" ? oldUsers : oldGroups).get(id);
    const mapped = name === undefined ? undefined : (kind === "user" ? newUsers : newGroups).get(name);
    if (mapped !== undefined) return mapped;
    if (id === 0) return 0; // root is root everywhere, named or not
    const key = `${kind}:${id}`;
    if (!unmapped.has(key)) unmapped.set(key, { kind, name: name ?? null, id });
    return id;
  };
  const mapQualifier = (kind: "user" | "group") => (q: string) => {
    if (/^\d+$/.test(q)) return String(mapId(kind, Number(q)));
    // Capture writes numbers; a name (from an account capture could not number) is looked
    // up in the new system, and if absent left for tar, which reports the ACL it cannot set.
    const mapped = (kind === "user" ? newUsers : newGroups).get(q);
    if (mapped !== undefined) return String(mapped);
    const key = `${kind}:${q}`;
    if (!unmapped.has(key)) unmapped.set(key, { kind, name: q, id: -1 });
    return q;
  };
  /** Directories the archive holds, relative to the root ("home/alice"). */
  const archiveDirs = new Set<string>();

  const rewriter = new TarRewriter({
    maxCollect: 16 * 1024 * 1024,
    onMember: (m: TarMember) => {
      if (!manifest) {
        if (m.path !== MANIFEST_NAME || m.type !== "0") {
          throw new Error(`Cannot restore user state: the archive does not start with its manifest (${MANIFEST_NAME}); it is not a user-state capture`);
        }
        return { drop: true, collect: true };
      }
      const rel = safeRelative(m.path) ?? failPath(m.path);
      if ((m.type === "1") && safeRelative(m.linkpath) === undefined) failPath(m.linkpath);
      summary.members++;
      if (m.type === "0" || m.type === "7") {
        summary.files++;
        summary.bytes += m.size;
      }
      if (m.type === "5") archiveDirs.add(rel);
      const pax = m.pax
        // The raw ACL xattrs hold old numeric ids; the SCHILY.acl.* records carry the ACLs.
        .filter(([k]) => !k.startsWith("SCHILY.xattr.system.posix_acl_"))
        .map(([k, v]): [string, Buffer] =>
          k === "SCHILY.acl.access" || k === "SCHILY.acl.default"
            ? [k, Buffer.from(mapAclText(v.toString("utf8"), mapQualifier("user"), mapQualifier("group")))]
            : [k, v],
        );
      return { uid: mapId("user", m.uid), gid: mapId("group", m.gid), pax };
    },
    onData: (_m, data) => {
      let parsed: UserStateManifest;
      try {
        parsed = JSON.parse(data.toString("utf8")) as UserStateManifest;
      } catch {
        throw new Error("Cannot restore user state: its manifest is not JSON");
      }
      if (parsed?.format !== MANIFEST_FORMAT || !Array.isArray(parsed.users) || !Array.isArray(parsed.groups)) {
        throw new Error(`Cannot restore user state: its manifest is not a ${MANIFEST_FORMAT} manifest`);
      }
      manifest = parsed;
      oldUsers = indexAccounts(parsed.users.map((u) => ({ name: String(u.name), id: Number(u.uid) }))).byId;
      oldGroups = indexAccounts(parsed.groups.map((g) => ({ name: String(g.name), id: Number(g.gid) }))).byId;
    },
  });

  const staging = await mkdtemp(path.join(root, STAGING_PREFIX));
  let moved = false;
  try {
    const tar = spawn(
      tarBin,
      [
        "--extract", "--file=-", "--numeric-owner", "--same-owner", "--same-permissions",
        "--xattrs", "--xattrs-include=*", "--acls", "--no-unquote", "--directory", staging,
        // Read to the end of the stream: capture's tar pads its last 64 KiB record with zeros
        // after the end-of-archive marker, and a tar that stops at the marker exits while those
        // are still coming (EPIPE: a whole restore failed). Only zeros can follow the marker:
        // the rewriter refuses anything else, so nothing more is ever extracted.
        "--ignore-zeros",
      ],
      { stdio: ["pipe", "ignore", "pipe"], argv0: "tar", env: { ...process.env, LC_ALL: "C.UTF-8" } },
    );
    const exited = once(tar, "close") as Promise<[number | null, NodeJS.Signals | null]>;
    let stderr = "";
    tar.stderr.setEncoding("utf8");
    tar.stderr.on("data", (d: string) => {
      stderr = (stderr + d).slice(-1024 * 1024);
    });
    tar.stdin.on("error", () => {});
    try {
      await once(tar, "spawn");
    } catch (e) {
      throw new Error(`Cannot restore user state: GNU tar (${tarBin}) does not start: ${(e as Error).message}`);
    }
    // GNU tar stops reading at the end-of-archive marker and exits; the record padding after it
    // may then find the pipe closed. The rest of the source is still read (and so authenticated,
    // chunk by chunk) before anything moves into place.
    let tarFinished = false;
    try {
      for await (const chunk of source) {
        opts.signal?.throwIfAborted();
        for (const out of coalesce(rewriter.push(chunk))) {
          if (tarFinished) continue;
          // A write to a tar that has exited fails with EPIPE: the exit code below says what happened.
          if (!tar.stdin.write(out)) await Promise.race([once(tar.stdin, "drain").catch(() => undefined), exited]);
          if (tar.exitCode !== null || tar.signalCode !== null) {
            await exited;
            if (tar.exitCode === 0 && rewriter.ended) {
              tarFinished = true;
              continue;
            }
            throw new Error(`Cannot restore user state: GNU tar stopped before the archive ended${tailOf(stderr)}`);
          }
        }
      }
      rewriter.end();
      if (!manifest) throw new Error("Cannot restore user state: the archive has no manifest");
      tar.stdin.end();
    } catch (e) {
      tar.kill("SIGKILL");
      await exited.catch(() => {});
      throw e instanceof Error && e.message.startsWith("Cannot") ? new Error(`${e.message}; nothing was restored`, { cause: e }) : new Error(`Cannot restore user state: ${(e as Error).message}; nothing was restored`, { cause: e });
    }
    const [code, sig] = await exited;
    const failures = tarFailures(stderr);
    if (sig || code === null || code > 2 || (code !== 0 && failures.length === 0) || failures.some((f) => /No space left on device/.test(f.reason))) {
      throw new Error(`Cannot restore user state: GNU tar ${sig ? `was killed (${sig})` : `exited ${code}`}${tailOf(stderr)}; nothing was restored`);
    }
    summary.notRestored.push(...failures);
    opts.signal?.throwIfAborted();

    // From here on entries move into place; the archive was whole.
    moved = true;
    // Directories the new system already has take the archive's attributes; they are read
    // from the staging folder before moving its entries out changes their times.
    const merged: MergedDir[] = [];
    await findMergedDirs(staging, root, "", root, archiveDirs, merged);
    // Most are where the archive says (one tar for all); a directory the new system reaches
    // through a symbolic link (/home -> var/home) is copied from its parent on each side.
    const direct = merged.filter((m) => m.target === path.join(root, m.rel)).map((m) => m.rel);
    const linked = merged.filter((m) => m.target !== path.join(root, m.rel));
    const attributes: { dir: string; archive: Buffer }[] = [];
    if (direct.length > 0) attributes.push({ dir: root, archive: await archiveDirectories(tarBin, staging, direct) });
    for (const m of linked) {
      if (path.basename(m.target) !== path.basename(m.rel)) {
        summary.notRestored.push({ path: `/${m.rel}`, reason: "its directory attributes: the new system has it under another name, through a symbolic link" });
        continue;
      }
      attributes.push({ dir: path.dirname(m.target), archive: await archiveDirectories(tarBin, path.join(staging, path.dirname(m.rel)), [path.basename(m.rel)]) });
    }
    await mergeInto(staging, root, "", root, summary);
    for (const a of attributes) await applyDirectories(tarBin, a.dir, a.archive, summary);
    summary.unmappedOwners = [...unmapped.values()];
    log(`restored ${summary.files} files, ${summary.bytes} bytes; ${summary.notRestored.length} not restored, ${summary.conflicts.length} replaced, ${summary.unmappedOwners.length} owners unmapped`);
    return summary;
  } finally {
    await rm(staging, { recursive: true, force: true }).catch((e) => {
      log(`could not remove the staging folder ${staging}${moved ? "" : " (nothing of it was moved into place)"}: ${(e as Error).message}`);
    });
  }
}

/**
 * Joins runs of small pieces (headers, small files' data) so tar gets a few large writes
 * rather than one per 512-byte header; large pieces pass as they are, uncopied.
 */
function coalesce(pieces: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let run: Buffer[] = [];
  let runLen = 0;
  const flush = () => {
    if (run.length > 0) out.push(run.length === 1 ? run[0]! : Buffer.concat(run, runLen));
    run = [];
    runLen = 0;
  };
  for (const p of pieces) {
    if (p.length >= 65536) {
      flush();
      out.push(p);
      continue;
    }
    run.push(p);
    runLen += p.length;
    if (runLen >= 65536) flush();
  }
  flush();
  return out;
}

/** `p` as a relative path with no "..", or undefined. */
function safeRelative(p: string): string | undefined {
  const parts = p.split("/").filter((x) => x !== "" && x !== ".");
  if (p.startsWith("/") || parts.length === 0 || parts.includes("..") || p.includes("\0")) return undefined;
  return parts.join("/");
}

function failPath(p: string): never {
  throw new Error(`Cannot restore user state: the archive names "${p.slice(0, 200)}", which is not a path inside the new system`);
}

/** `tar: NAME: REASON` lines: the files tar could not write. */
function tarFailures(stderr: string): { path: string; reason: string }[] {
  const out: { path: string; reason: string }[] = [];
  for (const line of stderr.split("\n")) {
    const t = /^(?:\S*\/)?tar: (.*)$/.exec(line);
    if (!t || /Exiting with failure status/.test(line)) continue;
    const m = /^(.*?): (.+)$/.exec(t[1]!);
    out.push(m ? { path: `/${m[1]!}`, reason: m[2]! } : { path: "", reason: t[1]! });
  }
  return out;
}

/**
 * Moves the staged tree into the target, entry by entry (see the module comment). `rel` is
 * the folder being merged, relative to the staging folder; `target` is where it is in the new
 * system (root/rel, unless a symbolic link in the new system leads elsewhere inside root).
 */
async function mergeInto(staging: string, root: string, rel: string, target: string, summary: RestoreSummary): Promise<void> {
  for (const name of await readdir(path.join(staging, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    const from = path.join(staging, r);
    const to = path.join(target, name);
    const src = await lstat(from);
    let dst;
    try {
      dst = await lstat(to);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
        summary.notRestored.push({ path: `/${r}`, reason: `cannot look at what the new system has there (${(e as NodeJS.ErrnoException).code})` });
        continue;
      }
    }
    try {
      const linkedDir = src.isDirectory() && dst?.isSymbolicLink() ? await directoryInside(root, to) : undefined;
      if (!dst) {
        await rename(from, to);
      } else if (src.isDirectory() && (dst.isDirectory() || linkedDir)) {
        await mergeInto(staging, root, r, linkedDir ?? to, summary);
      } else if (!src.isDirectory() && !dst.isDirectory()) {
        await rename(from, to);
        summary.conflicts.push({ path: `/${r}`, action: "the new system's file was replaced by the user's" });
      } else {
        summary.notRestored.push({
          path: `/${r}`,
          reason: `the new system has a ${dst.isDirectory() ? "directory" : dst.isSymbolicLink() ? "symbolic link that leads to no directory inside it" : "file"} there, the archive a ${src.isDirectory() ? "directory" : "file"}; the new system's was kept`,
        });
      }
    } catch (e) {
      summary.notRestored.push({ path: `/${r}`, reason: `cannot move it into place (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
    }
  }
}

/**
 * Where the symbolic link `abs` leads, read as the new system would read it (absolute targets
 * start at `root`, ".." stops at `root`), if that is a directory; never a path outside root.
 */
async function directoryInside(root: string, abs: string): Promise<string | undefined> {
  let todo = path.relative(root, abs).split("/");
  let done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === "" || c === ".") continue;
    if (c === "..") {
      done.pop();
      continue;
    }
    const p = path.join(root, ...done, c);
    const st = await lstat(p).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (++links > 40) return undefined; // ELOOP, as the kernel would say
      const t = await readlink(p);
      if (t.startsWith("/")) done = [];
      todo = [...t.split("/"), ...todo];
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) return undefined;
    done.push(c);
  }
  const out = path.join(root, ...done);
  return (await lstat(out)).isDirectory() ? out : undefined;
}

interface MergedDir {
  /** The archive's path, relative ("home/alice"). */
  rel: string;
  /** The directory in the new system it merges into. */
  target: string;
}

/** The archive's directories that the new system already has, parents first. */
async function findMergedDirs(staging: string, root: string, rel: string, target: string, archiveDirs: Set<string>, out: MergedDir[]): Promise<void> {
  for (const name of await readdir(path.join(staging, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    if (!(await lstat(path.join(staging, r))).isDirectory()) continue;
    const to = path.join(target, name);
    const dst = await lstat(to).catch(() => undefined);
    const dir = dst?.isDirectory() ? to : dst?.isSymbolicLink() ? await directoryInside(root, to) : undefined;
    if (!dir) continue;
    if (archiveDirs.has(r)) out.push({ rel: r, target: dir });
    await findMergedDirs(staging, root, r, dir, archiveDirs, out);
  }
}

/** A tar archive of just these directory entries (owner, mode, times, ACLs, xattrs; no contents). */
async function archiveDirectories(tarBin: string, staging: string, dirs: string[]): Promise<Buffer> {
  const create = spawn(tarBin, ["--create", "--file=-", "--format=posix", ...DIR_ATTRIBUTE_OPTIONS, "--xattrs-exclude=system.posix_acl_*", "--directory", staging, "--null", "--verbatim-files-from", "--no-unquote", "--files-from=-"], {
    stdio: ["pipe", "pipe", "pipe"],
    argv0: "tar",
  });
  const closed = once(create, "close");
  const chunks: Buffer[] = [];
  let err = "";
  create.stdout.on("data", (d: Buffer) => chunks.push(d));
  create.stderr.on("data", (d) => (err += d));
  create.stdin.end(Buffer.from(dirs.map((d) => `${d}\0`).join("")));
  const [code] = await closed;
  if (code !== 0) throw new Error(`Cannot restore user state: GNU tar cannot read the staged directories' attributes (exit ${code})${tailOf(err)}`);
  return Buffer.concat(chunks);
}

/** Extracts `archiveDirectories` output over the directories in the new system. */
async function applyDirectories(tarBin: string, root: string, archive: Buffer, summary: RestoreSummary): Promise<void> {
  const extract = spawn(tarBin, ["--extract", "--file=-", ...DIR_ATTRIBUTE_OPTIONS, "--same-owner", "--same-permissions", "--directory", root], {
    stdio: ["pipe", "ignore", "pipe"],
    argv0: "tar",
  });
  const closed = once(extract, "close");
  let err = "";
  extract.stderr.on("data", (d) => (err += d));
  extract.stdin.on("error", () => {});
  extract.stdin.end(archive);
  const [code] = await closed;
  if (code !== 0) {
    const failures = tarFailures(err);
    if (failures.length === 0) failures.push({ path: "", reason: `GNU tar exited ${code}${tailOf(err)}` });
    for (const f of failures) summary.notRestored.push({ path: f.path, reason: `its directory attributes: ${f.reason}` });
  }
}

const DIR_ATTRIBUTE_OPTIONS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--no-recursion"];

function tailOf(stderr: string): string {
  const lines = stderr.trim().split("\n").filter(Boolean).slice(-3);
  return lines.length ? `: ${lines.join(" | ")}` : "";
}
