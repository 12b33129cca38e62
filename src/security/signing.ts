/**
 * The site signing key (Ed25519): it signs policies, content manifests, boot scripts and
 * exported task sequences, and boot media carry only its public half. Values are signed as
 * their canonical JSON, so a document can travel through any JSON encoder and still verify.
 */
import crypto from "node:crypto";
import { canonicalJson } from "./canonical-json.ts";

/** A fresh Ed25519 key pair as PKCS#8 / SPKI PEM. */
export function generateSigningKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  return {
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }) as string,
  };
}

/** Base64 Ed25519 signature over canonicalJson(value). */
export function signValue(privateKey: crypto.KeyObject, value: unknown): string {
  assertEd25519(privateKey, "private");
  return crypto.sign(null, Buffer.from(canonicalJson(value), "utf8"), privateKey).toString("base64");
}

/** True only if `signature` is a valid signature of canonicalJson(value); false for any
 *  malformed signature. Throws only if `value` has no JSON form (a caller bug). */
export function verifyValue(publicKey: crypto.KeyObject, value: unknown, signature: string): boolean {
  assertEd25519(publicKey, "public");
  const bytes = Buffer.from(canonicalJson(value), "utf8");
  return verifyBytes(publicKey, bytes, signature);
}

/** SHA-256 hex of the key's SPKI DER: a short name for the key that admins can compare. */
export function publicKeyFingerprint(publicKey: crypto.KeyObject): string {
  const pub = publicKey.type === "private" ? crypto.createPublicKey(publicKey) : publicKey;
  const spki = pub.export({ type: "spki", format: "der" });
  return crypto.createHash("sha256").update(spki).digest("hex");
}

const ED25519_SIGNATURE_B64 = /^[A-Za-z0-9+/]{86}==$/;

/** Verify a base64 Ed25519 signature over raw bytes; never throws. Shared with the audit chain. */
export function verifyBytes(publicKey: crypto.KeyObject, bytes: Uint8Array, signature: unknown): boolean {
  // Buffer's base64 decoder skips junk characters; insist on the one canonical spelling so a
  // signature string cannot be altered while still verifying.
  if (typeof signature !== "string" || !ED25519_SIGNATURE_B64.test(signature)) return false;
  const sig = Buffer.from(signature, "base64");
  if (sig.toString("base64") !== signature) return false;
  try {
    return crypto.verify(null, bytes, publicKey, sig);
  } catch {
    return false;
  }
}

function assertEd25519(key: crypto.KeyObject, type: "private" | "public"): void {
  if (!(key instanceof crypto.KeyObject) || key.asymmetricKeyType !== "ed25519") {
    throw new TypeError("The site signing key must be an Ed25519 KeyObject");
  }
  if (type === "private" && key.type !== "private") {
    throw new TypeError("Signing needs the private half of the site signing key");
  }
}
