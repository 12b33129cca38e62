/**
 * Benchmark (not a test): image content downloads from Slipway's management point
 * (`GET /mp/v1/content/:digest/data`, mutual TLS) against nginx serving the same bytes as a
 * static file with the same certificates — issue 4, item 7.
 *
 * How to run (root only to install nginx; Debian):
 *
 *   export PATH="$PWD/.tools/node/bin:$PATH"   # from the repository's root
 *   node --disable-warning=ExperimentalWarning bench/content.ts [--size-mib 256] [--clients 1,50] [--seconds 5]
 *
 * About 2½–3½ minutes with the defaults (3½–4 with --floor) on 2 cores. Results: bench/README.md.
 *
 * Options: --size-mib N (the image, default 256), --clients 1,50 (concurrent clients per
 * measurement), --seconds S (each client keeps downloading the whole image until S seconds
 * have passed, at least once; default 5), --reps R (measurements per server and client count,
 * the table shows medians; default 3), --only slipway|nginx|floor, --nginx-workers N|auto
 * (default auto), --floor (also measure a yardstick that is not Slipway, below),
 * --floor-reads pooled|fresh (how the floor reads the chunk files, default pooled),
 * --cpu-prof (profile this process's main thread — the management point's, and the floor's —
 * during their measurements with the in-process inspector; prints where the time goes by
 * function and file and keeps the last .cpuprofile of each).
 *
 * The floor: a bare Node HTTPS server in this same process (same heap, same TLS options as
 * the management point) sending the same chunk files, with no routing, no device lookup and no
 * policy check. `pooled` reads into four 256 KiB buffers per response that it reuses once the
 * response's write callback says TLS has consumed them; `fresh` is the same with a new buffer
 * per read (as fs.createReadStream does). Comparing them with the management point splits its
 * cost into buffer churn and the rest (routing, device lookup, policy check).
 *
 * What it does, in one run:
 * 1. A real site (test/support/site.ts: SQLite, the real site server and management point on
 *    loopback), a random image imported into the content library, a collection, a task
 *    sequence whose `apply-image` step names it, a required deployment, and one device enrolled
 *    with its own P-256 key and a client certificate from the site CA.
 * 2. nginx (Debian's, installed with apt-get when missing) as a foreground child with a
 *    temporary prefix and configuration: the server certificate and key Slipway uses
 *    (DATA/keys/server.crt, .key), `ssl_verify_client on` against the site CA, session tickets
 *    off like the management point, `sendfile on`, serving the image file Slipway imported.
 * 3. The clients are curl processes (one per download, no SHA-256, body to /dev/null), run by a
 *    separate driver process so the management point's event loop does nothing but serve;
 *    both servers get the same curl command: TLS 1.3 only, TLS_AES_256_GCM_SHA384, the
 *    device's certificate. Each server is warmed up once (one download, whose SHA-256 is
 *    checked). Rounds alternate which server goes first, so drift in the machine's load hits
 *    both alike.
 * 4. Everything is removed at the end, or on Ctrl-C: nginx stopped, temp folders deleted.
 *
 * Aggregate MB/s = bytes received by all clients ÷ wall time from the first client's start
 * to the last one's end (MB = 10^6 bytes). Latency = one whole download (curl's time_total,
 * connection and TLS handshake included); TTFB = curl's time_starttransfer. Server CPU is the
 * server's user + system time over the measurement (Slipway: this process; nginx: master and
 * workers), client CPU the curl processes' and the driver's, both in % of one core; "server
 * CPU s/GB" is server CPU seconds per 10^9 bytes sent, the least noisy figure on a shared
 * machine; "machine CPU %" is the whole machine's busy time (all cores, /proc/stat): near
 * 100 × cores the run was CPU-bound, and anything above server + client was someone else.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { constants, createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import type { TLSSocket } from "node:tls";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Session } from "node:inspector/promises";
import { parseArgs } from "node:util";
import { onExit } from "../test/lab/cleanup.ts";

const MB = 1e6;
const CLK_TCK = 100; // Linux USER_HZ
const TLS_ARGS = ["--tlsv1.3", "--tls-max", "1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384"];

// ---------------------------------------------------------------------------------------
// The driver: a child process that runs the curl clients and reports what they measured.

type DriveConfig = { url: string; clients: number; seconds: number; size: number; curl: string[] };
type Download = { code: number; http: number; bytes: number; ttfb: number; total: number; stderr: string };
type DriveResult = { wallS: number; bytes: number; downloads: Download[]; clientCpuS: number };

/** User + system CPU seconds of this process's waited-for children (/proc/self/stat cutime, cstime), and its own. */
function selfAndChildrenCpu(): { self: number; children: number } {
  const stat = fs.readFileSync("/proc/self/stat", "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After ")": state is field 3, so utime (14) is index 11, stime 12, cutime 13, cstime 14.
  return { self: (Number(f[11]) + Number(f[12])) / CLK_TCK, children: (Number(f[13]) + Number(f[14])) / CLK_TCK };
}

