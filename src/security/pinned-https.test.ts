import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import net from "node:net";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { createCertificateAuthority, issueClientCertificate, issueServerCertificate, type CertificateAndKey } from "./ca.ts";
import { createKeyAndCsr } from "./csr.ts";
import { HttpsError, PinnedHttpsClient } from "./pinned-https.ts";

type Seen = { method: string; url: string; headers: IncomingMessage["headers"]; body: string; clientCert: string | null };

/** A real HTTPS server on loopback that records what reached it and answers with `handler`. */
async function serve(cert: CertificateAndKey, caPem: string, handler: (seen: Seen, res: ServerResponse) => void) {
  const seen: Seen[] = [];
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      const s = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString(), clientCert: peer?.subject?.CN ? String(peer.subject.CN) : null };
      seen.push(s);
      handler(s, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }) };
}

const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));

/** Runs `fn` and returns what it threw. */
async function failure(fn: () => Promise<unknown>): Promise<HttpsError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof HttpsError, `an HttpsError, not ${String(err)}`);
    return err;
  }
  assert.fail("the request succeeded");
}

describe("the pinned HTTPS client", () => {
  let siteCa: CertificateAndKey;
  let otherCa: CertificateAndKey;
  let site: Awaited<ReturnType<typeof serve>>;
  let impostor: Awaited<ReturnType<typeof serve>>;

  before(async () => {
    siteCa = await createCertificateAuthority({ commonName: "Pinned site CA (test)" });
    otherCa = await createCertificateAuthority({ commonName: "Another CA (test)" });
    const names = { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] };
    site = await serve(await issueServerCertificate(siteCa, names), siteCa.certPem, (s, res) => {
      const path = s.url.split("?")[0];
      if (path === "/echo") return json(res, 200, { method: s.method, url: s.url, body: s.body ? JSON.parse(s.body) : null, clientCert: s.clientCert });
      if (path === "/empty") return res.writeHead(204).end();
      if (path === "/refused") return json(res, 403, { code: "SLIPWAY_DEVICE_BLOCKED", message: "Cannot serve this device: it is blocked", details: { problems: ["blocked"] } });
      if (path === "/proxy-error") return res.writeHead(502, { "content-type": "text/html" }).end("<html><body>Bad gateway</body></html>");
      if (path === "/html") return res.writeHead(200, { "content-type": "text/html" }).end("<html>a login page</html>");
      if (path === "/bytes") return res.writeHead(200, { "content-type": "application/octet-stream" }).end(Buffer.from([0, 1, 2, 255]));
      if (path === "/silent") return; // never answers
      json(res, 404, { code: "SLIPWAY_NOT_FOUND", message: `Cannot find ${path}` });
    });
    impostor = await serve(await issueServerCertificate(otherCa, names), otherCa.certPem, (_s, res) => json(res, 200, { secret: "handed over" }));
  });
  after(async () => {
    await site.close();
    await impostor.close();
  });

  it("sends JSON and reads the JSON answer over a TLS connection it verified against the pinned CA", async () => {
    const c = new PinnedHttpsClient({ url: `${site.url}/ignored/path`, ca: siteCa.certPem, userAgent: "slipway-test/1" });
    assert.equal(c.url, site.url);
    const answer = await c.json<{ method: string; url: string; body: unknown }>("POST", "/echo", { name: "lab", n: 2 }, { query: { q: "a b&c", skip: undefined, n: 3 } });
    assert.deepEqual(answer, { method: "POST", url: "/echo?q=a+b%26c&n=3", body: { name: "lab", n: 2 }, clientCert: null });
    const last = site.seen.at(-1)!;
    assert.equal(last.headers["content-type"], "application/json");
    assert.equal(last.headers["user-agent"], "slipway-test/1");
    assert.equal(await c.json("DELETE", "/empty"), undefined);
  });

  it("refuses a server whose certificate another CA issued, before anything is sent to it", async () => {
    const before = impostor.seen.length;
    const c = new PinnedHttpsClient({ url: impostor.url, ca: siteCa.certPem, keepAlive: 2 });
    const err = await failure(() => c.json("POST", "/echo", { password: "never sent" }));
    c.close();
    assert.equal(err.status, 0);
    assert.match(err.code, /CERT|SIGNATURE|ISSUER/);
    assert.match(err.message, /^Cannot reach the server at https:\/\/127\.0\.0\.1:\d+: /);
    assert.equal(impostor.seen.length, before, "the impostor received no request");
  });

  it("keeps refusing it when the environment says not to check certificates", async () => {
    const saved = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
    try {
      const err = await failure(() => new PinnedHttpsClient({ url: impostor.url, ca: siteCa.certPem }).json("GET", "/echo"));
      assert.equal(err.status, 0);
      assert.match(err.code, /CERT|SIGNATURE|ISSUER/);
    } finally {
      if (saved === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
      else process.env.NODE_TLS_REJECT_UNAUTHORIZED = saved;
    }
  });

  it("turns the site's error envelope into an HttpsError with its status, code, message and details", async () => {
    const err = await failure(() => new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem, peer: "the site" }).json("GET", "/refused"));
    assert.equal(err.status, 403);
    assert.equal(err.code, "SLIPWAY_DEVICE_BLOCKED");
    assert.equal(err.message, "Cannot serve this device: it is blocked");
    assert.deepEqual(err.details, { problems: ["blocked"] });
    assert.equal(err.sameIdentity, true);
  });

  it("names the status when an error answer is not JSON (a proxy's page)", async () => {
    const err = await failure(() => new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem, peer: "the site" }).json("GET", "/proxy-error"));
    assert.equal(err.status, 502);
    assert.equal(err.code, "HTTP_502");
    assert.equal(err.message, "The site answered HTTP 502");
    assert.equal(err.details, null);
  });

  it("refuses a successful answer that is not JSON instead of passing on nothing", async () => {
    const err = await failure(() => new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem }).json("GET", "/html?token=x"));
    assert.equal(err.status, 200);
    assert.equal(err.code, "NOT_JSON");
    assert.match(err.message, /^Cannot read the answer to GET \/html: the server at https:\/\/127\.0\.0\.1:\d+ answered with something that is not JSON$/);
  });

  it("says a refused connection is one (status 0, ECONNREFUSED)", async () => {
    // A port that was just free: bind, note it, close.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const err = await failure(() => new PinnedHttpsClient({ url: `https://127.0.0.1:${port}`, ca: siteCa.certPem, peer: "the site" }).json("GET", "/echo"));
    assert.equal(err.status, 0);
    assert.equal(err.code, "ECONNREFUSED");
    assert.match(err.message, new RegExp(`^Cannot reach the site at https://127\\.0\\.0\\.1:${port}: `));
    assert.equal((err.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
  });

  it("gives up on a server that does not answer (status 0, ETIMEDOUT)", async () => {
    const err = await failure(() => new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem, timeoutMs: 300 }).json("GET", "/silent"));
    assert.equal(err.status, 0);
    assert.equal(err.code, "ETIMEDOUT");
  });

  it("presents the client certificate, and the new one from the next request after a change", async () => {
    const issue = async (name: string) => {
      const { keyPem, csrPem } = await createKeyAndCsr();
      const cert = await issueClientCertificate(siteCa, { csrPem, commonName: name, uri: `urn:slipway:device:${name}` });
      return { keyPem, certPem: cert.certPem };
    };
    const c = new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem, identity: await issue("device:one"), keepAlive: 2 });
    try {
      assert.equal((await c.json<{ clientCert: string }>("GET", "/echo")).clientCert, "device:one");
      const second = await issue("device:two");
      await c.changeIdentity(async () => second);
      assert.equal((await c.json<{ clientCert: string }>("GET", "/echo")).clientCert, "device:two");
    } finally {
      c.close();
    }
  });

  it("does not take a refusal that raced a change of certificate for a refusal of the new one", async () => {
    const c = new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem, keepAlive: 2 });
    try {
      let during: HttpsError | undefined;
      await c.changeIdentity(async () => {
        during = await failure(() => c.json("GET", "/refused"));
        const { keyPem, csrPem } = await createKeyAndCsr();
        return { keyPem, certPem: (await issueClientCertificate(siteCa, { csrPem, commonName: "device:three", uri: "urn:slipway:device:three" })).certPem };
      });
      assert.equal(during?.status, 403);
      assert.equal(during?.sameIdentity, false);
      assert.equal((await failure(() => c.json("GET", "/refused"))).sameIdentity, true);
    } finally {
      c.close();
    }
  });

  it("streams a byte answer, and refuses a stream with the envelope", async () => {
    const c = new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem });
    const res = await c.stream("/bytes");
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    assert.deepEqual([...Buffer.concat(chunks)], [0, 1, 2, 255]);
    const err = await failure(() => c.stream("/nothing-here"));
    assert.equal(err.status, 404);
    assert.equal(err.code, "SLIPWAY_NOT_FOUND");
  });

  it("without keep-alive, asks the server to close each connection, so a command's process can exit", async () => {
    await new PinnedHttpsClient({ url: site.url, ca: siteCa.certPem }).json("GET", "/echo");
    assert.equal(site.seen.at(-1)!.headers.connection, "close");
  });
});
