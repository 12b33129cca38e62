/**
 * The encrypted format of user state (issue #14; trust model §5): what the agent seals before a
 * byte of a user's files leaves the machine, and what a state migration point stores without
 * being able to read. Pure Node crypto, no I/O, so the agent bundle carries it.
 *
 * A capture attempt is one *stream*: a random 16-byte stream id, a chunk key derived from the
 * association's data key with HKDF-SHA256 (salt = stream id, info names the format and the
 * association), and the plaintext cut into CHUNK_SIZE pieces, each sealed with AES-256-GCM
 * under a nonce made from its index. Every chunk carries a header naming its stream, index and
 * whether it is the last, and the header plus the association id are the GCM additional data,
 * so a chunk proves where it belongs. The layout, the reasons for it and test vectors are in
 * docs/user-state-format.md.
 */
import crypto from "node:crypto";

/** The format version this module writes and reads. */
export const STATE_FORMAT_VERSION = 1;
/** Plaintext bytes in every chunk but the last (which holds 0..CHUNK_SIZE; 0 only for an empty stream). */
export const CHUNK_SIZE = 4 * 1024 * 1024;
/** magic (4) ‖ version (1) ‖ flags (1) ‖ stream id (16) ‖ index (4) ‖ plaintext length (4). */
export const CHUNK_HEADER_BYTES = 30;
/** The AES-GCM authentication tag at the end of every chunk. */
export const CHUNK_TAG_BYTES = 16;
/** The largest sealed chunk: a full chunk's header, ciphertext and tag. */
export const MAX_SEALED_CHUNK_BYTES = CHUNK_HEADER_BYTES + CHUNK_SIZE + CHUNK_TAG_BYTES;
/** The smallest sealed chunk: the empty final chunk of an empty stream. */
export const MIN_SEALED_CHUNK_BYTES = CHUNK_HEADER_BYTES + CHUNK_TAG_BYTES;
/** Indexes are 32-bit: 2^32 chunks of 4 MiB is 16 PiB, more than any user state. */
export const MAX_CHUNK_INDEX = 0xffff_ffff;

const MAGIC = Buffer.from("SWUS", "ascii"); // Slipway User State
const FLAG_FINAL = 0x01;
const KNOWN_FLAGS = FLAG_FINAL;
const KEY_BYTES = 32; // AES-256
const STREAM_ID_BYTES = 16;
const NONCE_BYTES = 12; // the GCM nonce size NIST SP 800-38D §8.2.1 recommends
const HKDF_INFO_PREFIX = "slipway user-state v1";

/** The site's object ids: a UUID as `crypto.randomUUID()` writes it (lowercase). */
const ASSOCIATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const STREAM_ID = /^[0-9a-f]{32}$/;

/** What a chunk's header says; nothing in it is secret, and none of it is trusted until the chunk authenticates. */
export type ChunkHeader = {
  version: number;
  final: boolean;
  /** 32 lowercase hex digits. */
  streamId: string;
  index: number;
  plaintextLength: number;
};

/** One sealed chunk as `sealStream` yields it; `bytes` is what is uploaded and stored. */
export type SealedChunk = { index: number; final: boolean; bytes: Buffer };

/** The chunks of one capture attempt, and the stream id they were sealed under. */
export type SealedStream = AsyncIterable<SealedChunk> & { readonly streamId: string };

export type StateCipherReason =
  | "malformed" // not a chunk of this format: bad magic, version, flags or length
  | "unauthentic" // GCM refused it: wrong data key, another association's chunk, or altered bytes
  | "other-stream" // a chunk of another capture attempt spliced in
  | "missing" // an index was skipped
  | "duplicate" // the previous chunk again
  | "out-of-order" // an earlier chunk again, or a reordering
  | "bad-size" // a non-final chunk that is not CHUNK_SIZE, or an empty final chunk after others
  | "after-final" // anything after the final chunk
  | "truncated"; // the stream ended without its final chunk

