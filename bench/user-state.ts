/**
 * Benchmark (not a test): user-state capture and restore through a real state migration point,
 * against plain GNU tar writing the same files to the same disk (issue 14, "Speed and scale":
 * goal ≥ 0.7× for capture and for restore; SMP memory flat during 20 concurrent uploads).
 *
 *   export PATH="$PWD/.tools/node/bin:$PATH"   # from the repository's root, as root
 *   node --disable-warning=ExperimentalWarning bench/user-state.ts [--mib 1024] [--rounds 3]
 *        [--concurrent 20] [--concurrent-mib 50] [--only speed|memory] [--site-cpu-prof DIR]
 *
 * Data (once per run, in a temporary folder under /var/tmp, the same disk as the site's data
 * folder): an "old system root" with /etc/passwd and /etc/group naming alice (1000) and bob
 * (1001), and their homes: 62.5 % of --mib in small files of 1–64 KiB, ~50 to a folder, three
 * folders deep (20k files at 1024 MiB), the rest in three large files (128 MiB each at 1024);
 * half the small files and one large file are text (random words: zstd makes them ~4× smaller),
 * the rest random bytes. Every file and folder is owned by its user.
 *
 * Slipway's path is the agent's own (src/agent/steps/capture-user-state.ts and
 * restore-user-state.ts), minus the mount: `captureUserState` over the root → zlib zstd →
 * `sealStream` → each sealed chunk PUT by the agent's MpClient (`userStateClient`: mutual
 * TLS, keep-alive) to the management point of a real site (`startTestSite` in a child process,
 * bench/user-state-site.ts; the built-in state store fsyncs each chunk before answering), then
 * POST …/captured. A fresh enrolled device per round, whose deployment's task sequence is
 * capture-user-state + restore-user-state; the run reports step 0 (or 1) started before the
 * grant, as an agent does. Restore: grant → GET each chunk → `openStream` → zstd decompress →
 * `restoreUserState` into an empty new root (with its own /etc/passwd) → POST …/restored →
 * `sync -f` of the target's file system.
 *
 * The anchor, same files, same disk: capture `tar -c -C ROOT home | dd of=FILE bs=1M
 * conv=fsync`; restore `tar -x -C DST < FILE; sync -f DST`. Before every measured step of
 * either side: `sync; echo 3 > /proc/sys/vm/drop_caches`, so each reads cold.
 *
 * Rounds (default 3) alternate the order: even rounds anchor capture, Slipway capture, anchor
 * restore, Slipway restore; odd rounds Slipway first in each pair. MB/s = the files' bytes
 * (10^6) ÷ wall seconds. Per step it also prints CPU seconds of this process with its children
 * (the "machine": capture, tar, zstd, TLS client) and of the site process (the SMP), and the
 * site's largest RSS.
 *
 * --parts adds, after the rounds, the capture and the restore cut short after each stage (tar
 * alone, + zstd, + sealing, + upload; GET alone, + opening, + decompressing, + tar -x), each
 * read cold, to show where the time goes. The rounds run the agent's own transfer code
 * (src/agent/user-state/transfer.ts: zstd level 1 in 1 MiB pieces, one upload in flight, the
 * next chunk fetched ahead); --zstd-level N and --zstd-chunk BYTES are what-ifs for --parts'
 * zstd stages only, printed at the top when given.
 *
 * Memory: --concurrent devices (default 20) capture a --concurrent-mib tree (default 50, mostly
 * random bytes, so the upload is about as large) at the same time, each its own association;
 * the site process's VmRSS is sampled every 200 ms: before, largest during, after.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pipeline, Readable } from "node:stream";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { constants as zlibConstants, createZstdCompress, createZstdDecompress, type ZstdOptions } from "node:zlib";
import { captureUserState } from "../src/agent/user-state/capture.ts";
import { restoreUserState } from "../src/agent/user-state/restore.ts";
import { sealStream, openStream } from "../src/security/state-cipher.ts";
import { MpClient } from "../src/agent/mp-client.ts";
import { userStateClient } from "../src/agent/user-state-client.ts";
import { receiveUserState, sendUserState, ZSTD_CAPTURE, ZSTD_RESTORE } from "../src/agent/user-state/transfer.ts";
import { newMachine, enrollApproved, type TestMachine } from "../test/support/device.ts";
import { httpsRequest, type TestSite } from "../test/support/site.ts";
import { onExit } from "../test/lab/cleanup.ts";
import { makeTree, writeAccounts, type Tree } from "./user-state-data.ts";

const { values: argv } = parseArgs({
  options: {
    mib: { type: "string", default: "1024" },
    rounds: { type: "string", default: "3" },
    concurrent: { type: "string", default: "20" },
    "concurrent-mib": { type: "string", default: "50" },
    only: { type: "string" },
    "site-cpu-prof": { type: "string" },
    keep: { type: "boolean", default: false },
    parts: { type: "boolean", default: false },
    "zstd-level": { type: "string" },
    "zstd-chunk": { type: "string" },
  },
});
const MIB = Number(argv.mib);
const ROUNDS = Number(argv.rounds);
const CONCURRENT = Number(argv.concurrent);
const CONCURRENT_MIB = Number(argv["concurrent-mib"]);
/** The agent's own zstd options, with what-if overrides (--zstd-chunk, --zstd-level). */
const ZSTD_OPTIONS: ZstdOptions = {
  ...ZSTD_CAPTURE,
  ...(argv["zstd-chunk"] ? { chunkSize: Number(argv["zstd-chunk"]) } : {}),
  ...(argv["zstd-level"] ? { params: { [zlibConstants.ZSTD_c_compressionLevel]: Number(argv["zstd-level"]) } } : {}),
};
const HERE = path.dirname(fileURLToPath(import.meta.url));

