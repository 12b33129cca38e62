/**
 * The management point's user-state routes, for a device in a run (mutual TLS): the data key
 * for the running capture or restore step, and the built-in state store's chunks. The rules
 * are in src/site/services/user-state.ts; chunks are sealed on the machine, so this server only
 * ever sees ciphertext.
 */
import { z } from "zod";
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import { completeCapture, confirmRestore, grantUserState, putStateChunk, readStateChunk } from "../../site/services/user-state.ts";
import { stateStoreOf, MAX_SEALED_CHUNK_BYTES } from "../../site/state-store.ts";
import { MAX_CHUNK_INDEX } from "../../security/state-cipher.ts";
import { me, mpRoute, type MpRoute } from "./routes.ts";

/** Association ids are the site's lowercase UUIDs; anything else is refused before it reaches a store or the audit log. */
const ASSOCIATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const associationId = (s: string): string => {
  if (!ASSOCIATION_ID.test(s)) throw new SlipwayError("VALIDATION", "The association id must be a lowercase UUID");
  return s;
};
const parseIndex = (s: string): number => {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(s) || Number(s) > MAX_CHUNK_INDEX) {
    throw new SlipwayError("VALIDATION", `Cannot use chunk index "${s.slice(0, 20)}": it must be a whole number from 0 to ${MAX_CHUNK_INDEX} without leading zeros`);
  }
  return Number(s);
};

export function userStateRoutes(site: Site): MpRoute[] {
  const store = stateStoreOf(site);
  return [
    mpRoute({
      method: "POST", path: "/mp/v1/runs/:id/user-state", access: "device", tag: "user-state",
      summary: "Release an association's data key to the running capture-user-state or restore-user-state step",
      body: z.strictObject({
        step: z.string().min(1).max(100), action: z.enum(["capture", "restore"]),
        estimateBytes: z.int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
      }),
      handler: async (ctx) => {
        const run = await stores(site.db).runs.byId(ctx.params.id);
        if (!run) throw new SlipwayError("NOT_FOUND", `Cannot find run "${ctx.params.id}"`);
        return { body: await grantUserState(site, store, me(ctx), run, ctx.body) };
      },
    }),
    mpRoute({
      method: "PUT", path: "/mp/v1/user-state/:association/chunks/:index", access: "device", tag: "user-state",
      summary: "Store one sealed chunk of the capture under way (durable when answered)",
      bytes: { maxBytes: MAX_SEALED_CHUNK_BYTES },
      handler: async (ctx) => ({ status: 201, body: await putStateChunk(site, store, me(ctx), associationId(ctx.params.association), parseIndex(ctx.params.index), ctx.bytes ?? Buffer.alloc(0)) }),
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/user-state/:association/captured", access: "device", tag: "user-state",
      summary: "End the capture: every chunk up to the final one is stored",
      body: z.strictObject({ files: z.int().min(0).max(Number.MAX_SAFE_INTEGER), stateBytes: z.int().min(0).max(Number.MAX_SAFE_INTEGER) }),
      handler: async (ctx) => ({ body: await completeCapture(site, store, me(ctx), associationId(ctx.params.association), ctx.body) }),
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/user-state/:association/chunks/:index", access: "device", tag: "user-state",
      summary: "One sealed chunk, for the restore under way",
      handler: async (ctx) => {
        const bytes = await readStateChunk(site, store, me(ctx), associationId(ctx.params.association), parseIndex(ctx.params.index));
        return { body: undefined, send: async (out) => void out.write(bytes), headers: { "content-type": "application/octet-stream", "content-length": String(bytes.length) } };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/user-state/:association/restored", access: "device", tag: "user-state",
      summary: "The restore is verified: the association's \"delete after\" clock starts",
      body: z.strictObject({ files: z.int().min(0).max(Number.MAX_SAFE_INTEGER), notRestored: z.int().min(0).max(Number.MAX_SAFE_INTEGER) }),
      handler: async (ctx) => ({ body: await confirmRestore(site, me(ctx), associationId(ctx.params.association), ctx.body) }),
    }),
  ];
}
