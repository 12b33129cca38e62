import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { createCertificateAuthority, issueServerCertificate } from "../security/ca.ts";
import { ApiError, apiRequest, detailLines, exitCodeForStatus, resolveConnection, serverOrigin, type Connection } from "./client.ts";
import { writeProfile } from "./profile.ts";
import { CliError, ExitCode } from "./command.ts";

describe("exit codes", () => {
  it("maps every HTTP status scripts care about, and everything else to 1", () => {
    const expected: [number, number][] = [
      [401, 3], [403, 4], [404, 5], [409, 6], [400, 7], [413, 7], [415, 7], [422, 7],
      [500, 8], [502, 8], [503, 8], [405, 1], [423, 1], [429, 1],
    ];
    for (const [status, code] of expected) assert.equal(exitCodeForStatus(status), code, `HTTP ${status}`);
  });
});

describe("error details", () => {
  it("puts each invalid field on its own line, leaving out what the message already says", () => {
    assert.deepEqual(detailLines([{ path: "macs.0", message: "not a MAC address" }, { path: "", message: "too many" }]), ["macs.0: not a MAC address", "too many"]);
    assert.deepEqual(detailLines({ problems: ["too short", "must not contain the username"] }, "Cannot use that password: too short"), ["must not contain the username"]);
    assert.deepEqual(detailLines(null), []);
  });
});

describe("connection resolution", () => {
  let dir: string;
  let profileFile: string;
  const caA = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n";
  const caB = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n";
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-conn-"));
    profileFile = path.join(dir, "cfg", "profile.json");
    writeProfile(profileFile, { server: "https://site-a.example:8443", token: "profile-token", ca: caA });
    fs.mkdirSync(path.join(dir, "var", "keys"), { recursive: true });
    fs.writeFileSync(path.join(dir, "var", "server.json"), JSON.stringify({ url: "https://127.0.0.1:9443", pid: 1 }));
    fs.writeFileSync(path.join(dir, "var", "keys", "ca.crt"), caB);
    fs.writeFileSync(path.join(dir, "b.pem"), caB);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("uses the saved profile: its server, CA and token", () => {
    const c = resolveConnection({}, { SLIPWAY_CONFIG: profileFile });
    assert.deepEqual([c.server, c.ca, c.token], ["https://site-a.example:8443", caA, "profile-token"]);
  });

  it("prefers --server, then SLIPWAY_SERVER, over the profile, and SLIPWAY_TOKEN over the profile's token", () => {
    const env = { SLIPWAY_CONFIG: profileFile, SLIPWAY_SERVER: "https://site-env.example", SLIPWAY_TOKEN: "env-token" };
    assert.equal(resolveConnection({}, env).server, "https://site-env.example");
    assert.equal(resolveConnection({}, env).token, "env-token");
    assert.equal(resolveConnection({ server: "https://site-flag.example" }, env).server, "https://site-flag.example");
  });

  it("never hands the profile's token or CA to another server", () => {
    const c = resolveConnection({ server: "https://elsewhere.example", data: path.join(dir, "nothing") }, { SLIPWAY_CONFIG: profileFile });
    assert.equal(c.token, null);
    assert.equal(c.ca, null);
  });

  it("falls back to the data folder's server.json and CA", () => {
    const c = resolveConnection({ data: path.join(dir, "var") }, { SLIPWAY_CONFIG: path.join(dir, "none.json") });
    assert.deepEqual([c.server, c.ca, c.token], ["https://127.0.0.1:9443", caB, null]);
  });

  it("takes the CA from --ca before SLIPWAY_CA before the profile", () => {
    const env = { SLIPWAY_CONFIG: profileFile, SLIPWAY_CA: path.join(dir, "b.pem") };
    assert.equal(resolveConnection({}, env).ca, caB);
    assert.throws(() => resolveConnection({ ca: path.join(dir, "missing.pem") }, env), (e: CliError) => e.exitCode === ExitCode.USAGE);
  });

  it("is a usage error when no server is known", () => {
    assert.throws(() => resolveConnection({ data: path.join(dir, "nothing") }, { SLIPWAY_CONFIG: path.join(dir, "none.json") }),
      (e: CliError) => e.exitCode === ExitCode.USAGE && /No server/.test(e.message));
  });

  it("accepts only https addresses, normalized to their origin", () => {
    assert.equal(serverOrigin("https://Site.Example:8443/", "t"), "https://site.example:8443");
    assert.equal(serverOrigin("site.example:8443", "t"), "https://site.example:8443");
    assert.throws(() => serverOrigin("http://site.example", "t"), /must use https/);
  });

  it("writes the profile owner-only, replacing a looser file", () => {
    const f = path.join(dir, "loose.json");
    fs.writeFileSync(f, "{}", { mode: 0o644 });
    writeProfile(f, { server: "https://x.example", token: "t" });
    assert.equal(fs.statSync(f).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(profileFile)).mode & 0o777, 0o700);
  });
});