if (process.getuid?.() !== 0) {
  console.error("bench/user-state.ts runs as root (drop_caches, file owners)");
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Measuring

function sh(script: string): void {
  execFileSync("sh", ["-c", script], { stdio: ["ignore", "ignore", "inherit"] });
}

function dropCaches(): void {
  sh("sync; echo 3 > /proc/sys/vm/drop_caches");
}

const TICK = 100; // USER_HZ on Linux

/** CPU seconds of a process (self: also its waited-for children, i.e. tar, sh, dd). */
function cpuOf(pid: number | "self", withChildren: boolean): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields after the name: state(0) … utime(11) stime(12) cutime(13) cstime(14)
  const t = Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0);
  return t / TICK;
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Samples the site's RSS every 200 ms; `max` since the last `reset`. */
class RssSampler {
  max = 0;
  samples: { at: number; rss: number }[] = [];
  readonly pid: number;
  #timer: NodeJS.Timeout;
  constructor(pid: number) {
    this.pid = pid;
    this.#timer = setInterval(() => this.sample(), 200);
    this.#timer.unref();
  }
  sample(): number {
    let rss = 0;
    try {
      rss = rssOf(this.pid);
    } catch {
      return 0;
    }
    this.max = Math.max(this.max, rss);
    this.samples.push({ at: performance.now(), rss });
    return rss;
  }
  reset(): void {
    this.max = 0;
    this.samples = [];
    this.sample();
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

type Step = { seconds: number; machineCpu: number; siteCpu: number; siteRssMax: number; note?: string };

async function measure(site: SiteProcess, fn: () => Promise<string | void>): Promise<Step> {
  dropCaches();
  site.rss.reset();
  const cpu0 = cpuOf("self", true);
  const site0 = cpuOf(site.pid, false);
  const t0 = performance.now();
  const note = await fn();
  const seconds = (performance.now() - t0) / 1000;
  site.rss.sample();
  return { seconds, machineCpu: cpuOf("self", true) - cpu0, siteCpu: cpuOf(site.pid, false) - site0, siteRssMax: site.rss.max, note: note || undefined };
}

// ---------------------------------------------------------------------------------------------
// The site (child process) and its devices

type SiteProcess = { child: ChildProcess; pid: number; t: Pick<TestSite, "ca" | "adminToken" | "request"> & { mp: { url: string } }; dataDir: string; rss: RssSampler };

async function startSite(): Promise<SiteProcess> {
  const prof = argv["site-cpu-prof"] ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(argv["site-cpu-prof"])}`] : [];
  const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", ...prof, path.join(HERE, "user-state-site.ts")], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, SLIPWAY_LOG_LEVEL: "warn" },
  });
  const line = await new Promise<string>((resolve, reject) => {
    let buf = "";
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    child.on("exit", (code) => reject(new Error(`the site process exited (${code}) before it was up`)));
  });
  const info = JSON.parse(line) as { url: string; mpUrl: string; ca: string; adminToken: string; dataDir: string };
  const request: TestSite["request"] = (method, p, o = {}) => httpsRequest(info.url, info.ca, method, p, o);
  return { child, pid: child.pid!, dataDir: info.dataDir, rss: new RssSampler(child.pid!), t: { ca: info.ca, adminToken: info.adminToken, request, mp: { url: info.mpUrl } } };
}

async function stopSite(s: SiteProcess): Promise<void> {
  s.rss.stop();
  const exited = new Promise((r) => s.child.once("exit", r));
  s.child.stdin!.end();
  await exited;
}

async function setUpDeployment(s: SiteProcess): Promise<string> {
  const admin = async (method: string, p: string, body?: unknown) => {
    const r = await s.t.request(method, p, { token: s.t.adminToken, body });
    if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${r.text}`);
    return r.body;
  };
  await admin("POST", "/api/v1/collections", { name: "Refresh lab" });
  await admin("POST", "/api/v1/task-sequences", { document: { name: "Refresh", steps: [{ name: "Capture", type: "capture-user-state" }, { name: "Restore", type: "restore-user-state" }] } });
  const dep = await admin("POST", "/api/v1/deployments", { name: "Refresh", taskSequence: "Refresh", collection: "Refresh lab", purpose: "available", bootPaths: ["pxe", "media"] });
  return dep.id as string;
}

