/**
 * A network lab in a private network namespace: bridges ("links") with an address, taps on
 * them for QEMU, processes run inside the namespace, an IPv6 Router Advertisement sender
 * (stops iPXE's ~15 s IPv6 wait) and packet counting.
 *
 * Cleanup: `lab.close()` stops every process it started (and anything else left inside the
 * namespace) and deletes the namespace. A process-exit handler does the same if a test dies,
 * and `createLab` first sweeps `slw-*` namespaces whose creator is gone or that are older than
 * an hour. Needs root.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { onExit } from "./cleanup.ts";
import { requirePackages } from "./packages.ts";

const NETNS_DIR = "/run/netns";
const OWNER_DIR = "/run/slipway-lab";
const STALE_AFTER_MS = 60 * 60 * 1000;

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Kill the command after this long (default 60 s). */
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string;
  /** Resolve with the output instead of rejecting when the exit status is not 0. */
  allowFailure?: boolean;
  /** Environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

/** Runs a command on the host (outside any namespace); rejects with its stderr on failure. */
export function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult & { code: number }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20, encoding: "utf8", env: opts.env },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : -1) : 0;
        if (err && !opts.allowFailure) {
          reject(new Error(`${cmd} ${args.join(" ")} failed (${code}): ${stderr.trim() || err.message}`));
        } else resolve({ stdout, stderr, code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function killNamespaceProcessesSync(ns: string): void {
  try {
    const out = execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  } catch {
    // namespace already gone
  }
}

/** Written to /run/slipway-lab/<namespace> when a lab is created. */
interface OwnerRecord {
  pid: number;
  dir: string;
  /** Date.now() at creation. */
  created: number;
}

function readOwner(ns: string): OwnerRecord | undefined {
  try {
    const rec = JSON.parse(readFileSync(path.join(OWNER_DIR, ns), "utf8")) as OwnerRecord;
    return typeof rec.pid === "number" && typeof rec.dir === "string" && typeof rec.created === "number" ? rec : undefined;
  } catch {
    return undefined;
  }
}

function deleteNamespaceSync(ns: string): void {
  killNamespaceProcessesSync(ns);
  try {
    execFileSync("ip", ["netns", "delete", ns], { stdio: "ignore" });
  } catch {
    // already gone
  }
  const owner = readOwner(ns);
  if (owner && path.basename(owner.dir).startsWith(`${ns}-`) && !process.env.SLIPWAY_LAB_KEEP) {
    rmSync(owner.dir, { recursive: true, force: true });
  }
  rmSync(path.join(OWNER_DIR, ns), { force: true });
}

let swept = false;

/**
 * Deletes lab namespaces left behind by earlier runs: those whose creating process is gone,
 * and any `slw-*` namespace older than an hour.
 */
export function sweepStaleLabs(now = Date.now()): string[] {
  const removed: string[] = [];
  let names: string[] = [];
  try {
    names = execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
      .split("\n")
      .map((l) => l.trim().split(/\s+/)[0])
      .filter((n): n is string => !!n && n.startsWith("slw-"));
  } catch {
    return removed;
  }
  for (const ns of names) {
    const owner = readOwner(ns);
    let created = owner?.created;
    if (created === undefined) {
      try {
        created = statSync(path.join(NETNS_DIR, ns)).mtimeMs;
      } catch {
        created = 0;
      }
    }
    let stale = now - created > STALE_AFTER_MS;
    if (owner && owner.pid !== process.pid && !pidAlive(owner.pid)) stale = true;
    if (stale) {
      deleteNamespaceSync(ns);
      removed.push(ns);
    }
  }
  // Records (and scratch folders) of labs whose namespace is already gone and whose owner died.
  let records: string[] = [];
  try {
    records = readdirSync(OWNER_DIR);
  } catch {
    // none yet
  }
  for (const ns of records) {
    if (!ns.startsWith("slw-") || ns.endsWith(".tmp") || names.includes(ns)) continue;
    const owner = readOwner(ns);
    if (!owner || (owner.pid !== process.pid && !pidAlive(owner.pid))) deleteNamespaceSync(ns);
  }
  return removed;
}

export interface LabOptions {
  /** A short label put in the namespace name (slw-<label>-<random>), for people looking at `ip netns`. */
  name?: string;
}

export interface SpawnInLabOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdio?: SpawnOptions["stdio"];
}

/** A bridge inside the lab namespace with an IPv4 address (and an IPv6 ULA /64 for RAs). */
export class Link {
  readonly lab: Lab;
  readonly name: string;
  /** As given, e.g. "10.77.0.1/24". */
  readonly cidr: string;
  /** The bridge's IPv4 address, e.g. "10.77.0.1". */
  readonly address: string;
  readonly prefixLength: number;
  /** The IPv6 /64 on the bridge, e.g. "fd77:0:0:1::" (address ::1), which RAs advertise. */
  readonly ipv6Prefix: string;
  readonly taps: Tap[] = [];

  constructor(lab: Lab, name: string, cidr: string, ipv6Prefix: string) {
    this.lab = lab;
    this.name = name;
    this.cidr = cidr;
    const [address, prefix] = cidr.split("/");
    this.address = address;
    this.prefixLength = Number(prefix);
    this.ipv6Prefix = ipv6Prefix;
  }

  /** Creates a tap device attached to this bridge, for `qemu -netdev tap,ifname=NAME`. */
  async addTap(name: string): Promise<Tap> {
    checkIfName(name);
    await this.lab.exec("ip", ["tuntap", "add", "dev", name, "mode", "tap"]);
    await this.lab.exec("ip", ["link", "set", name, "master", this.name]);
    await this.lab.exec("ip", ["link", "set", name, "up"]);
    const tap = new Tap(this, name);
    this.taps.push(tap);
    return tap;
  }
}

export class Tap {
  readonly link: Link;
  readonly name: string;

  constructor(link: Link, name: string) {
    this.link = link;
    this.name = name;
  }
}

function checkIfName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new Error(`bad interface name ${JSON.stringify(name)} (1-15 of [A-Za-z0-9_.-])`);
}

