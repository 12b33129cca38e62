/**
 * A Debian kernel for boot images, without touching the host's /boot: the
 * `linux-image-<abi>-amd64` package is fetched with `apt-get download`, indexed once (its
 * vmlinuz, config, built-in modules and every module's dependencies) and kept in a cache
 * folder; the modules a caller asks for are unpacked from the kept package on demand.
 *
 *   <cacheDir>/debian-kernel-<abi>/
 *     kernel.json      the index (written last: its presence means the folder is complete)
 *     package.deb      the package as downloaded (its SHA-256 is in kernel.json)
 *     vmlinuz, config
 *     modules/<name>.ko  uncompressed modules, unpacked when first asked for
 *
 * Every step writes to a temporary name and renames into place, so concurrent builds are safe.
 */
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/** Bump when kernel.json's layout changes. */
const INDEX_FORMAT = 1;
const DIR_PREFIX = "debian-kernel-";

export interface DebianKernelOptions {
  /** Where packages and indexes are kept. */
  cacheDir: string;
  /** Kernel ABI such as "6.1.0-56-amd64"; default: what `linux-image-amd64` depends on now
   *  (apt-cache), or the newest cached one when apt knows none (offline). */
  version?: string;
  onProgress?: (line: string) => void;
}

export interface KernelModule {
  /** Normalized module name (dashes as underscores), e.g. "virtio_net". */
  name: string;
  /** Path below /lib/modules/<abi>/, uncompressed, e.g. "kernel/drivers/net/virtio_net.ko". */
  relPath: string;
  /** The uncompressed module in the cache. */
  file: string;
  /** Names of the modules it needs loaded first. */
  depends: string[];
}

export interface DebianKernel {
  /** Kernel ABI, e.g. "6.1.0-56-amd64" (what `uname -r` prints). */
  version: string;
  /** Debian package name and version, e.g. "linux-image-6.1.0-56-amd64" "6.1.192-2". */
  packageName: string;
  packageVersion: string;
  /** SHA-256 of the downloaded .deb: the build input that pins every byte below. */
  debSha256: string;
  vmlinuz: string;
  /** CONFIG_* options the kernel was built with ("y", "m", or a value). */
  config: ReadonlyMap<string, string>;
  /**
   * `names` and every module they depend on, each after its dependencies. Names built into
   * the kernel are left out silently; a name the kernel does not know throws.
   */
  modules(names: string[]): Promise<KernelModule[]>;
}

interface KernelIndex {
  format: number;
  version: string;
  packageName: string;
  packageVersion: string;
  debSha256: string;
  /** name → package path (e.g. "./lib/modules/<abi>/kernel/…/x.ko.xz") and dependencies. */
  modules: Record<string, { member: string; depends: string[] }>;
  builtin: string[];
}

/** Fetches (once) and opens the Debian kernel package; see the module comment for the cache. */
export async function ensureDebianKernel(opts: DebianKernelOptions): Promise<DebianKernel> {
  await mkdir(opts.cacheDir, { recursive: true });
  const version = opts.version ?? (await aptKernelVersion()) ?? (await cachedVersions(opts.cacheDir)).at(-1);
  if (!version) {
    throw new Error(
      "Cannot find a Debian kernel: `apt-cache depends linux-image-amd64` names no linux-image-*-amd64 " +
        "and none is cached (run apt-get update)",
    );
  }
  if (!/^\d[\w.+-]*$/.test(version)) throw new Error(`Cannot fetch kernel "${version}": not a kernel ABI name`);
  const dir = path.join(opts.cacheDir, DIR_PREFIX + version);
  let index = await readIndex(dir);
  if (!index) {
    await fetchAndIndex(opts.cacheDir, version, dir, opts.onProgress);
    index = await readIndex(dir);
    if (!index) throw new Error(`Cannot index kernel ${version}: ${dir} is incomplete`);
    await pruneOthers(opts.cacheDir, path.basename(dir));
  }
  return openKernel(dir, index);
}

/** The kernel ABI Debian's linux-image-amd64 currently points at, e.g. "6.1.0-56-amd64". */
async function aptKernelVersion(): Promise<string | undefined> {
  try {
    const { stdout } = await execFileP("apt-cache", ["depends", "linux-image-amd64"]);
    return /Depends:\s*linux-image-(\d[\w.+-]*-amd64)\b/.exec(stdout)?.[1];
  } catch {
    return undefined;
  }
}

async function cachedVersions(cacheDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(cacheDir)) {
    if (entry.startsWith(DIR_PREFIX) && existsSync(path.join(cacheDir, entry, "kernel.json"))) out.push(entry.slice(DIR_PREFIX.length));
  }
  return out.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}

