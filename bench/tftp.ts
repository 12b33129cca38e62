/**
 * TFTP throughput: Slipway against tftpd-hpa and dnsmasq (lock-step, curl) and against atftpd
 * (RFC 7440 windowsize 16, atftp) — a benchmark to read, not a test: nothing here fails on a
 * number. Every server serves the same 16 MiB file from disk at blksize 1468 on 127.0.0.1:69
 * inside a network namespace of its own (dnsmasq's TFTP port cannot be changed, and nothing
 * else on the machine is disturbed). Rounds alternate the servers so drift in the machine's
 * load hits all of them alike; the table shows medians.
 *
 * Run as root on Debian:
 *   apt-get install -y curl atftp tftpd-hpa dnsmasq-base
 *   node --disable-warning=ExperimentalWarning bench/tftp.ts [--rounds N] [--clients N] [--only slipway,atftpd] [--cpu-prof] [--baseline DIR] [--floor]
 *
 * --baseline DIR adds another copy of Slipway (DIR is its checkout, e.g. the code before a
 * change) as a column of its own, measured in the same rounds: before and after from one run.
 * --floor adds the Node yardstick (bench/tftp-slipway.ts --floor): a bare one-thread sender on
 * Node's dgram, the least any TFTP server in Node can spend per datagram.
 *
 * Besides MB/s it reports each server's CPU time per MB sent: every server runs in a cgroup
 * of its own (cgroup v2 `cpu.stat`), which counts its threads and its children — tftpd-hpa
 * forks one per transfer. On a shared machine that moves less than throughput does.
 * --cpu-prof runs Slipway under Node's --cpu-prof and prints where its time went (the
 * figures are slowed by it).
 *
 * atftpd conflicts with tftpd-hpa as a package, so it is fetched with `apt-get download` and
 * unpacked with `dpkg -x` into a cache folder ($TMPDIR/slipway-bench-atftpd), never installed.
 * tftpd-hpa's own service is not used: an instance of in.tftpd is started in the namespace.
 */

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));

const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const ROUNDS = flag("--rounds", 3);
const ONLY = args.includes("--only") ? args[args.indexOf("--only") + 1].split(",") : null;
const CPU_PROF = args.includes("--cpu-prof");
const BASELINE = args.includes("--baseline") ? path.resolve(args[args.indexOf("--baseline") + 1]) : null;
const FLOOR = args.includes("--floor");
const CLIENTS = flag("--clients", 100);
const SIZE = 16 * 1024 * 1024;
const MB = 1e6;

type Kind = "slipway" | "baseline" | "floor" | "tftpd-hpa" | "dnsmasq" | "atftpd";
type Server = { group: string; stop(): Promise<void> };

