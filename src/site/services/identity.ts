/**
 * Device identities as administrators see them: the certificate inventory, blocking and
 * revocation (published in the CRL), enrollment credentials for boot media, and the PXE
 * password.
 *
 * Revoking a device's certificate, for any reason, also blocks the device in the same
 * transaction: a revoked identity never comes back by itself — no boot token, media credential
 * or pre-approval enrolls the device again until an administrator approves it. A scoped
 * administrator sees and changes only the certificates of devices in its scopes; another
 * device's certificate, a distribution point's or the site's own is, for it, not there
 * (NOT_FOUND, audited), as devices outside its scopes are. Each change is audited in its
 * transaction; refusals are SlipwayErrors.
 */
import fs from "node:fs";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { CertificateRecord, CertificateStatus } from "../../storage/certificate-store.ts";
import { SlipwayError } from "../../errors.ts";
import { fingerprintOf } from "../../security/ca.ts";
import { passwordProblems } from "../../security/password.ts";
import { createMediaCredential, setPxePassword, pxePasswordHash } from "../credentials.ts";
import { computeMembership, deviceInScope, deviceVisible } from "../membership.ts";
import { adminActor, notFound } from "./common.ts";

/** A certificate as the inventory shows it; `expired` on the site's clock. */
export function certificateSummary(c: CertificateRecord, now: string) {
  return {
    serial: c.serial, kind: c.kind, device: c.deviceId, distributionPoint: c.dpId, subject: c.subject, fingerprint256: c.fingerprint,
    issued: c.createdAt, notBefore: c.notBefore, expires: c.notAfter, expired: c.notAfter <= now,
    status: c.status, statusChangedAt: c.statusChangedAt, reason: c.statusReason, issuedVia: c.issuedVia, lastUsedAt: c.lastUsedAt,
    ...(c.kind === "device" ? { assurance: c.assurance, enrollment: c.enrollmentSerial } : {}),
  };
}

/** One of the site's own certificates (CA, HTTPS server), read from its PEM. */
function siteCertificate(pem: string, role: string) {
  const c = new X509Certificate(pem);
  return { serial: c.serialNumber.toLowerCase(), kind: role, device: null, subject: c.subject, fingerprint256: fingerprintOf(c),
    notBefore: new Date(c.validFrom).toISOString(), expires: new Date(c.validTo).toISOString(), status: "active" };
}

/** Whether the administrator may see a certificate: unscoped, or a device certificate of a device in its scopes. */
async function certificateInScope(site: Site, p: Principal, c: CertificateRecord): Promise<boolean> {
  if (p.scopes === null) return true;
  if (c.kind !== "device" || !c.deviceId) return false;
  return deviceVisible(stores(site.db), p, c.deviceId);
}

/**
 * The certificate inventory: the site's own (for administrators without scopes) and every
 * certificate the administrator may see, optionally of one device (id or name) and status.
 */
export async function listCertificates(site: Site, p: Principal, q: { device?: string; status?: CertificateStatus }) {
  const s = stores(site.db);
  const m = p.scopes === null ? null : await computeMembership(s);
  const inScope = (deviceId: string | null) => m === null || (deviceId !== null && deviceInScope(p, m, deviceId));
  let deviceId: string | undefined;
  if (q.device) {
    const d = (await s.devices.byId(q.device)) ?? (await s.devices.byName(q.device));
    if (!d) throw notFound("device", q.device);
    if (!inScope(d.id)) {
      await site.audit.append({ actor: adminActor(p), action: "certificate.read", outcome: "denied", object: `device:${d.id}`, details: { reason: "out of scope" } });
      throw notFound("device", q.device);
    }
    deviceId = d.id;
  }
  const now = site.now().toISOString();
  const own = [];
  // The site's own certificates and distribution points' are only for unscoped administrators.
  if (m === null && !deviceId && (!q.status || q.status === "active")) {
    own.push(siteCertificate(site.keys.ca.certPem, "site-ca"));
    const server = path.join(site.dataDir, "keys", "server.crt");
    if (fs.existsSync(server)) own.push(siteCertificate(fs.readFileSync(server, "utf8"), "site-server"));
  }
  const certs = (await s.certificates.list({ deviceId, status: q.status })).filter((c) => m === null || (c.kind === "device" && inScope(c.deviceId)));
  return [...own, ...certs.map((c) => certificateSummary(c, now))];
}

export type RevocationReason = "keyCompromise" | "superseded" | "cessationOfOperation" | "unspecified";