async function readIndex(dir: string): Promise<KernelIndex | undefined> {
  try {
    const index = JSON.parse(await readFile(path.join(dir, "kernel.json"), "utf8")) as KernelIndex;
    return index.format === INDEX_FORMAT ? index : undefined;
  } catch {
    return undefined;
  }
}

async function fetchAndIndex(cacheDir: string, version: string, finalDir: string, progress?: (line: string) => void): Promise<void> {
  const tmp = path.join(cacheDir, `.tmp-${DIR_PREFIX}${version}-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { recursive: true, mode: 0o755 });
  try {
    const packageName = `linux-image-${version}`;
    progress?.(`downloading ${packageName} (apt-get download)`);
    try {
      await execFileP("apt-get", ["download", "-q", packageName], { cwd: tmp, maxBuffer: 16 << 20 });
    } catch (e) {
      throw new Error(`Cannot download ${packageName}: apt-get download failed (run apt-get update?): ${(e as Error).message}`);
    }
    const deb = (await readdir(tmp)).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`Cannot download ${packageName}: apt-get download produced no .deb`);
    const out = path.join(tmp, "out");
    await mkdir(path.join(out, "modules"), { recursive: true });
    await rename(path.join(tmp, deb), path.join(out, "package.deb"));
    const debFile = path.join(out, "package.deb");
    const debSha256 = createHash("sha256").update(await readFile(debFile)).digest("hex");
    const { stdout: packageVersion } = await execFileP("dpkg-deb", ["-f", debFile, "Version"]);

    progress?.(`unpacking ${packageName} to index its modules`);
    const root = path.join(tmp, "root");
    await execFileP("dpkg", ["-x", debFile, root]);
    await writeFile(path.join(out, "vmlinuz"), await readFile(path.join(root, "boot", `vmlinuz-${version}`)));
    await writeFile(path.join(out, "config"), await readFile(path.join(root, "boot", `config-${version}`)));

    const modRoot = path.join(root, "lib", "modules", version);
    const files = new Map<string, string>();
    await walkModules(path.join(modRoot, "kernel"), files);
    const modules: KernelIndex["modules"] = {};
    for (const [name, file] of [...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const info = modinfo(await readModule(file));
      const depends = (info.get("depends") ?? "").split(",").filter(Boolean).map(normalize);
      modules[name] = { member: "./" + path.relative(root, file), depends };
    }
    let builtin: string[] = [];
    try {
      builtin = (await readFile(path.join(modRoot, "modules.builtin"), "utf8"))
        .split("\n")
        .filter(Boolean)
        .map((l) => normalize(path.basename(l).replace(/\.ko.*$/, "")))
        .sort();
    } catch {
      // Older packages may lack the list; built-in names then simply count as unknown.
    }
    const index: KernelIndex = { format: INDEX_FORMAT, version, packageName, packageVersion: packageVersion.trim(), debSha256, modules, builtin };
    await writeFile(path.join(out, "kernel.json"), JSON.stringify(index) + "\n");
    try {
      await rename(out, finalDir);
    } catch (e) {
      // Another process won the race: its copy is just as good.
      if (!existsSync(path.join(finalDir, "kernel.json"))) throw e;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function openKernel(dir: string, index: KernelIndex): Promise<DebianKernel> {
  const config = new Map<string, string>();
  for (const line of (await readFile(path.join(dir, "config"), "utf8")).split("\n")) {
    const m = /^(CONFIG_\w+)=(.*)$/.exec(line);
    if (m) config.set(m[1], m[2].replace(/^"(.*)"$/, "$1"));
  }
  const builtin = new Set(index.builtin);
  return {
    version: index.version,
    packageName: index.packageName,
    packageVersion: index.packageVersion,
    debSha256: index.debSha256,
    vmlinuz: path.join(dir, "vmlinuz"),
    config,
    async modules(names) {
      const order: string[] = [];
      const visiting = new Set<string>();
      const visit = (name: string): void => {
        if (order.includes(name)) return;
        if (visiting.has(name)) throw new Error(`Cannot order kernel modules: dependency cycle at ${name}`);
        const m = index.modules[name];
        if (!m) {
          if (builtin.has(name)) return;
          throw new Error(`Cannot find kernel module ${name} in ${index.packageName} (neither a module nor built in)`);
        }
        visiting.add(name);
        for (const dep of m.depends) visit(dep);
        visiting.delete(name);
        order.push(name);
      };
      for (const n of names) visit(normalize(n));
      const relPath = (name: string) => index.modules[name].member.replace(/^\.\/lib\/modules\/[^/]+\//, "").replace(/\.(xz|zst|gz)$/, "");
      await unpackModules(dir, order.filter((n) => !existsSync(path.join(dir, "modules", `${n}.ko`))).map((n) => ({ name: n, member: index.modules[n].member })));
      return order.map((name) => ({ name, relPath: relPath(name), file: path.join(dir, "modules", `${name}.ko`), depends: index.modules[name].depends }));
    },
  };
}

/** Unpacks the named members of the kept package into modules/<name>.ko, uncompressed. */
async function unpackModules(dir: string, wanted: { name: string; member: string }[]): Promise<void> {
  if (wanted.length === 0) return;
  const tmp = path.join(dir, `.tmp-unpack-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { recursive: true });
  try {
    await extractMembers(path.join(dir, "package.deb"), tmp, wanted.map((w) => w.member));
    for (const w of wanted) {
      const file = path.join(tmp, w.member);
      const out = path.join(tmp, `${w.name}.ko`);
      await writeFile(out, await readModule(file));
      await rename(out, path.join(dir, "modules", `${w.name}.ko`));
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** `dpkg-deb --fsys-tarfile DEB | tar -x -C DEST MEMBERS…` without a shell. */
function extractMembers(deb: string, dest: string, members: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const dpkg = spawn("dpkg-deb", ["--fsys-tarfile", deb], { stdio: ["ignore", "pipe", "pipe"] });
    const tar = spawn("tar", ["-x", "-C", dest, "--", ...members], { stdio: ["pipe", "ignore", "pipe"] });
    let err = "";
    dpkg.stderr.on("data", (d: Buffer) => (err += d));
    tar.stderr.on("data", (d: Buffer) => (err += d));
    dpkg.stdout.pipe(tar.stdin);
    tar.stdin.on("error", () => {});
    let pending = 2;
    let failed = false;
    const done = (what: string) => (code: number | null) => {
      if (code !== 0 && !failed) {
        failed = true;
        reject(new Error(`Cannot unpack kernel modules from ${deb}: ${what} exited ${code}: ${err.trim()}`));
      }
      if (--pending === 0 && !failed) resolve();
    };
    dpkg.on("error", reject).on("close", done("dpkg-deb"));
    tar.on("error", reject).on("close", done("tar"));
  });
}

async function walkModules(dir: string, found: Map<string, string>): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await walkModules(p, found);
    else {
      const m = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/.exec(entry.name);
      if (m) found.set(normalize(m[1]), p);
    }
  }
}