type Device = { m: TestMachine; client: MpClient };
let deviceCount = 0;

async function newDevice(s: SiteProcess): Promise<Device> {
  const n = ++deviceCount;
  const hex = n.toString(16).padStart(4, "0");
  const ids = { macs: [`52:54:00:7a:${hex.slice(0, 2)}:${hex.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00007a00${hex}` };
  const r = await s.t.request("POST", "/api/v1/devices", { token: s.t.adminToken, body: { name: `us-bench-${n}`, ...ids, state: "approved", collections: ["Refresh lab"] } });
  if (r.status !== 201) throw new Error(`device ${n}: ${r.status} ${r.text}`);
  const m = await newMachine(s.t as TestSite, ids);
  const e = await enrollApproved(s.t as TestSite, m);
  if (e.status !== 201) throw new Error(`enroll ${n}: ${e.status} ${e.text}`);
  const client = new MpClient(s.t.mp.url, s.t.ca);
  client.setIdentity({ keyPem: m.keyPem, certPem: m.certPem! });
  return { m, client };
}

/** A run of the deployment with `step` reported started, as the agent does before the step runs. */
async function runAt(d: Device, depId: string, step: string): Promise<string> {
  const run = await d.m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
  if (run.status !== 201 && run.status !== 200) throw new Error(`run: ${run.status} ${run.text}`);
  const ev = await d.m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step, state: "started" });
  if (ev.status !== 201) throw new Error(`event: ${ev.status} ${ev.text}`);
  return run.body.id as string;
}

// ---------------------------------------------------------------------------------------------
// Slipway's capture and restore: the steps' own code, without the mount

