/**
 * Enrollment assurance, from outside over real mutual TLS (issue #11 item 1): each enrollment
 * records how it was proven — `sniffable` (a boot token alone), `password` (boot token and the
 * PXE password), `approved` (pre-approval), `media` (a media credential) — on its certificate
 * and on the device; renewal keeps it. Secrets never reach a sniffable enrollment, a
 * deployment that uses secrets requires more by default, and the signed policy of a
 * certificate leaves out what it may not run. Expired boot tokens are deleted.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createPublicKey } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { newMachine, type TestMachine, enrollApproved } from "../support/device.ts";
import { callAs, renew, type Holder } from "../support/identity.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { verifyPolicy } from "../../src/security/signed-policy.ts";
import { stores } from "../../src/storage/stores.ts";
import { hashToken } from "../../src/security/password.ts";

type Audit = { actor: string; action: string; object: string | null; outcome: string; details: Record<string, unknown> | null };
const PXE_PASSWORD = "Lab-PXE-Passphrase-2026";

for (const database of databasesUnderTest()) {
  describe(`enrollment assurance on ${database}`, () => {
    let t: TestSite;
    let n = 0;
    let secretDeployment = "";
    let plainDeployment = "";
    const canary = `CANARY-${randomBytes(8).toString("hex")}`;
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const ids = () => {
      n++;
      const h = n.toString(16).padStart(4, "0");
      return { macs: [`52:54:00:31:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000031${h}` };
    };
    /** An approved device in the lab (its pre-approval armed) and a machine with its identifiers. */
    async function approved(name: string) {
      const i = ids();
      const r = await admin("POST", "/api/v1/devices", { name, macs: i.macs, smbiosUuid: i.smbiosUuid, state: "approved", attributes: { vendor: "QEMU" } });
      assert.equal(r.status, 201, r.text);
      return { m: await newMachine(t, i), id: r.body.id as string };
    }
    const bootToken = async (m: TestMachine, deviceId: string) =>
      (await issueBootToken(t.site, { deviceId, mac: m.macs[0], smbiosUuid: m.smbiosUuid })).token;
    async function withPxePassword<T>(f: () => Promise<T>): Promise<T> {
      assert.equal((await admin("PUT", "/api/v1/pxe/password", { password: PXE_PASSWORD })).status, 204);
      try {
        return await f();
      } finally {
        await admin("DELETE", "/api/v1/pxe/password");
      }
    }
    const audit = async (action: string) => (await admin("GET", `/api/v1/audit?action=${action}&limit=1000`)).body as Audit[];
    const policyIds = async (m: TestMachine) => {
      const r = await m.call("GET", "/mp/v1/policy?bootPath=pxe");
      assert.equal(r.status, 200, r.text);
      return (r.body.policy.deployments as { id: string }[]).map((d) => d.id);
    };
    /** Starts the secret deployment, reports the Run As step started, asks its secret: the reply. */
    async function askSecret(m: TestMachine) {
      const run = await m.call("POST", "/mp/v1/runs", { deployment: secretDeployment, bootPath: "pxe" });
      if (run.status !== 201 && run.status !== 200) return run;
      assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "1", name: "Join", state: "started" })).status, 201);
      return m.call("POST", `/mp/v1/runs/${run.body.id}/secrets`, { step: "1", name: "JoinCredential" });
    }
    const certificateOf = async (serial: string) =>
      ((await admin("GET", "/api/v1/certificates")).body as { serial: string; assurance?: string }[]).find((c) => c.serial === serial);

    before(async () => {
      t = await startTestSite({ database });
      assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.vendor == 'QEMU'" })).status, 201);
      assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: canary, secret: true })).status, 201);
      const withSecret = { name: "Join build", steps: [
        { name: "Say", type: "run-command", with: { command: "true" } },
        { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } },
      ] };
      const plain = { name: "Plain build", steps: [{ name: "Say", type: "run-command", with: { command: "true" } }] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: withSecret })).status, 201);
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: plain })).status, 201);
      const d1 = await admin("POST", "/api/v1/deployments", { name: "Join lab", taskSequence: "Join build", collection: "Lab", purpose: "required", bootPaths: ["pxe"] });
      assert.equal(d1.status, 201, d1.text);
      secretDeployment = d1.body.id;
      const d2 = await admin("POST", "/api/v1/deployments", { name: "Plain lab", taskSequence: "Plain build", collection: "Lab", purpose: "available", bootPaths: ["pxe"] });
      assert.equal(d2.status, 201, d2.text);
      plainDeployment = d2.body.id;
    });
    after(() => t.close());

    it("a sniffable enrollment gets no secret and cannot start a secret-using deployment (403, audited); its policy leaves that deployment out", async () => {
      const { m, id } = await approved("sniff-1");
      const e = await m.enroll({ kind: "boot-token", token: await bootToken(m, id) });
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "sniffable");
      assert.equal((await certificateOf(e.body.serial))?.assurance, "sniffable");
      assert.equal((await admin("GET", `/api/v1/devices/${id}`)).body.enrollmentAssurance, "sniffable");
      assert.deepEqual(await policyIds(m), [plainDeployment], "the secret-using required deployment is left out; the secret-free one stays");
      const signed = (await m.call("GET", "/mp/v1/policy?bootPath=pxe")).body;
      const pinned = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
      assert.ok(!JSON.stringify(verifyPolicy(signed, pinned, { deviceId: id, now: new Date() })).includes("JoinCredential"), "not even the secret's name");
      const r = await askSecret(m);
      assert.equal(r.status, 403, r.text);
      assert.equal(r.body.code, "SLIPWAY_ASSURANCE_TOO_LOW");
      assert.ok((await audit("run.start")).some((a) => a.outcome === "denied" && a.actor === `device:${id}` && a.details?.assurance === "sniffable"));
      assert.equal(((await admin("GET", `/api/v1/runs?device=${id}`)).body as unknown[]).length, 0, "no run was started");
      m.close();
    });

    it("password, approved and media enrollments of the same deployment get the secret, each recorded with its level", async () => {
      const viaPassword = await approved("pw-1");
      const got: Record<string, string> = {};
      await withPxePassword(async () => {
        const e = await viaPassword.m.enroll({ kind: "boot-token", token: await bootToken(viaPassword.m, viaPassword.id), pxePassword: PXE_PASSWORD });
        assert.equal(e.status, 201, e.text);
        got[e.body.serial] = "password";
      });
      const viaApproval = await approved("appr-1");
      const a = await enrollApproved(t, viaApproval.m);
      assert.equal(a.status, 201, a.text);
      got[a.body.serial] = "approved";
      const cred = await admin("POST", "/api/v1/enrollment-credentials", { name: "Lab sticks", uses: 1, expiresInHours: 1 });
      assert.equal(cred.status, 201, cred.text);
      const viaMedia = await newMachine(t, ids());
      const md = await viaMedia.enroll({ kind: "media", secret: cred.body.secret });
      assert.equal(md.status, 201, md.text);
      got[md.body.serial] = "media";
      for (const m of [viaPassword.m, viaApproval.m, viaMedia]) {
        const r = await askSecret(m);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.value, canary);
      }
      for (const [serial, level] of Object.entries(got)) assert.equal((await certificateOf(serial))?.assurance, level);
      assert.equal((await admin("GET", `/api/v1/devices/${viaApproval.id}`)).body.enrollmentAssurance, "approved");
      const releases = (await audit("secret.release")).filter((x) => x.outcome === "success");
      assert.deepEqual(new Set(releases.map((x) => x.details?.assurance)), new Set(["password", "approved", "media"]));
      for (const m of [viaPassword.m, viaApproval.m, viaMedia]) m.close();
    });

    it("renewal keeps the enrollment's level: a sniffable chain stays sniffable, an approved one stays approved", async () => {
      const s = await approved("renew-sniff");
      assert.equal((await s.m.enroll({ kind: "boot-token", token: await bootToken(s.m, s.id) })).status, 201);
      let h: Holder = { keyPem: s.m.keyPem, certPem: s.m.certPem! };
      for (let i = 0; i < 2; i++) {
        const { r, next } = await renew(t, h);
        assert.equal(r.status, 201, r.text);
        assert.equal((await certificateOf(r.body.serial))?.assurance, "sniffable");
        h = next!;
      }
      const run = await callAs(t, h, "POST", "/mp/v1/runs", { deployment: secretDeployment, bootPath: "pxe" });
      assert.equal(run.status, 403);
      assert.equal(run.body.code, "SLIPWAY_ASSURANCE_TOO_LOW");

      const p = await approved("renew-appr");
      assert.equal((await enrollApproved(t, p.m)).status, 201);
      const { r, next } = await renew(t, { keyPem: p.m.keyPem, certPem: p.m.certPem! });
      assert.equal(r.status, 201, r.text);
      assert.equal((await certificateOf(r.body.serial))?.assurance, "approved");
      const started = await callAs(t, next!, "POST", "/mp/v1/runs", { deployment: secretDeployment, bootPath: "pxe" });
      assert.equal(started.status, 201, started.text);
      assert.equal((await callAs(t, next!, "POST", `/mp/v1/runs/${started.body.id}/events`, { step: "1", state: "started" })).status, 201);
      const sec = await callAs(t, next!, "POST", `/mp/v1/runs/${started.body.id}/secrets`, { step: "1", name: "JoinCredential" });
      assert.equal(sec.status, 200, sec.text);
      s.m.close();
      p.m.close();
    });

    it("a deployment's minimum: allowSniffableEnrollment is refused for a task sequence with secrets, audited when set; minimumAssurance hides a secret-free deployment from sniffable enrollments", async () => {
      const refused = await admin("POST", "/api/v1/deployments", { name: "Join open", taskSequence: "Join build", collection: "Lab", allowSniffableEnrollment: true });
      assert.equal(refused.status, 400, refused.text);
      assert.equal((await admin("PATCH", `/api/v1/deployments/${secretDeployment}`, { minimumAssurance: "sniffable" })).status, 400);
      assert.equal((await admin("GET", `/api/v1/deployments/${secretDeployment}`)).body.minimumAssurance, null, "nothing changed");
      const ok = await admin("PATCH", `/api/v1/deployments/${plainDeployment}`, { allowSniffableEnrollment: true });
      assert.equal(ok.status, 200, ok.text);
      assert.ok((await audit("deployment.update")).some((a) => a.object === `deployment:${plainDeployment}` && a.details?.allowSniffableEnrollment === true));
      const { m, id } = await approved("sniff-2");
      assert.equal((await m.enroll({ kind: "boot-token", token: await bootToken(m, id) })).status, 201);
      assert.deepEqual(await policyIds(m), [plainDeployment]);
      assert.equal((await admin("PATCH", `/api/v1/deployments/${plainDeployment}`, { allowSniffableEnrollment: false, minimumAssurance: "password" })).status, 200);
      assert.deepEqual(await policyIds(m), [], "a minimum above sniffable hides it too");
      const r = await m.call("POST", "/mp/v1/runs", { deployment: plainDeployment, bootPath: "pxe" });
      assert.equal(r.status, 403);
      assert.equal(r.body.code, "SLIPWAY_ASSURANCE_TOO_LOW");
      assert.equal((await admin("PATCH", `/api/v1/deployments/${plainDeployment}`, { minimumAssurance: null })).status, 200);
      m.close();
    });
  });
}

