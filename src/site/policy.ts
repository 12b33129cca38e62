/** Gathers what a device's policy is compiled from, and signs the result. */
import type { Site } from "./site.ts";
import { stores } from "../storage/stores.ts";
import type { Device } from "../domain/device.ts";
import { compilePolicy, imageReferences, type Policy, type PolicyInput, type PolicyVariable } from "../domain/policy.ts";
import { isManifestDigest } from "../content/manifest.ts";
import type { ContentStore } from "../storage/content-store.ts";
import { handlesSecrets, secretReferences, type TaskSequenceDocument } from "../domain/task-sequence/validate.ts";
import { deviceCollections } from "./membership.ts";
import { publicKeyFingerprint } from "../security/signing.ts";
import { DP_SILENT_AFTER_MS } from "../domain/distribution-point.ts";
import { signPolicy, type SignedPolicy } from "../security/signed-policy.ts";
import type { VariableRecord } from "../storage/variable-store.ts";
import { effectiveMinimum, type Assurance } from "../domain/assurance.ts";

export const POLICY_TTL_SECONDS = 3600;

/**
 * What each image reference names now: a name → the newest manifest with that name, a
 * "sha256:…" digest → itself if that manifest exists; null when there is none.
 */
export async function resolveImages(content: ContentStore, references: Iterable<string>): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = Object.create(null);
  for (const ref of new Set(references)) {
    const found = isManifestDigest(ref) ? await content.byDigest(ref) : await content.latestByName(ref);
    out[ref] = found?.digest ?? null;
  }
  return out;
}

const asPolicyVars = (vs: VariableRecord[]): PolicyVariable[] => vs.map((v) => ({ name: v.name, value: v.secret ? null : v.value, secret: v.secret }));

/**
 * Every deployment targeting a collection the device is in, with what compiling needs.
 * `assurance`: the calling certificate's enrollment assurance — deployments needing more are
 * left out; undefined: all of them (an administrator's view, the boot script's decision).
 */
export async function policyInput(site: Site, device: Device, bootPath: "pxe" | "media", assurance?: Assurance): Promise<PolicyInput> {
  const s = stores(site.db);
  // O(the device's collections), not O(fleet): polled by every agent.
  const inCollections = await deviceCollections(s, device);
  const siteVars = asPolicyVars(await s.variables.list({ scope: "site" }));
  const deviceVars = asPolicyVars(await s.variables.list({ scope: "device", scopeId: device.id }));
  const deployments: PolicyInput["deployments"] = [];
  for (const collectionId of inCollections) {
    const collVars = asPolicyVars(await s.variables.list({ scope: "collection", scopeId: collectionId }));
    for (const d of await s.deployments.list({ collectionId })) {
      const v = await s.taskSequences.version(d.taskSequenceId, d.taskSequenceVersion);
      if (!v) continue;
      const envelope = v.document as { name: string; document: TaskSequenceDocument };
      const secretRefs = secretReferences(envelope.document);
      deployments.push({
        id: d.id, name: d.name, purpose: d.purpose, enabled: d.enabled, bootPaths: d.bootPaths,
        availableFrom: d.availableFrom, availableUntil: d.availableUntil,
        taskSequence: { id: d.taskSequenceId, name: envelope.name, version: v.version, digest: v.digest, document: envelope.document },
        scopes: [siteVars, collVars, deviceVars],
        secretReferences: secretRefs,
        minimumAssurance: effectiveMinimum(d, handlesSecrets(envelope.document)),
      });
    }
  }
  const imageManifests = await resolveImages(s.content, deployments.flatMap((d) => imageReferences(d.taskSequence.document)));
  const digests = Object.values(imageManifests).filter((d): d is string => d !== null);
  // A DP that stopped polling (down, cut off) is no source: agents would spend a connection
  // timeout on it before falling back.
  const seenSince = new Date(site.now().getTime() - DP_SILENT_AFTER_MS).toISOString();
  const contentSources = Object.fromEntries(await s.distributionPoints.readySources(digests, site.now().toISOString(), seenSince));
  // What a device's own certificate is given leaves out the required deployments it finished.
  const finished = assurance === undefined ? undefined
    : (await s.runs.list({ deviceId: device.id, state: "succeeded" })).filter((r) => r.rerunAllowedAt === null).map((r) => r.deploymentId);
  return {
    device: { id: device.id, name: device.name }, bootPath, now: site.now(), ttlSeconds: POLICY_TTL_SECONDS, assurance, finished,
    signingKeyFingerprint: publicKeyFingerprint(site.keys.verifyKey), deployments, imageManifests, contentSources,
  };
}

export async function devicePolicy(site: Site, device: Device, bootPath: "pxe" | "media", assurance?: Assurance): Promise<Policy> {
  return compilePolicy(await policyInput(site, device, bootPath, assurance));
}

/** The policy a certificate of `assurance` gets, signed. */
export async function signedDevicePolicy(site: Site, device: Device, bootPath: "pxe" | "media", assurance: Assurance): Promise<SignedPolicy> {
  return signPolicy(await devicePolicy(site, device, bootPath, assurance), site.keys.signingKey);
}
