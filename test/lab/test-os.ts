/**
 * The "operating system" the end-to-end deployment tests deploy: a tiny root tree with the lab's
 * Debian kernel and a busybox initramfs whose /init finds the root file system named by
 * `root=UUID=<uuid>` (busybox findfs, retrying up to 10 s for the disk), mounts it read-only
 * at /mnt and prints on the console
 *
 *     SLIPWAY-DEPLOYED hostname=<contents of /mnt/etc/hostname>
 *     SLIPWAY-DEPLOYED network=<contents of /mnt/etc/slipway-network, lines joined by "; ">   (if present)
 *     SLIPWAY-DEPLOYED interfaces=<… of /mnt/etc/network/interfaces.d/slipway>              (if present)
 *
 * then powers off. (`SLIPWAY-DEPLOYED-FAILED …` when the root cannot be found or mounted.)
 *
 * The tree: /boot/vmlinuz, /boot/initrd.img, /bin/busybox (+ /bin/sh), /etc/hostname ("unset"),
 * /etc/os-release ("Slipway test OS"), empty /proc /sys /dev /mnt /tmp /root /run.
 * Two formats: a deterministic tar.gz (sorted, mtime 0, owner 0, `gzip -n`) and a 64 MiB raw
 * ext4 image (`mkfs.ext4 -d`, label "root", a UUID derived from the inputs). Cached under
 * .cache/lab by the hash of the inputs; built under a temporary name and renamed into place.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, readFile, readdir, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { buildCpio, type CpioEntry } from "../../src/media/cpio.ts";
import { ensureDebianKernel } from "../../src/media/debian-kernel.ts";
import { requireHostFile } from "../../src/media/host-files.ts";
import { LAB_CACHE_DIR } from "./artifacts.ts";
import { requirePackages } from "./packages.ts";

const execFileP = promisify(execFile);

export interface TestOsImages {
  /** The root tree as a tar.gz. */
  tarGz: string;
  /** The root tree as a 64 MiB ext4 file-system image (label "root"). */
  rawExt4: string;
  /** The ext4 image's file-system UUID (root=UUID=… boots it). */
  rootUuid: string;
  /** The Debian kernel ABI in /boot/vmlinuz, e.g. "6.1.0-56-amd64". */
  kernelVersion: string;
  /** Copies of the tree's /boot/vmlinuz and /boot/initrd.img, to boot the image directly. */
  kernel: string;
  initrd: string;
}

/** Bump when the tree changes in a way the hashed inputs do not capture. */
const FORMAT = "slipway-test-os-2";

/** Modules the test OS loads to find its disk (each after its dependencies). */
const MODULES = ["crc32c_generic", "virtio_pci", "virtio_blk", "ahci", "ata_piix", "sd_mod", "ext4"];

