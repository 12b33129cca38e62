import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createCertificateAuthority, issueServerCertificate } from "./ca.ts";
import { ensureServerCertificate, initSiteKeys, loadSiteKeys } from "./site-keys.ts";
import { signValue, verifyValue } from "./signing.ts";

function dataDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-site-keys-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const modeOf = (file: string) => fs.statSync(file).mode & 0o777;

test("init creates every key file with private modes and nothing else", async (t) => {
  const data = dataDir(t);
  const keys = await initSiteKeys(data, { siteName: "Contoso" });
  const dir = path.join(data, "keys");
  assert.equal(keys.dir, dir);
  assert.equal(modeOf(dir), 0o700);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["ca.crt", "ca.key", "master", "signing.key", "signing.pub"]);
  assert.equal(modeOf(path.join(dir, "signing.key")), 0o600);
  assert.equal(modeOf(path.join(dir, "ca.key")), 0o600);
  assert.equal(modeOf(path.join(dir, "master")), 0o700);
  for (const f of fs.readdirSync(path.join(dir, "master"))) assert.equal(modeOf(path.join(dir, "master", f)), 0o600);
  assert.deepEqual(fs.readdirSync(data), ["keys"], "no staging directory left behind");

  assert.match(fs.readFileSync(path.join(dir, "signing.key"), "utf8"), /^-----BEGIN PRIVATE KEY-----/);
  assert.equal(crypto.createPrivateKey(fs.readFileSync(path.join(dir, "signing.key"))).asymmetricKeyType, "ed25519");
  const ca = new crypto.X509Certificate(fs.readFileSync(path.join(dir, "ca.crt")));
  assert.equal(ca.ca, true);
  assert.equal(ca.subject, "CN=Slipway CA (Contoso)");
});

test("init refuses when the site already has keys, and leaves them intact", async (t) => {
  const data = dataDir(t);
  await initSiteKeys(data, { siteName: "Contoso" });
  const before = fs.readFileSync(path.join(data, "keys", "signing.key"), "utf8");
  await assert.rejects(initSiteKeys(data, { siteName: "Contoso" }), /already exists/);
  assert.equal(fs.readFileSync(path.join(data, "keys", "signing.key"), "utf8"), before);
  assert.deepEqual(fs.readdirSync(data), ["keys"]);
});

test("load returns the same keys init made, and they work together", async (t) => {
  const data = dataDir(t);
  const made = await initSiteKeys(data, { siteName: "Contoso" });
  const loaded = loadSiteKeys(data);
  const doc = { kind: "policy", device: "d-1" };
  assert.equal(verifyValue(loaded.verifyKey, doc, signValue(made.signingKey, doc)), true);
  assert.equal(verifyValue(made.verifyKey, doc, signValue(loaded.signingKey, doc)), true);
  assert.equal(loaded.ca.certPem, made.ca.certPem);
  assert.equal(loaded.ca.keyPem, made.ca.keyPem);
  assert.equal(loaded.keyring.currentKid, made.keyring.currentKid);
  assert.equal(loaded.keyring.open(made.keyring.seal("s3cret", "aad"), "aad"), "s3cret");
  assert.equal(made.keyring.dir, path.join(data, "keys", "master"));
});

test("load refuses a readable private key and a public key that does not match", async (t) => {
  const data = dataDir(t);
  await initSiteKeys(data, { siteName: "Contoso" });
  const dir = path.join(data, "keys");
  fs.chmodSync(path.join(dir, "ca.key"), 0o640);
  assert.throws(() => loadSiteKeys(data), /ca\.key has mode 0640/);
  fs.chmodSync(path.join(dir, "ca.key"), 0o600);
  const other = crypto.generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" });
  fs.writeFileSync(path.join(dir, "signing.pub"), other);
  assert.throws(() => loadSiteKeys(data), /does not belong/);
});

