/**
 * The deploy environment ("boot image"): a Debian kernel and an initramfs that brings up the
 * network and runs the agent. The initramfs holds busybox, Node.js and the agent bundle, the
 * disk tools a task sequence needs, boot loader files, the kernel modules for common virtual
 * and physical NICs, disks and file systems, and the site's pinned trust (CA certificate and
 * public signing key: nothing secret, since boot images are served in the clear).
 *
 *   /init                                   busybox sh (INIT_SCRIPT below)
 *   /bin/busybox                            applets linked at boot (`--install -s`)
 *   /opt/slipway/bin/node                   stripped Node.js; libraries under /lib…
 *   /opt/slipway/src/agent/main.ts …        the agent bundle (agent-bundle.ts)
 *   /usr/sbin/{sfdisk,blkid,mkfs.ext4,e2fsck,resize2fs,tune2fs,mkfs.vfat}, /usr/bin/{extlinux,zstd}
 *   /usr/lib/slipway/bootloader/{mbr.bin,gptmbr.bin,systemd-bootx64.efi}
 *   /lib/modules/<abi>/kernel/…  + modules.dep, load-order
 *   /etc/slipway/{ca.pem,signing-key.pub.pem,boot-image.json}
 *   /etc/udhcpc.script, /etc/mke2fs.conf, /etc/passwd, /etc/group, /etc/hosts
 *
 * Reproducible: the same inputs (kernel package, host binaries, agent sources, keys) give the
 * same initrd bytes — entries are sorted with fixed owners and times, and compression is
 * deterministic for a given zstd/zlib version (Node's built-in one).
 */