function normalize(name: string): string {
  return name.replaceAll("-", "_");
}

/** Uncompressed module bytes (busybox insmod cannot read compressed modules). */
async function readModule(file: string): Promise<Buffer> {
  const tool = file.endsWith(".xz") ? "xz" : file.endsWith(".zst") ? "zstd" : file.endsWith(".gz") ? "gzip" : undefined;
  if (!tool) return readFile(file);
  try {
    const { stdout } = await execFileP(tool, ["-dc", file], { encoding: "buffer", maxBuffer: 256 << 20 });
    return stdout;
  } catch (e) {
    throw new Error(`Cannot decompress ${file} with ${tool} (Debian package ${tool === "xz" ? "xz-utils" : tool}): ${(e as Error).message}`);
  }
}

/** Key/value pairs of an ELF64 kernel module's `.modinfo` section. */
export function modinfo(elf: Buffer): Map<string, string> {
  if (elf.length < 0x40 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error("not a little-endian ELF64 module");
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const section = (i: number) => {
    const base = shoff + i * shentsize;
    return { name: elf.readUInt32LE(base), offset: Number(elf.readBigUInt64LE(base + 0x18)), size: Number(elf.readBigUInt64LE(base + 0x20)) };
  };
  const strtab = section(shstrndx);
  const out = new Map<string, string>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const nameStart = strtab.offset + s.name;
    if (elf.toString("latin1", nameStart, elf.indexOf(0, nameStart)) !== ".modinfo") continue;
    for (const entry of elf.toString("latin1", s.offset, s.offset + s.size).split("\0")) {
      const eq = entry.indexOf("=");
      if (eq > 0 && !out.has(entry.slice(0, eq))) out.set(entry.slice(0, eq), entry.slice(eq + 1));
    }
  }
  return out;
}

/**
 * Removes other kernels and abandoned temporary folders once older than an hour (a concurrent
 * build may still be using them).
 */
async function pruneOthers(cacheDir: string, keep: string): Promise<void> {
  const cutoff = Date.now() - 60 * 60 * 1000;
  for (const entry of await readdir(cacheDir)) {
    if (entry === keep || !(entry.startsWith(DIR_PREFIX) || entry.startsWith(`.tmp-${DIR_PREFIX}`))) continue;
    const p = path.join(cacheDir, entry);
    try {
      if ((await stat(p)).mtimeMs < cutoff) await rm(p, { recursive: true, force: true });
    } catch {
      // already gone
    }
  }
}