const ns = `slw-bench-${randomBytes(3).toString("hex")}`;
const inNs = (cmd: string, cmdArgs: string[]): [string, string[]] => ["ip", ["netns", "exec", ns, cmd, ...cmdArgs]];

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("Cannot run the TFTP benchmark: it needs root for its network namespace");
  for (const tool of ["curl", "atftp", "in.tftpd", "dnsmasq"]) {
    if (!["/usr/bin", "/usr/sbin", "/bin", "/sbin"].some((d) => existsSync(path.join(d, tool)))) {
      throw new Error(`Cannot run the TFTP benchmark: ${tool} is missing (apt-get install -y curl atftp tftpd-hpa dnsmasq-base)`);
    }
  }
  const atftpd = await atftpdBinary();
  const dir = await mkdtemp(path.join(os.tmpdir(), "slipway-bench-tftp-"));
  const profileDir = path.join(os.tmpdir(), `slipway-bench-tftp-profile-${ns}`); // not in dir: every file there is served
  const slipwayNode = ["--disable-warning=ExperimentalWarning", ...(CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [])];
  const content = randomBytes(SIZE);
  await writeFile(path.join(dir, "f16"), content);
  await writeFile(path.join(dir, "probe"), "ok");
  // tftpd-hpa and atftpd read as another user in some set-ups: keep the folder world-readable.
  await chmod(dir, 0o755);
  await run("ip", ["netns", "add", ns]);
  try {
    await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
    // in.tftpd resolves its address with AI_ADDRCONFIG, which finds nothing in a namespace
    // with loopback alone: a veth pair with an address gives it one. Traffic stays on lo.
    await run("ip", ["-n", ns, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"]);
    await run("ip", ["-n", ns, "addr", "add", "10.250.0.1/24", "dev", "bench0"]);
    await run("ip", ["-n", ns, "link", "set", "bench0", "up"]);
    const starters: Record<Kind, () => Promise<Server>> = {
      slipway: () => start(inNs(process.execPath, [...slipwayNode, path.join(here, "tftp-slipway.ts"), dir, "69"])),
      baseline: () => start(inNs(process.execPath, ["--disable-warning=ExperimentalWarning", path.join(BASELINE ?? here, "bench", "tftp-slipway.ts"), dir, "69"])),
      floor: () => start(inNs(process.execPath, ["--disable-warning=ExperimentalWarning", path.join(here, "tftp-slipway.ts"), "--floor", dir, "69"])),
      "tftpd-hpa": () => start(inNs("in.tftpd", ["--foreground", "--user", "root", "--secure", "--address", "127.0.0.1:69", dir])),
      dnsmasq: () =>
        start(
          inNs("dnsmasq", [
            "--keep-in-foreground", "--port=0", "--enable-tftp", `--tftp-root=${dir}`, "--tftp-max=1024", "--conf-file=/dev/null",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--user=root", "--pid-file", "--quiet-tftp", "--log-facility=/dev/null",
          ]),
        ),
      atftpd: () =>
        start(inNs(atftpd, ["--daemon", "--no-fork", "--port", "69", "--bind-address", "127.0.0.1", "--user", "root", "--group", "root", "--maxthread", "1024", "--logfile", "/dev/null", dir])),
    };

    // Each server must deliver the file intact before its speed means anything.
    const want = sha256(content);
    const kinds = (["slipway", "baseline", "floor", "tftpd-hpa", "dnsmasq", "atftpd"] as Kind[]).filter((k) =>
      k === "baseline" ? BASELINE !== null : k === "floor" ? FLOOR : !ONLY || ONLY.includes(k),
    );
    for (const kind of kinds) {
      const server = await starters[kind]();
      const out = path.join(dir, `check-${kind}`);
      await run(...inNs("curl", ["-sS", "--max-time", "60", "tftp://127.0.0.1/f16", "--tftp-blksize", "1468", "-o", out]));
      const got = sha256(await readFile(out));
      await rm(out);
      await server.stop();
      if (got !== want) throw new Error(`${kind} served a corrupt copy of the file`);
    }

    const one: Record<string, number[]> = {};
    const many: Record<string, number[]> = {};
    const window: Record<string, number[]> = {};
    const push = (table: Record<string, number[]>, kind: string, v: number) => (table[kind] ??= []).push(v);
    // Server CPU seconds and bytes sent, by case and server, summed over every round.
    const cpu: Record<string, { seconds: number; bytes: number }> = {};
    const measured = async <T,>(server: Server, key: string, bytes: number, f: () => Promise<T>): Promise<T> => {
      const before = await cpuSeconds(server.group);
      const out = await f();
      await new Promise((r) => setTimeout(r, 100)); // the final ACK, and a forked child's exit
      const used = (await cpuSeconds(server.group)) - before;
      const c = (cpu[key] ??= { seconds: 0, bytes: 0 });
      c.seconds += used;
      c.bytes += bytes;
      return out;
    };
    for (let round = 1; round <= ROUNDS; round++) {
      for (const kind of kinds) {
        const server = await starters[kind]();
        if (kind !== "atftpd") {
          for (let i = 0; i < 3; i++) push(one, kind, await measured(server, `one ${kind}`, SIZE, curlOnce));
          push(many, kind, await measured(server, `many ${kind}`, CLIENTS * SIZE, () => curlMany(CLIENTS)));
        }
        if (kind !== "tftpd-hpa" && kind !== "dnsmasq") for (let i = 0; i < 3; i++) push(window, kind, await measured(server, `window ${kind}`, SIZE, () => atftpWindow(16)));
        await server.stop();
        process.stderr.write(`[bench] round ${round}/${ROUNDS} ${kind} done\n`);
      }
    }

    const m = (t: Record<string, number[]>, k: string) => median(t[k] ?? []);
    const cases: { key: string; label: string; slipway: number; anchors: [string, number][] }[] = [
      { key: "one", label: "1 client, curl", slipway: m(one, "slipway"), anchors: [["tftpd-hpa", m(one, "tftpd-hpa")], ["dnsmasq", m(one, "dnsmasq")]] },
      { key: "many", label: `${CLIENTS} clients at once, curl (sum)`, slipway: m(many, "slipway"), anchors: [["tftpd-hpa", m(many, "tftpd-hpa")], ["dnsmasq", m(many, "dnsmasq")]] },
      { key: "window", label: "1 client, atftp windowsize 16", slipway: m(window, "slipway"), anchors: [["atftpd", m(window, "atftpd")]] },
    ];
    console.log(`\nTFTP throughput: 16 MiB file, blksize 1468, loopback in a namespace. MB/s (10^6 bytes/s), median of ${ROUNDS} rounds`);
    console.log(`(1-client cases: 3 transfers a round. ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? "?"}, Linux ${os.release()}, Node ${process.version})\n`);
    const line = (cells: string[]) => console.log(cells.map((c, i) => (i === 0 ? c.padEnd(34) : c.padStart(14))).join(" "));
    const others = [...(BASELINE ? ["baseline"] : []), ...(FLOOR ? ["floor"] : []), "tftpd-hpa", "dnsmasq", "atftpd"];
    line(["case", "Slipway", ...others, "vs best"]);
    for (const c of cases) {
      const cell = (name: string) => {
        const v = name === "baseline" || name === "floor" ? m(c.key === "one" ? one : c.key === "many" ? many : window, name) : c.anchors.find(([n]) => n === name)?.[1];
        return v === undefined ? "-" : `${v.toFixed(1)} (${(c.slipway / v).toFixed(2)}x)`;
      };
      const best = Math.max(...c.anchors.map(([, v]) => v));
      line([c.label, c.slipway.toFixed(1), ...others.map(cell), `${(c.slipway / best).toFixed(2)}x`]);
    }
    console.log("\n(N.NNx) = Slipway / that server; the goal is >= 1.00x the best anchor (not the baseline or floor) of each case.");
    console.log(`\nServer CPU ms per MB sent (user + system, all rounds; lower is better):\n`);
    line(["case", "Slipway", ...others, ""]);
    for (const c of cases) {
      const cell = (name: string) => {
        const u = cpu[`${c.key} ${name}`];
        return u ? ((1000 * u.seconds) / (u.bytes / MB)).toFixed(2) : "-";
      };
      line([c.label, cell("slipway"), ...others.map(cell), ""]);
    }
    console.log(`\nload average at end ${(await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ")} (other work on the machine skews MB/s)`);
    const rounded = JSON.stringify({ one, many, window }, (_k, v) => (typeof v === "number" ? Math.round(v * 10) / 10 : v));
    console.log(`samples (MB/s): ${rounded}`);
    if (CPU_PROF) {
      const files = existsSync(profileDir) ? readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile")) : [];
      console.log(`\nSlipway CPU profile (--cpu-prof, ${files.length} server runs; the figures above are slowed by it):`);
      console.log(files.length ? summarizeProfiles(files.map((f) => path.join(profileDir, f))) : "no .cpuprofile was written");
    }
  } finally {
    await run("ip", ["netns", "del", ns]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
    await rm(profileDir, { recursive: true, force: true });
  }
}

/** Starts a server in a cgroup of its own and waits until it serves the probe file. */
async function start([cmd, cmdArgs]: [string, string[]]): Promise<Server> {
  const group = path.join(CGROUPS, `${ns}-${++groups}`);
  await mkdir(group);
  const child: ChildProcess = spawn(cmd, cmdArgs, { stdio: ["ignore", "ignore", "pipe"] });
  // `ip netns exec` execs the server in this very process, which forks nothing before its
  // first request: joining now puts the server and all it ever starts in the group.
  await writeFile(path.join(group, "cgroup.procs"), String(child.pid));
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const removeGroup = async (): Promise<void> => {
    // A group can be removed once its last process (a tftpd-hpa child finishing) is gone.
    for (let i = 0; i < 50; i++) {
      try {
        await rmdir(group);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  for (let i = 0; ; i++) {
    try {
      await run(...inNs("curl", ["-s", "--max-time", "1", "tftp://127.0.0.1/probe", "-o", "/dev/null"]));
      break;
    } catch {
      if (child.exitCode !== null || i > 50) {
        child.kill("SIGKILL");
        await exited;
        await removeGroup();
        throw new Error(`Cannot start ${cmdArgs.slice(3, 4).join(" ")}: ${stderr.trim() || "it does not answer"}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    group,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(timer);
      }
      await removeGroup();
    },
  };
}

/**
 * The cgroup v2 hierarchy: /sys/fs/cgroup on a pure v2 system, /sys/fs/cgroup/unified on a
 * hybrid one. Each server gets a group of its own there, so its CPU time includes every thread
 * and every child, also those that already exited.
 */
const CGROUPS = existsSync("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
let groups = 0;

/** CPU seconds used by the processes of a cgroup (usage_usec: user + system). */
async function cpuSeconds(group: string): Promise<number> {
  const stat = await readFile(path.join(group, "cpu.stat"), "utf8");
  return Number(/^usage_usec (\d+)$/m.exec(stat)?.[1]) / 1e6;
}

type ProfileNode = { id: number; callFrame: { functionName: string; url: string; lineNumber: number } };

/** Self time by function and by file over every profile, as shares of the busy (non-idle) time. */
function summarizeProfiles(files: string[]): string {
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  const root = path.resolve(here, "..") + "/";
  let busy = 0;
  let total = 0;
  for (const file of files) {
    const prof = JSON.parse(readFileSync(file, "utf8")) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
    const nodes = new Map(prof.nodes.map((n) => [n.id, n.callFrame]));
    prof.samples.forEach((id, i) => {
      const us = prof.timeDeltas[i] ?? 0;
      const cf = nodes.get(id)!;
      total += us;
      if (cf.functionName === "(idle)") return;
      busy += us;
      const url = cf.url.replace(/^file:\/\//, "").replace(root, "");
      const fn = `${cf.functionName || "(anonymous)"} ${url ? `${url}:${cf.lineNumber + 1}` : ""}`.trim();
      byFn.set(fn, (byFn.get(fn) ?? 0) + us);
      const where = url || cf.functionName;
      byFile.set(where, (byFile.get(where) ?? 0) + us);
    });
  }
  const top = (m: Map<string, number>, n: number) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, us]) => `  ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${k}`).join("\n");
  return `busy ${(busy / 1e6).toFixed(1)} s of ${(total / 1e6).toFixed(1)} s profiled; share of busy time, by function (self):\n${top(byFn, 25)}\nby file:\n${top(byFile, 12)}`;
}

/** One curl download; MB/s from curl's own transfer time. */
async function curlOnce(): Promise<number> {
  const { stdout } = await run(...inNs("curl", ["-sS", "--max-time", "120", "tftp://127.0.0.1/f16", "--tftp-blksize", "1468", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]));
  const [seconds, bytes] = stdout.trim().split(" ").map(Number);
  if (bytes !== SIZE) throw new Error(`curl fetched ${bytes} bytes, not ${SIZE}`);
  return bytes / seconds / MB;
}

/** `n` curl downloads at once; aggregate MB/s over the wall time until the last finishes. */
async function curlMany(n: number): Promise<number> {
  const script = `
    pids=""
    for i in $(seq ${n}); do
      curl -s --max-time 600 tftp://127.0.0.1/f16 --tftp-blksize 1468 -o /dev/null -w '%{size_download}\\n' > "$1/many-$i" &
      pids="$pids $!"
    done
    failed=0
    for p in $pids; do wait $p || failed=$((failed + 1)); done
    echo $failed`;
  const dir = await mkdtemp(path.join(os.tmpdir(), "slipway-bench-many-"));
  try {
    const t0 = performance.now();
    const { stdout } = await run(...inNs("bash", ["-c", script, "bash", dir]));
    const seconds = (performance.now() - t0) / 1000;
    const failed = Number(stdout.trim());
    const sizes = await Promise.all(readdirSync(dir).map(async (f) => Number((await readFile(path.join(dir, f), "utf8")).trim())));
    const short = sizes.filter((s) => s !== SIZE).length;
    if (failed > 0 || short > 0) throw new Error(`${failed} of ${n} concurrent curl downloads failed, ${short} short`);
    return (n * SIZE) / seconds / MB;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One atftp download with windowsize `w`; MB/s over the process's wall time. */
async function atftpWindow(w: number): Promise<number> {
  const t0 = performance.now();
  await run(...inNs("atftp", ["--option", `windowsize ${w}`, "--option", "blksize 1468", "-g", "-r", "f16", "-l", "/dev/null", "127.0.0.1", "69"]));
  return SIZE / ((performance.now() - t0) / 1000) / MB;
}

/** atftpd's binary, unpacked from its Debian package into a cache folder on first use. */
async function atftpdBinary(): Promise<string> {
  const cache = path.join(os.tmpdir(), "slipway-bench-atftpd");
  const binary = path.join(cache, "root", "usr", "sbin", "atftpd");
  if (existsSync(binary)) return binary;
  await mkdir(cache, { recursive: true });
  await run("apt-get", ["download", "atftpd"], { cwd: cache });
  const deb = readdirSync(cache).find((f) => f.startsWith("atftpd_") && f.endsWith(".deb"));
  if (!deb) throw new Error("Cannot fetch atftpd: apt-get download left no package (run apt-get update?)");
  await run("dpkg", ["-x", path.join(cache, deb), path.join(cache, "root")]);
  return binary;
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

await main();
