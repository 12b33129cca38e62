/**
 * The enrollments service (src/site/services/enrollments.ts) called directly, without HTTP, on
 * a real site core on SQLite and PostgreSQL: approving by filter raises an uncontested sniffable
 * enrollment to `approved` (on its certificate and on the device) in the transaction that
 * audits it, and leaves a contested one for approval by serial; a count that does not match
 * `expect` is refused and changes nothing; a scoped administrator sees no enrollment outside
 * its scopes.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal as admin } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { SlipwayError } from "../../src/errors.ts";
import { approveEnrollments, pendingEnrollments } from "../../src/site/services/enrollments.ts";


for (const database of databasesUnderTest()) {
  describe(`enrollments service on ${database}`, () => {
    let core: SiteCore;
    before(async () => { core = await openSiteCore(database); });
    after(() => core?.close());
    /** An approved device first seen on `link` that enrolled `times` times with a boot token (sniffable); answers its serials. */
    const enrolled = async (name: string, link: string, times: number) => {
      const s = stores(core.site.db);
      const now = core.site.now();
      const d = await s.devices.create({ name, macs: [], smbiosUuid: null, serial: null, state: "approved", attributes: { firstSeenLink: link } }, now.toISOString());
      const serials: string[] = [];
      for (let i = 0; i < times; i++) {
        const serial = randomBytes(8).toString("hex");
        assert.ok(await s.devices.claimEnrollment(d.id, { seen: i, preApproval: false, now: now.toISOString(), assurance: "sniffable" }));
        if (serials.length) await s.certificates.supersede(serials.at(-1)!, now.toISOString());
        await s.certificates.add({ serial, fingerprint: randomBytes(32).toString("hex"), kind: "device", deviceId: d.id, subject: `device:${d.id}`,
          notBefore: now.toISOString(), notAfter: new Date(now.getTime() + 86_400_000).toISOString(), issuedVia: "boot-token", createdAt: now.toISOString() });
        serials.push(serial);
      }
      return { id: d.id, serial: serials.at(-1)! };
    };
    const state = async () => {
      const s = stores(core.site.db);
      return { certificates: await s.certificates.list({}), devices: await s.devices.list(), audit: (await core.site.audit.list({ limit: 10_000 })).length };
    };

    it("refuses a count that is not the one expected and changes nothing; a scoped administrator sees none", async () => {
      const one = await enrolled("svc-enr-one", "eth1", 1);
      await enrolled("svc-enr-twice", "eth1", 2);
      assert.deepEqual((await pendingEnrollments(core.site, admin(null), { link: "eth1" })).map((e) => [e.deviceName, e.contested]).sort(),
        [["svc-enr-one", 0], ["svc-enr-twice", 1]]);
      assert.deepEqual(await pendingEnrollments(core.site, admin(["no-collection"]), {}), []);
      const before = await state();
      await assert.rejects(approveEnrollments(core.site, admin(null), { link: "eth1", expect: 2 }),
        (e: unknown) => e instanceof SlipwayError && e.code === "CONFLICT" && /Cannot approve: 1 enrollment match, not the 2 expected; nothing changed/.test(e.message));
      assert.deepEqual(await state(), before);
      assert.equal((await stores(core.site.db).devices.enrollmentOf(one.id))!.assurance, "sniffable");
    });

    it("approves the uncontested enrollment on its certificate and its device, audits it, and leaves the contested one", async () => {
      const s = stores(core.site.db);
      const one = (await s.devices.byName("svc-enr-one"))!;
      const twice = (await s.devices.byName("svc-enr-twice"))!;
      const r = await approveEnrollments(core.site, admin(null), { link: "eth1", expect: 1 });
      assert.deepEqual(r.enrollments.map((e) => e.deviceName), ["svc-enr-one"]);
      assert.deepEqual(r.contested.map((e) => e.deviceName), ["svc-enr-twice"]);
      assert.equal((await s.devices.enrollmentOf(one.id))!.assurance, "approved");
      assert.equal((await s.devices.enrollmentOf(twice.id))!.assurance, "sniffable");
      assert.equal((await s.certificates.bySerial(r.enrollments[0].serial))!.assurance, "approved");
      const audit = (await core.site.audit.list({ limit: 10_000 })).filter((e) => e.action.startsWith("enrollment.approve"));
      assert.deepEqual(audit.map((e) => [e.action, e.outcome, e.actor, e.object]), [
        ["enrollment.approve.bulk", "denied", "admin:root", null],
        ["enrollment.approve", "success", "admin:root", `device:${one.id}`],
        ["enrollment.approve.bulk", "success", "admin:root", null],
      ]);
      // Approved enrollments are no longer pending; the contested one still is.
      assert.deepEqual((await pendingEnrollments(core.site, admin(null), {})).map((e) => e.deviceName), ["svc-enr-twice"]);
    });
  });
}
