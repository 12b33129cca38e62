/** `slipway admin` and `slipway role`: administrators, their roles and security scopes. */
import { CliError, ExitCode } from "./command.ts";
import { apiPath, namesById, type Api } from "./client.ts";
import { commandGroup } from "./command-group.ts";
import { requireChanges } from "./arguments.ts";
import { stdinLine } from "./secret-input.ts";
import { permissions as permissionText } from "../domain/rbac.ts";

type Admin = {
  id: string; username: string; displayName: string; roles: string[]; scopes: string[] | null; disabled: boolean;
  mustChangePassword: boolean; locked: boolean; lastLoginAt: string | null; createdAt: string; updatedAt: string;
  oneTimePassword?: string;
};
type Role = { id: string; name: string; description: string; builtin: boolean; permissions: string[]; createdAt: string; updatedAt: string };
type ApiToken = { id: string; name: string; role: string; createdAt: string; expiresAt: string; lastUsedAt: string | null };

const status = (a: Admin) => (a.disabled ? "disabled" : a.locked ? "locked" : a.mustChangePassword ? "must change password" : "active");

/** Administrators are read by id or username, but changed by id only; this finds the id. */
async function adminId(api: Api, ref: string): Promise<Admin> {
  return api.get<Admin>(apiPath`/api/v1/admins/${ref}`);
}

/** The API takes scopes as collection ids; people know collections by name. */
async function scopeIds(api: Api, refs: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const ref of refs) out.push((await api.get<{ id: string }>(apiPath`/api/v1/collections/${ref}`)).id);
  return out;
}

function printOneTimePassword(username: string, password: string): void {
  process.stderr.write(`One-time password for ${username} (shown once; it must be changed at first sign-in):\n`);
  process.stdout.write(password + "\n");
}

