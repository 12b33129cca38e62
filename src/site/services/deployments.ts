/**
 * Deployments: a pinned task sequence version targeted at a collection. Which deployments an
 * administrator sees (those on collections in their scopes), resolving the task sequence,
 * version and collection, the window, the sniffable opt-in (only for versions without
 * secrets), unique names, reruns, each write in one transaction with its audit entry. Input is
 * already validated (the route's zod schema); refusals are SlipwayErrors.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { Deployment } from "../../storage/deployment-store.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";
import { collectionInScope, deviceVisible, requireCollectionScope } from "../membership.ts";
import { secretReferences, userStateSteps, type TaskSequenceDocument } from "../../domain/task-sequence/validate.ts";
import type { Assurance } from "../../domain/assurance.ts";

type Version = number | "latest";

/** Resolves a task sequence (id or name), its version and a collection (id or name) the administrator may see. */
async function resolve(site: Site, p: Principal, tsRef: string | undefined, version: Version | undefined, collRef: string | undefined) {
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
    if (!c || !collectionInScope(p, c.id)) throw new SlipwayError("VALIDATION", `Cannot target collection "${collRef}": it does not exist`, [{ path: "collection", message: "unknown" }]);
    out.collectionId = c.id;
  }
  return out;
}

function windowOk(from: string | null | undefined, until: string | null | undefined) {
  if (from && until && Date.parse(from) >= Date.parse(until)) {
    throw new SlipwayError("VALIDATION", "The deployment window ends before it starts", [{ path: "availableUntil", message: "must be after availableFrom" }]);
  }
}

/**
 * A deployment may be opened to sniffable enrollments (a boot token alone, which anyone on the
 * link can obtain) only if its pinned task sequence version references no secret.
 */
async function sniffableAllowed(site: Site, taskSequenceId: string, version: number, minimum: string | null, allowSniffable: boolean) {
  if (minimum !== "sniffable" && !allowSniffable) return;
  const v = await stores(site.db).taskSequences.version(taskSequenceId, version);
  const doc = v ? (v.document as { document: TaskSequenceDocument }).document : undefined;
  const refs = doc ? [...secretReferences(doc), ...userStateSteps(doc).map((t) => `the ${t} step's user-state key`)] : [];
  if (refs.length) {
    throw new SlipwayError("VALIDATION", `Cannot open the deployment to sniffable enrollments: task sequence version ${version} uses secrets (${refs.join(", ")}), which are never released to a sniffable enrollment`,
      [{ path: allowSniffable ? "allowSniffableEnrollment" : "minimumAssurance", message: "the task sequence version uses secrets" }]);
  }
}

/** The deployments on collections the administrator sees. */
export async function listDeployments(site: Site, p: Principal): Promise<Deployment[]> {
  return (await stores(site.db).deployments.list()).filter((d) => collectionInScope(p, d.collectionId));
}

/** One deployment the administrator sees; NOT_FOUND otherwise. */
export async function getDeployment(site: Site, p: Principal, id: string): Promise<Deployment> {
  const d = await stores(site.db).deployments.byId(id);
  if (!d || !collectionInScope(p, d.collectionId)) throw notFound("deployment", id);
  return d;
}

export type NewDeployment = {
  name: string; taskSequence: string; version?: Version; collection: string;
  purpose: Deployment["purpose"]; bootPaths: Deployment["bootPaths"]; availableFrom: string | null; availableUntil: string | null; enabled: boolean;
  minimumAssurance: Assurance | null; allowSniffableEnrollment: boolean;
};

/** Creates a deployment (audited deployment.create). */
export async function createDeployment(site: Site, p: Principal, b: NewDeployment): Promise<Deployment> {
  const r = await resolve(site, p, b.taskSequence, b.version, b.collection);
  requireCollectionScope(p, r.collectionId!);
  windowOk(b.availableFrom, b.availableUntil);
  await sniffableAllowed(site, r.taskSequenceId!, r.taskSequenceVersion!, b.minimumAssurance, b.allowSniffableEnrollment);
  if ((await stores(site.db).deployments.list()).some((d) => d.name === b.name)) throw new SlipwayError("CONFLICT", `Cannot create deployment "${b.name}": the name is taken`);
  return site.db.transaction(async (tx) => {
    const dep = await stores(tx).deployments.create({
      name: b.name, taskSequenceId: r.taskSequenceId!, taskSequenceVersion: r.taskSequenceVersion!, collectionId: r.collectionId!,
      purpose: b.purpose, bootPaths: b.bootPaths, availableFrom: b.availableFrom, availableUntil: b.availableUntil, enabled: b.enabled,
      minimumAssurance: b.minimumAssurance, allowSniffableEnrollment: b.allowSniffableEnrollment,
    }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "deployment.create", object: `deployment:${dep.id}`,
      details: { name: dep.name, taskSequence: dep.taskSequenceId, version: dep.taskSequenceVersion, collection: dep.collectionId, purpose: dep.purpose,
        minimumAssurance: dep.minimumAssurance, allowSniffableEnrollment: dep.allowSniffableEnrollment } }, tx);
    return dep;
  });
}