describe("expired boot tokens", () => {
  let t: TestSite;
  let clock = Date.now();
  before(async () => {
    t = await startTestSite({ now: () => new Date(clock) });
  });
  after(() => t.close());

  it("are deleted once an hour past expiry, when the next token is issued", async () => {
    const r = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "tok-1", macs: ["52:54:00:32:00:01"], state: "approved" } });
    assert.equal(r.status, 201, r.text);
    const old = await issueBootToken(t.site, { deviceId: r.body.id, mac: "52:54:00:32:00:01", smbiosUuid: null, ttlSeconds: 60 });
    const s = stores(t.site.db).enrollment;
    clock += 30 * 60_000;
    await issueBootToken(t.site, { deviceId: r.body.id, mac: "52:54:00:32:00:01", smbiosUuid: null });
    assert.ok(await s.byHash(hashToken(old.token)), "kept for a while after expiry (refused as expired, not unknown)");
    clock += 32 * 60_000;
    await issueBootToken(t.site, { deviceId: r.body.id, mac: "52:54:00:32:00:01", smbiosUuid: null });
    assert.equal(await s.byHash(hashToken(old.token)), undefined, "deleted");
    const rows = await t.site.db.all<{ n: number }>(`SELECT COUNT(*) AS n FROM enrollment_credentials WHERE kind = 'boot-token'`);
    assert.equal(Number(rows[0].n), 2, "the two unexpired tokens remain");
  });
});