import { execFile } from "node:child_process";
import { createHash, createPublicKey, randomBytes, X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { constants as zc, gzipSync, zstdCompressSync } from "node:zlib";
import { buildAgentBundle } from "./agent-bundle.ts";
import { buildCpio, type CpioEntry } from "./cpio.ts";
import { ensureDebianKernel } from "./debian-kernel.ts";
import { hostProgramEntries, requireHostFile, type HostProgram } from "./host-files.ts";

const execFileP = promisify(execFile);

/** Bump when the image layout changes in a way the recorded inputs do not show. */
export const BOOT_IMAGE_FORMAT = "slipway-boot-image-1";

/** The kernel command line boot images are registered with. */
export const DEFAULT_CMDLINE = "console=tty0 console=ttyS0,115200n8 quiet";

/**
 * Modules loaded at boot, in this order (each after its dependencies). crc32c comes first:
 * ext4 asks the crypto API for it when mounting, and nothing could load it on demand then.
 */
export const DEPLOY_MODULES = [
  "crc32c_generic",
  // NICs
  "e1000", "e1000e", "virtio_pci", "virtio_net",
  // disks
  "virtio_blk", "virtio_scsi", "ahci", "ata_piix", "sd_mod", "nvme",
  // file systems and the code pages vfat mounts with
  "ext4", "vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii",
  // UEFI variables (the boot loader step registers the installed system with the firmware)
  "efivarfs",
];

/** Host programs in the image: where they go, where they come from, and their package. */
export const TOOLS: { target: string; sources: string[]; package: string }[] = [
  { target: "/usr/sbin/sfdisk", sources: ["/usr/sbin/sfdisk", "/sbin/sfdisk"], package: "fdisk" },
  { target: "/usr/sbin/mkfs.ext4", sources: ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"], package: "e2fsprogs" },
  { target: "/usr/sbin/e2fsck", sources: ["/usr/sbin/e2fsck", "/sbin/e2fsck"], package: "e2fsprogs" },
  { target: "/usr/sbin/resize2fs", sources: ["/usr/sbin/resize2fs", "/sbin/resize2fs"], package: "e2fsprogs" },
  { target: "/usr/sbin/tune2fs", sources: ["/usr/sbin/tune2fs", "/sbin/tune2fs"], package: "e2fsprogs" },
  { target: "/usr/sbin/blkid", sources: ["/usr/sbin/blkid", "/sbin/blkid"], package: "util-linux" },
  { target: "/usr/sbin/mkfs.vfat", sources: ["/usr/sbin/mkfs.vfat", "/sbin/mkfs.vfat"], package: "dosfstools" },
  { target: "/usr/bin/extlinux", sources: ["/usr/bin/extlinux"], package: "extlinux" },
  { target: "/usr/bin/zstd", sources: ["/usr/bin/zstd"], package: "zstd" },
  { target: "/usr/bin/efibootmgr", sources: ["/usr/bin/efibootmgr", "/bin/efibootmgr"], package: "efibootmgr" },
  // GNU tar for user state (POSIX ACLs, xattrs, pax, --numeric-owner), which busybox's tar
  // lacks. It shadows busybox's /bin/tar on PATH; its libacl and libselinux (and their
  // libraries) come along through host-files.ts.
  { target: "/usr/bin/tar", sources: ["/usr/bin/tar", "/bin/tar"], package: "tar" },
];

const BOOTLOADER_DIR = "/usr/lib/slipway/bootloader";
const BOOTLOADER_FILES: { name: string; sources: string[]; package: string }[] = [
  { name: "mbr.bin", sources: ["/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/EXTLINUX/mbr.bin"], package: "syslinux-common" },
  { name: "gptmbr.bin", sources: ["/usr/lib/syslinux/mbr/gptmbr.bin", "/usr/lib/EXTLINUX/gptmbr.bin"], package: "syslinux-common" },
  { name: "systemd-bootx64.efi", sources: ["/usr/lib/systemd/boot/efi/systemd-bootx64.efi"], package: "systemd-boot-efi" },
];

const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

export interface BootImageOptions {
  /** Kernel packages, the stripped Node binary and (by default) the output are kept here. */
  cacheDir: string;
  /** The site CA certificate the agent pins (PEM). */
  caCertPem: string;
  /** The site's public signing key (SPKI PEM). */
  signingPublicKeyPem: string;
  /** The Node.js binary to ship (default: the one running this). */
  nodeBinary?: string;
  /** Kernel ABI, e.g. "6.1.0-56-amd64" (default: what linux-image-amd64 points at). */
  kernelVersion?: string;
  /** The agent's entry point and the project root its layout is taken from. */
  agentEntry?: string;
  projectRoot?: string;
  /** More modules to load at boot (e.g. NIC drivers for particular hardware). */
  extraModules?: string[];
  /** Where the initrd is written (default <cacheDir>/boot-image). */
  outDir?: string;
  onProgress?: (line: string) => void;
}

export interface BootImageManifest {
  format: string;
  kernel: { version: string; package: string; packageVersion: string; debSha256: string; vmlinuzSha256: string };
  modules: string[];
  compression: "zstd" | "gzip";
  node: { version: string; sha256: string; stripped: boolean };
  agent: { sha256: string; sources: number; packages: string[] };
  trust: { caCertSha256: string; signingKeySha256: string };
  /** Every host file copied in (programs, libraries, loader files, busybox): path → SHA-256. */
  hostFiles: Record<string, string>;
}

export interface BootImage {
  /** The kernel (in the cache). */
  kernel: string;
  /** The initrd, written to outDir. */
  initrd: string;
  cmdline: string;
  kernelSha256: string;
  initrdSha256: string;
  initrdSize: number;
  /** What /etc/slipway/boot-image.json in the image says. */
  manifest: BootImageManifest;
}

/** Builds the deploy environment; see the module comment for what it holds. */
export async function buildBootImage(opts: BootImageOptions): Promise<BootImage> {
  const progress = opts.onProgress ?? (() => {});
  const caCertPem = normalizePem(opts.caCertPem);
  const signingKeyPem = normalizePem(opts.signingPublicKeyPem);
  try {
    new X509Certificate(caCertPem);
  } catch (e) {
    throw new Error(`Cannot build the boot image: the CA certificate is not a PEM certificate: ${(e as Error).message}`);
  }
  let keyType: string | undefined;
  try {
    keyType = createPublicKey(signingKeyPem).asymmetricKeyType;
  } catch (e) {
    throw new Error(`Cannot build the boot image: the signing key is not a PEM public key: ${(e as Error).message}`);
  }
  if (keyType !== "ed25519") throw new Error(`Cannot build the boot image: the signing key is ${keyType}, not Ed25519`);

  // Check every host file first, so a missing package is named before any download.
  const busybox = requireHostFile("/bin/busybox", "busybox-static");
  const tools: HostProgram[] = TOOLS.map((t) => ({ source: requireHostFile(t.sources, t.package), target: t.target }));
  const loaders = BOOTLOADER_FILES.map((f) => ({ name: f.name, source: requireHostFile(f.sources, f.package) }));
  const nodeBinary = opts.nodeBinary ?? process.execPath;
  const agentEntry = opts.agentEntry ?? path.join(REPO_ROOT, "src", "agent", "main.ts");
  if (!existsSync(agentEntry)) throw new Error(`Cannot build the boot image: the agent entry point ${agentEntry} does not exist`);

  const kernel = await ensureDebianKernel({ cacheDir: opts.cacheDir, version: opts.kernelVersion, onProgress: progress });
  progress(`kernel ${kernel.version} (${kernel.packageName} ${kernel.packageVersion})`);
  const modules = await kernel.modules([...DEPLOY_MODULES, ...(opts.extraModules ?? [])]);
  const compression = kernel.config.get("CONFIG_RD_ZSTD") === "y" ? "zstd" : "gzip";
  if (compression === "gzip" && kernel.config.get("CONFIG_RD_GZIP") !== "y") {
    throw new Error(`Cannot build the boot image: kernel ${kernel.version} supports neither zstd nor gzip initramfs`);
  }

  const node = await strippedNode(nodeBinary, opts.cacheDir, progress);
  progress("collecting the agent bundle");
  const agent = buildAgentBundle({ entry: agentEntry, projectRoot: opts.projectRoot ?? REPO_ROOT });

  const entries: CpioEntry[] = [];
  const file = (p: string, data: Buffer | string, mode = 0o644) => entries.push({ path: p, type: "file", data: Buffer.from(data), mode });
  for (const d of ["/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/mnt", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/etc"]) {
    entries.push({ path: d, type: "dir", mode: d === "/tmp" ? 0o1777 : d === "/root" ? 0o700 : 0o755 });
  }
  // The kernel opens /dev/console for init before /init can mount devtmpfs.
  entries.push({ path: "/dev/console", type: "char", major: 5, minor: 1 });

  const hostPrograms = hostProgramEntries([
    { source: busybox, target: "/bin/busybox" },
    { source: node.file, target: "/opt/slipway/bin/node" },
    ...tools,
  ]);
  entries.push(...hostPrograms);
  for (const l of loaders) file(`${BOOTLOADER_DIR}/${l.name}`, await readFile(l.source));
  if (existsSync("/etc/mke2fs.conf")) file("/etc/mke2fs.conf", await readFile("/etc/mke2fs.conf"));

  const modDir = `/lib/modules/${kernel.version}`;
  for (const m of modules) file(`${modDir}/${m.relPath}`, await readFile(m.file));
  const relOf = new Map(modules.map((m) => [m.name, m.relPath]));
  // busybox modprobe reads modules.dep (all dependencies, nearest first), for what is loaded later.
  const closure = (name: string, seen = new Set<string>()): string[] => {
    for (const d of modules.find((m) => m.name === name)?.depends ?? []) {
      if (!seen.has(d) && relOf.has(d)) {
        seen.add(d);
        closure(d, seen);
      }
    }
    return [...seen];
  };
  file(`${modDir}/modules.dep`, modules.map((m) => `${m.relPath}: ${closure(m.name).map((d) => relOf.get(d)).join(" ")}`.trimEnd()).join("\n") + "\n");
  file(`${modDir}/load-order`, modules.map((m) => m.relPath).join("\n") + "\n");

  entries.push(...agent.entries);

  file("/etc/slipway/ca.pem", caCertPem);
  file("/etc/slipway/signing-key.pub.pem", signingKeyPem);
  file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
  file("/etc/group", "root:x:0:\n");
  file("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n");
  file("/etc/udhcpc.script", UDHCPC_SCRIPT, 0o755);
  file("/init", INIT_SCRIPT.replaceAll("@MODDIR@", modDir), 0o755);

  const hostFiles: Record<string, string> = {};
  for (const e of entries) {
    const fromHost = hostPrograms.includes(e) || e.path.startsWith(`${BOOTLOADER_DIR}/`) || e.path === "/etc/mke2fs.conf";
    if (fromHost && e.type === "file") hostFiles[e.path] = sha256(e.data);
  }
  const manifest: BootImageManifest = {
    format: BOOT_IMAGE_FORMAT,
    kernel: {
      version: kernel.version,
      package: kernel.packageName,
      packageVersion: kernel.packageVersion,
      debSha256: kernel.debSha256,
      vmlinuzSha256: sha256(await readFile(kernel.vmlinuz)),
    },
    modules: modules.map((m) => m.name),
    compression,
    node: { version: node.version, sha256: node.sourceSha256, stripped: node.stripped },
    agent: { sha256: agent.sha256, sources: agent.sources.length, packages: agent.packages },
    trust: { caCertSha256: sha256(Buffer.from(caCertPem)), signingKeySha256: sha256(Buffer.from(signingKeyPem)) },
    hostFiles: Object.fromEntries(Object.entries(hostFiles).sort(([a], [b]) => (a < b ? -1 : 1))),
  };
  file("/etc/slipway/boot-image.json", JSON.stringify(manifest, null, 2) + "\n");

  progress("writing the initramfs");
  const cpio = buildCpio(entries);
  progress(`compressing ${Math.round(cpio.length / 1e6)} MB with ${compression}`);
  const packed =
    compression === "zstd"
      ? zstdCompressSync(cpio, { params: { [zc.ZSTD_c_compressionLevel]: 9, [zc.ZSTD_c_checksumFlag]: 1 } })
      : gzipSync(cpio, { level: 9 });
  const initrdSha256 = sha256(packed);

  const outDir = opts.outDir ?? path.join(opts.cacheDir, "boot-image");
  await mkdir(outDir, { recursive: true });
  const initrd = path.join(outDir, `initrd-${initrdSha256.slice(0, 16)}.cpio.${compression === "zstd" ? "zst" : "gz"}`);
  const tmp = `${initrd}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  await writeFile(tmp, packed);
  await rename(tmp, initrd);
  progress(`initrd ${initrd}: ${packed.length} bytes, sha256:${initrdSha256}`);
  return {
    kernel: kernel.vmlinuz,
    initrd,
    cmdline: DEFAULT_CMDLINE,
    kernelSha256: manifest.kernel.vmlinuzSha256,
    initrdSha256,
    initrdSize: packed.length,
    manifest,
  };
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function normalizePem(pem: string): string {
  return pem.trim().replace(/\r\n/g, "\n") + "\n";
}

/**
 * A copy of `nodeBinary` without its symbol tables (binutils `strip`: 126 MB → 108 MB for
 * Node 24), cached by the binary's digest. Without strip the binary ships as it is.
 */
async function strippedNode(
  nodeBinary: string,
  cacheDir: string,
  progress: (line: string) => void,
): Promise<{ file: string; sourceSha256: string; version: string; stripped: boolean }> {
  const data = await readFile(nodeBinary);
  const sourceSha256 = sha256(data);
  let version = "unknown";
  try {
    version = (await execFileP(nodeBinary, ["--version"])).stdout.trim();
  } catch {
    // a binary for another machine: its digest still identifies it
  }
  const cached = path.join(cacheDir, `node-${sourceSha256.slice(0, 16)}.stripped`);
  if (existsSync(cached)) return { file: cached, sourceSha256, version, stripped: true };
  let strip: string;
  try {
    strip = requireHostFile(["/usr/bin/strip"], "binutils");
  } catch (e) {
    progress(`${(e as Error).message}; shipping Node.js unstripped`);
    return { file: nodeBinary, sourceSha256, version, stripped: false };
  }
  progress(`stripping ${nodeBinary} (${version})`);
  await mkdir(cacheDir, { recursive: true });
  const tmp = `${cached}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await copyFile(nodeBinary, tmp);
    await execFileP(strip, ["--strip-all", tmp]);
    await rename(tmp, cached);
  } finally {
    await rm(tmp, { force: true });
  }
  return { file: cached, sourceSha256, version, stripped: true };
}

/**
 * The deploy environment's first process. Kernel messages are quietened so marker lines stay
 * whole; messages go to every active console (screen and serial), since /dev/console is only
 * the last one named on the command line.
 */
const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
echo 1 > /proc/sys/kernel/printk
hostname slipway
consoles=$(cat /sys/class/tty/console/active 2>/dev/null)
say() {
  if [ -z "$consoles" ]; then echo "$*" > /dev/console; return; fi
  for c in $consoles; do echo "$*" > "/dev/$c" 2>/dev/null; done
}

while read -r m; do
  [ -n "$m" ] || continue
  # UEFI variables exist only on UEFI machines; on BIOS the module refuses to load.
  case "$m" in */efivarfs.ko) [ -d /sys/firmware/efi ] || continue ;; esac
  insmod "@MODDIR@/$m" 2>/tmp/insmod.err || say "SLIPWAY-DEPLOY-ENV module-failed $m: $(cat /tmp/insmod.err)"
done < @MODDIR@/load-order
# UEFI variables, so the boot loader step can register the installed system with the firmware.
[ -d /sys/firmware/efi/efivars ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null

# slipway.mac= (from the boot script) names the NIC the machine booted from.
want=
for a in $(cat /proc/cmdline); do
  case "$a" in slipway.mac=*) want=$(echo "\${a#slipway.mac=}" | tr A-F a-f) ;; esac
done
ip link set lo up
# Bring every NIC up and wait up to 10 s for carrier: a DISCOVER sent before the link is up
# is lost. Stop early once the wanted NIC (or, with none named, any NIC) has carrier.
pick() {
  for d in /sys/class/net/*; do
    n=\${d##*/}
    [ "$n" = lo ] && continue
    [ -z "$want" ] || [ "$(cat "$d/address")" = "$want" ] || continue
    [ "$1" = any ] || [ "$(cat "$d/carrier" 2>/dev/null)" = 1 ] || continue
    echo "$n"
    return
  done
}
up=" "
iface=
i=0
while [ $i -le 100 ]; do
  for d in /sys/class/net/*; do
    n=\${d##*/}
    case "$up" in *" $n "*) continue ;; esac
    [ "$n" = lo ] || ip link set "$n" up 2>/dev/null
    up="$up$n "
  done
  iface=$(pick)
  [ -n "$iface" ] && break
  sleep 0.1
  i=$((i + 1))
