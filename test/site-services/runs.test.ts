/**
 * The runs service's secret release (src/site/services/runs.ts) called directly, without the
 * management point's HTTP and mutual TLS, on a real site on SQLite and PostgreSQL: the secret
 * goes once to the step the run reported started, audited; a sniffable enrollment and a second
 * ask for the same start are refused, audited as denied, and release nothing.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { stores } from "../../src/storage/stores.ts";
import type { CertificateRecord } from "../../src/storage/certificate-store.ts";
import type { Device } from "../../src/domain/device.ts";
import type { Run } from "../../src/storage/run-store.ts";
import type { Assurance } from "../../src/domain/assurance.ts";
import { SlipwayError } from "../../src/errors.ts";
import { releaseRunSecret } from "../../src/site/services/runs.ts";

const canary = "svc-release-canary-7f3a";

for (const database of databasesUnderTest()) {
  describe(`releasing a run's secret on ${database}`, () => {
    let t: TestSite;
    let deployment: { id: string; taskSequenceId: string; taskSequenceVersion: number };
    let n = 0;
    const admin = async (method: string, p: string, body?: unknown) => {
      const r = await t.request(method, p, { token: t.adminToken, body });
      assert.ok(r.status < 300, `${method} ${p}: ${r.status} ${r.text}`);
      return r.body;
    };
    before(async () => {
      t = await startTestSite({ database });
      await admin("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.vendor == 'QEMU'" });
      await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: canary, secret: true });
      await admin("POST", "/api/v1/task-sequences", { document: { name: "Join build", steps: [
        { name: "Say", type: "run-command", with: { command: "true" } },
        { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } },
      ] } });
      deployment = await admin("POST", "/api/v1/deployments", { name: "Join lab", taskSequence: "Join build", collection: "Lab", purpose: "required", bootPaths: ["pxe"] });
    });
    after(() => t?.close());

    /** A device in Lab enrolled with `assurance`, with a run of the deployment whose step 1 (Join) is reported started. */
    async function running(assurance: Assurance): Promise<{ device: Device; certificate: CertificateRecord; run: Run }> {
      const now = t.site.now().toISOString();
      const s = stores(t.site.db);
      const device = await s.devices.create({ name: `svc-run-${++n}`, macs: [], smbiosUuid: null, serial: null, state: "approved", attributes: { vendor: "QEMU" } }, now);
      const serial = `serial-${n}`;
      const certificate: CertificateRecord = { serial, fingerprint: `fp-${n}`, kind: "device", deviceId: device.id, dpId: null, subject: device.name, notBefore: now, notAfter: now,
        status: "active", statusChangedAt: null, statusReason: null, issuedVia: "test", lastUsedAt: null, createdAt: now, assurance, enrollmentSerial: serial } as CertificateRecord;
      const started = await s.runs.start({ deploymentId: deployment.id, deviceId: device.id, bootPath: "pxe", taskSequenceId: deployment.taskSequenceId,
        taskSequenceVersion: deployment.taskSequenceVersion, startedAt: now, enrollmentSerial: serial });
      await s.runs.setOpenStep(started.id, { open: "1" });
      return { device, certificate, run: (await s.runs.byId(started.id))! };
    }
    const releases = async (runId: string, outcome: string) =>
      (await t.site.audit.list({ action: "secret.release", outcome, limit: 1000 })).filter((e) => e.object === `run:${runId}`);

    it("releases the secret to the started step that references it, once, audited", async () => {
      const { device, certificate, run } = await running("password");
      assert.equal(await releaseRunSecret(t.site, device, certificate, run, { step: "1", name: "JoinCredential" }), canary);
      assert.deepEqual((await releases(run.id, "success")).map((e) => [e.actor, e.details]),
        [[`device:${device.id}`, { step: "1", name: "JoinCredential", serial: certificate.serial, assurance: "password" }]]);
      await assert.rejects(releaseRunSecret(t.site, device, certificate, run, { step: "1", name: "JoinCredential" }),
        (e: unknown) => e instanceof SlipwayError && e.code === "FORBIDDEN" && /already released for this start/.test(e.message));
      assert.equal((await releases(run.id, "success")).length, 1, "a second ask releases nothing");
      assert.equal((await releases(run.id, "denied")).length, 1);
    });

    it("refuses a sniffable enrollment (ASSURANCE_TOO_LOW), audited as denied, and releases nothing", async () => {
      const { device, certificate, run } = await running("sniffable");
      await assert.rejects(releaseRunSecret(t.site, device, certificate, run, { step: "1", name: "JoinCredential" }),
        (e: unknown) => e instanceof SlipwayError && e.code === "ASSURANCE_TOO_LOW" && /proved only a MAC and UUID/.test(e.message));
      assert.deepEqual((await releases(run.id, "denied")).map((e) => (e.details as { reason: string }).reason), ["the enrollment is sniffable (a boot token alone)"]);
      assert.equal((await releases(run.id, "success")).length, 0);
      assert.equal((await stores(t.site.db).runs.byId(run.id))!.openStepReleased, false);
    });
  });
}