export class Lab {
  /** The network namespace's name (slw-...). */
  readonly name: string;
  /** Scratch directory for this lab's files (pid files, VM firmware variables, logs); removed on close. */
  readonly dir: string;
  readonly links: Link[] = [];
  private readonly children = new Set<ChildProcess>();
  private closed = false;
  private readonly unregister: () => void;

  constructor(name: string, dir: string) {
    this.name = name;
    this.dir = dir;
    this.unregister = onExit(() => {
      for (const child of this.children) killGroup(child, "SIGKILL");
      deleteNamespaceSync(this.name);
      if (!process.env.SLIPWAY_LAB_KEEP) rmSync(this.dir, { recursive: true, force: true });
    });
  }

  /** Creates a bridge named `name` with the address `opts.cidr`, STP off, up. */
  async addLink(name: string, opts: { cidr: string }): Promise<Link> {
    checkIfName(name);
    if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(opts.cidr)) throw new Error(`bad cidr ${opts.cidr}`);
    const index = this.links.length + 1;
    const ipv6Prefix = `fd77:0:0:${index.toString(16)}::`;
    await this.exec("ip", ["link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
    await this.exec("ip", ["addr", "add", opts.cidr, "dev", name]);
    await this.exec("ip", ["-6", "addr", "add", `${ipv6Prefix}1/64`, "dev", name, "nodad"]);
    await this.exec("ip", ["link", "set", name, "up"]);
    // Without it a socket bound to 0.0.0.0 gets ENETUNREACH sending to 255.255.255.255.
    // One route per bridge (distinct metrics); sockets bound to a device use their own.
    await this.exec("ip", ["route", "add", "255.255.255.255/32", "dev", name, "metric", String(index)]);
    const link = new Link(this, name, opts.cidr, ipv6Prefix);
    this.links.push(link);
    return link;
  }

  /** Runs a command inside the namespace to completion; rejects with its stderr on failure. */
  exec(cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult & { code: number }> {
    this.assertOpen();
    return run("ip", ["netns", "exec", this.name, cmd, ...args], opts);
  }

  /**
   * Starts a process inside the namespace (its own process group). It is killed by
   * `close()` and at process exit. stdout/stderr are pipes by default and are drained: attach
   * listeners right away (same tick) to read them.
   */
  spawn(cmd: string, args: string[] = [], opts: SpawnInLabOptions = {}): ChildProcess {
    this.assertOpen();
    const child = spawn("ip", ["netns", "exec", this.name, cmd, ...args], {
      detached: true,
      stdio: opts.stdio ?? ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    // Keep output flowing even when nobody listens, so a chatty process never blocks on a
    // full pipe; listeners attached right after spawn() still get everything.
    child.stdout?.resume();
    child.stderr?.resume();
    this.children.add(child);
    child.on("exit", () => this.children.delete(child));
    child.on("error", () => this.children.delete(child));
    return child;
  }

  /** Stops a process started by `spawn` (SIGTERM, then SIGKILL after `graceMs`). */
  async stop(child: ChildProcess, graceMs = 3000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    killGroup(child, "SIGTERM");
    const timer = setTimeout(() => killGroup(child, "SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /**
   * Runs an RA-only IPv6 router advertisement sender (dnsmasq, no DNS, no DHCPv4) on the
   * link, so iPXE does not wait ~15 s for IPv6 autoconfiguration.
   */
  async startRouterAdvertisements(link: Link): Promise<ChildProcess> {
    requirePackages("dnsmasq-base");
    const tag = `ra-${link.name}`;
    const child = this.spawn("/usr/sbin/dnsmasq", [
      "--no-daemon",
      "--conf-file=/dev/null",
      "--port=0",
      "--enable-ra",
      `--dhcp-range=${link.ipv6Prefix},ra-only`,
      `--interface=${link.name}`,
      "--bind-interfaces",
      "--user=root",
      "--group=root",
      `--pid-file=${path.join(this.dir, `${tag}.pid`)}`,
      `--dhcp-leasefile=${path.join(this.dir, `${tag}.leases`)}`,
      "--log-facility=-",
    ]);
    await waitForOutput(child, /started, version/, 10_000, `dnsmasq (router advertisements on ${link.name})`);
    return child;
  }

  /**
   * Captures packets on an interface in the namespace (a bridge or a tap) with dumpcap
   * (Debian package tshark) until `stop()`, which returns how many matched `filter` (a
   * pcap-filter expression, e.g. "udp port 67 or udp port 69").
   *
   * Capturing on a bridge shows what reaches the host stack and floods; to see everything
   * one machine gets, capture on its tap.
   */
  async capture(target: Link | Tap | string, filter = ""): Promise<Capture> {
    requirePackages("tshark");
    const ifname = typeof target === "string" ? target : target.name;
    const file = path.join(this.dir, `capture-${ifname}-${randomBytes(3).toString("hex")}.pcap`);
    const args = ["-q", "-P", "-i", ifname, "-w", file];
    if (filter) args.push("-f", filter);
    const child = this.spawn("/usr/bin/dumpcap", args);
    await waitForOutput(child, /Capturing on/, 15_000, `dumpcap on ${ifname}`);
    // dumpcap says "Capturing on" before its socket is attached: packets sent in the next
    // few hundred milliseconds were seen missing here. Let it settle before anyone relies on it.
    await new Promise((resolve) => setTimeout(resolve, 750));
    return new Capture(this, child, file);
  }

  /** Stops everything started in the lab and deletes the namespace. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.children].map((c) => this.stop(c, 2000)));
    deleteNamespaceSync(this.name);
    if (!process.env.SLIPWAY_LAB_KEEP) await rm(this.dir, { recursive: true, force: true });
    this.unregister();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`lab ${this.name} is closed`);
  }
}

export class Capture {
  readonly file: string;
  private readonly lab: Lab;
  private readonly child: ChildProcess;

  constructor(lab: Lab, child: ChildProcess, file: string) {
    this.lab = lab;
    this.child = child;
    this.file = file;
  }

  /** Stops capturing; returns the number of packets captured. */
  async stop(): Promise<number> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
      // dumpcap hands captured packets to its writer in batches: give the last batch time to
      // arrive before SIGINT (on which it flushes and closes the file), or it is lost.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      killGroup(this.child, "SIGINT");
      const timer = setTimeout(() => killGroup(this.child, "SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    return countPcapRecords(await readFile(this.file).catch(() => Buffer.alloc(0)));
  }
}

/**
 * Starts counting packets matching `filter` on a link's bridge or a tap; `stop()` on the
 * result ends the capture and gives the count. For "a machine on a link not listed gets
 * nothing" tests.
 */
export function countPackets(target: Link | Tap, filter: string): Promise<Capture> {
  const lab = target instanceof Link ? target.lab : target.link.lab;
  return lab.capture(target, filter);
}

/** Number of records in a classic pcap file (any byte order, µs or ns timestamps). */
export function countPcapRecords(pcap: Buffer): number {
  if (pcap.length < 24) return 0;
  const magic = pcap.readUInt32LE(0);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new Error("not a classic pcap file");
  let count = 0;
  let off = 24;
  while (off + 16 <= pcap.length) {
    const incl = le ? pcap.readUInt32LE(off + 8) : pcap.readUInt32BE(off + 8);
    if (off + 16 + incl > pcap.length) break; // truncated last record
    off += 16 + incl;
    count++;
  }
  return count;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // gone
    }
  }
}

/** Resolves once the child's stdout or stderr shows `pattern`; rejects if it exits first or times out. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const done = (err?: Error) => {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.stderr?.off("data", onData);
      child.off("exit", onChildExit);
      if (err) reject(err);
      else resolve(seen);
    };
    const onData = (d: Buffer) => {
      seen += d.toString("utf8");
      if (pattern.test(seen)) done();
    };
    const onChildExit = (code: number | null, signal: string | null) =>
      done(new Error(`${what} exited (${code ?? signal}) before ready: ${seen.trim().slice(-2000)}`));
    const timer = setTimeout(() => done(new Error(`${what} not ready after ${timeoutMs} ms: ${seen.trim().slice(-2000)}`)), timeoutMs);
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", onChildExit);
  });
}

/** Creates a lab: a fresh network namespace named slw-[label-]<random> with loopback up. */
export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  if (process.getuid?.() !== 0) throw new Error("the lab harness needs root (network namespaces, taps)");
  requirePackages("iproute2");
  if (!swept) {
    swept = true;
    sweepStaleLabs();
  }
  const label = (opts.name ?? "").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 20);
  const name = `slw-${label ? `${label}-` : ""}${randomBytes(4).toString("hex")}`;
  const dir = await mkdtemp(path.join(tmpdir(), `${name}-`));
  mkdirSync(OWNER_DIR, { recursive: true });
  // Written whole (temp + rename) so a concurrent sweep never reads half a record.
  const record = path.join(OWNER_DIR, name);
  writeFileSync(`${record}.tmp`, JSON.stringify({ pid: process.pid, dir, created: Date.now() } satisfies OwnerRecord) + "\n");
  renameSync(`${record}.tmp`, record);
  await run("ip", ["netns", "add", name]);
  const lab = new Lab(name, dir);
  try {
    await lab.exec("ip", ["link", "set", "lo", "up"]);
  } catch (e) {
    await lab.close();
    throw e;
  }
  return lab;
}
