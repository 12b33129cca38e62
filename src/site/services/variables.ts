/**
 * Variables at site, collection and device scope: which target a scope names and whether the
 * administrator may touch it, setting (a secret is sealed bound to its scope, target and name)
 * and deleting, each in one transaction with its audit entry. Input is already validated (the
 * route's zod schema); refusals are SlipwayErrors. A run's secrets are opened in runs.ts.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { VariableRecord, VariableScope } from "../../storage/variable-store.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";
import { secretAad } from "../secrets.ts";
import { collectionInScope, deviceVisible } from "../membership.ts";

/** Resolves `target` (id or name) for a scope to its id ("" for site) and checks the administrator may touch it. */
async function resolveTarget(site: Site, p: Principal, scope: VariableScope, target: string | undefined, write: boolean): Promise<string> {
  const s = stores(site.db);
  if (scope === "site") {
    if (target) throw new SlipwayError("VALIDATION", "A site variable takes no target", [{ path: "target", message: "must be absent for scope site" }]);
    if (write && p.scopes !== null) throw new SlipwayError("OUT_OF_SCOPE", "Not allowed: site variables need an administrator without security scopes");
    return "";
  }
  if (!target) throw new SlipwayError("VALIDATION", `A ${scope} variable needs a target`, [{ path: "target", message: `the ${scope} id or name` }]);
  if (scope === "collection") {
    const c = (await s.collections.byId(target)) ?? (await s.collections.byName(target));
    if (!c || !collectionInScope(p, c.id)) throw notFound("collection", target);
    return c.id;
  }
  const d = (await s.devices.byId(target)) ?? (await s.devices.byName(target));
  if (!d || !(await deviceVisible(s, p, d))) throw notFound("device", target);
  return d.id;
}

/** Whether the administrator sees a variable: site variables always, others by their collection or device. */
async function visible(site: Site, p: Principal, v: VariableRecord): Promise<boolean> {
  if (p.scopes === null || v.scope === "site") return true;
  if (v.scope === "collection") return collectionInScope(p, v.scopeId);
  return deviceVisible(stores(site.db), p, v.scopeId);
}

/** The variables the administrator sees, optionally of one scope and target (id or name). */
export async function listVariables(site: Site, p: Principal, filter: { scope?: VariableScope; target?: string }): Promise<VariableRecord[]> {
  const scopeId = filter.scope && filter.target ? await resolveTarget(site, p, filter.scope, filter.target, false) : undefined;
  const all = await stores(site.db).variables.list({ scope: filter.scope, scopeId });
  const out: VariableRecord[] = [];
  for (const v of all) if (await visible(site, p, v)) out.push(v);
  return out;
}

/** One variable the administrator sees; NOT_FOUND for one they do not. */
export async function getVariable(site: Site, p: Principal, id: string): Promise<VariableRecord> {
  const v = await stores(site.db).variables.byId(id);
  if (!v || !(await visible(site, p, v))) throw notFound("variable", id);
  return v;
}

export type SetVariable = { scope: VariableScope; target?: string; name: string; value: string; secret: boolean };

/**
 * Creates or replaces a variable; a secret's value is sealed bound to (scope, target, name)
 * and never stored in plaintext. A secret cannot be turned into a plain variable (that would
 * publish it). Audited as secret.write or variable.write in the same transaction.
 */
export async function setVariable(site: Site, p: Principal, b: SetVariable): Promise<{ variable: VariableRecord; created: boolean }> {
  const scopeId = await resolveTarget(site, p, b.scope, b.target, true);
  const existing = await stores(site.db).variables.byName(b.scope, scopeId, b.name);
  if (existing?.secret && !b.secret) throw new SlipwayError("CONFLICT", `Cannot make secret variable "${b.name}" non-secret; delete it and create it again`);
  const sealed = b.secret ? site.keys.keyring.seal(b.value, secretAad(b.scope, scopeId, b.name)) : null;
  const variable = await site.db.transaction(async (tx) => {
    const r = await stores(tx).variables.put({ scope: b.scope, scopeId, name: b.name, secret: b.secret,
      value: b.secret ? null : b.value, sealed, keyId: sealed ? sealed.kid : null }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: b.secret ? "secret.write" : "variable.write", object: `variable:${r.id}`,
      details: { scope: b.scope, target: scopeId || null, name: b.name, secret: b.secret, replaced: !!existing } }, tx);
    return r;
  });
  return { variable, created: !existing };
}

/** Deletes a variable the administrator sees (a secret's envelope goes with it); site variables need an unscoped administrator. */
export async function deleteVariable(site: Site, p: Principal, id: string): Promise<void> {
  const v = await getVariable(site, p, id);
  if (v.scope === "site" && p.scopes !== null) throw new SlipwayError("OUT_OF_SCOPE");
  await site.db.transaction(async (tx) => {
    await stores(tx).variables.delete(v.id);
    await site.audit.append({ actor: adminActor(p), action: "variable.delete", object: `variable:${v.id}`, details: { scope: v.scope, name: v.name, secret: v.secret } }, tx);
  });
}
