/**
 * The site's network-boot posture: gathers the facts (where PXE is served, whether a PXE
 * password is set, what each deployment accepts) for the pure rule in domain/posture.ts.
 *
 * Where PXE is served is what `slipway up --pxe-interface` announces when its responder
 * starts: one site setting per host (storage/site-settings-store.ts, so a site process on another host of the same
 * PostgreSQL database sees it too), removed when that process stops. A process killed
 * without stopping leaves its row, which errs toward showing PXE as served.
 */
import os from "node:os";
import type { Site } from "../../site/site.ts";
import type { Principal } from "./http.ts";
import { stores } from "../../storage/stores.ts";
import { handlesSecrets, type TaskSequenceDocument } from "../../domain/task-sequence/validate.ts";
import { assessPosture, postureWarnings, type Posture, type PostureLink } from "../../domain/posture.ts";
import { pxePasswordHash } from "../../site/credentials.ts";
import { collectionInScope } from "../../site/membership.ts";

const SETTING = "pxe.served:";

/** What one process announced about the PXE it serves. */
export type PxeService = { host: string; links: PostureLink[]; mode: string; unknown: string; since: string };

/** Records that this host serves PXE on `links` (replacing what it announced before). */
export async function announcePxeService(site: Site, s: { links: PostureLink[]; mode: string; unknown: string }): Promise<void> {
  const host = os.hostname();
  const value: PxeService = { host, links: s.links.map((l) => ({ name: l.name, address: l.address })), mode: s.mode, unknown: s.unknown, since: site.now().toISOString() };
  await stores(site.db).settings.set(SETTING + host, JSON.stringify(value));
}

/** Forgets this host's announcement (its PXE responder stopped). */
export async function withdrawPxeService(site: Site): Promise<void> {
  await stores(site.db).settings.delete(SETTING + os.hostname());
}

async function pxeServices(site: Site): Promise<PxeService[]> {
  const rows = await stores(site.db).settings.withPrefix(SETTING);
  const out: PxeService[] = [];
  for (const r of rows) {
    try {
      out.push(JSON.parse(r.value) as PxeService);
    } catch {
      // written only by announcePxeService; never fail a read on a damaged row
    }
  }
  return out;
}

export type SitePosture = Posture & {
  pxe: PxeService[];
  /** Listed deployments outside the caller's scopes, counted but not named. */
  outsideScopes: number;
};

/**
 * The posture as `p` may see it: the verdict and the warnings are the whole site's, the
 * deployments named only those in its scopes (the others are counted).
 */
export async function sitePosture(site: Site, p: Principal | null = null): Promise<SitePosture> {
  const s = stores(site.db);
  const pxe = await pxeServices(site);
  const deployments = [];
  const deps = await s.deployments.list();
  for (const d of deps) {
    const v = await s.taskSequences.version(d.taskSequenceId, d.taskSequenceVersion);
    const usesSecrets = v ? handlesSecrets((v.document as { document: TaskSequenceDocument }).document) : false;
    deployments.push({ id: d.id, name: d.name, enabled: d.enabled, usesSecrets, minimumAssurance: d.minimumAssurance, allowSniffableEnrollment: d.allowSniffableEnrollment });
  }
  const posture = assessPosture({
    pxeLinks: pxe.flatMap((x) => x.links),
    pxePasswordSet: (await pxePasswordHash(site)) !== null,
    enrollmentApproval: false,
    deployments,
  });
  const visible = (id: string) => !p || collectionInScope(p, deps.find((d) => d.id === id)!.collectionId);
  const hidden = posture.sniffableDeployments.filter((d) => !visible(d.id)).length;
  if (!hidden) return { ...posture, pxe, outsideScopes: 0 };
  const exposed = posture.exposed.filter((d) => visible(d.id));
  return {
    ...posture, pxe, outsideScopes: hidden, exposed,
    sniffableDeployments: posture.sniffableDeployments.filter((d) => visible(d.id)),
    // The warning names deployments: a scoped caller gets it without the names it may not see.
    warnings: postureWarnings({ ...posture, exposed }, posture.exposed.length - exposed.length),
  };
}