/** Why user state could not be sealed or opened; `index` is the chunk position where it failed. */
export class StateCipherError extends Error {
  readonly reason: StateCipherReason;
  /** The stream position (expected index) where the problem was found; null before any chunk. */
  readonly index: number | null;

  constructor(reason: StateCipherReason, index: number | null, message: string) {
    super(message);
    this.name = "StateCipherError";
    this.reason = reason;
    this.index = index;
  }
}

/** True for an id the site gives an association (a lowercase UUID). */
export function isAssociationId(value: unknown): value is string {
  return typeof value === "string" && ASSOCIATION_ID.test(value);
}

/** True for a stream id as this module writes it (32 lowercase hex digits). */
export function isStreamId(value: unknown): value is string {
  return typeof value === "string" && STREAM_ID.test(value);
}

/** A fresh random stream id for one capture attempt. */
export function newStreamId(): string {
  return crypto.randomBytes(STREAM_ID_BYTES).toString("hex");
}

/** Reads a chunk's header without a key (as the state migration point does), checking that the
 *  chunk's length agrees with it. Throws StateCipherError("malformed") otherwise. */
export function parseChunkHeader(bytes: Uint8Array, position: number | null = null): ChunkHeader {
  const where = position === null ? "a user state chunk" : `user state chunk ${position}`;
  const bad = (why: string) => new StateCipherError("malformed", position, `Cannot read ${where}: ${why}`);
  if (!(bytes instanceof Uint8Array)) throw bad("it is not bytes");
  if (bytes.length < MIN_SEALED_CHUNK_BYTES) throw bad(`${bytes.length} bytes is shorter than the ${MIN_SEALED_CHUNK_BYTES} of the smallest chunk`);
  const header = readChunkHeader(bytes.subarray(0, CHUNK_HEADER_BYTES), position);
  const expected = sealedLengthOf(header);
  if (bytes.length !== expected) throw bad(`it is ${bytes.length} bytes, but its header says ${expected}`);
  return header;
}

/** The length of the whole sealed chunk a header describes. */
export function sealedLengthOf(header: ChunkHeader): number {
  return CHUNK_HEADER_BYTES + header.plaintextLength + CHUNK_TAG_BYTES;
}

/** Reads the CHUNK_HEADER_BYTES at the start of a chunk (a store reads no more of a stored
 *  file when it opens); the caller checks the chunk's length with `sealedLengthOf`. */
export function readChunkHeader(bytes: Uint8Array, position: number | null = null): ChunkHeader {
  const where = position === null ? "a user state chunk" : `user state chunk ${position}`;
  const bad = (why: string) => new StateCipherError("malformed", position, `Cannot read ${where}: ${why}`);
  if (bytes.length < CHUNK_HEADER_BYTES) throw bad(`${bytes.length} bytes is shorter than its ${CHUNK_HEADER_BYTES}-byte header`);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (!b.subarray(0, 4).equals(MAGIC)) throw bad("it does not start with the magic \"SWUS\"");
  const version = b[4];
  if (version !== STATE_FORMAT_VERSION) throw bad(`format version ${version} is not the supported ${STATE_FORMAT_VERSION}`);
  const flags = b[5];
  if ((flags & ~KNOWN_FLAGS) !== 0) throw bad(`unknown flag bits 0x${flags.toString(16).padStart(2, "0")}`);
  const streamId = b.subarray(6, 22).toString("hex");
  const index = b.readUInt32BE(22);
  const plaintextLength = b.readUInt32BE(26);
  if (plaintextLength > CHUNK_SIZE) throw bad(`its plaintext length ${plaintextLength} exceeds the chunk size ${CHUNK_SIZE}`);
  return { version, final: (flags & FLAG_FINAL) !== 0, streamId, index, plaintextLength };
}

type StreamOptions = { dataKey: Uint8Array; associationId: string };

function checkOptions(o: StreamOptions, what: string): void {
  if (!(o.dataKey instanceof Uint8Array) || o.dataKey.length !== KEY_BYTES) throw new TypeError(`Cannot ${what}: the data key must be ${KEY_BYTES} bytes`);
  if (!isAssociationId(o.associationId)) throw new TypeError(`Cannot ${what}: the association id must be a lowercase UUID`);
}

