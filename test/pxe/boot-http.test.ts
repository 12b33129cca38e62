/**
 * Boot scripts per machine on a real HTTP server: approved machines get a script with a
 * fresh one-time token that the management point then redeems; pending ones a polling
 * script; unknown and blocked ones nothing; only registered boot image files are served.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { newMachine } from "../support/device.ts";
import { startBootHttp, type BootHttp } from "../../src/roles/distribution/boot-http.ts";
import { deployToEveryone } from "../support/deployment.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");
const get = (url: string): Promise<{ status: number; body: Buffer }> => new Promise((resolve, reject) => {
  http.get(url, (res) => {
    const chunks: Buffer[] = [];
    res.on("data", (c) => chunks.push(c));
    res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
  }).on("error", reject);
});
const run = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
  execFile(bin, args, { env: { ...process.env, SLIPWAY_DATABASE_URL: "" } }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
});

describe("boot scripts over HTTP", () => {
  let t: TestSite;
  let boot: BootHttp;
  let url = "";
  const kernel = randomBytes(300_000);
  const initrd = randomBytes(500_000);
  const link = { name: "lo", address: "127.0.0.1", netmask: "255.0.0.0" };
  before(async () => {
    t = await startTestSite();
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, "vmlinuz"), kernel);
    fs.writeFileSync(path.join(dir, "initrd"), initrd);
    const added = await run(["bootimage", "add", "--data", t.dataDir, "--name", "deploy-env", "--kernel", path.join(dir, "vmlinuz"), "--initrd", path.join(dir, "initrd"), "--cmdline", "console=ttyS0 quiet"]);
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /\(default\)/);
    await deployToEveryone((m, p, body) => t.request(m, p, { token: t.adminToken, body }), `name != "lab-lonely"`);
    boot = await startBootHttp({ site: t.site, links: [link], port: 0, unknown: "approve", managementPointUrl: () => t.mp.url, bindToDevice: false });
    url = boot.baseUrl(link);
  });
  after(async () => {
    await boot.close();
    await t.close();
  });

  it("hands an approved machine a script whose one-time token enrolls it, once", async () => {
    const mac = "52:54:00:20:00:01";
    const uuid = "11111111-2222-4333-8444-555555555555";
    await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "lab-01", macs: [mac], smbiosUuid: uuid, state: "approved" } });
    const start = await get(`${url}/ipxe/start`);
    assert.match(start.body.toString(), /chain --replace http:\/\/127\.0\.0\.1:\d+\/ipxe\/machine\?mac=\$\{net0\/mac\}/);
    const r = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}&arch=x86_64&platform=pcbios`);
    assert.equal(r.status, 200);
    const script = r.body.toString();
    const token = /slipway\.token=(\S+)/.exec(script)?.[1];
    assert.ok(token && token.length >= 40, script);
    assert.match(script, /console=ttyS0 quiet/);
    const kernelUrl = /^kernel (\S+)/m.exec(script)![1];
    const initrdUrl = /^initrd --name initrd (\S+)/m.exec(script)![1];
    const k = await get(kernelUrl);
    assert.equal(createHash("sha256").update(k.body).digest("hex"), createHash("sha256").update(kernel).digest("hex"));
    assert.equal((await get(initrdUrl)).body.length, initrd.length);

    const m = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
    assert.equal((await m.enroll({ kind: "boot-token", token })).status, 201);
    const again = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
    assert.equal((await again.enroll({ kind: "boot-token", token })).status, 401);
    m.close();
    again.close();
  });

  it("a pending machine polls, an unknown one is recorded by the DHCP stage only, a blocked one gets nothing", async () => {
    await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "lab-02", macs: ["52:54:00:20:00:02"] } });
    const wait = await get(`${url}/ipxe/machine?mac=52:54:00:20:00:02`);
    assert.equal(wait.status, 200);
    assert.match(wait.body.toString(), /waiting for an administrator's approval[\s\S]*sleep 10\nchain --replace/);
    assert.ok(!wait.body.toString().includes("slipway.token"));
    const blocked = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "lab-03", macs: ["52:54:00:20:00:03"], state: "blocked" } });
    assert.equal(blocked.status, 201);
    assert.equal((await get(`${url}/ipxe/machine?mac=52:54:00:20:00:03`)).status, 404);
    assert.equal((await get(`${url}/ipxe/machine?mac=52:54:00:20:00:99`)).status, 404);
    assert.equal((await get(`${url}/ipxe/machine?mac=nonsense`)).status, 400);
  });

  it("an approved machine that no deployment targets is sent to its local disk, audited", async () => {
    const mac = "52:54:00:20:00:04";
    assert.equal((await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "lab-lonely", macs: [mac], state: "approved" } })).status, 201);
    const r = await get(`${url}/ipxe/machine?mac=${mac}`);
    assert.equal(r.status, 200);
    const script = r.body.toString();
    assert.match(script, /nothing to deploy to lab-lonely; booting from the local disk\nexit 1\n/);
    assert.doesNotMatch(script, /slipway\.token|kernel /);
    const audit = (await t.request("GET", "/api/v1/audit?action=pxe.script.local&limit=100", { token: t.adminToken })).body as { details: { mac: string; reason: string } }[];
    assert.ok(audit.some((e) => e.details.mac === mac && e.details.reason === "no deployment for this machine"), JSON.stringify(audit));
  });

  it("serves only registered boot image files and known loaders", async () => {
    assert.equal((await get(`${url}/ipxe/files/${"0".repeat(64)}`)).status, 404);
    const blobDir = path.join(t.dataDir, "content", "sha256");
    // A blob in the store that no boot image uses is not served.
    const stray = createHash("sha256").update("stray").digest("hex");
    fs.writeFileSync(path.join(blobDir, stray), "stray");
    assert.equal((await get(`${url}/ipxe/files/${stray}`)).status, 404);
    for (const p of ["/ipxe/loaders/../../etc/passwd", "/ipxe/loaders/%2e%2e%2fkeys", "/ipxe/files/../keys/ca.key", "/keys/ca.key", "/ipxe/loaders/ca.key"]) {
      assert.equal((await get(`${url}${p}`)).status, 404, p);
    }
  });
});