test("the server certificate is issued once, reused, and chains to the site CA", async (t) => {
  const data = dataDir(t);
  const keys = await initSiteKeys(data, { siteName: "Contoso" });
  const first = await ensureServerCertificate(keys, data, ["slipway.contoso.test", "127.0.0.1"]);
  const dir = path.join(data, "keys");
  assert.equal(modeOf(path.join(dir, "server.crt")), 0o600);
  assert.equal(modeOf(path.join(dir, "server.key")), 0o600);
  assert.equal((first.certPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, "leaf + CA");
  assert.ok(first.certPem.endsWith(keys.ca.certPem));
  const leaf = new crypto.X509Certificate(first.certPem);
  assert.equal(leaf.checkIssued(new crypto.X509Certificate(keys.ca.certPem)), true);
  assert.equal(leaf.checkPrivateKey(crypto.createPrivateKey(first.keyPem)), true);

  const again = await ensureServerCertificate(loadSiteKeys(data), data, ["127.0.0.1", "SLIPWAY.contoso.test"]);
  assert.deepEqual(again, first, "same hosts (any order, any case): reused");
  const fewer = await ensureServerCertificate(keys, data, ["127.0.0.1"]);
  assert.deepEqual(fewer, first, "a subset of the hosts: reused");
});

test("a new host, a certificate near expiry, a foreign CA or a mismatched key cause a reissue", async (t) => {
  const data = dataDir(t);
  const keys = await initSiteKeys(data, { siteName: "Contoso" });
  const dir = path.join(data, "keys");
  const first = await ensureServerCertificate(keys, data, ["slipway.contoso.test"]);

  const wider = await ensureServerCertificate(keys, data, ["slipway.contoso.test", "10.0.0.5", "deploy.contoso.test"]);
  assert.notEqual(wider.certPem, first.certPem);
  const leaf = new crypto.X509Certificate(wider.certPem);
  assert.ok(leaf.checkHost("deploy.contoso.test") && leaf.checkHost("slipway.contoso.test") && leaf.checkIP("10.0.0.5"));
  assert.equal(fs.readFileSync(path.join(dir, "server.crt"), "utf8"), wider.certPem);

  // 20 days left: inside the 30-day renewal window.
  const expiring = await issueServerCertificate(keys.ca, { dnsNames: ["slipway.contoso.test"], ipAddresses: [], validDays: 20 });
  fs.writeFileSync(path.join(dir, "server.crt"), expiring.certPem + keys.ca.certPem);
  fs.writeFileSync(path.join(dir, "server.key"), expiring.keyPem);
  const renewed = await ensureServerCertificate(keys, data, ["slipway.contoso.test"]);
  assert.notEqual(renewed.certPem, expiring.certPem + keys.ca.certPem);
  assert.ok(Date.parse(new crypto.X509Certificate(renewed.certPem).validTo) - Date.now() > 300 * 86400e3);

  const foreignCa = await createCertificateAuthority({ commonName: "Someone else" });
  const foreign = await issueServerCertificate(foreignCa, { dnsNames: ["slipway.contoso.test"], ipAddresses: [] });
  fs.writeFileSync(path.join(dir, "server.crt"), foreign.certPem);
  fs.writeFileSync(path.join(dir, "server.key"), foreign.keyPem);
  const ours = await ensureServerCertificate(keys, data, ["slipway.contoso.test"]);
  assert.ok(new crypto.X509Certificate(ours.certPem).checkIssued(new crypto.X509Certificate(keys.ca.certPem)));

  // The key file replaced by another key (e.g. a crash between the two writes).
  const strayKey = (await issueServerCertificate(keys.ca, { dnsNames: ["x.test"], ipAddresses: [] })).keyPem;
  fs.writeFileSync(path.join(dir, "server.key"), strayKey);
  const fixed = await ensureServerCertificate(keys, data, ["slipway.contoso.test"]);
  assert.notEqual(fixed.certPem, ours.certPem);
  assert.ok(new crypto.X509Certificate(fixed.certPem).checkPrivateKey(crypto.createPrivateKey(fixed.keyPem)));

  fs.writeFileSync(path.join(dir, "server.crt"), "garbage");
  const fromGarbage = await ensureServerCertificate(keys, data, ["slipway.contoso.test"]);
  assert.match(fromGarbage.certPem, /BEGIN CERTIFICATE/);
});

test("no hosts is refused", async (t) => {
  const data = dataDir(t);
  const keys = await initSiteKeys(data, { siteName: "Contoso" });
  await assert.rejects(ensureServerCertificate(keys, data, []), TypeError);
  await assert.rejects(ensureServerCertificate(keys, data, ["  "]), TypeError);
});
