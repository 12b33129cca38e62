/**
 * What Slipway holds about a machine, and for how long (docs/privacy.md), over the API: the
 * privacy report lists everything held about one device (and never a secret's value); run step
 * output is purged after the retention while the run itself stays; deleting a device purges its
 * variables, runs and step output, leases and associations (key destroyed, stored state removed)
 * and keeps only its revoked certificates and the audit entries that name it by id.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { newMachine, enrollApproved, type TestMachine } from "../support/device.ts";
import { sealStream } from "../../src/security/state-cipher.ts";
import { stores } from "../../src/storage/stores.ts";
import { sweepRunLogs } from "../../src/site/services/privacy.ts";

function putChunk(t: TestSite, m: TestMachine, p: string, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(p, t.mp.url), {
      method: "PUT", ca: t.ca, key: m.keyPem, cert: m.certPem ?? undefined, agent: false,
      headers: { "content-type": "application/octet-stream", "content-length": String(body.length) },
    }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function* once(b: Buffer) {
  yield b;
}

describe("privacy: the report, run log retention, deleting a device", () => {
  let t: TestSite;
  let offset = 0;
  const start = Date.now();
  let depId = "";
  const secretValue = `Privacy-Secret-${crypto.randomBytes(6).toString("hex")}`;
  const admin = (method: string, p: string, body?: unknown) => t.request(method, p, { token: t.adminToken, body });

  before(async () => {
    t = await startTestSite({ now: () => new Date(start + offset) });
    const doc = { name: "Keep", steps: [{ name: "Capture", type: "capture-user-state" }, { name: "Restore", type: "restore-user-state" }] };
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Privacy lab" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Keep", taskSequence: "Keep", collection: "Privacy lab", purpose: "required", bootPaths: ["media"] });
    assert.equal(dep.status, 201, dep.text);
    depId = dep.body.id;
  });
  after(() => t?.close());

  /** A machine with a device variable, a lease, a run with step output and a captured association. */
  async function machineWithHistory(n: number): Promise<{ m: TestMachine; deviceId: string; runId: string; association: string }> {
    const ids = { macs: [`52:54:00:9a:00:0${n}`], smbiosUuid: `00000000-0000-4000-8000-0000009a000${n}` };
    const d = await admin("POST", "/api/v1/devices", { name: `private-${n}`, ...ids, serial: `SN-${n}`, state: "approved", collections: ["Privacy lab"] });
    assert.equal(d.status, 201, d.text);
    assert.equal((await admin("POST", "/api/v1/variables", { scope: "device", target: d.body.id, name: "LocalAdmin", value: secretValue, secret: true })).status, 201);
    await stores(t.site.db).leases.put({ mac: ids.macs[0], ip: `10.99.0.${n}`, expiresAt: new Date(start + 3600_000).toISOString(), state: "bound", deviceId: null }, new Date(start).toISOString());
    const m = await newMachine(t, ids);
    assert.equal((await enrollApproved(t, m)).status, 201);
    const run = await m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
    assert.equal(run.status, 201, run.text);
    assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "0", state: "started", message: "capturing /home/alice" })).status, 201);
    const g = await m.call("POST", `/mp/v1/runs/${run.body.id}/user-state`, { step: "0", action: "capture" });
    assert.equal(g.status, 200, g.text);
    for await (const c of sealStream(once(crypto.randomBytes(1000)), { dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: g.body.association, streamId: g.body.streamId })) {
      assert.equal(await putChunk(t, m, `/mp/v1/user-state/${g.body.association}/chunks/${c.index}`, c.bytes), 201);
    }
    assert.equal((await m.call("POST", `/mp/v1/user-state/${g.body.association}/captured`, { files: 1, stateBytes: 1000 })).status, 200);
    assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "", state: "succeeded" })).status, 201);
    return { m, deviceId: d.body.id, runId: run.body.id, association: g.body.association };
  }

  it("the report lists everything held about the device, never a secret's value", async () => {
    const h = await machineWithHistory(1);
    const r = await admin("GET", `/api/v1/devices/private-1/privacy-report`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.device.macs, ["52:54:00:9a:00:01"]);
    assert.equal(r.body.device.serial, "SN-1");
    assert.deepEqual(r.body.variables, [{ name: "LocalAdmin", secret: true }]);
    assert.ok(r.body.certificates.length >= 1);
    assert.deepEqual(r.body.leases.map((l: any) => l.ip), ["10.99.0.1"]);
    assert.equal(r.body.runs.length, 1);
    assert.ok(r.body.runs[0].logLines >= 2);
    assert.equal(r.body.associations[0].id, h.association);
    assert.equal(r.body.associations[0].state, "captured");
    assert.ok(r.body.audit.entries > 0 && r.body.audit.actions["association.capture"] === 1, JSON.stringify(r.body.audit));
    assert.equal(r.body.retention.runLogDays, 90);
    assert.ok(!r.text.includes(secretValue), "the report holds a secret's value");
    const analyst = await t.request("POST", "/api/v1/admins", { token: t.adminToken, body: { username: "no.device.read", roles: ["recovery-agent"], password: "No-Device-Read-0123456789" } });
    assert.equal(analyst.status, 201, analyst.text);
    h.m.close();
  });

  it("deleting a device purges its variables, runs, leases and associations (key first, stored state removed); certificates stay revoked", async () => {
    const h = await machineWithHistory(2);
    const folder = path.join(t.dataDir, "state", h.association);
    assert.ok(fs.existsSync(folder), "the capture stored nothing");
    const del = await admin("DELETE", `/api/v1/devices/${h.deviceId}`);
    assert.ok(del.status === 200 || del.status === 204, del.text);
    const s = stores(t.site.db);
    assert.equal(await s.associations.byId(h.association), undefined, "the association row survived its device");
    assert.ok(!fs.existsSync(folder), "the stored user state survived its device");
    assert.equal(await s.runs.byId(h.runId), undefined, "the run survived its device");
    assert.equal(await s.runs.eventCount(h.runId), 0);
    assert.equal(await s.leases.byMac("52:54:00:9a:00:02"), undefined, "the lease survived its device");
    assert.deepEqual(await s.variables.list({ scope: "device", scopeId: h.deviceId }), []);
    const certs = (await s.certificates.list()).filter((c) => c.subject.includes("private-2") || c.deviceId === h.deviceId);
    assert.ok(certs.every((c) => c.status === "revoked"));
    const shredded = await t.site.audit.list({ action: "association.delete", limit: 1000 });
    const entry = shredded.find((e) => e.object === `association:${h.association}`);
    assert.ok(entry && (entry.details as any).reason === "its device was deleted" && (entry.details as any).keyDestroyed === true, JSON.stringify(entry));
    const gone = await t.site.audit.list({ action: "device.delete", limit: 1000 });
    assert.equal((gone.find((e) => e.object === `device:${h.deviceId}`)?.details as any)?.associations, 1);
    h.m.close();
  });

  it("retention: 0 days is refused; step output goes after the retention, the run stays and a finished required deployment stays finished", async () => {
    for (const bad of [0, -1, 3651, 1.5]) {
      const r = await admin("PUT", "/api/v1/privacy/settings", { runLogDays: bad });
      assert.equal(r.status, 400, `${bad}: ${r.text}`);
    }
    const set = await admin("PUT", "/api/v1/privacy/settings", { runLogDays: 30 });
    assert.equal(set.status, 200, set.text);
    assert.equal(set.body.runLogDays, 30);
    assert.equal((await admin("GET", "/api/v1/privacy/settings")).body.runLogDays, 30);
    const changed = await t.site.audit.list({ action: "privacy.settings" });
    assert.equal((changed.at(-1)?.details as any)?.runLogDays, 30);

    const h = await machineWithHistory(3);
    const s = stores(t.site.db);
    assert.ok(await s.runs.eventCount(h.runId) > 0);
    offset += 29 * 24 * 3600_000;
    assert.equal(await sweepRunLogs(t.site), 0, "step output purged before its retention ended");
    assert.ok(await s.runs.eventCount(h.runId) > 0);
    offset += 2 * 24 * 3600_000;
    assert.ok(await sweepRunLogs(t.site) > 0);
    assert.equal(await s.runs.eventCount(h.runId), 0, "step output kept past its retention");
    const run = await s.runs.byId(h.runId);
    assert.equal(run?.state, "succeeded", "the run itself was purged");
    assert.ok(await s.runs.finished(run!.deviceId, depId), "the finished required deployment would run again");
    const purged = await t.site.audit.list({ action: "run.logs-purged" });
    assert.ok(purged.length >= 1);
    h.m.close();
  });
});
