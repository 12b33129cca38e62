/**
 * A distribution point as its own process, end to end: an administrator registers it and gets a
 * one-time secret; `bin/slipway up --role distribution` enrolls with it on loopback, replicates
 * the images assigned to it (every chunk verified against the signed manifest), and serves them
 * to devices with the management point's contract — but only to devices whose policy names the
 * image, never to a revoked certificate, and never a chunk that failed verification. Policies
 * list it as a source once it holds an image ready. Certificates of the two kinds never cross
 * over: a distribution point's is refused on device routes and a device's on its routes.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import https from "node:https";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, randomBytes, X509Certificate, type KeyObject } from "node:crypto";
import { startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { fetchBytes, newMachine, request, type TestMachine } from "../support/device.ts";
import { addImage } from "../../src/site/content-library.ts";
import { ChunkVerifier, DEFAULT_CHUNK_SIZE, verifyManifest, type Manifest } from "../../src/content/manifest.ts";
import { BlobStore } from "../../src/content/blob-store.ts";
import { verifyPolicy } from "../../src/security/signed-policy.ts";
import { createKeyAndCsr } from "../../src/security/csr.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | null | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// The distribution point's registered name: never a loopback name (DESIGN.md, Lifecycles), so
// devices in this test reach it by a name that a connection of their own resolves to loopback.
const DP_NAME = "dp-branch.test";
const dpAgent = new https.Agent({
  lookup: ((_host: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void) =>
    opts.all ? cb(null, [{ address: "127.0.0.1", family: 4 }]) : cb(null, "127.0.0.1", 4)) as never,
});
/** fetchBytes to the distribution point by its registered name. */
const dpFetch: typeof fetchBytes = (url, ca, who, p, opts = {}) => fetchBytes(url, ca, who, p, { agent: dpAgent, ...opts });

type DpProcess = { child: ChildProcess; url: string; stdout: () => string; stderr: () => string; stop(): Promise<void> };

/** Starts `slipway up --role distribution` and waits for it to listen (or to exit). */
async function startDp(args: string[]): Promise<DpProcess> {
  const child = spawn(bin, ["up", "--role", "distribution", ...args], { env: { ...process.env, SLIPWAY_LOG_LEVEL: "debug" } });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c) => (stdout += c));
  child.stderr!.on("data", (c) => (stderr += c));
  const exited = new Promise<number>((resolve) => child.once("exit", (code) => resolve(code ?? -1)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /is listening on (https:\/\/\S+)/.exec(stderr);
      if (m) {
        clearInterval(timer);
        resolve(m[1]);
      }
    }, 50);
    void exited.then((code) => {
      clearInterval(timer);
      reject(Object.assign(new Error(`the distribution point exited ${code}: ${stderr}`), { code, stderr }));
    });
  });
  return {
    child, url, stdout: () => stdout, stderr: () => stderr,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}

