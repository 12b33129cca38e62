/** Collections: static members and a membership rule over device attributes. */
import { z } from "zod";
import type { Route } from "../http.ts";
import type { Site } from "../site.ts";
import { stores } from "../../../storage/stores.ts";
import type { Collection } from "../../../storage/collection-store.ts";
import { ExpressionError, formatExpression, parseExpression } from "../../../domain/expression.ts";
import { SlipwayError } from "../../../errors.ts";
import { collectionInScope, computeMembership, requireCollectionScope, requireUnscoped } from "../membership.ts";
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
    {
      method: "GET", path: "/api/v1/collections", access: "collection.read", tag: "collections", summary: "List collections with member counts",
      handler: async (ctx) => {
        const m = await computeMembership(stores(site.db));
        return { body: m.collections.filter((c) => collectionInScope(principal(ctx), c.id)).map((c) => view(c, m.members)) };
      },
    },
    {
      method: "GET", path: "/api/v1/collections/:id", access: "collection.read", tag: "collections", summary: "One collection (by id or name)",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        return { body: view(c, (await computeMembership(s)).members, await s.collections.staticMembers(c.id)) };
      },
    },
    {
      method: "GET", path: "/api/v1/collections/:id/members", access: "collection.read", tag: "collections",
      summary: "The devices in a collection (static members and rule matches)",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        const m = await computeMembership(s);
        const statics = new Set(await s.collections.staticMembers(c.id));
        const ids = m.members.get(c.id) ?? new Set();
        return { body: m.devices.filter((d) => ids.has(d.id)).map((d) => ({ id: d.id, name: d.name, state: d.state, static: statics.has(d.id) })) };
      },
    },
    {
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
    },
    {
      method: "PATCH", path: "/api/v1/collections/:id", access: "collection.write", tag: "collections", summary: "Rename a collection or change its rule",
      body: z.strictObject({ name: Name.optional(), description: Description.optional(), rule: z.string().max(4096).nullable().optional() }),
      handler: async (ctx) => {
        const c = await load(ctx);
        const rule = canonicalRule(ctx.body.rule);
        const s = stores(site.db);
        if (ctx.body.name && ctx.body.name !== c.name && (await s.collections.byName(ctx.body.name))) throw new SlipwayError("CONFLICT", `Cannot rename to "${ctx.body.name}": the name is taken`);
        await site.db.transaction(async (tx) => {
          await stores(tx).collections.update(c.id, { ...ctx.body, rule }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "collection.update", object: `collection:${c.id}`, details: { changed: Object.keys(ctx.body), rule } }, tx);
        });
        return { body: view((await s.collections.byId(c.id))!, (await computeMembership(s)).members) };
      },
    },
    {
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
    },
    {
      method: "POST", path: "/api/v1/collections/:id/members", access: "collection.write", tag: "collections", summary: "Add a device as a static member",
      body: z.strictObject({ device: z.string().min(1).max(200) }),
      handler: async (ctx) => {
        const c = await load(ctx);
        requireCollectionScope(principal(ctx), c.id);
        const s = stores(site.db);
        const d = (await s.devices.byId(ctx.body.device)) ?? (await s.devices.byName(ctx.body.device));
        if (!d) throw notFound("device", ctx.body.device);
        await site.db.transaction(async (tx) => {
          await stores(tx).collections.addMember(c.id, d.id);
          await site.audit.append({ actor: actor(ctx), action: "collection.member.add", object: `collection:${c.id}`, details: { device: d.id } }, tx);
        });
        return { status: 201, body: { collection: c.id, device: d.id } };
      },
    },
    {
      method: "DELETE", path: "/api/v1/collections/:id/members/:device", access: "collection.write", tag: "collections", summary: "Remove a static member",
      handler: async (ctx) => {
        const c = await load(ctx);
        const s = stores(site.db);
        const d = (await s.devices.byId(ctx.params.device)) ?? (await s.devices.byName(ctx.params.device));
        if (!d) throw notFound("device", ctx.params.device);
        const n = await site.db.transaction(async (tx) => {
          const k = await stores(tx).collections.removeMember(c.id, d.id);
          if (k) await site.audit.append({ actor: actor(ctx), action: "collection.member.remove", object: `collection:${c.id}`, details: { device: d.id } }, tx);
          return k;
        });
        if (!n) throw new SlipwayError("NOT_FOUND", `Device "${d.name}" is not a static member of "${c.name}"`);
        return {};
      },
    },
  ];
}
