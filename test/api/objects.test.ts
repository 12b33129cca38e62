/** Devices, collections, variables, task sequences and deployments through the API. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createPublicKey } from "node:crypto";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { verifyValue } from "../../src/security/signing.ts";

describe("site objects", () => {
  let t: TestSite;
  const req = (m: string, p: string, body?: unknown, token?: string) => t.request(m, p, { token: token ?? t.adminToken, body });
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  it("devices: MACs and UUIDs are normalized, unique, and a new device is pending", async () => {
    const r = await req("POST", "/api/v1/devices", { name: "pc-01", macs: ["52-54-00-AA-BB-01"], smbiosUuid: "0E5D3C4A-1111-4A2B-8C3D-0000000000AA", attributes: { room: "B12", cores: 4 } });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body.macs, ["52:54:00:aa:bb:01"]);
    assert.equal(r.body.smbiosUuid, "0e5d3c4a-1111-4a2b-8c3d-0000000000aa");
    assert.equal(r.body.state, "pending");
    const dup = await req("POST", "/api/v1/devices", { name: "pc-02", macs: ["52:54:00:aa:bb:01"] });
    assert.equal(dup.status, 409);
    assert.match(dup.body.message, /already belongs to device "pc-01"/);
    const bad = await req("POST", "/api/v1/devices", { name: "pc-03", macs: ["not-a-mac"] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.details[0].path, "macs.0");
    const byMac = await req("GET", "/api/v1/devices?mac=52:54:00:AA:BB:01");
    assert.deepEqual(byMac.body.map((d: { name: string }) => d.name), ["pc-01"]);
    const approved = await req("POST", `/api/v1/devices/${r.body.id}/approve`);
    assert.equal(approved.body.state, "approved");
    const blocked = await req("POST", "/api/v1/devices/pc-01/block");
    assert.equal(blocked.body.state, "blocked");
  });

  it("collections: rule members and static members, a bad rule is 422 with its position", async () => {
    await req("POST", "/api/v1/devices", { name: "pc-10", attributes: { room: "C3" } });
    await req("POST", "/api/v1/devices", { name: "pc-11", attributes: { room: "C3" } });
    await req("POST", "/api/v1/devices", { name: "pc-12", attributes: { room: "D1" } });
    const c = await req("POST", "/api/v1/collections", { name: "Room C3", rule: "attributes.room == 'C3'" });
    assert.equal(c.status, 201, c.text);
    assert.equal(c.body.memberCount, 2);
    assert.equal((await req("POST", "/api/v1/collections/Room C3/members", { device: "pc-12" })).status, 201);
    const members = await req("GET", "/api/v1/collections/Room%20C3/members");
    assert.deepEqual(members.body.map((m: { name: string; static: boolean }) => `${m.name}:${m.static}`).sort(), ["pc-10:false", "pc-11:false", "pc-12:true"]);
    const bad = await req("POST", "/api/v1/collections", { name: "Broken", rule: "attributes.room == " });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.code, "SLIPWAY_RULE_INVALID");
    assert.equal(typeof bad.body.details[0].position, "number");
    const dev = await req("GET", "/api/v1/devices/pc-12");
    assert.deepEqual(dev.body.collections, [c.body.id]);
  });

  it("variables: scoped, replaced in place, secrets write-only and never made plain", async () => {
    const site = await req("POST", "/api/v1/variables", { scope: "site", name: "TimeZone", value: "UTC" });
    assert.equal(site.status, 201);
    const again = await req("POST", "/api/v1/variables", { scope: "site", name: "TimeZone", value: "Europe/Berlin" });
    assert.equal(again.status, 200);
    assert.equal(again.body.id, site.body.id);
    assert.equal(again.body.value, "Europe/Berlin");
    const dev = await req("POST", "/api/v1/variables", { scope: "device", target: "pc-10", name: "OSDComputerName", value: "PC10" });
    assert.equal(dev.status, 201);
    assert.equal((await req("POST", "/api/v1/variables", { scope: "device", name: "X", value: "1" })).status, 400, "device scope needs a target");
    assert.equal((await req("POST", "/api/v1/variables", { scope: "device", target: "nope", name: "X", value: "1" })).status, 404);
    const sec = await req("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "hunter2-but-longer", secret: true });
    assert.deepEqual([sec.body.secret, sec.body.isSet, "value" in sec.body], [true, true, false]);
    const plain = await req("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "oops", secret: false });
    assert.equal(plain.status, 409);
    const list = await req("GET", "/api/v1/variables?scope=device&target=pc-10");
    assert.deepEqual(list.body.map((v: { name: string }) => v.name), ["OSDComputerName"]);
  });

  it("task sequences: every error with its step path; versions are signed and immutable", async () => {
    const broken = { document: "name: Broken\nsteps:\n  - name: A\n    type: partition-disk\n    with: { scheme: zfs }\n  - name: B\n    type: teleport\n  - name: C\n    type: run-command\n    with: { command: 'x' }\n    runAs: { secret: NoSuchSecret }\n" };
    const v = await req("POST", "/api/v1/task-sequences/validate", broken);
    assert.equal(v.status, 200);
    assert.equal(v.body.ok, false);
    const paths = v.body.errors.map((e: { path: string }) => e.path).join("\n");
    assert.match(paths, /steps\[0\] "A"/);
    assert.match(paths, /steps\[1\] "B"/);
    const refused = await req("POST", "/api/v1/task-sequences", broken);
    assert.equal(refused.status, 422);
    assert.equal(refused.body.code, "SLIPWAY_TASK_SEQUENCE_INVALID");
    assert.ok(refused.body.details.length >= 3, JSON.stringify(refused.body.details));

    const yaml = fs.readFileSync(path.join(import.meta.dirname, "../../examples/deploy-debian.yaml"), "utf8");
    const missing = await req("POST", "/api/v1/task-sequences", { document: yaml });
    assert.equal(missing.status, 422, "the Run As secret does not exist yet");
    assert.match(JSON.stringify(missing.body.details), /DirectoryJoinCredential/);
    await req("POST", "/api/v1/variables", { scope: "site", name: "DirectoryJoinCredential", value: "svc-join:Secret-Value-1", secret: true });
    const created = await req("POST", "/api/v1/task-sequences", { document: yaml });
    assert.equal(created.status, 201, created.text);
    const name = created.body.name;
    const v1 = await req("GET", `/api/v1/task-sequences/${encodeURIComponent(name)}/versions/1`);
    const pub = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
    const { digest, signature, ...envelope } = v1.body;
    assert.equal(envelope.kind, "slipway.task-sequence/v1");
    assert.ok(verifyValue(pub, envelope, signature), "the site signature verifies with the published key");
    assert.ok(!verifyValue(pub, { ...envelope, version: 2 }, signature), "and binds the version");
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);

    const changed = yaml.replace(/^description:.*$/m, "description: second version");
    const p2 = await req("POST", `/api/v1/task-sequences/${created.body.id}/versions`, { document: changed });
    assert.equal(p2.status, 201, p2.text);
    assert.equal(p2.body.version, 2);
    const again = await req("GET", `/api/v1/task-sequences/${created.body.id}/versions/1`);
    assert.deepEqual(again.body, v1.body, "version 1 is unchanged");
    const wrongName = await req("POST", `/api/v1/task-sequences/${created.body.id}/versions`, { document: changed.replace(/^name:.*$/m, "name: Other") });
    assert.equal(wrongName.status, 400);
  });

  it("deployments: pin a version, validate the window, block deletion of what they use", async () => {
    const ts = (await req("GET", "/api/v1/task-sequences")).body.find((x: { latestVersion: number }) => x.latestVersion === 2);
    const d = await req("POST", "/api/v1/deployments", { name: "C3 rebuild", taskSequence: ts.id, version: 1, collection: "Room C3", purpose: "required", bootPaths: ["pxe"] });
    assert.equal(d.status, 201, d.text);
    assert.equal(d.body.taskSequenceVersion, 1);
    assert.deepEqual(d.body.bootPaths, ["pxe"]);
    const latest = await req("POST", "/api/v1/deployments", { name: "C3 latest", taskSequence: ts.name, collection: "Room C3" });
    assert.equal(latest.body.taskSequenceVersion, 2);
    const window = await req("POST", "/api/v1/deployments", { name: "W", taskSequence: ts.name, collection: "Room C3", availableFrom: "2026-12-01T00:00:00Z", availableUntil: "2026-11-01T00:00:00Z" });
    assert.equal(window.status, 400);
    assert.equal((await req("POST", "/api/v1/deployments", { name: "V", taskSequence: ts.name, version: 9, collection: "Room C3" })).status, 400);
    assert.equal((await req("DELETE", `/api/v1/task-sequences/${ts.id}`)).status, 409);
    assert.equal((await req("DELETE", "/api/v1/collections/Room%20C3")).status, 409);
    const patched = await req("PATCH", `/api/v1/deployments/${d.body.id}`, { version: "latest", enabled: false });
    assert.deepEqual([patched.body.taskSequenceVersion, patched.body.enabled], [2, false]);
  });

  it("security scopes: a scoped administrator sees and changes only its collections", async () => {
    const lab = (await req("POST", "/api/v1/collections", { name: "Lab E", rule: "attributes.room == 'E'" })).body;
    await req("POST", "/api/v1/devices", { name: "e-1", attributes: { room: "E" } });
    const token = await adminWithRoles(t, "lab.tech", ["deployment-administrator"], [lab.id]);
    const devices = (await req("GET", "/api/v1/devices", undefined, token)).body.map((d: { name: string }) => d.name);
    assert.deepEqual(devices, ["e-1"]);
    assert.deepEqual((await req("GET", "/api/v1/collections", undefined, token)).body.map((c: { name: string }) => c.name), ["Lab E"]);
    assert.equal((await req("GET", "/api/v1/devices/pc-10", undefined, token)).status, 404);
    assert.equal((await req("PATCH", "/api/v1/devices/pc-10", { attributes: {} }, token)).status, 404);
    assert.equal((await req("POST", "/api/v1/variables", { scope: "site", name: "Y", value: "1" }, token)).status, 403);
    assert.equal((await req("POST", "/api/v1/variables", { scope: "device", target: "e-1", name: "Y", value: "1" }, token)).status, 201);
    assert.equal((await req("POST", "/api/v1/devices", { name: "e-2" }, token)).status, 403, "must place it in a scoped collection");
    assert.equal((await req("POST", "/api/v1/devices", { name: "e-2", collections: ["Lab E"] }, token)).status, 201);
    const ts = (await req("GET", "/api/v1/task-sequences", undefined, token)).body[0];
    assert.equal((await req("POST", "/api/v1/deployments", { name: "E", taskSequence: ts.id, collection: "Room C3" }, token)).status, 400);
    assert.equal((await req("POST", "/api/v1/deployments", { name: "E", taskSequence: ts.id, collection: "Lab E" }, token)).status, 201);
  });

  it("the OpenAPI document lists every route with its permission", async () => {
    const doc = (await t.request("GET", "/api/v1/openapi.json")).body;
    assert.equal(doc.openapi, "3.1.0");
    for (const r of t.server.routes) {
      const op = doc.paths[r.path.replace(/:([A-Za-z]+)/g, "{$1}")]?.[r.method.toLowerCase()];
      assert.ok(op, `${r.method} ${r.path} missing`);
      assert.equal(op["x-slipway-permission"], r.access);
    }
    const schema = (await t.request("GET", "/api/v1/schemas/task-sequence.json")).body;
    assert.equal(schema.$id, "https://slipway.dev/schemas/task-sequence.json");
  });
});
