/**
 * Computer associations, as administrators see them: make one (refresh in place, or replace an
 * old machine by a new one), list, show, change how long the state is kept, delete — and the
 * site's retention sweep. Every association gets its own random data key, sealed by the master
 * key and bound to the association's id; deleting destroys that key first (crypto-shred), in
 * the same statement that leaves the live states, and only then removes the chunks. Each write
 * is one transaction with its audit entry. Input is already validated by the route's schema;
 * refusals are SlipwayErrors. What a device may do with an association is in user-state.ts.
 */
import crypto from "node:crypto";
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores, type Stores } from "../../storage/stores.ts";
import { AssociationStore, scrubAssociations, type Association } from "../../storage/association-store.ts";
import type { Device } from "../../domain/device.ts";
import {
  DEFAULT_DELETE_AFTER_SECONDS, DEFAULT_MAX_UNRESTORED_SECONDS, DEFAULT_QUOTA_BYTES, EXPIRY_WARNING_SECONDS, HOUR,
  deleteAfterProblem, isLive, type AssociationState,
} from "../../domain/association.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";
import { deviceVisible } from "../membership.ts";

/** Where an association's chunks are kept: the site's own state store or a state migration point's. */
export interface StateChunks {
  /** Removes every chunk of the association (nothing to do when it holds none). */
  destroy(associationId: string): Promise<void>;
}

/** An association as the API shows it: never the sealed key, only whether it still exists. */
export type AssociationView = Omit<Association, "sealedKey" | "streamId"> & { keyDestroyed: boolean; source: string; destination: string };

export function associationView(a: Association, names: Map<string, string>): AssociationView {
  const { sealedKey, streamId: _stream, ...rest } = a;
  return { ...rest, keyDestroyed: sealedKey === null, source: names.get(a.sourceDeviceId) ?? a.sourceDeviceId, destination: names.get(a.destinationDeviceId) ?? a.destinationDeviceId };
}

/** The additional data an association's sealed key is bound to: it opens for no other row. */
export const associationKeyAad = (id: string): string => `association:${id}`;

async function deviceNames(s: Stores, list: Association[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const id of new Set(list.flatMap((a) => [a.sourceDeviceId, a.destinationDeviceId]))) {
    const d = await s.devices.byId(id);
    if (d) out.set(id, d.name);
  }
  return out;
}

/** A device by id or name that the administrator sees; NOT_FOUND otherwise (the two read the same). */
async function visibleDevice(s: Stores, p: Principal, ref: string): Promise<Device> {
  const d = (await s.devices.byId(ref)) ?? (await s.devices.byName(ref));
  if (!d || !(await deviceVisible(s, p, d))) throw notFound("device", ref);
  return d;
}

/** An association the administrator sees: one of its devices is in their scopes. */
async function visible(s: Stores, p: Principal, a: Association): Promise<boolean> {
  if (p.scopes === null) return true;
  return (await deviceVisible(s, p, a.sourceDeviceId)) || (await deviceVisible(s, p, a.destinationDeviceId));
}

export type CreateAssociation = { source?: string; destination?: string; inPlace?: string; deleteAfterHours?: number; quotaBytes?: number };

/** Seals a fresh 256-bit data key for association `id`. */
function sealedDataKey(site: Site, id: string): string {
  return JSON.stringify(site.keys.keyring.seal(crypto.randomBytes(32).toString("base64"), associationKeyAad(id)));
}

function deleteAfterSeconds(hours: number | undefined): number {
  if (hours === undefined) return DEFAULT_DELETE_AFTER_SECONDS;
  const seconds = Math.round(hours * HOUR);
  const problem = deleteAfterProblem(seconds);
  if (problem) throw new SlipwayError("VALIDATION", `Cannot keep user state for ${hours} hours after a restore: "delete after" ${problem}`, [{ path: "deleteAfterHours", message: problem }]);
  return seconds;
}

/** Why a device cannot join a new association, or null. */
async function busy(s: Stores, d: Device): Promise<string | null> {
  const live = await s.associations.liveFor(d.id);
  return live ? `device "${d.name}" is already in association ${live.id} (${live.state}); delete it first` : null;
}