function chunkKey(dataKey: Uint8Array, associationId: string, streamId: string): Buffer {
  const info = Buffer.concat([Buffer.from(HKDF_INFO_PREFIX, "ascii"), Buffer.from([0]), Buffer.from(associationId, "ascii")]);
  return Buffer.from(crypto.hkdfSync("sha256", dataKey, Buffer.from(streamId, "hex"), info, KEY_BYTES));
}

function nonceOf(index: number): Buffer {
  const nonce = Buffer.alloc(NONCE_BYTES); // 8 zero bytes ‖ index (u32 BE); unique per key because a key serves one stream
  nonce.writeUInt32BE(index, 8);
  return nonce;
}

function headerOf(streamId: string, index: number, final: boolean, plaintextLength: number): Buffer {
  const h = Buffer.alloc(CHUNK_HEADER_BYTES);
  MAGIC.copy(h, 0);
  h[4] = STATE_FORMAT_VERSION;
  h[5] = final ? FLAG_FINAL : 0;
  Buffer.from(streamId, "hex").copy(h, 6);
  h.writeUInt32BE(index, 22);
  h.writeUInt32BE(plaintextLength, 26);
  return h;
}

function aadOf(header: Buffer, associationId: string): Buffer {
  return Buffer.concat([header, Buffer.from(associationId, "ascii")]);
}

function sealWithKey(key: Buffer, associationId: string, streamId: string, index: number, final: boolean, plaintext: Uint8Array): Buffer {
  const header = headerOf(streamId, index, final, plaintext.length);
  const cipher = crypto.createCipheriv("aes-256-gcm", key, nonceOf(index), { authTagLength: CHUNK_TAG_BYTES });
  cipher.setAAD(aadOf(header, associationId));
  const body = cipher.update(plaintext);
  const rest = cipher.final();
  return Buffer.concat([header, body, rest, cipher.getAuthTag()]);
}

/**
 * Seals one chunk. The building block of `sealStream`, exported for test vectors and tests:
 * sealing two different plaintexts under the same data key, association, stream id and index
 * reuses a GCM nonce and destroys confidentiality, so real captures use `sealStream`, which
 * picks a fresh stream id.
 */
export function sealChunk(o: StreamOptions & { streamId: string; index: number; final: boolean; plaintext: Uint8Array }): Buffer {
  checkOptions(o, "seal user state");
  if (!isStreamId(o.streamId)) throw new TypeError("Cannot seal user state: the stream id must be 32 lowercase hex digits");
  if (!Number.isSafeInteger(o.index) || o.index < 0 || o.index > MAX_CHUNK_INDEX) throw new TypeError(`Cannot seal user state: chunk index ${o.index} is not an integer from 0 to ${MAX_CHUNK_INDEX}`);
  if (o.plaintext.length > CHUNK_SIZE) throw new TypeError(`Cannot seal user state: ${o.plaintext.length} bytes exceed the chunk size ${CHUNK_SIZE}`);
  return sealWithKey(chunkKey(o.dataKey, o.associationId, o.streamId), o.associationId, o.streamId, o.index, o.final, o.plaintext);
}

/** Opens one chunk on its own: authenticates it and returns its header and plaintext. Says
 *  nothing about its place in a stream; `openStream` checks that. */
export function openChunk(bytes: Uint8Array, o: StreamOptions, position: number | null = null): { header: ChunkHeader; plaintext: Buffer } {
  checkOptions(o, "open user state");
  const header = parseChunkHeader(bytes, position);
  const plaintext = openWithKey(chunkKey(o.dataKey, o.associationId, header.streamId), o.associationId, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), header, position ?? header.index);
  return { header, plaintext };
}