async function slipwayCapture(d: Device, runId: string, root: string): Promise<{ stored: number; chunks: number; files: number; bytes: number }> {
  const api = userStateClient(d.client, runId, "0");
  const grant = await api.grant("capture");
  const capture = captureUserState({ root });
  await sendUserState(api, grant, capture.stream);
  const summary = await capture.done;
  const done = await api.captured(grant.association, { files: summary.files, stateBytes: summary.bytes });
  return { stored: done.storedBytes, chunks: done.chunks, files: summary.files, bytes: summary.bytes };
}

async function slipwayRestore(d: Device, runId: string, root: string): Promise<{ files: number; notRestored: number }> {
  const api = userStateClient(d.client, runId, "1");
  const grant = await api.grant("restore");
  const summary = await restoreUserState(receiveUserState(api, grant), { root });
  await api.restored(grant.association, { files: summary.files, notRestored: summary.notRestored.length });
  return { files: summary.files, notRestored: summary.notRestored.length };
}

/** Regular files and their bytes under a folder. */
function countFiles(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    files++;
    bytes += fs.lstatSync(path.join(e.parentPath, e.name)).size;
  }
  return { files, bytes };
}

// ---------------------------------------------------------------------------------------------

const fmt = (n: number, d = 1) => n.toFixed(d);
const mbps = (bytes: number, s: number) => bytes / 1e6 / s;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const mib = (b: number) => `${fmt(b / 1048576, 0)} MiB`;

function describeMachine(): string {
  const load = os.loadavg().map((l) => l.toFixed(2)).join(" ");
  return `nproc ${os.availableParallelism()}, load average ${load}, ${mib(os.totalmem())} RAM, Node ${process.version}, ${execFileSync("tar", ["--version"], { encoding: "utf8" }).split("\n")[0]}`;
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync("/var/tmp/slipway-us-bench-");
  const removeWork = onExit(() => {
    if (!argv.keep) fs.rmSync(work, { recursive: true, force: true });
  });
  console.log(`user-state bench, ${new Date().toISOString()}; ${describeMachine()}`);
  if (argv["zstd-level"] || argv["zstd-chunk"]) {
    console.log(`WHAT-IF for --parts' zstd stages, not the agent's code as it is: ${JSON.stringify({ zstdLevel: argv["zstd-level"], zstdChunk: argv["zstd-chunk"] })}`);
  }
  console.log(`work folder ${work} (${execFileSync("df", ["--output=source", work], { encoding: "utf8" }).split("\n")[1]}); site data folder under ${os.tmpdir()} (${execFileSync("df", ["--output=source", os.tmpdir()], { encoding: "utf8" }).split("\n")[1]})`);
  const site = await startSite();
  const stopSiteAtExit = onExit(() => site.child.kill("SIGKILL"));
  try {
    const depId = await setUpDeployment(site);
    console.log(`site process ${site.pid}, RSS ${mib(rssOf(site.pid))} after start`);

    if (argv.only !== "memory") await speed(site, depId, work);
    if (argv.only !== "speed") await memory(site, depId, work);
  } finally {
    await stopSite(site);
    stopSiteAtExit();
    if (!argv.keep) fs.rmSync(work, { recursive: true, force: true });
    removeWork();
  }
}