export const adminCommand = commandGroup("admin", "Administrators: who may sign in, with which roles and security scopes", {
  list: {
    summary: "List administrators",
    async run(inv) {
      const rows = await inv.api().get<Admin[]>("/api/v1/admins");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "USERNAME", value: (a) => a.username, max: 24 },
        { header: "NAME", value: (a) => a.displayName, max: 28 },
        { header: "ROLES", value: (a) => a.roles, max: 48 },
        { header: "SCOPES", value: (a) => (a.scopes === null ? "all" : `${a.scopes.length} collection${a.scopes.length === 1 ? "" : "s"}`) },
        { header: "STATUS", value: status },
        { header: "LAST SIGN-IN", value: (a) => a.lastLoginAt ?? "never" },
        { header: "ID", value: (a) => a.id },
      ], "No administrators."));
    },
  },
  show: {
    summary: "Show one administrator (by username or id)",
    args: "ADMIN",
    async run(inv) {
      const api = inv.api();
      const a = await adminId(api, inv.positionals[0]);
      if (inv.out.json) return inv.out.result(a, () => {});
      const colls = a.scopes?.length ? await namesById(api, "/api/v1/collections") : new Map<string, string>();
      inv.out.fields([
        ["Username", a.username], ["ID", a.id], ["Display name", a.displayName], ["Roles", a.roles],
        ["Scopes", a.scopes === null ? "all collections" : a.scopes.map((c) => colls.get(c) ?? c)], ["Status", status(a)],
        ["Last sign-in", a.lastLoginAt ?? "never"], ["Created", a.createdAt], ["Updated", a.updatedAt],
      ]);
    },
  },
  create: {
    summary: "Create an administrator; a one-time password is printed once",
    args: "USERNAME",
    options: {
      role: { type: "string", multiple: true, value: "ROLE", description: "A role to hold (at least one)" },
      scope: { type: "string", multiple: true, value: "COLLECTION", description: "Limit them to this collection (default: all)" },
      "display-name": { type: "string", value: "NAME", description: "Full name" },
      "password-stdin": { type: "boolean", description: "Set the initial password from standard input instead of generating one" },
    },
    notes: "You can grant only roles whose permissions you hold, and only scopes you hold. They must change the password at first sign-in.",
    async run(inv) {
      const api = inv.api();
      const roles = inv.list("role");
      if (!roles.length) throw new CliError("Give at least one --role (see \"slipway role list\")", ExitCode.USAGE);
      const scopes = inv.list("scope");
      const a = await api.post<Admin>("/api/v1/admins", {
        username: inv.positionals[0], roles, scopes: scopes.length ? await scopeIds(api, scopes) : null,
        ...(inv.str("display-name") ? { displayName: inv.str("display-name") } : {}),
        ...(inv.values["password-stdin"] ? { password: await stdinLine(0, "the password") } : {}),
      });
      inv.out.result(a, () => {
        inv.out.line(`Created administrator ${a.username} (${a.roles.join(", ")}), id ${a.id}`);
        if (a.oneTimePassword) printOneTimePassword(a.username, a.oneTimePassword);
      });
    },
  },
  update: {
    summary: "Change an administrator's name, roles or scopes; disable, enable or unlock them",
    args: "ADMIN",
    options: {
      "display-name": { type: "string", value: "NAME", description: "New full name" },
      role: { type: "string", multiple: true, value: "ROLE", description: "Replace the roles with these" },
      scope: { type: "string", multiple: true, value: "COLLECTION", description: "Replace the scopes with these collections" },
      unscoped: { type: "boolean", description: "Remove every scope (all collections)" },
      disable: { type: "boolean", description: "Disable the account (its sessions end)" },
      enable: { type: "boolean", description: "Enable the account" },
      unlock: { type: "boolean", description: "Unlock an account locked after failed sign-ins" },
    },
    async run(inv) {
      if (inv.values.enable && inv.values.disable) throw new CliError("Give --enable or --disable, not both", ExitCode.USAGE);
      const scopes = inv.list("scope");
      if (scopes.length && inv.values.unscoped) throw new CliError("Give --scope or --unscoped, not both", ExitCode.USAGE);
      const api = inv.api();
      const roles = inv.list("role");
      const body = {
        displayName: inv.str("display-name"), roles: roles.length ? roles : undefined,
        scopes: inv.values.unscoped ? null : scopes.length ? await scopeIds(api, scopes) : undefined,
        disabled: inv.values.disable ? true : inv.values.enable ? false : undefined,
        unlock: inv.values.unlock ? (true as const) : undefined,
      };
      requireChanges(body, "the administrator");
      const current = await adminId(api, inv.positionals[0]);
      const a = await api.patch<Admin>(apiPath`/api/v1/admins/${current.id}`, body);
      inv.out.result(a, () => inv.out.line(`Updated administrator ${a.username} (${status(a)})`));
    },
  },
  delete: {
    summary: "Delete an administrator",
    args: "ADMIN",
    async run(inv) {
      const api = inv.api();
      const a = await adminId(api, inv.positionals[0]);
      await api.delete(apiPath`/api/v1/admins/${a.id}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted administrator ${a.username}`));
    },
  },
  "reset-password": {
    summary: "Give an administrator a new one-time password (printed once) and end their sessions",
    args: "ADMIN",
    async run(inv) {
      const api = inv.api();
      const a = await adminId(api, inv.positionals[0]);
      const r = await api.post<{ id: string; oneTimePassword: string }>(apiPath`/api/v1/admins/${a.id}/reset-password`);
      inv.out.result(r, () => printOneTimePassword(a.username, r.oneTimePassword));
    },
  },
  tokens: {
    summary: "List an administrator's API tokens",
    args: "ADMIN",
    async run(inv) {
      const api = inv.api();
      const a = await adminId(api, inv.positionals[0]);
      const rows = await api.get<ApiToken[]>(apiPath`/api/v1/admins/${a.id}/tokens`);
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (t) => t.name },
        { header: "ROLE", value: (t) => t.role },
        { header: "EXPIRES", value: (t) => t.expiresAt },
        { header: "LAST USED", value: (t) => t.lastUsedAt ?? "never" },
        { header: "ID", value: (t) => t.id },
      ], `${a.username} has no API tokens.`));
    },
  },
  "revoke-token": {
    summary: "Revoke one of an administrator's API tokens",
    args: "ADMIN TOKEN_ID",
    async run(inv) {
      const api = inv.api();
      const a = await adminId(api, inv.positionals[0]);
      await api.delete(apiPath`/api/v1/admins/${a.id}/tokens/${inv.positionals[1]}`);
      inv.out.result(undefined, () => inv.out.line(`Revoked token ${inv.positionals[1]} of ${a.username}`));
    },
  },
});

