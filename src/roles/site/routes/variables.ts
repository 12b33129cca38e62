/**
 * Variables at site, collection and device scope. Secret values go in and never come
 * out: each is sealed with its own data key under the master key, and every read shows
 * only that it is set and when.
 */
import { z } from "zod";
import { route, type Route, type RequestContext } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import type { VariableRecord, VariableScope } from "../../../storage/variable-store.ts";
import { SlipwayError } from "../../../errors.ts";
import { secretAad } from "../../../site/secrets.ts";
import { collectionInScope, deviceVisible } from "../../../site/membership.ts";
import { actor, notFound, principal, VariableName } from "./common.ts";

export const MAX_VARIABLE_BYTES = 64 * 1024;

/** What the API shows of a variable; a secret's value and envelope are never included. */
export function variableView(v: VariableRecord) {
  return v.secret
    ? { id: v.id, scope: v.scope, target: v.scopeId || null, name: v.name, secret: true, isSet: v.sealed !== null, updatedAt: v.updatedAt, createdAt: v.createdAt }
    : { id: v.id, scope: v.scope, target: v.scopeId || null, name: v.name, secret: false, value: v.value, updatedAt: v.updatedAt, createdAt: v.createdAt };
}

export function variableRoutes(site: Site): Route[] {
  /** Resolves `target` (id or name) for a scope and checks the caller may touch it. */
  async function resolveTarget(ctx: RequestContext, scope: VariableScope, target: string | undefined, write: boolean): Promise<string> {
    const p = principal(ctx);
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

  async function visible(ctx: RequestContext, v: VariableRecord): Promise<boolean> {
    const p = principal(ctx);
    if (p.scopes === null || v.scope === "site") return true;
    if (v.scope === "collection") return collectionInScope(p, v.scopeId);
    return deviceVisible(stores(site.db), p, v.scopeId);
  }

  const Scope = z.enum(["site", "collection", "device"]);
  return [
    route({
      method: "GET", path: "/api/v1/variables", access: "variable.read", tag: "variables", summary: "List variables; secret ones show only that they are set",
      query: z.object({ scope: Scope.optional(), target: z.string().max(200).optional() }),
      handler: async (ctx) => {
        const q = ctx.query;
        const scopeId = q.scope && q.target ? await resolveTarget(ctx, q.scope, q.target, false) : undefined;
        const all = await stores(site.db).variables.list({ scope: q.scope, scopeId });
        const out = [];
        for (const v of all) if (await visible(ctx, v)) out.push(variableView(v));
        return { body: out };
      },
    }),
    route({
      method: "GET", path: "/api/v1/variables/:id", access: "variable.read", tag: "variables", summary: "One variable (never a secret's value)",
      handler: async (ctx) => {
        const v = await stores(site.db).variables.byId(ctx.params.id);
        if (!v || !(await visible(ctx, v))) throw notFound("variable", ctx.params.id);
        return { body: variableView(v) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/variables", access: "variable.write", tag: "variables",
      summary: "Set a variable (creates or replaces); with secret: true the value is write-only",
      body: z.strictObject({
        scope: Scope, target: z.string().min(1).max(200).optional(), name: VariableName,
        value: z.string().refine((s) => Buffer.byteLength(s) <= MAX_VARIABLE_BYTES, `at most ${MAX_VARIABLE_BYTES} bytes`),
        secret: z.boolean().default(false),
      }),
      handler: async (ctx) => {
        const b = ctx.body;
        const scopeId = await resolveTarget(ctx, b.scope, b.target, true);
        const s = stores(site.db);
        const existing = await s.variables.byName(b.scope, scopeId, b.name);
        // Turning a secret into a plain variable would publish it; delete it first instead.
        if (existing?.secret && !b.secret) throw new SlipwayError("CONFLICT", `Cannot make secret variable "${b.name}" non-secret; delete it and create it again`);
        const sealed = b.secret ? site.keys.keyring.seal(b.value, secretAad(b.scope, scopeId, b.name)) : null;
        const v = await site.db.transaction(async (tx) => {
          const r = await stores(tx).variables.put({ scope: b.scope, scopeId, name: b.name, secret: b.secret,
            value: b.secret ? null : b.value, sealed, keyId: sealed ? sealed.kid : null }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: b.secret ? "secret.write" : "variable.write", object: `variable:${r.id}`,
            details: { scope: b.scope, target: scopeId || null, name: b.name, secret: b.secret, replaced: !!existing } }, tx);
          return r;
        });
        return { status: existing ? 200 : 201, body: variableView(v) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/variables/:id", access: "variable.write", tag: "variables", summary: "Delete a variable (a secret's envelope is destroyed with it)",
      handler: async (ctx) => {
        const s = stores(site.db);
        const v = await s.variables.byId(ctx.params.id);
        if (!v || !(await visible(ctx, v))) throw notFound("variable", ctx.params.id);
        if (v.scope === "site" && principal(ctx).scopes !== null) throw new SlipwayError("OUT_OF_SCOPE");
        await site.db.transaction(async (tx) => {
          await stores(tx).variables.delete(v.id);
          await site.audit.append({ actor: actor(ctx), action: "variable.delete", object: `variable:${v.id}`, details: { scope: v.scope, name: v.name, secret: v.secret } }, tx);
        });
        return {};
      },
    }),
  ];
}
