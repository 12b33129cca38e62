/**
 * Task sequences. Each published version is validated, canonicalized, signed with the
 * site key and never changed again; deployments pin a version.
 */
import { z } from "zod";
import { createHash } from "node:crypto";
import { route, type Route, type RequestContext } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import type { TaskSequence, TaskSequenceVersion } from "../../../storage/task-sequence-store.ts";
import { canonicalTaskSequence, parseTaskSequenceText, secretReferences, validateTaskSequence, type TaskSequenceDocument } from "../../../domain/task-sequence/validate.ts";
import { taskSequenceJsonSchema } from "../../../domain/task-sequence/schema.ts";
import { canonicalJson } from "../../../security/canonical-json.ts";
import { signValue } from "../../../security/signing.ts";
import { SlipwayError } from "../../../errors.ts";
import { actor, Description, notFound } from "./common.ts";

export const SIGNED_KIND = "slipway.task-sequence/v1";

const Publish = z.strictObject({
  document: z.union([z.string().max(1024 * 1024), z.record(z.string(), z.unknown())]),
  format: z.enum(["yaml", "json"]).optional(),
  description: Description.optional(),
});

const tsView = (t: TaskSequence) => t;
const versionView = (v: TaskSequenceVersion) => ({ ...(v.document as object), digest: v.digest, signature: v.signature });

