/**
 * Enrollment assurance: how sure the site is that an enrollment came from the machine it names.
 *
 * - `sniffable`: a boot token alone. It is bound to a MAC and an SMBIOS UUID, which every PXE
 *   client broadcasts in clear, so anyone on the link can obtain one: it proves nothing against
 *   an attacker there.
 * - `password`: a boot token plus the site's PXE password, typed at the machine, checked inside TLS.
 * - `approved`: an administrator approved this enrollment (its certificate), having seen it.
 *   A device's pre-approval is not that: it matches a claimed MAC and UUID, so it is `sniffable`.
 * - `media`: a media credential carried by boot media the administrator made.
 * - `tpm`: the machine proved it holds the TPM endorsement key on record for its device.
 *
 * The ranks compare what an attacker on the wire must have beyond what it can sniff. Password,
 * approval and media each need something the wire does not carry (a typed secret, an
 * administrator's decision for that one device, the media); none of them binds the machine's
 * hardware, so they rank alike. A TPM-bound enrollment does, and ranks above them.
 */

export const ASSURANCE_LEVELS = ["sniffable", "password", "approved", "media", "tpm"] as const;
export type Assurance = (typeof ASSURANCE_LEVELS)[number];

const RANK: Record<Assurance, number> = { sniffable: 0, password: 1, approved: 1, media: 1, tpm: 2 };

/** The rank of a level; anything unknown (a value from an older or damaged record) ranks as sniffable. */
export function assuranceRank(level: string | null | undefined): number {
  return level !== null && level !== undefined && Object.hasOwn(RANK, level) ? RANK[level as Assurance] : 0;
}

/** Whether an enrollment at `level` meets a deployment's `minimum`. */
export function meetsAssurance(level: string | null | undefined, minimum: Assurance): boolean {
  return assuranceRank(level) >= RANK[minimum];
}

/** Whether secrets may ever go to an enrollment at `level`: never to a sniffable one. */
export function mayReceiveSecrets(level: string | null | undefined): boolean {
  return assuranceRank(level) > RANK.sniffable;
}

/**
 * The minimum a deployment requires: the one set on it, else `sniffable` if the administrator
 * opted it in (allowSniffableEnrollment), else `password` when its task sequence version
 * references any secret and `sniffable` when it references none.
 */
export function effectiveMinimum(d: { minimumAssurance: Assurance | null; allowSniffableEnrollment: boolean }, usesSecrets: boolean): Assurance {
  if (d.minimumAssurance) return d.minimumAssurance;
  if (d.allowSniffableEnrollment) return "sniffable";
  return usesSecrets ? "password" : "sniffable";
}