function openWithKey(key: Buffer, associationId: string, b: Buffer, h: ChunkHeader, position: number): Buffer {
  const header = b.subarray(0, CHUNK_HEADER_BYTES);
  const ciphertext = b.subarray(CHUNK_HEADER_BYTES, b.length - CHUNK_TAG_BYTES);
  const tag = b.subarray(b.length - CHUNK_TAG_BYTES);
  const decipher = crypto.createDecipheriv("aes-256-gcm", key, nonceOf(h.index), { authTagLength: CHUNK_TAG_BYTES });
  decipher.setAAD(aadOf(header, associationId));
  decipher.setAuthTag(tag);
  // Nothing of the plaintext is returned before final() has checked the tag.
  const body = decipher.update(ciphertext);
  try {
    const rest = decipher.final();
    return rest.length === 0 ? body : Buffer.concat([body, rest]);
  } catch {
    throw new StateCipherError("unauthentic", position,
      `Cannot restore user state: chunk ${position} does not authenticate (a wrong data key, a chunk of another association, or altered bytes)`);
  }
}

/**
 * Cuts `source` into CHUNK_SIZE pieces and seals each; the last chunk is marked final (an empty
 * source yields one empty final chunk). Each call picks a fresh random stream id, exposed as
 * `streamId` before the first chunk is read. `streamId` may be given only to reproduce test
 * vectors: never seal different plaintext twice under one stream id.
 */
export function sealStream(source: AsyncIterable<Uint8Array>, o: StreamOptions & { streamId?: string }): SealedStream {
  checkOptions(o, "seal user state");
  if (o.streamId !== undefined && !isStreamId(o.streamId)) throw new TypeError("Cannot seal user state: the stream id must be 32 lowercase hex digits");
  const streamId = o.streamId ?? newStreamId();
  const associationId = o.associationId;
  const dataKey = Buffer.from(o.dataKey); // a copy, so the caller may wipe theirs while the stream runs
  async function* chunks(): AsyncGenerator<SealedChunk> {
    const key = chunkKey(dataKey, associationId, streamId);
    dataKey.fill(0);
    const pending = new ByteQueue();
    let index = 0;
    const seal = (plaintext: Buffer, final: boolean): SealedChunk => {
      if (index > MAX_CHUNK_INDEX) throw new StateCipherError("bad-size", index, `Cannot seal user state: more than ${MAX_CHUNK_INDEX + 1} chunks`);
      const chunk = { index, final, bytes: sealWithKey(key, associationId, streamId, index, final, plaintext) };
      index++;
      return chunk;
    };
    for await (const piece of source) {
      if (piece.length === 0) continue;
      pending.push(Buffer.from(piece)); // a copy: the source may reuse its buffer
      // A full chunk is sealed as not final only once a byte beyond it is known to exist.
      while (pending.length > CHUNK_SIZE) yield seal(pending.take(CHUNK_SIZE), false);
    }
    yield seal(pending.take(pending.length), true);
    key.fill(0);
  }
  const iterable = chunks();
  return { streamId, [Symbol.asyncIterator]: () => iterable };
}

/**
 * Opens the chunks of one stream in order (each element one whole chunk, as stored) and yields
 * the plaintext of each chunk only after that chunk has authenticated. Throws StateCipherError
 * naming the chunk and the reason for anything but the exact stream sealed: a wrong key or
 * altered bytes, a foreign association or stream, a missing, duplicate or reordered chunk,
 * data after the final chunk, or an end without the final chunk. Because the error can come
 * after earlier chunks were yielded, a caller must treat the whole restore as failed on error.
 * `streamId`, when given, is the stream the site recorded as captured; any other is refused.
 */
