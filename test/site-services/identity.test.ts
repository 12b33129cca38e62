/**
 * The identity service (src/site/services/identity.ts) called directly, without HTTP, on a real
 * site core on SQLite and PostgreSQL: revoking a device's certificate blocks the device and
 * disarms its pre-approval in the transaction that audits both; a scoped administrator cannot
 * reach a certificate outside its scopes (audited, as missing), revocation is final, and a weak
 * PXE password is refused; none of these change anything.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal as admin, refused } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { changePxePassword, listCertificates, pxePasswordIsSet, setCertificateStatus } from "../../src/site/services/identity.ts";


for (const database of databasesUnderTest()) {
  describe(`identity service on ${database}`, () => {
    let core: SiteCore;
    let serial: string;
    let deviceId: string;
    before(async () => {
      core = await openSiteCore(database);
      const s = stores(core.site.db);
      const now = core.site.now();
      const d = await s.devices.create({ name: "svc-id-1", macs: [], smbiosUuid: null, serial: null, state: "approved", attributes: {} }, now.toISOString(), { preApproved: true });
      deviceId = d.id;
      serial = randomBytes(8).toString("hex");
      await s.certificates.add({ serial, fingerprint: randomBytes(32).toString("hex"), kind: "device", deviceId: d.id, subject: `device:${d.id}`,
        notBefore: now.toISOString(), notAfter: new Date(now.getTime() + 86_400_000).toISOString(), issuedVia: "boot-token", createdAt: now.toISOString() });
    });
    after(() => core?.close());
    const state = async () => ({ certificates: await stores(core.site.db).certificates.list({}), devices: await stores(core.site.db).devices.list(),
      pxe: await pxePasswordIsSet(core.site), audit: (await core.site.audit.list({ limit: 10_000 })).length });

    it("refuses a certificate outside a scoped administrator's scopes (audited) and a weak PXE password; nothing changes", async () => {
      const before = await state();
      await assert.rejects(setCertificateStatus(core.site, admin(["some-collection"]), serial, "revoke", "keyCompromise"), refused("NOT_FOUND", /Cannot find certificate/));
      await assert.rejects(changePxePassword(core.site, admin(null), "short"), refused("WEAK_PASSWORD", /Cannot use that PXE password/));
      assert.deepEqual((await listCertificates(core.site, admin(["some-collection"]), {})), []);
      const after = await state();
      assert.deepEqual({ ...after, audit: 0 }, { ...before, audit: 0 });
      const denied = (await core.site.audit.list({ outcome: "denied", limit: 100 })).map((e) => [e.action, e.actor, e.object]);
      assert.deepEqual(denied, [["certificate.revoke", "admin:scoped", `certificate:${serial}`]]);
      assert.equal(after.audit, before.audit + 1);
    });

    it("revokes for good and blocks the device, both audited in one transaction", async () => {
      const view = await setCertificateStatus(core.site, admin(null), serial, "revoke", "keyCompromise");
      assert.deepEqual([view.status, view.reason], ["revoked", "keyCompromise"]);
      const d = (await stores(core.site.db).devices.byId(deviceId))!;
      assert.equal(d.state, "blocked");
      assert.equal((await stores(core.site.db).devices.enrollmentOf(deviceId))!.preApproved, false);
      const audit = (await core.site.audit.list({ limit: 10_000 })).filter((e) => e.outcome === "success" && e.actor === "admin:root");
      assert.deepEqual(audit.map((e) => [e.action, e.object]), [["certificate.revoke", `certificate:${serial}`], ["device.block", `device:${deviceId}`]]);
      const before = await state();
      await assert.rejects(setCertificateStatus(core.site, admin(null), serial, "unblock", "unspecified"), refused("CONFLICT", /revocation is final/));
      assert.deepEqual(await state(), before);
    });
  });
}
