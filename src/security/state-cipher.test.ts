import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fc from "fast-check";
import {
  CHUNK_HEADER_BYTES, CHUNK_SIZE, CHUNK_TAG_BYTES, StateCipherError, openChunk, openStream, parseChunkHeader,
  sealChunk, sealStream, splitChunks, type StateCipherReason,
} from "./state-cipher.ts";

const ASSOCIATION = "3f2b8c1e-6a4d-4e5f-9b7a-1c2d3e4f5a6b";
const OTHER_ASSOCIATION = "9d8c7b6a-5f4e-4d3c-8b2a-190817161514";
const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "hex");

/** Deterministic bytes for a seed, fast enough for megabytes (AES-CTR keystream). */
function bytesOf(seed: number, size: number): Buffer {
  const key = crypto.createHash("sha256").update(`seed ${seed}`).digest();
  const c = crypto.createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return c.update(Buffer.alloc(size));
}

/** Yields `data` in pieces of the given sizes (cycled), so chunk boundaries fall anywhere. */
async function* piecesOf(data: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    // At most ~512 pieces, so a megabyte source is not fed a byte at a time.
    const n = Math.max(1, Math.ceil(data.length / 512), sizes.length === 0 ? data.length : sizes[i % sizes.length]);
    yield data.subarray(at, at + n);
    at += n;
  }
}

async function* each<T>(items: T[]): AsyncGenerator<T> {
  for (const item of items) yield item;
}

async function seal(data: Buffer, o: { key?: Buffer; association?: string; streamId?: string; sizes?: number[] } = {}) {
  const sealed = sealStream(piecesOf(data, o.sizes ?? []), { dataKey: o.key ?? KEY, associationId: o.association ?? ASSOCIATION, streamId: o.streamId });
  const chunks = [];
  for await (const c of sealed) chunks.push(c);
  return { streamId: sealed.streamId, chunks, bytes: chunks.map((c) => c.bytes) };
}

/** Opens chunks; returns the plaintext yielded before any error, and the error. */
async function open(chunks: Buffer[], o: { key?: Buffer; association?: string; streamId?: string } = {}) {
  const out: Buffer[] = [];
  try {
    for await (const p of openStream(each(chunks), { dataKey: o.key ?? KEY, associationId: o.association ?? ASSOCIATION, streamId: o.streamId })) out.push(p);
    return { plaintext: Buffer.concat(out), error: null };
  } catch (err) {
    if (!(err instanceof StateCipherError)) throw err;
    return { plaintext: Buffer.concat(out), error: err };
  }
}

function assertRefused(r: { plaintext: Buffer; error: StateCipherError | null }, original: Buffer, index: number, reasons: StateCipherReason[]) {
  assert.ok(r.error, `expected a refusal at chunk ${index}`);
  assert.equal(r.error.index, index, `refused at chunk ${r.error.index}, not ${index}: ${r.error.message}`);
  assert.ok(reasons.includes(r.error.reason), `reason ${r.error.reason} not in ${reasons.join(", ")}: ${r.error.message}`);
  assert.match(r.error.message, new RegExp(`chunk ${index}\\b|after chunk ${index - 1}\\b|final chunk ${index - 1}\\b|no chunks`));
  // Nothing of the refused chunk or any later one came out.
  assert.ok(original.subarray(0, r.plaintext.length).equals(r.plaintext));
  assert.ok(r.plaintext.length <= index * CHUNK_SIZE);
}

const SIZES_NEAR_BOUNDARIES = fc.oneof(
  fc.integer({ min: 0, max: 300 }),
  fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: -2, max: 2 })).map(([k, d]) => k * CHUNK_SIZE + d),
  fc.integer({ min: 0, max: 2 * CHUNK_SIZE + 100 }),
);

