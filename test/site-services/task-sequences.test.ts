/**
 * The task sequences service (src/site/services/task-sequences.ts) called directly, without
 * HTTP, on a real site core on SQLite and PostgreSQL: a published version is an envelope
 * signed by the site key naming its publisher, audited in the transaction that records it; a
 * Run As naming a plain variable, and a version whose document names another task sequence,
 * are refused and change nothing.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey } from "node:crypto";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { SlipwayError } from "../../src/errors.ts";
import { verifyValue } from "../../src/security/signing.ts";
import { createTaskSequence, getVersion, publishVersion, validateDocument } from "../../src/site/services/task-sequences.ts";

const admin = adminPrincipal(null, "root");
const doc = (name: string, runAs?: string) =>
  ({ document: { name, steps: [{ name: "Join", type: "run-command", with: { command: "true" }, ...(runAs ? { runAs: { secret: runAs } } : {}) }] } });

for (const database of databasesUnderTest()) {
  describe(`task sequences service on ${database}`, () => {
    let core: SiteCore;
    before(async () => { core = await openSiteCore(database); });
    after(() => core?.close());
    const state = async () => ({ ts: await stores(core.site.db).taskSequences.list(), audit: (await core.site.audit.list({ limit: 10_000 })).length });

    it("refuses a Run As naming a plain variable and a document named for another task sequence; nothing changes", async () => {
      await stores(core.site.db).variables.put({ scope: "site", scopeId: "", name: "Plain", secret: false, value: "x", sealed: null, keyId: null }, core.site.now().toISOString());
      await createTaskSequence(core.site, admin, doc("Base"));
      const before = await state();
      const invalid = (message: RegExp) => (e: unknown) => e instanceof SlipwayError && e.code === "TASK_SEQUENCE_INVALID" && JSON.stringify(e.details).match(message) !== null;
      await assert.rejects(createTaskSequence(core.site, admin, doc("Join", "Plain")), invalid(/"Plain\\" is a plain variable; Run As credentials must be secret variables/));
      await assert.rejects(publishVersion(core.site, admin, "Base", doc("Base", "Missing")), invalid(/no secret variable named \\"Missing\\" exists at any scope/));
      await assert.rejects(publishVersion(core.site, admin, "Base", doc("Other")),
        (e: unknown) => e instanceof SlipwayError && e.code === "VALIDATION" && /The document is named "Other", not "Base"/.test(e.message));
      assert.deepEqual(await state(), before);
      assert.deepEqual(await validateDocument(core.site, doc("Join", "Plain")), { ok: false, errors: [{ path: "runAs.secret", pointer: "", message: '"Plain" is a plain variable; Run As credentials must be secret variables' }] });
    });

    it("publishes a version as an envelope signed by the site key, naming its publisher, audited with it", async () => {
      const v = await publishVersion(core.site, admin, "Base", { ...doc("Base"), description: "second" });
      assert.equal(v.version, 2);
      const envelope = v.document as { kind: string; name: string; version: number; publishedBy: string };
      assert.deepEqual([envelope.kind, envelope.name, envelope.version, envelope.publishedBy], ["slipway.task-sequence/v1", "Base", 2, "admin:root"]);
      const publicKey = createPublicKey(core.site.keys.signingKey);
      assert.ok(verifyValue(publicKey, v.document, v.signature));
      assert.ok(!verifyValue(publicKey, { ...envelope, publishedBy: "admin:someone-else" }, v.signature));
      assert.deepEqual(await getVersion(core.site, "Base", "latest"), v);
      await assert.rejects(getVersion(core.site, "Base", "newest"), (e: unknown) => e instanceof SlipwayError && e.code === "BAD_REQUEST");
      const t = (await stores(core.site.db).taskSequences.byName("Base"))!;
      assert.equal(t.description, "second");
      const audit = (await core.site.audit.list({ limit: 10_000 })).filter((e) => e.object === `task-sequence:${t.id}`);
      assert.deepEqual(audit.map((e) => [e.action, e.actor, e.details]), [
        ["ts.create", "admin:root", { name: "Base" }],
        ["ts.publish", "admin:root", { name: "Base", version: 1, digest: (await getVersion(core.site, "Base", "1")).digest }],
        ["ts.publish", "admin:root", { name: "Base", version: 2, digest: v.digest }],
      ]);
    });
  });
}
