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
 *   node --disable-warning=ExperimentalWarning bench/tftp.ts [--rounds N] [--clients N]
 *
 * atftpd conflicts with tftpd-hpa as a package, so it is fetched with `apt-get download` and
 * unpacked with `dpkg -x` into a cache folder ($TMPDIR/slipway-bench-atftpd), never installed.
 * tftpd-hpa's own service is not used: an instance of in.tftpd is started in the namespace.
 */

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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
const CLIENTS = flag("--clients", 100);
const SIZE = 16 * 1024 * 1024;
const MB = 1e6;

type Kind = "slipway" | "tftpd-hpa" | "dnsmasq" | "atftpd";
type Server = { stop(): Promise<void> };

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
      slipway: () => start(inNs(process.execPath, ["--disable-warning=ExperimentalWarning", path.join(here, "tftp-slipway.ts"), dir, "69"])),
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
    for (const kind of Object.keys(starters) as Kind[]) {
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
    for (let round = 1; round <= ROUNDS; round++) {
      for (const kind of ["slipway", "tftpd-hpa", "dnsmasq", "atftpd"] as Kind[]) {
        const server = await starters[kind]();
        if (kind !== "atftpd") {
          for (let i = 0; i < 3; i++) push(one, kind, await curlOnce());
          push(many, kind, await curlMany(CLIENTS));
        }
        if (kind === "slipway" || kind === "atftpd") for (let i = 0; i < 3; i++) push(window, kind, await atftpWindow(16));
        await server.stop();
        process.stderr.write(`[bench] round ${round}/${ROUNDS} ${kind} done\n`);
      }
    }

    const m = (t: Record<string, number[]>, k: string) => median(t[k] ?? []);
    const cases: { label: string; slipway: number; anchors: [string, number][] }[] = [
      { label: "1 client, curl", slipway: m(one, "slipway"), anchors: [["tftpd-hpa", m(one, "tftpd-hpa")], ["dnsmasq", m(one, "dnsmasq")]] },
      { label: `${CLIENTS} clients at once, curl (sum)`, slipway: m(many, "slipway"), anchors: [["tftpd-hpa", m(many, "tftpd-hpa")], ["dnsmasq", m(many, "dnsmasq")]] },
      { label: "1 client, atftp windowsize 16", slipway: m(window, "slipway"), anchors: [["atftpd", m(window, "atftpd")]] },
    ];
    console.log(`\nTFTP throughput: 16 MiB file, blksize 1468, loopback in a namespace. MB/s (10^6 bytes/s), median of ${ROUNDS} rounds`);
    console.log(`(1-client cases: 3 transfers a round. ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? "?"}, Linux ${os.release()}, Node ${process.version})\n`);
    const line = (cells: string[]) => console.log(cells.map((c, i) => (i === 0 ? c.padEnd(34) : c.padStart(14))).join(" "));
    line(["case", "Slipway", "tftpd-hpa", "dnsmasq", "atftpd", "vs best"]);
    for (const c of cases) {
      const cell = (name: string) => {
        const v = c.anchors.find(([n]) => n === name)?.[1];
        return v === undefined ? "-" : `${v.toFixed(1)} (${(c.slipway / v).toFixed(2)}x)`;
      };
      const best = Math.max(...c.anchors.map(([, v]) => v));
      line([c.label, c.slipway.toFixed(1), cell("tftpd-hpa"), cell("dnsmasq"), cell("atftpd"), `${(c.slipway / best).toFixed(2)}x`]);
    }
    console.log("\n(N.NNx) = Slipway / that server; the goal is >= 1.00x the best anchor of each case.");
    const rounded = JSON.stringify({ one, many, window }, (_k, v) => (typeof v === "number" ? Math.round(v * 10) / 10 : v));
    console.log(`samples (MB/s): ${rounded}`);
  } finally {
    await run("ip", ["netns", "del", ns]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

/** Starts a server and waits until it serves the probe file. */
async function start([cmd, cmdArgs]: [string, string[]]): Promise<Server> {
  const child: ChildProcess = spawn(cmd, cmdArgs, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let i = 0; ; i++) {
    try {
      await run(...inNs("curl", ["-s", "--max-time", "1", "tftp://127.0.0.1/probe", "-o", "/dev/null"]));
      break;
    } catch {
      if (child.exitCode !== null || i > 50) {
        child.kill("SIGKILL");
        throw new Error(`Cannot start ${cmdArgs.slice(3, 4).join(" ")}: ${stderr.trim() || "it does not answer"}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
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