/** Makes a pending association, audited (association.create). */
export async function createAssociation(site: Site, p: Principal, req: CreateAssociation): Promise<AssociationView> {
  const refresh = req.inPlace !== undefined;
  if (refresh === (req.source !== undefined || req.destination !== undefined) || (!refresh && (req.source === undefined || req.destination === undefined))) {
    throw new SlipwayError("VALIDATION", "Cannot create the association: give either inPlace (a refresh) or both source and destination (a replace)",
      [{ path: "inPlace", message: "either inPlace, or source and destination" }]);
  }
  const seconds = deleteAfterSeconds(req.deleteAfterHours);
  const actor = adminActor(p);
  return site.db.transaction(async (tx) => {
    const s = stores(tx);
    const source = await visibleDevice(s, p, refresh ? req.inPlace! : req.source!);
    const destination = refresh ? source : await visibleDevice(s, p, req.destination!);
    if (!refresh && source.id === destination.id) {
      throw new SlipwayError("VALIDATION", "Cannot create the association: source and destination are the same device; use inPlace for a refresh",
        [{ path: "destination", message: "must differ from source" }]);
    }
    for (const d of refresh ? [source] : [source, destination]) {
      const why = await busy(s, d);
      if (why) throw new SlipwayError("CONFLICT", `Cannot create the association: ${why}`);
    }
    const now = site.now();
    const id = AssociationStore.newId();
    const a = await s.associations.create(id, {
      kind: refresh ? "refresh" : "replace", sourceDeviceId: source.id, destinationDeviceId: destination.id, store: "site",
      sealedKey: sealedDataKey(site, id), quotaBytes: req.quotaBytes ?? DEFAULT_QUOTA_BYTES, deleteAfterSeconds: seconds,
      expiresAt: new Date(now.getTime() + DEFAULT_MAX_UNRESTORED_SECONDS * 1000).toISOString(), createdBy: actor,
    }, now.toISOString());
    await site.audit.append({ actor, action: "association.create", object: `association:${a.id}`,
      details: { kind: a.kind, source: source.id, destination: destination.id, deleteAfterSeconds: seconds, quotaBytes: a.quotaBytes, expiresAt: a.expiresAt } }, tx);
    return associationView(a, new Map([[source.id, source.name], [destination.id, destination.name]]));
  });
}

/**
 * Makes the refresh association a task sequence with both user-state steps implies, when the
 * device is in none yet (audited as the device's). Returns the device's live association.
 */
export async function ensureRefreshAssociation(site: Site, device: Device, runId: string): Promise<Association> {
  return site.db.transaction(async (tx) => {
    const s = stores(tx);
    const live = await s.associations.liveFor(device.id);
    if (live) return live;
    const now = site.now();
    const id = AssociationStore.newId();
    const a = await s.associations.create(id, {
      kind: "refresh", sourceDeviceId: device.id, destinationDeviceId: device.id, store: "site", sealedKey: sealedDataKey(site, id),
      quotaBytes: DEFAULT_QUOTA_BYTES, deleteAfterSeconds: DEFAULT_DELETE_AFTER_SECONDS,
      expiresAt: new Date(now.getTime() + DEFAULT_MAX_UNRESTORED_SECONDS * 1000).toISOString(), createdBy: `device:${device.id}`,
    }, now.toISOString());
    await site.audit.append({ actor: `device:${device.id}`, action: "association.create", object: `association:${a.id}`,
      details: { kind: "refresh", source: device.id, destination: device.id, automatic: true, run: runId, deleteAfterSeconds: a.deleteAfterSeconds, expiresAt: a.expiresAt } }, tx);
    return a;
  });
}

export async function listAssociations(site: Site, p: Principal, filter: { device?: string; state?: AssociationState }): Promise<AssociationView[]> {
  const s = stores(site.db);
  const deviceId = filter.device ? (await visibleDevice(s, p, filter.device)).id : undefined;
  const out: Association[] = [];
  for (const a of await s.associations.list({ deviceId, state: filter.state })) if (await visible(s, p, a)) out.push(a);
  const names = await deviceNames(s, out);
  return out.map((a) => associationView(a, names));
}

export async function getAssociationRecord(site: Site, p: Principal, id: string): Promise<Association> {
  const s = stores(site.db);
  const a = await s.associations.byId(id);
  if (!a || !(await visible(s, p, a))) throw notFound("association", id);
  return a;
}

export async function getAssociation(site: Site, p: Principal, id: string): Promise<AssociationView> {
  const a = await getAssociationRecord(site, p, id);
  return associationView(a, await deviceNames(stores(site.db), [a]));
}

/** Changes how long the state is kept after its restore (a restored one's deadline moves with it). */
export async function setAssociationRetention(site: Site, p: Principal, id: string, req: { deleteAfterHours: number }): Promise<AssociationView> {
  const a = await getAssociationRecord(site, p, id);
  const seconds = deleteAfterSeconds(req.deleteAfterHours);
  if (!isLive(a.state)) throw new SlipwayError("CONFLICT", `Cannot change association ${id}: it is ${a.state}`);
  const now = site.now().toISOString();
  const deleteAt = a.restoredAt ? new Date(Date.parse(a.restoredAt) + seconds * 1000).toISOString() : null;
  await site.db.transaction(async (tx) => {
    if (!(await stores(tx).associations.setDeleteAfter(id, seconds, deleteAt, now))) throw new SlipwayError("CONFLICT", `Cannot change association ${id}: it is no longer live`);
    await site.audit.append({ actor: adminActor(p), action: "association.retention", object: `association:${id}`,
      details: { deleteAfterSeconds: seconds, was: a.deleteAfterSeconds, deleteAt } }, tx);
  });
  return getAssociation(site, p, id);
}

