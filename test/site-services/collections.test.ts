/**
 * The collections service (src/site/services/collections.ts) called directly, without HTTP,
 * against a real site core on SQLite and PostgreSQL: a rule is kept in canonical form, audited,
 * and decides the members; a scoped administrator cannot set a rule, create a collection or
 * add a device it cannot see (the same answer whether the device exists), and nothing changes.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal as admin, refused } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { addStaticMember, collectionMembers, createCollection, getCollection, updateCollection } from "../../src/site/services/collections.ts";


for (const database of databasesUnderTest()) {
  describe(`collections service on ${database}`, () => {
    let core: SiteCore;
    before(async () => { core = await openSiteCore(database); });
    after(() => core?.close());
    const device = async (name: string, vendor: string) =>
      stores(core.site.db).devices.create({ name, macs: [], smbiosUuid: null, serial: null, state: "approved", attributes: { vendor } }, core.site.now().toISOString());

    it("keeps a rule in canonical form, audits it, and puts the matching devices and static members in the collection", async () => {
      const qemu = await device("svc-col-qemu", "QEMU");
      const other = await device("svc-col-other", "Dell");
      const lab = await createCollection(core.site, admin(null), { name: "Lab", description: "", rule: "attributes.vendor=='QEMU'" });
      assert.equal(lab.rule, 'attributes.vendor == "QEMU"');
      assert.equal(lab.memberCount, 1);
      const audit = (await core.site.audit.list({ action: "collection.create", limit: 100 })).filter((e) => e.object === `collection:${lab.id}`);
      assert.deepEqual(audit.map((e) => [e.actor, e.details]), [["admin:root", { name: "Lab", rule: 'attributes.vendor == "QEMU"' }]]);
      await addStaticMember(core.site, admin(null), "Lab", other.name);
      assert.deepEqual((await collectionMembers(core.site, admin(null), "Lab")).map((d) => [d.name, d.static]).sort(), [["svc-col-other", true], ["svc-col-qemu", false]]);
      assert.deepEqual((await getCollection(core.site, admin([lab.id]), lab.id)).staticMembers, [other.id]);
      assert.ok(qemu.id);
    });

    it("refuses a scoped administrator a new rule, a new collection and a device it cannot see; nothing changes", async () => {
      const lab = (await stores(core.site.db).collections.byName("Lab"))!;
      const office = await createCollection(core.site, admin(null), { name: "Office", description: "", rule: null });
      const outside = await device("svc-col-outside", "Dell");
      const scoped = admin([office.id]);
      const before = { collections: await stores(core.site.db).collections.list(), members: await stores(core.site.db).collections.allStaticMembers() };
      await assert.rejects(updateCollection(core.site, scoped, "Office", { rule: "true" }), refused("OUT_OF_SCOPE", /cannot change the rule of collection "Office"/));
      await assert.rejects(createCollection(core.site, scoped, { name: "Mine", description: "", rule: null }), refused("OUT_OF_SCOPE", /creating a collection needs an administrator without security scopes/));
      const notMine = /Not allowed: cannot add device "(svc-col-outside|no-such-device)" to collection "Office": it is not a device in your security scopes/;
      await assert.rejects(addStaticMember(core.site, scoped, "Office", outside.name), refused("OUT_OF_SCOPE", notMine));
      await assert.rejects(addStaticMember(core.site, scoped, "Office", "no-such-device"), refused("OUT_OF_SCOPE", notMine));
      await assert.rejects(getCollection(core.site, scoped, lab.id), refused("NOT_FOUND", /Cannot find collection/), "a collection outside the scopes reads as missing");
      assert.deepEqual({ collections: await stores(core.site.db).collections.list(), members: await stores(core.site.db).collections.allStaticMembers() }, before);
      // Sending the current rule back unchanged, or removing it, is allowed.
      assert.equal((await updateCollection(core.site, scoped, "Office", { rule: null })).rule, null);
    });
  });
}
