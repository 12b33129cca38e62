/**
 * Distribution points as administrators manage them: registering one (which mints its
 * one-time enrollment secret, answered once), a new secret to enroll it again, removing it (its
 * certificates are revoked in the same transaction), and assigning content to it — with the
 * replication state it reports. A distribution point's URL and aliases are set only at
 * registration, and never to a loopback name, the site's names or another distribution
 * point's (dp-names.ts); enrollment checks them again. Each change is audited in its
 * transaction; refusals are SlipwayErrors.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { Assignment, DistributionPoint } from "../../storage/distribution-point-store.ts";
import type { CertificateRecord } from "../../storage/certificate-store.ts";
import { SlipwayError } from "../../errors.ts";
import { normalizeHostName, parseDistributionPointUrl } from "../../domain/distribution-point.ts";
import { newDpSecret } from "../dp-enroll.ts";
import { refusedHostName, refuseHostName } from "../dp-names.ts";
import { findImage } from "../content-library.ts";
import { adminActor, notFound } from "./common.ts";

/** A distribution point as administrators see it: whether it enrolled, when it was last seen, how much of its content is ready. */
function summary(d: DistributionPoint, assignments: Assignment[], now: string) {
  return {
    id: d.id, name: d.name, url: d.url, hostNames: d.hostNames,
    status: d.enrolledAt ? "enrolled" : d.secretExpiresAt && d.secretExpiresAt > now ? "awaiting enrollment" : "secret expired",
    enrolledAt: d.enrolledAt, lastSeenAt: d.lastSeenAt, secretExpiresAt: d.secretExpiresAt,
    content: {
      assigned: assignments.length,
      ready: assignments.filter((a) => a.state === "ready").length,
      failed: assignments.filter((a) => a.state === "failed").length,
    },
    createdBy: d.createdBy, createdAt: d.createdAt,
  };
}

const certificateSummary = (c: CertificateRecord) => ({ serial: c.serial, kind: c.kind, subject: c.subject, status: c.status, notBefore: c.notBefore, expires: c.notAfter, lastUsedAt: c.lastUsedAt });

/** A distribution point by id or name; NOT_FOUND otherwise. */
async function find(site: Site, ref: string): Promise<DistributionPoint> {
  const s = stores(site.db).distributionPoints;
  const d = (await s.byId(ref)) ?? (await s.byName(ref));
  if (!d) throw notFound("distribution point", ref);
  return d;
}

export async function listDistributionPoints(site: Site) {
  const s = stores(site.db).distributionPoints;
  const all = await s.assignments();
  const now = site.now().toISOString();
  return (await s.list()).map((d) => summary(d, all.filter((a) => a.dpId === d.id), now));
}

/** A distribution point (id or name) with each assigned manifest's replication state and its certificates. */
export async function getDistributionPoint(site: Site, ref: string) {
  const d = await find(site, ref);
  const s = stores(site.db);
  const assignments = [];
  for (const a of await s.distributionPoints.assignments(d.id)) {
    const c = await s.content.byDigest(a.digest);
    assignments.push({ digest: a.digest, image: c?.name ?? null, size: c?.size ?? null, state: a.state, message: a.message, assignedBy: a.assignedBy, assignedAt: a.assignedAt, updatedAt: a.updatedAt });
  }
  return { ...summary(d, await s.distributionPoints.assignments(d.id), site.now().toISOString()),
    assignments, certificates: (await s.certificates.list({ dpId: d.id })).map(certificateSummary) };
}

/**
 * Registers a distribution point by the https URL devices reach it at (and aliases); answers its
 * one-time enrollment secret once. A refused host name is audited as dp.create denied.
 */
