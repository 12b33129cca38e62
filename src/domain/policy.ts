/**
 * A device's policy: the deployments that apply to it on the boot path it came by, each
 * with its pinned task sequence version, its resolved plain variables (device over
 * collection over site over the task sequence's defaults), the names — never the values —
 * of the secrets it may ask for, and the content it references. Pure: the management point
 * gathers the inputs, compiles, then signs.
 *
 * A deployment whose minimum enrollment assurance the calling certificate does not meet is
 * left out altogether: a sniffable enrollment learns nothing of it (not even its name,
 * variables or task sequence), and cannot start it. A required deployment the device already
 * finished is left out too: it runs again only after an administrator allows a rerun.
 */
import { mayReceiveSecrets, meetsAssurance, type Assurance } from "./assurance.ts";

export const POLICY_KIND = "slipway.policy/v1";

export type PolicyVariable = { name: string; value: string | null; secret: boolean };

export type PolicyInput = {
  device: { id: string; name: string };
  bootPath: "pxe" | "media";
  now: Date;
  ttlSeconds: number;
  signingKeyFingerprint: string;
  /** The enrollment assurance of the certificate asking; undefined: every deployment (an administrator's view, the boot script's decision). */
  assurance?: Assurance;
  /** Required deployments the device finished (succeeded, no rerun allowed since): left out, they do not run again. */
  finished?: string[];
  deployments: {
    id: string; name: string; purpose: "available" | "required"; enabled: boolean; bootPaths: string[];
    availableFrom: string | null; availableUntil: string | null;
    taskSequence: { id: string; name: string; version: number; digest: string; document: TaskSequenceLike };
    /** Variables in precedence order, lowest first: site, then the target collection, then the device. */
    scopes: PolicyVariable[][];
    /** Secret names the task sequence's steps reference (Run As). */
    secretReferences: string[];
    /** The least enrollment assurance the deployment needs (effective: default applied). */
    minimumAssurance?: Assurance;
  }[];
  /**
   * What each image reference resolves to, gathered by the caller so compiling stays pure:
   * a name → the digest of the newest manifest with that name, "sha256:…" → that digest if
   * the manifest exists; null (or absent) when there is none.
   */
  imageManifests?: Record<string, string | null>;
  /**
   * For a manifest digest, the base URLs of the distribution points that hold it ready, in the
   * order the agent should try them (the management point itself stays the last resort).
   */
  contentSources?: Record<string, string[]>;
};

/** The parts of a task sequence document the policy reads. */
export type TaskSequenceLike = { variables?: Record<string, string>; steps: unknown[] };

export type PolicyDeployment = {
  id: string; name: string; purpose: "available" | "required";
  taskSequence: { id: string; name: string; version: number; digest: string; document: TaskSequenceLike };
  variables: Record<string, string>;
  secrets: string[];
  /** Each image the task sequence applies, and the manifest digest it resolved to (null: none yet). */
  content: PolicyContent[];
};

/**
 * An image, the manifest it resolved to, and the distribution points (base URLs) holding that
 * manifest ready — tried in order before the management point itself.
 */
export type PolicyContent = { image: string; manifest: string | null; sources: string[] };

export type Policy = {
  kind: typeof POLICY_KIND;
  deviceId: string;
  deviceName: string;
  bootPath: "pxe" | "media";
  issuedAt: string;
  expiresAt: string;
  signingKeyFingerprint: string;
  deployments: PolicyDeployment[];
};

/** Whether a deployment is offered at `now` on `bootPath`. */
export function deploymentApplies(d: PolicyInput["deployments"][number], bootPath: string, now: Date): boolean {
  if (!d.enabled || !d.bootPaths.includes(bootPath)) return false;
  if (d.availableFrom && Date.parse(d.availableFrom) > now.getTime()) return false;
  if (d.availableUntil && Date.parse(d.availableUntil) <= now.getTime()) return false;
  return true;
}

function imagesOf(steps: unknown[], out: Set<string>): void {
  for (const s of steps) {
    const step = s as { type?: string; with?: { image?: unknown }; steps?: unknown[]; disabled?: boolean };
    if (step.disabled) continue;
    if (step.type === "apply-image" && typeof step.with?.image === "string") out.add(step.with.image);
    if (Array.isArray(step.steps)) imagesOf(step.steps, out);
  }
}

/** The image references (names or "sha256:…" digests) of a task sequence's enabled apply-image steps, sorted. */
export function imageReferences(document: TaskSequenceLike): string[] {
  const out = new Set<string>();
  imagesOf(Array.isArray(document?.steps) ? document.steps : [], out);
  return [...out].sort();
}

export function compilePolicy(input: PolicyInput): Policy {
  const manifests = input.imageManifests ?? {};
  // Own properties only: an image may well be called "constructor".
  const resolved = (image: string): string | null => (Object.hasOwn(manifests, image) ? manifests[image] ?? null : null);
  const sourcesOf = input.contentSources ?? {};
  const sources = (digest: string | null): string[] => (digest !== null && Object.hasOwn(sourcesOf, digest) ? [...sourcesOf[digest]] : []);
  const deployments: PolicyDeployment[] = [];
  for (const d of input.deployments) {
    if (!deploymentApplies(d, input.bootPath, input.now)) continue;
    if (input.assurance !== undefined && !meetsAssurance(input.assurance, d.minimumAssurance ?? "sniffable")) continue;
    if (d.purpose === "required" && input.finished?.includes(d.id)) continue;
    const values = new Map<string, string>(Object.entries(d.taskSequence.document.variables ?? {}));
    const secrets = new Set<string>(d.secretReferences);
    for (const scope of d.scopes) {
      for (const v of scope) {
        if (v.secret) {
          // A secret at a nearer scope hides a plain value of the same name: it must never be sent.
          values.delete(v.name);
          secrets.add(v.name);
        } else if (v.value !== null) {
          values.set(v.name, v.value);
          secrets.delete(v.name);
        }
      }
    }
    for (const name of d.secretReferences) secrets.add(name);
    deployments.push({
      id: d.id, name: d.name, purpose: d.purpose, taskSequence: d.taskSequence,
      variables: Object.fromEntries([...values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      // A sniffable enrollment is never given a secret, so it is not told their names either.
      secrets: input.assurance !== undefined && !mayReceiveSecrets(input.assurance) ? [] : [...secrets].sort(),
      content: imageReferences(d.taskSequence.document).map((image) => ({ image, manifest: resolved(image), sources: sources(resolved(image)) })),
    });
  }
  // Required before available, then by name, so the agent sees a stable order.
  deployments.sort((a, b) => (a.purpose === b.purpose ? (a.name < b.name ? -1 : 1) : a.purpose === "required" ? -1 : 1));
  return {
    kind: POLICY_KIND,
    deviceId: input.device.id,
    deviceName: input.device.name,
    bootPath: input.bootPath,
    issuedAt: input.now.toISOString(),
    expiresAt: new Date(input.now.getTime() + input.ttlSeconds * 1000).toISOString(),
    signingKeyFingerprint: input.signingKeyFingerprint,
    deployments,
  };
}
