/**
 * What the lab's virtual machines boot: a Debian kernel (src/media/debian-kernel.ts: fetched
 * with `apt-get download` into the cache — nothing goes to /boot), a tiny busybox initramfs
 * built here (src/media/cpio.ts), Debian's iPXE loaders and OVMF.
 *
 * The initramfs's /init mounts proc/sys/dev, loads the NIC drivers it carries (e1000,
 * virtio_net + virtio_pci, and their dependencies), then prints to the console
 *
 *     SLIPWAY-MARKER cmdline=<the kernel command line>
 *
 * and, when the command line holds `slipway.marker.net=1`, configures the first NIC with
 * udhcpc and prints `SLIPWAY-NET ip=<address>` (or `SLIPWAY-NET-FAILED ...`); then it powers
 * off. Give the kernel `console=ttyS0` so that lands on the serial port.
 *
 * Everything is cached under .cache/lab by content (kernel version, hash of the initramfs
 * inputs); builds go to a temporary name and are renamed into place, so concurrent test
 * processes are safe and reruns are instant.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { buildCpio, type CpioEntry } from "../../src/media/cpio.ts";
import { ensureDebianKernel, type DebianKernel } from "../../src/media/debian-kernel.ts";
import { requirePackages } from "./packages.ts";

export const LAB_CACHE_DIR = path.resolve(import.meta.dirname, "../../.cache/lab");

export interface LabArtifacts {
  kernel: string;
  initrd: string;
  ipxe: { undionly: string; ipxeEfi: string; snponly: string };
  ovmf: { code: string; vars: string };
}

/** Modules the initramfs loads (their dependencies are added from the modules' own modinfo). */
const WANTED_MODULES = ["e1000", "virtio_pci", "virtio_net", "virtio_blk"];

/** Bump when the initramfs layout changes in a way the hashed inputs do not capture. */
const INITRD_FORMAT = "slipway-lab-initrd-2";

const BUSYBOX = "/bin/busybox";

const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# Keep kernel messages from splitting our marker lines on the console.
echo 1 > /proc/sys/kernel/printk
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "SLIPWAY-MODULE-FAILED $m"
done
cmdline=$(cat /proc/cmdline)
echo "SLIPWAY-MARKER cmdline=$cmdline"
case " $cmdline " in
  *" slipway.marker.net=1 "*)
    iface=
    for d in /sys/class/net/*; do
      n=\${d##*/}
      [ "$n" = lo ] && continue
      iface=$n
      break
    done
    ip link set lo up
    if [ -z "$iface" ]; then
      echo "SLIPWAY-NET-FAILED no network interface"
    else
      ip link set "$iface" up
      # A DISCOVER sent before the link is up is lost (udhcpc then waits 2 s to resend).
      i=0
      while [ "$(cat "/sys/class/net/$iface/carrier" 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
      done
      if udhcpc -f -q -n -t 20 -T 2 -i "$iface" -s /etc/udhcpc.script; then
        echo "SLIPWAY-NET ip=$(cat /tmp/slipway-ip)"
      else
        echo "SLIPWAY-NET-FAILED iface=$iface"
      fi
    fi
    ;;
esac
sync
# poweroff -f cuts off whatever the serial console has not sent yet (the marker line, once in ~15 boots).
sleep 1
poweroff -f
`;

const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "\${subnet:-255.255.255.0}" up
    if [ -n "$router" ]; then route add default gw "\${router%% *}" dev "$interface"; fi
    echo "$ip" > /tmp/slipway-ip
    ;;
  deconfig)
    ifconfig "$interface" 0.0.0.0
    ;;
esac
exit 0
`;

let memo: Promise<LabArtifacts> | undefined;

/**
 * Returns paths to everything a lab VM boots, fetching/building what is missing. Installs no
 * package: throws naming the Debian package when one is missing.
 */
export function ensureLabArtifacts(): Promise<LabArtifacts> {
  memo ??= build().catch((e: unknown) => {
    memo = undefined;
    throw e;
  });
  return memo;
}

async function build(): Promise<LabArtifacts> {
  requirePackages("ipxe", "ovmf", "busybox-static");
  await mkdir(LAB_CACHE_DIR, { recursive: true });
  const kernel = await ensureDebianKernel({ cacheDir: LAB_CACHE_DIR });
  const initrd = await ensureInitrd(kernel);
  return {
    kernel: kernel.vmlinuz,
    initrd,
    ipxe: {
      undionly: "/usr/lib/ipxe/undionly.kpxe",
      ipxeEfi: "/usr/lib/ipxe/ipxe.efi",
      snponly: "/usr/lib/ipxe/snponly.efi",
    },
    ovmf: { code: "/usr/share/OVMF/OVMF_CODE_4M.fd", vars: "/usr/share/OVMF/OVMF_VARS_4M.fd" },
  };
}

// ---------------------------------------------------------------------------------------
// Initramfs

async function ensureInitrd(kernel: DebianKernel): Promise<string> {
  const busybox = await readFile(BUSYBOX);
  const modules = await Promise.all((await kernel.modules(WANTED_MODULES)).map(async (m) => ({ name: m.name, data: await readFile(m.file) })));

  const h = createHash("sha256");
  for (const part of [INITRD_FORMAT, INIT_SCRIPT, UDHCPC_SCRIPT, busybox, ...modules.flatMap((m) => [m.name, m.data])]) {
    h.update(String(typeof part === "string" ? part.length : part.byteLength) + ":");
    h.update(part);
  }
  const file = path.join(LAB_CACHE_DIR, `initrd-${h.digest("hex").slice(0, 16)}.cpio.gz`);
  if (existsSync(file)) return file;

  const entries: CpioEntry[] = [
    ...["dev", "etc", "lib/modules", "proc", "sbin", "sys", "tmp", "usr/bin", "usr/sbin"].map((p) => ({ path: p, type: "dir" as const })),
    { path: "dev/console", type: "char", major: 5, minor: 1 },
    { path: "bin/busybox", type: "file", data: busybox, mode: 0o755 },
    { path: "bin/sh", type: "symlink", target: "busybox" },
    { path: "init", type: "file", data: Buffer.from(INIT_SCRIPT), mode: 0o755 },
    { path: "etc/udhcpc.script", type: "file", data: Buffer.from(UDHCPC_SCRIPT), mode: 0o755 },
    ...modules.map((m) => ({ path: `lib/modules/${m.name}.ko`, type: "file" as const, data: m.data })),
    { path: "lib/modules/load-order", type: "file", data: Buffer.from(modules.map((m) => m.name).join("\n") + "\n") },
  ];
  const gz = gzipSync(buildCpio(entries), { level: 6 });

  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  await writeFile(tmp, gz);
  await rename(tmp, file);
  await pruneCache(path.basename(file));
  return file;
}

/**
 * Removes what earlier versions left in the cache: other kernels / initramfs images and
 * abandoned temporary builds, once older than an hour (a concurrent run may still use them).
 */
async function pruneCache(keep: string): Promise<void> {
  // kernel-<abi>/ folders are what earlier versions cached kernels in (now debian-kernel-<abi>/).
  const kind = /^initrd-|^kernel-/;
  const cutoff = Date.now() - 60 * 60 * 1000;
  for (const entry of await readdir(LAB_CACHE_DIR)) {
    if (entry === keep || !(kind.test(entry) || entry.startsWith(".tmp-") || entry.includes(".tmp-"))) continue;
    const p = path.join(LAB_CACHE_DIR, entry);
    try {
      if ((await stat(p)).mtimeMs < cutoff) await rm(p, { recursive: true, force: true });
    } catch {
      // already gone
    }
  }
}
