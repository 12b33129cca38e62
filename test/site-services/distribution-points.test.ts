/**
 * The distribution points service (src/site/services/distribution-points.ts) called directly,
 * without HTTP, on a real site core on SQLite and PostgreSQL: a loopback alias or another
 * distribution point's name is refused (the refusal audited) and nothing is registered;
 * registering answers a one-time secret stored only as a hash; removing one revokes its
 * certificates in the transaction that audits it.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal, refused } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { getDistributionPoint, registerDistributionPoint, removeDistributionPoint } from "../../src/site/services/distribution-points.ts";

const admin = adminPrincipal(null, "infra");

for (const database of databasesUnderTest()) {
  describe(`distribution points service on ${database}`, () => {
    let core: SiteCore;
    before(async () => { core = await openSiteCore(database); });
    after(() => core?.close());
    const state = async () => ({ dps: await stores(core.site.db).distributionPoints.list(), audit: (await core.site.audit.list({ limit: 10_000 })).length });

    it("answers a one-time secret kept only as a hash, and refuses a loopback alias and a name another distribution point holds (audited); nothing registered", async () => {
      const made = await registerDistributionPoint(core.site, admin, { name: "branch-1", url: "https://dp1.example.test/", aliases: ["DP1-alt.example.test"] });
      assert.equal(made.status, "awaiting enrollment");
      assert.deepEqual(made.hostNames, ["dp1.example.test", "dp1-alt.example.test"]);
      const stored = (await stores(core.site.db).distributionPoints.byId(made.id))!;
      assert.ok(!JSON.stringify(stored).includes(made.secret), "the secret is not stored");
      const before = await state();
      await assert.rejects(registerDistributionPoint(core.site, admin, { name: "branch-2", url: "https://dp2.example.test/", aliases: ["127.0.0.1"] }),
        refused("VALIDATION", /Cannot register distribution point "branch-2": host name "127.0.0.1" is refused, because it is a loopback/));
      await assert.rejects(registerDistributionPoint(core.site, admin, { name: "branch-3", url: "https://dp1-alt.example.test:8443/", aliases: [] }),
        refused("CONFLICT", /distribution point "branch-1" holds it/));
      const after = await state();
      assert.deepEqual(after.dps, before.dps);
      const denied = (await core.site.audit.list({ action: "dp.create", outcome: "denied", limit: 100 })).map((e) => [e.actor, (e.details as { name: string }).name]);
      assert.deepEqual(denied, [["admin:infra", "branch-2"], ["admin:infra", "branch-3"]]);
    });

    it("revokes a removed distribution point's certificates, audited with the removal", async () => {
      const dp = (await stores(core.site.db).distributionPoints.byName("branch-1"))!;
      const serial = randomBytes(8).toString("hex");
      const now = core.site.now();
      await stores(core.site.db).certificates.add({ serial, fingerprint: randomBytes(32).toString("hex"), kind: "dp", deviceId: null, dpId: dp.id, subject: `dp:${dp.id}`,
        notBefore: now.toISOString(), notAfter: new Date(now.getTime() + 86_400_000).toISOString(), issuedVia: "dp-enroll", createdAt: now.toISOString() });
      assert.deepEqual((await getDistributionPoint(core.site, "branch-1")).certificates.map((c) => [c.serial, c.status]), [[serial, "active"]]);
      await removeDistributionPoint(core.site, admin, "branch-1");
      assert.equal((await stores(core.site.db).certificates.bySerial(serial))!.status, "revoked");
      await assert.rejects(getDistributionPoint(core.site, "branch-1"), refused("NOT_FOUND", /Cannot find distribution point "branch-1"/));
      const audit = (await core.site.audit.list({ action: "dp.delete", limit: 100 })).map((e) => [e.actor, e.object, e.details]);
      assert.deepEqual(audit, [["admin:infra", `dp:${dp.id}`, { name: "branch-1", url: "https://dp1.example.test", revoked: [serial] }]]);
    });
  });
}
