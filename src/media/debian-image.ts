/**
 * `slipway image build debian`: a minimal, bootable Debian root file system built from Debian's
 * packages with mmdebstrap, as a tar.zst the content library imports like any other image.
 *
 * What is in it: the minbase variant plus the Debian kernel (`linux-image-amd64`, with its
 * initramfs holding the modules for common disks), systemd, udev, ifupdown with a DHCP client,
 * and whatever `packages` adds. No SSH server unless asked for. What is left out or emptied so
 * that every machine deployed from one image is its own: `/etc/machine-id` (systemd makes one at
 * first boot), `/etc/hostname` and `/etc/resolv.conf` (configure-os and DHCP write them), SSH host
 * keys (made at first boot by a unit in the image when an SSH server is installed).
 * `/boot/vmlinuz` and `/boot/initrd.img` are links to the kernel and initramfs (what
 * install-bootloader boots), `/etc/slipway/kernel-cmdline` asks for `net.ifnames=0` (so the first
 * NIC is eth0, configure-os's default) and both consoles, and `/etc/slipway/image.json` records
 * how the image was made.
 *
 * Reproducible: file times are clamped to SOURCE_DATE_EPOCH — taken from the environment, or the
 * newest `Date:` of the suites' InRelease files — so the same mirror state gives the same bytes.
 * Downloaded packages are kept in `<cacheDir>/debian-debs-<suite>/` (only those the last build
 * used), so a rebuild downloads only what changed.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { requireHostFile } from "./host-files.ts";

export interface DebianImageOptions {
  /** A Debian suite or code name: bookworm (default), trixie, stable, sid… */
  suite: string;
  /** Packages to add to the base set. */
  packages: string[];
  /** The Debian archive; default: the host's apt source for Debian, else deb.debian.org. */
  mirror?: string;
  cacheDir: string;
  /** Where the tar.zst is written (its folder must exist). */
  output: string;
  /** Each progress line mmdebstrap prints. */
  onLine?: (line: string) => void;
  /** Overrides the environment, for tests. */
  env?: NodeJS.ProcessEnv;
}

export interface DebianImageResult {
  output: string;
  suite: string;
  mirror: string;
  packages: string[];
  sourceDateEpoch: number;
}

/** What every image holds besides minbase: a kernel and initramfs, an init, networking. */
export const BASE_PACKAGES = ["linux-image-amd64", "systemd-sysv", "udev", "dbus", "kmod", "zstd", "ifupdown", "isc-dhcp-client", "netbase"];
/** Suites with no -updates or -security companion. */
const ROLLING = new Set(["sid", "unstable", "experimental"]);
const SUITE = /^[a-z][a-z0-9-]{1,30}$/;
/**
 * Debian policy 5.6.1: lower case letters, digits, + - . ; at least two, starting alphanumeric.
 * Not ending in "-" (apt reads a trailing "-" as "remove") or "." either.
 */
const PACKAGE = /^[a-z0-9][a-z0-9+.-]{0,98}[a-z0-9+]$/;
const CMDLINE = "net.ifnames=0 console=tty0 console=ttyS0,115200n8";

/** Refusals for options a user typed, before anything runs; empty when they are fine. */
export function debianImageProblems(opts: Pick<DebianImageOptions, "suite" | "packages" | "mirror">): string[] {
  const out: string[] = [];
  if (!SUITE.test(opts.suite)) out.push(`suite "${opts.suite}" is not a Debian suite name (lower-case letters, digits and -)`);
  for (const p of opts.packages) if (!PACKAGE.test(p)) out.push(`"${p}" is not a Debian package name`);
  if (opts.mirror !== undefined) {
    // The URL parser drops tabs and newlines and encodes spaces; the raw text goes into a
    // sources line, so it must be plain printable ASCII itself (no second line smuggled in).
    if (!/^[\x21-\x7e]{1,2000}$/.test(opts.mirror)) {
      out.push(`mirror "${opts.mirror.replace(/[^\x20-\x7e]/g, "?")}" holds spaces, control or non-ASCII characters: give one plain URL`);
      return out;
    }
    let u: URL | undefined;
    try {
      u = new URL(opts.mirror);
    } catch {
      // reported below
    }
    if (!u || !["http:", "https:", "file:"].includes(u.protocol) || u.username || u.password || u.search || u.hash) {
      out.push(`mirror "${opts.mirror}" is not an http, https or file URL without credentials or query`);
    }
  }
  return out;
}

