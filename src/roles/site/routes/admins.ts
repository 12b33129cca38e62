/**
 * Administrators and roles. Nobody can grant a role carrying a permission they do not
 * hold themselves, so a Security Administrator cannot create a Full Administrator, and
 * the last Full Administrator cannot be removed or disabled.
 */
import { z } from "zod";
import type { Principal, Route } from "../http.ts";
import type { Site } from "../site.ts";
import { stores } from "../../../storage/stores.ts";
import type { AdminRecord } from "../../../storage/admin-store.ts";
import { generatePassword, hashPassword, passwordProblems } from "../../../security/password.ts";
import { allPermissions, isPermission, permissionsOf, ungrantable, type Permission } from "../../../domain/rbac.ts";
import { SlipwayError } from "../../../errors.ts";
import { actor, Description, Id, Name, notFound, principal } from "./common.ts";

const Username = z.string().regex(/^[a-z][a-z0-9._-]{1,63}$/, "lower-case letters, digits, . _ - (2-64, starting with a letter)");

const adminView = (a: AdminRecord) => ({
  id: a.id, username: a.username, displayName: a.displayName, roles: a.roles, scopes: a.scopes, disabled: a.disabled,
  mustChangePassword: a.mustChangePassword, locked: a.lockedUntil !== null && a.lockedUntil > new Date().toISOString(),
  lastLoginAt: a.lastLoginAt, createdAt: a.createdAt, updatedAt: a.updatedAt,
});

async function checkGrantable(site: Site, p: Principal, roleIds: string[], scopes: string[] | null): Promise<void> {
  const s = stores(site.db);
  const roles = await s.admins.rolesByIds(roleIds);
  const missing = roleIds.filter((id) => !roles.some((r) => r.id === id));
  if (missing.length) throw new SlipwayError("VALIDATION", `Unknown role: ${missing.join(", ")}`, missing.map((m) => ({ path: "roles", message: `unknown role ${m}` })));
  const beyond = ungrantable(p.permissions, permissionsOf(roles));
  if (beyond.length) throw new SlipwayError("FORBIDDEN", `Not allowed: you cannot grant those roles (${beyond.join(", ")})`);
  if (p.scopes !== null && (scopes === null || scopes.some((c) => !p.scopes!.includes(c)))) {
    throw new SlipwayError("OUT_OF_SCOPE", "Not allowed: you can only grant security scopes you hold yourself");
  }
  for (const c of scopes ?? []) if (!(await s.collections.byId(c))) throw new SlipwayError("VALIDATION", `Unknown collection in scopes: ${c}`);
}

async function assertNotLastFullAdmin(site: Site, target: AdminRecord, after: { roles: string[]; disabled: boolean } | null): Promise<void> {
  if (!target.roles.includes("full-administrator") || target.disabled) return;
  if (after && after.roles.includes("full-administrator") && !after.disabled) return;
  if ((await stores(site.db).admins.countActiveFullAdmins()) <= 1) {
    throw new SlipwayError("CONFLICT", "Cannot do that: it would leave the site without an active Full Administrator");
  }
}

