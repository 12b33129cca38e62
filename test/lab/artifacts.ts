/**
 * What the lab's virtual machines boot: a Debian kernel (fetched with `apt-get download` and
 * unpacked with `dpkg -x` into the cache — nothing goes to /boot), a tiny busybox initramfs
 * built here, Debian's iPXE loaders and OVMF.
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
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { requirePackages } from "./packages.ts";

const execFileP = promisify(execFile);

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
const INITRD_FORMAT = "slipway-lab-initrd-1";

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
  const kernelDir = await ensureKernel();
  const initrd = await ensureInitrd(kernelDir);
  return {
    kernel: path.join(kernelDir, "vmlinuz"),
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
// Kernel

/** The kernel ABI Debian's linux-image-amd64 currently points at, e.g. "6.1.0-56-amd64". */
async function currentKernelVersion(): Promise<string | undefined> {
  try {
    const { stdout } = await execFileP("apt-cache", ["depends", "linux-image-amd64"]);
    const m = /Depends:\s*linux-image-(\d[\w.+-]*-amd64)\b/.exec(stdout);
    return m?.[1];
  } catch {
    return undefined;
  }
}

async function cachedKernelVersions(): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(LAB_CACHE_DIR)) {
    const m = /^kernel-(.+)$/.exec(entry);
    if (m && existsSync(path.join(LAB_CACHE_DIR, entry, "modules.json"))) out.push(m[1]);
  }
  return out.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}