function curlOnce(cfg: DriveConfig): Promise<Download> {
  return new Promise((resolve) => {
    const p = spawn("curl", [...cfg.curl, "-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}", cfg.url], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    p.stdout.on("data", (c) => (out += c));
    p.stderr.on("data", (c) => (err += c));
    p.on("close", (code) => {
      const [http, bytes, ttfb, total] = out.trim().split(" ").map(Number);
      resolve({ code: code ?? -1, http, bytes, ttfb, total, stderr: err.trim() });
    });
  });
}

async function drive(cfg: DriveConfig): Promise<DriveResult> {
  const cpu0 = selfAndChildrenCpu();
  const t0 = performance.now();
  const deadline = t0 + cfg.seconds * 1000;
  const downloads: Download[] = [];
  let failed = false;
  await Promise.all(Array.from({ length: cfg.clients }, async () => {
    do {
      const d = await curlOnce(cfg);
      downloads.push(d);
      // A failed download ends the measurement (the main process reports it), and a driver whose
      // servers went away (the bench was interrupted) stops at once.
      if (d.code !== 0) failed = true;
    } while (performance.now() < deadline && !failed);
  }));
  const wallS = (performance.now() - t0) / 1000;
  const cpu1 = selfAndChildrenCpu();
  return { wallS, bytes: downloads.reduce((s, d) => s + (d.bytes || 0), 0), downloads, clientCpuS: cpu1.self - cpu0.self + cpu1.children - cpu0.children };
}

// ---------------------------------------------------------------------------------------
// Arguments

const { values: argv } = parseArgs({
  options: {
    "size-mib": { type: "string", default: "256" },
    clients: { type: "string", default: "1,50" },
    seconds: { type: "string", default: "5" },
    reps: { type: "string", default: "3" },
    only: { type: "string" },
    "nginx-workers": { type: "string", default: "auto" },
    "cpu-prof": { type: "boolean", default: false },
    floor: { type: "boolean", default: false },
    "floor-reads": { type: "string", default: "pooled" },
    drive: { type: "string" },
  },
});

if (argv.drive) {
  const result = await drive(JSON.parse(argv.drive) as DriveConfig);
  process.stdout.write(JSON.stringify(result));
  process.exit(0);
}

const SIZE = Number(argv["size-mib"]) * 1024 * 1024;
const CLIENTS = argv.clients!.split(",").map(Number);
const SECONDS = Number(argv.seconds);
const REPS = Number(argv.reps);
const WORKERS = argv["nginx-workers"]!;
/** How the floor reads: "pooled" (reused buffers), "fresh" (a new buffer per read, otherwise the same). */
const FLOOR_READS = argv["floor-reads"] as "pooled" | "fresh";
type Kind = "slipway" | "nginx" | "floor";
const KINDS: Kind[] = argv.only ? [argv.only as Kind] : ["slipway", "nginx", ...(argv.floor ? ["floor" as const] : [])];
if (!(SIZE >= 1024 * 1024 && SIZE <= 16 * 1024 ** 3) || CLIENTS.some((c) => !(Number.isInteger(c) && c >= 1 && c <= 500)) || !(SECONDS >= 0 && SECONDS <= 600) || !(REPS >= 1 && REPS <= 20)
  || KINDS.some((k) => k !== "slipway" && k !== "nginx" && k !== "floor") || !(WORKERS === "auto" || Number(WORKERS) >= 1)
  || !["pooled", "fresh"].includes(FLOOR_READS)) {
  throw new Error("--size-mib 1..16384, --clients 1..500 (comma-separated), --seconds 0..600, --reps 1..20, --only slipway|nginx|floor, --nginx-workers N|auto, --floor-reads pooled|fresh");
}

// ---------------------------------------------------------------------------------------
// Setup helpers

const NGINX = "/usr/sbin/nginx";

function ensureTools(): void {
  if (spawnSync("curl", ["--version"]).status !== 0) throw new Error("Cannot run the content benchmark: curl is missing (apt-get install -y curl)");
  if (KINDS.includes("nginx") && !fs.existsSync(NGINX)) {
    if (process.getuid?.() !== 0) throw new Error("Cannot run the content benchmark: nginx is missing and installing it needs root (apt-get install -y nginx)");
    console.log("installing nginx (apt-get install -y nginx) …");
    const r = spawnSync("apt-get", ["install", "-y", "--no-install-recommends", "nginx"], { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
    if (r.status !== 0 || !fs.existsSync(NGINX)) throw new Error("Cannot run the content benchmark: apt-get install nginx failed");
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A random file of `size` bytes, written in 16 MiB pieces (never the whole image in memory). */
function writeRandomFile(file: string, size: number): void {
  const fd = fs.openSync(file, "w", 0o644);
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(16 * 1024 * 1024, size - done);
      fs.writeSync(fd, randomBytes(n));
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

type Nginx = { url: string; proc: ChildProcess; pids(): number[]; stop(): Promise<void> };

async function startNginx(prefix: string, opts: { certFile: string; keyFile: string; caFile: string; root: string; file: string }): Promise<Nginx> {
  const port = await freePort();
  fs.mkdirSync(path.join(prefix, "tmp"), { recursive: true });
  const t = (n: string) => path.join(prefix, "tmp", n);
  const conf = `
worker_processes ${WORKERS};
pid ${path.join(prefix, "nginx.pid")};
error_log stderr warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 30s;
  client_body_temp_path ${t("body")};
  proxy_temp_path ${t("proxy")};
  fastcgi_temp_path ${t("fastcgi")};
  uwsgi_temp_path ${t("uwsgi")};
  scgi_temp_path ${t("scgi")};
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${opts.certFile};
    ssl_certificate_key ${opts.keyFile};
    ssl_client_certificate ${opts.caFile};
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets off;
    root ${opts.root};
    location / { }
  }
}
`;
  const confFile = path.join(prefix, "nginx.conf");
  fs.writeFileSync(confFile, conf);
  const proc = spawn(NGINX, ["-p", prefix, "-e", "stderr", "-c", confFile], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (c) => (stderr += c));
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  // Ready when the port accepts connections.
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`Cannot start nginx: ${stderr.trim()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) break;
    if (i > 100) throw new Error(`Cannot start nginx: port ${port} never opened. ${stderr.trim()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `https://127.0.0.1:${port}/${path.basename(opts.file)}`,
    proc,
    pids: () => [proc.pid!, ...childPids(proc.pid!)],
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      await exited;
    },
  };
}

function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === ppid) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** User + system CPU seconds of the given processes (threads included). */
function cpuOfPids(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      sum += (Number(f[11]) + Number(f[12])) / CLK_TCK;
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}

/** The driver running now, if any: killed by the exit handler on Ctrl-C. */
let driver: ChildProcess | null = null;

function runDriver(cfg: DriveConfig): Promise<DriveResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", import.meta.filename, "--drive", JSON.stringify(cfg)], { stdio: ["ignore", "pipe", "inherit"] });
    driver = p;
    let out = "";
    p.stdout.on("data", (c) => (out += c));
    p.on("error", reject);
    p.on("close", (code) => {
      driver = null;
      if (code !== 0) return reject(new Error(`the driver exited with ${code}`));
      resolve(JSON.parse(out) as DriveResult);
    });
  });
}

// ---------------------------------------------------------------------------------------
// The floor (--floor): not Slipway, a yardstick. A bare Node HTTPS server in this same process
// (same heap, same TLS options as the management point) that sends the same chunk files, read
// into a few buffers it reuses, written straight to the response, no policy check. It shows
// what Node itself can do on this path, and what the management point's serving path costs
// on top.

type FloorChunk = { file: string; size: number };
const FLOOR_BUFFER = 256 * 1024;
const FLOOR_BUFFERS = 4;

async function sendPooled(res: import("node:http").ServerResponse, chunks: FloorChunk[]): Promise<void> {
  // A buffer goes back to the pool only when the response's write callback says its bytes were
  // consumed (TLS has encrypted them): until then the socket may still hold a reference to it.
  const free: Buffer[] = Array.from({ length: FLOOR_BUFFERS }, () => Buffer.allocUnsafeSlow(FLOOR_BUFFER));
  let waiting: (() => void) | null = null;
  const release = (b: Buffer) => {
    free.push(b);
    const w = waiting;
    waiting = null;
    w?.();
  };
  for (const c of chunks) {
    const fh = await fs.promises.open(c.file, "r");
    try {
      for (let pos = 0; pos < c.size; ) {
        if (res.destroyed) return;
        while (free.length === 0) await new Promise<void>((r) => (waiting = r));
        let buf = free.pop()!;
        if (FLOOR_READS === "fresh") buf = Buffer.allocUnsafeSlow(FLOOR_BUFFER);
        const { bytesRead } = await fh.read(buf, 0, Math.min(FLOOR_BUFFER, c.size - pos), pos);
        if (bytesRead === 0) throw new Error(`${c.file} is shorter than ${c.size} bytes`);
        pos += bytesRead;
        res.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead), () => release(buf));
      }
    } finally {
      await fh.close();
    }
  }
  res.end();
}

