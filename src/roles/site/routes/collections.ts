/** Collections: static members and a membership rule over device attributes. */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import type { Collection } from "../../../storage/collection-store.ts";
import { ExpressionError, formatExpression, parseExpression } from "../../../domain/expression.ts";
import { SlipwayError } from "../../../errors.ts";
import { collectionInScope, computeMembership, deviceVisible, requireUnscoped } from "../../../site/membership.ts";
import { actor, Description, Name, notFound, principal } from "./common.ts";

/** Validates and canonicalizes a rule; a bad one is a 422 naming the position. */
function canonicalRule(rule: string | null | undefined): string | null | undefined {
  if (rule === undefined || rule === null) return rule;
  try {
    return formatExpression(parseExpression(rule));
  } catch (err) {
    if (err instanceof ExpressionError) {
      throw new SlipwayError("RULE_INVALID", `Cannot use the rule: ${err.message}`, [{ path: "rule", message: err.message, position: err.position }]);
    }
    throw err;
  }
}

/** Whether a canonical rule is the stored one (a stored rule that no longer parses is never the same). */
function sameRule(canonical: string, stored: string | null): boolean {
  if (stored === null) return false;
  try {
    return formatExpression(parseExpression(stored)) === canonical;
  } catch {
    return false;
  }
}

