import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import {
  ChunkVerifier, DEFAULT_CHUNK_SIZE, MANIFEST_KIND, ManifestError, isManifestDigest, isManifestName, manifestDigest, signManifest, verifyManifest,
  type Manifest,
} from "./manifest.ts";
import { canonicalJson } from "../security/canonical-json.ts";
import { signValue } from "../security/signing.ts";

const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A manifest for `data` cut into `chunkSize` chunks. */
function manifestOf(data: Buffer, chunkSize: number, name = "debian-base"): Manifest {
  const chunks = [];
  for (let at = 0; at < data.length; at += chunkSize) {
    const c = data.subarray(at, at + chunkSize);
    chunks.push({ sha256: sha(c), size: c.length });
  }
  return { kind: MANIFEST_KIND, name, format: "raw", size: data.length, sha256: sha(data), chunkSize, chunks, createdAt: "2026-11-25T12:00:00.000Z" };
}

describe("verifyManifest", () => {
  const data = randomBytes(100);
  const m = manifestOf(data, 16);
  const signed = signManifest(m, privateKey);
  const digest = manifestDigest(m);

  test("accepts the site's manifest, also by the digest a policy names", () => {
    assert.deepEqual(verifyManifest(signed, publicKey), m);
    assert.deepEqual(verifyManifest(JSON.parse(JSON.stringify(signed)), publicKey, digest), m);
    assert.ok(isManifestDigest(digest));
  });

  test("refuses a manifest signed by another key, or with a signature of something else", () => {
    const other = generateKeyPairSync("ed25519");
    assert.throws(() => verifyManifest(signManifest(m, other.privateKey), publicKey), /signature is not the site's/);
    assert.throws(() => verifyManifest({ manifest: m, signature: signValue(privateKey, { ...m, name: "other" }) }, publicKey), /signature is not the site's/);
    assert.throws(() => verifyManifest({ manifest: m, signature: "A".repeat(86) + "==" }, publicKey), ManifestError);
    assert.throws(() => verifyManifest({ manifest: m, signature: signed.signature + " " }, publicKey), ManifestError);
  });

  test("refuses a genuine manifest that is not the one the policy names", () => {
    const other = { ...m, createdAt: "2026-11-25T12:00:00.001Z" };
    assert.throws(() => verifyManifest(signManifest(other, privateKey), publicKey, digest), /not sha256:[0-9a-f]{64}, the one the policy names/);
    assert.throws(() => verifyManifest(signed, publicKey, "sha256:" + "0".repeat(64)), ManifestError);
  });

  test("refuses documents that are not signed manifests", () => {
    for (const doc of [null, undefined, 42, "text", [], {}, { manifest: m }, { signature: signed.signature }, { manifest: "x", signature: signed.signature }, { manifest: null, signature: signed.signature }]) {
      assert.throws(() => verifyManifest(doc, publicKey), ManifestError, JSON.stringify(doc));
    }
  });

  test("refuses a badly shaped manifest even when the site signed it", () => {
    const bad: [string, Record<string, unknown>][] = [
      ["kind", { kind: "slipway.policy/v1" }],
      ["name", { name: "../etc" }],
      ["name", { name: "" }],
      ["format", { format: "zip" }],
      ["sha256", { sha256: "AB".repeat(32) }],
      ["chunk size", { chunkSize: 0 }],
      ["chunk size", { chunkSize: 1.5 }],
      ["chunk list", { chunks: "none" }],
      ["chunk 0", { chunks: [{ sha256: "x", size: 16 }, ...m.chunks.slice(1)] }],
      ["chunk 1", { chunks: [m.chunks[0], { ...m.chunks[1], size: 0 }, ...m.chunks.slice(2)] }],
      ["chunk 6", { chunks: [...m.chunks.slice(0, 6), { ...m.chunks[6], size: 17 }] }],
      ["short but not the last", { chunks: [{ ...m.chunks[0], size: 15 }, ...m.chunks.slice(1)], size: 99 }],
      ["sum", { size: 101 }],
      ["sum", { size: -1 }],
      ["creation time", { createdAt: "yesterday" }],
    ];
    for (const [why, patch] of bad) {
      const forged = { ...m, ...patch };
      assert.throws(() => verifyManifest({ manifest: forged, signature: signValue(privateKey, forged) }, publicKey), ManifestError, why);
      assert.throws(() => signManifest(forged as Manifest, privateKey), ManifestError, `signing refuses it too: ${why}`);
    }
  });

  test("1,000 random single-bit flips in the signed JSON are all refused", () => {
    const bytes = Buffer.from(canonicalJson(signed));
    for (let i = 0; i < 1000; i++) {
      const flipped = Buffer.from(bytes);
      const at = Math.floor(Math.random() * flipped.length);
      const bit = Math.floor(Math.random() * 8);
      flipped[at] ^= 1 << bit;
      let doc: unknown;
      try {
        doc = JSON.parse(flipped.toString("utf8"));
      } catch {
        continue; // not JSON any more: refused before it could reach verifyManifest
      }
      assert.throws(() => verifyManifest(doc, publicKey, digest), ManifestError, `bit ${bit} of byte ${at}`);
    }
    assert.deepEqual(verifyManifest(JSON.parse(bytes.toString("utf8")), publicKey, digest), m);
  });

  test("names and digests are checked by the same rules the manifest uses", () => {
    for (const n of ["debian-12_base.v2", "a", "A".repeat(128)]) assert.ok(isManifestName(n), n);
    for (const n of ["", "-x", ".hidden", "a/b", "A".repeat(129), "sha256:00", "a b"]) assert.ok(!isManifestName(n), n);
    for (const d of ["sha256:" + "0".repeat(63), "sha256:" + "A".repeat(64), "sha1:" + "0".repeat(64), "0".repeat(64), "sha256:" + "0".repeat(65)]) assert.ok(!isManifestDigest(d), d);
  });
});

describe("ChunkVerifier", () => {
  const chunkSize = 7;
  const data = randomBytes(chunkSize * 5 + 3);
  const m = manifestOf(data, chunkSize);

  test("a stream split at any single point yields exactly the bytes, chunk by verified chunk", () => {
    for (let split = 0; split <= data.length; split++) {
      const v = new ChunkVerifier(m);
      const out = [...v.push(data.subarray(0, split)), ...v.push(data.subarray(split))];
      v.finish();
      assert.ok(Buffer.concat(out).equals(data), `split at ${split}`);
      assert.deepEqual(out.map((c) => c.length), m.chunks.map((c) => c.size), "one piece per chunk");
    }
  });

  test("byte-at-a-time and chunk-boundary pushes give each chunk once it is complete", () => {
    const v = new ChunkVerifier(m);
    const out: Buffer[] = [];
    for (let i = 0; i < data.length; i++) {
      const got = v.push(data.subarray(i, i + 1));
      const boundary = (i + 1) % chunkSize === 0 || i + 1 === data.length;
      assert.equal(got.length, boundary ? 1 : 0, `after byte ${i}`);
      out.push(...got);
    }
    v.finish();
    assert.ok(Buffer.concat(out).equals(data));
    assert.equal(v.nextChunk, m.chunks.length);
  });

  test("resumes from any chunk k at its byte offset", () => {
    for (let k = 0; k <= m.chunks.length; k++) {
      const v = new ChunkVerifier(m, k);
      assert.equal(v.offset, k * chunkSize);
      const rest = data.subarray(v.offset);
      const out: Buffer[] = [];
      // Uneven pieces: 3 bytes, then 5, then the rest.
      for (const piece of [rest.subarray(0, 3), rest.subarray(3, 8), rest.subarray(8)]) out.push(...v.push(piece));
      v.finish();
      assert.ok(Buffer.concat(out).equals(rest), `resume at chunk ${k}`);
    }
  });

  test("a flipped byte is refused naming its chunk, and nothing of that chunk is released", () => {
    for (const at of [0, 6, 7, 20, data.length - 1]) {
      const bad = Buffer.from(data);
      bad[at] ^= 0x01;
      const v = new ChunkVerifier(m);
      const released: Buffer[] = [];
      const chunk = Math.floor(at / chunkSize);
      assert.throws(() => {
        for (let i = 0; i < bad.length; i += 4) released.push(...v.push(bad.subarray(i, i + 4)));
      }, new RegExp(`sha256 mismatch in chunk ${chunk} \\(bytes ${chunk * chunkSize}-`));
      assert.equal(released.length, chunk, "only the chunks before it");
    }
  });

  test("too few or too many bytes are refused", () => {
    const short = new ChunkVerifier(m);
    short.push(data.subarray(0, data.length - 1));
    assert.throws(() => short.finish(), /ended at chunk 5 of 6/);
    const long = new ChunkVerifier(m);
    assert.throws(() => long.push(Buffer.concat([data, Buffer.from([0])])), /more bytes than the manifest lists/);
  });

  test("the production chunk size is 4 MiB", () => {
    assert.equal(DEFAULT_CHUNK_SIZE, 4 * 1024 * 1024);
  });
});
