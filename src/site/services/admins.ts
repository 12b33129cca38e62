/**
 * Administrators, their API tokens, and roles. Nobody can leave any account holding a
 * permission they do not hold themselves (built-in roles other than Full Administrator excepted
 * for admin.grant-any), nor make a Full Administrator in all but name; editing a role re-checks
 * every holder; a reset, disable or delete ends every session and API token of the account; the
 * last Full Administrator cannot be removed or disabled. Every check runs inside the transaction
 * that makes the change, behind one lock, so two requests cannot each pass a check the pair
 * breaks. Input is already validated (the route's zod schema); refusals are SlipwayErrors.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import type { Sql } from "../../storage/db.ts";
import { stores } from "../../storage/stores.ts";
import { ADMIN_LOCK, type AdminRecord, type RoleRecord, type TokenRecord } from "../../storage/admin-store.ts";
import { generatePassword, hashPassword, passwordProblems } from "../../security/password.ts";
import { FULL_ADMINISTRATOR, grantRefusals, lacking } from "../../domain/rbac.ts";
import { SlipwayError } from "../../errors.ts";
import { signInThrottledUntil } from "../auth.ts";
import { adminActor, notFound } from "./common.ts";

/** An administrator as other administrators see it (never a password hash), with its sign-in lock. */
export type AdminSummary = {
  id: string; username: string; displayName: string; roles: string[]; scopes: string[] | null; disabled: boolean;
  mustChangePassword: boolean; locked: boolean; lockedUntil: string | null; lastLoginAt: string | null; createdAt: string; updatedAt: string;
};

/** An API token as its holder or an administrator sees it (never its secret part). */
export type TokenSummary = { id: string; name: string; role: string; createdAt: string; expiresAt: string; lastUsedAt: string | null };

export const tokenSummary = (t: Pick<TokenRecord, "id" | "name" | "roleId" | "createdAt" | "expiresAt" | "lastUsedAt">): TokenSummary =>
  ({ id: t.id, name: t.name, role: t.roleId, createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt });

async function summary(site: Site, a: AdminRecord): Promise<AdminSummary> {
  const throttledUntil = await signInThrottledUntil(site, a.username);
  return {
    id: a.id, username: a.username, displayName: a.displayName, roles: a.roles, scopes: a.scopes, disabled: a.disabled,
    mustChangePassword: a.mustChangePassword, locked: throttledUntil !== null, lockedUntil: throttledUntil,
    lastLoginAt: a.lastLoginAt, createdAt: a.createdAt, updatedAt: a.updatedAt,
  };
}

/** One transaction behind the administrators' lock: checks and change see the same state. */
const locked = <T>(site: Site, fn: (tx: Sql) => Promise<T>) => site.db.transaction(fn, { lockKey: ADMIN_LOCK });

/**
 * Refuses (403) unless the caller may leave an account holding exactly `roleIds` and `scopes`.
 * `what` names the refused action ("Cannot create administrator \"eve\"").
 */
async function checkGrantable(tx: Sql, p: Principal, roleIds: string[], scopes: string[] | null, what: string): Promise<void> {
  const s = stores(tx);
  const roles = await s.admins.rolesByIds(roleIds);
  const missing = roleIds.filter((id) => !roles.some((r) => r.id === id));
  if (missing.length) throw new SlipwayError("VALIDATION", `${what}: unknown role ${missing.join(", ")}`, missing.map((m) => ({ path: "roles", message: `unknown role ${m}` })));
  const why = grantRefusals(p.permissions, roles);
  if (why.length) throw new SlipwayError("FORBIDDEN", `${what}: ${why.join("; ")}`);
  if (p.scopes !== null && (scopes === null || scopes.some((c) => !p.scopes!.includes(c)))) {
    throw new SlipwayError("OUT_OF_SCOPE", `${what}: you can only grant security scopes you hold yourself`);
  }
  for (const c of scopes ?? []) if (!(await s.collections.byId(c))) throw new SlipwayError("VALIDATION", `${what}: unknown collection in scopes: ${c}`);
}