/** Returns the cache folder holding `vmlinuz`, `modules/*.ko` and `modules.json` (load order). */
async function ensureKernel(): Promise<string> {
  let version = await currentKernelVersion();
  if (!version) {
    // No apt lists (offline rerun): any kernel fetched before will do.
    version = (await cachedKernelVersions()).at(-1);
    if (!version) {
      throw new Error(
        "cannot find the Debian kernel package: `apt-cache depends linux-image-amd64` names no " +
          "linux-image-*-amd64 (run apt-get update)",
      );
    }
  }
  const finalDir = path.join(LAB_CACHE_DIR, `kernel-${version}`);
  if (existsSync(path.join(finalDir, "modules.json"))) return finalDir;

  const tmp = path.join(LAB_CACHE_DIR, `.tmp-kernel-${version}-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { recursive: true, mode: 0o755 });
  try {
    const pkg = `linux-image-${version}`;
    try {
      await execFileP("apt-get", ["download", "-q", pkg], { cwd: tmp, maxBuffer: 16 << 20 });
    } catch (e) {
      throw new Error(`apt-get download ${pkg} failed (run apt-get update?): ${(e as Error).message}`);
    }
    const deb = (await readdir(tmp)).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const root = path.join(tmp, "root");
    await execFileP("dpkg", ["-x", path.join(tmp, deb), root]);

    const out = path.join(tmp, "out");
    await mkdir(path.join(out, "modules"), { recursive: true });
    const vmlinuz = path.join(root, "boot", `vmlinuz-${version}`);
    await writeFile(path.join(out, "vmlinuz"), await readFile(vmlinuz));

    const modRoot = path.join(root, "lib", "modules", version);
    const order = await resolveModules(modRoot, WANTED_MODULES, async (name, file) => {
      await writeFile(path.join(out, "modules", `${name}.ko`), await readModule(file));
    });
    await writeFile(path.join(out, "modules.json"), JSON.stringify({ version, order }, null, 2) + "\n");

    try {
      await rename(out, finalDir);
    } catch (e) {
      // Another process won the race: its copy is just as good.
      if (!existsSync(path.join(finalDir, "modules.json"))) throw e;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  await pruneCache(path.basename(finalDir));
  return finalDir;
}

async function walk(dir: string, found: Map<string, string>): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await walk(p, found);
    else {
      const m = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/.exec(entry.name);
      if (m) found.set(m[1].replaceAll("-", "_"), p);
    }
  }
}

/** Uncompressed module bytes (busybox insmod cannot read compressed modules). */
async function readModule(file: string): Promise<Buffer> {
  const tool = file.endsWith(".xz") ? "xz" : file.endsWith(".zst") ? "zstd" : file.endsWith(".gz") ? "gzip" : undefined;
  if (!tool) return readFile(file);
  try {
    const { stdout } = await execFileP(tool, ["-dc", file], { encoding: "buffer", maxBuffer: 256 << 20 });
    return stdout;
  } catch (e) {
    throw new Error(`cannot decompress ${file} with ${tool} (Debian package ${tool === "xz" ? "xz-utils" : tool}): ${(e as Error).message}`);
  }
}

/**
 * Orders `wanted` and their dependencies so each module comes after what it depends on.
 * The kernel package ships no modules.dep (depmod makes it at install time), so dependencies
 * come from each module's own `.modinfo` section (`depends=`).
 */
async function resolveModules(
  modRoot: string,
  wanted: string[],
  emit: (name: string, file: string) => Promise<void>,
): Promise<string[]> {
  const files = new Map<string, string>();
  await walk(path.join(modRoot, "kernel"), files);
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = async (name: string): Promise<void> => {
    if (order.includes(name)) return;
    if (visiting.has(name)) throw new Error(`module dependency cycle at ${name}`);
    const file = files.get(name);
    if (!file) throw new Error(`module ${name} not found under ${modRoot} (built in?)`);
    visiting.add(name);
    const info = modinfo(await readModule(file));
    for (const dep of (info.get("depends") ?? "").split(",").filter(Boolean)) await visit(dep.replaceAll("-", "_"));
    visiting.delete(name);
    order.push(name);
    await emit(name, file);
  };
  for (const name of wanted) await visit(name);
  return order;
}

/** Key/value pairs of an ELF64 kernel module's `.modinfo` section. */
export function modinfo(elf: Buffer): Map<string, string> {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error("not a little-endian ELF64 module");
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const section = (i: number) => {
    const base = shoff + i * shentsize;
    return {
      name: elf.readUInt32LE(base),
      offset: Number(elf.readBigUInt64LE(base + 0x18)),
      size: Number(elf.readBigUInt64LE(base + 0x20)),
    };
  };
  const strtab = section(shstrndx);
  const out = new Map<string, string>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameStart = strtab.offset + s.name;
    const name = elf.toString("latin1", nameStart, elf.indexOf(0, nameStart));
    if (name !== ".modinfo") continue;
    for (const entry of elf.toString("latin1", s.offset, s.offset + s.size).split("\0")) {
      const eq = entry.indexOf("=");
      if (eq > 0 && !out.has(entry.slice(0, eq))) out.set(entry.slice(0, eq), entry.slice(eq + 1));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Initramfs

async function ensureInitrd(kernelDir: string): Promise<string> {
  const { order } = JSON.parse(await readFile(path.join(kernelDir, "modules.json"), "utf8")) as { order: string[] };
  const busybox = await readFile(BUSYBOX);
  const modules = await Promise.all(order.map(async (name) => ({ name, data: await readFile(path.join(kernelDir, "modules", `${name}.ko`)) })));

  const h = createHash("sha256");
  for (const part of [INITRD_FORMAT, INIT_SCRIPT, UDHCPC_SCRIPT, busybox, ...modules.flatMap((m) => [m.name, m.data])]) {
    h.update(String(typeof part === "string" ? part.length : part.byteLength) + ":");
    h.update(part);
  }
  const file = path.join(LAB_CACHE_DIR, `initrd-${h.digest("hex").slice(0, 16)}.cpio.gz`);
  if (existsSync(file)) return file;

  const cpio = new CpioWriter();
  for (const dir of ["bin", "dev", "etc", "lib", "lib/modules", "proc", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin"]) cpio.dir(dir);
  cpio.charDevice("dev/console", 5, 1);
  cpio.file("bin/busybox", busybox, 0o755);
  cpio.symlink("bin/sh", "busybox");
  cpio.file("init", Buffer.from(INIT_SCRIPT), 0o755);
  cpio.file("etc/udhcpc.script", Buffer.from(UDHCPC_SCRIPT), 0o755);
  for (const m of modules) cpio.file(`lib/modules/${m.name}.ko`, m.data, 0o644);
  cpio.file("lib/modules/load-order", Buffer.from(order.join("\n") + "\n"), 0o644);
  const gz = gzipSync(cpio.finish(), { level: 6 });

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
  const kind = keep.startsWith("kernel-") ? /^kernel-/ : /^initrd-/;
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

/** A minimal writer for the "newc" cpio format the kernel unpacks as initramfs. */
class CpioWriter {
  private chunks: Buffer[] = [];
  private ino = 1;
  private length = 0;

  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  private pad(): void {
    const n = (4 - (this.length % 4)) % 4;
    if (n) this.push(Buffer.alloc(n));
  }

  private entry(name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): void {
    const fields = [
      this.ino++, mode, 0, 0, mode & 0o040000 ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length + 1, 0,
    ];
    this.push(Buffer.from("070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join(""), "latin1"));
    this.push(Buffer.from(name + "\0", "latin1"));
    this.pad();
    if (data.length) {
      this.push(data);
      this.pad();
    }
  }

  dir(name: string): void {
    this.entry(name, 0o040755, Buffer.alloc(0));
  }

  file(name: string, data: Buffer, perm: number): void {
    this.entry(name, 0o100000 | perm, data);
  }

  symlink(name: string, target: string): void {
    this.entry(name, 0o120777, Buffer.from(target, "latin1"));
  }

  charDevice(name: string, major: number, minor: number): void {
    this.entry(name, 0o020600, Buffer.alloc(0), [major, minor]);
  }

  finish(): Buffer {
    this.ino = 0;
    this.entry("TRAILER!!!", 0, Buffer.alloc(0));
    return Buffer.concat(this.chunks);
  }
}
