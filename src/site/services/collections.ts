/**
 * Collections: static members and a membership rule over device attributes. Which collections
 * an administrator sees (those in their scopes), rules validated and kept in canonical form,
 * the limits on scoped administrators (no new collections, no rule that could pull devices
 * into their scope, only devices they already see as static members), unique names, and each
 * write in one transaction with its audit entry. Input is already validated (the route's zod
 * schema); refusals are SlipwayErrors.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { Collection } from "../../storage/collection-store.ts";
import type { DeviceState } from "../../domain/device.ts";
import { ExpressionError, formatExpression, parseExpression } from "../../domain/expression.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";
import { collectionInScope, computeMembership, deviceVisible, requireUnscoped } from "../membership.ts";

/** A collection with how many devices are in it now, and (for one collection) its static members. */
export type CollectionSummary = Collection & { memberCount: number; staticMembers?: string[] };

const summary = (c: Collection, m: Map<string, Set<string>>, staticIds?: string[]): CollectionSummary =>
  ({ ...c, memberCount: m.get(c.id)?.size ?? 0, ...(staticIds ? { staticMembers: staticIds } : {}) });

/** Validates and canonicalizes a rule; a bad one is RULE_INVALID naming the position. */
function canonicalRule(rule: string | null | undefined): string | null | undefined {
  if (rule === undefined || rule === null) return rule;
  try {
    return formatExpression(parseExpression(rule));
  } catch (err) {
    if (err instanceof ExpressionError) {
      throw new SlipwayError("RULE_INVALID", `Cannot use the rule: ${err.message}`, [{ path: "rule", message: err.message, position: err.position }]);
    }
    throw err;
  }
}

/** Whether a canonical rule is the stored one (a stored rule that no longer parses is never the same). */
function sameRule(canonical: string, stored: string | null): boolean {
  if (stored === null) return false;
  try {
    return formatExpression(parseExpression(stored)) === canonical;
  } catch {
    return false;
  }
}

/** A collection (id or name) the administrator sees; NOT_FOUND otherwise. */
async function load(site: Site, p: Principal, ref: string): Promise<Collection> {
  const s = stores(site.db);
  const c = (await s.collections.byId(ref)) ?? (await s.collections.byName(ref));
  if (!c || !collectionInScope(p, c.id)) throw notFound("collection", ref);
  return c;
}

/** The collections the administrator sees, with member counts. */
export async function listCollections(site: Site, p: Principal): Promise<CollectionSummary[]> {
  const m = await computeMembership(stores(site.db));
  return m.collections.filter((c) => collectionInScope(p, c.id)).map((c) => summary(c, m.members));
}

/** One collection (id or name) the administrator sees, with its member count and static members. */
export async function getCollection(site: Site, p: Principal, ref: string): Promise<CollectionSummary> {
  const c = await load(site, p, ref);
  const s = stores(site.db);
  return summary(c, (await computeMembership(s)).members, await s.collections.staticMembers(c.id));
}

/** The devices in a collection the administrator sees: static members and rule matches. */
export async function collectionMembers(site: Site, p: Principal, ref: string): Promise<{ id: string; name: string; state: DeviceState; static: boolean }[]> {
  const c = await load(site, p, ref);
  const s = stores(site.db);
  const m = await computeMembership(s);
  const statics = new Set(await s.collections.staticMembers(c.id));
  const ids = m.members.get(c.id) ?? new Set();
  return (await s.devices.list()).filter((d) => ids.has(d.id)).map((d) => ({ id: d.id, name: d.name, state: d.state, static: statics.has(d.id) }));
}

/** Creates a collection (administrators without scopes only), audited collection.create. */
export async function createCollection(site: Site, p: Principal, b: { name: string; description: string; rule: string | null }): Promise<CollectionSummary> {
  requireUnscoped(p, "creating a collection");
  const rule = canonicalRule(b.rule) ?? null;
  const s = stores(site.db);
  if (await s.collections.byName(b.name)) throw new SlipwayError("CONFLICT", `Cannot create collection "${b.name}": the name is taken`);
  const c = await site.db.transaction(async (tx) => {
    const r = await stores(tx).collections.create({ name: b.name, description: b.description, rule }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "collection.create", object: `collection:${r.id}`, details: { name: r.name, rule } }, tx);
    return r;
  });
  return summary(c, (await computeMembership(s)).members);
}

