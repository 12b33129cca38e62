/**
 * Enrollment approval. A machine that enrolled with only a boot token (`sniffable`: its MAC
 * and UUID are broadcast, anyone on its link could have done the same) gets no secret; its
 * agent waits. An administrator who has checked the machines (where and when they enrolled,
 * their MACs, UUIDs and the TPM endorsement key they proved) approves their enrollments.
 *
 * Approving raises the enrollment (its certificate and the renewals of that certificate) to
 * `approved`, and records on the device the EK it proved when the device has none. The agent,
 * polling, then gets its deployments and secrets. A scoped administrator approves only
 * enrollments of devices in its scopes. One transaction; one bulk audit entry plus one per
 * enrollment. `expect` refuses (changing nothing) unless exactly that many match: anyone on a
 * PXE link can make enrollments appear, so count them first.
 *
 * An impostor with a sniffed MAC and UUID can enroll as a device too, superseding the real
 * machine's sniffable enrollment (or being superseded by it): nothing the site sees tells them
 * apart. So a filter (link, since, all) approves less than a serial does:
 *  - an enrollment whose device enrolled more than once in the last CONTESTED_WINDOW is
 *    `contested`, and one made with a device's pre-approval (no boot at all) is too: a filter
 *    never approves them; only naming the serial does, after checking it at the machine (the
 *    agent prints its serial on the console while it waits);
 *  - a filter approval never records the EK the enrollment proved (only a serial approval does,
 *    and only with a certificate from the TPM manufacturer roots configured at that moment);
 *  - when the device enrolls again within FILTER_APPROVAL_WATCH after a filter approval (the real
 *    machine after an impostor, or the other way round), the approved certificate is revoked,
 *    the device blocked and an `enrollment.contested` alert written (src/roles/management/enroll.ts).
 *
 * Input is already validated (the route's zod schema); refusals are SlipwayErrors.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores, type Stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import { scopeOf } from "../membership.ts";
import { FIRST_SEEN_LINK, sinceTime } from "../../domain/pending.ts";
import type { Device } from "../../domain/device.ts";
import { ekCertificateRefusal } from "../../security/ek-certificate.ts";
import { adminActor } from "./common.ts";

/** An enrollment is contested when its device enrolled more than once within this long. */
export const CONTESTED_WINDOW_MS = 24 * 60 * 60_000;

export type PendingEnrollment = {
  serial: string; deviceId: string; deviceName: string; deviceState: string; macs: string[]; smbiosUuid: string | null;
  link: string | null; enrolledAt: string; expiresAt: string; ekFingerprint: string | null;
  /** Other enrollments of the same device within CONTESTED_WINDOW_MS: an impostor may be among them. */
  contested: number;
  /** Made with the device's pre-approval: no boot, only a claimed MAC and UUID. */
  preApproval: boolean;
};

type Filter = { serials?: string[]; link?: string; since?: string };

function resolve(site: Site, q: { link?: string; since?: string; serials?: string[] }): Filter {
  const f: Filter = {};
  if (q.serials) f.serials = q.serials.map((s) => s.toLowerCase());
  if (q.link !== undefined) f.link = q.link;
  if (q.since !== undefined) {
    const t = sinceTime(q.since, site.now());
    if (!t) throw new SlipwayError("VALIDATION", `"${q.since}" is not a time: give a duration back from now (90s, 10m, 2h, 1d) or an ISO time`);
    f.since = t;
  }
  return f;
}

/** Live sniffable enrollments (the certificate an enrollment issued, still active) the caller may see, matching `f`. */
async function pending(site: Site, s: Stores, p: Principal, f: Filter): Promise<{ mine: PendingEnrollment[]; outOfScope: number }> {
  const now = site.now().toISOString();
  const inScope = await scopeOf(s, p);
  const devices = new Map<string, Device | undefined>();
  const contestSince = new Date(site.now().getTime() - CONTESTED_WINDOW_MS).toISOString();
  const out: PendingEnrollment[] = [];
  let outOfScope = 0;
  for (const c of await s.certificates.list({ status: "active" })) {
    if (c.kind !== "device" || !c.deviceId || c.assurance !== "sniffable" || c.notAfter <= now) continue;
    if (f.serials && !f.serials.includes(c.serial)) continue;
    const enrolledAt = c.createdAt;
    if (f.since && enrolledAt < f.since) continue;
    if (!devices.has(c.deviceId)) devices.set(c.deviceId, await s.devices.byId(c.deviceId));
    const d = devices.get(c.deviceId);
    if (!d || d.state !== "approved") continue;
    const link = typeof d.attributes[FIRST_SEEN_LINK] === "string" ? (d.attributes[FIRST_SEEN_LINK] as string) : null;
    if (f.link !== undefined && link !== f.link) continue;
    if (!inScope(d.id)) {
      outOfScope++;
      continue;
    }
    const others = (await s.certificates.list({ deviceId: d.id }))
      .filter((x) => x.kind === "device" && x.serial !== c.serial && !x.issuedVia.startsWith("renewal:") && x.createdAt >= contestSince).length;
    out.push({ serial: c.serial, deviceId: d.id, deviceName: d.name, deviceState: d.state, macs: d.macs, smbiosUuid: d.smbiosUuid, link,
      enrolledAt, expiresAt: c.notAfter, ekFingerprint: (await s.deviceTpm.provenBy(c.serial))?.fingerprint ?? null, contested: others,
      preApproval: c.issuedVia === "pre-approved" });
  }
  return { mine: out, outOfScope };
}

