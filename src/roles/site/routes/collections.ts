/**
 * Collections: static members and a membership rule over device attributes. The rules and
 * transactions are in the collections service (src/site/services/collections.ts); these
 * handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { addStaticMember, collectionMembers, createCollection, deleteCollection, getCollection, listCollections, removeStaticMember, updateCollection } from "../../../site/services/collections.ts";
import { Description, Name, principal } from "./common.ts";

export function collectionRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/collections", access: "collection.read", tag: "collections", summary: "List collections with member counts",
      handler: async (ctx) => ({ body: await listCollections(site, principal(ctx)) }),
    }),
    route({
      method: "GET", path: "/api/v1/collections/:id", access: "collection.read", tag: "collections", summary: "One collection (by id or name)",
      handler: async (ctx) => ({ body: await getCollection(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "GET", path: "/api/v1/collections/:id/members", access: "collection.read", tag: "collections",
      summary: "The devices in a collection (static members and rule matches)",
      handler: async (ctx) => ({ body: await collectionMembers(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/collections", access: "collection.write", tag: "collections", summary: "Create a collection",
      body: z.strictObject({ name: Name, description: Description.default(""), rule: z.string().max(4096).nullable().default(null) }),
      handler: async (ctx) => ({ status: 201, body: await createCollection(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "PATCH", path: "/api/v1/collections/:id", access: "collection.write", tag: "collections", summary: "Rename a collection or change its rule",
      body: z.strictObject({ name: Name.optional(), description: Description.optional(), rule: z.string().max(4096).nullable().optional() }),
      handler: async (ctx) => ({ body: await updateCollection(site, principal(ctx), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/collections/:id", access: "collection.write", tag: "collections", summary: "Delete a collection no deployment targets",
      handler: async (ctx) => {
        await deleteCollection(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
    route({
      method: "POST", path: "/api/v1/collections/:id/members", access: "collection.write", tag: "collections", summary: "Add a device as a static member",
      body: z.strictObject({ device: z.string().min(1).max(200) }),
      handler: async (ctx) => ({ status: 201, body: await addStaticMember(site, principal(ctx), ctx.params.id, ctx.body.device) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/collections/:id/members/:device", access: "collection.write", tag: "collections", summary: "Remove a static member",
      handler: async (ctx) => {
        await removeStaticMember(site, principal(ctx), ctx.params.id, ctx.params.device);
        return {};
      },
    }),
  ];
}
