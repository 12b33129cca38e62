/**
 * Computer associations: whose user state goes where (src/site/services/associations.ts holds
 * the rules). Creating and deleting need association.write; the state itself is never shown
 * here (recovering it outside a run is recovery.read's, audited with a reason).
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { associationStates } from "../../../domain/association.ts";
import { MAX_QUOTA_BYTES } from "../../../domain/association.ts";
import { createAssociation, deleteAssociation, getAssociation, listAssociations, recoverAssociation, recoveryChunk, setAssociationRetention } from "../../../site/services/associations.ts";
import { stateChunksOf, stateStoreOf } from "../../../site/state-store.ts";
import { SlipwayError } from "../../../errors.ts";
import { Id, principal } from "./common.ts";
import { nameProblem } from "../../../domain/name.ts";

const DeleteAfterHours = z.number().positive().max(365 * 24);

/**
 * Why a Recovery Agent reads someone's files, kept in the audit log: readable text — no control,
 * invisible or direction-changing characters (domain/name.ts) — with at least 10 letters or digits.
 */
const Reason = z.string().max(1000)
  .superRefine((s, c) => {
    const problem = nameProblem(s);
    if (problem) c.addIssue({ code: "custom", message: problem });
    else if ((s.match(/[\p{L}\p{N}]/gu) ?? []).length < 10) c.addIssue({ code: "custom", message: "say why, in at least 10 letters or digits" });
  })
  .transform((s) => s.trim());

export function associationRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/associations", access: "association.read", tag: "associations",
      summary: "List computer associations (optionally of one device, or in one state)",
      query: z.strictObject({ device: Id.optional(), state: z.enum(associationStates).optional() }),
      handler: async (ctx) => ({ body: await listAssociations(site, principal(ctx), ctx.query) }),
    }),
    route({
      method: "GET", path: "/api/v1/associations/:id", access: "association.read", tag: "associations", summary: "One computer association",
      handler: async (ctx) => ({ body: await getAssociation(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/associations", access: "association.write", tag: "associations",
      summary: "Create a computer association: inPlace (refresh) or source and destination (replace)",
      body: z.strictObject({
        inPlace: Id.optional(), source: Id.optional(), destination: Id.optional(),
        deleteAfterHours: DeleteAfterHours.optional(),
        quotaBytes: z.int().min(1024 * 1024).max(MAX_QUOTA_BYTES).optional(),
      }),
      handler: async (ctx) => ({ status: 201, body: await createAssociation(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "PATCH", path: "/api/v1/associations/:id", access: "association.write", tag: "associations",
      summary: "Change how long the user state is kept after its restore",
      body: z.strictObject({ deleteAfterHours: DeleteAfterHours }),
      handler: async (ctx) => ({ body: await setAssociationRetention(site, principal(ctx), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "POST", path: "/api/v1/associations/:id/recover", access: "recovery.read", tag: "associations",
      summary: "Release an association's data key to a Recovery Agent, with a mandatory reason (audited)",
      body: z.strictObject({ reason: Reason }),
      handler: async (ctx) => ({ body: await recoverAssociation(site, principal(ctx), stateChunksOf(site), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "GET", path: "/api/v1/associations/:id/chunks/:index", access: "recovery.read", tag: "associations",
      summary: "One sealed chunk of an association's state, for a Recovery Agent",
      handler: async (ctx) => {
        if (!/^(0|[1-9][0-9]{0,8})$/.test(ctx.params.index)) throw new SlipwayError("VALIDATION", "The chunk index must be a whole number without leading zeros");
        const bytes = await recoveryChunk(site, principal(ctx), stateStoreOf(site), ctx.params.id, Number(ctx.params.index));
        return { send: async (out) => void out.write(bytes), headers: { "content-type": "application/octet-stream", "content-length": String(bytes.length) } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/associations/:id", access: "association.write", tag: "associations",
      summary: "Delete an association: its key is destroyed first, then its stored state",
      handler: async (ctx) => ({ body: await deleteAssociation(site, principal(ctx), stateChunksOf(site), ctx.params.id) }),
    }),
  ];
}