export type ApproveEnrollments = { serials?: string[]; link?: string; since?: string; all?: boolean; expect?: number; dryRun?: boolean };

/** Live sniffable enrollments awaiting approval that the administrator may see, by link and since. */
export async function pendingEnrollments(site: Site, p: Principal, q: { link?: string; since?: string }): Promise<PendingEnrollment[]> {
  return (await pending(site, stores(site.db), p, resolve(site, q))).mine;
}

/**
 * Approves, in one transaction, the live sniffable enrollments named (serials) or matching a
 * filter (link, since, all) within the administrator's scopes; answers those approved and those
 * a filter left as contested.
 */
export async function approveEnrollments(site: Site, p: Principal, b: ApproveEnrollments): Promise<{ dryRun: boolean; enrollments: PendingEnrollment[]; contested: PendingEnrollment[] }> {
  const actor = adminActor(p);
  if (!b.serials && b.link === undefined && b.since === undefined && !b.all) {
    throw new SlipwayError("VALIDATION", "Cannot approve enrollments: name them (serials) or filter them (link, since), or say all");
  }
  const f = resolve(site, b);
  const now = site.now().toISOString();
  const result = await site.db.transaction(async (tx) => {
    const s = stores(tx);
    const found = await pending(site, s, p, f);
    const outOfScope = found.outOfScope;
    // A filter never approves a contested enrollment; naming its serial does.
    const byFilter = !b.serials;
    const mine = byFilter ? found.mine.filter((e) => e.contested === 0 && !e.preApproval) : found.mine;
    const skipped = byFilter ? found.mine.filter((e) => e.contested > 0 || e.preApproval) : [];
    if (b.expect !== undefined && mine.length !== b.expect) {
      throw new SlipwayError("CONFLICT", `Cannot approve: ${mine.length} enrollment${mine.length === 1 ? "" : "s"} match, not the ${b.expect} expected; nothing changed`);
    }
    if (outOfScope > 0) {
      await site.audit.append({ actor, action: "enrollment.approve.bulk", outcome: "denied",
        details: { reason: "enrollments outside your scopes were left as they are", count: outOfScope } }, tx);
    }
    if (skipped.length > 0) {
      await site.audit.append({ actor, action: "enrollment.approve.bulk", outcome: "denied",
        details: { reason: "contested enrollments (their device enrolled more than once within a day) and pre-approval enrollments are approved only by serial", serials: skipped.map((e) => e.serial) } }, tx);
    }
    if (b.dryRun || mine.length === 0) return { mine, skipped };
    for (const e of mine) {
      await s.deviceTpm.markApproved(e.serial, byFilter ? "filter" : "serial", now);
      await s.devices.approveSniffableEnrollment(e.deviceId, now);
      let ekRecorded: string | null = null;
      let ekNotRecorded: string | null = null;
      const proven = await s.deviceTpm.provenBy(e.serial);
      if (proven) {
        const uncertified = ekCertificateRefusal(await s.deviceTpm.roots(), proven.spki, proven.certificate);
        if (byFilter) ekNotRecorded = "a filter approval records no EK; approve the enrollment by serial";
        else if (uncertified) ekNotRecorded = uncertified;
        else if (await s.deviceTpm.deviceByFingerprint(proven.fingerprint)) ekNotRecorded = "the EK is bound to another device";
        else if (await s.deviceTpm.recordIfNone(e.deviceId, { ek: proven.spki, fingerprint: proven.fingerprint, source: "approved", recordedAt: now, recordedBy: actor })) {
          ekRecorded = proven.fingerprint;
        }
      }
      await site.audit.append({ actor, action: "enrollment.approve", object: `device:${e.deviceId}`,
        details: { serial: e.serial, name: e.deviceName, link: e.link, via: byFilter ? "filter" : "serial", ekRecorded, ...(ekNotRecorded ? { ekNotRecorded } : {}) } }, tx);
    }
    await site.audit.append({ actor, action: "enrollment.approve.bulk",
      details: { filter: { link: b.link ?? null, since: f.since ?? null, serials: b.serials ?? null, all: b.all ?? false }, serials: mine.map((e) => e.serial), devices: mine.map((e) => e.deviceId) } }, tx);
    return { mine, skipped };
  });
  return { dryRun: b.dryRun ?? false, enrollments: result.mine, contested: result.skipped };
}