/** The Debian archive this host's apt uses (the first non-security one), if any. */
export function hostDebianMirror(etcApt = "/etc/apt"): string | undefined {
  const texts: string[] = [];
  const read = (f: string) => {
    try {
      texts.push(readFileSync(f, "utf8"));
    } catch {
      // absent
    }
  };
  read(path.join(etcApt, "sources.list"));
  try {
    for (const f of readdirSync(path.join(etcApt, "sources.list.d")).sort()) if (/\.(list|sources)$/.test(f)) read(path.join(etcApt, "sources.list.d", f));
  } catch {
    // no folder
  }
  for (const text of texts) {
    for (const line of text.split("\n")) {
      const m = /^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)/.exec(line);
      const uri = m?.[1]?.replace(/\/+$/, "");
      if (uri && /^https?:\/\//.test(uri) && /\/debian$/.test(uri)) return uri;
    }
  }
  return undefined;
}

/** The sources the image is built from: the suite, and for a release its -updates and -security. */
export function debianSources(suite: string, mirror: string): { uri: string; suite: string }[] {
  const out = [{ uri: mirror, suite }];
  if (!ROLLING.has(suite)) {
    out.push({ uri: mirror, suite: `${suite}-updates` });
    out.push({ uri: mirror.replace(/\/debian$/, "/debian-security"), suite: `${suite}-security` });
  }
  return out.filter((s, i) => i === 0 || /\/debian(-security)?$/.test(s.uri));
}

/** The newest `Date:` of the sources' InRelease files, in seconds; undefined when one cannot be read. */
async function releaseEpoch(sources: { uri: string; suite: string }[]): Promise<number | undefined> {
  let newest = 0;
  for (const s of sources) {
    if (!/^https?:/.test(s.uri)) return undefined;
    try {
      const res = await fetch(`${s.uri}/dists/${s.suite}/InRelease`, { signal: AbortSignal.timeout(60_000) });
      if (!res.ok) return undefined;
      const date = /^Date:\s*(.+)$/m.exec(await res.text())?.[1];
      const t = date ? Date.parse(date) : NaN;
      if (!Number.isFinite(t)) return undefined;
      newest = Math.max(newest, Math.floor(t / 1000));
    } catch {
      return undefined;
    }
  }
  return newest || undefined;
}

/**
 * The package cache is run from: mmdebstrap copies its .debs into the image as root and apt
 * reuses a cached file of the right size without checking its hash, so only the user running
 * the build may be able to write it (and every folder a link could be swapped in).
 */
export function cacheDirProblem(dir: string): string | undefined {
  const uid = process.getuid?.() ?? 0;
  let start: string;
  try {
    start = realpathSync(dir);
  } catch {
    return `cannot read the cache folder ${dir}`;
  }
  for (let d = start; ; d = path.dirname(d)) {
    const st = statSync(d);
    if (st.uid !== uid && st.uid !== 0) return `${d} belongs to another user (uid ${st.uid}), who could swap the packages or the folder`;
    // A sticky folder (/tmp) lets others add entries but not rename or remove this user's.
    if ((st.mode & 0o022) !== 0 && (d === start || (st.mode & 0o1000) === 0)) {
      return `others may write to ${d} (mode ${(st.mode & 0o7777).toString(8)}), so the packages or the build's hook could be swapped; make it 0700 or pick another --cache`;
    }
    if (d === path.dirname(d)) return undefined;
  }
}

/** One word for mmdebstrap's hook parser (shell-like): single-quoted, quotes escaped. */
const quoted = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The hook run inside the finished tree (as `$1`): what makes each deployed machine its own. */
function customizeScript(provenance: string): string {
  return `#!/bin/sh
set -eu
r="$1"
rm -f "$r/etc/resolv.conf" "$r/etc/hostname" "$r/var/lib/dbus/machine-id" "$r"/etc/ssh/ssh_host_*
: > "$r/etc/machine-id"
mkdir -p "$r/etc/slipway"
printf '%s\\n' '${CMDLINE}' > "$r/etc/slipway/kernel-cmdline"
cat > "$r/etc/slipway/image.json" <<'SLIPWAY_EOF'
${provenance}
SLIPWAY_EOF
# What was installed, by version: the provenance of this image beyond the names asked for.
dpkg-query --admindir="$r/var/lib/dpkg" -W -f '\${Package}=\${Version}\\n' | LC_ALL=C sort > "$r/etc/slipway/packages"
printf '# <file system> <mount point> <type> <options> <dump> <pass>\\n# The root file system is added by Slipway'"'"'s install-bootloader step (by UUID).\\n' > "$r/etc/fstab"
if [ -x "$r/usr/bin/ssh-keygen" ]; then
  cat > "$r/etc/systemd/system/slipway-ssh-host-keys.service" <<'SLIPWAY_EOF'
[Unit]
Description=Make this machine's own SSH host keys
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
SLIPWAY_EOF
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
  ln -sf ../slipway-ssh-host-keys.service "$r/etc/systemd/system/multi-user.target.wants/slipway-ssh-host-keys.service"
fi
`;
}