export const roleCommand = commandGroup("role", "Roles: named sets of permissions (built-in ones cannot change)", {
  list: {
    summary: "List roles",
    async run(inv) {
      const rows = await inv.api().get<Role[]>("/api/v1/roles");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "ID", value: (r) => r.id, max: 32 },
        { header: "NAME", value: (r) => r.name, max: 32 },
        { header: "BUILT-IN", value: (r) => (r.builtin ? "yes" : "no") },
        { header: "PERMISSIONS", value: (r) => r.permissions.length, align: "right" },
        { header: "DESCRIPTION", value: (r) => r.description, max: 60 },
      ], "No roles."));
    },
  },
  show: {
    summary: "Show one role and its permissions",
    args: "ROLE",
    async run(inv) {
      const r = await inv.api().get<Role>(apiPath`/api/v1/roles/${inv.positionals[0]}`);
      inv.out.result(r, () => inv.out.fields([
        ["ID", r.id], ["Name", r.name], ["Description", r.description], ["Built-in", r.builtin ? "yes" : "no"],
        ["Permissions", r.permissions], ["Created", r.createdAt], ["Updated", r.updatedAt],
      ]));
    },
  },
  create: {
    summary: "Create a custom role from permissions you hold",
    args: "ID",
    options: {
      name: { type: "string", value: "NAME", description: "Display name (required)" },
      description: { type: "string", value: "TEXT", description: "What the role is for" },
      permission: { type: "string", multiple: true, value: "PERMISSION", description: 'A permission (see "slipway role permissions")' },
    },
    async run(inv) {
      const name = inv.str("name");
      const perms = inv.list("permission");
      if (!name || !perms.length) throw new CliError("--name and at least one --permission are required", ExitCode.USAGE);
      const r = await inv.api().post<Role>("/api/v1/roles", {
        id: inv.positionals[0], name, permissions: perms, ...(inv.str("description") !== undefined ? { description: inv.str("description") } : {}),
      });
      inv.out.result(r, () => inv.out.line(`Created role ${r.id} with ${r.permissions.length} permission${r.permissions.length === 1 ? "" : "s"}`));
    },
  },
  update: {
    summary: "Change a custom role",
    args: "ROLE",
    options: {
      name: { type: "string", value: "NAME", description: "New display name" },
      description: { type: "string", value: "TEXT", description: "New description" },
      permission: { type: "string", multiple: true, value: "PERMISSION", description: "Replace the permissions with these" },
    },
    async run(inv) {
      const perms = inv.list("permission");
      const body = { name: inv.str("name"), description: inv.str("description"), permissions: perms.length ? perms : undefined };
      requireChanges(body, "the role");
      const r = await inv.api().patch<Role>(apiPath`/api/v1/roles/${inv.positionals[0]}`, body);
      inv.out.result(r, () => inv.out.line(`Updated role ${r.id}`));
    },
  },
  delete: {
    summary: "Delete a custom role that no administrator or token holds",
    args: "ROLE",
    async run(inv) {
      await inv.api().delete(apiPath`/api/v1/roles/${inv.positionals[0]}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted role ${inv.positionals[0]}`));
    },
  },
  permissions: {
    summary: "List every permission a role can carry",
    async run(inv) {
      const rows = await inv.api().get<string[]>("/api/v1/permissions");
      const text = permissionText as Record<string, string>;
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "PERMISSION", value: (p) => p },
        { header: "ALLOWS", value: (p) => (Object.hasOwn(text, p) ? text[p] : ""), max: 80 },
      ], "No permissions."));
    },
  },
});
