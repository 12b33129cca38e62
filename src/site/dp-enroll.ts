/**
 * A distribution point's identity, issued by the site CA: an administrator registers it and
 * gets a one-time enrollment secret (24 hours; only its hash is kept); the distribution point
 * makes two key pairs of its own and sends a certificate request for each with the secret. It
 * gets a client certificate (`CN=dp:<id>`, `urn:slipway:dp:<id>`) to talk to the management
 * point, and a server certificate for the host names registered for it — never for others, so
 * a distribution point cannot pose as the site or as another server. Renewal needs the current
 * client certificate instead of a secret.
 *
 * Invariants: a distribution point never holds a certificate for a name another role holds
 * (the site's and management points' names, an earlier-registered distribution point's) nor
 * for a loopback name or address — checked here before anything is issued, so a registration
 * made before the rule gets nothing either. A certificate that renewal or re-enrollment
 * replaced is revoked (superseded, listed in the CRL) in the transaction that records its
 * successor, and never works again.
 */
import { z } from "zod";
import type { Site } from "./site.ts";
import type { Sql } from "../storage/db.ts";
import { stores } from "../storage/stores.ts";
import type { DistributionPoint } from "../storage/distribution-point-store.ts";
import { hashToken, newToken } from "../security/password.ts";
import { CertificateRequestError, issueClientCertificate, issueServerCertificateForRequest, type IssuedCertificate } from "../security/ca.ts";
import { normalizeHostName } from "../domain/distribution-point.ts";
import { SlipwayError } from "../errors.ts";
import { refusedHostName, refuseHostName } from "./dp-names.ts";
import net from "node:net";

export const DP_CERT_DAYS = 30;
export const DP_SECRET_HOURS = 24;

const Csr = z.string().min(100).max(16 * 1024);
const Names = z.array(z.string().min(1).max(253)).max(16).default([]);

export const DpEnrollBody = z.strictObject({ secret: z.string().min(10).max(200), csr: Csr, serverCsr: Csr, names: Names });
export const DpRenewBody = z.strictObject({ csr: Csr, serverCsr: Csr, names: Names });

export type DpEnrolled = {
  id: string; name: string; url: string; hostNames: string[];
  certificate: string; serial: string; expiresAt: string;
  serverCertificate: string; serverSerial: string; serverExpiresAt: string;
  caCertificate: string;
};

/** A new one-time enrollment secret for a distribution point: returned once, stored as a hash. */
export function newDpSecret(site: Site): { secret: string; secretHash: string; expiresAt: string } {
  const secret = newToken("swd");
  return { secret, secretHash: hashToken(secret), expiresAt: new Date(site.now().getTime() + DP_SECRET_HOURS * 3600_000).toISOString() };
}

