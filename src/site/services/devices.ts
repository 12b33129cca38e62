/**
 * Devices, as administrators record and decide them. New devices are pending; only
 * `device.approve` approves or blocks them, creates one in another state, or changes what
 * identifies an approved or blocked one.
 *
 * Approving is the administrator's explicit admission: approving a device that holds no live
 * certificate (never enrolled, its certificate expired or revoked) arms its pre-approval —
 * one enrollment by a machine presenting its identifiers — and is how a device blocked by a
 * revocation comes back. Approving one that holds a live certificate (unblocking it) only
 * resumes that identity. Blocking or unapproving disarms pre-approval. A device outside a
 * scoped administrator's scopes reads as missing, and the refusal is audited.
 *
 * In bulk (`decidePending`): every pending device a filter names — the PXE link it was first
 * seen on (attributes.firstSeenLink, which only the PXE responder records), how recently —
 * within the caller's scopes, in one transaction, one audit entry for the bulk action listing
 * the devices plus the entry a single decision writes for each. A bulk decision touches only
 * devices still pending when it commits; the devices a scoped administrator could not decide
 * on are counted in a denied audit entry, never named to it.
 *
 * Input is already validated (the route's zod schema); refusals are SlipwayErrors.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores, type Stores } from "../../storage/stores.ts";
import { preApprovalOf, type Device, type DeviceState, type PreApproval } from "../../domain/device.ts";
import { FIRST_SEEN_LINK, matchesPending, matchesSeen, sinceTime, type PendingFilter } from "../../domain/pending.ts";
import { collectionInScope, deviceCollections, deviceVisible, devicesVisible, scopeOf } from "../membership.ts";
import type { Assurance } from "../../domain/assurance.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";
import { devicePolicy } from "../policy.ts";
import { purgeDeviceAssociations } from "./associations.ts";
import { stateChunksOf } from "../state-store.ts";
import type { Policy } from "../../domain/policy.ts";

/** A device with its pre-approval ("armed", "spent" or "none"), when it last enrolled and how surely, and (for one device) its collections. */
export type DeviceDetail = Device & { collections?: string[]; preApproval: PreApproval; enrolledAt: string | null; enrollmentAssurance: Assurance | null };

type Attributes = Record<string, string | number | boolean>;

async function withEnrollment(site: Site, d: Device, collections?: string[]): Promise<DeviceDetail> {
  const e = await stores(site.db).devices.enrollmentOf(d.id);
  return { ...d, ...(collections ? { collections } : {}), preApproval: e ? preApprovalOf(e) : "none", enrolledAt: e?.enrolledAt ?? null, enrollmentAssurance: e?.assurance ?? null };
}

/**
 * A device (id or name) the administrator sees. One outside its scopes reads as missing, and
 * the refusal is audited as `action` denied.
 */
export async function visibleDevice(site: Site, p: Principal, ref: string, action: string): Promise<Device> {
  const s = stores(site.db);
  const d = (await s.devices.byId(ref)) ?? (await s.devices.byName(ref));
  if (!d) throw notFound("device", ref);
  if (!(await deviceVisible(s, p, d))) {
    await site.audit.append({ actor: adminActor(p), action, outcome: "denied", object: `device:${d.id}`, details: { reason: "out of scope" } });
    throw notFound("device", ref);
  }
  return d;
}

/** Refuses attributes that set or change what only the PXE responder records. */
function assertNoRecordedLink(attrs: Record<string, unknown> | undefined, current: Record<string, unknown> = {}) {
  if (attrs && Object.hasOwn(attrs, FIRST_SEEN_LINK) && attrs[FIRST_SEEN_LINK] !== current[FIRST_SEEN_LINK]) {
    throw new SlipwayError("VALIDATION", `Cannot set attribute ${FIRST_SEEN_LINK}: only the PXE responder records the link a machine was first seen on`,
      [{ path: `attributes.${FIRST_SEEN_LINK}`, message: "recorded by the PXE responder only" }]);
  }
}

/** Refuses identifiers another device holds; names that device only to a caller who may see it. */
async function assertUnique(site: Site, p: Principal, macs: string[], uuid: string | null, self?: string) {
  const s = stores(site.db);
  const owner = async (other: Device) =>
    (await deviceVisible(s, p, other)) ? `device "${other.name}"` : "a device outside your scopes";
  for (const mac of macs) {
    const other = await s.devices.byMac(mac);
    if (other && other.id !== self) throw new SlipwayError("CONFLICT", `MAC ${mac} already belongs to ${await owner(other)}`);
  }
  if (uuid) {
    const other = await s.devices.bySmbiosUuid(uuid);
    if (other && other.id !== self) throw new SlipwayError("CONFLICT", `SMBIOS UUID ${uuid} already belongs to ${await owner(other)}`);
  }
}

