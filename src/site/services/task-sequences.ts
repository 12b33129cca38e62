/**
 * Task sequences. Each published version is validated (a Run As must name a secret variable
 * that exists), canonicalized, signed with the site key in an envelope that names the task
 * sequence, version, time and publisher, and never changed again; deployments pin a version.
 * Each write is one transaction with its audit entry. Input is already validated (the route's
 * zod schema); refusals are SlipwayErrors.
 */
import { createHash } from "node:crypto";
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import type { Sql } from "../../storage/db.ts";
import { stores } from "../../storage/stores.ts";
import type { TaskSequence, TaskSequenceVersion } from "../../storage/task-sequence-store.ts";
import { canonicalTaskSequence, parseTaskSequenceText, secretReferences, validateTaskSequence, type TaskSequenceDocument } from "../../domain/task-sequence/validate.ts";
import { canonicalJson } from "../../security/canonical-json.ts";
import { signValue } from "../../security/signing.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";

/** The kind of the signed envelope around a published document. */
export const SIGNED_KIND = "slipway.task-sequence/v1";

/** A document as published: YAML or JSON text, or a JSON object. */
export type Publish = { document: string | Record<string, unknown>; format?: "yaml" | "json"; description?: string };

/** The published document, validated and canonical (a Run As must name a secret that exists). */
async function checked(site: Site, b: Publish): Promise<TaskSequenceDocument> {
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

/** Signs and records the next version of `t` in `tx`, audited ts.publish. */
async function publish(site: Site, p: Principal, t: TaskSequence, doc: TaskSequenceDocument, tx: Sql): Promise<TaskSequenceVersion> {
  const version = t.latestVersion + 1;
  const now = site.now().toISOString();
  const envelope = { kind: SIGNED_KIND, taskSequenceId: t.id, name: t.name, version, publishedAt: now, publishedBy: adminActor(p), document: doc };
  const digest = "sha256:" + createHash("sha256").update(canonicalJson(envelope)).digest("hex");
  const signature = signValue(site.keys.signingKey, envelope);
  const v: TaskSequenceVersion = { taskSequenceId: t.id, version, document: envelope, digest, signature, publishedBy: adminActor(p), publishedAt: now };
  await stores(tx).taskSequences.addVersion(v, now);
  await site.audit.append({ actor: adminActor(p), action: "ts.publish", object: `task-sequence:${t.id}`, details: { name: t.name, version, digest } }, tx);
  return v;
}

/** A task sequence by id or name; NOT_FOUND otherwise. */
export async function getTaskSequence(site: Site, ref: string): Promise<TaskSequence> {
  const s = stores(site.db);
  const t = (await s.taskSequences.byId(ref)) ?? (await s.taskSequences.byName(ref));
  if (!t) throw notFound("task sequence", ref);
  return t;
}

export async function listTaskSequences(site: Site): Promise<TaskSequence[]> {
  return stores(site.db).taskSequences.list();
}

/** Checks a document without publishing it: every error with its step path, or the secrets it names. */
export async function validateDocument(site: Site, b: Publish): Promise<{ ok: true; errors: []; secrets: string[] } | { ok: false; errors: unknown }> {
  try {
    const doc = await checked(site, b);
    return { ok: true, errors: [], secrets: secretReferences(doc) };
  } catch (err) {
    if (err instanceof SlipwayError && err.code === "TASK_SEQUENCE_INVALID") return { ok: false, errors: err.details };
    throw err;
  }
}

/** Creates a task sequence from a document and publishes it as version 1; audited ts.create and ts.publish in one transaction. */
export async function createTaskSequence(site: Site, p: Principal, b: Publish): Promise<{ taskSequence: TaskSequence; version: TaskSequenceVersion }> {
  const doc = await checked(site, b);
  const s = stores(site.db);
  if (await s.taskSequences.byName(doc.name)) throw new SlipwayError("CONFLICT", `Cannot create task sequence "${doc.name}": the name is taken; publish a new version instead`);
  return site.db.transaction(async (tx) => {
    const t = await stores(tx).taskSequences.create({ name: doc.name, description: b.description ?? doc.description ?? "" }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "ts.create", object: `task-sequence:${t.id}`, details: { name: t.name } }, tx);
    const v = await publish(site, p, t, doc, tx);
    return { taskSequence: t, version: v };
  });
}

/** Publishes a new immutable version of a task sequence (id or name); the document's name must match. */
export async function publishVersion(site: Site, p: Principal, ref: string, b: Publish): Promise<TaskSequenceVersion> {
  const t = await getTaskSequence(site, ref);
  const doc = await checked(site, b);
  if (doc.name !== t.name) throw new SlipwayError("VALIDATION", `The document is named "${doc.name}", not "${t.name}"`, [{ path: "document.name", message: "must match the task sequence" }]);
  return site.db.transaction(async (tx) => {
    const fresh = (await stores(tx).taskSequences.byId(t.id))!;
    if (b.description !== undefined) await stores(tx).taskSequences.updateDescription(t.id, b.description, site.now().toISOString());
    return publish(site, p, fresh, doc, tx);
  });
}

/** The published versions of a task sequence (id or name), oldest first. */
export async function listVersions(site: Site, ref: string): Promise<TaskSequenceVersion[]> {
  const t = await getTaskSequence(site, ref);
  return stores(site.db).taskSequences.versions(t.id);
}

/** One signed version of a task sequence (id or name): `version` is a number or "latest". */
export async function getVersion(site: Site, ref: string, version: string): Promise<TaskSequenceVersion> {
  const t = await getTaskSequence(site, ref);
  const n = /^\d{1,9}$/.test(version) ? Number(version) : version === "latest" ? t.latestVersion : NaN;
  if (!Number.isInteger(n)) throw new SlipwayError("BAD_REQUEST", `Version must be a number or "latest", not "${version}"`);
  const v = await stores(site.db).taskSequences.version(t.id, n);
  if (!v) throw notFound(`version of "${t.name}"`, String(n));
  return v;
}

/** Deletes a task sequence no deployment uses, audited ts.delete. */
export async function deleteTaskSequence(site: Site, p: Principal, ref: string): Promise<void> {
  const t = await getTaskSequence(site, ref);
  const s = stores(site.db);
  if ((await s.deployments.list({ taskSequenceId: t.id })).length) throw new SlipwayError("IN_USE", `Cannot delete task sequence "${t.name}": deployments use it`);
  await site.db.transaction(async (tx) => {
    await stores(tx).taskSequences.delete(t.id);
    await site.audit.append({ actor: adminActor(p), action: "ts.delete", object: `task-sequence:${t.id}`, details: { name: t.name } }, tx);
  });
}
