/**
 * The deploy environment's side of the steps: running a tool with a timeout and captured
 * output, naming disks and partitions, mounting. Steps call these instead of spawning
 * programs themselves, so a tool's failure always comes back as the same kind of message.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { listDisks } from "./inventory.ts";

export type ExecResult = { code: number; output: string };

const MAX_OUTPUT = 16 * 1024;

/**
 * Runs a program (no shell unless the caller asks for one), feeding `input`, keeping the
 * last 16 KB of stdout+stderr. Rejects only if the program cannot start; an abort kills
 * its whole process group and resolves with code 124 (as timeout(1) does).
 */
export function execTool(file: string, args: string[], opts: { input?: string | Buffer; env?: NodeJS.ProcessEnv; cwd?: string; signal?: AbortSignal } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"], detached: true });
    let output = "";
    const keep = (c: Buffer) => {
      output += c.toString("utf8");
      if (output.length > MAX_OUTPUT * 2) output = output.slice(-MAX_OUTPUT);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (err) => {
      opts.signal?.removeEventListener("abort", onAbort);
      reject(new Error(`Cannot run ${file}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "not found in this boot image" : err.message}`));
    });
    child.on("close", (code, sig) => {
      opts.signal?.removeEventListener("abort", onAbort);
      resolve({ code: aborted ? 124 : code ?? (sig ? 128 : 1), output: output.slice(-MAX_OUTPUT) });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input);
  });
}

/** Runs a tool that must succeed; throws an Error naming the tool and its last output otherwise. */
export async function mustRun(file: string, args: string[], opts: Parameters<typeof execTool>[2] = {}): Promise<string> {
  const r = await execTool(file, args, opts);
  if (r.code !== 0) {
    const tail = r.output.trim().split("\n").slice(-5).join(" | ");
    throw new Error(`${file} ${args.join(" ")} failed (exit ${r.code})${tail ? `: ${tail}` : ""}`);
  }
  return r.output;
}

/**
 * A disk as a task sequence names it: an index into the machine's disks in name order ("0")
 * or a device path ("/dev/vda").
 */
export function diskPath(ref: string): string {
  if (/^\d{1,3}$/.test(ref)) {
    const disks = listDisks();
    const d = disks[Number(ref)];
    if (!d) throw new Error(`Cannot find disk ${ref}: this machine has ${disks.length} disk(s)${disks.length ? ` (${disks.map((x) => x.name).join(", ")})` : ""}`);
    return `/dev/${d.name}`;
  }
  if (/^\/dev\/[A-Za-z0-9/_-]{1,64}$/.test(ref)) return ref;
  throw new Error(`Cannot use disk "${ref}": give a disk number such as 0 or a path such as /dev/sda`);
}

/** Partition N of a disk: /dev/sda + 2 → /dev/sda2, /dev/nvme0n1 + 2 → /dev/nvme0n1p2. */
export function partitionOf(disk: string, n: number): string {
  return /\d$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`;
}

/** A partition as a task sequence names it: "0:2" (disk 0, partition 2) or a device path. */
export function partitionPath(ref: string): string {
  const m = /^(\d{1,3}):(\d{1,3})$/.exec(ref);
  if (m) return partitionOf(diskPath(m[1]), Number(m[2]));
  if (/^\/dev\/[A-Za-z0-9/_-]{1,64}$/.test(ref)) return ref;
  throw new Error(`Cannot use partition "${ref}": give disk:partition such as 0:2 or a path such as /dev/sda2`);
}

/** Waits until the kernel has made a device node (after repartitioning it appears a moment later). */
export async function waitForDevice(dev: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!existsSync(dev)) {
    if (Date.now() > until) throw new Error(`Cannot find ${dev}: the kernel did not create it`);
    await sleep(100);
  }
}

/** Where a device is mounted now, if it is. */
export function mountPointOf(dev: string): string | undefined {
  for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
    const [source, target] = line.split(" ");
    if (source === dev) return target.replace(/\\040/g, " ");
  }
  return undefined;
}

export async function mount(dev: string, dir: string, type?: string): Promise<void> {
  if (mountPointOf(dev) === dir) return;
  mkdirSync(dir, { recursive: true });
  await mustRun("mount", [...(type ? ["-t", type] : []), dev, dir]);
}

export async function unmountDevice(dev: string): Promise<void> {
  for (let where = mountPointOf(dev); where; where = mountPointOf(dev)) await mustRun("umount", [where]);
}

/** Unmounts the disk and every partition of it that is mounted (read from /proc/mounts once). */
export async function unmountDisk(disk: string): Promise<void> {
  const ofDisk = new RegExp(`^${disk.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(p?\\d+)?$`);
  const targets = readFileSync("/proc/mounts", "utf8").split("\n")
    .map((line) => line.split(" "))
    .filter(([source, target]) => target && ofDisk.test(source))
    .map(([, target]) => target.replace(/\\040/g, " "));
  // Innermost first, so a mount inside another comes off before it.
  for (const target of targets.reverse()) await mustRun("umount", [target]);
}

/** The UUID of the file system on a device, as `root=UUID=` wants it. */
/** The file-system type blkid sees on a device (ext4, vfat…), "auto" when it names none. */
export async function fsType(dev: string): Promise<string> {
  const out = await mustRun("blkid", [dev]);
  return /\bTYPE="([a-z0-9]+)"/.exec(out)?.[1] ?? "auto";
}

export async function fsUuid(dev: string): Promise<string> {
  const out = await mustRun("blkid", [dev]);
  const m = /\bUUID="([^"]+)"/.exec(out);
  if (!m) throw new Error(`Cannot find the file-system UUID of ${dev}: blkid printed ${out.trim()}`);
  return m[1];
}