/**
 * Arms the device's pre-approval when it is now approved and holds no live certificate
 * (approval admits a new enrollment only to a device without a live identity), else disarms it.
 */
async function settlePreApproval(t: Stores, deviceId: string, state: DeviceState, now: string): Promise<PreApproval> {
  const live = (await t.certificates.list({ deviceId, status: "active" })).some((c) => c.notAfter > now);
  await t.devices.setPreApproval(deviceId, state === "approved" && !live);
  return preApprovalOf((await t.devices.enrollmentOf(deviceId))!);
}

/** The filter as asked (`since`: a duration such as "10m" or an ISO time), resolved on the site's clock. */
function resolveFilter(site: Site, q: { link?: string; since?: string }): PendingFilter {
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

export type DeviceQuery = { state?: DeviceState; mac?: string; name?: string; link?: string; since?: string };

/** The devices the administrator sees, filtered by state, MAC, name, the PXE link first seen on and first recorded since. */
export async function listDevices(site: Site, p: Principal, q: DeviceQuery): Promise<Device[]> {
  const s = stores(site.db);
  const seen = resolveFilter(site, q);
  // No membership for an administrator without scopes: it sees every device.
  return (await devicesVisible(s, p, await s.devices.list())).filter((d) => (!q.state || d.state === q.state)
    && (!q.mac || d.macs.includes(q.mac)) && (!q.name || d.name === q.name) && matchesSeen(d, seen));
}

/** One device (id or name) the administrator sees, with its collections and enrollment. */
export async function getDevice(site: Site, p: Principal, ref: string): Promise<DeviceDetail> {
  const d = await visibleDevice(site, p, ref, "device.read");
  return withEnrollment(site, d, await deviceCollections(stores(site.db), d));
}

/** What a device's policy would hold now (unsigned; secrets by name only), for a device the administrator sees. */
export async function previewPolicy(site: Site, p: Principal, ref: string, bootPath: "pxe" | "media"): Promise<Policy> {
  const s = stores(site.db);
  const d = (await s.devices.byId(ref)) ?? (await s.devices.byName(ref));
  if (!d || !(await deviceVisible(s, p, d))) throw notFound("device", ref);
  return devicePolicy(site, d, bootPath);
}

export type NewDevice = {
  name: string; macs: string[]; smbiosUuid?: string | null; serial?: string | null; attributes: Attributes;
  state: DeviceState; collections: string[];
};

/**
 * Records a device, pending unless the administrator holds device.approve and asks for another
 * state (created approved, it is pre-approved for its first enrollment). A scoped administrator
 * must place it in one of its collections, and only in those. Audited device.create.
 */
export async function createDevice(site: Site, p: Principal, b: NewDevice): Promise<DeviceDetail> {
  assertNoRecordedLink(b.attributes);
  if (b.state !== "pending" && !p.permissions.has("device.approve")) {
    throw new SlipwayError("FORBIDDEN", `Not allowed: creating a device as ${b.state} needs the device.approve permission`);
  }
  const macs = [...new Set<string>(b.macs)];
  const s = stores(site.db);
  if (await s.devices.byName(b.name)) throw new SlipwayError("CONFLICT", `Cannot create device "${b.name}": the name is taken`);
  await assertUnique(site, p, macs, b.smbiosUuid ?? null);
  const colls: string[] = [];
  for (const c of b.collections) {
    const coll = (await s.collections.byId(c)) ?? (await s.collections.byName(c));
    if (!coll) throw new SlipwayError("VALIDATION", `Cannot add the device to collection "${c}": it does not exist`);
    colls.push(coll.id);
  }
  // A scoped administrator must place the device where they can still see it.
  if (p.scopes !== null && !colls.some((c) => p.scopes!.includes(c))) {
    throw new SlipwayError("OUT_OF_SCOPE", "Not allowed: add the device to one of your scoped collections");
  }
  if (p.scopes !== null && colls.some((c) => !p.scopes!.includes(c))) throw new SlipwayError("OUT_OF_SCOPE");
  const d = await site.db.transaction(async (tx) => {
    const t = stores(tx);
    // Created approved by an administrator: pre-approved for its first enrollment.
    const dev = await t.devices.create({ name: b.name, macs, smbiosUuid: b.smbiosUuid ?? null, serial: b.serial ?? null,
      state: b.state, attributes: b.attributes }, site.now().toISOString(), { preApproved: b.state === "approved" });
    for (const c of colls) await t.collections.addMember(c, dev.id);
    await site.audit.append({ actor: adminActor(p), action: "device.create", object: `device:${dev.id}`,
      details: { name: dev.name, macs, smbiosUuid: dev.smbiosUuid, state: dev.state } }, tx);
    return dev;
  });
  return withEnrollment(site, d, colls);
}

export type DeviceChange = { name?: string; macs?: string[]; smbiosUuid?: string | null; serial?: string | null; attributes?: Attributes };

/**
 * Changes a device's name, identifiers or attributes. Changing what identifies an approved or
 * blocked device needs device.approve (it would hand its approval to another machine). Audited
 * device.update with the keys given.
 */
export async function updateDevice(site: Site, p: Principal, ref: string, b: DeviceChange): Promise<Device> {
  const d = await visibleDevice(site, p, ref, "device.update");
  assertNoRecordedLink(b.attributes, d.attributes);
  if ((b.macs || b.smbiosUuid !== undefined) && d.state !== "pending" && !p.permissions.has("device.approve")) {
    throw new SlipwayError("FORBIDDEN", "Not allowed: changing the MAC or UUID of an approved or blocked device needs device.approve");
  }
  const s = stores(site.db);
  if (b.name && b.name !== d.name && (await s.devices.byName(b.name))) throw new SlipwayError("CONFLICT", `Cannot rename to "${b.name}": the name is taken`);
  const macs = b.macs ? [...new Set<string>(b.macs)] : undefined;
  await assertUnique(site, p, macs ?? [], b.smbiosUuid ?? null, d.id);
  return site.db.transaction(async (tx) => {
    const r = await stores(tx).devices.update(d.id, { ...b, macs }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "device.update", object: `device:${d.id}`, details: { changed: Object.keys(b) } }, tx);
    return r!;
  });
}