async function speed(site: SiteProcess, depId: string, work: string): Promise<void> {
  const src = path.join(work, "old");
  const t0 = performance.now();
  const tree = makeTree(src, MIB, { seed: 1, textShare: 0.5, large: 3 });
  sh("sync");
  console.log(`\ndata: ${tree.files} files, ${fmt(tree.bytes / 1e6, 0)} MB (${fmt((100 * tree.textBytes) / tree.bytes, 0)} % text, the rest random) in ${fmt((performance.now() - t0) / 1000)} s`);

  const anchorFile = path.join(work, "anchor.tar");
  const anchorDst = path.join(work, "new-anchor");
  const slipwayDst = path.join(work, "new-slipway");
  const rounds: Round[] = [];
  const row = (name: string, s: Step) =>
    `  ${name.padEnd(18)} ${fmt(s.seconds, 2).padStart(7)} s ${fmt(mbps(tree.bytes, s.seconds)).padStart(7)} MB/s   machine CPU ${fmt(s.machineCpu, 1).padStart(5)} s   site CPU ${fmt(s.siteCpu, 1).padStart(5)} s   site RSS max ${mib(s.siteRssMax).padStart(8)}${s.note ? `   ${s.note}` : ""}`;
  for (let i = 0; i < ROUNDS; i++) {
    const d = await newDevice(site);
    const capRun = await runAt(d, depId, "0");
    fs.rmSync(anchorDst, { recursive: true, force: true });
    fs.rmSync(slipwayDst, { recursive: true, force: true });
    fs.mkdirSync(anchorDst);
    writeAccounts(slipwayDst);

    const anchorCapture = () => measure(site, async () => {
      sh(`tar -c -C '${src}' home | dd of='${anchorFile}' bs=1M conv=fsync status=none`);
      return `${mib(fs.statSync(anchorFile).size)} written`;
    });
    const ourCapture = () => measure(site, async () => {
      const c = await slipwayCapture(d, capRun, src);
      if (c.files !== tree.files || c.bytes !== tree.bytes) throw new Error(`captured ${c.files} files, ${c.bytes} bytes; the tree has ${tree.files}, ${tree.bytes}`);
      return `${mib(c.stored)} stored in ${c.chunks} chunks (${fmt(c.stored / c.bytes, 2)} of the files' bytes)`;
    });
    const anchorRestore = () => measure(site, async () => {
      sh(`tar -x -C '${anchorDst}' < '${anchorFile}' && sync -f '${anchorDst}'`);
    });
    let restoreRun = "";
    const ourRestore = () => measure(site, async () => {
      const r = await slipwayRestore(d, restoreRun, slipwayDst);
      sh(`sync -f '${slipwayDst}'`);
      if (r.notRestored > 0) return `${r.notRestored} not restored`;
    });

    const first = i % 2 === 0 ? "anchor" : "slipway";
    let ac: Step, sc: Step, ar: Step, sr: Step;
    if (first === "anchor") {
      ac = await anchorCapture();
      sc = await ourCapture();
    } else {
      sc = await ourCapture();
      ac = await anchorCapture();
    }
    restoreRun = await runAt(d, depId, "1");
    if (first === "anchor") {
      ar = await anchorRestore();
      sr = await ourRestore();
    } else {
      sr = await ourRestore();
      ar = await anchorRestore();
    }
    // Both restores hold every file with every byte (not timed).
    for (const [name, dir] of [["anchor", anchorDst], ["slipway", slipwayDst]] as const) {
      const got = countFiles(path.join(dir, "home"));
      if (got.files !== tree.files || got.bytes !== tree.bytes) throw new Error(`${name} restored ${got.files} files, ${got.bytes} bytes; the tree has ${tree.files}, ${tree.bytes}`);
    }
    fs.rmSync(anchorFile, { force: true });
    d.client.close();
    d.m.close();
    rounds.push({ ac, sc, ar, sr });
    console.log(`round ${i + 1} (${first} first; load average ${os.loadavg()[0]!.toFixed(2)})`);
    console.log(row("tar | dd  capture", ac));
    console.log(row("slipway   capture", sc));
    console.log(row("tar -x    restore", ar));
    console.log(row("slipway   restore", sr));
    console.log(`  ratio slipway/anchor: capture ${fmt(ac.seconds / sc.seconds, 2)}×, restore ${fmt(ar.seconds / sr.seconds, 2)}×`);
  }
  fs.rmSync(anchorDst, { recursive: true, force: true });
  fs.rmSync(slipwayDst, { recursive: true, force: true });

  if (rounds.length > 0) summarize(rounds, tree);
  if (argv.parts) await parts(site, depId, tree, slipwayDst);
  fs.rmSync(src, { recursive: true, force: true });
}

