/** Sign-in, sign-out, the caller's own account and API tokens. */
import { z } from "zod";
import { randomUUID } from "node:crypto";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { checkPassword, login, RateLimiter } from "../../../site/auth.ts";
import { stores } from "../../../storage/stores.ts";
import { hashPassword, hashToken, newToken, passwordProblems } from "../../../security/password.ts";
import { SlipwayError } from "../../../errors.ts";
import { actor, Id, Name, notFound, principal } from "./common.ts";

const tokenView = (t: { id: string; name: string; roleId: string; createdAt: string; expiresAt: string; lastUsedAt: string | null }) =>
  ({ id: t.id, name: t.name, role: t.roleId, createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt });

export function sessionRoutes(site: Site, opts: { loginLimiter?: RateLimiter } = {}): Route[] {
  // Per client address: 20 sign-in attempts a minute, on top of the per-account throttles in auth.ts.
  const limiter = opts.loginLimiter ?? new RateLimiter(20, 60_000, () => site.now().getTime());
  return [
    route({
      method: "POST", path: "/api/v1/sessions", access: "public", tag: "sessions",
      summary: "Sign in with username and password; returns a bearer token",
      body: z.strictObject({ username: z.string().min(1).max(100), password: z.string().min(1).max(1024) }),
      handler: async (ctx) => {
        if (!limiter.hit(ctx.ip)) {
          await site.audit.append({ actor: `admin:${ctx.body.username}`, action: "session.login", outcome: "denied", details: { reason: "rate limited", ip: ctx.ip } });
          throw new SlipwayError("RATE_LIMITED", "Cannot sign in: too many attempts from this address; wait a minute");
        }
        const r = await login(site, ctx.body.username, ctx.body.password, ctx.ip);
        return { status: 201, body: { token: r.token, expiresAt: r.expiresAt, mustChangePassword: r.mustChangePassword } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/sessions/current", access: "authenticated", tag: "sessions",
      summary: "Sign out (ends the session behind the bearer token)", allowWithPendingPasswordChange: true,
      handler: async (ctx) => {
        const p = principal(ctx);
        if (p.via !== "session") throw new SlipwayError("BAD_REQUEST", "Cannot sign out an API token; delete the token instead");
        await stores(site.db).admins.deleteSession(p.credentialId);
        await site.audit.append({ actor: actor(ctx), action: "session.logout", object: `admin:${p.adminId}` });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/me", access: "authenticated", tag: "sessions",
      summary: "The signed-in administrator, their roles, permissions and scopes", allowWithPendingPasswordChange: true,
      handler: async (ctx) => {
        const p = principal(ctx);
        const a = await stores(site.db).admins.adminById(p.adminId);
        if (!a) throw new SlipwayError("UNAUTHENTICATED");
        return { body: { id: a.id, username: a.username, displayName: a.displayName, roles: a.roles, scopes: a.scopes,
          permissions: [...p.permissions].sort(), via: p.via, mustChangePassword: a.mustChangePassword } };
      },
    }),
    route({
      method: "POST", path: "/api/v1/me/password", access: "authenticated", tag: "sessions",
      summary: "Change your own password (required after a one-time password); ends your API tokens and other sessions", allowWithPendingPasswordChange: true,
      body: z.strictObject({ currentPassword: z.string().min(1).max(1024), newPassword: z.string().min(1).max(1024) }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const s = stores(site.db);
        const a = (await s.admins.adminById(p.adminId))!;
        // Checked and throttled like a sign-in, so a stolen session cannot guess its way to the account.
        const check = await checkPassword(site, a.username, ctx.body.currentPassword, ctx.ip);
        if (check.refused !== null) {
          await site.audit.append({ actor: actor(ctx), action: "admin.password.change", object: `admin:${a.id}`, outcome: "failure", details: { reason: check.refused, ip: ctx.ip } });
          throw new SlipwayError("LOGIN_FAILED", "Cannot change the password: the current password is wrong");
        }
        const problems = passwordProblems(ctx.body.newPassword, { username: a.username });
        if (ctx.body.newPassword === ctx.body.currentPassword) problems.push("must differ from the current password");
        if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that password: ${problems.join("; ")}`, { problems });
        const hash = await hashPassword(ctx.body.newPassword, site.passwordCost);
        await site.db.transaction(async (tx) => {
          const t = stores(tx);
          await t.admins.updateAdmin(a.id, { passwordHash: hash, mustChangePassword: false }, site.now().toISOString());
          // Every API token and every other session of this account ends; the session that
          // proved the current password and made the change stays (a token making it ends too).
          const ended = await t.admins.endCredentialsOf(a.id, p.via === "session" ? { keepSession: p.credentialId } : {});
          await site.audit.append({ actor: actor(ctx), action: "admin.password.change", object: `admin:${a.id}`, details: { ended } }, tx);
        });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/me/tokens", access: "authenticated", tag: "sessions",
      summary: "Your API tokens (never their secret part)",
      handler: async (ctx) => ({ body: (await stores(site.db).admins.listTokens(principal(ctx).adminId)).map(tokenView) }),
    }),
    route({
      method: "POST", path: "/api/v1/me/tokens", access: "authenticated", tag: "sessions",
      summary: "Create an API token limited to one of your roles; the token is shown once",
      body: z.strictObject({ name: Name, role: Id, expiresInDays: z.int().min(1).max(365).default(30) }),
      handler: async (ctx) => {
        const p = principal(ctx);
        if (p.via !== "session") throw new SlipwayError("FORBIDDEN", "Not allowed: API tokens cannot create API tokens");
        const s = stores(site.db);
        const a = (await s.admins.adminById(p.adminId))!;
        if (!a.roles.includes(ctx.body.role)) {
          throw new SlipwayError("VALIDATION", `Cannot limit a token to role "${ctx.body.role}": you do not hold it`, [{ path: "role", message: "not one of your roles" }]);
        }
        const token = newToken("swt");
        const now = site.now();
        const rec = { id: randomUUID(), tokenHash: hashToken(token), adminId: a.id, name: ctx.body.name, roleId: ctx.body.role,
          createdAt: now.toISOString(), expiresAt: new Date(now.getTime() + ctx.body.expiresInDays * 86_400_000).toISOString(), lastUsedAt: null };
        await site.db.transaction(async (tx) => {
          await stores(tx).admins.createToken(rec);
          await site.audit.append({ actor: actor(ctx), action: "token.create", object: `token:${rec.id}`, details: { name: rec.name, role: rec.roleId, expiresAt: rec.expiresAt } }, tx);
        });
        return { status: 201, body: { ...tokenView(rec), token } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/me/tokens/:id", access: "authenticated", tag: "sessions",
      summary: "Delete one of your API tokens",
      handler: async (ctx) => {
        const p = principal(ctx);
        const s = stores(site.db);
        const t = await s.admins.tokenById(ctx.params.id);
        if (!t || t.adminId !== p.adminId) throw notFound("token", ctx.params.id);
        await site.db.transaction(async (tx) => {
          await stores(tx).admins.deleteToken(t.id);
          await site.audit.append({ actor: actor(ctx), action: "token.delete", object: `token:${t.id}` }, tx);
        });
        return {};
      },
    }),
  ];
}