test("sealing then opening gives back the plaintext, for any size and any way the source is cut", async () => {
  await fc.assert(fc.asyncProperty(SIZES_NEAR_BOUNDARIES, fc.array(fc.integer({ min: 1, max: 3 * CHUNK_SIZE }), { maxLength: 4 }), fc.nat(), async (size, sizes, seed) => {
    const data = bytesOf(seed, size);
    const s = await seal(data, { sizes });
    assert.equal(s.chunks.length, Math.max(1, Math.ceil(size / CHUNK_SIZE)));
    s.chunks.forEach((c, i) => {
      assert.equal(c.index, i);
      assert.equal(c.final, i === s.chunks.length - 1);
      const h = parseChunkHeader(c.bytes);
      assert.deepEqual(h, { version: 1, final: c.final, streamId: s.streamId, index: i, plaintextLength: Math.min(CHUNK_SIZE, size - i * CHUNK_SIZE) });
    });
    const r = await open(s.bytes, { streamId: s.streamId });
    assert.equal(r.error, null);
    assert.ok(r.plaintext.equals(data));
    // The same chunks concatenated (one download, a backup file) split back and open, however the bytes arrive.
    const joined = Buffer.concat(s.bytes);
    const split = [];
    for await (const c of splitChunks(piecesOf(joined, sizes.map((n) => (n % 100_000) + 1)))) split.push(c);
    assert.deepEqual(split.map((c) => c.length), s.bytes.map((c) => c.length));
    assert.ok((await open(split)).plaintext.equals(data));
  }), { numRuns: 100 });
});

test("an empty source seals to one empty final chunk that opens to nothing", async () => {
  const s = await seal(Buffer.alloc(0));
  assert.equal(s.chunks.length, 1);
  assert.equal(s.chunks[0].final, true);
  assert.equal(s.chunks[0].bytes.length, CHUNK_HEADER_BYTES + CHUNK_TAG_BYTES);
  const r = await open(s.bytes);
  assert.equal(r.error, null);
  assert.equal(r.plaintext.length, 0);
});

test("every capture attempt gets its own stream id, so no chunk key is ever used twice", async () => {
  const data = Buffer.from("the same files captured twice");
  const a = await seal(data);
  const b = await seal(data);
  assert.notEqual(a.streamId, b.streamId);
  assert.ok(!a.bytes[0].subarray(CHUNK_HEADER_BYTES).equals(b.bytes[0].subarray(CHUNK_HEADER_BYTES)));
});

// One three-chunk stream (two full chunks and a short final one), sealed once for the tamper properties.
const ORIGINAL = bytesOf(7, 2 * CHUNK_SIZE + 1000);
const STREAM = await seal(ORIGINAL);
const N = STREAM.bytes.length;

test("any single bit flipped anywhere in any chunk is refused, naming that chunk", async () => {
  const lengths = STREAM.bytes.map((b) => b.length);
  // Half the flips in the headers and tags, where a careless format would go wrong.
  const position = fc.integer({ min: 0, max: N - 1 }).chain((chunk) => fc.record({
    chunk: fc.constant(chunk),
    offset: fc.oneof(fc.integer({ min: 0, max: CHUNK_HEADER_BYTES - 1 }), fc.integer({ min: lengths[chunk] - CHUNK_TAG_BYTES, max: lengths[chunk] - 1 }), fc.integer({ min: 0, max: lengths[chunk] - 1 })),
    bit: fc.integer({ min: 0, max: 7 }),
  }));
  await fc.assert(fc.asyncProperty(position, async ({ chunk, offset, bit }) => {
    const chunks = STREAM.bytes.map((b) => Buffer.from(b));
    chunks[chunk][offset] ^= 1 << bit;
    const r = await open(chunks);
    assertRefused(r, ORIGINAL, chunk, ["unauthentic", "malformed", "other-stream", "missing", "duplicate", "out-of-order", "bad-size"]);
  }), { numRuns: 150 });
});

