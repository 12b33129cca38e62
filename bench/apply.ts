/**
 * Verified image apply vs a plain copy of the same bytes to the same disk, inside a QEMU
 * machine deployed through Slipway (issue 4, item 7).
 *
 *   node bench/apply.ts [--size-mib 1024] [--firmware bios|uefi]   (as root)
 *
 * One machine, one task sequence: partition, then a plain copy (busybox wget from a plain
 * HTTP server in the same namespace, straight onto the root partition, then sync), then the
 * agent's apply-image of the same bytes as a raw image (HTTPS with the device certificate,
 * every 4 MiB chunk verified before it is written, first chunk held back, fsync), then the
 * plain copy again. Times come from the step events the agent reported (the site's clock).
 * The image is random bytes: nothing compresses, and it is not an ext file system, so the
 * apply does no e2fsck/resize2fs. Under TCG (no KVM here) both sides are slowed alike; the
 * ratio is what to read.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import type { ChildProcess } from "node:child_process";
import { createLab, run, waitForOutput } from "../test/lab/netns.ts";
import { startVm } from "../test/lab/qemu.ts";
import { httpsRequest } from "../test/support/site.ts";

const { values } = parseArgs({ options: { "size-mib": { type: "string", default: "1024" }, firmware: { type: "string", default: "bios" } } });
const sizeMiB = Number(values["size-mib"]);
const firmware = values.firmware === "uefi" ? "uefi" : "bios";
if (process.getuid?.() !== 0) throw new Error("bench/apply.ts needs root (network namespaces)");

const root = path.resolve(import.meta.dirname, "..");
const CRYPTO_PROBE = [
  "const c=require('crypto');const b=Buffer.alloc(4<<20,7);const n=64;",
  "let t=Date.now();const h=c.createHash('sha256');for(let i=0;i<n;i++)h.update(b);h.digest();",
  "const sha=n*4*1.048576/((Date.now()-t)/1000);",
  "t=Date.now();const e=c.createCipheriv('aes-256-gcm',Buffer.alloc(32),Buffer.alloc(12));for(let i=0;i<n;i++)e.update(b);",
  "const aes=n*4*1.048576/((Date.now()-t)/1000);",
  "console.log('sha256 '+sha.toFixed(1)+' MB/s, aes-256-gcm '+aes.toFixed(1)+' MB/s')",
].join("");
const bin = path.join(root, "bin/slipway");
const PASSWORD = "Apply-Bench-Passphrase-1";
const work = fs.mkdtempSync("/tmp/slipway-bench-apply-");
const dataDir = path.join(work, "data");
const env = { ...process.env, SLIPWAY_ADMIN_PASSWORD: PASSWORD, SLIPWAY_DATABASE_URL: "", SLIPWAY_CACHE_DIR: path.join(root, ".cache/lab") };
const lab = await createLab({ name: "bench-apply" });
let server: ChildProcess | undefined;
let httpd: ChildProcess | undefined;
try {
  const br0 = await lab.addLink("br0", { cidr: "10.84.0.1/24" });
  await lab.startRouterAdvertisements(br0);
  const up = `slba${randomBytes(3).toString("hex")}`;
  await run("ip", ["link", "add", up, "type", "veth", "peer", "name", "adm0", "netns", lab.name]);
  await run("ip", ["addr", "add", "10.85.0.1/30", "dev", up]);
  await run("ip", ["link", "set", up, "up"]);
  await lab.exec("ip", ["addr", "add", "10.85.0.2/30", "dev", "adm0"]);
  await lab.exec("ip", ["link", "set", "adm0", "up"]);

  process.stderr.write(`writing a ${sizeMiB} MiB random image…\n`);
  const www = path.join(work, "www");
  fs.mkdirSync(www);
  const image = path.join(www, "image.raw");
  const fd = fs.openSync(image, "w");
  for (let i = 0; i < sizeMiB; i++) fs.writeSync(fd, randomBytes(1024 * 1024));
  fs.closeSync(fd);

  await run(bin, ["init", "--data", dataDir], { env });
  await run(bin, ["bootimage", "build", "--data", dataDir, "--name", "deploy", "--default"], { env, timeoutMs: 900_000 });
  await run(bin, ["image", "import", image, "--name", "bench-raw", "--format", "raw", "--data", dataDir], { env, timeoutMs: 900_000 });
  server = lab.spawn(bin, ["up", "--data", dataDir, "--listen", "10.85.0.2:8443", "--mp-listen", "0.0.0.0:8444",
    "--pxe-interface", "br0", "--pxe-mode", "dhcp", "--dhcp-range", "10.84.0.100-10.84.0.150"], { env });
  server.stderr?.on("data", (d: Buffer) => process.stderr.write(`[slipway] ${d}`));
  await waitForOutput(server, /PXE \(dhcp/, 60_000, "slipway up");
  // The plain side: the same file over plain HTTP from the same namespace.
  httpd = lab.spawn("busybox", ["httpd", "-f", "-p", "10.84.0.1:8099", "-h", www]);

  const api = "https://10.85.0.2:8443";
  const ca = fs.readFileSync(path.join(dataDir, "keys/ca.crt"), "utf8");
  // Seen twice here: the first connection refused just after `up` said it listens. Retry it a few times.
  let first: Awaited<ReturnType<typeof httpsRequest>> | undefined;
  for (let i = 0; !first; i++) {
    try {
      first = await httpsRequest(api, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password: PASSWORD } });
    } catch (err) {
      if (i >= 20) throw err;
      process.stderr.write(`first request: ${(err as Error).message}; retrying\n`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  let token = first.body.token as string;
  await httpsRequest(api, ca, "POST", "/api/v1/me/password", { token, body: { currentPassword: PASSWORD, newPassword: PASSWORD + "-2" } });
  token = (await httpsRequest(api, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password: PASSWORD + "-2" } })).body.token;
  const admin = (m: string, p: string, body?: unknown) => httpsRequest(api, ca, m, p, { token, body });
  const copy = (name: string) => ({ name, type: "run-command", timeoutSeconds: 7200,
    with: { command: "wget -q -O /dev/vda2 http://10.84.0.1:8099/image.raw && sync" } });
  const doc = { name: "Apply bench", steps: [
    { name: "Partition", type: "partition-disk", with: { disk: "0", scheme: firmware === "uefi" ? "gpt" : "gpt-bios" } },
    copy("Plain copy 1"),
    { name: "Verified apply", type: "apply-image", timeoutSeconds: 7200, with: { image: "bench-raw", partition: "0:2" } },
    copy("Plain copy 2"),
    // What the emulated CPU does per byte for each half of the verification, in Node as the agent runs it.
    { name: "Crypto speed", type: "run-command", with: { command: "/opt/slipway/bin/node -e \"" + CRYPTO_PROBE + "\"" } },
  ] };
  await admin("POST", "/api/v1/collections", { name: "Bench" });
  await admin("POST", "/api/v1/devices", { name: "bench-1", macs: ["52:54:00:84:00:01"], smbiosUuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000840001", state: "approved", collections: ["Bench"] });
  const ts = await admin("POST", "/api/v1/task-sequences", { document: doc });
  if (ts.status !== 201) throw new Error(ts.text);
  await admin("POST", "/api/v1/deployments", { name: "Bench", taskSequence: "Apply bench", collection: "Bench", purpose: "required", bootPaths: ["pxe"] });

  const disk = path.join(work, "disk.raw");
  fs.writeFileSync(disk, "");
  fs.truncateSync(disk, (sizeMiB + 1024) * 1024 * 1024);
  const tap = await br0.addTap("tapb");
  const vm = await startVm(lab, { tap, mac: "52:54:00:84:00:01", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000840001", firmware, disk, memoryMiB: 1536, name: "bench-apply",
    // Real machines have AES-NI and SHA extensions; TCG emulates them with -cpu max (the default qemu64 has neither).
    extraArgs: ["-cpu", "max"] });
  try {
    const done = await vm.waitForSerial(/SLIPWAY-AGENT run \S+ (succeeded|failed)/, { timeoutMs: 4 * 3600_000 });
    if (done[1] !== "succeeded") throw new Error(`the run failed:\n${vm.serial().slice(-3000)}`);
  } finally {
    await vm.kill();
  }
  const runs = await admin("GET", "/api/v1/runs");
  const detail = (await admin("GET", `/api/v1/runs/${runs.body[0].id}`)).body;
  const seconds = (label: string) => {
    const at = (state: string) => Date.parse(detail.events.find((e: any) => e.step === label && e.state === state).at);
    return (at("succeeded") - at("started")) / 1000;
  };
  const c1 = seconds("1 Plain copy 1");
  const apply = seconds("2 Verified apply");
  const c2 = seconds("3 Plain copy 2");
  const plain = (c1 + c2) / 2;
  const mbps = (s: number) => ((sizeMiB * 1048576) / 1e6 / s).toFixed(1);
  console.log(`\n${sizeMiB} MiB, ${firmware}, TCG:\n`);
  console.log("| what | seconds | MB/s |\n| --- | --- | --- |");
  console.log(`| plain copy (busybox wget over HTTP → /dev/vda2, sync), 1st | ${c1.toFixed(1)} | ${mbps(c1)} |`);
  console.log(`| verified apply (HTTPS mTLS, SHA-256 per 4 MiB chunk, fsync) | ${apply.toFixed(1)} | ${mbps(apply)} |`);
  console.log(`| plain copy, 2nd | ${c2.toFixed(1)} | ${mbps(c2)} |`);
  console.log(`\nverified apply / plain copy = ${(apply / plain).toFixed(2)}x (goal <= 1.2x)`);
  const probe = detail.events.find((e: any) => e.step === "4 Crypto speed" && e.state === "succeeded");
  console.log(`inside the VM (Node, one vCPU under TCG): ${/sha256[^\n]*/.exec(probe?.message ?? "")?.[0] ?? "no probe"}`);
} finally {
  if (httpd) await lab.stop(httpd);
  if (server) await lab.stop(server);
  await lab.close();
  fs.rmSync(work, { recursive: true, force: true });
}
