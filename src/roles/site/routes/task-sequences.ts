/**
 * Task sequences. Each published version is validated, canonicalized, signed with the
 * site key and never changed again; deployments pin a version. The rules, signing and
 * transactions are in the task sequences service (src/site/services/task-sequences.ts);
 * these handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import type { TaskSequenceVersion } from "../../../storage/task-sequence-store.ts";
import { taskSequenceJsonSchema } from "../../../domain/task-sequence/schema.ts";
import { createTaskSequence, deleteTaskSequence, getTaskSequence, getVersion, listTaskSequences, listVersions, publishVersion, validateDocument } from "../../../site/services/task-sequences.ts";
import { Description, principal } from "./common.ts";

const Publish = z.strictObject({
  document: z.union([z.string().max(1024 * 1024), z.record(z.string(), z.unknown())]),
  format: z.enum(["yaml", "json"]).optional(),
  description: Description.optional(),
});

const versionView = (v: TaskSequenceVersion) => ({ ...(v.document as object), digest: v.digest, signature: v.signature });

export function taskSequenceRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/schemas/task-sequence.json", access: "public", tag: "task-sequences",
      summary: "The JSON Schema of task sequence documents",
      handler: async () => ({ body: taskSequenceJsonSchema() }),
    }),
    route({
      method: "POST", path: "/api/v1/task-sequences/validate", access: "ts.read", tag: "task-sequences",
      summary: "Validate a document without publishing it; reports every error with its step path",
      body: Publish,
      handler: async (ctx) => ({ body: await validateDocument(site, ctx.body) }),
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences", access: "ts.read", tag: "task-sequences", summary: "List task sequences",
      handler: async () => ({ body: await listTaskSequences(site) }),
    }),
    route({
      method: "POST", path: "/api/v1/task-sequences", access: "ts.write", tag: "task-sequences",
      summary: "Create a task sequence from a document (YAML or JSON) and publish it as version 1",
      body: Publish,
      handler: async (ctx) => {
        const { taskSequence, version } = await createTaskSequence(site, principal(ctx), ctx.body);
        return { status: 201, body: { ...taskSequence, latestVersion: 1, version: versionView(version) } };
      },
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences/:id", access: "ts.read", tag: "task-sequences", summary: "One task sequence (by id or name)",
      handler: async (ctx) => ({ body: await getTaskSequence(site, ctx.params.id) }),
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences/:id/versions", access: "ts.read", tag: "task-sequences", summary: "Its published versions",
      handler: async (ctx) => ({ body: (await listVersions(site, ctx.params.id)).map((v) => ({ version: v.version, digest: v.digest, publishedBy: v.publishedBy, publishedAt: v.publishedAt })) }),
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences/:id/versions/:version", access: "ts.read", tag: "task-sequences",
      summary: "A signed version: the envelope, its digest and the site's Ed25519 signature",
      handler: async (ctx) => ({ body: versionView(await getVersion(site, ctx.params.id, ctx.params.version)) }),
    }),
    route({
      method: "POST", path: "/api/v1/task-sequences/:id/versions", access: "ts.write", tag: "task-sequences",
      summary: "Publish a new immutable version; the document's name must match",
      body: Publish,
      handler: async (ctx) => ({ status: 201, body: versionView(await publishVersion(site, principal(ctx), ctx.params.id, ctx.body)) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/task-sequences/:id", access: "ts.write", tag: "task-sequences", summary: "Delete a task sequence no deployment uses",
      handler: async (ctx) => {
        await deleteTaskSequence(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
  ];
}
