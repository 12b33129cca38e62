/**
 * Proof that a machine holds a TPM endorsement key the site trusts, with the TPM's own
 * credential protection (TPM 2.0 Library Part 1, 24 "Credential Protection"): the site makes
 * a credential — a random value only the TPM holding the EK's private key can recover, and
 * only for an object of a given name loaded in that same TPM (MakeCredential, computed here:
 * the site needs no TPM) — and the machine's TPM recovers it (ActivateCredential).
 *
 * The site keeps no state between the two halves: the credential is an HMAC, under a key
 * derived from the site's signing key, of the EK, the object name, a nonce and an expiry. A
 * copied MAC, SMBIOS UUID or disk image does not carry the EK's private key, which never
 * leaves the TPM (fixedTPM): without it the credential cannot be recovered.
 */
import { createCipheriv, createHash, createHmac, createPublicKey, hkdfSync, publicEncrypt, randomBytes, timingSafeEqual, constants, type KeyObject } from "node:crypto";
import { decodePublic, ekProblem, objectName, type TpmPublic } from "../protocol/tpm2.ts";
import { DecodeError } from "../protocol/reader.ts";

/** How long a machine has to answer a TPM challenge. */
export const TPM_CHALLENGE_TTL_MS = 5 * 60_000;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** KDFa with HMAC-SHA-256 (Part 1, 11.4.10.2): `bits` of key from `key`, a label and two contexts. */
export function kdfa(key: Uint8Array, label: string, contextU: Uint8Array, contextV: Uint8Array, bits: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 1, have = 0; have < bits / 8; i++, have += 32) {
    out.push(createHmac("sha256", key).update(u32(i)).update(label, "latin1").update(Buffer.from([0])).update(contextU).update(contextV).update(u32(bits)).digest());
  }
  return Buffer.concat(out).subarray(0, bits / 8);
}

/** An RSA endorsement key's public area as a Node public key. */
export function ekPublicKey(ek: TpmPublic): KeyObject {
  const rsa = ek.rsa!;
  const e = rsa.exponent === 0 ? 65537 : rsa.exponent;
  const eBytes = Buffer.from(e.toString(16).padStart(6, "0"), "hex");
  return createPublicKey({ key: { kty: "RSA", n: Buffer.from(rsa.modulus).toString("base64url"), e: eBytes.toString("base64url") }, format: "jwk" });
}

/** SHA-256 over the EK's SubjectPublicKeyInfo: how administrators and the audit log name an EK. */
export function ekFingerprint(key: KeyObject): string {
  return `sha256:${createHash("sha256").update(key.export({ type: "spki", format: "der" })).digest("hex")}`;
}

/** An endorsement key's public area (TPMT_PUBLIC, base64) as a key and fingerprint; TpmProofError if it is not one. */
export function parseEkPublic(base64: string): { ek: TpmPublic; key: KeyObject; fingerprint: string } {
  let ek: TpmPublic;
  try {
    ek = decodePublic(Buffer.from(base64, "base64"));
  } catch (err) {
    if (err instanceof DecodeError) throw new TpmProofError(`the endorsement key is not a TPM public area: ${err.message}`);
    throw err;
  }
  const problem = ekProblem(ek);
  if (problem) throw new TpmProofError(`the key is not an endorsement key: ${problem}`);
  const key = ekPublicKey(ek);
  return { ek, key, fingerprint: ekFingerprint(key) };
}

/** A TPM proof or public area a machine sent is not acceptable; the message says why. */
export class TpmProofError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TpmProofError";
  }
}

/**
 * MakeCredential: `credential` protected so that only the TPM holding `ek`'s private key
 * recovers it, and only for a loaded object named `name`. Returns the TPM2B_ID_OBJECT and
 * TPM2B_ENCRYPTED_SECRET contents (without their size prefixes).
 */
