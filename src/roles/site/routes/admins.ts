/**
 * Administrators and roles. Nobody can leave any account holding a permission they do not
 * hold themselves (built-in roles other than Full Administrator excepted for admin.grant-any),
 * nor make a Full Administrator in all but name; editing a role re-checks every holder; a
 * reset, disable or delete ends every session and API token of the account; the last Full
 * Administrator cannot be removed or disabled. Every check runs inside the transaction that
 * makes the change, behind one lock, so two requests cannot each pass a check the pair breaks.
 */
import { z } from "zod";
import { route, type Principal, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import type { Sql } from "../../../storage/db.ts";
import { stores } from "../../../storage/stores.ts";
import { ADMIN_LOCK, type AdminRecord } from "../../../storage/admin-store.ts";
import { generatePassword, hashPassword, passwordProblems } from "../../../security/password.ts";
import { allPermissions, FULL_ADMINISTRATOR, grantRefusals, isPermission, lacking } from "../../../domain/rbac.ts";
import { SlipwayError } from "../../../errors.ts";
import { actor, Description, Id, Name, notFound, principal } from "./common.ts";
import { signInThrottledUntil } from "../../../site/auth.ts";

const Username = z.string().regex(/^[a-z][a-z0-9._-]{1,63}$/, "lower-case letters, digits, . _ - (2-64, starting with a letter)");

const adminView = (a: AdminRecord, throttledUntil: string | null) => ({
  id: a.id, username: a.username, displayName: a.displayName, roles: a.roles, scopes: a.scopes, disabled: a.disabled,
  mustChangePassword: a.mustChangePassword, locked: throttledUntil !== null, lockedUntil: throttledUntil,
  lastLoginAt: a.lastLoginAt, createdAt: a.createdAt, updatedAt: a.updatedAt,
});

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

export function adminRoutes(site: Site): Route[] {
  const cost = () => site.passwordCost;
  const now = () => site.now().toISOString();
  /** One transaction behind the administrators' lock: checks and change see the same state. */
  const locked = <T>(fn: (tx: Sql) => Promise<T>) => site.db.transaction(fn, { lockKey: ADMIN_LOCK });
  const view = async (a: AdminRecord) => adminView(a, await signInThrottledUntil(site, a.username));
  return [
    route({
      method: "GET", path: "/api/v1/admins", access: "admin.read", tag: "admins", summary: "List administrators",
      handler: async () => ({ body: await Promise.all((await stores(site.db).admins.listAdmins()).map(view)) }),
    }),
    route({
      method: "GET", path: "/api/v1/admins/:id", access: "admin.read", tag: "admins", summary: "One administrator",
      handler: async (ctx) => {
        const a = await stores(site.db).admins.adminById(ctx.params.id) ?? await stores(site.db).admins.adminByUsername(ctx.params.id);
        if (!a) throw notFound("administrator", ctx.params.id);
        return { body: await view(a) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/admins", access: "admin.write", tag: "admins",
      summary: "Create an administrator; a one-time password is returned once unless you give one",
      body: z.strictObject({
        username: Username, displayName: Name.optional(), roles: z.array(Id).min(1).max(20),
        scopes: z.array(Id).max(200).nullable().default(null), password: z.string().min(1).max(1024).optional(),
      }),
      handler: async (ctx) => {
        const b = ctx.body;
        const p = principal(ctx);
        const what = `Cannot create administrator "${b.username}"`;
        await checkGrantable(site.db, p, b.roles, b.scopes, what);
        if (b.password !== undefined) {
          const problems = passwordProblems(b.password, { username: b.username });
          if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that password: ${problems.join("; ")}`, { problems });
        }
        const password = b.password ?? generatePassword();
        const hash = await hashPassword(password, cost());
        const created = await locked(async (tx) => {
          const t = stores(tx);
          await checkGrantable(tx, p, b.roles, b.scopes, what);
          if (await t.admins.adminByUsername(b.username)) throw new SlipwayError("CONFLICT", `${what}: the name is taken`);
          const a = await t.admins.createAdmin({ username: b.username, displayName: b.displayName ?? b.username,
            passwordHash: hash, mustChangePassword: true, roles: b.roles, scopes: b.scopes }, now());
          await site.audit.append({ actor: actor(ctx), action: "admin.create", object: `admin:${a.id}`, details: { username: a.username, roles: a.roles, scopes: a.scopes } }, tx);
          return a;
        });
        return { status: 201, body: { ...(await view(created)), ...(b.password === undefined ? { oneTimePassword: password } : {}) } };
      },
    }),
    route({
      method: "PATCH", path: "/api/v1/admins/:id", access: "admin.write", tag: "admins",
      summary: "Change an administrator's roles, scopes, name, or disable/enable and unlock it; disabling ends its sessions and API tokens",
      body: z.strictObject({
        displayName: Name.optional(), roles: z.array(Id).min(1).max(20).optional(), scopes: z.array(Id).max(200).nullable().optional(),
        disabled: z.boolean().optional(), unlock: z.literal(true).optional(),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const b = ctx.body;
        const id = await locked(async (tx) => {
          const t = stores(tx);
          const a = await t.admins.adminById(ctx.params.id);
          if (!a) throw notFound("administrator", ctx.params.id);
          if (a.id === p.adminId && (b.roles || b.scopes !== undefined || b.disabled !== undefined || b.unlock)) {
            throw new SlipwayError("FORBIDDEN", "Not allowed: nobody changes their own roles, scopes or state; ask another administrator");
          }
          await checkHoldsNoMore(tx, p, a, "change");
          if (b.roles || b.scopes !== undefined) {
            await checkGrantable(tx, p, b.roles ?? a.roles, b.scopes === undefined ? a.scopes : b.scopes, `Cannot change administrator "${a.username}"`);
          }
          await assertNotLastFullAdmin(tx, a, { roles: b.roles ?? a.roles, disabled: b.disabled ?? a.disabled });
          await t.admins.updateAdmin(a.id, { displayName: b.displayName, roles: b.roles, scopes: b.scopes, disabled: b.disabled }, now());
          if (b.unlock) await t.admins.clearSignInFailures(a.username);
          const ended = b.disabled ? await t.admins.endCredentialsOf(a.id) : undefined;
          await site.audit.append({ actor: actor(ctx), action: "admin.update", object: `admin:${a.id}`,
            details: { changed: Object.keys(b), roles: b.roles, scopes: b.scopes, disabled: b.disabled, ...(ended ? { ended } : {}) } }, tx);
          return a.id;
        });
        return { body: await view((await stores(site.db).admins.adminById(id))!) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/admins/:id/reset-password", access: "admin.write", tag: "admins",
      summary: "Give an administrator a new one-time password (returned once) and end all their sessions and API tokens",
      handler: async (ctx) => {
        const p = principal(ctx);
        const password = generatePassword();
        const hash = await hashPassword(password, cost());
        const id = await locked(async (tx) => {
          const t = stores(tx);
          const a = await t.admins.adminById(ctx.params.id);
          if (!a) throw notFound("administrator", ctx.params.id);
          // Resetting needs no current password, so a stolen session must not be able to use it on its own account.
          if (a.id === p.adminId) throw new SlipwayError("FORBIDDEN", "Not allowed: nobody resets their own password; change it with POST /api/v1/me/password");
          await checkHoldsNoMore(tx, p, a, "reset the password of");
          await t.admins.updateAdmin(a.id, { passwordHash: hash, mustChangePassword: true }, now());
          await t.admins.clearSignInFailures(a.username);
          const ended = await t.admins.endCredentialsOf(a.id);
          await site.audit.append({ actor: actor(ctx), action: "admin.password.reset", object: `admin:${a.id}`, details: { ended } }, tx);
          return a.id;
        });
        return { body: { id, oneTimePassword: password } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/admins/:id", access: "admin.write", tag: "admins", summary: "Delete an administrator, with its sessions and API tokens",
      handler: async (ctx) => {
        const p = principal(ctx);
        await locked(async (tx) => {
          const t = stores(tx);
          const a = await t.admins.adminById(ctx.params.id);
          if (!a) throw notFound("administrator", ctx.params.id);
          if (a.id === p.adminId) throw new SlipwayError("CONFLICT", "Cannot delete your own account");
          await checkHoldsNoMore(tx, p, a, "delete");
          await assertNotLastFullAdmin(tx, a, null);
          const ended = await t.admins.endCredentialsOf(a.id);
          await t.admins.deleteAdmin(a.id);
          await site.audit.append({ actor: actor(ctx), action: "admin.delete", object: `admin:${a.id}`, details: { username: a.username, ended } }, tx);
        });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/admins/:id/tokens", access: "admin.read", tag: "admins", summary: "An administrator's API tokens",
      handler: async (ctx) => ({
        body: (await stores(site.db).admins.listTokens(ctx.params.id)).map((t) => ({ id: t.id, name: t.name, role: t.roleId, createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt })),
      }),
    }),
    route({
      method: "DELETE", path: "/api/v1/admins/:id/tokens/:tokenId", access: "admin.write", tag: "admins", summary: "Revoke an administrator's API token",
      handler: async (ctx) => {
        const s = stores(site.db);
        const t = await s.admins.tokenById(ctx.params.tokenId);
        if (!t || t.adminId !== ctx.params.id) throw notFound("token", ctx.params.tokenId);
        await site.db.transaction(async (tx) => {
          await stores(tx).admins.deleteToken(t.id);
          await site.audit.append({ actor: actor(ctx), action: "token.revoke", object: `token:${t.id}` }, tx);
        });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/permissions", access: "role.read", tag: "roles", summary: "Every permission a role can carry",
      handler: async () => ({ body: allPermissions }),
    }),
    route({
      method: "GET", path: "/api/v1/roles", access: "role.read", tag: "roles", summary: "List roles (built-in and custom)",
      handler: async () => ({ body: await stores(site.db).admins.listRoles() }),
    }),
    route({
      method: "GET", path: "/api/v1/roles/:id", access: "role.read", tag: "roles", summary: "One role",
      handler: async (ctx) => {
        const r = await stores(site.db).admins.roleById(ctx.params.id);
        if (!r) throw notFound("role", ctx.params.id);
        return { body: r };
      },
    }),
    route({
      method: "POST", path: "/api/v1/roles", access: "role.write", tag: "roles", summary: "Create a custom role from permissions you hold",
      body: z.strictObject({
        id: z.string().regex(/^[a-z][a-z0-9-]{1,63}$/, "lower-case letters, digits and -"), name: Name, description: Description.default(""),
        permissions: z.array(z.string().refine(isPermission, "unknown permission")).min(1).max(100),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const beyond = lacking(p.permissions, ctx.body.permissions);
        if (beyond.length) throw new SlipwayError("FORBIDDEN", `Cannot create role "${ctx.body.id}": it would carry ${beyond.join(", ")}, which you do not hold`);
        const r = await locked(async (tx) => {
          const t = stores(tx);
          if (await t.admins.roleById(ctx.body.id)) throw new SlipwayError("CONFLICT", `Cannot create role "${ctx.body.id}": it exists`);
          const role = await t.admins.createRole(ctx.body, now());
          await site.audit.append({ actor: actor(ctx), action: "role.create", object: `role:${role.id}`, details: { permissions: role.permissions } }, tx);
          return role;
        });
        return { status: 201, body: r };
      },
    }),
    route({
      method: "PATCH", path: "/api/v1/roles/:id", access: "role.write", tag: "roles",
      summary: "Change a custom role; you must hold every permission it carries before and after, and be able to grant each holder's resulting roles",
      body: z.strictObject({
        name: Name.optional(), description: Description.optional(),
        permissions: z.array(z.string().refine(isPermission, "unknown permission")).min(1).max(100).optional(),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const id = await locked(async (tx) => {
          const t = stores(tx);
          const r = await t.admins.roleById(ctx.params.id);
          if (!r) throw notFound("role", ctx.params.id);
          if (r.builtin) throw new SlipwayError("CONFLICT", `Cannot change built-in role "${r.name}"`);
          const next = ctx.body.permissions ?? r.permissions;
          const beyond = lacking(p.permissions, [...r.permissions, ...next]);
          if (beyond.length) throw new SlipwayError("FORBIDDEN", `Cannot change role "${r.id}": it carries or would carry ${beyond.join(", ")}, which you do not hold`);
          // Every holder's resulting roles must be ones the editor could have granted them.
          for (const h of (await t.admins.listAdmins()).filter((a) => a.roles.includes(r.id))) {
            const roles = (await t.admins.rolesByIds(h.roles)).map((x) => (x.id === r.id ? { ...x, permissions: next } : x));
            const why = grantRefusals(p.permissions, roles);
            if (why.length) throw new SlipwayError("FORBIDDEN", `Cannot change role "${r.id}": administrator "${h.username}" holds it, and you could not grant what they would then hold (${why.join("; ")})`);
          }
          await t.admins.updateRole(r.id, ctx.body, now());
          await site.audit.append({ actor: actor(ctx), action: "role.update", object: `role:${r.id}`, details: { name: ctx.body.name, permissions: ctx.body.permissions, before: r.permissions } }, tx);
          return r.id;
        });
        return { body: await stores(site.db).admins.roleById(id) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/roles/:id", access: "role.write", tag: "roles", summary: "Delete a custom role no one holds (you must hold every permission it carries)",
      handler: async (ctx) => {
        const p = principal(ctx);
        await locked(async (tx) => {
          const t = stores(tx);
          const r = await t.admins.roleById(ctx.params.id);
          if (!r) throw notFound("role", ctx.params.id);
          if (r.builtin) throw new SlipwayError("CONFLICT", `Cannot delete built-in role "${r.name}"`);
          const beyond = lacking(p.permissions, r.permissions);
          if (beyond.length) throw new SlipwayError("FORBIDDEN", `Cannot delete role "${r.id}": it carries ${beyond.join(", ")}, which you do not hold`);
          if (await t.admins.roleInUse(r.id)) throw new SlipwayError("IN_USE", `Cannot delete role "${r.id}": administrators or tokens hold it`);
          await t.admins.deleteRole(r.id);
          await site.audit.append({ actor: actor(ctx), action: "role.delete", object: `role:${r.id}` }, tx);
        });
        return {};
      },
    }),
  ];
}