/** Builds the image into `opts.output`; throws with mmdebstrap's last lines when it fails. */
export async function buildDebianImage(opts: DebianImageOptions): Promise<DebianImageResult> {
  const problems = debianImageProblems(opts);
  if (problems.length) throw new Error(problems.join("; "));
  const mmdebstrap = requireHostFile("/usr/bin/mmdebstrap", "mmdebstrap");
  const env = opts.env ?? process.env;
  const mirror = (opts.mirror ?? hostDebianMirror() ?? "http://deb.debian.org/debian").replace(/\/+$/, "");
  const sources = debianSources(opts.suite, mirror);
  const fromEnv = /^\d{1,12}$/.test(env.SOURCE_DATE_EPOCH ?? "") ? Number(env.SOURCE_DATE_EPOCH) : undefined;
  const epoch = fromEnv ?? (await releaseEpoch(sources)) ?? Math.floor(Date.now() / 1000);
  const packages = [...new Set([...BASE_PACKAGES, ...opts.packages])];
  const provenance = JSON.stringify({ builtBy: "slipway image build debian", suite: opts.suite, sources, packages, sourceDateEpoch: epoch }, null, 2);

  const cache = path.join(opts.cacheDir, `debian-debs-${opts.suite}`);
  const nextCache = `${cache}.next-${process.pid}`;
  for (const d of [opts.cacheDir, cache]) {
    await mkdir(d, { recursive: true, mode: 0o700 });
    const problem = cacheDirProblem(d);
    if (problem) throw new Error(`Cannot build from this package cache: ${problem}`);
  }
  await rm(nextCache, { recursive: true, force: true });
  await mkdir(nextCache, { mode: 0o700 });
  // The hook mmdebstrap runs as root: in a folder of its own that only this user can write.
  const hookDir = await mkdtemp(path.join(os.tmpdir(), "slipway-image-"));
  const hook = path.join(hookDir, "customize.sh");
  await writeFile(hook, customizeScript(provenance), { mode: 0o700 });
  const args = [
    "--variant=minbase", `--include=${packages.join(",")}`,
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright", "--dpkgopt=path-exclude=/usr/share/locale/*",
    // The kernel package makes /boot/vmlinuz and /boot/initrd.img links (what install-bootloader boots).
    `--essential-hook=mkdir -p "$1/etc" && printf 'link_in_boot = yes\\ndo_symlinks = yes\\n' > "$1/etc/kernel-img.conf"`,
    // Packages from the last build are offered to apt first; the ones this build used are kept.
    `--setup-hook=mkdir -p "$1/var/cache/apt/archives"`, `--setup-hook=sync-in ${quoted(cache)} /var/cache/apt/archives/`,
    "--skip=essential/unlink", `--customize-hook=sync-out /var/cache/apt/archives ${quoted(nextCache)}`,
    `--customize-hook=${hook}`,
    opts.suite, opts.output,
    ...sources.map((s) => `deb ${s.uri} ${s.suite} main`),
  ];
  const tail: string[] = [];
  try {
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(mmdebstrap, args, { env: { ...env, SOURCE_DATE_EPOCH: String(epoch) }, stdio: ["ignore", "pipe", "pipe"] });
      let partial = "";
      const onData = (b: Buffer) => {
        const lines = (partial + b.toString("utf8")).split("\n");
        partial = lines.pop() ?? "";
        for (const l of lines) {
          if (!l.trim()) continue;
          tail.push(l);
          if (tail.length > 15) tail.shift();
          if (l.startsWith("I: ") || l.startsWith("W: ") || l.startsWith("E: ")) opts.onLine?.(l);
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.on("error", reject);
      child.on("close", (c) => resolve(c ?? 1));
    });
    if (code !== 0 || !existsSync(opts.output)) throw new Error(`mmdebstrap failed (exit ${code}):\n${tail.join("\n")}`);
    await rm(cache, { recursive: true, force: true });
    await rename(nextCache, cache);
  } catch (err) {
    await rm(opts.output, { force: true });
    throw err;
  } finally {
    await rm(hookDir, { recursive: true, force: true });
    await rm(nextCache, { recursive: true, force: true });
  }
  return { output: opts.output, suite: opts.suite, mirror, packages, sourceDateEpoch: epoch };
}