done
# No carrier seen: try anyway (some drivers report carrier late).
[ -n "$iface" ] || iface=$(pick any)

ip=none
if [ -z "$iface" ]; then
  if [ -n "$want" ]; then say "SLIPWAY-DEPLOY-ENV dhcp-failed no network interface with MAC $want"
  else say "SLIPWAY-DEPLOY-ENV dhcp-failed no network interface"; fi
elif udhcpc -f -q -n -t 10 -T 2 -i "$iface" -s /etc/udhcpc.script; then
  ip=$(cat /run/slipway-ip)
else
  say "SLIPWAY-DEPLOY-ENV dhcp-failed iface=$iface"
fi
say "SLIPWAY-DEPLOY-ENV ready ip=$ip"

cd /root
# The agent talks on every active console (screen and serial), not only /dev/console.
env -i SLIPWAY_CONFIG_DIR=/etc/slipway SLIPWAY_CONSOLES="$consoles" PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \\
  /opt/slipway/bin/node /opt/slipway/src/agent/main.ts </dev/console >/dev/console 2>&1
code=$?
if [ $code -eq 0 ]; then
  sync
  reboot -f
fi
say "SLIPWAY-AGENT-EXIT code=$code"
# Leave the machine to an administrator at the console.
while :; do
  say "The Slipway agent stopped (exit code $code). A shell follows; exit it for a new one."
  setsid cttyhack sh -l
  sleep 1
done
`;

/** busybox udhcpc calls this with deconfig | bound | renew | leasefail | nak. */
const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    prefix=$mask
    [ -n "$prefix" ] || prefix=$(ipcalc -p "$ip" "\${subnet:-255.255.255.0}" | cut -d= -f2)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$prefix" \${broadcast:+broadcast "$broadcast"} dev "$interface"
    while ip route del default dev "$interface" 2>/dev/null; do :; done
    if [ -n "$staticroutes" ]; then
      # RFC 3442: with classless static routes present the router option is ignored.
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        if [ "$2" = 0.0.0.0 ]; then ip route add "$1" dev "$interface"
        else ip route add "$1" via "$2" dev "$interface"; fi
        shift 2
      done
    elif [ -n "$router" ]; then
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "$ip" > /run/slipway-ip
    ;;
esac
exit 0
`;
