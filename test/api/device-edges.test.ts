/**
 * Edges between device features found while reviewing issue #10's fixes: an unapproved
 * device's certificate, what a machine reports about itself, and what a conflict tells a
 * scoped administrator about devices outside its scopes.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { newMachine } from "../support/device.ts";

describe("device edges", () => {
  let t: TestSite;
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  it("unapproving a device refuses its live certificate on the next request, until it is approved again", async () => {
    const ids = { macs: ["52:54:00:31:00:01"], smbiosUuid: "00000000-0000-4000-8000-000000310001" };
    const d = await admin("POST", "/api/v1/devices", { name: "edge-unapproved", ...ids, state: "approved" });
    assert.equal(d.status, 201, d.text);
    const m = await newMachine(t, ids);
    try {
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      assert.equal((await m.call("GET", "/mp/v1/policy?bootPath=pxe")).status, 200);
      assert.equal((await admin("POST", `/api/v1/devices/${d.body.id}/unapprove`)).status, 200);
      const refused = await m.call("GET", "/mp/v1/policy?bootPath=pxe");
      assert.equal(refused.status, 403, refused.text);
      assert.equal(refused.body.code, "SLIPWAY_DEVICE_BLOCKED");
      const denied = (await admin("GET", "/api/v1/audit?action=mp.denied&limit=1000")).body as { details: { reason?: string } }[];
      assert.ok(denied.some((e) => /not approved/.test(e.details?.reason ?? "")), "the refusal is audited with its reason");
      assert.equal((await admin("POST", `/api/v1/devices/${d.body.id}/approve`)).status, 200);
      assert.equal((await m.call("GET", "/mp/v1/policy?bootPath=pxe")).status, 200, "approval resumes the same identity");
    } finally {
      m.close();
    }
  });

  it("a machine reporting a serial, vendor, model or disk name with invisible or direction-changing characters is refused and nothing is created", async () => {
    const secret = (await admin("POST", "/api/v1/enrollment-credentials", { name: "edge media", uses: 10 })).body.secret as string;
    const before = (await admin("GET", "/api/v1/devices")).body.length;
    let n = 0;
    for (const [field, value] of [
      ["serial", "SN1\u202Egpj.exe"], ["serial", "SN\u200B2"], ["vendor", "QEMU\u2066"], ["model", "PC\uFEFF"], ["serial", "SN\uD800"],
      ["disks", [{ name: "vda\u202E", sizeBytes: 1 }]],
    ] as const) {
      n++;
      const m = await newMachine(t, { macs: [`52:54:00:31:01:${n.toString(16).padStart(2, "0")}`], smbiosUuid: null });
      const r = await m.enroll({ kind: "media", secret }, { [field]: value });
      m.close();
      assert.equal(r.status, 400, `${field}=${JSON.stringify(value)}: ${r.text}`);
      assert.equal(r.body.code, "SLIPWAY_VALIDATION");
    }
    assert.equal((await admin("GET", "/api/v1/devices")).body.length, before, "no device was created");
    const creds = (await admin("GET", "/api/v1/enrollment-credentials")).body as { name: string; usesLeft: number }[];
    assert.equal(creds.find((c) => c.name === "edge media")?.usesLeft, 10, "no use of the credential was spent");
  });

  it("a scoped administrator's conflict names only devices it may see", async () => {
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Edge A" })).status, 201);
    const hidden = await admin("POST", "/api/v1/devices", { name: "edge-hidden-name", macs: ["52:54:00:31:02:01"], smbiosUuid: "00000000-0000-4000-8000-000000310201" });
    assert.equal(hidden.status, 201);
    const visible = await admin("POST", "/api/v1/devices", { name: "edge-visible-name", macs: ["52:54:00:31:02:02"], collections: ["Edge A"] });
    assert.equal(visible.status, 201);
    const collId = (await admin("GET", "/api/v1/collections")).body.find((c: { name: string }) => c.name === "Edge A").id;
    const scoped = await adminWithRoles(t, "edge-scoped", ["deployment-administrator"], [collId]);
    for (const body of [
      { name: "edge-new-1", macs: ["52:54:00:31:02:01"], collections: ["Edge A"] },
      { name: "edge-new-2", smbiosUuid: "00000000-0000-4000-8000-000000310201", collections: ["Edge A"] },
    ]) {
      const r = await t.request("POST", "/api/v1/devices", { token: scoped, body });
      assert.equal(r.status, 409, r.text);
      assert.ok(!r.text.includes("edge-hidden-name"), `an out-of-scope device is not named: ${r.text}`);
    }
    const patch = await t.request("PATCH", `/api/v1/devices/${visible.body.id}`, { token: scoped, body: { macs: ["52:54:00:31:02:01"] } });
    assert.equal(patch.status, 409, patch.text);
    assert.ok(!patch.text.includes("edge-hidden-name"));
    const own = await t.request("POST", "/api/v1/devices", { token: scoped, body: { name: "edge-new-3", macs: ["52:54:00:31:02:02"], collections: ["Edge A"] } });
    assert.equal(own.status, 409);
    assert.match(own.text, /edge-visible-name/, "a device it may see is still named");
  });
});

describe("request bodies", () => {
  let t: TestSite;
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  it("malformed UTF-8 is refused, not stored as U+FFFD; invisible fillers, operators and tags in names are refused", async () => {
    const before = (await t.request("GET", "/api/v1/devices", { token: t.adminToken })).body.length;
    for (const bytes of [[0xed, 0xa0, 0x80], [0xff, 0xfe], [0xc0, 0xaf]]) {
      const raw = Buffer.concat([Buffer.from('{"name":"bad'), Buffer.from(bytes), Buffer.from('x"}')]);
      const r = await t.request("POST", "/api/v1/devices", { token: t.adminToken, rawBody: raw, headers: { "content-type": "application/json" } });
      assert.equal(r.status, 400, `${Buffer.from(bytes).toString("hex")}: ${r.text}`);
      assert.match(r.body.message, /UTF-8/);
    }
    for (const ch of ["\u{E0041}", "\u3164", "\u115F", "\u2062", "\u180E"]) {
      const r = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: `pc${ch}1` } });
      assert.equal(r.status, 400, `U+${ch.codePointAt(0)!.toString(16)}: ${r.text}`);
      assert.match(r.text, /invisible characters/);
    }
    assert.equal((await t.request("GET", "/api/v1/devices", { token: t.adminToken })).body.length, before, "nothing was created");
    const fine = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "Ärztezimmer-💻-1" } });
    assert.equal(fine.status, 201, fine.text);
  });
});

describe("identifiers that name no machine", () => {
  let t: TestSite;
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  it("zero, broadcast and multicast MACs are refused for devices and at enrollment; an unset SMBIOS UUID counts as none", async () => {
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    for (const mac of ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"]) {
      const r = await admin("POST", "/api/v1/devices", { name: `junk-${mac.replace(/:/g, "")}`, macs: [mac] });
      assert.equal(r.status, 400, r.text);
      assert.match(r.text, /names no network card/);
    }
    for (const uuid of ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"]) {
      assert.equal((await admin("POST", "/api/v1/devices", { name: "junk-uuid", macs: ["52:54:00:51:00:01"], smbiosUuid: uuid })).status, 400);
    }
    const secret = (await admin("POST", "/api/v1/enrollment-credentials", { name: "junk media", uses: 5 })).body.secret as string;
    const junk = await newMachine(t, { macs: ["ff:ff:ff:ff:ff:ff"], smbiosUuid: null });
    assert.equal((await junk.enroll({ kind: "media", secret })).status, 400);
    junk.close();
    const unset = await newMachine(t, { macs: ["52:54:00:51:00:02"], smbiosUuid: "00000000-0000-0000-0000-000000000000" });
    const e = await unset.enroll({ kind: "media", secret });
    unset.close();
    assert.equal(e.status, 201, e.text);
    const d = (await admin("GET", `/api/v1/devices/${e.body.deviceId}`)).body;
    assert.equal(d.smbiosUuid, null, "the all-zero UUID is recorded as none");
  });
});