export function adminRoutes(site: Site): Route[] {
  const cost = () => site.passwordCost;
  return [
    {
      method: "GET", path: "/api/v1/admins", access: "admin.read", tag: "admins", summary: "List administrators",
      handler: async () => ({ body: (await stores(site.db).admins.listAdmins()).map(adminView) }),
    },
    {
      method: "GET", path: "/api/v1/admins/:id", access: "admin.read", tag: "admins", summary: "One administrator",
      handler: async (ctx) => {
        const a = await stores(site.db).admins.adminById(ctx.params.id) ?? await stores(site.db).admins.adminByUsername(ctx.params.id);
        if (!a) throw notFound("administrator", ctx.params.id);
        return { body: adminView(a) };
      },
    },
    {
      method: "POST", path: "/api/v1/admins", access: "admin.write", tag: "admins",
      summary: "Create an administrator; a one-time password is returned once unless you give one",
      body: z.strictObject({
        username: Username, displayName: Name.optional(), roles: z.array(Id).min(1).max(20),
        scopes: z.array(Id).max(200).nullable().default(null), password: z.string().min(1).max(1024).optional(),
      }),
      handler: async (ctx) => {
        const b = ctx.body;
        await checkGrantable(site, principal(ctx), b.roles, b.scopes);
        const s = stores(site.db);
        if (await s.admins.adminByUsername(b.username)) throw new SlipwayError("CONFLICT", `Cannot create administrator "${b.username}": the name is taken`);
        if (b.password !== undefined) {
          const problems = passwordProblems(b.password, { username: b.username });
          if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that password: ${problems.join("; ")}`, { problems });
        }
        const password = b.password ?? generatePassword();
        const hash = await hashPassword(password, cost());
        const created = await site.db.transaction(async (tx) => {
          const a = await stores(tx).admins.createAdmin({ username: b.username, displayName: b.displayName ?? b.username,
            passwordHash: hash, mustChangePassword: true, roles: b.roles, scopes: b.scopes }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "admin.create", object: `admin:${a.id}`, details: { username: a.username, roles: a.roles, scopes: a.scopes } }, tx);
          return a;
        });
        return { status: 201, body: { ...adminView(created), ...(b.password === undefined ? { oneTimePassword: password } : {}) } };
      },
    },
    {
      method: "PATCH", path: "/api/v1/admins/:id", access: "admin.write", tag: "admins",
      summary: "Change an administrator's roles, scopes, name, or disable/enable and unlock it",
      body: z.strictObject({
        displayName: Name.optional(), roles: z.array(Id).min(1).max(20).optional(), scopes: z.array(Id).max(200).nullable().optional(),
        disabled: z.boolean().optional(), unlock: z.literal(true).optional(),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const s = stores(site.db);
        const a = await s.admins.adminById(ctx.params.id);
        if (!a) throw notFound("administrator", ctx.params.id);
        const b = ctx.body;
        if (a.id === p.adminId && (b.roles || b.scopes !== undefined || b.disabled !== undefined)) {
          throw new SlipwayError("FORBIDDEN", "Not allowed: nobody changes their own roles, scopes or state; ask another administrator");
        }
        // Changing someone who holds more than you would be a way to take over their account.
        await checkGrantable(site, p, a.roles, a.scopes);
        if (b.roles || b.scopes !== undefined) await checkGrantable(site, p, b.roles ?? a.roles, b.scopes === undefined ? a.scopes : b.scopes);
        await assertNotLastFullAdmin(site, a, { roles: b.roles ?? a.roles, disabled: b.disabled ?? a.disabled });
        await site.db.transaction(async (tx) => {
          const t = stores(tx);
          await t.admins.updateAdmin(a.id, {
            displayName: b.displayName, roles: b.roles, scopes: b.scopes, disabled: b.disabled,
            ...(b.unlock ? { lockedUntil: null, failedLogins: 0 } : {}),
          }, site.now().toISOString());
          if (b.disabled) await t.admins.deleteSessionsOf(a.id);
          await site.audit.append({ actor: actor(ctx), action: "admin.update", object: `admin:${a.id}`, details: { changed: Object.keys(b), roles: b.roles, scopes: b.scopes, disabled: b.disabled } }, tx);
        });
        return { body: adminView((await s.admins.adminById(a.id))!) };
      },
    },
    {
      method: "POST", path: "/api/v1/admins/:id/reset-password", access: "admin.write", tag: "admins",
      summary: "Give an administrator a new one-time password (returned once) and end their sessions",
      handler: async (ctx) => {
        const p = principal(ctx);
        const s = stores(site.db);
        const a = await s.admins.adminById(ctx.params.id);
        if (!a) throw notFound("administrator", ctx.params.id);
        await checkGrantable(site, p, a.roles, a.scopes);
        const password = generatePassword();
        const hash = await hashPassword(password, cost());
        await site.db.transaction(async (tx) => {
          const t = stores(tx);
          await t.admins.updateAdmin(a.id, { passwordHash: hash, mustChangePassword: true, lockedUntil: null, failedLogins: 0 }, site.now().toISOString());
          await t.admins.deleteSessionsOf(a.id);
          await site.audit.append({ actor: actor(ctx), action: "admin.password.reset", object: `admin:${a.id}` }, tx);
        });
        return { body: { id: a.id, oneTimePassword: password } };
      },
    },
    {
      method: "DELETE", path: "/api/v1/admins/:id", access: "admin.write", tag: "admins", summary: "Delete an administrator",
      handler: async (ctx) => {
        const p = principal(ctx);
        const s = stores(site.db);
        const a = await s.admins.adminById(ctx.params.id);
        if (!a) throw notFound("administrator", ctx.params.id);
        if (a.id === p.adminId) throw new SlipwayError("CONFLICT", "Cannot delete your own account");
        await checkGrantable(site, p, a.roles, a.scopes);
        await assertNotLastFullAdmin(site, a, null);
        await site.db.transaction(async (tx) => {
          await stores(tx).admins.deleteAdmin(a.id);
          await site.audit.append({ actor: actor(ctx), action: "admin.delete", object: `admin:${a.id}`, details: { username: a.username } }, tx);
        });
        return {};
      },
    },
    {
      method: "GET", path: "/api/v1/admins/:id/tokens", access: "admin.read", tag: "admins", summary: "An administrator's API tokens",
      handler: async (ctx) => ({
        body: (await stores(site.db).admins.listTokens(ctx.params.id)).map((t) => ({ id: t.id, name: t.name, role: t.roleId, createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt })),
      }),
    },
    {
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
    },
    {
      method: "GET", path: "/api/v1/permissions", access: "role.read", tag: "roles", summary: "Every permission a role can carry",
      handler: async () => ({ body: allPermissions }),
    },
    {
      method: "GET", path: "/api/v1/roles", access: "role.read", tag: "roles", summary: "List roles (built-in and custom)",
      handler: async () => ({ body: await stores(site.db).admins.listRoles() }),
    },
    {
      method: "GET", path: "/api/v1/roles/:id", access: "role.read", tag: "roles", summary: "One role",
      handler: async (ctx) => {
        const r = await stores(site.db).admins.roleById(ctx.params.id);
        if (!r) throw notFound("role", ctx.params.id);
        return { body: r };
      },
    },
    {
      method: "POST", path: "/api/v1/roles", access: "role.write", tag: "roles", summary: "Create a custom role from permissions",
      body: z.strictObject({
        id: z.string().regex(/^[a-z][a-z0-9-]{1,63}$/, "lower-case letters, digits and -"), name: Name, description: Description.default(""),
        permissions: z.array(z.string().refine(isPermission, "unknown permission")).min(1).max(100),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const beyond = ungrantable(p.permissions, ctx.body.permissions as Permission[]);
        if (beyond.length) throw new SlipwayError("FORBIDDEN", `Not allowed: you cannot create a role with those permissions (${beyond.join(", ")})`);
        const s = stores(site.db);
        if (await s.admins.roleById(ctx.body.id)) throw new SlipwayError("CONFLICT", `Cannot create role "${ctx.body.id}": it exists`);
        const r = await site.db.transaction(async (tx) => {
          const role = await stores(tx).admins.createRole(ctx.body, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "role.create", object: `role:${role.id}`, details: { permissions: role.permissions } }, tx);
          return role;
        });
        return { status: 201, body: r };
      },
    },
    {
      method: "PATCH", path: "/api/v1/roles/:id", access: "role.write", tag: "roles", summary: "Change a custom role",
      body: z.strictObject({
        name: Name.optional(), description: Description.optional(),
        permissions: z.array(z.string().refine(isPermission, "unknown permission")).min(1).max(100).optional(),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const s = stores(site.db);
        const r = await s.admins.roleById(ctx.params.id);
        if (!r) throw notFound("role", ctx.params.id);
        if (r.builtin) throw new SlipwayError("CONFLICT", `Cannot change built-in role "${r.name}"`);
        const beyond = [...ungrantable(p.permissions, r.permissions as Permission[]), ...ungrantable(p.permissions, (ctx.body.permissions ?? []) as Permission[])];
        if (beyond.length) throw new SlipwayError("FORBIDDEN", `Not allowed: you cannot change a role to or from those permissions (${beyond.join(", ")})`);
        await site.db.transaction(async (tx) => {
          await stores(tx).admins.updateRole(r.id, ctx.body, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "role.update", object: `role:${r.id}`, details: { permissions: ctx.body.permissions } }, tx);
        });
        return { body: await s.admins.roleById(r.id) };
      },
    },
    {
      method: "DELETE", path: "/api/v1/roles/:id", access: "role.write", tag: "roles", summary: "Delete a custom role no one holds",
      handler: async (ctx) => {
        const s = stores(site.db);
        const r = await s.admins.roleById(ctx.params.id);
        if (!r) throw notFound("role", ctx.params.id);
        if (r.builtin) throw new SlipwayError("CONFLICT", `Cannot delete built-in role "${r.name}"`);
        if (await s.admins.roleInUse(r.id)) throw new SlipwayError("IN_USE", `Cannot delete role "${r.id}": administrators or tokens hold it`);
        await site.db.transaction(async (tx) => {
          await stores(tx).admins.deleteRole(r.id);
          await site.audit.append({ actor: actor(ctx), action: "role.delete", object: `role:${r.id}` }, tx);
        });
        return {};
      },
    },
  ];
}
