/**
 * Content delivery end to end: an image imported into the content library, named by digest in
 * a device's signed policy, fetched over mutual TLS as a signed manifest and as bytes — whole,
 * by Range and resumed after a broken connection — and verified chunk by chunk on the client.
 * Only devices whose policy names the manifest get it; everything else is refused and audited.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createHash, createPublicKey, randomBytes, type KeyObject } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { fetchBytes, newMachine, request, type Download, type TestMachine } from "../support/device.ts";
import { addImage, deleteImage } from "../../src/site/content-library.ts";
import { ChunkVerifier, DEFAULT_CHUNK_SIZE, ManifestError, verifyManifest, type Manifest } from "../../src/content/manifest.ts";
import { BlobStore } from "../../src/content/blob-store.ts";
import { verifyPolicy } from "../../src/security/signed-policy.ts";
import { SlipwayError } from "../../src/errors.ts";

/** GET (or HEAD) on the management point with the machine's certificate, the body as bytes. */
function download(t: TestSite, m: TestMachine | null, p: string, opts: { headers?: Record<string, string>; method?: string; stopAfter?: number } = {}): Promise<Download> {
  return fetchBytes(t.mp.url, t.ca, m, p, { ...opts, agent: m?.agent ?? false });
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** What an agent does with downloaded bytes: verify chunk by chunk; returns the verified bytes. */
function verifyBytes(manifest: Manifest, body: Buffer, startChunk = 0): Buffer {
  const v = new ChunkVerifier(manifest, startChunk);
  const out = v.push(body);
  v.finish();
  return Buffer.concat(out);
}

for (const database of databasesUnderTest()) {
  describe(`content delivery on ${database}`, () => {
    let t: TestSite;
    let pinned: KeyObject;
    let image: Buffer;
    let digest = "";
    let olderDigest = "";
    let deploymentId = "";
    let a: TestMachine, b: TestMachine;
    let aId = "", bId = "";
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    let n = 0;
    async function enrolledMachine(name: string, room: string): Promise<{ m: TestMachine; id: string }> {
      n++;
      const ids = { macs: [`52:54:00:c0:00:${n.toString(16).padStart(2, "0")}`], smbiosUuid: `00000000-0000-4000-8000-c000000000${n.toString(16).padStart(2, "0")}` };
      const r = await admin("POST", "/api/v1/devices", { name, ...ids, state: "approved", attributes: { room } });
      assert.equal(r.status, 201, r.text);
      const m = await newMachine(t, ids);
      const e = await m.enroll({ kind: "pre-approved" });
      assert.equal(e.status, 201, e.text);
      return { m, id: r.body.id };
    }

    before(async () => {
      t = await startTestSite({ database });
      pinned = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
      // Two and a half chunks, so a download crosses chunk files and ends on a short one.
      image = randomBytes(DEFAULT_CHUNK_SIZE * 2 + 1_234_567);
      const file = path.join(t.dataDir, "debian-base.img");
      fs.writeFileSync(file, image);
      olderDigest = (await addImage(t.site, { file, name: "debian-base", actor: "test" })).record.digest;
      await new Promise((r) => setTimeout(r, 5));
      digest = (await addImage(t.site, { file, name: "debian-base", actor: "test" })).record.digest;
      ({ m: a, id: aId } = await enrolledMachine("content-a", "L1"));
      ({ m: b, id: bId } = await enrolledMachine("content-b", "L2"));
      await admin("POST", "/api/v1/collections", { name: "Lab L1", rule: "attributes.room == 'L1'" });
      const doc = { name: "Image L1", steps: [{ name: "Apply", type: "apply-image", with: { image: "debian-base" } }, { name: "Apply missing", type: "apply-image", with: { image: "not-imported" } }] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
      // Media only: the device's PXE policy is empty, and content must still be allowed.
      const dep = await admin("POST", "/api/v1/deployments", { name: "L1 image", taskSequence: "Image L1", collection: "Lab L1", purpose: "required", bootPaths: ["media"] });
      assert.equal(dep.status, 201, dep.text);
      deploymentId = dep.body.id;
    });
    after(async () => {
      a?.close();
      b?.close();
      await t.close();
    });

    it("the policy names each image with the digest of the newest manifest of that name", async () => {
      const r = await a.call("GET", "/mp/v1/policy?bootPath=media");
      assert.equal(r.status, 200, r.text);
      const p = verifyPolicy(r.body, pinned, { deviceId: aId, now: new Date() });
      assert.deepEqual(p.deployments[0].content, [{ image: "debian-base", manifest: digest, sources: [] }, { image: "not-imported", manifest: null, sources: [] }]);
      assert.notEqual(digest, olderDigest);
      assert.equal((await a.call("GET", "/mp/v1/policy?bootPath=pxe")).body.policy.deployments.length, 0);
    });

    it("serves the signed manifest, which verifies with the site's public key as the digest the policy names", async () => {
      const r = await a.call("GET", `/mp/v1/content/${digest}/manifest`);
      assert.equal(r.status, 200, r.text);
      const m = verifyManifest(r.body, pinned, digest);
      assert.equal(m.name, "debian-base");
      assert.equal(m.size, image.length);
      assert.equal(m.sha256, sha(image));
      assert.equal(m.chunks.length, 3);
      const encoded = await a.call("GET", `/mp/v1/content/${encodeURIComponent(digest)}/manifest`);
      assert.equal(encoded.status, 200, "a percent-encoded digest names the same content");
    });

    it("serves the exact bytes, streamed, with their length and Range support", async () => {
      const r = await download(t, a, `/mp/v1/content/${digest}/data`);
      assert.equal(r.status, 200);
      assert.equal(r.headers["content-length"], String(image.length));
      assert.equal(r.headers["accept-ranges"], "bytes");
      assert.equal(r.headers["content-type"], "application/octet-stream");
      assert.ok(r.body.equals(image));
      const m = verifyManifest((await a.call("GET", `/mp/v1/content/${digest}/manifest`)).body, pinned, digest);
      assert.ok(verifyBytes(m, r.body).equals(image));
      const head = await download(t, a, `/mp/v1/content/${digest}/data`, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.headers["content-length"], String(image.length));
      assert.equal(head.body.length, 0);
    });

    it("a download resumed with Range reassembles to the same SHA-256", async () => {
      const half = Math.floor(image.length / 2);
      const first = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range: `bytes=0-${half - 1}` } });
      assert.equal(first.status, 206);
      assert.equal(first.headers["content-range"], `bytes 0-${half - 1}/${image.length}`);
      assert.equal(first.body.length, half);
      const rest = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range: `bytes=${half}-` } });
      assert.equal(rest.status, 206);
      assert.equal(rest.headers["content-range"], `bytes ${half}-${image.length - 1}/${image.length}`);
      assert.equal(rest.headers["content-length"], String(image.length - half));
      assert.equal(sha(Buffer.concat([first.body, rest.body])), sha(image));
      const middle = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range: `bytes=${DEFAULT_CHUNK_SIZE - 10}-${DEFAULT_CHUNK_SIZE + 9}` } });
      assert.ok(middle.body.equals(image.subarray(DEFAULT_CHUNK_SIZE - 10, DEFAULT_CHUNK_SIZE + 10)), "a range across a chunk boundary");
      const suffix = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range: "bytes=-100" } });
      assert.ok(suffix.body.equals(image.subarray(-100)));
    });

    it("after a broken connection the agent resumes at its last verified chunk", async () => {
      const m = verifyManifest((await a.call("GET", `/mp/v1/content/${digest}/manifest`)).body, pinned, digest);
      const cut = await download(t, a, `/mp/v1/content/${digest}/data`, { stopAfter: DEFAULT_CHUNK_SIZE + 100_000 });
      assert.ok(cut.body.length < image.length);
      const v = new ChunkVerifier(m);
      const kept = Buffer.concat(v.push(cut.body.subarray(0, Math.min(cut.body.length, 2 * DEFAULT_CHUNK_SIZE - 1))));
      assert.equal(v.nextChunk, 1);
      const resumed = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range: `bytes=${v.offset}-` } });
      assert.equal(resumed.status, 206);
      const after = verifyBytes(m, resumed.body, v.nextChunk);
      assert.equal(sha(Buffer.concat([kept, after])), m.sha256);
      await new Promise((r) => setTimeout(r, 100)); // the server notices the closed connection
      assert.ok(!t.logLines.some((l) => l.includes("streamed response failed")), "a client going away is not a server error");
    });

    it("a range past the end gets 416 with the content's size", async () => {
      for (const range of [`bytes=${image.length}-`, `bytes=${image.length + 5}-${image.length + 10}`, "bytes=-0"]) {
        const r = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range } });
        assert.equal(r.status, 416, range);
        assert.equal(r.headers["content-range"], `bytes */${image.length}`);
        assert.equal(JSON.parse(r.body.toString()).code, "SLIPWAY_RANGE_NOT_SATISFIABLE");
      }
      const ignored = await download(t, a, `/mp/v1/content/${digest}/data`, { headers: { range: "bytes=0-1,5-6" }, method: "HEAD" });
      assert.equal(ignored.status, 200, "several ranges are ignored: the whole content");
    });

    it("a device whose policy does not name the manifest gets 403, audited as content.denied", async () => {
      for (const p of [`/mp/v1/content/${digest}/manifest`, `/mp/v1/content/${digest}/data`]) {
        const r = await b.call("GET", p);
        assert.equal(r.status, 403, p);
        assert.equal(r.body.code, "SLIPWAY_NOT_YOUR_RESOURCE");
      }
      const older = await a.call("GET", `/mp/v1/content/${olderDigest}/data`);
      assert.equal(older.status, 403, "an older manifest of the same name is not in the policy");
      const denied = (await admin("GET", "/api/v1/audit?action=content.denied&limit=100")).body as { actor: string; object: string; outcome: string }[];
      assert.ok(denied.some((e) => e.actor === `device:${bId}` && e.object === `content:${digest}` && e.outcome === "denied"));
      assert.ok(denied.some((e) => e.actor === `device:${aId}` && e.object === `content:${olderDigest}`));
    });

    it("without a client certificate nothing is served", async () => {
      for (const p of [`/mp/v1/content/${digest}/manifest`, `/mp/v1/content/${digest}/data`]) {
        const r = await request(t.mp.url, { method: "GET", path: p, ca: t.ca });
        assert.equal(r.status, 401, p);
        assert.equal(r.body.code, "SLIPWAY_CERTIFICATE_REQUIRED");
      }
    });

    it("malformed digests get 400 or 404, and the server keeps serving", async () => {
      const cases: [string, number][] = [
        ["/mp/v1/content/sha256:1234/data", 400],
        [`/mp/v1/content/sha256:${"AB".repeat(32)}/manifest`, 400],
        [`/mp/v1/content/${"ab".repeat(32)}/data`, 400],
        [`/mp/v1/content/md5:${"ab".repeat(16)}/data`, 400],
        ["/mp/v1/content/%ZZ/data", 400],
        [`/mp/v1/content/${encodeURIComponent(digest + "\u0000")}/data`, 400],
        [`/mp/v1/content/${"x".repeat(5000)}/data`, 400],
        [`/mp/v1/content/sha256:${"0".repeat(64)}/data`, 404],
        [`/mp/v1/content/sha256:${"0".repeat(64)}/manifest`, 404],
        ["/mp/v1/content//data", 404],
        ["/mp/v1/content/../../../etc/passwd", 404],
        [`/mp/v1/content/${digest}/data/extra`, 404],
        [`/mp/v1/content/${digest}`, 404],
      ];
      for (const [p, status] of cases) {
        const r = await a.call("GET", p);
        assert.equal(r.status, status, `${p.slice(0, 100)}: ${r.text.slice(0, 200)}`);
        assert.ok(r.body?.code?.startsWith("SLIPWAY_"), p.slice(0, 100));
      }
      assert.equal((await a.call("POST", `/mp/v1/content/${digest}/data`)).status, 405);
      assert.equal((await a.call("GET", `/mp/v1/content/${digest}/manifest`)).status, 200);
    });

    it("a flipped byte in a chunk file on disk is served as it is, and the client's verifier names the chunk", async () => {
      const m = verifyManifest((await a.call("GET", `/mp/v1/content/${digest}/manifest`)).body, pinned, digest);
      const file = new BlobStore(t.dataDir).pathOf(m.chunks[1].sha256);
      const good = fs.readFileSync(file);
      const bad = Buffer.from(good);
      bad[12345] ^= 0x20;
      fs.writeFileSync(file, bad);
      try {
        const r = await download(t, a, `/mp/v1/content/${digest}/data`);
        assert.equal(r.status, 200);
        assert.equal(r.body.length, image.length, "the download itself succeeds");
        assert.throws(() => verifyBytes(m, r.body), (e: Error) => e instanceof ManifestError && /sha256 mismatch in chunk 1 \(bytes 4194304-8388607\)/.test(e.message));
      } finally {
        fs.writeFileSync(file, good);
      }
    });

    it("an image an enabled deployment applies cannot be deleted; an unused one goes, keeping shared chunks", async () => {
      const blobs = new BlobStore(t.dataDir);
      await assert.rejects(deleteImage(t.site, digest, "test"), (e: SlipwayError) => e.code === "IN_USE" && /"L1 image"/.test(e.message));
      const r = await deleteImage(t.site, olderDigest, "test");
      assert.deepEqual([r.chunksRemoved, r.chunksKept], [0, 3], "the newer manifest lists the same chunks");
      const m = (await t.site.db.get<{ document: string }>(`SELECT document FROM content_manifests WHERE digest = ?`, [digest]))!;
      for (const c of (JSON.parse(m.document).manifest as Manifest).chunks) assert.ok(blobs.has(c.sha256));
      assert.equal((await admin("PATCH", `/api/v1/deployments/${deploymentId}`, { enabled: false })).status, 200);
      const gone = await deleteImage(t.site, digest, "test");
      assert.equal(gone.chunksRemoved, 3);
      assert.equal((await a.call("GET", `/mp/v1/content/${digest}/data`)).status, 404);
      const audit = (await admin("GET", "/api/v1/audit?action=content.delete&limit=10")).body as { object: string }[];
      assert.deepEqual(audit.map((e) => e.object).sort(), [`content:${digest}`, `content:${olderDigest}`].sort());
      assert.equal((await admin("GET", "/api/v1/audit?action=content.import&limit=10")).body.length, 2);
    });
  });
}