/**
 * Blocks, unblocks or revokes a certificate (revocation is final and blocks a device
 * certificate's device until an administrator approves it again). Audited certificate.<action>,
 * and device.block for the device, in one transaction.
 */
export async function setCertificateStatus(site: Site, p: Principal, serial: string, action: "block" | "unblock" | "revoke", reason: RevocationReason) {
  const s = stores(site.db);
  const c = await s.certificates.bySerial(serial);
  if (!c) throw notFound("certificate", serial);
  if (!(await certificateInScope(site, p, c))) {
    await site.audit.append({ actor: adminActor(p), action: `certificate.${action}`, outcome: "denied", object: `certificate:${c.serial}`, details: { device: c.deviceId, reason: "out of scope" } });
    throw notFound("certificate", serial);
  }
  if (c.status === "revoked") throw new SlipwayError("CONFLICT", `Certificate ${c.serial} is revoked; revocation is final`);
  if (action === "unblock" && c.status !== "blocked") throw new SlipwayError("CONFLICT", `Certificate ${c.serial} is not blocked`);
  const status = action === "revoke" ? "revoked" : action === "block" ? "blocked" : "active";
  const now = site.now().toISOString();
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    await t.certificates.setStatus(c.serial, status, action === "unblock" ? null : reason, now);
    await site.audit.append({ actor: adminActor(p), action: `certificate.${action}`, object: `certificate:${c.serial}`, details: { device: c.deviceId, reason } }, tx);
    const d = action === "revoke" && c.kind === "device" && c.deviceId ? await t.devices.byId(c.deviceId) : undefined;
    if (d) {
      // Strict reading: whatever the reason, the device needs an administrator's new approval.
      if (d.state !== "blocked") await t.devices.update(d.id, { state: "blocked" }, now);
      await t.devices.setPreApproval(d.id, false);
      await site.audit.append({ actor: adminActor(p), action: "device.block", object: `device:${d.id}`,
        details: { name: d.name, from: d.state, to: "blocked", reason: `certificate ${c.serial} revoked (${reason}); approve the device to let it enroll again` } }, tx);
    }
  });
  return certificateSummary((await s.certificates.bySerial(c.serial))!, now);
}

/** The enrollment credentials for boot media (never their secret). */
export async function listMediaCredentials(site: Site) {
  return (await stores(site.db).enrollment.list("media")).map((c) => ({ id: c.id, name: c.name, usesLeft: c.usesLeft, expiresAt: c.expiresAt,
    createdBy: c.createdBy, createdAt: c.createdAt, revokedAt: c.revokedAt, lastUsedAt: c.lastUsedAt }));
}

/** Makes a media enrollment credential; its secret is answered once. Audited enrollment-credential.create in the same transaction. */
export async function newMediaCredential(site: Site, p: Principal, b: { name: string; uses: number; expiresInHours: number }) {
  const c = await site.db.transaction(async (tx) => {
    const made = await createMediaCredential(site, { ...b, createdBy: adminActor(p) }, tx);
    await site.audit.append({ actor: adminActor(p), action: "enrollment-credential.create", object: `credential:${made.id}`, details: { name: made.name, uses: made.usesLeft, expiresAt: made.expiresAt } }, tx);
    return made;
  });
  return { id: c.id, name: c.name, usesLeft: c.usesLeft, expiresAt: c.expiresAt, secret: c.secret };
}

/** Revokes a media enrollment credential. Audited enrollment-credential.revoke. */
export async function revokeMediaCredential(site: Site, p: Principal, id: string): Promise<void> {
  const c = await stores(site.db).enrollment.byId(id);
  if (!c || c.kind !== "media") throw notFound("enrollment credential", id);
  await site.db.transaction(async (tx) => {
    await stores(tx).enrollment.revoke(c.id, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "enrollment-credential.revoke", object: `credential:${c.id}` }, tx);
  });
}

/** Whether a PXE password is set (never the password). */
export async function pxePasswordIsSet(site: Site): Promise<boolean> {
  return (await pxePasswordHash(site)) !== null;
}

/** Sets the PXE password (checked for strength), or removes it with null. Audited pxe.password.set or .clear. */
export async function changePxePassword(site: Site, p: Principal, password: string | null): Promise<void> {
  if (password !== null) {
    const problems = passwordProblems(password);
    if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that PXE password: ${problems.join("; ")}`, { problems });
  }
  await site.db.transaction(async (tx) => {
    await setPxePassword(site, password, tx);
    await site.audit.append({ actor: adminActor(p), action: password === null ? "pxe.password.clear" : "pxe.password.set", object: "pxe-password" }, tx);
  });
}