describe("requests", () => {
  let server: https.Server;
  let conn: Connection;
  const seen: { url: string; authorization?: string }[] = [];
  before(async () => {
    const ca = await createCertificateAuthority({ commonName: "CLI test CA" });
    const cert = await issueServerCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
      seen.push({ url: req.url ?? "", authorization: req.headers.authorization });
      if (req.url?.startsWith("/api/v1/devices")) return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify([{ id: "d1" }]));
      if (req.url === "/api/v1/invalid") return res.writeHead(422, { "content-type": "application/json" }).end(JSON.stringify({ code: "SLIPWAY_INVALID", message: "Cannot create the device: 1 field is invalid", details: [{ path: "macs.0", message: "not a MAC address" }] }));
      res.writeHead(502, { "content-type": "text/html" }).end("<html>bad gateway</html>");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    conn = { server: url, ca: ca.certPem, caSource: "test", token: "tok", profileFile: "-", profile: {} };
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("sends the token and the query, and reads the JSON answer", async () => {
    assert.deepEqual(await apiRequest(conn, "GET", "/api/v1/devices", { query: { state: "approved", limit: 5, skip: undefined } }), [{ id: "d1" }]);
    assert.deepEqual(seen.at(-1), { url: "/api/v1/devices?state=approved&limit=5", authorization: "Bearer tok" });
  });

  it("turns a refusal into an ApiError with the exit code for its status", async () => {
    const err = await apiRequest(conn, "POST", "/api/v1/invalid", { body: {} }).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof ApiError);
    assert.deepEqual([err.status, err.code, err.message, err.exitCode], [422, "SLIPWAY_INVALID", "Cannot create the device: 1 field is invalid", ExitCode.INVALID]);
    assert.deepEqual(detailLines(err.details, err.message), ["macs.0: not a MAC address"]);
  });

  it("says which status a non-JSON error page had", async () => {
    const err = await apiRequest(conn, "GET", "/elsewhere").then(() => null, (e: unknown) => e);
    assert.ok(err instanceof ApiError);
    assert.deepEqual([err.code, err.message, err.exitCode], ["HTTP_502", "The server answered HTTP 502", ExitCode.UNAVAILABLE]);
  });

  it("says a server whose certificate the CA did not issue cannot be trusted, and where the CA came from", async () => {
    const other = await createCertificateAuthority({ commonName: "Another CA" });
    const err = await apiRequest({ ...conn, ca: other.certPem, caSource: "other.pem" }, "GET", "/api/v1/devices").then(() => null, (e: unknown) => e);
    assert.ok(err instanceof CliError && !(err instanceof ApiError));
    assert.match(err.message, /^Cannot trust https:\/\/127\.0\.0\.1:\d+: .* \(CA from other\.pem; give the site's CA with --ca FILE\)$/);
    assert.equal(err.exitCode, ExitCode.FAILURE);
  });
});
