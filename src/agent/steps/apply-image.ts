/**
 * Applies an image from the content library to a partition, streamed from the distribution
 * point and verified chunk by chunk before a byte of it is written:
 * - file-based images (tar, tar.gz, tar.zst) are unpacked into the mounted file system;
 * - raw images are written to the partition (a file-system image) or, when the step names a
 *   whole disk, to the disk (a disk image with its own partitions and boot code), holding the first chunk —
 *   where the file system's superblock lives — back until every other chunk has verified, so
 *   an interrupted write never leaves a mountable, let alone bootable, half.
 * On any failure the partition's first MiB is zeroed: nothing half-applied can boot.
 */
import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { once } from "node:events";
import { closeSync, existsSync, fsyncSync, openSync, writeSync, readSync } from "node:fs";
import path from "node:path";
import type { StepModule, StepContext } from "../engine.ts";
import type { Manifest } from "../../content/manifest.ts";
import { diskPath, mount, mountPointOf, mustRun, execTool, partitionPath, unmountDevice, unmountDisk, waitForDevice } from "../system.ts";

export const TARGET_DIR = "/mnt/target";

function zeroStart(dev: string): void {
  const fd = openSync(dev, "r+");
  try {
    writeSync(fd, Buffer.alloc(1024 * 1024), 0, 1024 * 1024, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function progressReporter(ctx: StepContext, m: Manifest) {
  let lastTenth = -1;
  return (bytes: number) => {
    const pct = m.size ? Math.floor((bytes / m.size) * 100) : 100;
    if (Math.floor(pct / 10) > lastTenth) {
      lastTenth = Math.floor(pct / 10);
      // Never more than the whole (a chunk fetched again after a broken connection counts once).
      const done = Math.min(bytes, m.size);
      void ctx.progress(Math.min(pct, 100), `${(done / 1048576).toFixed(1)} of ${(m.size / 1048576).toFixed(1)} MiB verified and written`);
    }
  };
}

async function applyArchive(m: Manifest, digest: string, dev: string, ctx: StepContext): Promise<void> {
  await mount(dev, TARGET_DIR);
  const unpack = m.format === "tar.zst" ? "zstd -dcq | tar -x -f - -C " + TARGET_DIR
    : m.format === "tar.gz" ? "tar -x -z -f - -C " + TARGET_DIR
    : "tar -x -f - -C " + TARGET_DIR;
  const child = spawn("sh", ["-c", unpack], { stdio: ["pipe", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
  const exited = new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? 1)));
  child.stdin.on("error", () => {});
  try {
    for await (const chunk of ctx.content.chunks(m, digest, { signal: ctx.signal, onProgress: progressReporter(ctx, m) })) {
      if (child.exitCode !== null) break;
      if (!child.stdin.write(chunk)) await Promise.race([once(child.stdin, "drain"), exited]);
    }
    child.stdin.end();
  } catch (err) {
    child.kill("SIGKILL");
    await exited;
    throw err;
  }
  const code = await exited;
  if (code !== 0) throw new Error(`Cannot unpack image "${m.name}": tar exited ${code}${stderr.trim() ? `: ${stderr.trim().split("\n").slice(-3).join(" | ")}` : ""}`);
  await mustRun("sync", []);
}

async function applyRaw(m: Manifest, digest: string, dev: string, ctx: StepContext, wholeDisk: boolean): Promise<void> {
  await (wholeDisk ? unmountDisk(dev) : unmountDevice(dev));
  // Writes go through the thread pool (not writeSync), so the event loop keeps reading and
  // verifying the next chunks off the network while the disk takes this one.
  const fh = await open(dev, "r+");
  let first: Buffer | undefined;
  let offset = 0;
  try {
    for await (const chunk of ctx.content.chunks(m, digest, { signal: ctx.signal, onProgress: progressReporter(ctx, m) })) {
      if (offset === 0) {
        first = Buffer.from(chunk);
        // Until the real first chunk lands, the partition must not look like a file system.
        await fh.write(Buffer.alloc(chunk.length), 0, chunk.length, 0);
      } else {
        await fh.write(chunk, 0, chunk.length, offset);
      }
      offset += chunk.length;
    }
    if (!first) throw new Error(`Cannot apply image "${m.name}": it is empty`);
    await fh.sync();
    await fh.write(first, 0, first.length, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  // An ext file system image is usually smaller than the partition: grow it to fill it.
  const probe = Buffer.alloc(2);
  const rfd = openSync(dev, "r");
  try {
    readSync(rfd, probe, 0, 2, 1080);
  } finally {
    closeSync(rfd);
  }
  if (!wholeDisk && probe.readUInt16LE(0) === 0xef53) {
    const fsck = await execTool("e2fsck", ["-f", "-y", dev], { signal: ctx.signal });
    // 0: clean, 1: errors corrected — both leave a usable file system.
    if (fsck.code > 1) throw new Error(`Cannot apply image "${m.name}": e2fsck found the written file system damaged (exit ${fsck.code})`);
    await mustRun("resize2fs", [dev], { signal: ctx.signal });
  }
  if (wholeDisk) return;
  // The steps after it (configure-os, install-bootloader) work in the mounted system; an image
  // that is not a file system this kernel mounts is still applied, just not mounted.
  try {
    await mount(dev, TARGET_DIR);
  } catch (err) {
    ctx.log(`applied, but not mounted (not a file system this deploy environment mounts): ${(err as Error).message}`);
  }
}

export const applyImage: StepModule = {
  type: "apply-image",
  async run(params: { image: string; partition?: string }, ctx) {
    const image = ctx.expand(params.image);
    const digest = ctx.content.resolve(image);
    if (!digest) return { status: "failed", message: `Cannot apply image "${image}": the site has no such image in this deployment's content (import it with slipway image import)` };
    const ref = params.partition === undefined ? undefined : ctx.expand(params.partition);
    // A whole disk ("0", "/dev/sda") takes a raw disk image: partition table, boot code and all.
    const wholeDisk = ref !== undefined && (/^\d{1,3}$/.test(ref) || (ref.startsWith("/dev/") && existsSync(`/sys/block/${path.basename(ref)}`)));
    const dev = ref === undefined ? ctx.state.root : wholeDisk ? diskPath(ref) : partitionPath(ref);
    if (!dev) return { status: "failed", message: `Cannot apply image "${image}": no partition given and no disk partitioned earlier in the sequence` };
    await waitForDevice(dev);
    const m = await ctx.content.manifest(digest);
    if (wholeDisk && m.format !== "raw") return { status: "failed", message: `Cannot apply image "${m.name}" to the whole disk ${dev}: a ${m.format} image needs a partition with a file system` };
    ctx.log(`image "${m.name}" ${digest}: ${m.format}, ${m.size} bytes in ${m.chunks.length} chunks`);
    try {
      if (m.format === "raw") await applyRaw(m, digest, dev, ctx, wholeDisk);
      else await applyArchive(m, digest, dev, ctx);
    } catch (err) {
      await unmountDevice(dev).catch(() => {});
      zeroStart(dev);
      throw new Error(`${(err as Error).message}; ${dev} was wiped so that nothing half-applied can boot`);
    }
    if (wholeDisk) {
      // The image brought its own partitions and boot loader: the steps after it start from there.
      await mustRun("blockdev", ["--rereadpt", dev]);
      Object.assign(ctx.state, { disk: dev, root: undefined, target: undefined, esp: undefined, scheme: undefined });
      return { status: "succeeded", message: `disk image "${m.name}" (sha256 ${m.sha256}) written to ${dev}` };
    }
    ctx.state.root = dev;
    ctx.state.target = mountPointOf(dev) === TARGET_DIR ? TARGET_DIR : undefined;
    return { status: "succeeded", message: `image "${m.name}" (sha256 ${m.sha256}) applied to ${dev}` };
  },
};
