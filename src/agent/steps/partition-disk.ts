/**
 * Wipes a disk and lays out a fresh partition table. The root file system is always the last
 * partition, so a task sequence can name it the same way whatever the firmware:
 *   gpt       1: EFI system partition (512 MiB, FAT32, formatted here)   2: root
 *   gpt-bios  1: BIOS boot partition (1 MiB)   2: root, flagged legacy-BIOS-bootable
 *   mbr       1: root, active
 */
import { mustRun, diskPath, partitionOf, unmountDisk, waitForDevice } from "../system.ts";
import type { StepModule } from "../engine.ts";
import { openSync, closeSync, readFileSync, writeSync } from "node:fs";
import path from "node:path";

const BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649";

const LAYOUTS = {
  gpt: "label: gpt\nsize=512MiB, type=U, name=\"EFI system\"\ntype=L, name=root\n",
  "gpt-bios": `label: gpt\nsize=1MiB, type=${BIOS_BOOT}, name="BIOS boot"\ntype=L, name=root, attrs="LegacyBIOSBootable"\n`,
  mbr: "label: dos\ntype=83, bootable\n",
} as const;

/** Zeroes the first and last MiB, where partition tables and file-system signatures live. */
function wipeEnds(dev: string): void {
  const fd = openSync(dev, "r+");
  try {
    const zero = Buffer.alloc(1024 * 1024);
    writeSync(fd, zero, 0, zero.length, 0);
    const size = sizeOf(dev);
    if (size > 2 * zero.length) writeSync(fd, zero, 0, zero.length, size - zero.length);
  } finally {
    closeSync(fd);
  }
}

/** Bytes on a block device: fstat says 0 for one, so ask sysfs (which counts 512-byte sectors). */
function sizeOf(dev: string): number {
  try {
    return Number(readFileSync(`/sys/class/block/${path.basename(dev)}/size`, "utf8").trim()) * 512;
  } catch {
    return 0;
  }
}

export const partitionDisk: StepModule = {
  type: "partition-disk",
  async run(params: { disk: string; scheme: keyof typeof LAYOUTS }, ctx) {
    const disk = diskPath(ctx.expand(params.disk));
    await waitForDevice(disk);
    // Nothing of the old system may stay mounted while its table is rewritten.
    await unmountDisk(disk);
    wipeEnds(disk);
    await mustRun("sfdisk", ["--wipe", "always", "--wipe-partitions", "always", disk], { input: LAYOUTS[params.scheme], signal: ctx.signal });
    const count = params.scheme === "mbr" ? 1 : 2;
    for (let n = 1; n <= count; n++) await waitForDevice(partitionOf(disk, n));
    ctx.state.disk = disk;
    ctx.state.scheme = params.scheme;
    ctx.state.root = partitionOf(disk, count);
    ctx.state.target = undefined;
    ctx.state.esp = undefined;
    if (params.scheme === "gpt") {
      ctx.state.esp = partitionOf(disk, 1);
      await mustRun("mkfs.vfat", ["-F", "32", "-n", "EFI", ctx.state.esp], { signal: ctx.signal });
    }
    ctx.vars.set("OSDTargetDisk", disk);
    ctx.vars.set("OSDTargetRoot", ctx.state.root);
    return { status: "succeeded", message: `${disk}: ${params.scheme}, root file system on ${ctx.state.root}` };
  },
};
