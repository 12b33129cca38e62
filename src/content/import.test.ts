import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { detectFormat, importImage, restoreMissingChunks, ImportError } from "./import.ts";
import { DEFAULT_CHUNK_SIZE, verifyManifest, manifestDigest } from "./manifest.ts";
import { BlobStore } from "./blob-store.ts";

const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A one-file ustar archive, as tar(1) writes it: a 512-byte header with "ustar" at 257. */
function tarOf(content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write("hello.txt", 0);
  header.write("0000644\0", 100);
  header.write(content.length.toString(8).padStart(11, "0") + "\0", 124);
  header.write("ustar\0" + "00", 257);
  return Buffer.concat([header, content, Buffer.alloc(512 - (content.length % 512)), Buffer.alloc(1024)]);
}

describe("importImage", () => {
  let dir: string;
  let n = 0;
  const file = (bytes: Buffer) => {
    const f = path.join(dir, `in-${++n}`);
    fs.writeFileSync(f, bytes);
    return f;
  };
  const now = new Date();
  const opts = (f: string, extra: Record<string, unknown> = {}) => ({ dataDir: path.join(dir, "data"), file: f, name: "debian-base", signingKey: privateKey, now, ...extra });

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-import-"));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("detects tar, tar.gz, tar.zst and raw from the first bytes", () => {
    const tar = tarOf(Buffer.from("hello\n"));
    assert.equal(detectFormat(tar), "tar");
    assert.equal(detectFormat(zlib.gzipSync(tar)), "tar.gz");
    assert.equal(detectFormat(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00])), "tar.zst");
    assert.equal(detectFormat(Buffer.alloc(4096)), "raw");
    assert.equal(detectFormat(Buffer.from([0x1f])), "raw", "one byte is not a gzip header");
    assert.equal(detectFormat(Buffer.alloc(0)), "raw");
  });

  test("cuts the file into chunks stored by SHA-256 and signs a manifest of them, reporting progress", async () => {
    const bytes = randomBytes(10_000);
    const progress: [number, number][] = [];
    const r = await importImage(opts(file(bytes), { chunkSize: 4096, onProgress: (d: number, t: number) => progress.push([d, t]) }));
    const m = verifyManifest(r.signed, publicKey, r.digest);
    assert.equal(r.digest, manifestDigest(m));
    assert.equal(m.name, "debian-base");
    assert.equal(m.format, "raw");
    assert.equal(m.size, 10_000);
    assert.equal(m.sha256, sha(bytes));
    assert.equal(m.createdAt, now.toISOString());
    assert.deepEqual(m.chunks.map((c) => c.size), [4096, 4096, 1808]);
    const blobs = new BlobStore(path.join(dir, "data"));
    const stored = Buffer.concat(m.chunks.map((c) => fs.readFileSync(blobs.pathOf(c.sha256))));
    assert.ok(stored.equals(bytes));
    for (const c of m.chunks) assert.equal(fs.statSync(blobs.pathOf(c.sha256)).mode & 0o777, 0o600);
    assert.deepEqual(progress, [[0, 10_000], [4096, 10_000], [8192, 10_000], [10_000, 10_000]]);
    assert.equal(r.chunksWritten, 3);
  });

  test("the production chunk size is 4 MiB, and the last chunk is short", async () => {
    const bytes = randomBytes(DEFAULT_CHUNK_SIZE + 1);
    const r = await importImage(opts(file(bytes)));
    assert.equal(r.signed.manifest.chunkSize, DEFAULT_CHUNK_SIZE);
    assert.deepEqual(r.signed.manifest.chunks.map((c) => c.size), [DEFAULT_CHUNK_SIZE, 1]);
  });

  test("importing the same bytes twice stores them once; the manifests differ only in their time", async () => {
    const bytes = randomBytes(9000);
    const a = await importImage(opts(file(bytes), { chunkSize: 4096 }));
    const b = await importImage(opts(file(bytes), { chunkSize: 4096, now: new Date(now.getTime() + 1000) }));
    assert.equal(b.chunksWritten, 0);
    assert.equal(b.chunksReused, 3);
    assert.deepEqual({ ...b.signed.manifest, createdAt: "" }, { ...a.signed.manifest, createdAt: "" });
    assert.notEqual(a.digest, b.digest);
  });

  test("takes a stated format that agrees with the bytes, and detects it otherwise", async () => {
    const tar = tarOf(randomBytes(3000));
    assert.equal((await importImage(opts(file(tar)))).signed.manifest.format, "tar");
    assert.equal((await importImage(opts(file(zlib.gzipSync(tar)), { format: "tar.gz" }))).signed.manifest.format, "tar.gz");
    assert.equal((await importImage(opts(file(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]))))).signed.manifest.format, "tar.zst");
    // Pre-POSIX tar has no magic, so "tar" over unmarked bytes is believed.
    assert.equal((await importImage(opts(file(Buffer.alloc(1024, 1)), { format: "tar" }))).signed.manifest.format, "tar");
  });

  test("refuses a stated format the first bytes contradict, and stores nothing", async () => {
    const blobs = path.join(dir, "refused");
    const gz = zlib.gzipSync(tarOf(Buffer.from("x")));
    await assert.rejects(importImage({ ...opts(file(gz), { format: "tar" }), dataDir: blobs }), /said to be tar, but its first bytes are a gzip stream \(tar.gz\)/);
    await assert.rejects(importImage({ ...opts(file(gz), { format: "raw" }), dataDir: blobs }), /said to be raw, but its first bytes are a gzip stream/);
    await assert.rejects(importImage({ ...opts(file(tarOf(Buffer.from("x"))), { format: "tar.zst" }), dataDir: blobs }), /said to be tar.zst, but its first bytes are a tar archive/);
    await assert.rejects(importImage({ ...opts(file(Buffer.alloc(100)), { format: "tar.gz" }), dataDir: blobs }), /said to be tar.gz, but its first bytes are no known archive/);
    assert.equal(fs.existsSync(blobs), false);
  });

  test("refuses an empty file, a missing file, a folder, a bad name and an unknown format with a clear error", async () => {
    await assert.rejects(importImage(opts(file(Buffer.alloc(0)))), (e: ImportError) => e instanceof ImportError && /the file is empty/.test(e.message));
    await assert.rejects(importImage(opts(path.join(dir, "missing"))), (e: ImportError) => e.reason === "not-found" && /no such file/.test(e.message));
    await assert.rejects(importImage(opts(dir)), /not a regular file/);
    for (const name of ["", "../x", "-x", "a b", "x".repeat(129)]) {
      await assert.rejects(importImage(opts(file(Buffer.from("x")), { name })), /a name is 1-128 letters/, name);
    }
    await assert.rejects(importImage(opts(file(Buffer.from("x")), { format: "zip" })), /the format "zip" is not one of/);
  });

  test("restoreMissingChunks puts back a chunk removed after it was found, and notices a changed file", async () => {
    const bytes = randomBytes(9000);
    const f = file(bytes);
    const r = await importImage(opts(f, { chunkSize: 4096 }));
    const blobs = new BlobStore(path.join(dir, "data"));
    const middle = r.signed.manifest.chunks[1].sha256;
    fs.rmSync(blobs.pathOf(middle));
    assert.equal(await restoreMissingChunks(path.join(dir, "data"), f, r.signed.manifest), 1);
    assert.equal(sha(fs.readFileSync(blobs.pathOf(middle))), middle);
    assert.equal(await restoreMissingChunks(path.join(dir, "data"), f, r.signed.manifest), 0);
    fs.rmSync(blobs.pathOf(middle));
    fs.writeFileSync(f, randomBytes(9000));
    await assert.rejects(restoreMissingChunks(path.join(dir, "data"), f, r.signed.manifest), /changed while it was being imported \(chunk 1\)/);
  });
});