export function makeCredential(ek: TpmPublic, name: Uint8Array, credential: Uint8Array): { credentialBlob: Buffer; secret: Buffer } {
  const seed = randomBytes(32);
  const secret = publicEncrypt({ key: ekPublicKey(ek), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256", oaepLabel: Buffer.from("IDENTITY\0", "latin1") }, seed);
  const symKey = kdfa(seed, "STORAGE", name, new Uint8Array(0), 128);
  const plain = Buffer.concat([Buffer.from([credential.length >> 8, credential.length & 0xff]), credential]);
  const c = createCipheriv("aes-128-cfb", symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([c.update(plain), c.final()]);
  const hmacKey = kdfa(seed, "INTEGRITY", new Uint8Array(0), new Uint8Array(0), 256);
  const integrity = createHmac("sha256", hmacKey).update(encIdentity).update(name).digest();
  const credentialBlob = Buffer.concat([Buffer.from([0, integrity.length]), integrity, encIdentity]);
  return { credentialBlob, secret };
}

export type TpmChallenge = {
  /** What the agent passes to ActivateCredential (base64). */
  credentialBlob: string;
  secret: string;
  /** What the agent sends back, unchanged, with the recovered credential. */
  nonce: string;
  expiresAt: string;
};

export type TpmAnswer = { ekPublic: string; objectPublic: string; nonce: string; expiresAt: string; credential: string };

/** The key that makes and checks credentials: derived from the site's signing key, used for nothing else. */
export function tpmChallengeKey(signingKey: KeyObject): Buffer {
  return Buffer.from(hkdfSync("sha256", signingKey.export({ type: "pkcs8", format: "der" }), "slipway", "slipway tpm-challenge v1", 32));
}

function expected(key: Buffer, device: string, ekFingerprint: string, name: Uint8Array, nonce: string, expiresAt: string): Buffer {
  return createHmac("sha256", key).update(JSON.stringify(["tpm-credential", device, ekFingerprint, Buffer.from(name).toString("hex"), nonce, expiresAt])).digest();
}

/** The activation object a machine names: a keyed-hash object (any loaded object would do; this one is cheap). */
function parseObject(base64: string): TpmPublic {
  try {
    return decodePublic(Buffer.from(base64, "base64"));
  } catch (err) {
    if (err instanceof DecodeError) throw new TpmProofError(`the activation object is not a TPM public area: ${err.message}`);
    throw err;
  }
}

/** A challenge for `device`'s machine to prove it holds the EK `ekPublic`, for a credential bound to the object `objectPublic`. */
export function makeChallenge(key: Buffer, device: string, ekPublic: string, objectPublic: string, now: Date): TpmChallenge {
  const { ek, fingerprint } = parseEkPublic(ekPublic);
  const name = objectName(parseObject(objectPublic));
  const nonce = randomBytes(16).toString("base64url");
  const expiresAt = new Date(now.getTime() + TPM_CHALLENGE_TTL_MS).toISOString();
  const { credentialBlob, secret } = makeCredential(ek, name, expected(key, device, fingerprint, name, nonce, expiresAt));
  return { credentialBlob: credentialBlob.toString("base64"), secret: secret.toString("base64"), nonce, expiresAt };
}

/**
 * Checks that `answer` proves its machine holds the EK it names: the credential it recovered
 * is the one made for `device`, that EK, that object, nonce and expiry, and it is unexpired.
 * Returns the proven EK (its SubjectPublicKeyInfo, base64, and fingerprint); throws
 * TpmProofError saying why not. Whether the site trusts that EK is the caller's question.
 */
export function checkAnswer(key: Buffer, device: string, answer: TpmAnswer, now: Date): { spki: string; fingerprint: string } {
  const { key: ekKey, fingerprint } = parseEkPublic(answer.ekPublic);
  if (!(Date.parse(answer.expiresAt) > now.getTime())) throw new TpmProofError("the TPM challenge expired");
  const name = objectName(parseObject(answer.objectPublic));
  const want = expected(key, device, fingerprint, name, answer.nonce, answer.expiresAt);
  const got = Buffer.from(answer.credential, "base64");
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new TpmProofError("the TPM did not recover the credential");
  return { spki: ekKey.export({ type: "spki", format: "der" }).toString("base64"), fingerprint };
}
