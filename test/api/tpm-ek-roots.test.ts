/**
 * TPM manufacturer roots (issue #11 item 2: "EK certificates are checked against configured
 * manufacturer roots where given"), with software TPMs manufactured by two stand-in vendors
 * (swtpm_setup --create-ek-cert, each vendor a local CA): with roots configured, an EK is
 * recorded — by an enrollment, an enrollment approval or an import of a certificate — only when
 * its EK certificate is for that key and chains to a configured root.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { newMachine, type TestMachine } from "../support/device.ts";
import { manufactureTpm, startSwtpm, type Swtpm } from "../support/swtpm.ts";
import { tpmPart } from "../support/tpm.ts";
import { openTpmSocket, TpmSession, type TpmIdentity } from "../../src/agent/tpm.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { parseEkPublic } from "../../src/security/tpm-credential.ts";

const PXE_PASSWORD = "Lab-PXE-Passphrase-Roots-2026";

describe("TPM manufacturer roots", () => {
  let t: TestSite;
  const dir = mkdtempSync(path.join(os.tmpdir(), "slipway-ek-roots-"));
  const tpms: Record<string, Swtpm> = {};
  let vendorA = "";
  let vendorB = "";
  let n = 0;
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });

  async function identity(name: string): Promise<TpmIdentity> {
    const s = await TpmSession.open(await openTpmSocket(tpms[name].socket));
    try {
      return s.identity();
    } finally {
      await s.close();
    }
  }
  /** A new approved device; its machine enrolls with the PXE password and the TPM's proof (claiming `claim` instead, if given). */
  async function enroll(name: string, opts: { claimCertificateOf?: string; password?: boolean } = {}) {
    n++;
    const h = n.toString(16).padStart(4, "0");
    const ids = { macs: [`52:54:00:73:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000073${h}` };
    const d = await admin("POST", "/api/v1/devices", { name: `roots-${h}`, ...ids, state: "approved" });
    assert.equal(d.status, 201, d.text);
    const m: TestMachine = await newMachine(t, ids);
    const token = (await issueBootToken(t.site, { deviceId: d.body.id, mac: ids.macs[0], smbiosUuid: ids.smbiosUuid })).token;
    const s = await TpmSession.open(await openTpmSocket(tpms[name].socket));
    try {
      const id = s.identity();
      const claim = opts.claimCertificateOf ? { ...id, ekCertificate: (await identityOf(opts.claimCertificateOf)).ekCertificate } : id;
      const e = await m.enroll({ kind: "boot-token", token, ...(opts.password === false ? {} : { pxePassword: PXE_PASSWORD }) }, {},
        { tpm: await tpmPart(t, token, s, claim) });
      assert.equal(e.status, 201, e.text);
      m.close();
      return { deviceId: d.body.id as string, serial: e.body.serial as string, fingerprint: parseEkPublic(id.ekPublic).fingerprint };
    } finally {
      await s.close();
    }
  }
  const identities: Record<string, TpmIdentity> = {};
  const identityOf = async (name: string) => (identities[name] ??= await identity(name));
  const recorded = async (deviceId: string) => (await admin("GET", `/api/v1/devices/${deviceId}/tpm`)).body.ekFingerprint as string | null;
  const lastEnrollAudit = async (deviceId: string) =>
    ((await admin("GET", "/api/v1/audit?action=device.enroll&limit=1000")).body as any[]).filter((a) => a.object === `device:${deviceId}`).at(-1);

  before(async () => {
    vendorA = manufactureTpm(path.join(dir, "a1"), path.join(dir, "vendor-a")).rootsPem;
    manufactureTpm(path.join(dir, "a2"), path.join(dir, "vendor-a"));
    manufactureTpm(path.join(dir, "a3"), path.join(dir, "vendor-a"));
    vendorB = manufactureTpm(path.join(dir, "b1"), path.join(dir, "vendor-b")).rootsPem;
    for (const name of ["a1", "a2", "a3", "b1", "plain"]) tpms[name] = await startSwtpm(path.join(dir, name));
    t = await startTestSite();
    assert.equal((await admin("PUT", "/api/v1/pxe/password", { password: PXE_PASSWORD })).status, 204);
  });
  after(async () => {
    await t?.close();
    for (const s of Object.values(tpms)) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the agent reads the EK certificate the manufacturer stored in NV, for its own EK", async () => {
    const id = await identityOf("a1");
    assert.ok(id.ekCertificate, "an EK certificate was read");
    const cert = new X509Certificate(Buffer.from(id.ekCertificate!, "base64"));
    assert.ok(cert.publicKey.export({ type: "spki", format: "der" }).equals(parseEkPublic(id.ekPublic).key.export({ type: "spki", format: "der" })));
    assert.equal((await identityOf("plain")).ekCertificate, undefined, "a TPM without one sends none");
  });

  it("bad roots are refused and change nothing; only site.write sets them; setting and clearing are audited", async () => {
    assert.equal((await admin("PUT", "/api/v1/tpm/ek-roots", { pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" })).status, 400);
    assert.equal((await admin("PUT", "/api/v1/tpm/ek-roots", { pem: "x".repeat(60) })).status, 400);
    assert.deepEqual((await admin("GET", "/api/v1/tpm/ek-roots")).body.certificates, []);
    const r = await admin("POST", "/api/v1/admins", { username: "deployer", password: "Lab-Operator-Passphrase-2026-x", roles: ["deployment-administrator"] });
    assert.equal(r.status, 201, r.text);
    const tok = (await t.request("POST", "/api/v1/sessions", { body: { username: "deployer", password: "Lab-Operator-Passphrase-2026-x" } })).body.token as string;
    await t.request("POST", "/api/v1/me/password", { token: tok, body: { currentPassword: "Lab-Operator-Passphrase-2026-x", newPassword: "Lab-Operator-Passphrase-2026-y" } });
    assert.equal((await t.request("PUT", "/api/v1/tpm/ek-roots", { token: tok, body: { pem: vendorA } })).status, 403);
    const set = await admin("PUT", "/api/v1/tpm/ek-roots", { pem: vendorA });
    assert.equal(set.status, 200, set.text);
    assert.equal(set.body.certificates.length, 2);
    assert.equal(((await admin("GET", "/api/v1/audit?action=tpm.ek-roots.set&limit=10")).body as any[]).length, 1);
  });

  it("with roots set, an enrollment records an EK only with a certificate from a configured manufacturer, for that key", async () => {
    const good = await enroll("a1");
    assert.equal(await recorded(good.deviceId), good.fingerprint, "vendor A's TPM is recorded");
    const noCert = await enroll("plain");
    assert.equal(await recorded(noCert.deviceId), null);
    assert.match((await lastEnrollAudit(noCert.deviceId)).details.tpm.notRecorded, /sent no EK certificate/);
    const otherVendor = await enroll("b1");
    assert.equal(await recorded(otherVendor.deviceId), null);
    assert.match((await lastEnrollAudit(otherVendor.deviceId)).details.tpm.notRecorded, /no configured TPM manufacturer certificate issued/);
    // A software TPM presenting a genuine TPM's certificate: the certificate is for another key.
    const borrowed = await enroll("plain", { claimCertificateOf: "a2" });
    assert.equal(await recorded(borrowed.deviceId), null);
    assert.match((await lastEnrollAudit(borrowed.deviceId)).details.tpm.notRecorded, /for another key/);
  });

  it("with roots set, approving a sniffable enrollment records only a certified EK; an imported certificate must chain too", async () => {
    assert.equal((await admin("DELETE", "/api/v1/pxe/password")).status, 204);
    try {
      const good = await enroll("a2", { password: false });
      const bad = await enroll("b1", { password: false });
      const ok = await admin("POST", "/api/v1/enrollments/approve", { serials: [good.serial, bad.serial] });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(await recorded(good.deviceId), good.fingerprint);
      assert.equal(await recorded(bad.deviceId), null, "an uncertified EK is not recorded by an approval");
      const certB = new X509Certificate(Buffer.from((await identityOf("b1")).ekCertificate!, "base64")).toString();
      const refused = await admin("PUT", `/api/v1/devices/${bad.deviceId}/tpm`, { ek: certB });
      assert.equal(refused.status, 400, refused.text);
      assert.equal(await recorded(bad.deviceId), null);
      // With vendor B's CA added, the same import goes through.
      assert.equal((await admin("PUT", "/api/v1/tpm/ek-roots", { pem: vendorA + vendorB })).status, 200);
      assert.equal((await admin("PUT", `/api/v1/devices/${bad.deviceId}/tpm`, { ek: certB })).status, 200);
      assert.equal(await recorded(bad.deviceId), bad.fingerprint);
    } finally {
      await admin("PUT", "/api/v1/pxe/password", { password: PXE_PASSWORD });
    }
  });

  it("an EK certificate whose key does not parse is refused as such (no 500); a certificate under an old PEM label is checked like any", async () => {
    assert.equal((await admin("PUT", "/api/v1/tpm/ek-roots", { pem: vendorA })).status, 200);
    const id = await identityOf("a3");
    const der = Buffer.from(id.ekCertificate!, "base64");
    // rsaEncryption (1.2.840.113549.1.1.1) in the SubjectPublicKeyInfo, changed to an unknown algorithm.
    const oid = Buffer.from("06092a864886f70d010101", "hex");
    const at = der.indexOf(oid);
    assert.ok(at > 0);
    const broken = Buffer.from(der);
    broken[at + oid.length - 1] = 0x7f;
    // The same enrollment with the broken certificate: the machine enrolls; the EK is not recorded, and why.
    n++;
    const h = n.toString(16).padStart(4, "0");
    const ids = { macs: [`52:54:00:73:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000073${h}` };
    const d = await admin("POST", "/api/v1/devices", { name: `roots-${h}`, ...ids, state: "approved" });
    const m = await newMachine(t, ids);
    const token = (await issueBootToken(t.site, { deviceId: d.body.id, mac: ids.macs[0], smbiosUuid: ids.smbiosUuid })).token;
    const s = await TpmSession.open(await openTpmSocket(tpms.a3.socket));
    try {
      const claim = { ...s.identity(), ekCertificate: broken.toString("base64") };
      const r = await m.enroll({ kind: "boot-token", token, pxePassword: PXE_PASSWORD }, {}, { tpm: await tpmPart(t, token, s, claim) });
      assert.equal(r.status, 201, r.text);
      assert.equal(await recorded(d.body.id), null);
      assert.match((await lastEnrollAudit(d.body.id)).details.tpm.notRecorded, /does not parse/);
    } finally {
      await s.close();
      m.close();
    }
    // A forged certificate (another vendor's) under "X509 CERTIFICATE" is checked, and refused.
    const certB = new X509Certificate(Buffer.from((await identityOf("b1")).ekCertificate!, "base64")).toString()
      .replace(/-----(BEGIN|END) CERTIFICATE-----/g, "-----$1 X509 CERTIFICATE-----");
    const r = await admin("PUT", `/api/v1/devices/${d.body.id}/tpm`, { ek: certB });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.message, /no configured TPM manufacturer certificate/);
    assert.equal(await recorded(d.body.id), null);
  });

  it("without roots, EKs are recorded as before, certificate or not", async () => {
    assert.equal((await admin("DELETE", "/api/v1/tpm/ek-roots")).status, 204);
    assert.equal(((await admin("GET", "/api/v1/audit?action=tpm.ek-roots.clear&limit=10")).body as any[]).length, 1);
    // "plain" has no certificate; it is not yet bound to any device (its earlier enrollments were not recorded).
    const e = await enroll("plain");
    assert.equal(await recorded(e.deviceId), e.fingerprint);
  });
});
