/**
 * capture-user-state: reads users' files from the old system before the disk is wiped,
 * mounted read-only (ext4 without replaying its journal: not one byte of the old disk is
 * written), and streams them — tar, zstd, sealed chunk by chunk on this machine with the
 * association's data key — to the site's state store. Nothing is held whole in memory or on a
 * temporary disk. The site learns only ciphertext, the chunk count and the sizes.
 */
import { readdirSync, existsSync, mkdirSync } from "node:fs";
import type { StepModule, StepContext } from "../engine.ts";
import { fsType, mountPointOf, mustRun, partitionPath, waitForDevice } from "../system.ts";
import { listDisks } from "../inventory.ts";
import { captureUserState } from "../user-state/capture.ts";
import { sendUserState } from "../user-state/transfer.ts";

export const OLD_SYSTEM_DIR = "/mnt/old-system";


/** Mounts a partition read-only without writing to it (no journal replay), where the file system allows. */
export async function mountReadOnly(dev: string, dir: string): Promise<void> {
  const type = await fsType(dev);
  const opts = type === "ext4" || type === "ext3" ? "ro,noload" : type === "xfs" ? "ro,norecovery" : "ro";
  mkdirSync(dir, { recursive: true });
  await mustRun("mount", ["-o", opts, ...(type !== "auto" ? ["-t", type] : []), dev, dir]);
}

/** The partitions of every disk, in order. */
function partitions(): string[] {
  const out: string[] = [];
  for (const d of listDisks()) {
    let entries: string[] = [];
    try {
      entries = readdirSync(`/sys/block/${d.name}`);
    } catch {
      continue;
    }
    for (const e of entries.filter((x) => x.startsWith(d.name) && existsSync(`/sys/block/${d.name}/${x}/partition`)).sort()) out.push(`/dev/${e}`);
  }
  return out;
}

/** The one partition holding a Linux system (/etc/passwd and /etc/os-release), or an error naming what was found. */
async function findOldSystem(ctx: StepContext): Promise<string> {
  const found: string[] = [];
  for (const dev of partitions()) {
    const type = await fsType(dev).catch(() => "auto");
    if (!["ext4", "ext3", "ext2", "xfs", "btrfs"].includes(type)) continue;
    const dir = `${OLD_SYSTEM_DIR}-probe`;
    try {
      await mountReadOnly(dev, dir);
    } catch {
      continue;
    }
    try {
      if (existsSync(`${dir}/etc/passwd`) && existsSync(`${dir}/etc/os-release`)) found.push(dev);
    } finally {
      await mustRun("umount", [dir]);
    }
  }
  if (found.length === 1) {
    ctx.log(`old system found on ${found[0]}`);
    return found[0];
  }
  throw new Error(found.length
    ? `Cannot tell which system to capture: ${found.join(", ")} each hold one; name it with "from"`
    : "Cannot find an old system to capture: no partition holds /etc/passwd and /etc/os-release; name it with \"from\"");
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

export const captureUserStateStep: StepModule = {
  type: "capture-user-state",
  async run(params: { from?: string; include?: string[]; exclude?: string[]; defaultExcludes?: boolean }, ctx) {
    const dev = params.from ? partitionPath(ctx.expand(params.from)) : await findOldSystem(ctx);
    await waitForDevice(dev);
    if (mountPointOf(dev)) await mustRun("umount", [mountPointOf(dev)!]);
    await mountReadOnly(dev, OLD_SYSTEM_DIR);
    try {
      const api = ctx.userState();
      const grant = await api.grant("capture");
      const capture = captureUserState({
        root: OLD_SYSTEM_DIR, include: params.include?.map((p) => ctx.expand(p)), exclude: params.exclude,
        defaultExcludes: params.defaultExcludes, signal: ctx.signal, log: (line) => ctx.log(line),
      });
      await sendUserState(api, grant, capture.stream, (stored, chunks) => chunks % 8 === 0 && ctx.progress(0, `${mib(stored)} captured, ${chunks} chunks sent`));
      const summary = await capture.done;
      const done = await api.captured(grant.association, { files: summary.files, stateBytes: summary.bytes });
      for (const s of summary.skipped) ctx.log(`skipped ${s.path}: ${s.reason}`);
      if (summary.skippedCount > summary.skipped.length) ctx.log(`… and ${summary.skippedCount - summary.skipped.length} more skipped`);
      return {
        status: "succeeded",
        message: `captured ${summary.files} files (${mib(summary.bytes)}) of ${summary.users.length} users from ${dev} into association ${grant.association}: ${mib(done.storedBytes)} stored in ${done.chunks} encrypted chunks`,
      };
    } finally {
      await mustRun("umount", [OLD_SYSTEM_DIR]).catch(() => undefined);
    }
  },
};
