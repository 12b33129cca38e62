/**
 * The variables service (src/site/services/variables.ts) called directly, without HTTP,
 * against a real site core on SQLite and PostgreSQL: a secret is sealed bound to its row
 * and opened for a run nearest scope first; a scoped administrator cannot set a site
 * variable, a secret cannot be turned plain, and a ciphertext moved to another row does
 * not open. Each refusal changes nothing.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal as admin } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import type { Run } from "../../src/storage/run-store.ts";
import { SlipwayError } from "../../src/errors.ts";
import { deleteVariable, listVariables, setVariable } from "../../src/site/services/variables.ts";
import { runSecretValue, runSecretValues } from "../../src/site/services/runs.ts";

const refusedWith = (code: string) => (e: unknown) => e instanceof SlipwayError && e.code === code;

for (const database of databasesUnderTest()) {
  describe(`variables service on ${database}`, () => {
    let core: SiteCore;
    before(async () => { core = await openSiteCore(database); });
    after(() => core?.close());

    const device = async (name: string) => stores(core.site.db).devices.create({ name, macs: [], smbiosUuid: null, serial: null, state: "approved", attributes: {} }, core.site.now().toISOString());
    /** A run of `deviceId` under a deployment that no longer exists: its scopes are the device and the site. */
    const runOf = (deviceId: string): Run => ({
      id: "run-1", deploymentId: "no-such-deployment", deviceId, bootPath: "pxe", taskSequenceId: "ts", taskSequenceVersion: 1, state: "running",
      currentStep: null, startedAt: "", updatedAt: "", endedAt: null, enrollmentSerial: null, openStep: null, openStepReleased: false, rerunAllowedAt: null,
    });

    it("seals a secret bound to its row, audits it, and opens it for a run with the device's value over the site's", async () => {
      const d = await device("svc-var-1");
      const site = await setVariable(core.site, admin(null), { scope: "site", name: "Pass", value: "site-value", secret: true });
      assert.equal(site.created, true);
      assert.equal(site.variable.value, null, "a secret has no plaintext value at rest");
      const own = await setVariable(core.site, admin(null), { scope: "device", target: d.name, name: "Pass", value: "device-value", secret: true });
      assert.equal(own.variable.scopeId, d.id, "the target is resolved by name to the device id");
      const again = await setVariable(core.site, admin(null), { scope: "device", target: d.id, name: "Pass", value: "device-value-2", secret: true });
      assert.equal(again.created, false);
      assert.equal(again.variable.id, own.variable.id);
      const audit = (await core.site.audit.list({ action: "secret.write", limit: 100 })).filter((e) => e.object === `variable:${own.variable.id}`);
      assert.deepEqual(audit.map((e) => [e.actor, e.details]), [
        ["admin:root", { scope: "device", target: d.id, name: "Pass", secret: true, replaced: false }],
        ["admin:root", { scope: "device", target: d.id, name: "Pass", secret: true, replaced: true }],
      ]);
      assert.equal(await runSecretValue(core.site, runOf(d.id), "Pass"), "device-value-2");
      assert.deepEqual((await runSecretValues(core.site, runOf(d.id))).sort(), ["device-value-2", "site-value"]);
      const other = await device("svc-var-2");
      assert.equal(await runSecretValue(core.site, runOf(other.id), "Pass"), "site-value");
      assert.equal(await runSecretValue(core.site, runOf(other.id), "Nothing"), null);
    });

    it("refuses a scoped administrator a site variable, a secret turned plain, and a ciphertext moved to another row; nothing changes", async () => {
      const before = await stores(core.site.db).variables.list({});
      await assert.rejects(setVariable(core.site, admin(["some-collection"]), { scope: "site", name: "Scoped", value: "x", secret: false }), refusedWith("OUT_OF_SCOPE"));
      await assert.rejects(setVariable(core.site, admin(null), { scope: "site", name: "Pass", value: "now-public", secret: false }),
        (e: unknown) => refusedWith("CONFLICT")(e) && /Cannot make secret variable "Pass" non-secret/.test((e as Error).message));
      const sitePass = before.find((v) => v.scope === "site" && v.name === "Pass")!;
      await assert.rejects(deleteVariable(core.site, admin(["some-collection"]), sitePass.id), refusedWith("OUT_OF_SCOPE"));
      assert.deepEqual(await stores(core.site.db).variables.list({}), before);
      // A scoped administrator sees no device outside their collections, nor its variables.
      assert.deepEqual((await listVariables(core.site, admin(["some-collection"]), { scope: "device" })).length, 0);

      // The site's sealed value copied into another name does not open: it is bound to (scope, target, name).
      const d = await device("svc-var-3");
      await stores(core.site.db).variables.put({ scope: "device", scopeId: d.id, name: "Moved", secret: true, value: null, sealed: sitePass.sealed, keyId: sitePass.keyId }, core.site.now().toISOString());
      await assert.rejects(runSecretValue(core.site, runOf(d.id), "Moved"));
    });
  });
}