/** Renames a collection or changes its rule, audited collection.update with the keys given. */
export async function updateCollection(site: Site, p: Principal, ref: string, b: { name?: string; description?: string; rule?: string | null }): Promise<CollectionSummary> {
  const c = await load(site, p, ref);
  const rule = canonicalRule(b.rule);
  // A rule is evaluated against every device, including those created later, so a rule a
  // scoped administrator wrote could pull devices into its scope at any time. Scoped
  // administrators may only remove a rule (which can only shrink the collection) or send
  // the current one back unchanged; anything else needs an administrator without scopes.
  if (p.scopes !== null && rule !== undefined && rule !== null && !sameRule(rule, c.rule)) {
    throw new SlipwayError("OUT_OF_SCOPE", `Not allowed: cannot change the rule of collection "${c.name}": a rule can match devices outside your security scopes, now or when they are created; only an administrator without security scopes sets rules (you may remove it)`);
  }
  const s = stores(site.db);
  if (b.name && b.name !== c.name && (await s.collections.byName(b.name))) throw new SlipwayError("CONFLICT", `Cannot rename to "${b.name}": the name is taken`);
  await site.db.transaction(async (tx) => {
    await stores(tx).collections.update(c.id, { ...b, rule }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "collection.update", object: `collection:${c.id}`, details: { changed: Object.keys(b), rule } }, tx);
  });
  return summary((await s.collections.byId(c.id))!, (await computeMembership(s)).members);
}

/** Deletes a collection no deployment targets, with its variables; audited collection.delete. */
export async function deleteCollection(site: Site, p: Principal, ref: string): Promise<void> {
  const c = await load(site, p, ref);
  const s = stores(site.db);
  if ((await s.deployments.list({ collectionId: c.id })).length) throw new SlipwayError("IN_USE", `Cannot delete collection "${c.name}": deployments target it`);
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    await t.variables.deleteScope("collection", c.id);
    await t.collections.delete(c.id);
    await site.audit.append({ actor: adminActor(p), action: "collection.delete", object: `collection:${c.id}`, details: { name: c.name } }, tx);
  });
}

/** Adds a device (id or name) as a static member, audited collection.member.add. */
export async function addStaticMember(site: Site, p: Principal, ref: string, deviceRef: string): Promise<{ collection: string; device: string }> {
  const c = await load(site, p, ref);
  const s = stores(site.db);
  const d = (await s.devices.byId(deviceRef)) ?? (await s.devices.byName(deviceRef));
  // A scoped administrator adds only devices it can already see: one outside its scope would
  // otherwise come into it. The answer is the same whether the device exists or not, so it
  // tells nothing about devices outside the scope.
  if (p.scopes !== null && (!d || !(await deviceVisible(s, p, d)))) {
    throw new SlipwayError("OUT_OF_SCOPE", `Not allowed: cannot add device "${deviceRef}" to collection "${c.name}": it is not a device in your security scopes`);
  }
  if (!d) throw notFound("device", deviceRef);
  await site.db.transaction(async (tx) => {
    await stores(tx).collections.addMember(c.id, d.id);
    await site.audit.append({ actor: adminActor(p), action: "collection.member.add", object: `collection:${c.id}`, details: { device: d.id } }, tx);
  });
  return { collection: c.id, device: d.id };
}

/** Removes a static member, audited collection.member.remove; NOT_FOUND if it is not one. */
export async function removeStaticMember(site: Site, p: Principal, ref: string, deviceRef: string): Promise<void> {
  const c = await load(site, p, ref);
  const s = stores(site.db);
  const d = (await s.devices.byId(deviceRef)) ?? (await s.devices.byName(deviceRef));
  // Out of scope reads as missing, so the answer says nothing about devices outside the scope.
  if (!d || !(await deviceVisible(s, p, d))) throw notFound("device", deviceRef);
  const n = await site.db.transaction(async (tx) => {
    const k = await stores(tx).collections.removeMember(c.id, d.id);
    if (k) await site.audit.append({ actor: adminActor(p), action: "collection.member.remove", object: `collection:${c.id}`, details: { device: d.id } }, tx);
    return k;
  });
  if (!n) throw new SlipwayError("NOT_FOUND", `Device "${d.name}" is not a static member of "${c.name}"`);
}
