/**
 * Collection membership (static members plus rule matches) and security scopes: an
 * administrator limited to some collections sees and changes only those collections,
 * the devices in them, and what targets them.
 *
 * A scoped administrator cannot pull anything into its scope: it adds as static members only
 * devices it already sees, and it cannot set or change a collection rule (a rule is evaluated
 * against every device, those created later included, so no check of today's devices could
 * bound it); it may remove a rule, which only shrinks the collection. It cannot create
 * collections. So the devices in its scope are always among those that an administrator
 * without scopes put in its collections, plus the ones it created there itself.
 *
 * What it costs. One device's collections (a policy poll, one device's scope check) are its
 * static memberships (an index lookup) and the rules it matches: O(collections), whatever the
 * fleet's size. The whole fleet's membership (lists filtered by scope, member counts) is
 * computed once per membership generation (storage/membership-generation.ts: a counter in the
 * database that every write able to change membership bumps) and kept per database connection,
 * so site processes sharing one database each see every process's writes. An administrator
 * without scopes needs no membership to see devices (`scopeOf`, `deviceVisible`).
 */
import { parseExpression, evaluate, type Expr } from "../domain/expression.ts";
import { deviceLookup, type Device } from "../domain/device.ts";
import type { Collection } from "../storage/collection-store.ts";
import type { Stores } from "../storage/stores.ts";
import { isTx, type Sql } from "../storage/db.ts";
import { membershipGeneration } from "../storage/membership-generation.ts";
import { SlipwayError } from "../errors.ts";
import type { Principal } from "./principal.ts";

export type Membership = {
  /** Every collection, by name. */
  collections: Collection[];
  /** collection id → member device ids */
  members: Map<string, Set<string>>;
  /** device id → the ids of its collections, in the order of `collections` (devices in none are absent) */
  byDevice: Map<string, string[]>;
};

/** The collections with their parsed rules, by name. */
type Rules = { collections: Collection[]; rules: Map<string, Expr> };

/** What one database connection keeps; never anything computed inside a transaction. */
type Kept = {
  rules?: { generation: number; value: Rules };
  fleet?: { generation: number; value: Membership };
  /** The fleet computation under way, shared by the requests that arrive meanwhile. */
  computing?: { generation: number; value: Promise<Membership> };
};

const kept = new WeakMap<Sql, Kept>();

/**
 * What the connection keeps; undefined in a transaction, which may see its own writes (kept,
 * they would outlive a rollback) and computes afresh.
 */
function keptFor(sql: Sql): Kept | undefined {
  if (isTx(sql)) return undefined;
  let k = kept.get(sql);
  if (!k) kept.set(sql, (k = {}));
  return k;
}

function rulesOf(collections: Collection[]): Rules {
  const rules = new Map<string, Expr>();
  for (const c of collections) {
    if (!c.rule) continue;
    try {
      rules.set(c.id, parseExpression(c.rule));
    } catch {
      // stored rules were validated on write; never fail a read on one
    }
  }
  return { collections, rules };
}

/**
 * The membership as the database holds it now, computed from scratch: every device against
 * every rule, as every request did before membership was kept. What is kept and answered from
 * here must always agree with it (test/api/membership-cache-model.test.ts checks).
 */
export async function freshMembership(s: Stores): Promise<Membership> {
  const [devices, collections, statics] = await Promise.all([s.devices.list(), s.collections.list(), s.collections.allStaticMembers()]);
  const { rules } = rulesOf(collections);
  const members = new Map<string, Set<string>>(collections.map((c) => [c.id, new Set<string>()]));
  for (const m of statics) members.get(m.collectionId)?.add(m.deviceId);
  for (const [id, expr] of rules) {
    const set = members.get(id)!;
    for (const d of devices) if (evaluate(expr, deviceLookup(d))) set.add(d.id);
  }
  const byDevice = new Map<string, string[]>();
  for (const [id, set] of members) for (const d of set) (byDevice.get(d) ?? byDevice.set(d, []).get(d)!).push(id);
  return { collections, members, byDevice };
}

/**
 * The whole fleet's membership: kept per connection while the membership generation is
 * unchanged, computed again (once, however many requests wait for it) after a change.
 * Treat it as read-only: it is shared.
 */
