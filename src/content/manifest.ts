/**
 * Content manifests: what an image is made of. A manifest lists an image's bytes as chunks by
 * SHA-256 and is signed with the site key; a policy names the manifest by its digest. Agents
 * and distribution points verify the manifest's signature against the pinned site key, then
 * every chunk as it streams, so no server between the site and the disk can change a byte.
 * Pure: no files, no sockets — the agent bundle carries it.
 */
import { createHash, type Hash, type KeyObject } from "node:crypto";
import { canonicalJson } from "../security/canonical-json.ts";
import { signValue, verifyValue } from "../security/signing.ts";

export const MANIFEST_KIND = "slipway.manifest/v1";
/** 4 MiB: small enough to re-fetch after a broken connection, large enough to stream fast. */
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
export const MAX_CHUNKS = 1_000_000;

/** How the image's bytes are laid out: a file-based archive, or a raw file-system/disk image. */
export type ImageFormat = "tar" | "tar.gz" | "tar.zst" | "raw";
export const imageFormats: readonly ImageFormat[] = ["tar", "tar.gz", "tar.zst", "raw"];

export type Chunk = { sha256: string; size: number };

export type Manifest = {
  kind: typeof MANIFEST_KIND;
  name: string;
  format: ImageFormat;
  /** Total bytes: the sum of the chunks' sizes. */
  size: number;
  /** SHA-256 of all the bytes in order. */
  sha256: string;
  chunkSize: number;
  chunks: Chunk[];
  createdAt: string;
};

export type SignedManifest = { manifest: Manifest; signature: string };

export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ManifestError";
  }
}

const HEX64 = /^[0-9a-f]{64}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Whether `name` may name an image (letters, digits, ".", "_", "-"; at most 128). */
export function isManifestName(name: string): boolean {
  return NAME.test(name);
}

/** Whether `text` is a manifest digest as policies and URLs write it: "sha256:" and 64 lowercase hex digits. */
export function isManifestDigest(text: string): boolean {
  return text.startsWith("sha256:") && HEX64.test(text.slice(7));
}

/** "sha256:<hex>" of the manifest's canonical JSON: how policies and URLs name it. */
export function manifestDigest(manifest: Manifest): string {
  return "sha256:" + createHash("sha256").update(canonicalJson(manifest), "utf8").digest("hex");
}

export function signManifest(manifest: Manifest, signingKey: KeyObject): SignedManifest {
  checkShape(manifest);
  return { manifest, signature: signValue(signingKey, manifest) };
}

/**
 * Returns the manifest when it is well formed, signed by the pinned key and (when `digest` is
 * given) the one the policy named; throws ManifestError otherwise.
 */
export function verifyManifest(signed: unknown, pinnedKey: KeyObject, digest?: string): Manifest {
  const s = signed as Partial<SignedManifest> | null;
  if (!s || typeof s !== "object" || typeof s.signature !== "string" || !s.manifest || typeof s.manifest !== "object") {
    throw new ManifestError("Cannot use the manifest: it is not a signed manifest document");
  }
  let genuine = false;
  try {
    genuine = verifyValue(pinnedKey, s.manifest, s.signature);
  } catch {
    genuine = false;
  }
  if (!genuine) throw new ManifestError("Cannot use the manifest: its signature is not the site's");
  checkShape(s.manifest);
  if (digest !== undefined && manifestDigest(s.manifest) !== digest) {
    throw new ManifestError(`Cannot use the manifest: it is not ${digest}, the one the policy names`);
  }
  return s.manifest;
}

/** Throws ManifestError unless every field is what a manifest must hold and the sizes add up. */
function checkShape(m: Manifest): void {
  const bad = (why: string): never => {
    throw new ManifestError(`Cannot use the manifest: ${why}`);
  };
  if (m.kind !== MANIFEST_KIND) bad(`it is a "${String(m.kind)}", not a manifest`);
  if (typeof m.name !== "string" || !NAME.test(m.name)) bad("its name is not valid");
  if (!imageFormats.includes(m.format)) bad(`its format "${String(m.format)}" is unknown`);
  if (typeof m.sha256 !== "string" || !HEX64.test(m.sha256)) bad("its sha256 is not a digest");
  if (!Number.isSafeInteger(m.chunkSize) || m.chunkSize < 1 || m.chunkSize > 1 << 30) bad("its chunk size is not valid");
  if (!Array.isArray(m.chunks) || m.chunks.length > MAX_CHUNKS) bad("its chunk list is not valid");
  let total = 0;
  m.chunks.forEach((c, i) => {
    if (!c || typeof c.sha256 !== "string" || !HEX64.test(c.sha256)) bad(`chunk ${i} has no valid sha256`);
    if (!Number.isSafeInteger(c.size) || c.size < 1 || c.size > m.chunkSize) bad(`chunk ${i} has a size out of range`);
    // Only the last chunk may be short, so byte offsets follow from the index alone.
    if (i < m.chunks.length - 1 && c.size !== m.chunkSize) bad(`chunk ${i} is short but not the last`);
    total += c.size;
  });
  if (!Number.isSafeInteger(m.size) || total !== m.size) bad("its size is not the sum of its chunks");
  if (typeof m.createdAt !== "string" || Number.isNaN(Date.parse(m.createdAt))) bad("its creation time is not valid");
}

/**
 * Checks bytes chunk by chunk as they stream in, from any starting chunk (for a resumed
 * download). `push` returns the bytes of each chunk once that whole chunk has verified, so a
 * caller never writes an unverified byte; it throws ManifestError at the first mismatch.
 */
export class ChunkVerifier {
  readonly #m: Manifest;
  #index: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #hash: Hash | undefined;
  constructor(manifest: Manifest, startChunk = 0) {
    this.#m = manifest;
    this.#index = startChunk;
  }

  /** The next chunk index to verify: a resumed download starts at its byte offset. */
  get nextChunk(): number {
    return this.#index;
  }

  get offset(): number {
    return this.#index * this.#m.chunkSize;
  }

  push(data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    // Hash as the bytes arrive (not all at once when a chunk completes), so hashing overlaps
    // the network instead of stalling it, and a chunk is copied at most once.
    for (let off = 0; off < data.length; ) {
      if (this.#index >= this.#m.chunks.length) {
        throw new ManifestError(`Cannot apply image "${this.#m.name}": more bytes than the manifest lists`);
      }
      const want = this.#m.chunks[this.#index];
      const piece = data.subarray(off, off + (want.size - this.#pendingBytes));
      this.#hash ??= createHash("sha256");
      this.#hash.update(piece);
      this.#pending.push(piece);
      this.#pendingBytes += piece.length;
      off += piece.length;
      if (this.#pendingBytes < want.size) continue;
      if (this.#hash.digest("hex") !== want.sha256) {
        throw new ManifestError(`Cannot apply image "${this.#m.name}": sha256 mismatch in chunk ${this.#index} (bytes ${this.offset}-${this.offset + want.size - 1})`);
      }
      out.push(this.#pending.length === 1 ? this.#pending[0] : Buffer.concat(this.#pending, want.size));
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#hash = undefined;
      this.#index++;
    }
    return out;
  }

  /** Throws unless every chunk arrived and verified. */
  finish(): void {
    if (this.#index < this.#m.chunks.length) {
      throw new ManifestError(`Cannot apply image "${this.#m.name}": the stream ended at chunk ${this.#index} of ${this.#m.chunks.length}`);
    }
  }
}
