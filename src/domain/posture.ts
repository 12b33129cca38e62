/**
 * The network-boot security posture: whether someone on a PXE link, with nothing but what it
 * can sniff there (a machine's MAC and SMBIOS UUID), can enroll as a machine and reach a
 * deployment that uses secrets. Pure: the site gathers the facts (roles/site/posture.ts);
 * `slipway up` prints the warnings at start and `slipway site` shows the whole posture.
 *
 * The rule (issue #11, "secure by default"): a site is unprotected when PXE is served and
 * none of these holds —
 *  - a PXE password is set (every boot-token enrollment is then `password`, not `sniffable`);
 *  - every enabled deployment that uses secrets requires more than `sniffable`
 *    (effectiveMinimum: the default for such a deployment is `password`);
 *  - every PXE enrollment waits for an administrator's approval (not available yet: false).
 * TPM binding will be a fourth protection once enrollments can reach `tpm`.
 *
 * Boot paths are not counted: the device names the boot path it asks a policy for, so a
 * sniffable enrollment made over PXE can ask for a media-only deployment's policy too.
 */
import { effectiveMinimum, type Assurance } from "./assurance.ts";

export type PostureLink = { name: string; address: string };

export type PostureDeployment = {
  id: string;
  name: string;
  enabled: boolean;
  /** Whether its pinned task sequence version references any secret. */
  usesSecrets: boolean;
  minimumAssurance: Assurance | null;
  allowSniffableEnrollment: boolean;
};

export type PostureInput = {
  /** The links PXE is served on (empty: PXE is not served by this site). */
  pxeLinks: PostureLink[];
  pxePasswordSet: boolean;
  /** Every PXE enrollment needs an administrator's approval of that enrollment (no such mode yet). */
  enrollmentApproval: boolean;
  deployments: PostureDeployment[];
};

/** A deployment listed in the posture: it opted into sniffable enrollments, or would let one reach its secrets. */
export type SniffableDeployment = {
  id: string;
  name: string;
  enabled: boolean;
  usesSecrets: boolean;
  /** How it came to accept a sniffable enrollment. */
  why: "allowSniffableEnrollment" | "minimumAssurance";
};

export type Posture = {
  pxeServed: boolean;
  pxeLinks: PostureLink[];
  pxePasswordSet: boolean;
  enrollmentApproval: boolean;
  /** PXE is served and a boot token alone enrolls: anyone on a PXE link can enroll as a machine it saw. */
  sniffableEnrollment: boolean;
  /** Deployments that accept a sniffable enrollment, by name. */
  sniffableDeployments: SniffableDeployment[];
  /** Of those, the enabled ones that use secrets: what an attacker on a PXE link could reach. */
  exposed: SniffableDeployment[];
  /** The warning condition: a sniffable enrollment can reach a deployment that uses secrets. */
  unprotected: boolean;
  /** Lines to show an administrator (empty when there is nothing to warn about). */
  warnings: string[];
};

const quoted = (names: string[]) => names.map((n) => JSON.stringify(n)).join(", ");

/** The posture that follows from the facts. */
export function assessPosture(input: PostureInput): Posture {
  const pxeServed = input.pxeLinks.length > 0;
  const sniffableEnrollment = pxeServed && !input.pxePasswordSet && !input.enrollmentApproval;
  // Listed: what accepts a sniffable enrollment by an administrator's opt-in (a deployment
  // without secrets accepts one by default too, which is nothing to list). Secrets at
  // sniffable need an opt-in as well: effectiveMinimum is "password" for them otherwise.
  const listed: SniffableDeployment[] = [];
  for (const d of input.deployments) {
    if (effectiveMinimum(d, d.usesSecrets) !== "sniffable") continue;
    if (!d.allowSniffableEnrollment && d.minimumAssurance !== "sniffable") continue;
    listed.push({ id: d.id, name: d.name, enabled: d.enabled, usesSecrets: d.usesSecrets,
      why: d.minimumAssurance === "sniffable" ? "minimumAssurance" : "allowSniffableEnrollment" });
  }
  const exposed = listed.filter((d) => d.enabled && d.usesSecrets);
  const unprotected = sniffableEnrollment && exposed.length > 0;
  return {
    pxeServed, pxeLinks: input.pxeLinks, pxePasswordSet: input.pxePasswordSet, enrollmentApproval: input.enrollmentApproval,
    sniffableEnrollment, sniffableDeployments: listed, exposed, unprotected,
    warnings: postureWarnings({ unprotected, pxeLinks: input.pxeLinks, exposed }),
  };
}

/**
 * What to tell an administrator: one warning line when unprotected, naming the exposed
 * deployments (`unnamed` more are counted without their names, for a caller who may not see them).
 */
export function postureWarnings(p: Pick<Posture, "unprotected" | "pxeLinks" | "exposed">, unnamed = 0): string[] {
  if (!p.unprotected) return [];
  const links = p.pxeLinks.map((l) => l.name);
  const n = p.exposed.length + unnamed;
  const names = [...(p.exposed.length ? [quoted(p.exposed.map((d) => d.name))] : []), ...(unnamed ? [`${unnamed} outside your scopes`] : [])].join(" and ");
  return [
    `WARNING: network boot is not protected: anyone on PXE link${links.length === 1 ? "" : "s"} ${links.join(", ")} who sniffs a machine's MAC and SMBIOS UUID ` +
    `can enroll as it (no PXE password is set and enrollments are not approved) and reach ${n === 1 ? "a deployment that uses" : "deployments that use"} secrets: ` +
    `${names}. Set a PXE password (slipway pxe password set), or require more than sniffable on ${n === 1 ? "that deployment" : "those deployments"} ` +
    `(minimumAssurance "password", "approved" or "media").`,
  ];
}
