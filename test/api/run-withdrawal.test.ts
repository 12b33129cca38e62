/**
 * Found by the outside attack on issue #10's fixes: a run already started kept receiving its
 * Run As secret after the administrator withdrew the deployment, and a step name sent by the
 * device reached the run history unmasked.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { newMachine, type TestMachine, enrollApproved } from "../support/device.ts";

describe("a started run and its deployment", () => {
  let t: TestSite;
  let m: TestMachine;
  let deviceId = "";
  let depId = "";
  let collId = "";
  const secret = `Withdrawn/${randomBytes(6).toString("hex")}+&x y`;
  const admin = (method: string, p: string, body?: unknown) => t.request(method, p, { token: t.adminToken, body });

  before(async () => {
    t = await startTestSite();
    const ids = { macs: ["52:54:00:41:00:01"], smbiosUuid: "00000000-0000-4000-8000-000000410001" };
    const c = await admin("POST", "/api/v1/collections", { name: "Withdraw" });
    collId = c.body.id;
    const d = await admin("POST", "/api/v1/devices", { name: "withdraw-pc", ...ids, state: "approved", collections: ["Withdraw"] });
    assert.equal(d.status, 201, d.text);
    deviceId = d.body.id;
    assert.equal((await admin("POST", "/api/v1/variables", { scope: "collection", target: "Withdraw", name: "JoinSecret", value: secret, secret: true })).status, 201);
    const doc = { name: "Join", steps: [{ name: "Join", type: "run-command", with: { command: "true" }, runAs: { secret: "JoinSecret" } }] };
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Withdraw join", taskSequence: "Join", collection: "Withdraw", purpose: "required", bootPaths: ["pxe", "media"] });
    assert.equal(dep.status, 201, dep.text);
    depId = dep.body.id;
    m = await newMachine(t, ids);
    // An enrollment an administrator approved: sure enough to receive secrets.
    assert.equal((await enrollApproved(t, m)).status, 201);
  });
  after(async () => {
    m.close();
    await t.close();
  });

  async function startedRun(): Promise<string> {
    const run = await m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
    assert.ok(run.status === 201 || run.status === 200, run.text);
    assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "0", state: "started", name: "Join" })).status, 201);
    return run.body.id as string;
  }

  it("withdrawing the deployment stops the running step's secret at once, audited; putting it back releases it", async () => {
    const runId = await startedRun();
    const ask = () => m.call("POST", `/mp/v1/runs/${runId}/secrets`, { step: "0", name: "JoinSecret" });
    for (const [withdraw, restore] of [
      [["PATCH", `/api/v1/deployments/${depId}`, { enabled: false }], ["PATCH", `/api/v1/deployments/${depId}`, { enabled: true }]],
      [["PATCH", `/api/v1/deployments/${depId}`, { bootPaths: ["pxe"] }], ["PATCH", `/api/v1/deployments/${depId}`, { bootPaths: ["pxe", "media"] }]],
      [["PATCH", `/api/v1/deployments/${depId}`, { availableUntil: new Date(Date.now() - 60_000).toISOString() }], ["PATCH", `/api/v1/deployments/${depId}`, { availableUntil: null }]],
      [["DELETE", `/api/v1/collections/${collId}/members/${deviceId}`], ["POST", `/api/v1/collections/${collId}/members`, { device: deviceId }]],
    ] as const) {
      const w = await admin(withdraw[0], withdraw[1], withdraw[2]);
      assert.ok(w.status < 300, `${withdraw.join(" ")}: ${w.text}`);
      const r = await ask();
      assert.equal(r.status, 403, `after ${JSON.stringify(withdraw)}: ${r.text}`);
      assert.ok(!r.text.includes(secret));
      const rs = await admin(restore[0], restore[1], restore[2]);
      assert.ok(rs.status < 300, `${restore.join(" ")}: ${rs.text}`);
    }
    const denied = (await admin("GET", "/api/v1/audit?action=secret.release&outcome=denied&limit=1000")).body as { details: { reason: string } }[];
    assert.equal(denied.filter((e) => /no longer targets this device/.test(e.details.reason)).length, 4, "each refusal is audited with its reason");
    const ok = await ask();
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.value, secret);
  });

  it("a step name carrying the secret is masked in the run history", async () => {
    const run = await m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
    const runId = run.body.id as string;
    const json = JSON.stringify(secret).slice(1, -1).replace(/\//g, "\\/");
    for (const name of [`leak ${secret}`, `hex ${Buffer.from(secret).toString("hex")}`]) {
      assert.equal((await m.call("POST", `/mp/v1/runs/${runId}/events`, { step: "0", state: "progress", name, message: `json ${json}` })).status, 201);
    }
    const view = await admin("GET", `/api/v1/runs/${runId}`);
    assert.equal(view.status, 200);
    for (const form of [secret, Buffer.from(secret).toString("hex"), json]) assert.ok(!view.text.includes(form), `"${form}" appears in ${view.text}`);
    assert.match(view.text, /leak \*+/);
  });
});