test("reordered, dropped, duplicated or truncated chunks are refused, naming the first wrong position", async () => {
  const edit = fc.oneof(
    fc.record({ op: fc.constant("swap" as const), i: fc.integer({ min: 0, max: N - 1 }), j: fc.integer({ min: 0, max: N - 1 }) }).filter((e) => e.i !== e.j),
    fc.record({ op: fc.constant("drop" as const), i: fc.integer({ min: 0, max: N - 1 }) }),
    fc.record({ op: fc.constant("duplicate" as const), i: fc.integer({ min: 0, max: N - 1 }) }),
    fc.record({ op: fc.constant("truncate" as const), i: fc.integer({ min: 0, max: N - 1 }) }),
  );
  await fc.assert(fc.asyncProperty(edit, async (e) => {
    const chunks = [...STREAM.bytes];
    let at: number;
    let reasons: StateCipherReason[];
    if (e.op === "swap") {
      const [lo, hi] = [Math.min(e.i, e.j), Math.max(e.i, e.j)];
      [chunks[lo], chunks[hi]] = [chunks[hi], chunks[lo]];
      at = lo;
      reasons = ["missing"];
    } else if (e.op === "drop") {
      chunks.splice(e.i, 1);
      at = e.i;
      reasons = e.i === N - 1 ? ["truncated"] : ["missing"];
    } else if (e.op === "duplicate") {
      chunks.splice(e.i + 1, 0, chunks[e.i]);
      at = e.i + 1;
      reasons = e.i === N - 1 ? ["after-final"] : ["duplicate"];
    } else {
      chunks.length = e.i;
      at = e.i;
      reasons = ["truncated"];
    }
    assertRefused(await open(chunks), ORIGINAL, at, reasons);
  }), { numRuns: 100 });
});

test("a splice of two capture attempts is refused at the first chunk of the other", async () => {
  const other = await seal(bytesOf(8, 2 * CHUNK_SIZE + 1000));
  await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: N - 1 }), async (i) => {
    const spliced = [...STREAM.bytes.slice(0, i), ...other.bytes.slice(i)];
    assertRefused(await open(spliced), ORIGINAL, i, ["other-stream"]);
  }), { numRuns: 20 });
  // Wholly the other attempt: refused when the site recorded which stream was captured.
  const r = await open(other.bytes, { streamId: STREAM.streamId });
  assertRefused(r, ORIGINAL, 0, ["other-stream"]);
});

test("a chunk of another association, or under another data key, does not authenticate", async () => {
  const small = Buffer.from("settings of the old machine");
  const theirs = await seal(small, { association: OTHER_ASSOCIATION });
  assertRefused(await open(theirs.bytes), small, 0, ["unauthentic"]);
  // Even with the same key and stream id, the association is bound in.
  const sameStream = sealChunk({ dataKey: KEY, associationId: OTHER_ASSOCIATION, streamId: STREAM.streamId, index: 2, final: true, plaintext: small });
  assertRefused(await open([STREAM.bytes[0], STREAM.bytes[1], sameStream]), ORIGINAL, 2, ["unauthentic"]);
  const wrongKey = crypto.randomBytes(32);
  assertRefused(await open(STREAM.bytes, { key: wrongKey }), ORIGINAL, 0, ["unauthentic"]);
});

test("a chunk's header cannot be rewritten to move it: final flag, index and stream id are authenticated", () => {
  const last = Buffer.from(STREAM.bytes[N - 1]);
  last[5] = 0; // clear the final flag
  assert.throws(() => openChunk(last, { dataKey: KEY, associationId: ASSOCIATION }), (e: StateCipherError) => e.reason === "unauthentic");
  const moved = Buffer.from(STREAM.bytes[1]);
  moved.writeUInt32BE(0, 22);
  assert.throws(() => openChunk(moved, { dataKey: KEY, associationId: ASSOCIATION }), (e: StateCipherError) => e.reason === "unauthentic");
});

