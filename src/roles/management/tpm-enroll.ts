/**
 * TPM-bound enrollment on the management point. A machine with a TPM asks for a challenge
 * for its endorsement key (POST /mp/v1/enroll/tpm-challenge, with its boot token), recovers
 * the credential with its TPM, and sends the answer with its enrollment. The site then knows
 * the machine holds that EK. What follows from it (enroll.ts):
 *
 *  - The EK on record for the device: the enrollment is `tpm` — unattended, and nothing an
 *    attacker on the wire can see (MAC, UUID, boot token, EK public key) lets it answer.
 *  - No EK on record: the EK is recorded once the same enrollment is `password`, `approved` or
 *    `media` (never `sniffable`: an attacker's TPM must not be planted on a device), or when an
 *    administrator imports it (PUT /api/v1/devices/:id/tpm). An enrollment never replaces an
 *    EK on record; only an administrator clears or replaces it. One EK binds one device.
 */
import { z } from "zod";
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { hashToken } from "../../security/password.ts";
import { SlipwayError } from "../../errors.ts";
import { checkAnswer, makeChallenge, parseEkPublic, tpmChallengeKey, TpmProofError, type TpmChallenge } from "../../security/tpm-credential.ts";
import type { KeyObject } from "node:crypto";

const B64 = (max: number) => z.string().min(4).max(max).regex(/^[A-Za-z0-9+/]+={0,2}$/, "base64");

/** What a machine says about its TPM in a challenge request and an enrollment. */
export const TpmClaim = z.strictObject({
  ekPublic: B64(1024),
  objectPublic: B64(1024),
  ekCertificate: B64(8192).optional(),
});

/** The answer to a challenge, sent with the enrollment. */
export const TpmProof = z.strictObject({
  nonce: z.string().min(10).max(64),
  expiresAt: z.string().max(40),
  credential: B64(128),
});

export const EnrollTpm = TpmClaim.extend({ proof: TpmProof.optional() });
export type EnrollTpm = z.infer<typeof EnrollTpm>;

export const ChallengeBody = z.strictObject({ token: z.string().min(10).max(200), tpm: TpmClaim });

const keys = new WeakMap<KeyObject, Buffer>();
function challengeKey(site: Site): Buffer {
  let k = keys.get(site.keys.signingKey);
  if (!k) keys.set(site.keys.signingKey, (k = tpmChallengeKey(site.keys.signingKey)));
  return k;
}

/**
 * A challenge for the machine holding a valid boot token, when its EK can be of use: it is the
 * one on record for the token's device, or the device has none yet. Null otherwise (the machine
 * enrolls as it would without a TPM). Refuses only what is not a TPM at all.
 */
export async function tpmChallenge(site: Site, body: z.infer<typeof ChallengeBody>): Promise<{ challenge: TpmChallenge | null }> {
  const s = stores(site.db);
  const c = await s.enrollment.byHash(hashToken(body.token));
  const nowIso = site.now().toISOString();
  // The same answer for every token that cannot enroll: nothing to learn from asking.
  if (!c || c.kind !== "boot-token" || c.revokedAt || c.usesLeft < 1 || c.expiresAt <= nowIso || !c.deviceId) {
    throw new SlipwayError("ENROLLMENT_REFUSED");
  }
  let fingerprint: string;
  try {
    fingerprint = parseEkPublic(body.tpm.ekPublic).fingerprint;
  } catch (err) {
    if (err instanceof TpmProofError) throw new SlipwayError("VALIDATION", `Cannot make a TPM challenge: ${err.message}`);
    throw err;
  }
  const recorded = await s.deviceTpm.of(c.deviceId);
  if (recorded && recorded.fingerprint !== fingerprint) return { challenge: null };
  try {
    // Bound to the boot token (single use) as well as the device: an answer works once, with this token.
    return { challenge: makeChallenge(challengeKey(site), `${c.deviceId}/${c.id}`, body.tpm.ekPublic, body.tpm.objectPublic, site.now()) };
  } catch (err) {
    if (err instanceof TpmProofError) throw new SlipwayError("VALIDATION", `Cannot make a TPM challenge: ${err.message}`);
    throw err;
  }
}

/**
 * The EK a machine proved it holds in its enrollment, or null when it sent no proof. Throws
 * TpmProofError when it sent one that does not hold (a copied or made-up answer).
 */
export function provenEk(site: Site, deviceId: string, tokenId: string, tpm: EnrollTpm | undefined): { spki: string; fingerprint: string } | null {
  if (!tpm?.proof) return null;
  return checkAnswer(challengeKey(site), `${deviceId}/${tokenId}`, { ekPublic: tpm.ekPublic, objectPublic: tpm.objectPublic, ...tpm.proof }, site.now());
}