export async function computeMembership(s: Stores): Promise<Membership> {
  const sql = s.collections.sql;
  // Read first: what is computed after it is at least as new as this generation.
  const generation = await membershipGeneration(sql);
  const own = keptFor(sql);
  if (!own) return freshMembership(s);
  if (own.fleet?.generation === generation) return own.fleet.value;
  if (own.computing?.generation === generation) return own.computing.value;
  const value = freshMembership(s);
  own.computing = { generation, value };
  try {
    const m = await value;
    if ((own.fleet?.generation ?? -1) < generation) own.fleet = { generation, value: m };
    return m;
  } finally {
    if (own.computing?.value === value) own.computing = undefined;
  }
}

/** The collections and their parsed rules at `generation`, kept per connection like the fleet. */
async function rulesAt(s: Stores, generation: number): Promise<Rules> {
  const own = keptFor(s.collections.sql);
  if (own?.rules?.generation === generation) return own.rules.value;
  const value = rulesOf(await s.collections.list());
  if (own && (own.rules?.generation ?? -1) < generation) own.rules = { generation, value };
  return value;
}

/**
 * The ids of the collections `device` is in, by collection name: its static memberships and
 * the rules it matches. O(collections): no other device is read.
 */
export async function deviceCollections(s: Stores, device: Device): Promise<string[]> {
  const generation = await membershipGeneration(s.collections.sql);
  const fleet = keptFor(s.collections.sql)?.fleet;
  if (fleet?.generation === generation) return fleet.value.byDevice.get(device.id) ?? [];
  const { collections, rules } = await rulesAt(s, generation);
  const statics = new Set(await s.collections.staticCollectionsOf(device.id));
  const lookup = deviceLookup(device);
  const inside = collections.filter((c) => {
    if (statics.delete(c.id)) return true;
    const expr = rules.get(c.id);
    return expr !== undefined && evaluate(expr, lookup);
  });
  // A collection created after the generation was read that the device is already a static
  // member of: in, as a fresh computation would have it.
  return [...inside.map((c) => c.id), ...statics];
}

export function collectionsOf(m: Membership, deviceId: string): string[] {
  return m.byDevice.get(deviceId) ?? [];
}

export function collectionInScope(p: Principal, collectionId: string): boolean {
  return p.scopes === null || p.scopes.includes(collectionId);
}

export function deviceInScope(p: Principal, m: Membership, deviceId: string): boolean {
  if (p.scopes === null) return true;
  return p.scopes.some((c) => m.members.get(c)?.has(deviceId));
}

/**
 * Whether `p` sees one device (by record or id; a missing one is not seen): without
 * scopes always, with scopes when one of the device's collections is among them.
 */
export async function deviceVisible(s: Stores, p: Principal, device: Device | string): Promise<boolean> {
  if (p.scopes === null) return true;
  const d = typeof device === "string" ? await s.devices.byId(device) : device;
  if (!d) return false;
  const scopes = p.scopes;
  return (await deviceCollections(s, d)).some((c) => scopes.includes(c));
}

/**
 * The devices of `devices` that `p` sees, in their order: all without scopes; with scopes,
 * from the kept fleet membership when it is current, else by evaluating only the scopes' own
 * rules and static members against the devices at hand — a list the caller loaded anyway
 * costs no second pass over the fleet after a write.
 */
export async function devicesVisible<T extends Device>(s: Stores, p: Principal, devices: T[]): Promise<T[]> {
  if (p.scopes === null) return devices;
  const generation = await membershipGeneration(s.collections.sql);
  const fleet = keptFor(s.collections.sql)?.fleet;
  if (fleet?.generation === generation) return devices.filter((d) => deviceInScope(p, fleet.value, d.id));
  const { rules } = await rulesAt(s, generation);
  const scopeRules = p.scopes.flatMap((c) => rules.get(c) ?? []);
  const statics = new Set((await Promise.all(p.scopes.map((c) => s.collections.staticMembers(c)))).flat());
  return devices.filter((d) => statics.has(d.id) || (scopeRules.length > 0 && scopeRules.some((e) => evaluate(e, deviceLookup(d)))));
}

/** A test for many devices at once: which ones `p` sees (no membership needed without scopes). */
export async function scopeOf(s: Stores, p: Principal): Promise<(deviceId: string) => boolean> {
  if (p.scopes === null) return () => true;
  const m = await computeMembership(s);
  return (deviceId) => deviceInScope(p, m, deviceId);
}

export function requireCollectionScope(p: Principal, collectionId: string): void {
  if (!collectionInScope(p, collectionId)) throw new SlipwayError("OUT_OF_SCOPE");
}

export function requireUnscoped(p: Principal, what: string): void {
  if (p.scopes !== null) throw new SlipwayError("OUT_OF_SCOPE", `Not allowed: ${what} needs an administrator without security scopes`);
}