export function collectionRoutes(site: Site): Route[] {
  const view = (c: Collection, m: Map<string, Set<string>>, staticIds?: string[]) =>
    ({ ...c, memberCount: m.get(c.id)?.size ?? 0, ...(staticIds ? { staticMembers: staticIds } : {}) });

  async function load(ctx: Parameters<Route["handler"]>[0]) {
    const s = stores(site.db);
    const c = (await s.collections.byId(ctx.params.id)) ?? (await s.collections.byName(ctx.params.id));
    if (!c || !collectionInScope(principal(ctx), c.id)) throw notFound("collection", ctx.params.id);
    return c;
  }

  return [
    route({
      method: "GET", path: "/api/v1/collections", access: "collection.read", tag: "collections", summary: "List collections with member counts",
      handler: async (ctx) => {
        const m = await computeMembership(stores(site.db));
        return { body: m.collections.filter((c) => collectionInScope(principal(ctx), c.id)).map((c) => view(c, m.members)) };
      },
    }),
    route({
      method: "GET", path: "/api/v1/collections/:id", access: "collection.read", tag: "collections", summary: "One collection (by id or name)",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        return { body: view(c, (await computeMembership(s)).members, await s.collections.staticMembers(c.id)) };
      },
    }),
    route({
      method: "GET", path: "/api/v1/collections/:id/members", access: "collection.read", tag: "collections",
      summary: "The devices in a collection (static members and rule matches)",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        const m = await computeMembership(s);
        const statics = new Set(await s.collections.staticMembers(c.id));
        const ids = m.members.get(c.id) ?? new Set();
        return { body: (await s.devices.list()).filter((d) => ids.has(d.id)).map((d) => ({ id: d.id, name: d.name, state: d.state, static: statics.has(d.id) })) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/collections", access: "collection.write", tag: "collections", summary: "Create a collection",
      body: z.strictObject({ name: Name, description: Description.default(""), rule: z.string().max(4096).nullable().default(null) }),
      handler: async (ctx) => {
        requireUnscoped(principal(ctx), "creating a collection");
        const rule = canonicalRule(ctx.body.rule) ?? null;
        const s = stores(site.db);
        if (await s.collections.byName(ctx.body.name)) throw new SlipwayError("CONFLICT", `Cannot create collection "${ctx.body.name}": the name is taken`);
        const c = await site.db.transaction(async (tx) => {
          const r = await stores(tx).collections.create({ name: ctx.body.name, description: ctx.body.description, rule }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "collection.create", object: `collection:${r.id}`, details: { name: r.name, rule } }, tx);
          return r;
        });
        return { status: 201, body: view(c, (await computeMembership(s)).members) };
      },
    }),
    route({
      method: "PATCH", path: "/api/v1/collections/:id", access: "collection.write", tag: "collections", summary: "Rename a collection or change its rule",
      body: z.strictObject({ name: Name.optional(), description: Description.optional(), rule: z.string().max(4096).nullable().optional() }),
      handler: async (ctx) => {
        const c = await load(ctx);
        const rule = canonicalRule(ctx.body.rule);
        // A rule is evaluated against every device, including those created later, so a rule a
        // scoped administrator wrote could pull devices into its scope at any time. Scoped
        // administrators may only remove a rule (which can only shrink the collection) or send
        // the current one back unchanged; anything else needs an administrator without scopes.
        if (principal(ctx).scopes !== null && rule !== undefined && rule !== null && !sameRule(rule, c.rule)) {
          throw new SlipwayError("OUT_OF_SCOPE", `Not allowed: cannot change the rule of collection "${c.name}": a rule can match devices outside your security scopes, now or when they are created; only an administrator without security scopes sets rules (you may remove it)`);
        }
        const s = stores(site.db);
        if (ctx.body.name && ctx.body.name !== c.name && (await s.collections.byName(ctx.body.name))) throw new SlipwayError("CONFLICT", `Cannot rename to "${ctx.body.name}": the name is taken`);
        await site.db.transaction(async (tx) => {
          await stores(tx).collections.update(c.id, { ...ctx.body, rule }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "collection.update", object: `collection:${c.id}`, details: { changed: Object.keys(ctx.body), rule } }, tx);
        });
        return { body: view((await s.collections.byId(c.id))!, (await computeMembership(s)).members) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/collections/:id", access: "collection.write", tag: "collections", summary: "Delete a collection no deployment targets",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        if ((await s.deployments.list({ collectionId: c.id })).length) throw new SlipwayError("IN_USE", `Cannot delete collection "${c.name}": deployments target it`);
        await site.db.transaction(async (tx) => {
          const t = stores(tx);
          await t.variables.deleteScope("collection", c.id);
          await t.collections.delete(c.id);
          await site.audit.append({ actor: actor(ctx), action: "collection.delete", object: `collection:${c.id}`, details: { name: c.name } }, tx);
        });
        return {};
      },
    }),
    route({
      method: "POST", path: "/api/v1/collections/:id/members", access: "collection.write", tag: "collections", summary: "Add a device as a static member",
      body: z.strictObject({ device: z.string().min(1).max(200) }),
      handler: async (ctx) => {
        const c = await load(ctx);
        const p = principal(ctx);
        const s = stores(site.db);
        const d = (await s.devices.byId(ctx.body.device)) ?? (await s.devices.byName(ctx.body.device));
        // A scoped administrator adds only devices it can already see: one outside its scope would
        // otherwise come into it. The answer is the same whether the device exists or not, so it
        // tells nothing about devices outside the scope.
        if (p.scopes !== null && (!d || !(await deviceVisible(s, p, d)))) {
          throw new SlipwayError("OUT_OF_SCOPE", `Not allowed: cannot add device "${ctx.body.device}" to collection "${c.name}": it is not a device in your security scopes`);
        }
        if (!d) throw notFound("device", ctx.body.device);
        await site.db.transaction(async (tx) => {
          await stores(tx).collections.addMember(c.id, d.id);
          await site.audit.append({ actor: actor(ctx), action: "collection.member.add", object: `collection:${c.id}`, details: { device: d.id } }, tx);
        });
        return { status: 201, body: { collection: c.id, device: d.id } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/collections/:id/members/:device", access: "collection.write", tag: "collections", summary: "Remove a static member",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        const d = (await s.devices.byId(ctx.params.device)) ?? (await s.devices.byName(ctx.params.device));
        // Out of scope reads as missing, so the answer says nothing about devices outside the scope.
        if (!d || !(await deviceVisible(s, principal(ctx), d))) throw notFound("device", ctx.params.device);
        const n = await site.db.transaction(async (tx) => {
          const k = await stores(tx).collections.removeMember(c.id, d.id);
          if (k) await site.audit.append({ actor: actor(ctx), action: "collection.member.remove", object: `collection:${c.id}`, details: { device: d.id } }, tx);
          return k;
        });
        if (!n) throw new SlipwayError("NOT_FOUND", `Device "${d.name}" is not a static member of "${c.name}"`);
        return {};
      },
    }),
  ];
}