export async function registerDistributionPoint(site: Site, p: Principal, b: { name: string; url: string; aliases: string[] }) {
  let origin: string, host: string;
  try {
    ({ origin, host } = parseDistributionPointUrl(b.url));
  } catch (err) {
    throw new SlipwayError("VALIDATION", `Cannot register distribution point "${b.name}": ${(err as Error).message}`);
  }
  const hostNames = [host];
  for (const a of b.aliases) {
    const n = normalizeHostName(a);
    if (!n) throw new SlipwayError("VALIDATION", `Cannot register distribution point "${b.name}": alias "${a}" is not a host name or IP address`);
    if (!hostNames.includes(n)) hostNames.push(n);
  }
  const s = stores(site.db).distributionPoints;
  if (await s.byName(b.name)) throw new SlipwayError("CONFLICT", `A distribution point named "${b.name}" exists`);
  // Its server certificate will carry these names: never loopback, the site's, or another distribution point's.
  const refusal = await refusedHostName(site, hostNames);
  if (refusal) {
    await refuseHostName(site, refusal, `Cannot register distribution point "${b.name}"`,
      { actor: adminActor(p), action: "dp.create", object: null, details: { name: b.name, url: origin, hostNames } });
  }
  if ((await s.list()).some((d) => d.url === origin)) throw new SlipwayError("CONFLICT", `A distribution point at ${origin} exists`);
  const { secret, secretHash, expiresAt } = newDpSecret(site);
  const now = site.now().toISOString();
  const d = await site.db.transaction(async (tx) => {
    const made = await stores(tx).distributionPoints.create({ name: b.name, url: origin, hostNames, secretHash, secretExpiresAt: expiresAt, createdBy: adminActor(p) }, now);
    await site.audit.append({ actor: adminActor(p), action: "dp.create", object: `dp:${made.id}`, details: { name: made.name, url: origin, hostNames, secretExpiresAt: expiresAt } }, tx);
    return made;
  });
  return { ...summary(d, [], now), secret };
}

/** Removes a distribution point; its certificates are revoked (listed in the CRL). Audited dp.delete. */
export async function removeDistributionPoint(site: Site, p: Principal, ref: string): Promise<void> {
  const d = await find(site, ref);
  const now = site.now().toISOString();
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    const active = (await t.certificates.list({ dpId: d.id })).filter((c) => c.status !== "revoked").map((c) => c.serial);
    for (const serial of active) await t.certificates.setStatus(serial, "revoked", "cessationOfOperation", now);
    await t.distributionPoints.delete(d.id);
    await site.audit.append({ actor: adminActor(p), action: "dp.delete", object: `dp:${d.id}`, details: { name: d.name, url: d.url, revoked: active } }, tx);
  });
}

/** A new one-time enrollment secret (24 hours), answered once. Audited dp.secret. */
export async function newEnrollmentSecret(site: Site, p: Principal, ref: string) {
  const d = await find(site, ref);
  const { secret, secretHash, expiresAt } = newDpSecret(site);
  const now = site.now().toISOString();
  await site.db.transaction(async (tx) => {
    await stores(tx).distributionPoints.setSecret(d.id, secretHash, expiresAt, now);
    await site.audit.append({ actor: adminActor(p), action: "dp.secret", object: `dp:${d.id}`, details: { name: d.name, secretExpiresAt: expiresAt } }, tx);
  });
  return { id: d.id, name: d.name, secret, secretExpiresAt: expiresAt };
}

/** Assigns an image (its newest manifest by name, or a manifest by digest) to replicate; audited dp.assign when new. */
export async function assignContent(site: Site, p: Principal, ref: string, image: string) {
  const d = await find(site, ref);
  const record = await findImage(site, image);
  if (!record) throw notFound("image", image);
  const now = site.now().toISOString();
  const added = await site.db.transaction(async (tx) => {
    const isNew = await stores(tx).distributionPoints.assign(d.id, record.digest, adminActor(p), now);
    if (isNew) await site.audit.append({ actor: adminActor(p), action: "dp.assign", object: `dp:${d.id}`, details: { dp: d.name, digest: record.digest, image: record.name } }, tx);
    return isNew;
  });
  const a = (await stores(site.db).distributionPoints.assignment(d.id, record.digest))!;
  return { added, assignment: { digest: a.digest, image: record.name, state: a.state, message: a.message, assignedAt: a.assignedAt } };
}

/** Unassigns a manifest by digest, or every assigned manifest of an image name. Audited dp.unassign. */
export async function unassignContent(site: Site, p: Principal, ref: string, image: string): Promise<void> {
  const d = await find(site, ref);
  const s = stores(site.db);
  const gone: string[] = [];
  for (const a of await s.distributionPoints.assignments(d.id)) {
    if (a.digest === image || (await s.content.byDigest(a.digest))?.name === image) gone.push(a.digest);
  }
  if (!gone.length) throw new SlipwayError("NOT_FOUND", `Cannot unassign "${image}": it is not assigned to distribution point "${d.name}"`);
  await site.db.transaction(async (tx) => {
    for (const digest of gone) await stores(tx).distributionPoints.unassign(d.id, digest);
    await site.audit.append({ actor: adminActor(p), action: "dp.unassign", object: `dp:${d.id}`, details: { dp: d.name, digests: gone } }, tx);
  });
}
