/**
 * User state over the management point, as a deploying machine and an attacker see it (real
 * HTTPS and mutual TLS, real site, real state store on disk): the data key is released only to
 * the running capture or restore step of the association's own device; the store keeps only
 * ciphertext (a canary is searched for in plain, base64 and hex across the data folder); a
 * second capture, a restore before capture, another device, a chunk of another stream are all
 * refused; the restore gets back exactly what was captured and starts the "delete after" clock.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { newMachine, enrollApproved, type TestMachine, bytesCall } from "../support/device.ts";
import { sealStream, openStream, CHUNK_SIZE } from "../../src/security/state-cipher.ts";
import { stores } from "../../src/storage/stores.ts";

/** Every file under a folder, recursively. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

async function* once(b: Buffer) {
  yield b;
}

describe("user state through the management point", () => {
  let t: TestSite;
  let pc: TestMachine;
  let other: TestMachine;
  let depId = "";
  const canary = `canary-${crypto.randomBytes(12).toString("hex")}`;
  // Several chunks, the canary in each: the first, one in the middle, the end.
  const state = Buffer.concat([Buffer.from(canary), crypto.randomBytes(CHUNK_SIZE + 1000), Buffer.from(canary), crypto.randomBytes(CHUNK_SIZE), Buffer.from(canary)]);
  const admin = (method: string, p: string, body?: unknown) => t.request(method, p, { token: t.adminToken, body });

  before(async () => {
    t = await startTestSite();
    const doc = { name: "Refresh", steps: [
      { name: "Capture", type: "capture-user-state" },
      { name: "Restore", type: "restore-user-state" },
    ] };
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Refresh lab" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Refresh", taskSequence: "Refresh", collection: "Refresh lab", purpose: "available", bootPaths: ["pxe", "media"] });
    assert.equal(dep.status, 201, dep.text);
    depId = dep.body.id;
    for (const [name, n] of [["refresh-pc", 1], ["other-pc", 2]] as const) {
      const ids = { macs: [`52:54:00:5e:00:0${n}`], smbiosUuid: `00000000-0000-4000-8000-0000005e000${n}` };
      assert.equal((await admin("POST", "/api/v1/devices", { name, ...ids, state: "approved", collections: ["Refresh lab"] })).status, 201);
      const m = await newMachine(t, ids);
      assert.equal((await enrollApproved(t, m)).status, 201);
      if (n === 1) pc = m;
      else other = m;
    }
  });
  after(async () => {
    pc?.close();
    other?.close();
    await t?.close();
  });

  async function runAt(m: TestMachine, step: string): Promise<string> {
    const run = await m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
    assert.ok(run.status === 201 || run.status === 200, run.text);
    assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step, state: "started" })).status, 201);
    return run.body.id;
  }

  it("refuses a restore before anything was captured, and a grant for a step that is not running", async () => {
    const runId = await runAt(pc, "1");
    const early = await pc.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: "1", action: "restore" });
    assert.equal(early.status, 409, early.text);
    assert.match(early.body.message, /no association names this device|nothing was captured/);
    const wrongStep = await pc.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: "0", action: "capture" });
    assert.equal(wrongStep.status, 403, wrongStep.text);
    assert.equal((await stores(t.site.db).associations.list()).length, 0, "a refused grant made an association");
  });

  let association = "";
  let captureRun = "";
  it("captures: a refresh association is made by itself, chunks are stored, only ciphertext reaches the disk", async () => {
    captureRun = await runAt(pc, "0");
    const g = await pc.call("POST", `/mp/v1/runs/${captureRun}/user-state`, { step: "0", action: "capture" });
    assert.equal(g.status, 200, g.text);
    assert.equal(g.body.kind, "refresh");
    association = g.body.association;
    // Another machine's certificate gets nothing of it.
    const stolen = await bytesCall(t, other, "PUT", `/mp/v1/user-state/${association}/chunks/0`, Buffer.alloc(100));
    assert.equal(stolen.status, 403, stolen.body.toString());
    let count = 0;
    for await (const c of sealStream(once(state), { dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: association, streamId: g.body.streamId })) {
      const r = await bytesCall(t, pc, "PUT", `/mp/v1/user-state/${association}/chunks/${c.index}`, c.bytes);
      assert.equal(r.status, 201, r.body.toString());
      count++;
    }
    assert.equal(count, 3);
    // A chunk sealed for another stream (an earlier attempt, or forged) is refused.
    const foreign = sealStream(once(Buffer.from("x")), { dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: association });
    for await (const c of foreign) {
      const r = await bytesCall(t, pc, "PUT", `/mp/v1/user-state/${association}/chunks/3`, c.bytes);
      assert.ok(r.status >= 400 && r.status < 500, `a foreign stream's chunk was stored: ${r.status}`);
    }
    const done = await pc.call("POST", `/mp/v1/user-state/${association}/captured`, { files: 3, stateBytes: state.length });
    assert.equal(done.status, 200, done.text);
    assert.equal(done.body.chunks, 3);
    const a = await t.request("GET", `/api/v1/associations/${association}`, { token: t.adminToken });
    assert.equal(a.body.state, "captured");
    assert.equal(a.body.chunks, 3);

    const needles = [canary, Buffer.from(canary).toString("base64").slice(0, 24), Buffer.from(canary).toString("hex")];
    for (const f of filesUnder(t.dataDir)) {
      const text = fs.readFileSync(f).toString("latin1");
      for (const n of needles) assert.ok(!text.includes(n), `${f} holds the canary (${n})`);
    }
    const audit = await t.site.audit.list({});
    assert.ok(!JSON.stringify(audit).includes(canary));
  });

  it("a second capture of the same association is refused", async () => {
    const r = await pc.call("POST", `/mp/v1/runs/${captureRun}/user-state`, { step: "0", action: "capture" });
    assert.equal(r.status, 409, r.text);
    assert.match(r.body.message, /already captured/);
  });

  it("restores exactly what was captured, only to its destination's running restore step, and starts the delete-after clock", async () => {
    const runId = await runAt(pc, "1");
    const theirs = await runAt(other, "1");
    const notMine = await other.call("POST", `/mp/v1/runs/${theirs}/user-state`, { step: "1", action: "restore" });
    assert.equal(notMine.status, 409, notMine.text);
    const peek = await bytesCall(t, other, "GET", `/mp/v1/user-state/${association}/chunks/0`);
    assert.equal(peek.status, 403);
    const g = await pc.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: "1", action: "restore" });
    assert.equal(g.status, 200, g.text);
    assert.equal(g.body.chunks, 3);
    const fetched = async function* () {
      for (let i = 0; i < g.body.chunks; i++) {
        const r = await bytesCall(t, pc, "GET", `/mp/v1/user-state/${association}/chunks/${i}`);
        assert.equal(r.status, 200);
        yield r.body;
      }
    };
    const parts: Buffer[] = [];
    for await (const p of openStream(fetched(), { dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: association })) parts.push(p);
    assert.ok(Buffer.concat(parts).equals(state), "the restored state differs from the captured one");
    const ok = await pc.call("POST", `/mp/v1/user-state/${association}/restored`, { files: 3, notRestored: 0 });
    assert.equal(ok.status, 200, ok.text);
    const a = (await t.request("GET", `/api/v1/associations/${association}`, { token: t.adminToken })).body;
    assert.equal(a.state, "restored");
    assert.equal(Date.parse(a.deleteAt) - Date.parse(a.restoredAt), 24 * 3600_000);
    const releases = await t.site.audit.list({ action: "association.key-release" });
    assert.deepEqual(releases.filter((e) => e.object === `association:${association}`).map((e) => (e.details as any).for), ["capture", "restore"]);
  });
});