const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo 1 > /proc/sys/kernel/printk
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "SLIPWAY-MODULE-FAILED $m"
done
root=
for a in $(cat /proc/cmdline); do
  case "$a" in root=*) root=\${a#root=} ;; esac
done
dev=
i=0
# Disks appear asynchronously after their driver loads.
while [ -n "$root" ] && [ $i -lt 100 ]; do
  dev=$(findfs "$root" 2>/dev/null) && [ -n "$dev" ] && break
  dev=
  sleep 0.1
  i=$((i + 1))
done
oneline() {
  out=
  while IFS= read -r l || [ -n "$l" ]; do out="\${out:+$out; }$l"; done < "$1"
  echo "$out"
}
if [ -z "$root" ]; then
  echo "SLIPWAY-DEPLOYED-FAILED no root= on the kernel command line"
elif [ -z "$dev" ]; then
  echo "SLIPWAY-DEPLOYED-FAILED cannot find root $root"
elif ! mount -t ext4 -o ro "$dev" /mnt; then
  echo "SLIPWAY-DEPLOYED-FAILED cannot mount $dev ($root)"
else
  echo "SLIPWAY-DEPLOYED hostname=$(cat /mnt/etc/hostname)"
  [ -f /mnt/etc/slipway-network ] && echo "SLIPWAY-DEPLOYED network=$(oneline /mnt/etc/slipway-network)"
  [ -f /mnt/etc/network/interfaces.d/slipway ] && echo "SLIPWAY-DEPLOYED interfaces=$(oneline /mnt/etc/network/interfaces.d/slipway)"
  umount /mnt
fi
sync
poweroff -f
`;

const OS_RELEASE = `PRETTY_NAME="Slipway test OS"
NAME="Slipway test OS"
ID=slipway-test-os
VERSION_ID=1
`;

let memo: Promise<TestOsImages> | undefined;

/** Builds (once, then from the cache) the test OS images. Installs nothing. */
export function ensureTestOsImages(): Promise<TestOsImages> {
  memo ??= build().catch((e: unknown) => {
    memo = undefined;
    throw e;
  });
  return memo;
}

async function build(): Promise<TestOsImages> {
  requirePackages("busybox-static");
  const mkfs = requireHostFile(["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"], "e2fsprogs");
  requireHostFile(["/usr/bin/tar", "/bin/tar"], "tar");
  requireHostFile(["/usr/bin/gzip", "/bin/gzip"], "gzip");
  await mkdir(LAB_CACHE_DIR, { recursive: true });
  const kernel = await ensureDebianKernel({ cacheDir: LAB_CACHE_DIR });
  const modules = await kernel.modules(MODULES);
  const busybox = await readFile("/bin/busybox");

  const h = createHash("sha256").update(`${FORMAT}\0${kernel.debSha256}\0${INIT_SCRIPT}\0${OS_RELEASE}\0${MODULES.join(",")}\0`).update(busybox);
  const key = h.digest("hex");
  const dir = path.join(LAB_CACHE_DIR, `test-os-${key.slice(0, 16)}`);
  const result = (): TestOsImages => ({
    tarGz: path.join(dir, "test-os.tar.gz"),
    rawExt4: path.join(dir, "test-os.ext4"),
    rootUuid: uuidFrom(key),
    kernelVersion: kernel.version,
    kernel: path.join(dir, "vmlinuz"),
    initrd: path.join(dir, "initrd.img"),
  });
  if (existsSync(path.join(dir, "done"))) return result();

  const tmp = path.join(LAB_CACHE_DIR, `.tmp-test-os-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    await mkdir(tmp, { recursive: true });
    const entries: CpioEntry[] = [
      { path: "dev/console", type: "char", major: 5, minor: 1 },
      { path: "init", type: "file", data: Buffer.from(INIT_SCRIPT), mode: 0o755 },
      { path: "bin/busybox", type: "file", data: busybox, mode: 0o755 },
      { path: "lib/modules/load-order", type: "file", data: Buffer.from(modules.map((m) => m.name).join("\n") + "\n") },
      ...["proc", "sys", "mnt", "tmp"].map((p) => ({ path: p, type: "dir" as const })),
    ];
    for (const m of modules) entries.push({ path: `lib/modules/${m.name}.ko`, type: "file", data: await readFile(m.file) });
    const initrd = gzipSync(buildCpio(entries), { level: 9 });

    const tree = path.join(tmp, "root");
    for (const d of ["boot", "bin", "etc", "proc", "sys", "dev", "mnt", "tmp", "root", "run"]) await mkdir(path.join(tree, d), { recursive: true });
    await copyFile(kernel.vmlinuz, path.join(tree, "boot/vmlinuz"));
    await writeFile(path.join(tree, "boot/initrd.img"), initrd);
    await writeFile(path.join(tree, "bin/busybox"), busybox);
    await symlink("busybox", path.join(tree, "bin/sh"));
    await writeFile(path.join(tree, "etc/hostname"), "unset\n");
    await writeFile(path.join(tree, "etc/os-release"), OS_RELEASE);
    await normalizeModes(tree);
    await chmod(path.join(tree, "bin/busybox"), 0o755);
    await chmod(path.join(tree, "tmp"), 0o1777);
    await chmod(path.join(tree, "root"), 0o700);

    const tar = path.join(tmp, "test-os.tar");
    await execFileP("tar", ["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu", "-C", tree, "-cf", tar, "."]);
    await execFileP("gzip", ["-n", "-9", tar]);
    await rename(`${tar}.gz`, path.join(tmp, "test-os.tar.gz"));

    await execFileP(mkfs, ["-q", "-F", "-t", "ext4", "-d", tree, "-L", "root", "-U", uuidFrom(key), "-E", "root_owner=0:0", path.join(tmp, "test-os.ext4"), "64M"]);
    await copyFile(kernel.vmlinuz, path.join(tmp, "vmlinuz"));
    await writeFile(path.join(tmp, "initrd.img"), initrd);
    await rm(tree, { recursive: true });
    await writeFile(path.join(tmp, "done"), JSON.stringify({ kernelVersion: kernel.version, rootUuid: uuidFrom(key) }) + "\n");
    try {
      await rename(tmp, dir);
    } catch (e) {
      // Another process won the race: its copy is just as good.
      if (!existsSync(path.join(dir, "done"))) throw e;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  await pruneOld(path.basename(dir));
  return result();
}

/** Directories 0755, files 0644 (umask-independent, so the tar is the same everywhere). */
async function normalizeModes(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await normalizeModes(p);
    else if (e.isFile()) await chmod(p, 0o644);
  }
}

/** A version-4-shaped UUID taken from a hex digest. */
function uuidFrom(hex: string): string {
  const h = hex.slice(0, 32).split("");
  h[12] = "4";
  h[16] = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  const s = h.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20, 32)}`;
}

/** Removes other test OS builds and abandoned temporary ones, once older than an hour. */
async function pruneOld(keep: string): Promise<void> {
  const cutoff = Date.now() - 60 * 60 * 1000;
  for (const entry of await readdir(LAB_CACHE_DIR)) {
    if (entry === keep || !(entry.startsWith("test-os-") || entry.startsWith(".tmp-test-os-"))) continue;
    try {
      if ((await stat(path.join(LAB_CACHE_DIR, entry))).mtimeMs < cutoff) await rm(path.join(LAB_CACHE_DIR, entry), { recursive: true, force: true });
    } catch {
      // already gone
    }
  }
}