type Round = { ac: Step; sc: Step; ar: Step; sr: Step };

function summarize(rounds: Round[], tree: Tree): void {
  const capRatios = rounds.map((r) => r.ac.seconds / r.sc.seconds);
  const resRatios = rounds.map((r) => r.ar.seconds / r.sr.seconds);
  const med = (f: (r: Round) => Step) => median(rounds.map((r) => mbps(tree.bytes, f(r).seconds)));
  console.log(`\nsummary (${rounds.length} rounds, ${fmt(tree.bytes / 1e6, 0)} MB, ${tree.files} files; MB/s medians):`);
  console.log(`  capture: tar | dd ${fmt(med((r) => r.ac))} MB/s, slipway ${fmt(med((r) => r.sc))} MB/s; ratio per round ${capRatios.map((x) => fmt(x, 2)).join(" / ")}, median ${fmt(median(capRatios), 2)}× — goal ≥ 0.7×: ${median(capRatios) >= 0.7 ? "met" : "not met"}`);
  console.log(`  restore: tar -x ${fmt(med((r) => r.ar))} MB/s, slipway ${fmt(med((r) => r.sr))} MB/s; ratio per round ${resRatios.map((x) => fmt(x, 2)).join(" / ")}, median ${fmt(median(resRatios), 2)}× — goal ≥ 0.7×: ${median(resRatios) >= 0.7 ? "met" : "not met"}`);
}

/** Where the time goes: the capture and the restore cut short after each stage, each read cold. */
async function parts(site: SiteProcess, depId: string, tree: Tree, dst: string): Promise<void> {
  const drain = async (it: AsyncIterable<unknown>) => {
    for await (const _ of it);
  };
  const key = randomBytes(32);
  const association = "00000000-0000-4000-8000-000000000001";
  const stages: [string, () => Promise<unknown>][] = [
    ["capture (tar, rewriter) only", () => drain(captureUserState({ root: tree.root }).stream)],
    ["  + zstd", () => drain(pipeline(Readable.from(captureUserState({ root: tree.root }).stream), createZstdCompress(ZSTD_OPTIONS), () => {}))],
    ["  + sealStream", () => drain(sealStream(pipeline(Readable.from(captureUserState({ root: tree.root }).stream), createZstdCompress(ZSTD_OPTIONS), () => {}), { dataKey: key, associationId: association }))],
  ];
  const d = await newDevice(site);
  const capRun = await runAt(d, depId, "0");
  stages.push(["  + PUT to the SMP (the whole capture)", () => slipwayCapture(d, capRun, tree.root)]);
  console.log(`
parts (${fmt(tree.bytes / 1e6, 0)} MB; each stage cold, wall s, MB/s of the files' bytes, CPU s of this process with children / of the site):`);
  for (const [name, fn] of stages) {
    const s = await measure(site, async () => void (await fn()));
    console.log(`  ${name.padEnd(40)} ${fmt(s.seconds, 2).padStart(6)} s ${fmt(mbps(tree.bytes, s.seconds)).padStart(7)} MB/s   CPU ${fmt(s.machineCpu, 1)} / ${fmt(s.siteCpu, 1)} s`);
  }
  const runId = await runAt(d, depId, "1");
  const api = userStateClient(d.client, runId, "1");
  const fetched = async function* () {
    const grant = await api.grant("restore");
    for (let i = 0; i < grant.chunks; i++) yield await api.chunk(grant.association, i);
  };
  const opened = async function* () {
    const grant = await api.grant("restore");
    const chunks = async function* () {
      for (let i = 0; i < grant.chunks; i++) yield await api.chunk(grant.association, i);
    };
    yield* openStream(chunks(), { dataKey: Buffer.from(grant.dataKey, "base64"), associationId: grant.association, streamId: grant.streamId ?? undefined });
  };
  const restoreStages: [string, () => Promise<unknown>][] = [
    ["GET every chunk only", () => drain(fetched())],
    ["  + openStream", () => drain(opened())],
    ["  + zstd decompress", () => drain(pipeline(Readable.from(opened()), createZstdDecompress(ZSTD_RESTORE), () => {}))],
    ["  + restoreUserState, sync (the whole restore)", async () => {
      fs.rmSync(dst, { recursive: true, force: true });
      writeAccounts(dst);
      await slipwayRestore(d, runId, dst);
      sh(`sync -f '${dst}'`);
    }],
  ];
  for (const [name, fn] of restoreStages) {
    const s = await measure(site, async () => void (await fn()));
    console.log(`  ${name.padEnd(40)} ${fmt(s.seconds, 2).padStart(6)} s ${fmt(mbps(tree.bytes, s.seconds)).padStart(7)} MB/s   CPU ${fmt(s.machineCpu, 1)} / ${fmt(s.siteCpu, 1)} s`);
  }
  fs.rmSync(dst, { recursive: true, force: true });
  d.client.close();
  d.m.close();
}

