/** Deployments: a pinned task sequence version targeted at a collection. */
import { z } from "zod";
import { route, type Route, type RequestContext } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import { SlipwayError } from "../../../errors.ts";
import { collectionInScope, deviceVisible, requireCollectionScope } from "../../../site/membership.ts";
import { actor, IsoTime, Name, notFound, principal } from "./common.ts";
import { secretReferences, type TaskSequenceDocument } from "../../../domain/task-sequence/validate.ts";
import { ASSURANCE_LEVELS } from "../../../domain/assurance.ts";

const BootPaths = z.array(z.enum(["pxe", "media"])).min(1).max(2).transform((a) => [...new Set(a)]);
// tpm is reserved: no enrollment can reach it yet, so a deployment requiring it could never run.
const MinimumAssurance = z.enum(ASSURANCE_LEVELS);

export function deploymentRoutes(site: Site): Route[] {
  async function resolve(ctx: RequestContext, tsRef: string | undefined, version: number | "latest" | undefined, collRef: string | undefined) {
    const s = stores(site.db);
    const out: { taskSequenceId?: string; taskSequenceVersion?: number; collectionId?: string } = {};
    if (tsRef !== undefined) {
      const t = (await s.taskSequences.byId(tsRef)) ?? (await s.taskSequences.byName(tsRef));
      if (!t) throw new SlipwayError("VALIDATION", `Cannot deploy task sequence "${tsRef}": it does not exist`, [{ path: "taskSequence", message: "unknown" }]);
      out.taskSequenceId = t.id;
      out.taskSequenceVersion = version === undefined || version === "latest" ? t.latestVersion : version;
    }
    if (out.taskSequenceId && out.taskSequenceVersion !== undefined && !(await s.taskSequences.version(out.taskSequenceId, out.taskSequenceVersion))) {
      throw new SlipwayError("VALIDATION", `Task sequence version ${out.taskSequenceVersion} does not exist`, [{ path: "version", message: "unknown version" }]);
    }
    if (collRef !== undefined) {
      const c = (await s.collections.byId(collRef)) ?? (await s.collections.byName(collRef));
      if (!c || !collectionInScope(principal(ctx), c.id)) throw new SlipwayError("VALIDATION", `Cannot target collection "${collRef}": it does not exist`, [{ path: "collection", message: "unknown" }]);
      out.collectionId = c.id;
    }
    return out;
  }
  const windowOk = (from: string | null | undefined, until: string | null | undefined) => {
    if (from && until && Date.parse(from) >= Date.parse(until)) {
      throw new SlipwayError("VALIDATION", "The deployment window ends before it starts", [{ path: "availableUntil", message: "must be after availableFrom" }]);
    }
  };
  async function load(ctx: RequestContext<unknown, unknown, { id: string }>) {
    const d = await stores(site.db).deployments.byId(ctx.params.id);
    if (!d || !collectionInScope(principal(ctx), d.collectionId)) throw notFound("deployment", ctx.params.id);
    return d;
  }
  const Version = z.union([z.int().min(1), z.literal("latest")]);
  /**
   * A deployment may be opened to sniffable enrollments (a boot token alone, which anyone on the
   * link can obtain) only if its pinned task sequence version references no secret.
   */
  async function sniffableAllowed(taskSequenceId: string, version: number, minimum: string | null, allowSniffable: boolean) {
    if (minimum !== "sniffable" && !allowSniffable) return;
    const v = await stores(site.db).taskSequences.version(taskSequenceId, version);
    const refs = v ? secretReferences((v.document as { document: TaskSequenceDocument }).document) : [];
    if (refs.length) {
      throw new SlipwayError("VALIDATION", `Cannot open the deployment to sniffable enrollments: task sequence version ${version} uses secrets (${refs.join(", ")}), which are never released to a sniffable enrollment`,
        [{ path: allowSniffable ? "allowSniffableEnrollment" : "minimumAssurance", message: "the task sequence version uses secrets" }]);
    }
  }

  return [
    route({
      method: "GET", path: "/api/v1/deployments", access: "deployment.read", tag: "deployments", summary: "List deployments",
      handler: async (ctx) => ({ body: (await stores(site.db).deployments.list()).filter((d) => collectionInScope(principal(ctx), d.collectionId)) }),
    }),
    route({
      method: "GET", path: "/api/v1/deployments/:id", access: "deployment.read", tag: "deployments", summary: "One deployment",
      handler: async (ctx) => ({ body: await load(ctx) }),
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
      handler: async (ctx) => {
        const b = ctx.body;
        const r = await resolve(ctx, b.taskSequence, b.version, b.collection);
        requireCollectionScope(principal(ctx), r.collectionId!);
        windowOk(b.availableFrom, b.availableUntil);
        await sniffableAllowed(r.taskSequenceId!, r.taskSequenceVersion!, b.minimumAssurance, b.allowSniffableEnrollment);
        const s = stores(site.db);
        if ((await s.deployments.list()).some((d) => d.name === b.name)) throw new SlipwayError("CONFLICT", `Cannot create deployment "${b.name}": the name is taken`);
        const d = await site.db.transaction(async (tx) => {
          const dep = await stores(tx).deployments.create({
            name: b.name, taskSequenceId: r.taskSequenceId!, taskSequenceVersion: r.taskSequenceVersion!, collectionId: r.collectionId!,
            purpose: b.purpose, bootPaths: b.bootPaths, availableFrom: b.availableFrom, availableUntil: b.availableUntil, enabled: b.enabled,
            minimumAssurance: b.minimumAssurance, allowSniffableEnrollment: b.allowSniffableEnrollment,
          }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "deployment.create", object: `deployment:${dep.id}`,
            details: { name: dep.name, taskSequence: dep.taskSequenceId, version: dep.taskSequenceVersion, collection: dep.collectionId, purpose: dep.purpose,
              minimumAssurance: dep.minimumAssurance, allowSniffableEnrollment: dep.allowSniffableEnrollment } }, tx);
          return dep;
        });
        return { status: 201, body: d };
      },
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
      handler: async (ctx) => {
        const d = await load(ctx);
        const b = ctx.body;
        const tsId = b.version !== undefined ? d.taskSequenceId : undefined;
        const r = await resolve(ctx, tsId, b.version, b.collection);
        if (r.collectionId) requireCollectionScope(principal(ctx), r.collectionId);
        // Checked against what the deployment will be: a new version with secrets cannot keep a sniffable opt-in.
        await sniffableAllowed(d.taskSequenceId, r.taskSequenceVersion ?? d.taskSequenceVersion,
          b.minimumAssurance === undefined ? d.minimumAssurance : b.minimumAssurance, b.allowSniffableEnrollment ?? d.allowSniffableEnrollment);
        windowOk(b.availableFrom === undefined ? d.availableFrom : b.availableFrom, b.availableUntil === undefined ? d.availableUntil : b.availableUntil);
        const s = stores(site.db);
        if (b.name && b.name !== d.name && (await s.deployments.list()).some((x) => x.name === b.name)) throw new SlipwayError("CONFLICT", `Cannot rename to "${b.name}": the name is taken`);
        const u = await site.db.transaction(async (tx) => {
          const dep = await stores(tx).deployments.update(d.id, {
            name: b.name, purpose: b.purpose, bootPaths: b.bootPaths, availableFrom: b.availableFrom, availableUntil: b.availableUntil,
            enabled: b.enabled, minimumAssurance: b.minimumAssurance, allowSniffableEnrollment: b.allowSniffableEnrollment,
            ...(r.taskSequenceVersion ? { taskSequenceVersion: r.taskSequenceVersion } : {}),
            ...(r.collectionId ? { collectionId: r.collectionId } : {}),
          }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "deployment.update", object: `deployment:${d.id}`,
            details: { changed: Object.keys(b), ...(b.minimumAssurance !== undefined ? { minimumAssurance: b.minimumAssurance } : {}),
              ...(b.allowSniffableEnrollment !== undefined ? { allowSniffableEnrollment: b.allowSniffableEnrollment } : {}) } }, tx);
          return dep!;
        });
        return { body: u };
      },
    }),
    route({
      method: "POST", path: "/api/v1/deployments/:id/rerun", access: "deployment.write", tag: "deployments",
      summary: "Let a device run a required deployment it already finished once more (its next boot deploys again)",
      body: z.strictObject({ device: z.string().min(1).max(200) }),
      handler: async (ctx) => {
        const d = await load(ctx);
        const s = stores(site.db);
        const dev = (await s.devices.byId(ctx.body.device)) ?? (await s.devices.byName(ctx.body.device));
        if (!dev || !(await deviceVisible(s, principal(ctx), dev))) throw notFound("device", ctx.body.device);
        const marked = await site.db.transaction(async (tx) => {
          const n = await stores(tx).runs.allowRerun(dev.id, d.id, site.now().toISOString());
          if (n > 0) await site.audit.append({ actor: actor(ctx), action: "deployment.rerun", object: `deployment:${d.id}`, details: { device: dev.id, runs: n } }, tx);
          return n;
        });
        if (marked === 0) throw new SlipwayError("CONFLICT", `Cannot allow a rerun of "${d.name}" on "${dev.name}": it has not succeeded there (nothing to rerun)`);
        return { body: { deployment: d.id, device: dev.id, runs: marked } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/deployments/:id", access: "deployment.write", tag: "deployments", summary: "Delete a deployment",
      handler: async (ctx) => {
        const d = await load(ctx);
        await site.db.transaction(async (tx) => {
          await stores(tx).deployments.delete(d.id);
          await site.audit.append({ actor: actor(ctx), action: "deployment.delete", object: `deployment:${d.id}`, details: { name: d.name } }, tx);
        });
        return {};
      },
    }),
  ];
}
