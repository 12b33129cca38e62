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
 */
import { parseExpression, evaluate, type Expr } from "../../domain/expression.ts";
import { deviceLookup, type Device } from "../../domain/device.ts";
import type { Collection } from "../../storage/collection-store.ts";
import type { Stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import type { Principal } from "./http.ts";

export type Membership = {
  devices: Device[];
  collections: Collection[];
  /** collection id → member device ids */
  members: Map<string, Set<string>>;
};

export async function computeMembership(s: Stores): Promise<Membership> {
  const [devices, collections, statics] = await Promise.all([s.devices.list(), s.collections.list(), s.collections.allStaticMembers()]);
  const members = new Map<string, Set<string>>(collections.map((c) => [c.id, new Set<string>()]));
  for (const m of statics) members.get(m.collectionId)?.add(m.deviceId);
  for (const c of collections) {
    if (!c.rule) continue;
    let expr: Expr;
    try {
      expr = parseExpression(c.rule);
    } catch {
      continue; // stored rules were validated on write; never fail a read on one
    }
    const set = members.get(c.id)!;
    for (const d of devices) if (evaluate(expr, deviceLookup(d))) set.add(d.id);
  }
  return { devices, collections, members };
}

export function collectionsOf(m: Membership, deviceId: string): string[] {
  return [...m.members].filter(([, set]) => set.has(deviceId)).map(([id]) => id);
}

export function collectionInScope(p: Principal, collectionId: string): boolean {
  return p.scopes === null || p.scopes.includes(collectionId);
}

export function deviceInScope(p: Principal, m: Membership, deviceId: string): boolean {
  if (p.scopes === null) return true;
  return p.scopes.some((c) => m.members.get(c)?.has(deviceId));
}

export function requireCollectionScope(p: Principal, collectionId: string): void {
  if (!collectionInScope(p, collectionId)) throw new SlipwayError("OUT_OF_SCOPE");
}

export function requireUnscoped(p: Principal, what: string): void {
  if (p.scopes !== null) throw new SlipwayError("OUT_OF_SCOPE", `Not allowed: ${what} needs an administrator without security scopes`);
}
