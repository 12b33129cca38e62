/**
 * Deployments: a pinned task sequence version targeted at a collection. The rules and
 * transactions are in the deployments service (src/site/services/deployments.ts); these
 * handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { allowRerun, createDeployment, deleteDeployment, getDeployment, listDeployments, updateDeployment } from "../../../site/services/deployments.ts";
import { IsoTime, Name, principal } from "./common.ts";
import { ASSURANCE_LEVELS } from "../../../domain/assurance.ts";

const BootPaths = z.array(z.enum(["pxe", "media"])).min(1).max(2).transform((a) => [...new Set(a)]);
// tpm is reserved: no enrollment can reach it yet, so a deployment requiring it could never run.
const MinimumAssurance = z.enum(ASSURANCE_LEVELS);

export function deploymentRoutes(site: Site): Route[] {
  const Version = z.union([z.int().min(1), z.literal("latest")]);
  return [
    route({
      method: "GET", path: "/api/v1/deployments", access: "deployment.read", tag: "deployments", summary: "List deployments",
      handler: async (ctx) => ({ body: await listDeployments(site, principal(ctx)) }),
    }),
    route({
      method: "GET", path: "/api/v1/deployments/:id", access: "deployment.read", tag: "deployments", summary: "One deployment",
      handler: async (ctx) => ({ body: await getDeployment(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/deployments", access: "deployment.write", tag: "deployments",
      summary: "Deploy a task sequence version to a collection",
      body: z.strictObject({
        name: Name, taskSequence: z.string().min(1).max(200), version: Version.optional(), collection: z.string().min(1).max(200),
        purpose: z.enum(["available", "required"]).default("available"), bootPaths: BootPaths.default(["pxe", "media"]),
        availableFrom: IsoTime.nullable().default(null), availableUntil: IsoTime.nullable().default(null), enabled: z.boolean().default(true),
        minimumAssurance: MinimumAssurance.nullable().default(null), allowSniffableEnrollment: z.boolean().default(false),
      }),
      handler: async (ctx) => ({ status: 201, body: await createDeployment(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "PATCH", path: "/api/v1/deployments/:id", access: "deployment.write", tag: "deployments",
      summary: "Change a deployment's version, target, purpose, boot paths, window or enabled state",
      body: z.strictObject({
        name: Name.optional(), version: Version.optional(), collection: z.string().min(1).max(200).optional(),
        purpose: z.enum(["available", "required"]).optional(), bootPaths: BootPaths.optional(),
        availableFrom: IsoTime.nullable().optional(), availableUntil: IsoTime.nullable().optional(), enabled: z.boolean().optional(),
        minimumAssurance: MinimumAssurance.nullable().optional(), allowSniffableEnrollment: z.boolean().optional(),
      }),
      handler: async (ctx) => ({ body: await updateDeployment(site, principal(ctx), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "POST", path: "/api/v1/deployments/:id/rerun", access: "deployment.write", tag: "deployments",
      summary: "Let a device run a required deployment it already finished once more (its next boot deploys again)",
      body: z.strictObject({ device: z.string().min(1).max(200) }),
      handler: async (ctx) => ({ body: await allowRerun(site, principal(ctx), ctx.params.id, ctx.body.device) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/deployments/:id", access: "deployment.write", tag: "deployments", summary: "Delete a deployment",
      handler: async (ctx) => {
        await deleteDeployment(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
  ];
}
