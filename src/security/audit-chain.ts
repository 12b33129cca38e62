/**
 * The audit log's hash chain (trust model §6), as pure functions: no I/O, so the store, the
 * verifier CLI and tests share one definition. Each record's hash covers its body and the
 * previous record's hash, and the site signing key signs each hash — so someone who can edit
 * the database but lacks the signing key cannot rebuild the chain after a change. A signed
 * head checkpoint kept outside the database also catches records cut off the end.
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

/** What verification found: how many entries it checked either way. */
export type ChainVerdict =
  | {
    ok: true; count: number; lastSeq: number; lastHash: string;
    /** The head checkpoint that was checked (null when none was asked for). */
    head: { seq: number; writtenAt: string } | null;
    /**
     * Entries after the checkpoint, which it does not vouch for: written by a process with
     * another data folder, or committed just before a crash — or cut back to an older
     * checkpoint that was put back (see README, "What the audit log cannot show").
     */
    uncovered: number;
  }
  | { ok: false; seq: number; reason: string; checked: number };

/** The head checkpoint: the newest entry, signed, so it cannot be forged or edited. */
export type AuditHead = { seq: number; hash: string; writtenAt: string; signature: string };

/** The prevHash of the first record. */
export const GENESIS_HASH = "0".repeat(64);

// Signatures cover this prefix plus the hash, so an audit signature can never be mistaken for
// the site key's signature over some other canonical-JSON document, or vice versa.
const SIGNATURE_CONTEXT = "slipway-audit-v1:";
// The head's own context: an entry's signature can never pass for a head's, or the reverse.
const HEAD_CONTEXT = "slipway-audit-head-v1:";

function headBytes(h: { seq: number; hash: string; writtenAt: string }): Buffer {
  return Buffer.from(HEAD_CONTEXT + canonicalJson({ seq: h.seq, hash: h.hash, writtenAt: h.writtenAt }), "utf8");
}

/** Signs a head checkpoint naming entry `seq` with hash `hash`, written at `writtenAt`. */
export function signHead(h: { seq: number; hash: string; writtenAt: string }, signingKey: crypto.KeyObject): AuditHead {
  const signature = crypto.sign(null, headBytes(h), signingKey).toString("base64");
  return { seq: h.seq, hash: h.hash, writtenAt: h.writtenAt, signature };
}

/** The head, when `value` is a well-formed head signed by the site key; null otherwise. */
export function checkHead(value: unknown, publicKey: crypto.KeyObject): AuditHead | null {
  const h = value as Partial<AuditHead> | null;
  if (!h || typeof h !== "object" || !Number.isSafeInteger(h.seq) || (h.seq as number) < 1 || typeof h.hash !== "string"
    || !/^[0-9a-f]{64}$/.test(h.hash) || typeof h.writtenAt !== "string" || typeof h.signature !== "string") return null;
  const head = { seq: h.seq as number, hash: h.hash, writtenAt: h.writtenAt, signature: h.signature };
  return verifyBytes(publicKey, headBytes(head), head.signature) ? head : null;
}

/**
 * What the verifier is told about the head checkpoint. `head` is the parsed file (null when
 * there is none). A site always has one: init writes "site.initialized" and its head.
 */
export type HeadEvidence = { head: unknown };

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
 * millions streams through in constant memory. With head evidence (a site's log), the head
 * must be signed by the site key, the log must reach it and agree with it there, and a log
 * with no head or no entries at all is tampering. Without it, only the chain is checked.
 */
export class ChainVerifier {
  readonly #publicKey: crypto.KeyObject;
  readonly #evidence: HeadEvidence | undefined;
  readonly #head: AuditHead | null = null;
  readonly #headForged: boolean = false;
  #count = 0;
  #lastSeq = 0;
  #lastHash = GENESIS_HASH;

  constructor(publicKey: crypto.KeyObject, evidence?: HeadEvidence) {
    this.#publicKey = publicKey;
    this.#evidence = evidence;
    if (evidence && evidence.head !== null && evidence.head !== undefined) {
      this.#head = checkHead(evidence.head, publicKey);
      this.#headForged = this.#head === null;
    }
  }

  #fail(seq: number, reason: string): Failure {
    return { ok: false, seq, reason, checked: this.#count };
  }

  /** The failure this entry shows, or null when it extends the chain. */
  push(e: AuditEntry): Failure | null {
    const expected = this.#lastSeq + 1;
    if (typeof e?.seq !== "number" || e.seq !== expected) {
      const found = typeof e?.seq === "number" ? e.seq : "none";
      const why = typeof found === "number" && found > expected ? "deleted or reordered" : "inserted or reordered";
      return this.#fail(expected, `expected seq ${expected}, found ${found}: a record was ${why}`);
    }
    if (e.prevHash !== this.#lastHash) {
      return this.#fail(e.seq, "prevHash does not match the previous record: records were removed or reordered");
    }
    let hash: string;
    try {
      hash = chainHash(e.prevHash, e);
    } catch {
      return this.#fail(e.seq, "the record cannot be hashed: a field was altered");
    }
    if (e.hash !== hash) {
      return this.#fail(e.seq, "the hash does not match the record: it was edited");
    }
    if (!verifyBytes(this.#publicKey, Buffer.from(SIGNATURE_CONTEXT + e.hash, "utf8"), e.signature)) {
      return this.#fail(e.seq, "the signature is not the site signing key's: the chain was rebuilt or edited");
    }
    if (this.#head && e.seq === this.#head.seq && e.hash !== this.#head.hash) {
      return this.#fail(e.seq, "the record differs from the head checkpoint: the log was rewritten");
    }
    this.#count++;
    this.#lastSeq = e.seq;
    this.#lastHash = e.hash;
    return null;
  }

  /** The verdict once every entry was pushed. */
  finish(): ChainVerdict {
    if (this.#evidence) {
      if (this.#headForged) {
        return this.#fail(this.#lastSeq + 1, "the head checkpoint is not signed by the site signing key: it was forged or edited");
      }
      if (this.#head && this.#lastSeq < this.#head.seq) {
        return this.#fail(this.#lastSeq + 1, `the log ends at seq ${this.#lastSeq} but the head checkpoint is at seq ${this.#head.seq}: it was truncated`);
      }
      if (this.#count === 0) {
        return this.#fail(1, "the log is empty, but an initialized site always has entries (init records site.initialized): it was deleted");
      }
      if (!this.#head) {
        return this.#fail(this.#lastSeq + 1, `the head checkpoint is missing, but the log has ${this.#count} entries: it was deleted`);
      }
    }
    const head = this.#head ? { seq: this.#head.seq, writtenAt: this.#head.writtenAt } : null;
    return { ok: true, count: this.#count, lastSeq: this.#lastSeq, lastHash: this.#lastHash, head, uncovered: this.#head ? this.#lastSeq - this.#head.seq : 0 };
  }
}

/** Verifies a whole chain given in seq order; names the first record where it breaks. */
export function verifyChain(
  entries: Iterable<AuditEntry>,
  publicKey: crypto.KeyObject,
  evidence?: HeadEvidence,
): ChainVerdict {
  const v = new ChainVerifier(publicKey, evidence);
  for (const e of entries) {
    const bad = v.push(e);
    if (bad) return bad;
  }
  return v.finish();
}
