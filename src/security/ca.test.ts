import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import tls from "node:tls";
import type { AddressInfo } from "node:net";
import * as x509 from "@peculiar/x509";
import { CertificateRequestError, createCertificateAuthority, issueServerCertificate, issueServerCertificateForRequest, type CertificateAndKey } from "./ca.ts";
import { createKeyAndCsr } from "./csr.ts";

const ca = await createCertificateAuthority({ commonName: "Slipway CA (test)" });
const server = await issueServerCertificate(ca, {
  dnsNames: ["localhost", "Slipway.Example.org."],
  ipAddresses: ["127.0.0.1", "::1"],
});

/** Serve `cert` on 127.0.0.1 and try a TLS handshake with `options`; resolves to null on
 *  success or the client's error. */
async function handshake(cert: CertificateAndKey, options: tls.ConnectionOptions): Promise<Error | null> {
  const srv = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (socket) => socket.end("hello"));
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as AddressInfo;
  try {
    return await new Promise<Error | null>((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port, ...options }, () => {
        socket.once("data", (d) => {
          assert.equal(d.toString(), "hello");
          socket.end();
          resolve(null);
        });
      });
      socket.once("error", resolve);
    });
  } finally {
    await new Promise((resolve) => srv.close(resolve));
  }
}

test("a TLS client that pins the site CA connects to an issued server certificate", async () => {
  assert.equal(await handshake(server, { ca: ca.certPem, servername: "localhost" }), null);
  assert.equal(await handshake(server, { ca: ca.certPem, servername: "slipway.example.org" }), null);
  // No servername: node checks the IP address against the IP SAN entries.
  assert.equal(await handshake(server, { ca: ca.certPem }), null);
});

test("a client pinning a different CA refuses the certificate", async () => {
  const otherCa = await createCertificateAuthority({ commonName: "Somebody else" });
  const err = await handshake(server, { ca: otherCa.certPem, servername: "localhost" });
  assert.ok(err, "handshake should fail");
  assert.match((err as NodeJS.ErrnoException).code ?? "", /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED/);
});

test("a client asking for a host the certificate does not name refuses it", async () => {
  const err = await handshake(server, { ca: ca.certPem, servername: "other.example.org" });
  assert.equal((err as NodeJS.ErrnoException)?.code, "ERR_TLS_CERT_ALTNAME_INVALID");
});