/** The host names asked for, each one registered for this distribution point; all of them when none is asked for. */
function serverNames(dp: DistributionPoint, asked: string[]): string[] {
  // Registrations made before names were canonical may spell them otherwise.
  const registered = [...new Set(dp.hostNames.map((h) => normalizeHostName(h) ?? h))];
  if (asked.length === 0) return registered;
  const out: string[] = [];
  for (const a of asked) {
    const n = normalizeHostName(a);
    if (!n || !registered.includes(n)) {
      throw new SlipwayError("VALIDATION", `Cannot issue a server certificate for "${a}": the site registered distribution point "${dp.name}" for ${dp.hostNames.join(", ")} only`);
    }
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

async function issuePair(site: Site, dp: DistributionPoint, body: { csr: string; serverCsr: string }, names: string[]): Promise<{ client: IssuedCertificate; server: IssuedCertificate }> {
  try {
    const client = await issueClientCertificate(site.keys.ca, { csrPem: body.csr, commonName: `dp:${dp.id}`, uri: `urn:slipway:dp:${dp.id}`, validDays: DP_CERT_DAYS, now: site.now() });
    const server = await issueServerCertificateForRequest(site.keys.ca, {
      csrPem: body.serverCsr, dnsNames: names.filter((n) => net.isIP(n) === 0), ipAddresses: names.filter((n) => net.isIP(n) !== 0),
      validDays: DP_CERT_DAYS, now: site.now(),
    });
    return { client, server };
  } catch (err) {
    if (err instanceof CertificateRequestError) throw new SlipwayError("CSR_INVALID", `The certificate request is not valid: ${err.message}`);
    throw err;
  }
}

async function recordPair(tx: Sql, site: Site, dp: DistributionPoint, pair: { client: IssuedCertificate; server: IssuedCertificate }, names: string[], via: string): Promise<void> {
  const createdAt = site.now().toISOString();
  const t = stores(tx);
  await t.certificates.add({ serial: pair.client.serial, fingerprint: pair.client.fingerprint, kind: "dp", deviceId: null, dpId: dp.id, subject: `dp:${dp.id}`,
    notBefore: pair.client.notBefore.toISOString(), notAfter: pair.client.notAfter.toISOString(), issuedVia: via, createdAt });
  await t.certificates.add({ serial: pair.server.serial, fingerprint: pair.server.fingerprint, kind: "dp-server", deviceId: null, dpId: dp.id, subject: `dp-server:${names.join(",")}`,
    notBefore: pair.server.notBefore.toISOString(), notAfter: pair.server.notAfter.toISOString(), issuedVia: via, createdAt });
}

function answer(site: Site, dp: DistributionPoint, pair: { client: IssuedCertificate; server: IssuedCertificate }, names: string[]): DpEnrolled {
  return {
    id: dp.id, name: dp.name, url: dp.url, hostNames: names,
    certificate: pair.client.certPem, serial: pair.client.serial, expiresAt: pair.client.notAfter.toISOString(),
    serverCertificate: pair.server.certPem, serverSerial: pair.server.serial, serverExpiresAt: pair.server.notAfter.toISOString(),
    caCertificate: site.keys.ca.certPem,
  };
}

/** First enrollment (or re-enrollment after a new secret): spends the secret; earlier certificates are revoked as superseded. */
export async function enrollDistributionPoint(site: Site, body: z.infer<typeof DpEnrollBody>, ip: string): Promise<DpEnrolled> {
  const s = stores(site.db);
  const now = site.now().toISOString();
  const secretHash = hashToken(body.secret);
  const found = await s.distributionPoints.bySecretHash(secretHash);
  const refuse = async (reason: string, dp?: DistributionPoint) => {
    await site.audit.append({ actor: dp ? `dp:${dp.id}` : "dp:?", action: "dp.enroll", outcome: "denied", object: dp ? `dp:${dp.id}` : null, details: { reason, ip } });
    return new SlipwayError("ENROLLMENT_REFUSED", "Cannot enroll: the enrollment secret is not valid (unknown, used or expired)");
  };
  if (!found) throw await refuse("unknown or already used enrollment secret");
  if (!found.secretExpiresAt || found.secretExpiresAt <= now) throw await refuse("enrollment secret expired", found);
  const names = serverNames(found, body.names);
  const refusal = await refusedHostName(site, names, found);
  if (refusal) {
    await refuseHostName(site, refusal, `Cannot enroll distribution point "${found.name}"`,
      { actor: `dp:${found.id}`, action: "dp.enroll", object: `dp:${found.id}`, details: { ip, hostNames: names } });
  }
  const pair = await issuePair(site, found, body, names);
  const ok = await site.db.transaction(async (tx) => {
    const t = stores(tx);
    // Two processes racing with one secret: the conditional update lets one win.
    if (!(await t.distributionPoints.spendSecret(found.id, secretHash, now))) return false;
    const previous = (await t.certificates.list({ dpId: found.id, status: "active" })).map((c) => c.serial);
    for (const serial of previous) await t.certificates.setStatus(serial, "revoked", "superseded", now);
    await recordPair(tx, site, found, pair, names, "dp-secret");
    await site.audit.append({ actor: `dp:${found.id}`, action: "dp.enroll", object: `dp:${found.id}`,
      details: { name: found.name, ip, serial: pair.client.serial, serverSerial: pair.server.serial, hostNames: names, revoked: previous, expiresAt: pair.client.notAfter.toISOString() } }, tx);
    return true;
  });
  if (!ok) throw await refuse("enrollment secret already used", found);
  return answer(site, found, pair, names);
}

/**
 * New certificates for new keys, for a distribution point proving itself with its current
 * client certificate. Every certificate the distribution point held is superseded in the same
 * transaction — the one it proved itself with first, conditionally, so two renewals racing
 * with one certificate cannot both succeed, and a certificate blocked or revoked meanwhile
 * renews nothing.
 */
export async function renewDistributionPoint(site: Site, dp: DistributionPoint, previousSerial: string, body: z.infer<typeof DpRenewBody>, ip = ""): Promise<DpEnrolled> {
  const names = serverNames(dp, body.names);
  const refusal = await refusedHostName(site, names, dp);
  if (refusal) {
    await refuseHostName(site, refusal, `Cannot renew distribution point "${dp.name}"'s certificates`,
      { actor: `dp:${dp.id}`, action: "dp.renew", object: `dp:${dp.id}`, details: { ip, serial: previousSerial, hostNames: names } });
  }
  const pair = await issuePair(site, dp, body, names);
  const now = site.now().toISOString();
  const superseded = await site.db.transaction(async (tx) => {
    const t = stores(tx);
    if (!(await t.distributionPoints.supersedeCertificate(dp.id, previousSerial, now))) return null;
    const others = (await t.certificates.list({ dpId: dp.id, status: "active" })).map((c) => c.serial);
    for (const serial of others) await t.certificates.setStatus(serial, "revoked", "superseded", now);
    await recordPair(tx, site, dp, pair, names, `renewal:${previousSerial}`);
    const all = [previousSerial.toLowerCase(), ...others];
    await site.audit.append({ actor: `dp:${dp.id}`, action: "dp.renew", object: `dp:${dp.id}`,
      details: { ip, serial: pair.client.serial, serverSerial: pair.server.serial, previous: previousSerial, superseded: all, hostNames: names } }, tx);
    return all;
  });
  if (!superseded) {
    await site.audit.append({ actor: `dp:${dp.id}`, action: "dp.renew", outcome: "denied", object: `dp:${dp.id}`,
      details: { ip, serial: previousSerial, reason: "the certificate it was proven with is no longer active (renewed, blocked or revoked meanwhile)" } });
    throw new SlipwayError("DEVICE_BLOCKED", "Cannot renew: the certificate this request was made with is no longer active; it was renewed, blocked or revoked");
  }
  return answer(site, dp, pair, names);
}
