/**
 * An administrator's decision on devices: approving or blocking one, or in bulk every pending
 * device a filter names (the PXE link it was first seen on, how recently) within the caller's
 * security scopes — one transaction, one audit entry for the bulk action listing the devices,
 * plus the entry a single decision writes for each.
 *
 * Approving a device that holds no live certificate arms its pre-approval (one enrollment by a
 * machine presenting its identifiers); blocking or putting it back to pending disarms it. A
 * bulk decision touches only devices still pending when it commits; a scoped administrator's
 * filter never reaches a device outside its scopes (the devices it could not decide on are
 * counted in a denied audit entry, never named to it).
 */
import type { Site } from "../../site/site.ts";
import type { Principal } from "./http.ts";
import { stores, type Stores } from "../../storage/stores.ts";
import { preApprovalOf, type Device, type DeviceState, type PreApproval } from "../../domain/device.ts";
import { matchesPending, sinceTime, type PendingFilter } from "../../domain/pending.ts";
import { collectionInScope, scopeOf } from "../../site/membership.ts";
import { SlipwayError } from "../../errors.ts";

/**
 * Arms the device's pre-approval when it is now approved and holds no live certificate
 * (approval admits a new enrollment only to a device without a live identity), else disarms it.
 */
export async function settlePreApproval(t: Stores, deviceId: string, state: DeviceState, now: string): Promise<PreApproval> {
  const live = (await t.certificates.list({ deviceId, status: "active" })).some((c) => c.notAfter > now);
  await t.devices.setPreApproval(deviceId, state === "approved" && !live);
  return preApprovalOf((await t.devices.enrollmentOf(deviceId))!);
}

/** The filter as asked (`since`: a duration such as "10m" or an ISO time), resolved on the site's clock. */
export function resolveFilter(site: Site, q: { link?: string; since?: string }): PendingFilter {
  const f: PendingFilter = {};
  if (q.link !== undefined) f.link = q.link;
  if (q.since !== undefined) {
    const since = sinceTime(q.since, site.now());
    if (!since) {
      throw new SlipwayError("VALIDATION", `Cannot read since "${q.since}": give a duration such as 90s, 10m, 2h or 1d, or an ISO time with an offset`,
        [{ path: "since", message: "not a duration or an ISO time" }]);
    }
    f.since = since;
  }
  return f;
}

export type BulkDecision = {
  link?: string;
  since?: string;
  /** Every pending device in the caller's scopes (required when neither link nor since is given). */
  all?: boolean;
  /** Approve into this collection too (as static members); needs collection.write. */
  collection?: string;
  /** Refuse (and change nothing) unless exactly this many devices match. */
  expect?: number;
  /** Answer what would be decided; change nothing. */
  dryRun?: boolean;
};

const VERB = { approved: "approve", blocked: "block" } as const;

/** Approves or blocks every pending device the filter names within the caller's scopes; answers those devices. */
export async function decidePending(site: Site, p: Principal, actor: string, state: "approved" | "blocked", req: BulkDecision): Promise<{ state: string; dryRun: boolean; devices: Device[] }> {
  const verb = VERB[state];
  if (req.link === undefined && req.since === undefined && !req.all) {
    throw new SlipwayError("VALIDATION", `Cannot ${verb} pending devices: say which — by link, since, or all: true for every pending device you may see`,
      [{ path: "link", message: "give link, since or all" }]);
  }
  if (req.collection !== undefined && state !== "approved") {
    throw new SlipwayError("VALIDATION", "Cannot block devices into a collection: collection goes with approve only", [{ path: "collection", message: "approve only" }]);
  }
  if (req.collection !== undefined && !p.permissions.has("collection.write")) {
    throw new SlipwayError("FORBIDDEN", "Not allowed: approving devices into a collection also needs the collection.write permission");
  }
  const filter = resolveFilter(site, req);
  const now = site.now().toISOString();
  // Chosen outside the transaction (membership reads several tables at once, which one
  // PostgreSQL transaction cannot); inside it, each device changes only if it is still pending.
  const s = stores(site.db);
  let collectionId: string | undefined;
  if (req.collection !== undefined) {
    const c = (await s.collections.byId(req.collection)) ?? (await s.collections.byName(req.collection));
    // Out of scope reads as missing, as everywhere a scoped administrator names a collection.
    if (!c || !collectionInScope(p, c.id)) {
      throw new SlipwayError("VALIDATION", `Cannot approve into collection "${req.collection}": it does not exist`, [{ path: "collection", message: "unknown" }]);
    }
    collectionId = c.id;
  }
  const inScope = await scopeOf(s, p);
  const matching = (await s.devices.list()).filter((d) => matchesPending(d, filter));
  const chosen = matching.filter((d) => inScope(d.id));
  const outside = matching.filter((d) => !inScope(d.id));
  if (req.expect !== undefined && chosen.length !== req.expect) {
    throw new SlipwayError("CONFLICT", `Cannot ${verb} the pending devices: ${chosen.length} match, not the ${req.expect} expected; nothing was changed (list them with slipway device pending)`);
  }
  if (req.dryRun) return { state, dryRun: true, devices: chosen };
  return site.db.transaction(async (tx) => {
    const t = stores(tx);
    const decided: Device[] = [];
    for (const d of chosen) {
      // Still pending now: another decision may have come first.
      if (!(await t.devices.changeStateIf(d.id, "pending", state, now))) continue;
      const preApproval = await settlePreApproval(t, d.id, state, now);
      if (collectionId) await t.collections.addMember(collectionId, d.id);
      await site.audit.append({ actor, action: `device.${verb}`, object: `device:${d.id}`,
        details: { name: d.name, from: "pending", to: state, preApproval, bulk: true } }, tx);
      decided.push((await t.devices.byId(d.id))!);
    }
    const asked = { ...(req.link !== undefined ? { link: req.link } : {}), ...(req.since !== undefined ? { since: req.since } : {}), ...(req.all ? { all: true } : {}) };
    if (decided.length) {
      await site.audit.append({ actor, action: `device.${verb}.bulk`, object: collectionId ? `collection:${collectionId}` : null,
        details: { filter: asked, resolved: filter, count: decided.length, devices: decided.map((d) => d.id) } }, tx);
    }
    if (outside.length) {
      await site.audit.append({ actor, action: `device.${verb}.bulk`, outcome: "denied",
        details: { filter: asked, reason: "out of scope", outsideScopes: outside.length, devices: outside.map((d) => d.id) } }, tx);
    }
    return { state, dryRun: false, devices: decided };
  });
}