/**
 * Shreds an association: the key goes (with the state change, audited), then the chunks, then
 * it is marked gone. A crash between the two leaves it "deleting", which the sweep finishes.
 */
async function shred(site: Site, chunks: StateChunks, a: Association, actor: string, reason: string, action: string): Promise<boolean> {
  const now = site.now().toISOString();
  const shredded = await site.db.transaction(async (tx) => {
    if (!(await stores(tx).associations.shred(a.id, reason, now))) return false;
    await site.audit.append({ actor, action, object: `association:${a.id}`,
      details: { reason, state: a.state, storedBytes: a.storedBytes, keyDestroyed: true } }, tx);
    return true;
  });
  if (shredded) {
    await scrubAssociations(site.db).catch((err: unknown) => site.log.warn("scrubbing shredded association keys from the database files failed", { err }));
    await finishDeleting(site, chunks, a.id);
  }
  return shredded;
}

async function finishDeleting(site: Site, chunks: StateChunks, id: string): Promise<void> {
  await chunks.destroy(id);
  await stores(site.db).associations.markGone(id, site.now().toISOString());
}

export async function deleteAssociation(site: Site, p: Principal, chunks: StateChunks, id: string): Promise<AssociationView> {
  const a = await getAssociationRecord(site, p, id);
  if (!isLive(a.state)) {
    if (a.state === "deleting") await finishDeleting(site, chunks, a.id);
    return getAssociation(site, p, id);
  }
  await shred(site, chunks, a, adminActor(p), "deleted by an administrator", "association.delete");
  return getAssociation(site, p, id);
}

/**
 * Whether a live association is past its deadline at this moment (delete-after for a restored
 * one, the unrestored limit otherwise) — and if so, shreds it now, as the sweep would: a deadline
 * holds at the moment it passes, not at the next sweep.
 */
export async function expireIfDue(site: Site, chunks: StateChunks, a: Association): Promise<boolean> {
  if (!isLive(a.state)) return false;
  const now = site.now().getTime();
  if (a.state === "restored" && a.deleteAt && Date.parse(a.deleteAt) <= now) {
    await shred(site, chunks, a, "site", `kept ${a.deleteAfterSeconds / HOUR} hours after its restore`, "association.delete");
    return true;
  }
  if (a.state !== "restored" && Date.parse(a.expiresAt) <= now) {
    await shred(site, chunks, a, "site", `expired: ${a.state === "pending" ? "nothing was captured" : "the state was never restored"} by ${a.expiresAt}`, "association.expire");
    return true;
  }
  return false;
}

export type SweepResult = { deleted: string[]; expired: string[]; warned: string[]; finished: string[] };

/**
 * The retention sweep (run by the site server every minute, and by tests with a fake clock):
 * shreds restored associations past their "delete after", shreds those never restored past their
 * expiry (audited association.expire), warns in the audit log a day before that
 * (association.expiring), and finishes deletions a crash interrupted.
 */
export async function sweepAssociations(site: Site, chunks: StateChunks): Promise<SweepResult> {
  const now = site.now();
  const warnBefore = new Date(now.getTime() + EXPIRY_WARNING_SECONDS * 1000).toISOString();
  const due = await stores(site.db).associations.due(now.toISOString(), warnBefore);
  const out: SweepResult = { deleted: [], expired: [], warned: [], finished: [] };
  for (const a of due.deleting) {
    await finishDeleting(site, chunks, a.id);
    out.finished.push(a.id);
  }
  for (const a of due.deleteDue) {
    if (await shred(site, chunks, a, "site", `kept ${a.deleteAfterSeconds / HOUR} hours after its restore`, "association.delete")) out.deleted.push(a.id);
  }
  for (const a of due.expired) {
    const why = a.state === "pending" ? "nothing was captured" : "the state was never restored";
    if (await shred(site, chunks, a, "site", `expired: ${why} by ${a.expiresAt}`, "association.expire")) out.expired.push(a.id);
  }
  for (const a of due.warn) {
    const warned = await site.db.transaction(async (tx) => {
      if (!(await stores(tx).associations.markExpiryWarned(a.id, now.toISOString()))) return false;
      await site.audit.append({ actor: "site", action: "association.expiring", object: `association:${a.id}`, outcome: "failure",
        details: { state: a.state, expiresAt: a.expiresAt, message: `the user state of association ${a.id} will be destroyed at ${a.expiresAt} unless it is restored` } }, tx);
      return true;
    });
    if (warned) out.warned.push(a.id);
  }
  return out;
}

