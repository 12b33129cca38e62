/**
 * The agent's content client against a real management point: sources from the policy are
 * tried first, and a source that is down or serves altered bytes hands over to the next at
 * the first chunk not yet verified — the result is always the signed bytes, or an error.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import https from "node:https";
import { createHash, createPublicKey, randomBytes, type KeyObject } from "node:crypto";
import type { AddressInfo } from "node:net";
import { startTestSite, type TestSite } from "../support/site.ts";
import { addImage } from "../../src/site/content-library.ts";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import { DEFAULT_CHUNK_SIZE, ManifestError } from "../../src/content/manifest.ts";
import { MpClient } from "../../src/agent/mp-client.ts";
import { DistributionPointContent } from "../../src/agent/content.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("agent content sources", () => {
  let t: TestSite;
  let pinned: KeyObject;
  let image: Buffer;
  let digest = "";
  let client: MpClient;
  let rogue: https.Server;
  let rogueUrl = "";
  let flaky: https.Server;
  let flakyUrl = "";
  const flakyRanges: string[] = [];

  async function fetchAll(sources: string[]): Promise<{ bytes: Buffer; log: string[] }> {
    const log: string[] = [];
    const content = new DistributionPointContent(client, pinned, [{ image: "lab", manifest: digest, sources }], (l) => log.push(l));
    const m = await content.manifest(digest);
    const parts: Buffer[] = [];
    for await (const c of content.chunks(m, digest, { signal: new AbortController().signal, onProgress() {} })) parts.push(c);
    return { bytes: Buffer.concat(parts), log };
  }

  before(async () => {
    t = await startTestSite();
    pinned = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
    image = randomBytes(DEFAULT_CHUNK_SIZE * 3 + 777);
    const file = path.join(t.dataDir, "lab.img");
    fs.writeFileSync(file, image);
    digest = (await addImage(t.site, { file, name: "lab", actor: "test" })).record.digest;
    const ids = { macs: ["52:54:00:ac:00:01"], smbiosUuid: "00000000-0000-4000-8000-ac0000000001" };
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/devices", { name: "agent-content", ...ids, state: "approved", collections: ["Lab"] })).status, 201);
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: { name: "Apply lab", steps: [{ name: "Apply", type: "apply-image", with: { image: "lab" } }] } })).status, 201);
    assert.equal((await admin("POST", "/api/v1/deployments", { name: "Lab", taskSequence: "Apply lab", collection: "Lab", purpose: "required", bootPaths: ["pxe"] })).status, 201);
    // Enroll as the agent does: its own key, pre-approved.
    client = new MpClient(t.mp.url, t.ca);
    const { keyPem, csrPem } = await createKeyAndCsr();
    const r = await client.json<{ certificate: string }>("POST", "/mp/v1/enroll", { credential: { kind: "pre-approved" }, csr: csrPem, inventory: ids });
    client.setIdentity({ keyPem, certPem: r.certificate });

    // A compromised source: a valid site certificate, but the second chunk altered.
    const bad = Buffer.from(image);
    bad[DEFAULT_CHUNK_SIZE + 10] ^= 0xff;
    rogue = https.createServer({
      cert: fs.readFileSync(path.join(t.dataDir, "keys/server.crt")), key: fs.readFileSync(path.join(t.dataDir, "keys/server.key")),
    }, (req, res) => {
      if (req.url?.endsWith("/manifest")) {
        // Forward the genuine signed manifest: only the bytes are altered.
        void client.json("GET", req.url).then((m) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(m)));
        return;
      }
      const start = Number(/bytes=(\d+)-/.exec(String(req.headers.range ?? ""))?.[1] ?? 0);
      res.writeHead(start ? 206 : 200, { "content-length": bad.length - start }).end(bad.subarray(start));
    });
    await new Promise<void>((resolve) => rogue.listen(0, "127.0.0.1", resolve));
    rogueUrl = `https://127.0.0.1:${(rogue.address() as AddressInfo).port}`;

    // A network that drops: the first answer is cut off in the middle of the third chunk.
    flaky = https.createServer({
      cert: fs.readFileSync(path.join(t.dataDir, "keys/server.crt")), key: fs.readFileSync(path.join(t.dataDir, "keys/server.key")),
    }, (req, res) => {
      if (req.url?.endsWith("/manifest")) {
        void client.json("GET", req.url).then((m) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(m)));
        return;
      }
      flakyRanges.push(String(req.headers.range ?? ""));
      const start = Number(/bytes=(\d+)-/.exec(String(req.headers.range ?? ""))?.[1] ?? 0);
      res.writeHead(start ? 206 : 200, { "content-length": image.length - start });
      if (flakyRanges.length === 1) {
        res.write(image.subarray(0, DEFAULT_CHUNK_SIZE * 2 + 12345), () => res.destroy());
        return;
      }
      res.end(image.subarray(start));
    });
    await new Promise<void>((resolve) => flaky.listen(0, "127.0.0.1", resolve));
    flakyUrl = `https://127.0.0.1:${(flaky.address() as AddressInfo).port}`;
  });

  after(async () => {
    client?.close();
    rogue?.closeAllConnections();
    rogue?.close();
    flaky?.closeAllConnections();
    flaky?.close();
    await t.close();
  });

  it("a source that is down hands over to the management point, and the bytes are the image's", async () => {
    const { bytes, log } = await fetchAll(["https://127.0.0.1:1"]);
    assert.equal(sha(bytes), sha(image));
    assert.ok(log.some((l) => /127\.0\.0\.1:1.*next source/.test(l)), log.join("\n"));
  });

  it("a source serving an altered chunk is abandoned at that chunk; the rest comes verified from the management point", async () => {
    const { bytes, log } = await fetchAll([rogueUrl]);
    assert.equal(sha(bytes), sha(image));
    assert.ok(log.some((l) => l.includes(rogueUrl) && /sha256 mismatch in chunk 1/.test(l) && /continuing from chunk 1/.test(l)), log.join("\n"));
  });

  it("a connection broken mid-chunk resumes from the same source with Range at the first chunk not yet verified", async () => {
    const { bytes } = await fetchAll([flakyUrl]);
    assert.equal(sha(bytes), sha(image));
    assert.deepEqual(flakyRanges, ["", `bytes=${DEFAULT_CHUNK_SIZE * 2}-`]);
  });

  it("with only the altered source and no way around it, the download fails naming the chunk", async () => {
    const content = new DistributionPointContent(client.sibling(rogueUrl), pinned, [{ image: "lab", manifest: digest }]);
    const m = await content.manifest(digest);
    await assert.rejects(async () => {
      for await (const _ of content.chunks(m, digest, { signal: new AbortController().signal, onProgress() {} })) { /* drain */ }
    }, (err: unknown) => err instanceof ManifestError && /sha256 mismatch in chunk 1/.test(err.message));
  });
});
