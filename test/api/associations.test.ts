/**
 * Computer associations over the API, as an administrator sees them: creating (refresh in
 * place, replace), the refusals that change nothing, who may see and change them, deletion
 * destroying the key first, and the retention sweep on a fake clock (an unrestored association
 * is warned about, then shredded; "delete after" below an hour is refused).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { sweepAssociations } from "../../src/site/services/associations.ts";
import { stateChunksOf } from "../../src/site/state-store.ts";
import { stores } from "../../src/storage/stores.ts";

const HOUR = 3600_000;

describe("computer associations", () => {
  let t: TestSite;
  let offset = 0;
  const start = Date.now();
  before(async () => {
    t = await startTestSite({ now: () => new Date(start + offset) });
  });
  after(() => t.close());
  const as = (token: string, method: string, p: string, body?: unknown) => t.request(method, p, { token, body });
  let n = 0;
  const device = async (name = `pc-${++n}`) => {
    const r = await as(t.adminToken, "POST", "/api/v1/devices", { name, macs: [`52:54:00:7a:00:${(++n).toString(16).padStart(2, "0")}`], state: "approved" });
    assert.equal(r.status, 201, r.text);
    return r.body as { id: string; name: string };
  };
  const count = async () => (await stores(t.site.db).associations.list()).length;

  it("a refresh and a replace are created pending, audited, and never show their key", async () => {
    const a = await device();
    const r = await as(t.adminToken, "POST", "/api/v1/associations", { inPlace: a.name });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.kind, "refresh");
    assert.equal(r.body.state, "pending");
    assert.equal(r.body.sourceDeviceId, a.id);
    assert.equal(r.body.destinationDeviceId, a.id);
    assert.equal(r.body.keyDestroyed, false);
    assert.equal(r.body.deleteAfterSeconds, 24 * 3600);
    assert.ok(!("sealedKey" in r.body) && !("streamId" in r.body), "the sealed key or stream left the site");
    const shown = await as(t.adminToken, "GET", `/api/v1/associations/${r.body.id}`);
    assert.ok(!JSON.stringify(shown.body).includes("wrappedKey"));
    const audit = await as(t.adminToken, "GET", `/api/v1/audit?action=association.create`);
    assert.ok(audit.body.some((e: any) => e.object === `association:${r.body.id}` && e.details.kind === "refresh"), audit.text);

    const [old, fresh] = [await device(), await device()];
    const rep = await as(t.adminToken, "POST", "/api/v1/associations", { source: old.id, destination: fresh.name, deleteAfterHours: 48 });
    assert.equal(rep.status, 201, rep.text);
    assert.equal(rep.body.kind, "replace");
    assert.equal(rep.body.source, old.name);
    assert.equal(rep.body.destination, fresh.name);
    assert.equal(rep.body.deleteAfterSeconds, 48 * 3600);
  });

  it("refuses, changing nothing: both or neither form, the same device twice, a device already associated, delete-after under an hour", async () => {
    const [a, b] = [await device(), await device()];
    const before = await count();
    const cases: [unknown, number, string][] = [
      [{}, 400, "SLIPWAY_VALIDATION"],
      [{ inPlace: a.id, source: a.id, destination: b.id }, 400, "SLIPWAY_VALIDATION"],
      [{ source: a.id }, 400, "SLIPWAY_VALIDATION"],
      [{ source: a.id, destination: a.name }, 400, "SLIPWAY_VALIDATION"],
      [{ inPlace: a.id, deleteAfterHours: 0 }, 400, "SLIPWAY_VALIDATION"],
      [{ inPlace: a.id, deleteAfterHours: 0.5 }, 400, "SLIPWAY_VALIDATION"],
      [{ inPlace: "no-such-device" }, 404, "SLIPWAY_NOT_FOUND"],
    ];
    for (const [body, status, code] of cases) {
      const r = await as(t.adminToken, "POST", "/api/v1/associations", body);
      assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.body.code, code);
    }
    assert.match((await as(t.adminToken, "POST", "/api/v1/associations", { inPlace: a.id, deleteAfterHours: 0.5 })).body.message, /at least 1 hour/);
    assert.equal(await count(), before, "a refused association was created");
    assert.equal((await as(t.adminToken, "POST", "/api/v1/associations", { source: a.id, destination: b.id })).status, 201);
    for (const body of [{ inPlace: a.id }, { inPlace: b.id }, { source: b.id, destination: (await device()).id }]) {
      const r = await as(t.adminToken, "POST", "/api/v1/associations", body);
      assert.equal(r.status, 409, r.text);
      assert.match(r.body.message, /already in association/);
    }
    assert.equal(await count(), before + 1);
  });

  it("needs association.write to change and association.read to see; a scoped administrator sees only its devices'", async () => {
    const a = await device();
    const analyst = await adminWithRoles(t, "assoc.analyst", ["read-only-analyst"]);
    const deployer = await adminWithRoles(t, "assoc.deployer", ["deployment-administrator"]);
    const infra = await adminWithRoles(t, "assoc.infra", ["infrastructure-administrator"]);
    const refused = await as(analyst, "POST", "/api/v1/associations", { inPlace: a.id });
    assert.equal(refused.status, 403, refused.text);
    const made = await as(deployer, "POST", "/api/v1/associations", { inPlace: a.id });
    assert.equal(made.status, 201, made.text);
    assert.equal((await as(analyst, "GET", `/api/v1/associations/${made.body.id}`)).status, 200);
    assert.equal((await as(infra, "GET", `/api/v1/associations/${made.body.id}`)).status, 403);
    assert.equal((await as(analyst, "DELETE", `/api/v1/associations/${made.body.id}`)).status, 403);
    assert.equal((await as(t.adminToken, "GET", `/api/v1/associations/${made.body.id}`)).body.state, "pending");

    // A Deployment Administrator scoped to one collection: the other device does not exist for it.
    const inside = await device();
    const coll = await as(t.adminToken, "POST", "/api/v1/collections", { name: "assoc-lab" });
    assert.equal((await as(t.adminToken, "POST", `/api/v1/collections/${coll.body.id}/members`, { device: inside.id })).status, 201);
    const scoped = await adminWithRoles(t, "assoc.scoped", ["deployment-administrator"], [coll.body.id]);
    assert.equal((await as(scoped, "GET", `/api/v1/associations/${made.body.id}`)).status, 404);
    assert.ok(!(await as(scoped, "GET", "/api/v1/associations")).body.some((x: any) => x.id === made.body.id));
    const outside = await device();
    const r = await as(scoped, "POST", "/api/v1/associations", { source: inside.id, destination: outside.id });
    assert.equal(r.status, 404, r.text);
    assert.equal((await as(scoped, "POST", "/api/v1/associations", { inPlace: inside.id })).status, 201);
  });

  it("delete destroys the key first and leaves a tombstone; a second delete changes nothing", async () => {
    const a = await device();
    const made = await as(t.adminToken, "POST", "/api/v1/associations", { inPlace: a.id });
    const del = await as(t.adminToken, "DELETE", `/api/v1/associations/${made.body.id}`);
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.state, "gone");
    assert.equal(del.body.keyDestroyed, true);
    assert.equal((await stores(t.site.db).associations.byId(made.body.id))!.sealedKey, null, "the sealed key is still in the database");
    assert.equal((await as(t.adminToken, "DELETE", `/api/v1/associations/${made.body.id}`)).body.state, "gone");
    const audit = await as(t.adminToken, "GET", `/api/v1/audit?action=association.delete`);
    assert.equal(audit.body.filter((e: any) => e.object === `association:${made.body.id}`).length, 1);
    // The device is free for a new association.
    assert.equal((await as(t.adminToken, "POST", "/api/v1/associations", { inPlace: a.id })).status, 201);
  });

  it("an association never restored is warned about a day before and destroyed after 30 days (fake clock)", async () => {
    const a = await device();
    const made = await as(t.adminToken, "POST", "/api/v1/associations", { inPlace: a.id });
    const id = made.body.id as string;
    const sweep = () => sweepAssociations(t.site, stateChunksOf(t.site));
    offset += 28 * 24 * HOUR;
    let r = await sweep();
    assert.ok(!r.warned.includes(id) && !r.expired.includes(id), "warned or expired too early");
    offset += 1 * 24 * HOUR + HOUR;
    r = await sweep();
    assert.ok(r.warned.includes(id), "no warning a day before expiry");
    assert.ok(!(await sweep()).warned.includes(id), "warned twice");
    // Sessions expire on this clock too: from here the site is read directly.
    const row = () => stores(t.site.db).associations.byId(id);
    assert.equal((await row())!.state, "pending");
    offset += 24 * HOUR;
    r = await sweep();
    assert.ok(r.expired.includes(id), JSON.stringify(r));
    const gone = (await row())!;
    assert.equal(gone.state, "gone");
    assert.equal(gone.sealedKey, null);
    assert.match(gone.goneReason ?? "", /expired: nothing was captured/);
    const warned = await t.site.audit.list({ action: "association.expiring" });
    assert.ok(warned.some((e) => e.object === `association:${id}`));
    const expired = await t.site.audit.list({ action: "association.expire" });
    assert.ok(expired.some((e) => e.object === `association:${id}` && (e.details as any).keyDestroyed === true));
  });
});
