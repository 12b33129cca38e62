/**
 * Administrators and roles. Nobody can leave any account holding a permission they do not
 * hold themselves, nor make a Full Administrator in all but name; editing a role re-checks
 * every holder; a reset, disable or delete ends every session and API token of the account.
 * The rules, the lock and the transactions are in the administrators service
 * (src/site/services/admins.ts); these handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { allPermissions, isPermission } from "../../../domain/rbac.ts";
import {
  createAdmin, createRole, deleteAdmin, deleteRole, deleteToken, getAdmin, getRole, listAdmins, listAdminTokens, listRoles, resetAdminPassword, updateAdmin, updateRole,
} from "../../../site/services/admins.ts";
import { Description, Id, Name, principal } from "./common.ts";

const Username = z.string().regex(/^[a-z][a-z0-9._-]{1,63}$/, "lower-case letters, digits, . _ - (2-64, starting with a letter)");

export function adminRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/admins", access: "admin.read", tag: "admins", summary: "List administrators",
      handler: async () => ({ body: await listAdmins(site) }),
    }),
    route({
      method: "GET", path: "/api/v1/admins/:id", access: "admin.read", tag: "admins", summary: "One administrator",
      handler: async (ctx) => ({ body: await getAdmin(site, ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/admins", access: "admin.write", tag: "admins",
      summary: "Create an administrator; a one-time password is returned once unless you give one",
      body: z.strictObject({
        username: Username, displayName: Name.optional(), roles: z.array(Id).min(1).max(20),
        scopes: z.array(Id).max(200).nullable().default(null), password: z.string().min(1).max(1024).optional(),
      }),
      handler: async (ctx) => {
        const { admin, oneTimePassword } = await createAdmin(site, principal(ctx), ctx.body);
        return { status: 201, body: { ...admin, ...(oneTimePassword !== undefined ? { oneTimePassword } : {}) } };
      },
    }),
    route({
      method: "PATCH", path: "/api/v1/admins/:id", access: "admin.write", tag: "admins",
      summary: "Change an administrator's roles, scopes, name, or disable/enable and unlock it; disabling ends its sessions and API tokens",
      body: z.strictObject({
        displayName: Name.optional(), roles: z.array(Id).min(1).max(20).optional(), scopes: z.array(Id).max(200).nullable().optional(),
        disabled: z.boolean().optional(), unlock: z.literal(true).optional(),
      }),
      handler: async (ctx) => ({ body: await updateAdmin(site, principal(ctx), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "POST", path: "/api/v1/admins/:id/reset-password", access: "admin.write", tag: "admins",
      summary: "Give an administrator a new one-time password (returned once) and end all their sessions and API tokens",
      handler: async (ctx) => ({ body: await resetAdminPassword(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/admins/:id", access: "admin.write", tag: "admins", summary: "Delete an administrator, with its sessions and API tokens",
      handler: async (ctx) => {
        await deleteAdmin(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/admins/:id/tokens", access: "admin.read", tag: "admins", summary: "An administrator's API tokens",
      handler: async (ctx) => ({ body: await listAdminTokens(site, ctx.params.id) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/admins/:id/tokens/:tokenId", access: "admin.write", tag: "admins", summary: "Revoke an administrator's API token",
      handler: async (ctx) => {
        await deleteToken(site, principal(ctx), ctx.params.id, ctx.params.tokenId, "token.revoke");
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/permissions", access: "role.read", tag: "roles", summary: "Every permission a role can carry",
      handler: async () => ({ body: allPermissions }),
    }),
    route({
      method: "GET", path: "/api/v1/roles", access: "role.read", tag: "roles", summary: "List roles (built-in and custom)",
      handler: async () => ({ body: await listRoles(site) }),
    }),
    route({
      method: "GET", path: "/api/v1/roles/:id", access: "role.read", tag: "roles", summary: "One role",
      handler: async (ctx) => ({ body: await getRole(site, ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/roles", access: "role.write", tag: "roles", summary: "Create a custom role from permissions you hold",
      body: z.strictObject({
        id: z.string().regex(/^[a-z][a-z0-9-]{1,63}$/, "lower-case letters, digits and -"), name: Name, description: Description.default(""),
        permissions: z.array(z.string().refine(isPermission, "unknown permission")).min(1).max(100),
      }),
      handler: async (ctx) => ({ status: 201, body: await createRole(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "PATCH", path: "/api/v1/roles/:id", access: "role.write", tag: "roles",
      summary: "Change a custom role; you must hold every permission it carries before and after, and be able to grant each holder's resulting roles",
      body: z.strictObject({
        name: Name.optional(), description: Description.optional(),
        permissions: z.array(z.string().refine(isPermission, "unknown permission")).min(1).max(100).optional(),
      }),
      handler: async (ctx) => ({ body: await updateRole(site, principal(ctx), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/roles/:id", access: "role.write", tag: "roles", summary: "Delete a custom role no one holds (you must hold every permission it carries)",
      handler: async (ctx) => {
        await deleteRole(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
  ];
}
