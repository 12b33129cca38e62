/**
 * Recording unknown machines (machine-recorder.ts) against the real device store and audit
 * log, SQLite and PostgreSQL: no root, no sockets. What is recorded, what is kept from what
 * a machine claims, and the limits that keep a flood of made-up MACs out of the device list.
 */
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { stores } from "../../src/storage/stores.ts";
import { MachineRecorder, type MachineRecorderOptions } from "../../src/roles/distribution/machine-recorder.ts";

for (const database of databasesUnderTest()) {
  describe(`recording unknown machines on ${database}`, () => {
    let core: SiteCore;
    let n = 0;
    before(async () => {
      core = await openSiteCore(database);
    });
    after(() => core?.close());
    beforeEach(async () => {
      for (const d of await stores(core.site.db).devices.list()) await stores(core.site.db).devices.delete(d.id);
    });

    const mac = () => `52:54:00:2e:${(++n >> 8).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`;
    const uuid = () => `6f1f4a52-1c9b-4f7e-9d7e-${String(++n).padStart(12, "0")}`;
    const recorder = (o: Partial<MachineRecorderOptions> = {}) => new MachineRecorder({ db: core.site.db, audit: core.site.audit, now: core.site.now, ...o });
    const seen = (m: string, u?: string) => ({ mac: m, uuid: u, firmware: "bios", link: "br0" });
    const recordedAudit = async (object: string) => (await core.site.audit.list({ action: "device.recorded", limit: 1000 })).filter((e) => e.object === object);

    it("records an unknown machine under its MAC, with its firmware, link and SMBIOS UUID, and audits it", async () => {
      const m = mac();
      const u = uuid();
      const d = await recorder().record(seen(m, u), "pending");
      assert.ok(!("refused" in d));
      const stored = await stores(core.site.db).devices.byId(d.id);
      assert.equal(stored?.name, `pxe-${m.replace(/:/g, "")}`);
      assert.equal(stored?.state, "pending");
      assert.deepEqual(stored?.macs, [m]);
      assert.equal(stored?.smbiosUuid, u);
      assert.deepEqual(stored?.attributes, { firmware: "bios", firstSeenLink: "br0" });
      const [entry] = await recordedAudit(`device:${d.id}`);
      assert.deepEqual(entry?.details, { mac: m, smbiosUuid: u, firmware: "bios", link: "br0", state: "pending" });
      assert.equal(entry?.actor, "pxe");
    });

    it("keeps no SMBIOS UUID another device already has, and records a MAC on record as nothing new", async () => {
      const u = uuid();
      const first = await recorder().record(seen(mac(), u), "pending");
      const m = mac();
      const second = await recorder().record(seen(m, u), "pending");
      assert.ok(!("refused" in first) && !("refused" in second));
      assert.equal((await stores(core.site.db).devices.byId(second.id))?.smbiosUuid, null, "a UUID proves nothing: the first holder keeps it");
      const again = await recorder().record(seen(m, uuid()), "approved");
      assert.equal("refused" in again ? "" : again.id, second.id);
      assert.equal((await stores(core.site.db).devices.list()).length, 2);
      assert.equal((await recordedAudit(`device:${second.id}`)).length, 1);
    });

    it("records at most so many machines a minute; the next minute more", async () => {
      const r = recorder({ perMinute: 2 });
      assert.ok(!("refused" in (await r.record(seen(mac()), "pending"))));
      assert.ok(!("refused" in (await r.record(seen(mac()), "pending"))));
      assert.deepEqual(await r.record(seen(mac()), "pending"), { refused: "more than 2 unknown machines this minute; not recording more for now" });
      core.advance(60_001);
      assert.ok(!("refused" in (await r.record(seen(mac()), "pending"))));
      assert.equal((await stores(core.site.db).devices.list()).length, 3);
    });

    it("records no more pending machines than the cap, whoever recorded them", async () => {
      await stores(core.site.db).devices.create({ name: "by-hand", macs: [mac()], smbiosUuid: null, serial: null, state: "pending", attributes: {} }, core.site.now().toISOString());
      const r = recorder({ maxPending: 2 });
      assert.ok(!("refused" in (await r.record(seen(mac()), "pending"))));
      assert.deepEqual(await r.record(seen(mac()), "pending"), { refused: "2 machines already wait for approval; not recording more" });
      assert.equal((await stores(core.site.db).devices.list()).length, 2);
    });

    it("approves automatically (--unknown allow) no more machines than the cap, counting only those it approved", async () => {
      await stores(core.site.db).devices.create({ name: "admin-approved", macs: [mac()], smbiosUuid: null, serial: null, state: "approved", attributes: {} }, core.site.now().toISOString());
      const r = recorder({ maxRecordedApproved: 2 });
      for (let i = 0; i < 2; i++) {
        const d = await r.record(seen(mac()), "approved");
        assert.ok(!("refused" in d));
        assert.equal(d.state, "approved");
        assert.deepEqual((await stores(core.site.db).devices.byId(d.id))?.attributes, { firmware: "bios", firstSeenLink: "br0", recorded: "allow" });
      }
      const refused = await r.record(seen(mac()), "approved");
      assert.deepEqual(refused, { refused: "2 machines were already approved automatically (--unknown allow); not recording more until an administrator deletes some" });
      assert.equal((await stores(core.site.db).devices.list()).length, 3);
    });
  });
}