async function memory(site: SiteProcess, depId: string, work: string): Promise<void> {
  const src = path.join(work, "old-small");
  const tree = makeTree(src, CONCURRENT_MIB, { seed: 2, textShare: 0.1, large: 1 });
  sh("sync");
  const devices: { d: Device; run: string }[] = [];
  for (let i = 0; i < CONCURRENT; i++) {
    const d = await newDevice(site);
    devices.push({ d, run: await runAt(d, depId, "0") });
  }
  await new Promise((r) => setTimeout(r, 1000));
  site.rss.reset();
  const before = rssOf(site.pid);
  const cpu0 = cpuOf(site.pid, false);
  const t0 = performance.now();
  let ownMax = 0;
  const own = setInterval(() => (ownMax = Math.max(ownMax, process.memoryUsage.rss())), 200);
  const results = await Promise.all(devices.map(({ d, run }) => slipwayCapture(d, run, src)));
  clearInterval(own);
  const seconds = (performance.now() - t0) / 1000;
  const during = site.rss.max;
  const samples = site.rss.samples;
  await new Promise((r) => setTimeout(r, 2000));
  const after = rssOf(site.pid);
  const stored = results.reduce((a, r) => a + r.stored, 0);
  const chunks = results.reduce((a, r) => a + r.chunks, 0);
  for (const { d } of devices) {
    d.client.close();
    d.m.close();
  }
  // RSS at each tenth of the upload's time: flat or growing with the data?
  const tenths: string[] = [];
  for (let k = 1; k <= 10; k++) {
    const until = t0 + (seconds * 1000 * k) / 10;
    const from = t0 + (seconds * 1000 * (k - 1)) / 10;
    const inside = samples.filter((s) => s.at > from && s.at <= until);
    tenths.push(inside.length ? mib(Math.max(...inside.map((s) => s.rss))).replace(" MiB", "") : "-");
  }
  console.log(`\nSMP memory, ${CONCURRENT} devices capturing at once (${tree.files} files, ${fmt(tree.bytes / 1e6, 0)} MB each; ${fmt(stored / 1e6, 0)} MB stored in ${chunks} chunks in all, ${fmt(seconds, 1)} s, ${fmt(mbps(stored, seconds))} MB/s into the store, site CPU ${fmt(cpuOf(site.pid, false) - cpu0, 1)} s):`);
  console.log(`  site RSS before ${mib(before)}, max during ${mib(during)}, after ${mib(after)} (2 s later); ${samples.length} samples every 200 ms`);
  console.log(`  site RSS max per tenth of the upload (MiB): ${tenths.join(" ")}`);
  console.log(`  this process (${CONCURRENT} agents' captures) RSS max ${mib(ownMax)}`);
  fs.rmSync(src, { recursive: true, force: true });
}

await main();