/**
 * Deletes a device and what is held about it (docs/privacy.md): its device-scope variables, its
 * run history and step output, its leases, and its computer associations (shredded: key first,
 * then the stored user state); its certificates are revoked (into the CRL, which must keep
 * them). Audited device.delete.
 */
export async function deleteDevice(site: Site, p: Principal, ref: string): Promise<void> {
  const d = await visibleDevice(site, p, ref, "device.delete");
  const associations = await purgeDeviceAssociations(site, stateChunksOf(site), d.id, adminActor(p));
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    await t.variables.deleteScope("device", d.id);
    for (const mac of d.macs) await t.leases.forget(mac);
    // Its certificates go with it, into the CRL: a certificate names no device any more.
    for (const c of await t.certificates.list({ deviceId: d.id })) {
      if (c.status !== "revoked") await t.certificates.setStatus(c.serial, "revoked", "cessationOfOperation", site.now().toISOString());
    }
    await t.devices.delete(d.id);
    await site.audit.append({ actor: adminActor(p), action: "device.delete", object: `device:${d.id}`, details: { name: d.name, associations } }, tx);
  });
}

/** The administrator's decision on one device: approve, block or unapprove (back to pending); pre-approval settled in the same transaction. */
export async function decideDevice(site: Site, p: Principal, ref: string, verb: "approve" | "block" | "unapprove"): Promise<DeviceDetail> {
  const state = ({ approve: "approved", block: "blocked", unapprove: "pending" } as const)[verb];
  const d = await visibleDevice(site, p, ref, `device.${verb}`);
  const now = site.now().toISOString();
  const updated = await site.db.transaction(async (tx) => {
    const t = stores(tx);
    const u = await t.devices.update(d.id, { state }, now);
    const preApproval = await settlePreApproval(t, d.id, state, now);
    await site.audit.append({ actor: adminActor(p), action: `device.${verb}`, object: `device:${d.id}`,
      details: { name: d.name, from: d.state, to: state, preApproval } }, tx);
    return u!;
  });
  return withEnrollment(site, updated);
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
export async function decidePending(site: Site, p: Principal, state: "approved" | "blocked", req: BulkDecision): Promise<{ state: string; dryRun: boolean; devices: Device[] }> {
  const verb = VERB[state];
  const actor = adminActor(p);
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
