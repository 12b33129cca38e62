/**
 * The audit log's hash chain (trust model §6), as pure functions: no I/O, so the store, the
 * verifier CLI and tests share one definition. Each record's hash covers its body and the
 * previous record's hash, and the site signing key signs each hash — so someone who can edit
 * the database but lacks the signing key cannot rebuild the chain after a change. A head
 * checkpoint kept outside the database also catches records cut off the end.
 */
import crypto from "node:crypto";
import { canonicalJson } from "./canonical-json.ts";
import { verifyBytes } from "./signing.ts";

export type AuditOutcome = "success" | "denied" | "failure";

export type AuditEntry = {
  seq: number;
  /** ISO 8601 time. */
  at: string;
  actor: string;
  action: string;
  object: string | null;
  outcome: AuditOutcome;
  details: Record<string, unknown> | null;
  prevHash: string;
  hash: string;
  /** Base64 Ed25519 signature by the site signing key over `hash`. */
  signature: string;
};

/** What the caller records; `sealEntry` assigns seq and the chain fields. */
export type AuditBody = Omit<AuditEntry, "seq" | "prevHash" | "hash" | "signature">;

export type ChainVerdict =
  | { ok: true; count: number; lastSeq: number; lastHash: string }
  | { ok: false; seq: number; reason: string };

/** The prevHash of the first record. */
export const GENESIS_HASH = "0".repeat(64);

// Signatures cover this prefix plus the hash, so an audit signature can never be mistaken for
// the site key's signature over some other canonical-JSON document, or vice versa.
const SIGNATURE_CONTEXT = "slipway-audit-v1:";

/** sha256 hex of canonicalJson({ prevHash, ...body }). */
export function chainHash(prevHash: string, body: Omit<AuditEntry, "hash" | "signature" | "prevHash">): string {
  const { seq, at, actor, action, object, outcome, details } = body;
  const doc = { prevHash, seq, at, actor, action, object, outcome, details };
  return crypto.createHash("sha256").update(canonicalJson(doc), "utf8").digest("hex");
}

/** Append `body` after `prev` (null for the first record): number, chain and sign it. */
export function sealEntry(
  prev: { seq: number; hash: string } | null,
  body: AuditBody,
  signingKey: crypto.KeyObject,
): AuditEntry {
  if (signingKey?.asymmetricKeyType !== "ed25519" || signingKey.type !== "private") {
    throw new TypeError("Cannot seal audit entry: the signing key must be the site's Ed25519 private key");
  }
  if (!["success", "denied", "failure"].includes(body.outcome)) {
    throw new TypeError(`Cannot seal audit entry: unknown outcome "${body.outcome}"`);
  }
  const seq = prev ? prev.seq + 1 : 1;
  const prevHash = prev ? prev.hash : GENESIS_HASH;
  // Keep exactly what was hashed (a Date in details becomes its ISO string), so the entry
  // still verifies after a round trip through the database.
  const details = body.details === null ? null : (JSON.parse(canonicalJson(body.details)) as Record<string, unknown>);
  const hashed = { seq, at: body.at, actor: body.actor, action: body.action, object: body.object, outcome: body.outcome, details };
  const hash = chainHash(prevHash, hashed);
  const signature = crypto.sign(null, Buffer.from(SIGNATURE_CONTEXT + hash, "utf8"), signingKey).toString("base64");
  return { ...hashed, prevHash, hash, signature };
}

type Failure = Extract<ChainVerdict, { ok: false }>;

/**
 * Checks entries one at a time, in seq order, holding only the previous one — so a log of
 * millions streams through in constant memory. `head` is a checkpoint kept outside the
 * database; without it, records cut off the end cannot be noticed.
 */
export class ChainVerifier {
  readonly #publicKey: crypto.KeyObject;
  readonly #head: { seq: number; hash: string } | undefined;
  #count = 0;
  #lastSeq = 0;
  #lastHash = GENESIS_HASH;

  constructor(publicKey: crypto.KeyObject, head?: { seq: number; hash: string }) {
    this.#publicKey = publicKey;
    this.#head = head;
  }

  /** The failure this entry shows, or null when it extends the chain. */
  push(e: AuditEntry): Failure | null {
    const expected = this.#lastSeq + 1;
    if (typeof e?.seq !== "number" || e.seq !== expected) {
      const found = typeof e?.seq === "number" ? e.seq : "none";
      const why = typeof found === "number" && found > expected ? "deleted or reordered" : "inserted or reordered";
      return { ok: false, seq: expected, reason: `expected seq ${expected}, found ${found}: a record was ${why}` };
    }
    if (e.prevHash !== this.#lastHash) {
      return { ok: false, seq: e.seq, reason: "prevHash does not match the previous record: records were removed or reordered" };
    }
    let hash: string;
    try {
      hash = chainHash(e.prevHash, e);
    } catch {
      return { ok: false, seq: e.seq, reason: "the record cannot be hashed: a field was altered" };
    }
    if (e.hash !== hash) {
      return { ok: false, seq: e.seq, reason: "the hash does not match the record: it was edited" };
    }
    if (!verifyBytes(this.#publicKey, Buffer.from(SIGNATURE_CONTEXT + e.hash, "utf8"), e.signature)) {
      return { ok: false, seq: e.seq, reason: "the signature is not the site signing key's: the chain was rebuilt or edited" };
    }
    if (this.#head && e.seq === this.#head.seq && e.hash !== this.#head.hash) {
      return { ok: false, seq: e.seq, reason: "the record differs from the checkpoint: the log was rewritten" };
    }
    this.#count++;
    this.#lastSeq = e.seq;
    this.#lastHash = e.hash;
    return null;
  }

  /** The verdict once every entry was pushed. */
  finish(): ChainVerdict {
    if (this.#head && this.#lastSeq < this.#head.seq) {
      return { ok: false, seq: this.#lastSeq + 1, reason: `the log ends at seq ${this.#lastSeq} but the checkpoint is at seq ${this.#head.seq}: it was truncated` };
    }
    return { ok: true, count: this.#count, lastSeq: this.#lastSeq, lastHash: this.#lastHash };
  }
}

/** Verifies a whole chain given in seq order; names the first record where it breaks. */
export function verifyChain(
  entries: Iterable<AuditEntry>,
  publicKey: crypto.KeyObject,
  head?: { seq: number; hash: string },
): ChainVerdict {
  const v = new ChainVerifier(publicKey, head);
  for (const e of entries) {
    const bad = v.push(e);
    if (bad) return bad;
  }
  return v.finish();
}
