/**
 * Makes the applied system bootable, last, so a machine whose deployment failed earlier
 * never boots a half-written disk. The system's kernel and initrd are /boot/vmlinuz and
 * /boot/initrd.img in the applied image (or the newest /boot/vmlinuz-* and /boot/initrd.img-*).
 *   BIOS: extlinux in /boot/syslinux of the root file system, and the syslinux MBR code
 *         (gptmbr.bin on a GPT disk, whose root partition is flagged legacy-BIOS-bootable).
 *   UEFI: systemd-boot as the removable-media loader \EFI\BOOT\BOOTX64.EFI on the EFI
 *         system partition, with the kernel and initrd copied beside it (it reads only the ESP).
 */
import { copyFileSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import type { StepModule } from "../engine.ts";
import { diskPath, execTool, fsType, fsUuid, mount, mustRun, partitionOf } from "../system.ts";

/** Where the boot image puts syslinux's MBR code and systemd-boot (src/media/boot-image.ts). */
const LOADER_DIR = "/usr/lib/slipway/bootloader";
const ESP_DIR = "/mnt/esp";

/** The kernel and initrd of the applied system, relative to its root. */
function kernelFiles(root: string): { kernel: string; initrd: string | null } {
  const boot = path.join(root, "boot");
  const pick = (plain: string, prefix: string): string | null => {
    if (existsSync(path.join(boot, plain))) return `/boot/${plain}`;
    const versions = existsSync(boot) ? readdirSync(boot).filter((f) => f.startsWith(prefix)).sort((a, b) => a.localeCompare(b, "en", { numeric: true })) : [];
    return versions.length ? `/boot/${versions.at(-1)}` : null;
  };
  const kernel = pick("vmlinuz", "vmlinuz-");
  if (!kernel) throw new Error("Cannot install a boot loader: the applied system has no /boot/vmlinuz");
  return { kernel, initrd: pick("initrd.img", "initrd.img-") };
}

/**
 * Gives the applied system's /etc/fstab a line for its root file system when it has none (an
 * image cannot know the UUID its root will have), so the installed system checks and remounts
 * it read-write. Returns whether it added one.
 */
export function ensureRootInFstab(target: string, uuid: string, type: string): boolean {
  const file = path.join(target, "etc/fstab");
  const text = existsSync(file) ? readFileSync(file, "utf8") : "";
  const hasRoot = text.split("\n").some((l) => {
    const f = l.trim().split(/\s+/);
    return !l.trim().startsWith("#") && f.length >= 2 && f[1] === "/";
  });
  if (hasRoot) return false;
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${text}${text && !text.endsWith("\n") ? "\n" : ""}UUID=${uuid}\t/\t${type}\tdefaults,errors=remount-ro\t0\t1\n`);
  return true;
}

/** Extra kernel arguments the image asks for in /etc/slipway/kernel-cmdline (one line). */
function imageArgs(root: string): string {
  const f = path.join(root, "etc/slipway/kernel-cmdline");
  return existsSync(f) ? readFileSync(f, "utf8").split("\n")[0].trim() : "console=tty0 console=ttyS0,115200n8";
}

export const installBootloader: StepModule = {
  type: "install-bootloader",
  async run(params: { disk: string }, ctx) {
    const disk = diskPath(ctx.expand(params.disk));
    const { root, target, firmware } = ctx.state;
    if (!root || !target) return { status: "failed", message: "Cannot install a boot loader: apply an image first (no applied system is mounted)" };
    const files = kernelFiles(target);
    const rootUuid = await fsUuid(root);
    const options = `root=UUID=${rootUuid} ro ${imageArgs(target)}`.trim();
    if (ensureRootInFstab(target, rootUuid, await fsType(root))) ctx.log(`added the root file system (UUID=${rootUuid}) to /etc/fstab`);
    if (firmware === "uefi") {
      const esp = ctx.state.esp ?? (ctx.state.scheme === "gpt" ? partitionOf(disk, 1) : undefined);
      if (!esp) return { status: "failed", message: "Cannot install a UEFI boot loader: the disk has no EFI system partition (partition it with scheme gpt)" };
      await mount(esp, ESP_DIR, "vfat");
      for (const d of ["EFI/BOOT", "EFI/systemd", "loader/entries", "slipway"]) mkdirSync(path.join(ESP_DIR, d), { recursive: true });
      copyFileSync(path.join(LOADER_DIR, "systemd-bootx64.efi"), path.join(ESP_DIR, "EFI/BOOT/BOOTX64.EFI"));
      copyFileSync(path.join(LOADER_DIR, "systemd-bootx64.efi"), path.join(ESP_DIR, "EFI/systemd/systemd-bootx64.efi"));
      copyFileSync(path.join(target, files.kernel), path.join(ESP_DIR, "slipway/vmlinuz"));
      if (files.initrd) copyFileSync(path.join(target, files.initrd), path.join(ESP_DIR, "slipway/initrd.img"));
      writeFileSync(path.join(ESP_DIR, "loader/loader.conf"), "default slipway.conf\ntimeout 0\neditor no\n");
      writeFileSync(path.join(ESP_DIR, "loader/entries/slipway.conf"),
        ["title Slipway deployed system", "linux /slipway/vmlinuz", ...(files.initrd ? ["initrd /slipway/initrd.img"] : []), `options ${options}`, ""].join("\n"));
      await mustRun("sync", []);
      await mustRun("umount", [ESP_DIR]);
      // Register the system with the firmware, as an installer does: some firmware (OVMF with
      // variables from a boot when the disk was empty, many laptops) never looks at the
      // removable-media path of a fixed disk. Without writable UEFI variables the path remains.
      const partNo = Number(/(\d+)$/.exec(esp)![1]);
      const entry = await execTool("efibootmgr", ["--create", "--disk", disk, "--part", String(partNo), "--label", "Slipway deployed system", "--loader", "\\EFI\\BOOT\\BOOTX64.EFI"], { signal: ctx.signal })
        .catch((err: Error) => ({ code: -1, output: err.message }));
      if (entry.code !== 0) ctx.log(`could not add a UEFI boot entry (the removable-media path remains): ${entry.output.trim().split("\n").at(-1)}`);
      return { status: "succeeded", message: `systemd-boot on ${esp} booting ${files.kernel} with ${options}${entry.code === 0 ? "; UEFI boot entry added" : ""}` };
    }
    const syslinuxDir = path.join(target, "boot/syslinux");
    mkdirSync(syslinuxDir, { recursive: true });
    writeFileSync(path.join(syslinuxDir, "syslinux.cfg"),
      ["DEFAULT slipway", "PROMPT 0", "TIMEOUT 0", "LABEL slipway", `  LINUX ${files.kernel}`, ...(files.initrd ? [`  INITRD ${files.initrd}`] : []), `  APPEND ${options}`, ""].join("\n"));
    await mustRun("extlinux", ["--install", syslinuxDir], { signal: ctx.signal });
    // gptmbr.bin boots the partition flagged legacy-BIOS-bootable; "gpt" (made for UEFI) did not flag it.
    if (ctx.state.scheme === "gpt") await mustRun("sfdisk", ["--part-attrs", disk, "2", "LegacyBIOSBootable"], { signal: ctx.signal });
    // The first 440 bytes of the disk: boot code that finds the active / legacy-bootable partition.
    const code = readFileSync(path.join(LOADER_DIR, ctx.state.scheme === "mbr" ? "mbr.bin" : "gptmbr.bin")).subarray(0, 440);
    const fd = openSync(disk, "r+");
    try {
      writeSync(fd, code, 0, code.length, 0);
    } finally {
      closeSync(fd);
    }
    await mustRun("sync", []);
    return { status: "succeeded", message: `extlinux on ${root} booting ${files.kernel} with ${options}` };
  },
};