test("malformed bytes are refused with the codec's own error, at every truncation", () => {
  const chunk = sealChunk({ dataKey: KEY, associationId: ASSOCIATION, streamId: STREAM.streamId, index: 0, final: true, plaintext: Buffer.from("abc") });
  for (let n = 0; n < chunk.length; n++) {
    assert.throws(() => parseChunkHeader(chunk.subarray(0, n)), (e: StateCipherError) => e instanceof StateCipherError && e.reason === "malformed", `prefix ${n}`);
  }
  assert.throws(() => parseChunkHeader(Buffer.concat([chunk, Buffer.from([0])])), /header says/);
  const v2 = Buffer.from(chunk);
  v2[4] = 2;
  assert.throws(() => parseChunkHeader(v2), /format version 2/);
  const flags = Buffer.from(chunk);
  flags[5] = 0x81;
  assert.throws(() => parseChunkHeader(flags), /unknown flag/);
});

test("bad options are refused before anything is sealed", () => {
  assert.throws(() => sealStream(each([]), { dataKey: Buffer.alloc(16), associationId: ASSOCIATION }), /32 bytes/);
  assert.throws(() => sealStream(each([]), { dataKey: KEY, associationId: "../../etc" }), /lowercase UUID/);
  assert.throws(() => sealStream(each([]), { dataKey: KEY, associationId: ASSOCIATION, streamId: "xyz" }), /32 lowercase hex/);
  assert.throws(() => sealChunk({ dataKey: KEY, associationId: ASSOCIATION, streamId: STREAM.streamId, index: -1, final: true, plaintext: Buffer.alloc(0) }), /index -1/);
});

const VECTORS = {
  chunkKey: "40eb53e8b6211fcc21f6132c4b654bdef8cb8cdab8a97a0ba06edd852860ada0",
  empty: "535755530101000102030405060708090a0b0c0d0e0f000000000000000077550c7b9b1c9b2c523e6a6425a9136c",
  hello: "535755530101000102030405060708090a0b0c0d0e0f000000000000001247ee65b3040e7bb0223d72e79a4602f18f614eb7951d9a28e90ffc3bb2ef67504693",
  twoChunkSha256: [
    "dc09f2e7c3edf2227263b078397d2e05f988280a05686fefbdd0d835f2567356",
    "a5cc098ce02515a749712146692b0fc1506ab5c62d1083cd24aa2ac7d10c591e",
  ],
  twoChunkLast: "535755530101000102030405060708090a0b0c0d0e0f00000001000000052dd66184f9f9208e96148cde26832379825155c96f",
};

// Test vectors, also printed in docs/user-state-format.md: another implementation checks itself
// against these. Changing any of them is a format change (a new version number).
const VECTOR_STREAM = "000102030405060708090a0b0c0d0e0f";
test("test vectors: the documented chunk key and chunks", async () => {
  const info = Buffer.concat([Buffer.from("slipway user-state v1\0"), Buffer.from(ASSOCIATION)]);
  const chunkKey = Buffer.from(crypto.hkdfSync("sha256", KEY, Buffer.from(VECTOR_STREAM, "hex"), info, 32));
  assert.equal(chunkKey.toString("hex"), VECTORS.chunkKey);
  const empty = await seal(Buffer.alloc(0), { streamId: VECTOR_STREAM });
  assert.equal(empty.bytes[0].toString("hex"), VECTORS.empty);
  const hello = await seal(Buffer.from("hello, user state\n"), { streamId: VECTOR_STREAM });
  assert.equal(hello.bytes[0].toString("hex"), VECTORS.hello);
  // Two chunks: CHUNK_SIZE + 5 bytes where byte i is i mod 251.
  const big = Buffer.alloc(CHUNK_SIZE + 5);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  const two = await seal(big, { streamId: VECTOR_STREAM });
  assert.deepEqual(two.bytes.map((b) => crypto.createHash("sha256").update(b).digest("hex")), VECTORS.twoChunkSha256);
  assert.equal(two.bytes[1].toString("hex"), VECTORS.twoChunkLast);
});