export function taskSequenceRoutes(site: Site): Route[] {
  /** The published document, validated and canonical (a Run As must name a secret that exists). */
  async function checked(b: z.output<typeof Publish>): Promise<TaskSequenceDocument> {
    const r = typeof b.document === "string" ? parseTaskSequenceText(b.document, b.format) : validateTaskSequence(b.document);
    if (!r.ok) {
      throw new SlipwayError("TASK_SEQUENCE_INVALID", `The task sequence document has ${r.errors.length} error${r.errors.length === 1 ? "" : "s"}`, r.errors);
    }
    // A Run As reference must name a secret; naming a plain variable would put a credential in the clear.
    const problems = [];
    for (const name of secretReferences(r.document)) {
      const kind = await stores(site.db).variables.kindOf(name);
      if (!kind.secret) {
        problems.push({ path: "runAs.secret", pointer: "", message: kind.exists
          ? `"${name}" is a plain variable; Run As credentials must be secret variables`
          : `no secret variable named "${name}" exists at any scope` });
      }
    }
    if (problems.length) throw new SlipwayError("TASK_SEQUENCE_INVALID", "The task sequence references secrets that do not exist", problems);
    return canonicalTaskSequence(r.document);
  }

  async function publish(ctx: RequestContext, t: TaskSequence, doc: TaskSequenceDocument, tx: Parameters<Parameters<Site["db"]["transaction"]>[0]>[0]) {
    const version = t.latestVersion + 1;
    const now = site.now().toISOString();
    const envelope = { kind: SIGNED_KIND, taskSequenceId: t.id, name: t.name, version, publishedAt: now, publishedBy: actor(ctx), document: doc };
    const digest = "sha256:" + createHash("sha256").update(canonicalJson(envelope)).digest("hex");
    const signature = signValue(site.keys.signingKey, envelope);
    const v: TaskSequenceVersion = { taskSequenceId: t.id, version, document: envelope, digest, signature, publishedBy: actor(ctx), publishedAt: now };
    await stores(tx).taskSequences.addVersion(v, now);
    await site.audit.append({ actor: actor(ctx), action: "ts.publish", object: `task-sequence:${t.id}`, details: { name: t.name, version, digest } }, tx);
    return v;
  }

  async function load(id: string) {
    const s = stores(site.db);
    const t = (await s.taskSequences.byId(id)) ?? (await s.taskSequences.byName(id));
    if (!t) throw notFound("task sequence", id);
    return t;
  }

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
      handler: async (ctx) => {
        try {
          const doc = await checked(ctx.body);
          return { body: { ok: true, errors: [], secrets: secretReferences(doc) } };
        } catch (err) {
          if (err instanceof SlipwayError && err.code === "TASK_SEQUENCE_INVALID") return { body: { ok: false, errors: err.details } };
          throw err;
        }
      },
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences", access: "ts.read", tag: "task-sequences", summary: "List task sequences",
      handler: async () => ({ body: (await stores(site.db).taskSequences.list()).map(tsView) }),
    }),
    route({
      method: "POST", path: "/api/v1/task-sequences", access: "ts.write", tag: "task-sequences",
      summary: "Create a task sequence from a document (YAML or JSON) and publish it as version 1",
      body: Publish,
      handler: async (ctx) => {
        const doc = await checked(ctx.body);
        const s = stores(site.db);
        if (await s.taskSequences.byName(doc.name)) throw new SlipwayError("CONFLICT", `Cannot create task sequence "${doc.name}": the name is taken; publish a new version instead`);
        const out = await site.db.transaction(async (tx) => {
          const t = await stores(tx).taskSequences.create({ name: doc.name, description: ctx.body.description ?? doc.description ?? "" }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "ts.create", object: `task-sequence:${t.id}`, details: { name: t.name } }, tx);
          const v = await publish(ctx, t, doc, tx);
          return { t, v };
        });
        return { status: 201, body: { ...out.t, latestVersion: 1, version: versionView(out.v) } };
      },
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences/:id", access: "ts.read", tag: "task-sequences", summary: "One task sequence (by id or name)",
      handler: async (ctx) => ({ body: tsView(await load(ctx.params.id)) }),
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences/:id/versions", access: "ts.read", tag: "task-sequences", summary: "Its published versions",
      handler: async (ctx) => {
        const t = await load(ctx.params.id);
        return { body: (await stores(site.db).taskSequences.versions(t.id)).map((v) => ({ version: v.version, digest: v.digest, publishedBy: v.publishedBy, publishedAt: v.publishedAt })) };
      },
    }),
    route({
      method: "GET", path: "/api/v1/task-sequences/:id/versions/:version", access: "ts.read", tag: "task-sequences",
      summary: "A signed version: the envelope, its digest and the site's Ed25519 signature",
      handler: async (ctx) => {
        const t = await load(ctx.params.id);
        const n = /^\d{1,9}$/.test(ctx.params.version) ? Number(ctx.params.version) : ctx.params.version === "latest" ? t.latestVersion : NaN;
        if (!Number.isInteger(n)) throw new SlipwayError("BAD_REQUEST", `Version must be a number or "latest", not "${ctx.params.version}"`);
        const v = await stores(site.db).taskSequences.version(t.id, n);
        if (!v) throw notFound(`version of "${t.name}"`, String(n));
        return { body: versionView(v) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/task-sequences/:id/versions", access: "ts.write", tag: "task-sequences",
      summary: "Publish a new immutable version; the document's name must match",
      body: Publish,
      handler: async (ctx) => {
        const t = await load(ctx.params.id);
        const doc = await checked(ctx.body);
        if (doc.name !== t.name) throw new SlipwayError("VALIDATION", `The document is named "${doc.name}", not "${t.name}"`, [{ path: "document.name", message: "must match the task sequence" }]);
        const v = await site.db.transaction(async (tx) => {
          const fresh = (await stores(tx).taskSequences.byId(t.id))!;
          if (ctx.body.description !== undefined) await stores(tx).taskSequences.updateDescription(t.id, ctx.body.description, site.now().toISOString());
          return publish(ctx, fresh, doc, tx);
        });
        return { status: 201, body: versionView(v) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/task-sequences/:id", access: "ts.write", tag: "task-sequences", summary: "Delete a task sequence no deployment uses",
      handler: async (ctx) => {
        const t = await load(ctx.params.id);
        const s = stores(site.db);
        if ((await s.deployments.list({ taskSequenceId: t.id })).length) throw new SlipwayError("IN_USE", `Cannot delete task sequence "${t.name}": deployments use it`);
        await site.db.transaction(async (tx) => {
          await stores(tx).taskSequences.delete(t.id);
          await site.audit.append({ actor: actor(ctx), action: "ts.delete", object: `task-sequence:${t.id}`, details: { name: t.name } }, tx);
        });
        return {};
      },
    }),
  ];
}
