/**
 * The site API's flavour of the shared pipeline: administrators are the principals, every
 * route names a permission (or "public", or "authenticated" for the caller's own account),
 * and the default is deny.
 */
import type { IncomingMessage } from "node:http";
import { SlipwayError } from "../../errors.ts";
import type { Permission } from "../../domain/rbac.ts";
import type { Logger } from "../../log.ts";
import * as pipeline from "../pipeline.ts";
import type { Principal } from "../../site/principal.ts";

export type { HttpMethod, Reply, Pipeline } from "../pipeline.ts";
export { MAX_BODY_BYTES } from "../pipeline.ts";

/** `public`: anyone; `authenticated`: any signed-in administrator (their own account). */
export type Access = Permission | "public" | "authenticated";

export type { Principal };

/** A site request; helpers that need path parameters say which, e.g. `RequestContext<unknown, unknown, { id: string }>`. */
export type RequestContext<B = unknown, Q = unknown, Params = Record<never, string>> = pipeline.RequestContext<B, Q, Principal, Params>;
export type Route = pipeline.Route<Access, Principal>;

/**
 * Defines a site route: `route({ method, path, access, tag, summary, body?, query?, handler })`.
 * The handler's `ctx.body` and `ctx.query` are what the schemas produce and `ctx.params` has
 * the path's `:name`s, so TypeScript checks every read against the declaration.
 */
export const route = pipeline.routeOf<Access, Principal>();

export type SiteHooks = {
  log: Logger;
  authenticate(req: IncomingMessage): Promise<Principal | null>;
  onDenied(ctx: RequestContext, code: string): Promise<void>;
  onRejected?(code: string): void;
  mapError?(err: unknown): SlipwayError | null;
};

/** Refuses a one-time-password session everything but changing it, and any missing permission. */
export function authorizeAdmin(route: Route, p: Principal): SlipwayError | null {
  if (p.mustChangePassword && !route.allowWithPendingPasswordChange) return new SlipwayError("PASSWORD_CHANGE_REQUIRED");
  if (route.access === "authenticated" || route.access === "public") return null;
  if (p.permissions.has(route.access)) return null;
  return new SlipwayError("FORBIDDEN", `Not allowed: ${route.method} ${route.path} needs the ${route.access} permission`);
}

export function createPipeline(routes: readonly Route[], hooks: SiteHooks): pipeline.Pipeline {
  return pipeline.createPipeline<Access, Principal>(routes, { ...hooks, authorize: authorizeAdmin });
}