export async function* openStream(chunks: AsyncIterable<Uint8Array>, o: StreamOptions & { streamId?: string }): AsyncGenerator<Buffer> {
  checkOptions(o, "open user state");
  if (o.streamId !== undefined && !isStreamId(o.streamId)) throw new TypeError("Cannot open user state: the stream id must be 32 lowercase hex digits");
  let streamId = o.streamId ?? null;
  let key: Buffer | null = null;
  let expected = 0;
  let finalSeen = false;
  for await (const chunk of chunks) {
    const position = expected;
    if (finalSeen) {
      throw new StateCipherError("after-final", position, `Cannot restore user state: data follows the final chunk ${position - 1}`);
    }
    const h = parseChunkHeader(chunk, position);
    if (streamId === null) streamId = h.streamId;
    if (h.streamId !== streamId) {
      throw new StateCipherError("other-stream", position, `Cannot restore user state: chunk ${position} belongs to stream ${h.streamId}, not ${streamId} (a chunk of another capture attempt)`);
    }
    if (h.index !== position) {
      if (h.index > position) {
        throw new StateCipherError("missing", position, `Cannot restore user state: chunk ${position} is missing (chunk ${h.index} came in its place)`);
      }
      const reason = h.index === position - 1 ? "duplicate" : "out-of-order";
      throw new StateCipherError(reason, position, `Cannot restore user state: chunk ${position} expected, but chunk ${h.index} came again (${reason === "duplicate" ? "a duplicate" : "out of order"})`);
    }
    if (!h.final && h.plaintextLength !== CHUNK_SIZE) {
      throw new StateCipherError("bad-size", position, `Cannot restore user state: chunk ${position} is not final but holds ${h.plaintextLength} bytes, not ${CHUNK_SIZE}`);
    }
    if (h.final && h.plaintextLength === 0 && position > 0) {
      throw new StateCipherError("bad-size", position, `Cannot restore user state: chunk ${position} is an empty final chunk after others`);
    }
    key ??= chunkKey(o.dataKey, o.associationId, streamId);
    const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const plaintext = openWithKey(key, o.associationId, b, h, position);
    expected++;
    finalSeen = h.final;
    if (plaintext.length > 0) yield plaintext;
  }
  if (!finalSeen) {
    throw new StateCipherError("truncated", expected,
      expected === 0 ? "Cannot restore user state: there are no chunks at all" : `Cannot restore user state: the stream ends after chunk ${expected - 1} without its final chunk (truncated)`);
  }
}

/**
 * Splits a byte stream of chunks written back to back (one download of a whole stream, a
 * backup file) into single chunks for `openStream`. Holds at most one chunk in memory; a
 * header that claims more than a chunk can hold is refused before anything is buffered.
 */
export async function* splitChunks(bytes: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  const pending = new ByteQueue();
  let need = CHUNK_HEADER_BYTES;
  let position = 0;
  for await (const piece of bytes) {
    if (piece.length > 0) pending.push(Buffer.from(piece));
    while (pending.length >= need) {
      if (need === CHUNK_HEADER_BYTES) {
        need = sealedLengthOf(readChunkHeader(pending.peek(CHUNK_HEADER_BYTES), position));
        continue;
      }
      yield pending.take(need);
      need = CHUNK_HEADER_BYTES;
      position++;
    }
  }
  if (pending.length > 0) {
    throw new StateCipherError("truncated", position, `Cannot read user state chunk ${position}: the bytes end in the middle of it`);
  }
}

/** A FIFO of buffers that hands out exact-length pieces. */
class ByteQueue {
  #parts: Buffer[] = [];
  #head = 0; // parts before this index are used up
  #length = 0;
  get length(): number {
    return this.#length;
  }
  push(b: Buffer): void {
    this.#parts.push(b);
    this.#length += b.length;
  }
  peek(n: number): Buffer {
    const first = this.#parts[this.#head];
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.#parts.slice(this.#head), n);
  }
  take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const first = this.#parts[this.#head];
      const want = n - filled;
      if (first.length <= want) {
        first.copy(out, filled);
        filled += first.length;
        this.#head++;
      } else {
        first.copy(out, filled, 0, want);
        this.#parts[this.#head] = first.subarray(want);
        filled += want;
      }
    }
    this.#length -= n;
    if (this.#head > 1024 || this.#head === this.#parts.length) {
      this.#parts = this.#parts.slice(this.#head);
      this.#head = 0;
    }
    return out;
  }
}
