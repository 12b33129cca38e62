/**
 * The devices and device-TPM services (src/site/services/devices.ts, device-tpm.ts) called
 * directly, without HTTP, on a real site core on SQLite and PostgreSQL: an administrator's
 * decision arms or disarms pre-approval in the transaction that writes its audit entry; a
 * scoped administrator's look at a device outside its scopes reads as missing and is audited
 * as denied; a bulk decision that does not match what was expected, a link set by hand and an
 * endorsement key already bound to another device are refused and change nothing.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal as admin, refused } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { createDevice, decideDevice, decidePending, getDevice, listDevices, updateDevice } from "../../src/site/services/devices.ts";
import { clearDeviceTpm, deviceTpmOf, importDeviceTpm } from "../../src/site/services/device-tpm.ts";

const ek = () => generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "pem" }).toString();

for (const database of databasesUnderTest()) {
  describe(`devices service on ${database}`, () => {
    let core: SiteCore;
    before(async () => { core = await openSiteCore(database); });
    after(() => core?.close());
    const snapshot = async () => ({ devices: await stores(core.site.db).devices.list(), audit: (await core.site.audit.list({ limit: 10_000 })).length });
    const recorded = (name: string, link: string) =>
      stores(core.site.db).devices.create({ name, macs: [], smbiosUuid: null, serial: null, state: "pending", attributes: { firstSeenLink: link } }, core.site.now().toISOString());

    it("arms pre-approval on approval and disarms it on a block, each with its audit entry", async () => {
      const d = await createDevice(core.site, admin(null), { name: "svc-dev-1", macs: ["52:54:00:00:00:01"], attributes: {}, state: "pending", collections: [] });
      assert.equal(d.preApproval, "none");
      assert.equal((await decideDevice(core.site, admin(null), "svc-dev-1", "approve")).preApproval, "armed");
      assert.equal((await decideDevice(core.site, admin(null), d.id, "block")).preApproval, "none");
      const audit = (await core.site.audit.list({ limit: 10_000 })).filter((e) => e.object === `device:${d.id}`);
      assert.deepEqual(audit.map((e) => [e.action, e.actor, e.details]), [
        ["device.create", "admin:root", { name: "svc-dev-1", macs: ["52:54:00:00:00:01"], smbiosUuid: null, state: "pending" }],
        ["device.approve", "admin:root", { name: "svc-dev-1", from: "pending", to: "approved", preApproval: "armed" }],
        ["device.block", "admin:root", { name: "svc-dev-1", from: "approved", to: "blocked", preApproval: "none" }],
      ]);
    });

    it("hides a device outside a scoped administrator's scopes, audits the look, and refuses what would change nothing right", async () => {
      const office = await stores(core.site.db).collections.create({ name: "Office", description: "", rule: null }, core.site.now().toISOString());
      const outside = await recorded("svc-dev-seen", "eth1");
      const scoped = admin([office.id]);
      const before = await snapshot();
      await assert.rejects(getDevice(core.site, scoped, outside.id), refused("NOT_FOUND", /Cannot find device/));
      const denied = (await core.site.audit.list({ outcome: "denied", limit: 100 })).filter((e) => e.object === `device:${outside.id}`);
      assert.deepEqual(denied.map((e) => [e.action, e.actor, e.details]), [["device.read", "admin:scoped", { reason: "out of scope" }]]);
      assert.deepEqual((await listDevices(core.site, scoped, {})).map((d) => d.name), []);

      const after1 = await snapshot();
      await assert.rejects(decidePending(core.site, admin(null), "approved", { link: "eth1", expect: 2 }),
        refused("CONFLICT", /Cannot approve the pending devices: 1 match, not the 2 expected; nothing was changed/));
      await assert.rejects(updateDevice(core.site, admin(null), outside.id, { attributes: { firstSeenLink: "eth9" } }),
        refused("VALIDATION", /only the PXE responder records the link/));
      await assert.rejects(createDevice(core.site, scoped, { name: "svc-dev-mine", macs: [], attributes: {}, state: "pending", collections: [] }),
        refused("OUT_OF_SCOPE", /add the device to one of your scoped collections/));
      assert.deepEqual(await snapshot(), after1, "nothing changed, nothing audited");
      assert.equal(after1.audit, before.audit + 1);

      // The bulk decision the scoped administrator makes never reaches the device; it is counted, not named.
      assert.deepEqual((await decidePending(core.site, scoped, "approved", { link: "eth1" })).devices, []);
      assert.equal((await stores(core.site.db).devices.byId(outside.id))!.state, "pending");
      const bulk = await decidePending(core.site, admin(null), "approved", { link: "eth1" });
      assert.deepEqual(bulk.devices.map((d) => [d.name, d.state]), [["svc-dev-seen", "approved"]]);
    });

    it("binds an endorsement key to one device only, and clears it once", async () => {
      const a = await createDevice(core.site, admin(null), { name: "svc-tpm-a", macs: [], attributes: {}, state: "pending", collections: [] });
      const b = await createDevice(core.site, admin(null), { name: "svc-tpm-b", macs: [], attributes: {}, state: "pending", collections: [] });
      const key = ek();
      const rec = await importDeviceTpm(core.site, admin(null), a.name, key);
      assert.equal(rec.recordedBy, "admin:root");
      const before = await snapshot();
      await assert.rejects(importDeviceTpm(core.site, admin(null), b.name, key), refused("CONFLICT", /bound to another device/));
      await assert.rejects(importDeviceTpm(core.site, admin(null), b.name, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" + "x".repeat(40)),
        refused("VALIDATION", /Cannot import the endorsement key/));
      assert.deepEqual(await snapshot(), before);
      assert.equal(await deviceTpmOf(core.site, admin(null), b.id), null);
      await clearDeviceTpm(core.site, admin(null), a.id);
      await assert.rejects(clearDeviceTpm(core.site, admin(null), a.id), refused("NOT_FOUND", /has no TPM endorsement key on record/));
      const audit = (await core.site.audit.list({ limit: 10_000 })).filter((e) => e.object === `device:${a.id}` && e.action.startsWith("device.tpm"));
      assert.deepEqual(audit.map((e) => e.action), ["device.tpm.import", "device.tpm.clear"]);
    });
  });
}