for (const database of databasesUnderTest()) {
  describe(`a distribution point process on ${database}`, () => {
    let t: TestSite;
    let pinned: KeyObject;
    let dir: string;
    let caFile: string;
    let dpDir: string;
    let dp: DpProcess | null = null;
    let dpUrl = "";
    let dpPort = 0;
    let dpId = "";
    let secret = "";
    let image: Buffer;
    let digest = "";
    let broken: Buffer;
    let brokenDigest = "";
    let a: TestMachine, b: TestMachine, c: TestMachine;
    let aId = "";
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const dpArgs = (extra: string[] = []) => ["--site", t.mp.url, "--ca", caFile, "--data", dpDir, "--listen", `127.0.0.1:${dpPort}`, "--public-name", DP_NAME, "--poll-seconds", "1", ...extra];
    const dpState = async (d = digest) => ((await admin("GET", `/api/v1/distribution-points/${dpId}`)).body.assignments as { digest: string; state: string; message: string | null }[]).find((x) => x.digest === d);
    let n = 0;
    async function enrolledMachine(name: string, room: string): Promise<{ m: TestMachine; id: string }> {
      n++;
      const ids = { macs: [`52:54:00:d0:00:${n.toString(16).padStart(2, "0")}`], smbiosUuid: `00000000-0000-4000-8000-d000000000${n.toString(16).padStart(2, "0")}` };
      const r = await admin("POST", "/api/v1/devices", { name, ...ids, state: "approved", attributes: { room } });
      assert.equal(r.status, 201, r.text);
      const m = await newMachine(t, ids);
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      return { m, id: r.body.id };
    }

    before(async () => {
      t = await startTestSite({ database });
      pinned = createPublicKey((await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
      dir = tempDir("slipway-dp-test-");
      caFile = path.join(dir, "site-ca.pem");
      fs.writeFileSync(caFile, t.ca);
      dpDir = path.join(dir, "dp-data");
      image = randomBytes(DEFAULT_CHUNK_SIZE * 2 + 777_777);
      broken = randomBytes(DEFAULT_CHUNK_SIZE + 4321);
      for (const [name, bytes] of [["dp-base", image], ["dp-broken", broken]] as const) {
        const file = path.join(dir, `${name}.img`);
        fs.writeFileSync(file, bytes);
        const r = await addImage(t.site, { file, name, actor: "test" });
        if (name === "dp-base") digest = r.record.digest;
        else brokenDigest = r.record.digest;
      }
      ({ m: a, id: aId } = await enrolledMachine("dp-a", "D1"));
      ({ m: b } = await enrolledMachine("dp-b", "D2"));
      ({ m: c } = await enrolledMachine("dp-c", "D1"));
      await admin("POST", "/api/v1/collections", { name: "Room D1", rule: "attributes.room == 'D1'" });
      const doc = { name: "Image D1", steps: [{ name: "Apply", type: "apply-image", with: { image: "dp-base" } }, { name: "Apply other", type: "apply-image", with: { image: "dp-broken" } }] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
      assert.equal((await admin("POST", "/api/v1/deployments", { name: "D1 image", taskSequence: "Image D1", collection: "Room D1", purpose: "required", bootPaths: ["pxe", "media"] })).status, 201);
      dpPort = await freePort();
    });
    after(async () => {
      await dp?.stop();
      for (const m of [a, b, c]) m?.close();
      await t.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("registering returns a one-time secret, kept only as a hash", async () => {
      const r = await admin("POST", "/api/v1/distribution-points", { name: "branch-1", url: `https://${DP_NAME}:${dpPort}` });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.status, "awaiting enrollment");
      assert.deepEqual(r.body.hostNames, [DP_NAME]);
      ({ id: dpId, secret } = r.body);
      assert.match(secret, /^swd_[A-Za-z0-9_-]{43}$/);
      const hours = (Date.parse(r.body.secretExpiresAt) - Date.now()) / 3600_000;
      assert.ok(hours > 23.9 && hours <= 24, `expires in ${hours} h`);
      const rows = JSON.stringify(await t.site.db.all(`SELECT * FROM distribution_points`));
      assert.ok(!rows.includes(secret) && rows.includes(sha(Buffer.from(secret))), "only the hash is stored");
      assert.equal((await admin("GET", `/api/v1/distribution-points/${dpId}`)).body.secret, undefined);
      assert.ok(!JSON.stringify((await admin("GET", "/api/v1/audit?limit=1000")).body).includes(secret));
      for (const bad of [{ name: "branch-2", url: "http://127.0.0.1:1" }, { name: "branch-2", url: "https://127.0.0.1:1/path" }, { name: "bad name", url: "https://x.example" },
        { name: "branch-2", url: "https://x.example", aliases: ["not a host"] }]) {
        assert.equal((await admin("POST", "/api/v1/distribution-points", bad)).status, 400, JSON.stringify(bad));
      }
      assert.equal((await admin("POST", "/api/v1/distribution-points", { name: "branch-1", url: "https://y.example" })).status, 409);
    });

    it("the distribution point enrolls with the secret, keeps its keys private, and the secret works only once", async () => {
      const secretFile = path.join(dir, "secret");
      fs.writeFileSync(secretFile, secret + "\n", { mode: 0o600 });
      dp = await startDp(dpArgs(["--enroll-secret-file", secretFile]));
      dpUrl = `https://${DP_NAME}:${dpPort}`;
      assert.equal(dp.url, `https://127.0.0.1:${dpPort}`);
      const mode = (f: string) => fs.statSync(path.join(dpDir, f)).mode & 0o777;
      assert.equal(mode("."), 0o700);
      for (const f of ["dp.json", "keys/client.key", "keys/client.crt", "keys/server.key", "keys/server.crt"]) assert.equal(mode(f), 0o600, f);
      const client = new X509Certificate(fs.readFileSync(path.join(dpDir, "keys/client.crt")));
      assert.equal(client.subject, `CN=dp:${dpId}`);
      assert.match(client.subjectAltName ?? "", new RegExp(`URI:urn:slipway:dp:${dpId}`));
      assert.ok(client.checkIssued(new X509Certificate(t.ca)));
      const server = new X509Certificate(fs.readFileSync(path.join(dpDir, "keys/server.crt")));
      assert.equal(server.subjectAltName, `DNS:${DP_NAME}`);
      const shown = (await admin("GET", `/api/v1/distribution-points/${dpId}`)).body;
      assert.equal(shown.status, "enrolled");
      assert.deepEqual(shown.certificates.map((x: { kind: string; status: string }) => `${x.kind}:${x.status}`).sort(), ["dp-server:active", "dp:active"]);
      assert.ok(!dp.stdout().includes(secret) && !dp.stderr().includes(secret), "the secret reached the output");

      const keys = [await createKeyAndCsr(), await createKeyAndCsr()];
      const again = await request(t.mp.url, { method: "POST", path: "/mp/v1/dp/enroll", ca: t.ca, body: { secret, csr: keys[0].csrPem, serverCsr: keys[1].csrPem } });
      assert.equal(again.status, 401, again.text);
      assert.equal(again.body.code, "SLIPWAY_ENROLLMENT_REFUSED");
      const denied = (await admin("GET", "/api/v1/audit?action=dp.enroll&limit=10")).body as { outcome: string }[];
      assert.deepEqual(denied.map((e) => e.outcome).sort(), ["denied", "success"]);
      // A second process with the same secret and a data folder of its own gets nothing.
      await assert.rejects(startDp(["--site", t.mp.url, "--ca", caFile, "--data", path.join(dir, "dp-copy"), "--listen", "127.0.0.1:0", "--enroll-secret-file", secretFile]),
        (e: { code: number; stderr: string }) => e.code === 1 && /enrollment secret is not valid/.test(e.stderr));
    });

    it("a server certificate only for registered host names: another name is refused", async () => {
      const s2 = await admin("POST", "/api/v1/distribution-points", { name: "branch-names", url: "https://dp-names.example:8445", aliases: ["10.9.8.7"] });
      const keys = [await createKeyAndCsr(), await createKeyAndCsr()];
      const r = await request(t.mp.url, { method: "POST", path: "/mp/v1/dp/enroll", ca: t.ca, body: { secret: s2.body.secret, csr: keys[0].csrPem, serverCsr: keys[1].csrPem, names: ["site.example"] } });
      assert.equal(r.status, 400, r.text);
      assert.match(r.body.message, /dp-names\.example, 10\.9\.8\.7 only/);
      const ok = await request(t.mp.url, { method: "POST", path: "/mp/v1/dp/enroll", ca: t.ca, body: { secret: s2.body.secret, csr: keys[0].csrPem, serverCsr: keys[1].csrPem } });
      assert.equal(ok.status, 201, "the refusal did not spend the secret");
      assert.equal(new X509Certificate(ok.body.serverCertificate).subjectAltName, "DNS:dp-names.example, IP Address:10.9.8.7");
      assert.equal((await admin("DELETE", `/api/v1/distribution-points/${s2.body.id}`)).status, 204);
    });

    it("an assigned image replicates, is reported ready, and the policy then lists the distribution point as a source", async () => {
      const before = await a.call("GET", "/mp/v1/policy?bootPath=pxe");
      assert.deepEqual(before.body.policy.deployments[0].content.find((x: { image: string }) => x.image === "dp-base").sources, []);
      const r = await admin("POST", `/api/v1/distribution-points/${dpId}/content`, { image: "dp-base" });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.digest, digest);
      await until("dp-base ready", async () => (await dpState())?.state === "ready");
      const p = verifyPolicy((await a.call("GET", "/mp/v1/policy?bootPath=pxe")).body, pinned, { deviceId: aId, now: new Date() });
      assert.deepEqual(p.deployments[0].content, [
        { image: "dp-base", manifest: digest, sources: [dpUrl] },
        { image: "dp-broken", manifest: brokenDigest, sources: [] },
      ]);
      const m = verifyManifest((await a.call("GET", `/mp/v1/content/${digest}/manifest`)).body, pinned, digest);
      const blobs = new BlobStore(dpDir);
      for (const ch of m.chunks) assert.equal(fs.statSync(blobs.pathOf(ch.sha256)).mode & 0o777, 0o600);
      const audit = (await admin("GET", "/api/v1/audit?action=dp.replication&limit=100")).body as { object: string; details: { state: string } }[];
      assert.ok(audit.some((e) => e.object === `content:${digest}` && e.details.state === "ready"));
    });

    it("a device whose policy names the image downloads it from the distribution point byte for byte, resuming with Range", async () => {
      const manifest = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/manifest`);
      assert.equal(manifest.status, 200, manifest.body.toString());
      const m: Manifest = verifyManifest(JSON.parse(manifest.body.toString()), pinned, digest);
      const whole = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/data`);
      assert.equal(whole.status, 200);
      assert.equal(whole.headers["content-length"], String(image.length));
      assert.equal(whole.headers["accept-ranges"], "bytes");
      assert.equal(whole.headers.etag, `"${digest}"`);
      assert.ok(whole.body.equals(image), "byte-identical");

      const cut = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/data`, { stopAfter: DEFAULT_CHUNK_SIZE + 50_000 });
      const v = new ChunkVerifier(m);
      const kept = Buffer.concat(v.push(cut.body.subarray(0, Math.min(cut.body.length, 2 * DEFAULT_CHUNK_SIZE - 1))));
      assert.equal(v.nextChunk, 1);
      const rest = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/data`, { headers: { range: `bytes=${v.offset}-` } });
      assert.equal(rest.status, 206);
      assert.equal(rest.headers["content-range"], `bytes ${v.offset}-${image.length - 1}/${image.length}`);
      const v2 = new ChunkVerifier(m, v.nextChunk);
      const after = Buffer.concat(v2.push(rest.body));
      v2.finish();
      assert.equal(sha(Buffer.concat([kept, after])), sha(image));

      const head = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/data`, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      const past = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/data`, { headers: { range: `bytes=${image.length}-` } });
      assert.equal(past.status, 416);
      assert.equal(past.headers["content-range"], `bytes */${image.length}`);
      const fromMp = await fetchBytes(t.mp.url, t.ca, a, `/mp/v1/content/${digest}/data`, { method: "HEAD" });
      assert.deepEqual([fromMp.headers.etag, fromMp.headers["content-length"]], [whole.headers.etag, whole.headers["content-length"]], "the same contract as the management point");
    });

    it("a device without that deployment gets 403 from the distribution point, audited on the site", async () => {
      for (const p of [`/mp/v1/content/${digest}/manifest`, `/mp/v1/content/${digest}/data`]) {
        const r = await dpFetch(dpUrl, t.ca, b, p);
        assert.equal(r.status, 403, p);
        assert.equal(JSON.parse(r.body.toString()).code, "SLIPWAY_NOT_YOUR_RESOURCE");
      }
      const anon = await dpFetch(dpUrl, t.ca, null, `/mp/v1/content/${digest}/data`);
      assert.equal(anon.status, 401);
      const denied = (await admin("GET", "/api/v1/audit?action=content.denied&limit=100")).body as { object: string; details: { via?: string } }[];
      assert.ok(denied.some((e) => e.object === `content:${digest}` && e.details.via === `dp:${dpId}`));
      const bad = await dpFetch(dpUrl, t.ca, a, "/mp/v1/content/sha256:1234/data");
      assert.equal(bad.status, 400);
    });

    it("certificates never cross over: a distribution point's is refused on device routes, a device's on distribution point routes", async () => {
      const dpCert = { keyPem: fs.readFileSync(path.join(dpDir, "keys/client.key"), "utf8"), certPem: fs.readFileSync(path.join(dpDir, "keys/client.crt"), "utf8") };
      for (const p of ["/mp/v1/policy", `/mp/v1/content/${digest}/manifest`]) {
        const r = await request(t.mp.url, { method: "GET", path: p, ca: t.ca, key: dpCert.keyPem, cert: dpCert.certPem });
        assert.equal(r.status, 403, `${p}: ${r.text}`);
        assert.equal(r.body.code, "SLIPWAY_FORBIDDEN");
      }
      const onDp = await dpFetch(dpUrl, t.ca, dpCert, `/mp/v1/content/${digest}/data`);
      assert.equal(onDp.status, 401, "a distribution point's certificate is no device certificate");
      for (const [method, p, body] of [["GET", "/mp/v1/dp/assignments", undefined], ["GET", "/mp/v1/dp/site", undefined],
        ["POST", "/mp/v1/dp/authorize", { serial: "01", digest }], ["GET", `/mp/v1/dp/content/${digest}/chunks/${"0".repeat(64)}`, undefined]] as const) {
        const r = await a.call(method, p, body);
        assert.equal(r.status, 403, `${p}: ${r.text}`);
        assert.equal(r.body.code, "SLIPWAY_FORBIDDEN");
        assert.equal((await request(t.mp.url, { method, path: p, ca: t.ca, body })).status, 401, `${p} without a certificate`);
      }
      const audit = (await admin("GET", "/api/v1/audit?action=mp.denied&limit=100")).body as { actor: string }[];
      assert.ok(audit.some((e) => e.actor === `dp:${dpId}`) && audit.some((e) => e.actor === `device:${aId}`));
    });

    it("a chunk corrupted on the site is refused by replication, never stored or served, and replicated once it is repaired", async () => {
      const m = verifyManifest((await a.call("GET", `/mp/v1/content/${brokenDigest}/manifest`)).body, pinned, brokenDigest);
      const siteFile = new BlobStore(t.dataDir).pathOf(m.chunks[1].sha256);
      const good = fs.readFileSync(siteFile);
      const bad = Buffer.from(good);
      bad[100] ^= 0x01;
      fs.writeFileSync(siteFile, bad);
      try {
        assert.equal((await admin("POST", `/api/v1/distribution-points/branch-1/content`, { image: brokenDigest })).status, 201);
        const failed = await until("dp-broken failed", async () => {
          const s = await dpState(brokenDigest);
          return s?.state === "failed" ? s : null;
        });
        assert.match(failed.message!, new RegExp(`chunk 1 \\(sha256 ${m.chunks[1].sha256}\\) from the site does not match the manifest`));
        assert.ok(!new BlobStore(dpDir).has(m.chunks[1].sha256), "the bad chunk was not stored");
        assert.ok(!fs.readdirSync(new BlobStore(dpDir).dir).some((f) => f.startsWith(".tmp-")), "nor left behind");
        const r = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${brokenDigest}/data`);
        assert.equal(r.status, 404, "not served");
        const p = (await a.call("GET", "/mp/v1/policy")).body.policy;
        assert.deepEqual(p.deployments[0].content.find((x: { image: string }) => x.image === "dp-broken").sources, [], "and not a source");
        assert.match(dp!.stdout(), /replication failed/);
        await sleep(2500); // two more polls, each retrying and failing the same way
        const changes = (await admin("GET", "/api/v1/audit?action=dp.replication&limit=1000")).body.filter((e: { object: string }) => e.object === `content:${brokenDigest}`);
        assert.deepEqual(changes.map((e: { details: { state: string } }) => e.details.state).sort(), ["failed", "replicating"], "retries do not flood the audit log");
      } finally {
        fs.writeFileSync(siteFile, good);
      }
      await until("dp-broken ready after the repair", async () => (await dpState(brokenDigest))?.state === "ready");
      const r = await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${brokenDigest}/data`);
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(broken));
    });

    it("a distribution point silent for 15 minutes is no source until it polls again; after a restart it needs no secret and serves again", async () => {
      await dp!.stop();
      const sourcesNow = async () => verifyPolicy((await a.call("GET", "/mp/v1/policy?bootPath=pxe")).body, pinned, { deviceId: aId, now: new Date() })
        .deployments[0].content.find((x) => x.image === "dp-base")?.sources;
      assert.deepEqual(await sourcesNow(), [dpUrl], "heard from a moment ago");
      // Stopped, and last heard from 16 minutes ago as far as the site knows.
      await t.site.db.run(`UPDATE distribution_points SET last_seen_at = ? WHERE id = ?`, [new Date(Date.now() - 16 * 60_000).toISOString(), dpId]);
      assert.deepEqual(await sourcesNow(), [], "a silent distribution point is left out");
      dp = await startDp(dpArgs());
      await until("listed again after its first poll", async () => (await sourcesNow())?.[0] === dpUrl);
      await until("content served again", async () => (await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/manifest`)).status === 200);
      assert.match(dp.stdout(), /"msg":"distribution point listening"/);
      assert.ok(!/distribution point enrolled/.test(dp.stdout()), "no second enrollment");
    });

    it("a revoked device certificate is refused by the distribution point once it refreshes the CRL", async () => {
      assert.equal((await dpFetch(dpUrl, t.ca, c, `/mp/v1/content/${digest}/manifest`)).status, 200);
      const cId = (await admin("GET", "/api/v1/devices?name=dp-c")).body[0].id;
      const serial = (await admin("GET", `/api/v1/certificates?device=${cId}`)).body[0].serial;
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/revoke`, { reason: "keyCompromise" })).status, 200);
      const refused = await until("the revoked certificate refused", async () => {
        const r = await dpFetch(dpUrl, t.ca, c, `/mp/v1/content/${digest}/manifest`);
        return r.status === 403 ? r : null;
      }, 10_000);
      assert.equal(JSON.parse(refused.body.toString()).code, "SLIPWAY_DEVICE_BLOCKED");
      assert.equal((await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/manifest`)).status, 200, "other devices are still served");
    });

    it("unassigning drops the image from policies at once and from the distribution point at its next poll", async () => {
      const blobs = new BlobStore(dpDir);
      const m = verifyManifest((await a.call("GET", `/mp/v1/content/${digest}/manifest`)).body, pinned, digest);
      assert.equal((await admin("DELETE", `/api/v1/distribution-points/branch-1/content/dp-base`)).status, 204);
      const p = (await a.call("GET", "/mp/v1/policy")).body.policy;
      assert.deepEqual(p.deployments[0].content.find((x: { image: string }) => x.image === "dp-base").sources, []);
      await until("dp-base gone from the distribution point", async () => (await dpFetch(dpUrl, t.ca, a, `/mp/v1/content/${digest}/data`, { method: "HEAD" })).status === 404);
      await until("its chunks deleted", async () => m.chunks.every((ch) => !blobs.has(ch.sha256)));
      assert.equal((await admin("DELETE", `/api/v1/distribution-points/branch-1/content/dp-base`)).status, 404);
    });

    it("renews both certificates for new keys, proving itself with its current client certificate", async () => {
      const current = { key: fs.readFileSync(path.join(dpDir, "keys/client.key"), "utf8"), cert: fs.readFileSync(path.join(dpDir, "keys/client.crt"), "utf8") };
      const keys = [await createKeyAndCsr(), await createKeyAndCsr()];
      const body = { csr: keys[0].csrPem, serverCsr: keys[1].csrPem };
      const before = (await admin("GET", `/api/v1/distribution-points/${dpId}`)).body.certificates as { serial: string; status: string }[];
      assert.equal((await request(t.mp.url, { method: "POST", path: "/mp/v1/dp/renew", ca: t.ca, ...current, body: { ...body, names: ["localhost"] } })).status, 400, "only registered names");
      const r = await request(t.mp.url, { method: "POST", path: "/mp/v1/dp/renew", ca: t.ca, ...current, body });
      assert.equal(r.status, 201, r.text);
      const client = new X509Certificate(r.body.certificate);
      assert.equal(client.subject, `CN=dp:${dpId}`);
      assert.ok(client.checkPrivateKey(createPrivateKey(keys[0].keyPem)));
      assert.ok(new X509Certificate(r.body.serverCertificate).checkPrivateKey(createPrivateKey(keys[1].keyPem)));
      assert.equal((await a.call("POST", "/mp/v1/dp/renew", body)).status, 403, "not with a device certificate");
      const certs = (await admin("GET", `/api/v1/distribution-points/${dpId}`)).body.certificates as { serial: string; status: string }[];
      assert.deepEqual(certs.filter((x) => x.status === "active").map((x) => x.serial).sort(), [r.body.serial, r.body.serverSerial].sort(), "only the new pair is active");
      for (const old of before.filter((x) => x.status === "active")) assert.equal(certs.find((x) => x.serial === old.serial)?.status, "revoked", "the pair it replaced is superseded");
      const again = await request(t.mp.url, { method: "POST", path: "/mp/v1/dp/renew", ca: t.ca, ...current, body });
      assert.equal(again.status, 403, "a superseded certificate renews nothing");
      assert.equal(again.body.code, "SLIPWAY_DEVICE_BLOCKED");
    });

    it("removing the distribution point revokes its certificates and ends its access to the site", async () => {
      const serials = ((await admin("GET", `/api/v1/distribution-points/${dpId}`)).body.certificates as { serial: string }[]).map((x) => x.serial);
      assert.equal((await admin("DELETE", `/api/v1/distribution-points/${dpId}`)).status, 204);
      const crl = (await t.request("GET", "/api/v1/crl.pem")).body.pem as string;
      assert.ok(crl.includes("BEGIN X509 CRL"));
      for (const serial of serials) assert.equal((await admin("GET", `/api/v1/certificates?status=revoked`)).body.filter((x: { serial: string }) => x.serial === serial).length, 1);
      const dpCert = { key: fs.readFileSync(path.join(dpDir, "keys/client.key"), "utf8"), cert: fs.readFileSync(path.join(dpDir, "keys/client.crt"), "utf8") };
      const r = await request(t.mp.url, { method: "GET", path: "/mp/v1/dp/assignments", ca: t.ca, ...dpCert });
      assert.equal(r.status, 403);
      await until("the distribution point notices", async () => /distribution point removed by its site/.test(dp!.stdout()), 10_000);
    });
  });
}
