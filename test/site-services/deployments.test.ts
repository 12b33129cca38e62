/**
 * The deployments service (src/site/services/deployments.ts) called directly, without HTTP,
 * on a real site on SQLite and PostgreSQL: a deployment names its task sequence and
 * collection by name and pins the latest version, audited; one opened to sniffable
 * enrollments while its version uses a secret, one aimed outside a scoped administrator's
 * collections, a taken name and a rerun with nothing to rerun are refused and change nothing.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { adminPrincipal as admin, refused } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { allowRerun, createDeployment, listDeployments, updateDeployment, type NewDeployment } from "../../src/site/services/deployments.ts";

const defaults: Omit<NewDeployment, "name" | "taskSequence" | "collection"> = {
  purpose: "available", bootPaths: ["pxe", "media"], availableFrom: null, availableUntil: null, enabled: true, minimumAssurance: null, allowSniffableEnrollment: false,
};

for (const database of databasesUnderTest()) {
  describe(`deployments service on ${database}`, () => {
    let t: TestSite;
    let lab: string;
    const api = async (method: string, p: string, body?: unknown) => {
      const r = await t.request(method, p, { token: t.adminToken, body });
      assert.ok(r.status < 300, `${method} ${p}: ${r.status} ${r.text}`);
      return r.body;
    };
    before(async () => {
      t = await startTestSite({ database });
      lab = (await api("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.vendor == 'QEMU'" })).id;
      await api("POST", "/api/v1/collections", { name: "Office", rule: null });
      await api("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "x-secret", secret: true });
      const ts = await api("POST", "/api/v1/task-sequences", { document: { name: "Plain", steps: [{ name: "Say", type: "run-command", with: { command: "true" } }] } });
      await api("POST", `/api/v1/task-sequences/${ts.id}/versions`, { document: { name: "Plain", steps: [{ name: "Say", type: "run-command", with: { command: "echo 2" } }] } });
      await api("POST", "/api/v1/task-sequences", { document: { name: "Join", steps: [
        { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } }] } });
    });
    after(() => t?.close());

    it("creates a deployment from names, pinned to the latest version, audited", async () => {
      const d = await createDeployment(t.site, admin(null), { ...defaults, bootPaths: ["pxe"], name: "Plain lab", taskSequence: "Plain", collection: "Lab" });
      assert.equal(d.collectionId, lab);
      assert.equal(d.taskSequenceVersion, 2, "no version given: the latest");
      const audit = (await t.site.audit.list({ action: "deployment.create", limit: 100 })).filter((e) => e.object === `deployment:${d.id}`);
      assert.deepEqual(audit.map((e) => [e.actor, e.details]), [["admin:root", { name: "Plain lab", taskSequence: d.taskSequenceId, version: 2, collection: lab,
        purpose: "available", minimumAssurance: null, allowSniffableEnrollment: false }]]);
      assert.deepEqual((await listDeployments(t.site, admin([lab]))).map((x) => x.id), [d.id], "a scoped administrator sees the deployment on its collection");
    });

    it("refuses a sniffable opt-in for a version with secrets, a collection outside the scopes, a taken name and an empty rerun; nothing changes", async () => {
      const before = await stores(t.site.db).deployments.list();
      const join: NewDeployment = { ...defaults, name: "Join lab", taskSequence: "Join", collection: "Lab" };
      await assert.rejects(createDeployment(t.site, admin(null), { ...join, allowSniffableEnrollment: true }),
        refused("VALIDATION", /Cannot open the deployment to sniffable enrollments: task sequence version 1 uses secrets \(JoinCredential\)/));
      await assert.rejects(createDeployment(t.site, admin([lab]), { ...join, collection: "Office" }), refused("VALIDATION", /Cannot target collection "Office": it does not exist/));
      await assert.rejects(createDeployment(t.site, admin(null), { ...join, name: "Plain lab" }), refused("CONFLICT", /the name is taken/));
      const plain = before.find((d) => d.name === "Plain lab")!;
      await assert.rejects(updateDeployment(t.site, admin(null), plain.id, { availableFrom: "2030-01-02T00:00:00Z", availableUntil: "2030-01-01T00:00:00Z" }),
        refused("VALIDATION", /window ends before it starts/));
      const device = await stores(t.site.db).devices.create({ name: "svc-dep-1", macs: [], smbiosUuid: null, serial: null, state: "approved", attributes: { vendor: "QEMU" } }, t.site.now().toISOString());
      await assert.rejects(allowRerun(t.site, admin(null), plain.id, device.name), refused("CONFLICT", /Cannot allow a rerun of "Plain lab" on "svc-dep-1": it has not succeeded there/));
      assert.deepEqual(await stores(t.site.db).deployments.list(), before);
      assert.equal((await t.site.audit.list({ action: "deployment.rerun", limit: 100 })).length, 0);
    });
  });
}