export type DeploymentChange = {
  name?: string; version?: Version; collection?: string; purpose?: Deployment["purpose"]; bootPaths?: Deployment["bootPaths"];
  availableFrom?: string | null; availableUntil?: string | null; enabled?: boolean;
  minimumAssurance?: Assurance | null; allowSniffableEnrollment?: boolean;
};

/**
 * Changes a deployment the administrator sees, checked against what it will be (a new version
 * with secrets cannot keep a sniffable opt-in). Audited deployment.update with the keys given.
 */
export async function updateDeployment(site: Site, p: Principal, id: string, b: DeploymentChange): Promise<Deployment> {
  const d = await getDeployment(site, p, id);
  const tsId = b.version !== undefined ? d.taskSequenceId : undefined;
  const r = await resolve(site, p, tsId, b.version, b.collection);
  if (r.collectionId) requireCollectionScope(p, r.collectionId);
  await sniffableAllowed(site, d.taskSequenceId, r.taskSequenceVersion ?? d.taskSequenceVersion,
    b.minimumAssurance === undefined ? d.minimumAssurance : b.minimumAssurance, b.allowSniffableEnrollment ?? d.allowSniffableEnrollment);
  windowOk(b.availableFrom === undefined ? d.availableFrom : b.availableFrom, b.availableUntil === undefined ? d.availableUntil : b.availableUntil);
  if (b.name && b.name !== d.name && (await stores(site.db).deployments.list()).some((x) => x.name === b.name)) throw new SlipwayError("CONFLICT", `Cannot rename to "${b.name}": the name is taken`);
  return site.db.transaction(async (tx) => {
    const dep = await stores(tx).deployments.update(d.id, {
      name: b.name, purpose: b.purpose, bootPaths: b.bootPaths, availableFrom: b.availableFrom, availableUntil: b.availableUntil,
      enabled: b.enabled, minimumAssurance: b.minimumAssurance, allowSniffableEnrollment: b.allowSniffableEnrollment,
      ...(r.taskSequenceVersion ? { taskSequenceVersion: r.taskSequenceVersion } : {}),
      ...(r.collectionId ? { collectionId: r.collectionId } : {}),
    }, site.now().toISOString());
    await site.audit.append({ actor: adminActor(p), action: "deployment.update", object: `deployment:${d.id}`,
      details: { changed: Object.keys(b), ...(b.minimumAssurance !== undefined ? { minimumAssurance: b.minimumAssurance } : {}),
        ...(b.allowSniffableEnrollment !== undefined ? { allowSniffableEnrollment: b.allowSniffableEnrollment } : {}) } }, tx);
    return dep!;
  });
}

/**
 * Lets a device (id or name) the administrator sees run a deployment it already finished once
 * more (audited deployment.rerun); CONFLICT when it has not succeeded there.
 */
export async function allowRerun(site: Site, p: Principal, id: string, deviceRef: string): Promise<{ deployment: string; device: string; runs: number }> {
  const d = await getDeployment(site, p, id);
  const s = stores(site.db);
  const dev = (await s.devices.byId(deviceRef)) ?? (await s.devices.byName(deviceRef));
  if (!dev || !(await deviceVisible(s, p, dev))) throw notFound("device", deviceRef);
  const marked = await site.db.transaction(async (tx) => {
    const n = await stores(tx).runs.allowRerun(dev.id, d.id, site.now().toISOString());
    if (n > 0) await site.audit.append({ actor: adminActor(p), action: "deployment.rerun", object: `deployment:${d.id}`, details: { device: dev.id, runs: n } }, tx);
    return n;
  });
  if (marked === 0) throw new SlipwayError("CONFLICT", `Cannot allow a rerun of "${d.name}" on "${dev.name}": it has not succeeded there (nothing to rerun)`);
  return { deployment: d.id, device: dev.id, runs: marked };
}

/** Deletes a deployment the administrator sees (audited deployment.delete). */
export async function deleteDeployment(site: Site, p: Principal, id: string): Promise<void> {
  const d = await getDeployment(site, p, id);
  await site.db.transaction(async (tx) => {
    await stores(tx).deployments.delete(d.id);
    await site.audit.append({ actor: adminActor(p), action: "deployment.delete", object: `deployment:${d.id}`, details: { name: d.name } }, tx);
  });
}
