/**
 * Sign-in, sign-out, the caller's own account and API tokens. The rules and transactions are
 * in the sessions service (src/site/services/sessions.ts); these handlers parse, call it, and
 * answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { RateLimiter } from "../../../site/auth.ts";
import { changeOwnPassword, createOwnToken, deleteOwnToken, me, ownTokens, signIn, signOut } from "../../../site/services/sessions.ts";
import { Id, Name, principal } from "./common.ts";

export function sessionRoutes(site: Site, opts: { loginLimiter?: RateLimiter } = {}): Route[] {
  // Per client address: 20 sign-in attempts a minute, on top of the per-account throttles in auth.ts.
  const limiter = opts.loginLimiter ?? new RateLimiter(20, 60_000, () => site.now().getTime());
  return [
    route({
      method: "POST", path: "/api/v1/sessions", access: "public", tag: "sessions",
      summary: "Sign in with username and password; returns a bearer token",
      body: z.strictObject({ username: z.string().min(1).max(100), password: z.string().min(1).max(1024) }),
      handler: async (ctx) => {
        const r = await signIn(site, limiter, { ...ctx.body, ip: ctx.ip });
        return { status: 201, body: { token: r.token, expiresAt: r.expiresAt, mustChangePassword: r.mustChangePassword } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/sessions/current", access: "authenticated", tag: "sessions",
      summary: "Sign out (ends the session behind the bearer token)", allowWithPendingPasswordChange: true,
      handler: async (ctx) => {
        await signOut(site, principal(ctx));
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/me", access: "authenticated", tag: "sessions",
      summary: "The signed-in administrator, their roles, permissions and scopes", allowWithPendingPasswordChange: true,
      handler: async (ctx) => ({ body: await me(site, principal(ctx)) }),
    }),
    route({
      method: "POST", path: "/api/v1/me/password", access: "authenticated", tag: "sessions",
      summary: "Change your own password (required after a one-time password); ends your API tokens and other sessions", allowWithPendingPasswordChange: true,
      body: z.strictObject({ currentPassword: z.string().min(1).max(1024), newPassword: z.string().min(1).max(1024) }),
      handler: async (ctx) => {
        await changeOwnPassword(site, principal(ctx), { ...ctx.body, ip: ctx.ip });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/me/tokens", access: "authenticated", tag: "sessions",
      summary: "Your API tokens (never their secret part)",
      handler: async (ctx) => ({ body: await ownTokens(site, principal(ctx)) }),
    }),
    route({
      method: "POST", path: "/api/v1/me/tokens", access: "authenticated", tag: "sessions",
      summary: "Create an API token limited to one of your roles; the token is shown once",
      body: z.strictObject({ name: Name, role: Id, expiresInDays: z.int().min(1).max(365).default(30) }),
      handler: async (ctx) => ({ status: 201, body: await createOwnToken(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/me/tokens/:id", access: "authenticated", tag: "sessions",
      summary: "Delete one of your API tokens",
      handler: async (ctx) => {
        await deleteOwnToken(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
  ];
}