test("the root is a P-256 CA with critical basicConstraints and keyCertSign|cRLSign", () => {
  const root = new crypto.X509Certificate(ca.certPem);
  assert.equal(root.ca, true);
  assert.equal(root.subject, "CN=Slipway CA (test)");
  assert.equal(root.issuer, root.subject);
  assert.equal(root.verify(root.publicKey), true);
  assert.equal(root.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  const years = (Date.parse(root.validTo) - Date.parse(root.validFrom)) / (365.25 * 86400e3);
  assert.ok(years > 9.9 && years < 10.1, `valid ${years} years`);
  assert.equal(root.checkPrivateKey(crypto.createPrivateKey(ca.keyPem)), true);
  const parsed = new x509.X509Certificate(ca.certPem);
  const basic = parsed.getExtension(x509.BasicConstraintsExtension);
  assert.deepEqual([basic?.critical, basic?.ca, basic?.pathLength], [true, true, 0]);
  const usage = parsed.getExtension(x509.KeyUsagesExtension);
  assert.deepEqual([usage?.critical, usage?.usages], [true, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign]);
  assert.match(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? "", /^[0-9a-f]{40}$/);
});

test("the server certificate is issued by the CA with SAN, serverAuth and a positive 16-byte serial", () => {
  const root = new crypto.X509Certificate(ca.certPem);
  const leaf = new crypto.X509Certificate(server.certPem);
  assert.equal(leaf.checkIssued(root), true);
  assert.equal(leaf.verify(root.publicKey), true);
  assert.equal(leaf.ca, false);
  assert.equal(leaf.subjectAltName, "DNS:localhost, DNS:slipway.example.org, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
  assert.deepEqual(leaf.keyUsage, ["1.3.6.1.5.5.7.3.1"]); // node reports the EKU here: serverAuth
  assert.match(leaf.serialNumber, /^[4-7][0-9A-F]{31}$/);
  const days = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 86400e3;
  assert.equal(Math.round(days), 397);
  assert.equal(leaf.checkPrivateKey(crypto.createPrivateKey(server.keyPem)), true);
  assert.equal((server.certPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 1, "leaf only");
  const rootSki = new x509.X509Certificate(ca.certPem).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const parsed = new x509.X509Certificate(server.certPem);
  assert.ok(rootSki);
  assert.equal(parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId, rootSki);
  assert.ok(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
  assert.equal(parsed.getExtension(x509.BasicConstraintsExtension)?.critical, true);
});

test("every serial number is different", async () => {
  const a = new crypto.X509Certificate((await issueServerCertificate(ca, { dnsNames: ["a.test"], ipAddresses: [] })).certPem);
  const b = new crypto.X509Certificate((await issueServerCertificate(ca, { dnsNames: ["a.test"], ipAddresses: [] })).certPem);
  assert.notEqual(a.serialNumber, b.serialNumber);
});

test("bad names, no names, a mismatched CA key or a non-CA issuer are refused", async () => {
  await assert.rejects(issueServerCertificate(ca, { dnsNames: [], ipAddresses: [] }), TypeError);
  await assert.rejects(issueServerCertificate(ca, { dnsNames: ["bad name"], ipAddresses: [] }), TypeError);
  await assert.rejects(issueServerCertificate(ca, { dnsNames: ["*.example.org"], ipAddresses: [] }), TypeError);
  await assert.rejects(issueServerCertificate(ca, { dnsNames: [], ipAddresses: ["300.1.1.1"] }), TypeError);
  const other = await createCertificateAuthority({ commonName: "Other" });
  await assert.rejects(
    issueServerCertificate({ certPem: ca.certPem, keyPem: other.keyPem }, { dnsNames: ["a.test"], ipAddresses: [] }),
    /does not belong/,
  );
  await assert.rejects(issueServerCertificate(server, { dnsNames: ["a.test"], ipAddresses: [] }), /not a certificate authority/);
});

test("a leaf never outlives its CA", async () => {
  const shortCa = await createCertificateAuthority({ commonName: "Short", validDays: 30 });
  const leaf = new crypto.X509Certificate(
    (await issueServerCertificate(shortCa, { dnsNames: ["a.test"], ipAddresses: [] })).certPem,
  );
  assert.equal(leaf.validTo, new crypto.X509Certificate(shortCa.certPem).validTo);
});

test("a server certificate for a requested key names only the hosts the CA is given, and serves TLS with that key", async () => {
  const { keyPem, csrPem } = await createKeyAndCsr("evil.example");
  const issued = await issueServerCertificateForRequest(ca, { csrPem, dnsNames: ["dp1.example"], ipAddresses: ["127.0.0.1"], validDays: 30 });
  const cert = new crypto.X509Certificate(issued.certPem);
  assert.equal(cert.subjectAltName, "DNS:dp1.example, IP Address:127.0.0.1", "the request's own subject is ignored");
  assert.ok(cert.checkPrivateKey(crypto.createPrivateKey(keyPem)));
  assert.equal(new x509.X509Certificate(issued.certPem).getExtension(x509.ExtendedKeyUsageExtension)?.usages.join(), x509.ExtendedKeyUsage.serverAuth);
  const days = (issued.notAfter.getTime() - issued.notBefore.getTime()) / 86_400_000;
  assert.ok(days <= 30.01, `${days} days`);
  assert.equal(await handshake({ certPem: issued.certPem, keyPem }, { ca: ca.certPem, servername: "dp1.example" }), null);
  assert.ok(await handshake({ certPem: issued.certPem, keyPem }, { ca: ca.certPem, servername: "evil.example" }));
  const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
  der[der.length - 5] ^= 0x01; // inside the signature: it no longer proves the key
  await assert.rejects(issueServerCertificateForRequest(ca, { csrPem: x509.PemConverter.encode(der, "CERTIFICATE REQUEST"), dnsNames: ["dp1.example"], ipAddresses: [] }), CertificateRequestError);
  await assert.rejects(issueServerCertificateForRequest(ca, { csrPem, dnsNames: [], ipAddresses: [] }), TypeError);
});