/** What a Recovery Agent gets to read an association's state outside a run. */
export type RecoveryGrant = { association: string; dataKey: string; chunks: number; stateBytes: number; files: number; source: string };

/**
 * Releases an association's data key to a Recovery Agent (recovery.read), with the reason they
 * gave, audited (association.recover) before the key leaves. Only a captured or restored
 * association has anything to recover; a scoped agent sees only its devices' associations.
 */
export async function recoverAssociation(site: Site, p: Principal, chunks: StateChunks, id: string, req: { reason: string }): Promise<RecoveryGrant> {
  const a = await getAssociationRecord(site, p, id);
  const actor = adminActor(p);
  if ((a.state !== "captured" && a.state !== "restored") || !a.sealedKey || (await expireIfDue(site, chunks, a))) {
    await site.audit.append({ actor, action: "association.recover", outcome: "denied", object: `association:${id}`, details: { reason: req.reason, why: `the association is ${a.state}` } });
    throw new SlipwayError("CONFLICT", `Cannot recover association ${id}: it is ${a.state}${a.state === "pending" ? " (nothing was captured)" : " (its key was destroyed)"}`);
  }
  const dataKey = site.keys.keyring.open(JSON.parse(a.sealedKey), associationKeyAad(a.id));
  await site.audit.append({ actor, action: "association.recover", object: `association:${id}`,
    details: { reason: req.reason, source: a.sourceDeviceId, chunks: a.chunks, storedBytes: a.storedBytes } });
  const names = await deviceNames(stores(site.db), [a]);
  return { association: a.id, dataKey, chunks: a.chunks, stateBytes: a.stateBytes, files: a.files, source: names.get(a.sourceDeviceId) ?? a.sourceDeviceId };
}

/** How long after an audited recover its Recovery Agent may read the association's chunks. */
export const RECOVERY_WINDOW_MS = 3600_000;

/**
 * One sealed chunk for a Recovery Agent: only within an hour after that same administrator's
 * audited recover of this association (with its reason); anything else is refused, audited.
 */
export async function recoveryChunk(site: Site, p: Principal, chunks: StateChunks & { read(id: string, index: number): Promise<Buffer> }, id: string, index: number): Promise<Buffer> {
  const a = await getAssociationRecord(site, p, id);
  const actor = adminActor(p);
  if ((a.state !== "captured" && a.state !== "restored") || !a.sealedKey || (await expireIfDue(site, chunks, a))) {
    await site.audit.append({ actor, action: "association.recover", outcome: "denied", object: `association:${id}`, details: { why: `the association is ${a.state === "captured" || a.state === "restored" ? "expired" : a.state}`, chunk: index } });
    throw new SlipwayError("CONFLICT", `Cannot read association ${id}: it is ${a.state === "captured" || a.state === "restored" ? "expired" : a.state}`);
  }
  const granted = await site.audit.latest({ action: "association.recover", actor, object: `association:${id}`, outcome: "success" });
  if (!granted || site.now().getTime() - Date.parse(granted.at) > RECOVERY_WINDOW_MS) {
    await site.audit.append({ actor, action: "association.recover", outcome: "denied", object: `association:${id}`, details: { why: "chunks read without a recover (with a reason) in the last hour", chunk: index } });
    throw new SlipwayError("FORBIDDEN", `Not allowed: recover association ${id} first (slipway association recover, with a reason); its chunks are readable for an hour after that`);
  }
  if (index >= a.chunks) throw new SlipwayError("NOT_FOUND", `Association ${id} has ${a.chunks} chunks; there is no chunk ${index}`);
  return chunks.read(a.id, index);
}

/**
 * Deleting a device purges what is held about it: every association it is part of is shredded
 * (key first, audited association.delete with the reason), its chunks removed, and the rows —
 * tombstones included — deleted. A replace whose other machine still waits loses its state: the
 * administrator deleted the machine it came from or was going to.
 */
export async function purgeDeviceAssociations(site: Site, chunks: StateChunks, deviceId: string, actor: string): Promise<number> {
  const s = stores(site.db);
  const all = await s.associations.list({ deviceId });
  for (const a of all) {
    if (isLive(a.state)) await shred(site, chunks, a, actor, "its device was deleted", "association.delete");
    else await chunks.destroy(a.id);
  }
  await s.associations.deleteForDevice(deviceId);
  return all.length;
}