async function startFloor(tls: { certPem: string; keyPem: string }, caPem: string, chunks: FloorChunk[]): Promise<{ url: string; close(): Promise<void> }> {
  const size = chunks.reduce((s, c) => s + c.size, 0);
  const server = https.createServer({
    cert: tls.certPem, key: tls.keyPem, ca: [caPem], requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2",
    secureOptions: constants.SSL_OP_NO_TICKET, keepAliveTimeout: 30_000,
  }, (req, res) => {
    if (!(req.socket as TLSSocket).authorized) {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) });
    sendPooled(res, chunks).catch((err) => res.destroy(err));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `https://127.0.0.1:${port}/image`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

// ---------------------------------------------------------------------------------------
// Measuring

type Measurement = { kind: Kind; clients: number; mbps: number; p50: number; p99: number; ttfb50: number; requests: number; serverCpu: number; clientCpu: number; machineCpu: number; wallS: number };

/** Busy and total CPU ticks of the whole machine, all cores (/proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
  return { busy: total - f[3] - f[4], total };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  ensureTools();
  const { startTestSite } = await import("../test/support/site.ts");
  const { newMachine } = await import("../test/support/device.ts");
  const { addImage } = await import("../src/site/content-library.ts");
  const { BlobStore } = await import("../src/content/blob-store.ts");

  const work = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-bench-content-"));
  // nginx's workers run as nobody when started by root: they must be able to read the image.
  fs.chmodSync(work, 0o755);
  let nginx: Nginx | null = null;
  let dataDir: string | null = null;
  const forget = onExit(() => {
    driver?.kill("SIGKILL");
    // SIGKILL to the master alone would leave its workers running: kill them all.
    if (nginx && nginx.proc.exitCode === null) for (const pid of nginx.pids().reverse()) process.kill(pid, "SIGKILL");
    fs.rmSync(work, { recursive: true, force: true });
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const www = path.join(work, "www");
  fs.mkdirSync(www, { mode: 0o755 });
  const imageFile = path.join(www, "image.raw");
  console.log(`writing a random ${SIZE / 1024 / 1024} MiB image …`);
  writeRandomFile(imageFile, SIZE);
  const sha = createHash("sha256").update(fs.readFileSync(imageFile)).digest("hex");

  console.log("starting a site, importing the image, enrolling a device …");
  const t = await startTestSite({ database: "sqlite" });
  dataDir = t.dataDir;
  const admin = async (method: string, p: string, body?: unknown) => {
    const r = await t.request(method, p, { token: t.adminToken, body });
    if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${r.text}`);
    return r.body;
  };
  const { record } = await addImage(t.site, { file: imageFile, name: "bench-image", actor: "bench" });
  const ids = { macs: ["52:54:00:be:0c:01"], smbiosUuid: "00000000-0000-4000-8000-be0c00000001" };
  await admin("POST", "/api/v1/devices", { name: "bench-device", ...ids, state: "approved", attributes: { room: "BENCH" } });
  const machine = await newMachine(t, ids);
  const enrolled = await machine.enroll({ kind: "pre-approved" });
  if (enrolled.status !== 201) throw new Error(`enroll: ${enrolled.status} ${enrolled.text}`);
  await admin("POST", "/api/v1/collections", { name: "Bench", rule: "attributes.room == 'BENCH'" });
  await admin("POST", "/api/v1/task-sequences", { document: { name: "Bench image", steps: [{ name: "Apply", type: "apply-image", with: { image: "bench-image" } }] } });
  await admin("POST", "/api/v1/deployments", { name: "Bench", taskSequence: "Bench image", collection: "Bench", purpose: "required", bootPaths: ["pxe", "media"] });

  const client = path.join(work, "client");
  fs.mkdirSync(client, { mode: 0o700 });
  const caFile = path.join(client, "ca.crt");
  const certFile = path.join(client, "device.crt");
  const keyFile = path.join(client, "device.key");
  fs.writeFileSync(caFile, t.ca);
  fs.writeFileSync(certFile, machine.certPem!);
  fs.writeFileSync(keyFile, machine.keyPem, { mode: 0o600 });
  machine.close();
  const curl = ["-sS", "--fail", "-o", "/dev/null", "--cacert", caFile, "--cert", certFile, "--key", keyFile, ...TLS_ARGS];

  const urls: Record<Kind, string> = { slipway: `${t.mp.url}/mp/v1/content/${record.digest}/data`, nginx: "", floor: "" };
  let floor: Awaited<ReturnType<typeof startFloor>> | null = null;
  if (KINDS.includes("floor")) {
    const blobs = new BlobStore(t.dataDir);
    const readKey = (n: string) => fs.readFileSync(path.join(t.dataDir, "keys", n), "utf8");
    floor = await startFloor({ certPem: readKey("server.crt"), keyPem: readKey("server.key") }, t.ca,
      record.signed.manifest.chunks.map((c) => ({ file: blobs.pathOf(c.sha256), size: c.size })));
    urls.floor = floor.url;
  }
  if (KINDS.includes("nginx")) {
    nginx = await startNginx(path.join(work, "nginx"), {
      certFile: path.join(t.dataDir, "keys", "server.crt"), keyFile: path.join(t.dataDir, "keys", "server.key"),
      caFile, root: www, file: imageFile,
    });
    urls.nginx = nginx.url;
  }

  // Warm up each server once, and check that both serve the image's exact bytes.
  for (const kind of KINDS) {
    const got = await new Promise<string>((resolve, reject) => {
      const p = spawn("curl", [...curl.filter((a, i) => !(a === "-o" || curl[i - 1] === "-o")), urls[kind]], { stdio: ["ignore", "pipe", "pipe"] });
      const h = createHash("sha256");
      let err = "";
      p.stdout.on("data", (c) => h.update(c));
      p.stderr.on("data", (c) => (err += c));
      p.on("close", (code) => (code === 0 ? resolve(h.digest("hex")) : reject(new Error(`warm-up download from ${kind} failed: ${err.trim()}`))));
    });
    if (got !== sha) throw new Error(`${kind} served other bytes (sha256 ${got}, want ${sha})`);
    console.log(`warm-up: ${kind} served the ${SIZE} bytes intact`);
  }

  const session = argv["cpu-prof"] && KINDS.some((k) => k !== "nginx") ? new Session() : null;
  if (session) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.setSamplingInterval", { interval: 200 });
  }

  async function measure(kind: Kind, clients: number): Promise<Measurement> {
    const pids = kind === "nginx" ? nginx!.pids() : [];
    const server0 = kind === "nginx" ? cpuOfPids(pids) : process.cpuUsage();
    const machine0 = machineTicks();
    const profiling = session && kind !== "nginx";
    if (profiling) await session.post("Profiler.start");
    const r = await runDriver({ url: urls[kind], clients, seconds: SECONDS, size: SIZE, curl });
    if (profiling) profiles.push({ kind, profile: (await session.post("Profiler.stop")).profile as CpuProfile });
    const serverCpuS = kind === "nginx" ? cpuOfPids(pids) - (server0 as number) : (() => {
      const u = process.cpuUsage(server0 as NodeJS.CpuUsage);
      return (u.user + u.system) / 1e6;
    })();
    const machine1 = machineTicks();
    const bad = r.downloads.filter((d) => d.code !== 0 || d.http !== 200 || d.bytes !== SIZE);
    if (bad.length) throw new Error(`${kind}: ${bad.length} of ${r.downloads.length} downloads failed, e.g. ${JSON.stringify(bad[0])}`);
    const totals = r.downloads.map((d) => d.total);
    return {
      kind, clients, mbps: r.bytes / MB / r.wallS, p50: pct(totals, 50), p99: pct(totals, 99), ttfb50: pct(r.downloads.map((d) => d.ttfb), 50),
      requests: r.downloads.length, serverCpu: (serverCpuS / r.wallS) * 100, clientCpu: (r.clientCpuS / r.wallS) * 100,
      machineCpu: ((machine1.busy - machine0.busy) / CLK_TCK / r.wallS) * 100, wallS: r.wallS,
    };
  }

  const profiles: { kind: Kind; profile: CpuProfile }[] = [];
  const results: Measurement[] = [];
  for (const clients of CLIENTS) {
    for (let rep = 0; rep < REPS; rep++) {
      const order = rep % 2 === 0 ? KINDS : [...KINDS].reverse();
      for (const kind of order) {
        await new Promise((r) => setTimeout(r, 1000)); // let sockets close and the previous run's GC settle
        const m = await measure(kind, clients);
        results.push(m);
        console.log(`  ${kind.padEnd(7)} ${String(clients).padStart(3)} client(s), round ${rep + 1}: ${m.mbps.toFixed(0).padStart(5)} MB/s, ${m.requests} downloads in ${m.wallS.toFixed(1)} s, p50 ${m.p50.toFixed(2)} s, server CPU ${m.serverCpu.toFixed(0)}%, client CPU ${m.clientCpu.toFixed(0)}%, machine ${m.machineCpu.toFixed(0)}%`);
      }
    }
  }

  // Cleanup before printing, so an interrupted print leaves nothing behind either.
  await nginx?.stop();
  await floor?.close();
  await t.close();
  fs.rmSync(work, { recursive: true, force: true });
  forget();

  const cores = os.cpus().length;
  console.log(`\n${SIZE / 1024 / 1024} MiB image, TLS 1.3 TLS_AES_256_GCM_SHA384 with a client certificate, curl ${curlVersion()}, nginx ${nginxVersion()} (worker_processes ${WORKERS}), Node ${process.version}, ${cores} cores; medians of ${REPS}, ${SECONDS} s per measurement${KINDS.includes("floor") ? `; floor reads: ${FLOOR_READS}` : ""}`);
  const header = ["server", "clients", "MB/s", "rounds MB/s", "÷ nginx", "p50 s", "p99 s", "TTFB p50 ms", "downloads", "server CPU %", "server CPU s/GB", "client CPU %", "machine CPU %"];
  const rows: string[][] = [];
  for (const clients of CLIENTS) {
    const mine = (kind: Kind) => results.filter((m) => m.kind === kind && m.clients === clients);
    const anchor = KINDS.includes("nginx") ? median(mine("nginx").map((m) => m.mbps)) : NaN;
    for (const kind of KINDS) {
      const ms = mine(kind);
      const mbps = median(ms.map((m) => m.mbps));
      const of = (f: (m: Measurement) => number) => median(ms.map(f));
      rows.push([
        kind, String(clients), mbps.toFixed(0), ms.map((m) => m.mbps.toFixed(0)).join("/"),
        kind === "nginx" || Number.isNaN(anchor) ? "" : `${(mbps / anchor).toFixed(2)}×`,
        of((m) => m.p50).toFixed(2), of((m) => m.p99).toFixed(2), (of((m) => m.ttfb50) * 1000).toFixed(1), String(of((m) => m.requests)),
        of((m) => m.serverCpu).toFixed(0), of((m) => (m.serverCpu / 100) / (m.mbps / 1000)).toFixed(2), of((m) => m.clientCpu).toFixed(0), of((m) => m.machineCpu).toFixed(0),
      ]);
    }
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  console.log(header.map((h, i) => (i === 0 ? h.padEnd(widths[i]) : h.padStart(widths[i]))).join("  "));
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "));

  if (session) {
    for (const kind of KINDS.filter((k) => k !== "nginx")) {
      const mine = profiles.filter((p) => p.kind === kind).map((p) => p.profile);
      const file = path.join(os.tmpdir(), `slipway-bench-content-${kind}-${Date.now()}.cpuprofile`);
      fs.writeFileSync(file, JSON.stringify(mine[mine.length - 1]));
      console.log(`\nWhere the main thread spent its time serving as ${kind} (all its measurements; the last one's profile kept in ${file}):`);
      console.log(summarizeProfiles(mine));
    }
    session.disconnect();
  }
}

function curlVersion(): string {
  return spawnSync("curl", ["--version"], { encoding: "utf8" }).stdout.split(" ")[1] ?? "?";
}
function nginxVersion(): string {
  const r = spawnSync(NGINX, ["-v"], { encoding: "utf8" });
  return /nginx\/(\S+)/.exec(r.stderr ?? "")?.[1] ?? "-";
}

// ---------------------------------------------------------------------------------------
// Profile summary: self time by function and by file, over all profiles.

type CpuProfile = {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
};

function summarizeProfiles(profiles: CpuProfile[]): string {
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  for (const p of profiles) {
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => {
      const dt = p.timeDeltas[i] ?? 0;
      const n = nodes.get(id)!;
      const url = n.callFrame.url.replace(/^file:\/\/.*?\/(src|test|bench|node_modules)\//, "$1/");
      const fn = `${n.callFrame.functionName || "(anonymous)"} ${url ? `${url}:${n.callFrame.lineNumber + 1}` : ""}`.trim();
      byFn.set(fn, (byFn.get(fn) ?? 0) + dt);
      const file = url || n.callFrame.functionName;
      byFile.set(file, (byFile.get(file) ?? 0) + dt);
      total += dt;
    });
  }
  const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, v]) => `  ${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`).join("\n");
  return `by function (self time, ${(total / 1e6).toFixed(1)} s sampled):\n${top(byFn, 25)}\nby file:\n${top(byFile, 15)}`;
}

await main();
process.exit(0);
