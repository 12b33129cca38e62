/**
 * Real ext4 file systems in loop-mounted image files for user-state tests, and a full
 * description of a tree (stat, xattrs, ACLs, contents) to compare two of them.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export interface LoopFs {
  dir: string;
  cleanup(): Promise<void>;
}

/** A fresh ext4 file system of `mb` megabytes, mounted; `cleanup` unmounts and deletes it. */
export async function makeExt4(mb: number, label: string): Promise<LoopFs> {
  const work = await mkdtemp(path.join(os.tmpdir(), `slipway-us-${label}-`));
  const image = path.join(work, "fs.img");
  const dir = path.join(work, "mnt");
  let mounted = false;
  const cleanup = async () => {
    if (mounted) {
      // mount -o loop sets autoclear: the loop device goes with the unmount.
      await execFileP("umount", [dir]).catch(() => execFileP("umount", ["-l", dir]).catch(() => {}));
      mounted = false;
    }
    await rm(work, { recursive: true, force: true });
  };
  try {
    await mkdir(dir);
    await execFileP("truncate", ["-s", `${mb}M`, image]);
    await execFileP("mkfs.ext4", ["-q", "-F", "-O", "^has_journal", image]);
    await execFileP("mount", ["-o", "loop", image, dir]);
    mounted = true;
    await rm(path.join(dir, "lost+found"), { recursive: true, force: true });
    return { dir, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

export async function writeAccounts(root: string, users: [string, number, number][], groups: [string, number][]): Promise<void> {
  await mkdir(path.join(root, "etc"), { recursive: true });
  await writeFile(
    path.join(root, "etc/passwd"),
    ["root:x:0:0:root:/root:/bin/bash", ...users.map(([n, u, g]) => `${n}:x:${u}:${g}:${n}:/home/${n}:/bin/bash`), "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"].join("\n") + "\n",
  );
  await writeFile(path.join(root, "etc/group"), ["root:x:0:", ...groups.map(([n, g]) => `${n}:x:${g}:`)].join("\n") + "\n");
}

export interface Described {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  mtimeNs: bigint;
  nlink: bigint;
  ino: bigint;
  link?: string;
  sha256?: string;
  xattrs: string;
  acl: string;
}

/** Every path under `root/rel` (relative to root) with what a user would compare. */
export async function describeTree(root: string, rel: string): Promise<Map<string, Described>> {
  const out = new Map<string, Described>();
  const visit = async (r: string) => {
    const abs = path.join(root, r);
    const st = await lstat(abs, { bigint: true });
    const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : st.isFile() ? "file" : "other";
    const d: Described = {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: type === "dir" ? 0n : st.size,
      mtimeNs: st.mtimeNs,
      nlink: type === "dir" ? 0n : st.nlink,
      ino: st.ino,
      xattrs: type === "symlink" ? "" : xattrsOf(abs),
      acl: type === "symlink" ? "" : aclOf(abs),
    };
    if (type === "symlink") d.link = await readlink(abs);
    if (type === "file") d.sha256 = await sha256File(abs);
    out.set(r, d);
    if (type === "dir") for (const n of (await readdir(abs)).sort()) await visit(`${r}/${n}`);
  };
  await visit(rel);
  return out;
}

function xattrsOf(abs: string): string {
  // getfattr prints nothing (and exits 0) for a file without xattrs; ACLs are compared apart.
  const text = execFileSync("getfattr", ["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", "--", abs], { encoding: "utf8" });
  return text
    .split("\n")
    .filter((l) => l && !l.startsWith("#") && !l.startsWith("system.posix_acl_"))
    .sort()
    .join("\n");
}

function aclOf(abs: string): string {
  return execFileSync("getfacl", ["-n", "-p", "-c", "--", abs], { encoding: "utf8" }).trim();
}

async function sha256File(abs: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(abs)) h.update(c as Buffer);
  return h.digest("hex");
}

export function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
}