/** Changing someone who holds more than you would be a way to take over their account. */
async function checkHoldsNoMore(tx: Sql, p: Principal, a: AdminRecord, action: string): Promise<void> {
  const roles = await stores(tx).admins.rolesByIds(a.roles);
  const why = grantRefusals(p.permissions, roles);
  if (why.length) throw new SlipwayError("FORBIDDEN", `Cannot ${action} administrator "${a.username}": they hold more than you could grant (${why.join("; ")})`);
  if (p.scopes !== null && (a.scopes === null || a.scopes.some((c) => !p.scopes!.includes(c)))) {
    throw new SlipwayError("OUT_OF_SCOPE", `Cannot ${action} administrator "${a.username}": their security scopes reach beyond yours`);
  }
}

async function assertNotLastFullAdmin(tx: Sql, target: AdminRecord, after: { roles: string[]; disabled: boolean } | null): Promise<void> {
  if (!target.roles.includes(FULL_ADMINISTRATOR) || target.disabled) return;
  if (after && after.roles.includes(FULL_ADMINISTRATOR) && !after.disabled) return;
  if ((await stores(tx).admins.countActiveFullAdmins()) <= 1) {
    throw new SlipwayError("CONFLICT", "Cannot do that: it would leave the site without an active Full Administrator");
  }
}

/** The administrator with this id, in `tx`; NOT_FOUND otherwise. */
async function adminIn(tx: Sql, id: string): Promise<AdminRecord> {
  const a = await stores(tx).admins.adminById(id);
  if (!a) throw notFound("administrator", id);
  return a;
}

export async function listAdmins(site: Site): Promise<AdminSummary[]> {
  return Promise.all((await stores(site.db).admins.listAdmins()).map((a) => summary(site, a)));
}

/** One administrator by id or username. */
export async function getAdmin(site: Site, ref: string): Promise<AdminSummary> {
  const s = stores(site.db);
  const a = (await s.admins.adminById(ref)) ?? (await s.admins.adminByUsername(ref));
  if (!a) throw notFound("administrator", ref);
  return summary(site, a);
}

export type NewAdmin = { username: string; displayName?: string; roles: string[]; scopes: string[] | null; password?: string };

