import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { ChunkStore, StateStoreError, type ChunkStoreOptions, type StateStoreReason } from "./chunk-store.ts";
import { newStreamId, openStream, sealChunk, sealStream } from "../security/state-cipher.ts";

const A = "3f2b8c1e-6a4d-4e5f-9b7a-1c2d3e4f5a6b";
const B = "9d8c7b6a-5f4e-4d3c-8b2a-190817161514";
const KEY = crypto.randomBytes(32);
const ROOMY: ChunkStoreOptions = { capacityBytes: 1024 ** 3, associationQuotaBytes: 512 * 1024 ** 2, reserveBytes: 0 };

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-state-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, "state");
}

/** A sealed chunk with `size` bytes of plaintext (small chunks keep the tests fast; the store
 *  does not care how full a chunk is). */
function chunk(streamId: string, index: number, final = false, size = 100, associationId = A): Buffer {
  return sealChunk({ dataKey: KEY, associationId, streamId, index, final, plaintext: crypto.randomBytes(size) });
}

async function refused(p: Promise<unknown> | (() => unknown), reason: StateStoreReason, message?: RegExp): Promise<StateStoreError> {
  let caught: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof StateStoreError, `expected a StateStoreError (${reason}), got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  if (message) assert.match(caught.message, message);
  return caught;
}

/** Every file under `dir`, relative, sorted. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

test("a capture's chunks are stored durably, listed, read back exactly and complete once the final chunk and all before it are in", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const s = newStreamId();
  await store.beginStream(A, s);
  const c = [chunk(s, 0), chunk(s, 1), chunk(s, 2, true, 10)];
  assert.deepEqual(await store.put(A, s, 2, c[2], true), { written: true });
  assert.deepEqual(await store.put(A, s, 0, c[0], false), { written: true });
  assert.equal(store.complete(A), false);
  assert.equal(store.status(A)?.firstMissing, 1);
  await store.put(A, s, 1, c[1], false);
  assert.equal(store.complete(A), true);
  assert.deepEqual(store.chunks(A), c.map((b, index) => ({ index, size: b.length, final: index === 2 })));
  for (let i = 0; i < 3; i++) assert.ok((await store.read(A, i)).equals(c[i]));
  const bytes = c.reduce((n, b) => n + b.length, 0);
  assert.equal(store.usage(A), bytes);
  assert.equal(store.total(), bytes);
  assert.deepEqual(store.status(A), { associationId: A, streamId: s, chunkCount: 3, bytes, finalIndex: 2, complete: true, firstMissing: null });
  assert.deepEqual(store.associations(), [A]);
  // Private on disk: only the service account can enter or read.
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  assert.equal(fs.statSync(path.join(dir, A)).mode & 0o777, 0o700);
  for (const f of filesUnder(dir)) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
  // Reopened, the index is the same.
  const again = await ChunkStore.open(dir, ROOMY);
  assert.deepEqual(again.status(A), store.status(A));
  assert.deepEqual(again.chunks(A), store.chunks(A));
});

test("the same chunk put twice is accepted once; a different chunk for a stored index is refused and changes nothing", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const s = newStreamId();
  await store.beginStream(A, s);
  const first = chunk(s, 0);
  await store.put(A, s, 0, first, false);
  assert.deepEqual(await store.put(A, s, 0, Buffer.from(first), false), { written: false });
  await refused(store.put(A, s, 0, chunk(s, 0), false), "different-chunk", /different chunk 0 is already stored/);
  assert.ok((await store.read(A, 0)).equals(first));
  assert.equal(store.usage(A), first.length);
});

test("puts outside the association's current stream are refused; a new stream discards the unfinished one", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const s1 = newStreamId();
  const s2 = newStreamId();
  await refused(store.put(A, s1, 0, chunk(s1, 0), false), "no-stream", /no capture has been started/);
  assert.deepEqual(filesUnder(dir), []);
  await store.beginStream(A, s1);
  await store.put(A, s1, 0, chunk(s1, 0), false);
  await store.put(A, s1, 1, chunk(s1, 1), false);
  await refused(store.put(A, s2, 0, chunk(s2, 0), false), "other-stream", new RegExp(`current capture is stream ${s1}`));
  // Starting the current stream again is a retry, not a restart.
  assert.deepEqual(await store.beginStream(A, s1), { discardedChunks: 0 });
  assert.equal(store.chunks(A).length, 2);
  assert.deepEqual(await store.beginStream(A, s2), { discardedChunks: 2 });
  assert.deepEqual(store.chunks(A), []);
  assert.equal(store.total(), 0);
  assert.deepEqual(filesUnder(path.join(dir, A)), ["stream"]);
  await refused(store.put(A, s1, 2, chunk(s1, 2), false), "other-stream");
  await store.put(A, s2, 0, chunk(s2, 0, true), true);
  assert.equal(store.complete(A), true);
  // A complete capture is not thrown away by a new attempt: it must be destroyed first.
  await refused(store.beginStream(A, newStreamId()), "already-complete", /destroy it first/);
  assert.equal(store.complete(A), true);
});

test("nothing is stored after the final chunk, and no second final chunk", async (t) => {
  const store = await ChunkStore.open(tempDir(t), ROOMY);
  const s = newStreamId();
  await store.beginStream(A, s);
  await store.put(A, s, 3, chunk(s, 3), false);
  await refused(store.put(A, s, 2, chunk(s, 2, true), true), "after-final", /chunk 3 is already stored/);
  await store.put(A, s, 4, chunk(s, 4, true), true);
  await refused(store.put(A, s, 5, chunk(s, 5), false), "after-final", /chunk 4 is the final chunk/);
  await refused(store.put(A, s, 6, chunk(s, 6, true), true), "after-final");
  assert.deepEqual(store.chunks(A).map((c) => c.index), [3, 4]);
  assert.equal(store.status(A)?.firstMissing, 0);
});

test("a chunk whose header disagrees with the put, or that is not a chunk, is refused", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const s = newStreamId();
  await store.beginStream(A, s);
  await refused(store.put(A, s, 1, chunk(s, 0), false), "invalid", /header says stream .*, chunk 0/);
  await refused(store.put(A, s, 0, chunk(s, 0), true), "invalid", /header says/);
  await refused(store.put(A, s, 0, chunk(newStreamId(), 0), false), "invalid", /header says/);
  await refused(store.put(A, s, 0, crypto.randomBytes(200), false), "invalid", /magic/);
  await refused(store.put(A, s, 0, Buffer.alloc(0), false), "invalid", /sealed chunk is/);
  assert.deepEqual(filesUnder(path.join(dir, A)), ["stream"]);
});

test("no association id or index becomes a path: anything but a lowercase UUID and a 32-bit index is refused", async (t) => {
  const dir = tempDir(t);
  const parent = path.dirname(dir);
  const store = await ChunkStore.open(dir, ROOMY);
  const s = newStreamId();
  const bad = ["", "..", "../3f2b8c1e-6a4d-4e5f-9b7a-1c2d3e4f5a6b", A.toUpperCase(), `${A}/..`, `${A}\0`, "/etc/passwd", `${A} `];
  for (const id of bad) {
    await refused(store.beginStream(id, s), "invalid", /lowercase UUID/);
    await refused(store.put(id, s, 0, chunk(s, 0), false), "invalid", /lowercase UUID/);
    await refused(() => store.read(id, 0), "invalid");
    await refused(() => store.destroy(id), "invalid");
    await refused(() => store.usage(id), "invalid");
  }
  await store.beginStream(A, s);
  for (const index of [-1, 1.5, 2 ** 32, Number.NaN, "1" as unknown as number, Infinity]) {
    await refused(store.put(A, s, index, chunk(s, 0), false), "invalid", /chunk index/);
    await refused(() => store.read(A, index), "invalid", /chunk index/);
  }
  await refused(store.beginStream(A, "../../etc"), "invalid", /stream id/);
  await fc.assert(fc.asyncProperty(fc.string({ unit: "binary", maxLength: 60 }), async (id) => {
    fc.pre(id !== A);
    try {
      await store.beginStream(id, newStreamId());
      assert.match(id, /^[0-9a-f-]{36}$/);
      await store.destroy(id);
    } catch (err) {
      assert.ok(err instanceof StateStoreError && err.reason === "invalid");
    }
  }));
  // Nothing was created beside the store.
  assert.deepEqual(fs.readdirSync(parent), ["state"]);
});

test("a chunk over the association's quota is refused before a byte is written, naming the quota", async (t) => {
  const dir = tempDir(t);
  const one = chunk(newStreamId(), 0).length; // every 100-byte chunk seals to the same size
  const store = await ChunkStore.open(dir, { capacityBytes: 100 * one, associationQuotaBytes: 2 * one + 10, reserveBytes: 0 });
  const s = newStreamId();
  await store.beginStream(A, s);
  await store.put(A, s, 0, chunk(s, 0), false);
  await store.put(A, s, 1, chunk(s, 1), false);
  const err = await refused(store.put(A, s, 2, chunk(s, 2), false), "quota", new RegExp(`quota of ${2 * one + 10} bytes would be exceeded`));
  assert.equal(err.code, "QUOTA_EXCEEDED");
  assert.equal(err.status, 507);
  assert.deepEqual(err.details, { reason: "quota", limit: 2 * one + 10, used: 2 * one, needed: one });
  assert.deepEqual(filesUnder(path.join(dir, A)), ["0000000000.chunk", "0000000001.chunk", "stream"]);
  assert.equal(store.usage(A), 2 * one);
  // Another association has its own quota.
  const s2 = newStreamId();
  await store.beginStream(B, s2);
  await store.put(B, s2, 0, chunk(s2, 0, false, 100, B), false);
  await refused(store.beginStream(B, newStreamId(), { expectedBytes: 2 * one + 11 }), "quota", /quota/);
  assert.equal(store.chunks(B).length, 1, "a refused start keeps the unfinished stream");
  assert.equal(await store.available(A), 10);
});

test("the store's capacity holds across concurrent puts to many associations", async (t) => {
  const dir = tempDir(t);
  const one = chunk(newStreamId(), 0).length;
  const store = await ChunkStore.open(dir, { capacityBytes: 5 * one, associationQuotaBytes: 100 * one, reserveBytes: 0 });
  const ids = Array.from({ length: 12 }, () => crypto.randomUUID());
  const streams = new Map(ids.map((id) => [id, newStreamId()]));
  for (const id of ids) await store.beginStream(id, streams.get(id)!);
  const results = await Promise.allSettled(ids.map((id) => store.put(id, streams.get(id)!, 0, chunk(streams.get(id)!, 0, false, 100, id), false)));
  const ok = results.filter((r) => r.status === "fulfilled").length;
  assert.equal(ok, 5);
  for (const r of results) {
    if (r.status === "rejected") assert.ok(r.reason instanceof StateStoreError && r.reason.reason === "capacity", String(r.reason));
  }
  assert.equal(store.total(), 5 * one);
  assert.equal(filesUnder(dir).filter((f) => f.endsWith(".chunk")).length, 5);
  assert.equal(await store.available(), 0);
});

test("the store never eats into the disk's reserve, whatever the quotas allow", async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(dir, { recursive: true });
  const st = fs.statfsSync(dir);
  const free = st.bavail * st.bsize;
  const store = await ChunkStore.open(dir, { capacityBytes: 2 ** 52, associationQuotaBytes: 2 ** 52, reserveBytes: free + 1024 ** 3 }); // above what is free, even if others free some meanwhile
  const s = newStreamId();
  await store.beginStream(A, s);
  await refused(store.put(A, s, 0, chunk(s, 0), false), "disk-reserve", /must stay free/);
  await refused(store.beginStream(B, newStreamId(), { expectedBytes: 1 }), "disk-reserve");
  assert.deepEqual(store.chunks(A), []);
  assert.equal(await store.available(A), 0);
  await assert.rejects(ChunkStore.open(dir, { capacityBytes: 0, associationQuotaBytes: 1 }), /capacityBytes must be an integer of at least 1/);
});

test("destroy removes the association's chunks and its folder", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const s = newStreamId();
  await store.beginStream(A, s);
  await store.put(A, s, 0, chunk(s, 0, true), true);
  assert.equal(await store.destroy(A), true);
  assert.equal(await store.destroy(A), false);
  assert.deepEqual(fs.readdirSync(dir), []);
  assert.equal(store.total(), 0);
  assert.equal(store.status(A), null);
  await refused(store.read(A, 0), "not-found");
  // The association can capture again afterwards.
  await store.beginStream(A, newStreamId());
});

test("opening after a crash removes temporary files and half-done destroys and starts, and rebuilds the index from the chunks", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const old = newStreamId();
  const s = newStreamId();
  await store.beginStream(A, old);
  const oldChunk = chunk(old, 5);
  await store.put(A, old, 5, oldChunk, false);
  await store.beginStream(A, s);
  const kept = chunk(s, 0);
  await store.put(A, s, 0, kept, false);
  const folder = path.join(dir, A);
  // What a crash can leave: a put's temporary file, an old stream's chunk whose discard did not
  // happen, a destroy that renamed but did not finish, a start whose stream id never landed.
  fs.writeFileSync(path.join(folder, ".tmp-0123456789abcdef"), chunk(s, 1).subarray(0, 50));
  fs.writeFileSync(path.join(dir, ".tmp-aaaa"), "x");
  fs.writeFileSync(path.join(folder, "0000000005.chunk"), oldChunk);
  fs.mkdirSync(path.join(dir, `.destroy-${B}-abcdef`));
  fs.writeFileSync(path.join(dir, `.destroy-${B}-abcdef`, "0000000000.chunk"), "ciphertext");
  const orphan = crypto.randomUUID();
  fs.mkdirSync(path.join(dir, orphan));
  fs.writeFileSync(path.join(dir, orphan, ".tmp-1"), "");
  // And disk damage: a chunk whose header names another index.
  fs.writeFileSync(path.join(folder, "0000000007.chunk"), chunk(s, 8));
  const reopened = await ChunkStore.open(dir, ROOMY);
  assert.deepEqual(reopened.recovery, { removedTempFiles: 3, discardedChunks: 1, removedFolders: 2, corrupt: [path.join(A, "0000000007.chunk")] });
  assert.deepEqual(filesUnder(dir), [`${A}/0000000000.chunk`, `${A}/0000000007.chunk.corrupt`, `${A}/stream`]);
  assert.deepEqual(reopened.chunks(A), [{ index: 0, size: kept.length, final: false }]);
  assert.equal(reopened.total(), kept.length);
  // The capture goes on.
  await reopened.put(A, s, 1, chunk(s, 1, true), true);
  assert.equal(reopened.complete(A), true);
});

test("any sequence of starts, puts, destroys and reopens keeps the store equal to a model of what was acknowledged", async (t) => {
  const dir = tempDir(t);
  const ids = [A, B];
  const op = fc.oneof(
    fc.record({ op: fc.constant("begin" as const), who: fc.integer({ min: 0, max: 1 }), fresh: fc.boolean() }),
    fc.record({ op: fc.constant("put" as const), who: fc.integer({ min: 0, max: 1 }), index: fc.integer({ min: 0, max: 4 }), final: fc.boolean(), same: fc.boolean() }),
    fc.record({ op: fc.constant("destroy" as const), who: fc.integer({ min: 0, max: 1 }) }),
    fc.record({ op: fc.constant("reopen" as const) }),
  );
  const one = chunk(newStreamId(), 0).length;
  const options = { capacityBytes: 7 * one, associationQuotaBytes: 4 * one, reserveBytes: 0 };
  await fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 30 }), async (ops) => {
    fs.rmSync(dir, { recursive: true, force: true });
    let store = await ChunkStore.open(dir, options);
    type M = { stream: string; chunks: Map<number, { bytes: Buffer; final: boolean }> };
    const model = new Map<string, M>();
    const streams = new Map<string, string>(); // the stream a caller is working on
    for (const o of ops) {
      if (o.op === "reopen") {
        store = await ChunkStore.open(dir, options);
        continue;
      }
      const id = ids[o.who];
      const m = model.get(id);
      if (o.op === "begin") {
        const s = o.fresh || !streams.has(id) ? newStreamId() : streams.get(id)!;
        streams.set(id, s);
        const finalIndex = m ? [...m.chunks].find(([, c]) => c.final)?.[0] : undefined;
        const complete = finalIndex !== undefined && m!.chunks.size === finalIndex + 1;
        try {
          await store.beginStream(id, s);
          assert.ok(!complete || m!.stream === s);
          if (!m || m.stream !== s) model.set(id, { stream: s, chunks: new Map() });
        } catch (err) {
          assert.ok(err instanceof StateStoreError && err.reason === "already-complete" && complete, String(err));
        }
      } else if (o.op === "destroy") {
        assert.equal(await store.destroy(id), m !== undefined);
        model.delete(id);
      } else {
        const s = streams.get(id) ?? newStreamId();
        const existing = m?.stream === s ? m.chunks.get(o.index) : undefined;
        const bytes = o.same && existing ? existing.bytes : chunk(s, o.index, o.final, 100, id);
        const used = [...model.values()].reduce((n, x) => n + x.chunks.size * one, 0);
        try {
          await store.put(id, s, o.index, bytes, o.final);
          assert.ok(m && m.stream === s, "a put without the current stream was accepted");
          if (existing) assert.ok(existing.bytes.equals(bytes), "a different chunk replaced a stored one");
          else {
            assert.ok(m.chunks.size * one + one <= options.associationQuotaBytes && used + one <= options.capacityBytes, "over quota accepted");
            m.chunks.set(o.index, { bytes, final: o.final });
          }
        } catch (err) {
          assert.ok(err instanceof StateStoreError, String(err));
        }
      }
      // After every step: exactly the acknowledged chunks, byte for byte.
      for (const id2 of ids) {
        const m2 = model.get(id2);
        assert.deepEqual(store.chunks(id2).map((c) => c.index), m2 ? [...m2.chunks.keys()].sort((x, y) => x - y) : []);
        for (const [index, c] of m2?.chunks ?? []) assert.ok((await store.read(id2, index)).equals(c.bytes));
      }
      assert.equal(store.total(), [...model.values()].reduce((n, x) => n + x.chunks.size * one, 0));
    }
  }), { numRuns: 150 });
});

test("no plaintext reaches the store's disk: a canary in the user state is found nowhere, plain, base64 or hex", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const canary = `slipway-canary-${crypto.randomBytes(12).toString("hex")}`;
  const plaintext = Buffer.concat([crypto.randomBytes(5000), Buffer.from(`home/alice/notes.txt\0${canary}\n`.repeat(50)), crypto.randomBytes(5000)]);
  const sealed = sealStream((async function* () { yield plaintext; })(), { dataKey: KEY, associationId: A });
  await store.beginStream(A, sealed.streamId);
  for await (const c of sealed) await store.put(A, sealed.streamId, c.index, c.bytes, c.final);
  assert.equal(store.complete(A), true);

  const needles = [Buffer.from(canary), Buffer.from(canary.toUpperCase()), Buffer.from(Buffer.from(canary).toString("hex")),
    Buffer.from(Buffer.from(canary).toString("hex").toUpperCase()), Buffer.from("home/alice/notes.txt")];
  // base64 of the canary at each of the three alignments it can start at, minus the edge characters.
  for (let shift = 0; shift < 3; shift++) {
    const b64 = Buffer.concat([Buffer.alloc(shift, 0x20), Buffer.from(canary)]).toString("base64");
    needles.push(Buffer.from(b64.slice(4, -4)));
  }
  const search = (root: string) => filesUnder(root).flatMap((f) => {
    const bytes = fs.readFileSync(path.join(root, f));
    return needles.filter((n) => bytes.includes(n)).map((n) => `${f}: ${n}`);
  });
  // The search finds the canary where it is in plain sight (so an empty result means something)…
  const control = path.join(path.dirname(dir), "control");
  fs.mkdirSync(control);
  fs.writeFileSync(path.join(control, "leak"), Buffer.from(canary).toString("base64"));
  assert.equal(search(control).length, 1);
  // …and finds nothing in the store.
  assert.deepEqual(search(dir), []);
  // While the chunks still restore to the plaintext with the key.
  const chunks = (async function* () { for (const c of store.chunks(A)) yield await store.read(A, c.index); })();
  const out = [];
  for await (const p of openStream(chunks, { dataKey: KEY, associationId: A, streamId: sealed.streamId })) out.push(p);
  assert.ok(Buffer.concat(out).equals(plaintext));
});

test("damage no crash can cause is set aside, not served and not deleted", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open(dir, ROOMY);
  const s = newStreamId();
  await store.beginStream(A, s);
  const c = chunk(s, 0);
  await store.put(A, s, 0, c, false);
  fs.writeFileSync(path.join(dir, A, "stream"), "garbage");
  // Something planted at an association's name is never written through.
  const elsewhere = path.join(path.dirname(dir), "elsewhere");
  fs.mkdirSync(elsewhere);
  fs.symlinkSync(elsewhere, path.join(dir, B));
  const reopened = await ChunkStore.open(dir, ROOMY);
  assert.deepEqual(reopened.recovery.corrupt, [`${A}.corrupt/`]);
  assert.equal(reopened.status(A), null);
  assert.ok(fs.readFileSync(path.join(dir, `${A}.corrupt`, "0000000000.chunk")).equals(c));
  await assert.rejects(reopened.beginStream(B, newStreamId()), /is not a folder/);
  assert.deepEqual(fs.readdirSync(elsewhere), []);
});
