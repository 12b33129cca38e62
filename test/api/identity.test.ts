/**
 * Identity and trust end to end: enrollment by boot token (with the PXE password), media
 * credential and pre-approval; mutual TLS on every management point request; a device reaches
 * only its own resources; blocking and revocation; signed policy; secrets just in time.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPublicKey, randomBytes } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { newMachine, request, type TestMachine, enrollApproved } from "../support/device.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { verifyPolicy, PolicyError } from "../../src/security/signed-policy.ts";
import { canonicalJson } from "../../src/security/canonical-json.ts";

describe("device identity and the management point", () => {
  let t: TestSite;
  let clock = Date.now();
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  let n = 0;
  const ids = () => {
    n++;
    return { macs: [`52:54:00:10:00:${n.toString(16).padStart(2, "0")}`], smbiosUuid: `00000000-0000-4000-8000-0000000000${n.toString(16).padStart(2, "0")}` };
  };
  /** An approved device record and a fresh machine with the same identifiers. */
  async function approvedMachine(name: string, extra: Record<string, unknown> = {}): Promise<{ m: TestMachine; id: string }> {
    const i = ids();
    const r = await admin("POST", "/api/v1/devices", { name, macs: i.macs, smbiosUuid: i.smbiosUuid, state: "approved", ...extra });
    assert.equal(r.status, 201, r.text);
    return { m: await newMachine(t, i), id: r.body.id };
  }
  async function bootToken(m: TestMachine, deviceId: string, ttlSeconds?: number) {
    return (await issueBootToken(t.site, { deviceId, mac: m.macs[0], smbiosUuid: m.smbiosUuid, ttlSeconds })).token;
  }

  before(async () => {
    t = await startTestSite({ now: () => new Date(clock) });
  });
  after(() => t.close());

  it("a boot token enrolls its machine once, and the certificate names the device", async () => {
    const { m, id } = await approvedMachine("pc-token");
    const token = await bootToken(m, id);
    const r = await m.enroll({ kind: "boot-token", token });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.deviceId, id);
    const cert = new X509Certificate(r.body.certificate);
    assert.ok(cert.checkIssued(new X509Certificate(t.ca)));
    assert.equal(cert.subject, `CN=device:${id}`);
    assert.match(cert.subjectAltName ?? "", new RegExp(`URI:urn:slipway:device:${id}`));
    const days = (Date.parse(cert.validTo) - clock) / 86_400_000;
    assert.ok(days > 6 && days <= 7.01, `valid ${days} days`);
    const dev = (await admin("GET", `/api/v1/devices/${id}`)).body;
    assert.equal(dev.attributes.vendor, "QEMU");
    const again = await (await newMachine(t, { macs: m.macs, smbiosUuid: m.smbiosUuid })).enroll({ kind: "boot-token", token });
    assert.equal(again.status, 401, "single use");
    m.close();
  });

  it("a boot token is refused after expiry, from another MAC or UUID, and for a blocked device", async () => {
    const { m, id } = await approvedMachine("pc-refused");
    const expired = await bootToken(m, id, 60);
    clock += 61_000;
    assert.equal((await m.enroll({ kind: "boot-token", token: expired })).status, 401);
    const t2 = await bootToken(m, id);
    const otherMac = await newMachine(t, { macs: ["52:54:00:ff:ff:01"], smbiosUuid: m.smbiosUuid });
    assert.equal((await otherMac.enroll({ kind: "boot-token", token: t2 })).status, 401);
    const otherUuid = await newMachine(t, { macs: m.macs, smbiosUuid: "00000000-0000-4000-8000-00000000ffff" });
    assert.equal((await otherUuid.enroll({ kind: "boot-token", token: t2 })).status, 401);
    await admin("POST", `/api/v1/devices/${id}/block`);
    const r = await m.enroll({ kind: "boot-token", token: t2 });
    assert.equal(r.status, 403);
    assert.equal(r.body.code, "SLIPWAY_DEVICE_BLOCKED");
    const audit = (await admin("GET", "/api/v1/audit?action=device.enroll&outcome=denied&limit=1000")).body;
    assert.ok(audit.length >= 4);
    for (const x of [otherMac, otherUuid, m]) x.close();
  });

  it("a media credential enrolls a bounded number of new machines until revoked", async () => {
    const c = await admin("POST", "/api/v1/enrollment-credentials", { name: "Lab USB sticks", uses: 2, expiresInHours: 24 });
    assert.equal(c.status, 201, c.text);
    const results = [];
    for (let i = 0; i < 3; i++) results.push((await (await newMachine(t, ids())).enroll({ kind: "media", secret: c.body.secret }, { serial: `SN-${i}` })).status);
    assert.deepEqual(results, [201, 201, 401]);
    const listed = (await admin("GET", "/api/v1/enrollment-credentials")).body;
    assert.equal(listed[0].usesLeft, 0);
    assert.ok(!JSON.stringify(listed).includes(c.body.secret));
    const created = (await admin("GET", "/api/v1/devices?name=serial-SN-0")).body[0];
    assert.equal(created.state, "approved");
    const c2 = await admin("POST", "/api/v1/enrollment-credentials", { name: "Revoked", uses: 5 });
    await admin("DELETE", `/api/v1/enrollment-credentials/${c2.body.id}`);
    assert.equal((await (await newMachine(t, ids())).enroll({ kind: "media", secret: c2.body.secret })).status, 401);
  });

  it("pre-approval enrolls a device's first certificate only, and only with matching identifiers", async () => {
    const { m } = await approvedMachine("pc-preapproved");
    const wrongUuid = await newMachine(t, { macs: m.macs, smbiosUuid: "00000000-0000-4000-8000-00000000eeee" });
    assert.equal((await wrongUuid.enroll({ kind: "pre-approved" })).status, 401);
    assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
    const spoof = await newMachine(t, { macs: m.macs, smbiosUuid: m.smbiosUuid });
    assert.equal((await spoof.enroll({ kind: "pre-approved" })).status, 401, "a second machine claiming the same identifiers gets nothing");
    const pending = await admin("POST", "/api/v1/devices", { name: "pc-pending", ...ids() });
    assert.equal((await (await newMachine(t, { macs: pending.body.macs, smbiosUuid: pending.body.smbiosUuid })).enroll({ kind: "pre-approved" })).status, 401);
    for (const x of [m, wrongUuid, spoof]) x.close();
  });

  it("a malformed or forged certificate request is refused and nothing is issued", async () => {
    const { m, id } = await approvedMachine("pc-badcsr");
    const token = await bootToken(m, id);
    const bad = await request(t.mp.url, { method: "POST", path: "/mp/v1/enroll", ca: t.ca,
      body: { credential: { kind: "boot-token", token }, csr: "-----BEGIN CERTIFICATE REQUEST-----\n" + randomBytes(200).toString("base64") + "\n-----END CERTIFICATE REQUEST-----", inventory: { macs: m.macs, smbiosUuid: m.smbiosUuid } } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.code, "SLIPWAY_CSR_INVALID");
    assert.equal((await admin("GET", `/api/v1/certificates?device=${id}`)).body.length, 0);
    m.close();
  });

  it("management point routes need a valid certificate of this site", async () => {
    const anon = await request(t.mp.url, { method: "GET", path: "/mp/v1/policy", ca: t.ca });
    assert.equal(anon.status, 401);
    // A key and self-made certificate the site never issued.
    const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
    const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
    const self = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: "01", name: "CN=device:forged", notBefore: new Date(clock - 1000), notAfter: new Date(clock + 86_400_000), keys, signingAlgorithm: alg });
    const keyPem = (await import("node:crypto")).KeyObject.from(keys.privateKey).export({ type: "pkcs8", format: "pem" }) as string;
    const forged = await request(t.mp.url, { method: "GET", path: "/mp/v1/policy", ca: t.ca, key: keyPem, cert: self.toString("pem") });
    assert.equal(forged.status, 401);
  });

  describe("with two enrolled devices and a deployment", () => {
    let a: TestMachine, b: TestMachine;
    let aId = "", bId = "";
    const canary = `CANARY-${randomBytes(8).toString("hex")}`;
    before(async () => {
      ({ m: a, id: aId } = await approvedMachine("lab-a", { attributes: { room: "L1" } }));
      ({ m: b, id: bId } = await approvedMachine("lab-b", { attributes: { room: "L1" } }));
      // Approved enrollments, not a boot token alone: secrets never go to a sniffable enrollment (test/api/assurance.test.ts).
      assert.equal((await enrollApproved(t, a)).status, 201);
      assert.equal((await enrollApproved(t, b)).status, 201);
      await admin("POST", "/api/v1/collections", { name: "Lab L1", rule: "attributes.room == 'L1'" });
      await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: canary, secret: true });
      await admin("POST", "/api/v1/variables", { scope: "site", name: "TimeZone", value: "UTC" });
      await admin("POST", "/api/v1/variables", { scope: "collection", target: "Lab L1", name: "TimeZone", value: "Europe/Oslo" });
      await admin("POST", "/api/v1/variables", { scope: "device", target: "lab-a", name: "OSDComputerName", value: "LAB-A" });
      const doc = { name: "Lab build", variables: { TimeZone: "America/Chicago", Keyboard: "us" }, steps: [
        { name: "Apply", type: "apply-image", with: { image: "debian-base" } },
        { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } },
      ] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
      assert.equal((await admin("POST", "/api/v1/deployments", { name: "L1 build", taskSequence: "Lab build", collection: "Lab L1", purpose: "required", bootPaths: ["pxe"] })).status, 201);
    });
    after(() => {
      a.close();
      b.close();
    });

    it("the signed policy verifies with the pinned key, resolves variables by precedence, and names secrets only", async () => {
      const r = await a.call("GET", "/mp/v1/policy?bootPath=pxe");
      assert.equal(r.status, 200, r.text);
      const pinned = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
      const p = verifyPolicy(r.body, pinned, { deviceId: aId, now: new Date(clock) });
      assert.equal(p.deployments.length, 1);
      const d = p.deployments[0];
      assert.deepEqual(d.variables, { Keyboard: "us", OSDComputerName: "LAB-A", TimeZone: "Europe/Oslo" });
      assert.deepEqual(d.secrets, ["JoinCredential"]);
      assert.deepEqual(d.content, [{ image: "debian-base", manifest: null, sources: [] }], "no image of that name is imported");
      assert.ok(!r.text.includes(canary));
      assert.throws(() => verifyPolicy(r.body, pinned, { deviceId: bId, now: new Date(clock) }), PolicyError, "another device's policy");
      assert.throws(() => verifyPolicy(r.body, pinned, { deviceId: aId, now: new Date(clock + 2 * 3600_000) }), PolicyError, "expired");
      assert.equal((await a.call("GET", "/mp/v1/policy?bootPath=media")).body.policy.deployments.length, 0, "PXE-only deployment");
    });

    it("1,000 random bit flips in a signed policy are all refused; the untouched one is accepted", async () => {
      const signed = (await a.call("GET", "/mp/v1/policy")).body;
      const pinned = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
      const bytes = Buffer.from(canonicalJson(signed));
      let refused = 0;
      for (let i = 0; i < 1000; i++) {
        const flipped = Buffer.from(bytes);
        const at = Math.floor(Math.random() * flipped.length);
        flipped[at] ^= 1 << Math.floor(Math.random() * 8);
        let doc: unknown;
        try {
          doc = JSON.parse(flipped.toString("utf8"));
        } catch {
          refused++;
          continue;
        }
        assert.throws(() => verifyPolicy(doc, pinned, { deviceId: aId, now: new Date(clock) }), PolicyError, `flip at ${at}`);
        refused++;
      }
      assert.equal(refused, 1000);
      assert.equal(verifyPolicy(JSON.parse(bytes.toString()), pinned, { deviceId: aId, now: new Date(clock) }).deviceId, aId);
    });

    it("device A gets 403 for device B's policy and run, and it is audited", async () => {
      assert.equal((await a.call("GET", `/mp/v1/devices/${aId}/policy`)).status, 200);
      const r = await a.call("GET", `/mp/v1/devices/${bId}/policy`);
      assert.equal(r.status, 403);
      assert.equal(r.body.code, "SLIPWAY_NOT_YOUR_RESOURCE");
      const dep = (await b.call("GET", "/mp/v1/policy")).body.policy.deployments[0].id;
      const run = await b.call("POST", "/mp/v1/runs", { deployment: dep, bootPath: "pxe" });
      assert.equal(run.status, 201);
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.body.id}/secrets`, { step: "1", name: "JoinCredential" })).status, 403);
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "0", state: "started" })).status, 403);
      const denied = (await admin("GET", "/api/v1/audit?action=mp.denied&limit=1000")).body;
      assert.ok(denied.filter((e: { actor: string }) => e.actor === `device:${aId}`).length >= 3);
    });

    it("secrets are released just in time, only to the running step that references them, and masked in status logs", async () => {
      const dep = (await a.call("GET", "/mp/v1/policy")).body.policy.deployments[0].id;
      const run = (await a.call("POST", "/mp/v1/runs", { deployment: dep, bootPath: "pxe" })).body;
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.id}/secrets`, { step: "0", name: "JoinCredential" })).status, 403, "step 0 does not reference it");
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.id}/secrets`, { step: "1", name: "TimeZone" })).status, 403);
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.id}/secrets`, { step: "1", name: "JoinCredential" })).status, 403, "not before the step is reported started");
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.id}/events`, { step: "1", name: "Join", state: "started" })).status, 201);
      const ok = await a.call("POST", `/mp/v1/runs/${run.id}/secrets`, { step: "1", name: "JoinCredential" });
      assert.equal(ok.status, 200);
      assert.equal(ok.body.value, canary);
      const ev = await a.call("POST", `/mp/v1/runs/${run.id}/events`, { step: "1", name: "Join", state: "failed", exitCode: 1, message: `realm: bad password ${canary} for svc` });
      assert.equal(ev.status, 201);
      assert.equal(ev.body.message, "realm: bad password ******** for svc");
      await a.call("POST", `/mp/v1/runs/${run.id}/events`, { step: "", state: "failed", exitCode: 1 });
      assert.equal((await a.call("POST", `/mp/v1/runs/${run.id}/secrets`, { step: "1", name: "JoinCredential" })).status, 403, "not after the run ended");
      const view = await admin("GET", `/api/v1/runs/${run.id}`);
      assert.equal(view.body.state, "failed");
      assert.deepEqual(view.body.events.map((e: { step: string; state: string }) => `${e.step}:${e.state}`), ["1 Join:started", "1 Join:failed", "(run):failed"]);
      const releases = (await admin("GET", "/api/v1/audit?action=secret.release&limit=1000")).body;
      assert.ok(releases.some((e: { outcome: string; details: { step: string } }) => e.outcome === "success" && e.details.step === "1"));
      const everything = JSON.stringify((await admin("GET", "/api/v1/audit?limit=1000")).body) + JSON.stringify(view.body) + t.logLines.join("\n")
        + JSON.stringify((await admin("GET", "/api/v1/devices/lab-a/policy")).body);
      assert.ok(!everything.includes(canary), "the canary appears nowhere but in the release");
    });

    it("blocking a device refuses its next request on an open keep-alive connection; revocation reaches the CRL", async () => {
      assert.equal((await b.call("GET", "/mp/v1/policy")).status, 200);
      const free = Object.values(b.agent.freeSockets).flat().length;
      assert.equal(free, 1, "a keep-alive connection is open");
      assert.equal((await admin("POST", `/api/v1/devices/${bId}/block`)).status, 200);
      const refused = await b.call("GET", "/mp/v1/policy");
      assert.equal(refused.status, 403);
      assert.equal(refused.body.code, "SLIPWAY_DEVICE_BLOCKED");
      await admin("POST", `/api/v1/devices/${bId}/approve`);
      assert.equal((await b.call("GET", "/mp/v1/policy")).status, 200);

      const serial = (await admin("GET", `/api/v1/certificates?device=${bId}`)).body[0].serial;
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/block`, {})).status, 200);
      assert.equal((await b.call("GET", "/mp/v1/policy")).status, 403);
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/unblock`, {})).status, 200);
      assert.equal((await b.call("GET", "/mp/v1/policy")).status, 200);
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/revoke`, { reason: "keyCompromise" })).status, 200);
      assert.equal((await b.call("GET", "/mp/v1/policy")).status, 403);
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/unblock`, {})).status, 409, "revocation is final");
      for (const pem of [(await t.request("GET", "/api/v1/crl.pem")).body.pem, (await request(t.mp.url, { method: "GET", path: "/mp/v1/crl", ca: t.ca })).body.pem]) {
        const crl = new x509.X509Crl(pem);
        assert.ok(await crl.verify({ publicKey: await new x509.X509Certificate(t.ca).publicKey.export() }), "signed by the site CA");
        assert.ok(crl.entries.some((e) => e.serialNumber.toLowerCase() === serial), "the serial is listed");
      }
      const inv = (await admin("GET", `/api/v1/certificates?device=${bId}`)).body[0];
      assert.equal(inv.status, "revoked");
      assert.ok(inv.lastUsedAt);
    });

    it("a Deployment Administrator cannot issue, block or revoke certificates or create credentials", async () => {
      const token = await adminWithRoles(t, "deployer", ["deployment-administrator"]);
      const serial = (await admin("GET", `/api/v1/certificates?device=${aId}`)).body[0].serial;
      for (const [m, p, body] of [["POST", "/api/v1/enrollment-credentials", { name: "x" }], ["POST", `/api/v1/certificates/${serial}/revoke`, {}],
        ["POST", `/api/v1/certificates/${serial}/block`, {}], ["GET", "/api/v1/certificates", undefined], ["PUT", "/api/v1/pxe/password", { password: "Another-Long-Passphrase" }]] as const) {
        assert.equal((await t.request(m, p, { token, body })).status, 403, `${m} ${p}`);
      }
    });
  });

  // Last: it moves the site clock 15 minutes ahead, and certificates issued after that would
  // not yet be valid for the TLS stack, which checks the real clock.
  it("with a PXE password, a token needs it; five wrong guesses lock the machine out for 15 minutes", async () => {
    const pxe = "Lab-Boot-Passphrase-7";
    assert.equal((await admin("PUT", "/api/v1/pxe/password", { password: pxe })).status, 204);
    const { m, id } = await approvedMachine("pc-pxe");
    const token = await bootToken(m, id);
    const none = await m.enroll({ kind: "boot-token", token });
    assert.equal(none.body.code, "SLIPWAY_PXE_PASSWORD_REQUIRED");
    for (let i = 0; i < 5; i++) assert.equal((await m.enroll({ kind: "boot-token", token, pxePassword: `guess-${i}-xyz` })).status, 401);
    const locked = await m.enroll({ kind: "boot-token", token, pxePassword: pxe });
    assert.equal(locked.status, 429, "even the right password waits out the lockout");
    clock += 15 * 60_000 + 1000;
    const ok = await m.enroll({ kind: "boot-token", token: await bootToken(m, id), pxePassword: pxe });
    assert.equal(ok.status, 201, ok.text);
    const everything = JSON.stringify((await admin("GET", "/api/v1/audit?limit=1000")).body) + t.logLines.join("\n");
    assert.ok(!everything.includes("guess-") && !everything.includes(pxe), "guesses and the password never reach the audit log or logs");
    const stored = JSON.stringify(await t.site.db.all(`SELECT * FROM site_settings`));
    assert.ok(!stored.includes(pxe) && stored.includes("$argon2id$"), "only a memory-hard verifier is stored");
    assert.equal((await admin("DELETE", "/api/v1/pxe/password")).status, 204);
    m.close();
  });
});

describe("a single-use boot token raced by two machines", () => {
  it("enrolls exactly one of them and refuses the other", async () => {
    const t = await startTestSite();
    try {
      const mac = "52:54:00:10:ee:01";
      const uuid = "00000000-0000-4000-8000-00000000ee01";
      const d = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "racer", macs: [mac], smbiosUuid: uuid, state: "approved" } });
      const { token } = await issueBootToken(t.site, { deviceId: d.body.id, mac, smbiosUuid: uuid });
      const machines = await Promise.all(Array.from({ length: 4 }, () => newMachine(t, { macs: [mac], smbiosUuid: uuid })));
      const statuses = (await Promise.all(machines.map((m) => m.enroll({ kind: "boot-token", token })))).map((r) => r.status).sort();
      assert.deepEqual(statuses, [201, 401, 401, 401]);
      machines.forEach((m) => m.close());
    } finally {
      await t.close();
    }
  });
});