/** Creates an administrator who must change the password at first sign-in; a one-time password is made and answered unless one is given. Audited admin.create. */
export async function createAdmin(site: Site, p: Principal, b: NewAdmin): Promise<{ admin: AdminSummary; oneTimePassword?: string }> {
  const what = `Cannot create administrator "${b.username}"`;
  await checkGrantable(site.db, p, b.roles, b.scopes, what);
  if (b.password !== undefined) {
    const problems = passwordProblems(b.password, { username: b.username });
    if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that password: ${problems.join("; ")}`, { problems });
  }
  const password = b.password ?? generatePassword();
  const hash = await hashPassword(password, site.passwordCost);
  const created = await locked(site, async (tx) => {
    const t = stores(tx);
    await checkGrantable(tx, p, b.roles, b.scopes, what);
    if (await t.admins.adminByUsername(b.username)) throw new SlipwayError("CONFLICT", `${what}: the name is taken`);
    const a = await t.admins.createAdmin({ username: b.username, displayName: b.displayName ?? b.username,
      passwordHash: hash, mustChangePassword: true, roles: b.roles, scopes: b.scopes }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "admin.create", object: `admin:${a.id}`, details: { username: a.username, roles: a.roles, scopes: a.scopes } }, tx);
    return a;
  });
  return { admin: await summary(site, created), ...(b.password === undefined ? { oneTimePassword: password } : {}) };
}

export type AdminChange = { displayName?: string; roles?: string[]; scopes?: string[] | null; disabled?: boolean; unlock?: true };

/** Changes another administrator's roles, scopes, name or state, or unlocks its sign-in; disabling ends its sessions and tokens. Audited admin.update. */
export async function updateAdmin(site: Site, p: Principal, id: string, b: AdminChange): Promise<AdminSummary> {
  await locked(site, async (tx) => {
    const t = stores(tx);
    const a = await adminIn(tx, id);
    if (a.id === p.adminId && (b.roles || b.scopes !== undefined || b.disabled !== undefined || b.unlock)) {
      throw new SlipwayError("FORBIDDEN", "Not allowed: nobody changes their own roles, scopes or state; ask another administrator");
    }
    await checkHoldsNoMore(tx, p, a, "change");
    if (b.roles || b.scopes !== undefined) {
      await checkGrantable(tx, p, b.roles ?? a.roles, b.scopes === undefined ? a.scopes : b.scopes, `Cannot change administrator "${a.username}"`);
    }
    await assertNotLastFullAdmin(tx, a, { roles: b.roles ?? a.roles, disabled: b.disabled ?? a.disabled });
    await t.admins.updateAdmin(a.id, { displayName: b.displayName, roles: b.roles, scopes: b.scopes, disabled: b.disabled }, site.now().toISOString());
    if (b.unlock) await t.admins.clearSignInFailures(a.username);
    const ended = b.disabled ? await t.admins.endCredentialsOf(a.id) : undefined;
    await site.audit.append({ actor: adminActor(p), action: "admin.update", object: `admin:${a.id}`,
      details: { changed: Object.keys(b), roles: b.roles, scopes: b.scopes, disabled: b.disabled, ...(ended ? { ended } : {}) } }, tx);
  });
  return summary(site, (await stores(site.db).admins.adminById(id))!);
}

/** Gives another administrator a new one-time password (answered once) and ends all its sessions and tokens. Audited admin.password.reset. */
export async function resetAdminPassword(site: Site, p: Principal, id: string): Promise<{ id: string; oneTimePassword: string }> {
  const password = generatePassword();
  const hash = await hashPassword(password, site.passwordCost);
  await locked(site, async (tx) => {
    const t = stores(tx);
    const a = await adminIn(tx, id);
    // Resetting needs no current password, so a stolen session must not be able to use it on its own account.
    if (a.id === p.adminId) throw new SlipwayError("FORBIDDEN", "Not allowed: nobody resets their own password; change it with POST /api/v1/me/password");
    await checkHoldsNoMore(tx, p, a, "reset the password of");
    await t.admins.updateAdmin(a.id, { passwordHash: hash, mustChangePassword: true }, site.now().toISOString());
    await t.admins.clearSignInFailures(a.username);
    const ended = await t.admins.endCredentialsOf(a.id);
    await site.audit.append({ actor: adminActor(p), action: "admin.password.reset", object: `admin:${a.id}`, details: { ended } }, tx);
  });
  return { id, oneTimePassword: password };
}

/** Deletes another administrator with its sessions and tokens (never the last active Full Administrator). Audited admin.delete. */
export async function deleteAdmin(site: Site, p: Principal, id: string): Promise<void> {
  await locked(site, async (tx) => {
    const t = stores(tx);
    const a = await adminIn(tx, id);
    if (a.id === p.adminId) throw new SlipwayError("CONFLICT", "Cannot delete your own account");
    await checkHoldsNoMore(tx, p, a, "delete");
    await assertNotLastFullAdmin(tx, a, null);
    const ended = await t.admins.endCredentialsOf(a.id);
    await t.admins.deleteAdmin(a.id);
    await site.audit.append({ actor: adminActor(p), action: "admin.delete", object: `admin:${a.id}`, details: { username: a.username, ended } }, tx);
  });
}

/** An administrator's API tokens. */
export async function listAdminTokens(site: Site, adminId: string): Promise<TokenSummary[]> {
  return (await stores(site.db).admins.listTokens(adminId)).map(tokenSummary);
}

/**
 * Deletes an API token of `adminId` — another administrator's (revoked, audited token.revoke)
 * or the caller's own (audited token.delete); NOT_FOUND when the token is not that account's.
 */
export async function deleteToken(site: Site, p: Principal, adminId: string, tokenId: string, action: "token.revoke" | "token.delete"): Promise<void> {
  const t = await stores(site.db).admins.tokenById(tokenId);
  if (!t || t.adminId !== adminId) throw notFound("token", tokenId);
  await site.db.transaction(async (tx) => {
    await stores(tx).admins.deleteToken(t.id);
    await site.audit.append({ actor: adminActor(p), action, object: `token:${t.id}` }, tx);
  });
}

export async function listRoles(site: Site): Promise<RoleRecord[]> {
  return stores(site.db).admins.listRoles();
}

export async function getRole(site: Site, id: string): Promise<RoleRecord> {
  const r = await stores(site.db).admins.roleById(id);
  if (!r) throw notFound("role", id);
  return r;
}

/** A custom role in `tx` that the caller may change or delete: it exists and is not built in. */
async function customRole(tx: Sql, id: string, verb: "change" | "delete"): Promise<RoleRecord> {
  const r = await stores(tx).admins.roleById(id);
  if (!r) throw notFound("role", id);
  if (r.builtin) throw new SlipwayError("CONFLICT", `Cannot ${verb} built-in role "${r.name}"`);
  return r;
}

/** Creates a custom role from permissions the caller holds. Audited role.create. */
export async function createRole(site: Site, p: Principal, b: { id: string; name: string; description: string; permissions: string[] }): Promise<RoleRecord> {
  const beyond = lacking(p.permissions, b.permissions);
  if (beyond.length) throw new SlipwayError("FORBIDDEN", `Cannot create role "${b.id}": it would carry ${beyond.join(", ")}, which you do not hold`);
  return locked(site, async (tx) => {
    const t = stores(tx);
    if (await t.admins.roleById(b.id)) throw new SlipwayError("CONFLICT", `Cannot create role "${b.id}": it exists`);
    const role = await t.admins.createRole(b, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "role.create", object: `role:${role.id}`, details: { permissions: role.permissions } }, tx);
    return role;
  });
}

/**
 * Changes a custom role: the caller must hold every permission it carries before and after, and
 * be able to grant each holder's resulting roles. Audited role.update.
 */
export async function updateRole(site: Site, p: Principal, id: string, b: { name?: string; description?: string; permissions?: string[] }): Promise<RoleRecord | undefined> {
  await locked(site, async (tx) => {
    const t = stores(tx);
    const r = await customRole(tx, id, "change");
    const next = b.permissions ?? r.permissions;
    const beyond = lacking(p.permissions, [...r.permissions, ...next]);
    if (beyond.length) throw new SlipwayError("FORBIDDEN", `Cannot change role "${r.id}": it carries or would carry ${beyond.join(", ")}, which you do not hold`);
    // Every holder's resulting roles must be ones the editor could have granted them.
    for (const h of (await t.admins.listAdmins()).filter((a) => a.roles.includes(r.id))) {
      const roles = (await t.admins.rolesByIds(h.roles)).map((x) => (x.id === r.id ? { ...x, permissions: next } : x));
      const why = grantRefusals(p.permissions, roles);
      if (why.length) throw new SlipwayError("FORBIDDEN", `Cannot change role "${r.id}": administrator "${h.username}" holds it, and you could not grant what they would then hold (${why.join("; ")})`);
    }
    await t.admins.updateRole(r.id, b, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "role.update", object: `role:${r.id}`, details: { name: b.name, permissions: b.permissions, before: r.permissions } }, tx);
  });
  return stores(site.db).admins.roleById(id);
}

/** Deletes a custom role no one holds; the caller must hold every permission it carries. Audited role.delete. */
export async function deleteRole(site: Site, p: Principal, id: string): Promise<void> {
  await locked(site, async (tx) => {
    const t = stores(tx);
    const r = await customRole(tx, id, "delete");
    const beyond = lacking(p.permissions, r.permissions);
    if (beyond.length) throw new SlipwayError("FORBIDDEN", `Cannot delete role "${r.id}": it carries ${beyond.join(", ")}, which you do not hold`);
    if (await t.admins.roleInUse(r.id)) throw new SlipwayError("IN_USE", `Cannot delete role "${r.id}": administrators or tokens hold it`);
    await t.admins.deleteRole(r.id);
    await site.audit.append({ actor: adminActor(p), action: "role.delete", object: `role:${r.id}` }, tx);
  });
}
