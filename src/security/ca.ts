/**
 * The site certificate authority (trust model §1b): an ECDSA P-256 root that issues TLS server
 * certificates to roles, and client certificates to devices and distribution points.
 * Boot media pin this root. Every X.509 structure is built by @peculiar/x509; nothing here
 * encodes ASN.1 by hand.
 */
import crypto from "node:crypto";
import net from "node:net";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(globalThis.crypto);

type CryptoKey = crypto.webcrypto.CryptoKey;
type CryptoKeyPair = crypto.webcrypto.CryptoKeyPair;

/** A PEM certificate and its PKCS#8 PEM private key. */
export type CertificateAndKey = { certPem: string; keyPem: string };

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 24 * 60 * 60 * 1000;
// Backdate notBefore a little so a machine whose clock runs slightly behind accepts a fresh cert.
const CLOCK_SKEW_MS = 5 * 60 * 1000;
const CA_DEFAULT_DAYS = 3650;
// The CA/Browser Forum's maximum for server certificates; a private CA need not follow it, but
// browsers and some TLS stacks apply it to every chain.
const SERVER_DEFAULT_DAYS = 397;

/** Create a self-signed root: basicConstraints CA (critical, path length 0), keyCertSign|cRLSign. */
export async function createCertificateAuthority(opts: {
  commonName: string;
  validDays?: number;
}): Promise<CertificateAndKey> {
  const commonName = opts.commonName?.trim();
  if (!commonName) throw new TypeError("Cannot create the certificate authority: commonName is empty");
  const days = validDaysOrDefault(opts.validDays, CA_DEFAULT_DAYS);
  const keys = (await crypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
  const notBefore = new Date(Date.now() - CLOCK_SKEW_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }],
    notBefore,
    notAfter: new Date(notBefore.getTime() + days * DAY_MS),
    keys,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [
      // pathLen 0: this root signs end-entity certificates only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: await exportPkcs8Pem(keys.privateKey) };
}

/** Issue a TLS server certificate (fresh P-256 key, SAN, EKU serverAuth). `certPem` holds the
 *  leaf only; callers append the CA certificate to form the chain they serve. */
export async function issueServerCertificate(
  ca: CertificateAndKey,
  opts: { dnsNames: string[]; ipAddresses: string[]; validDays?: number },
): Promise<CertificateAndKey> {
  const { dnsNames, ipAddresses } = serverNames(opts);
  const keys = (await crypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
  const certPem = await issue(ca, {
    commonName: dnsNames[0] ?? ipAddresses[0],
    publicKey: keys.publicKey,
    validDays: validDaysOrDefault(opts.validDays, SERVER_DEFAULT_DAYS),
    extensions: serverExtensions(dnsNames, ipAddresses),
  });
  return { certPem, keyPem: await exportPkcs8Pem(keys.privateKey) };
}

/** Normalized, checked host names for a server certificate; at least one. */
function serverNames(opts: { dnsNames: string[]; ipAddresses: string[] }): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames = opts.dnsNames.map(normalizeDnsName);
  const ipAddresses = opts.ipAddresses.map((ip) => {
    if (net.isIP(ip) === 0) throw new TypeError(`Cannot issue a server certificate: "${ip}" is not an IP address`);
    return ip;
  });
  if (dnsNames.length + ipAddresses.length === 0) {
    throw new TypeError("Cannot issue a server certificate: name at least one DNS name or IP address");
  }
  return { dnsNames, ipAddresses };
}

function serverExtensions(dnsNames: string[], ipAddresses: string[]): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    new x509.SubjectAlternativeNameExtension([
      ...dnsNames.map((value) => ({ type: "dns" as const, value })),
      ...ipAddresses.map((value) => ({ type: "ip" as const, value })),
    ]),
  ];
}

/** Sign an end-entity certificate for `publicKey` with the CA. Adds the subject and authority
 *  key identifiers; the caller supplies every other extension (server, client, ...). */
async function issue(
  ca: CertificateAndKey,
  leaf: { commonName: string; publicKey: CryptoKey; validDays: number; extensions: x509.Extension[]; now?: Date },
): Promise<string> {
  const { cert: caCert, signingKey } = await loadCa(ca);
  const notBefore = new Date((leaf.now ?? new Date()).getTime() - CLOCK_SKEW_MS);
  // A certificate cannot be valid past its issuer, so do not claim it is.
  const notAfter = new Date(Math.min(notBefore.getTime() + leaf.validDays * DAY_MS, caCert.notAfter.getTime()));
  const caKeyId = caCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [leaf.commonName] }],
    issuer: caCert.subjectName,
    notBefore,
    notAfter,
    publicKey: leaf.publicKey,
    signingKey,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [
      ...leaf.extensions,
      await x509.SubjectKeyIdentifierExtension.create(leaf.publicKey),
      caKeyId
        ? new x509.AuthorityKeyIdentifierExtension(caKeyId)
        : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  return cert.toString("pem") + "\n";
}

async function loadCa(ca: CertificateAndKey): Promise<{ cert: x509.X509Certificate; signingKey: CryptoKey }> {
  const cert = new x509.X509Certificate(x509.PemConverter.decodeFirst(ca.certPem));
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (!basic?.ca) throw new TypeError("Cannot issue: the CA certificate is not a certificate authority");
  const keyObject = crypto.createPrivateKey(ca.keyPem);
  const keySpki = crypto.createPublicKey(keyObject).export({ type: "spki", format: "der" });
  if (!keySpki.equals(Buffer.from(cert.publicKey.rawData))) {
    throw new TypeError("Cannot issue: the CA private key does not belong to the CA certificate");
  }
  const pkcs8 = keyObject.export({ type: "pkcs8", format: "der" });
  const signingKey = await crypto.subtle.importKey("pkcs8", pkcs8, EC_P256, false, ["sign"]);
  return { cert, signingKey };
}

/** 16 random bytes as a positive DER INTEGER (top bit clear, so no sign padding; next bit set,
 *  so no leading zero is stripped): 126 random bits, above the CA/B Forum's 64. */
function randomSerial(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = (bytes[0] & 0x7f) | 0x40;
  return bytes.toString("hex");
}

async function exportPkcs8Pem(key: CryptoKey): Promise<string> {
  return crypto.KeyObject.from(key).export({ type: "pkcs8", format: "pem" }) as string;
}

function validDaysOrDefault(days: number | undefined, fallback: number): number {
  if (days === undefined) return fallback;
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw new RangeError(`Cannot issue a certificate: validDays must be a whole number of days from 1 to 36500`);
  }
  return days;
}

// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 octets max.
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

function normalizeDnsName(name: string): string {
  const lower = name.trim().toLowerCase().replace(/\.$/, "");
  if (!DNS_NAME.test(lower) || net.isIP(lower) !== 0) {
    throw new TypeError(`Cannot issue a server certificate: "${name}" is not a DNS host name`);
  }
  return lower;
}

/** What the CA says about a certificate it issued, for the inventory. */
export type IssuedCertificate = {
  certPem: string;
  serial: string;
  /** SHA-256 of the DER, lower-case hex: how a TLS peer's certificate is looked up. */
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
};

const CLIENT_DEFAULT_DAYS = 7;

/** Thrown when a certificate request is malformed or its signature does not prove the key. */
export class CertificateRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CertificateRequestError";
  }
}

/** The public key a PKCS#10 request proves its holder has (its own signature must verify). */
async function requestedKey(csrPem: string): Promise<CryptoKey> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem.trim());
  } catch {
    throw new CertificateRequestError("The certificate request is not a PEM or DER PKCS#10 request");
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw new CertificateRequestError("The certificate request's signature does not verify: it does not prove the key");
  let publicKey: CryptoKey;
  try {
    publicKey = await csr.publicKey.export();
  } catch {
    throw new CertificateRequestError("The certificate request's key type is not supported (use ECDSA P-256, Ed25519 or RSA ≥ 2048)");
  }
  const alg = publicKey.algorithm as { name: string; modulusLength?: number };
  if (alg.name.startsWith("RSA") && (alg.modulusLength ?? 0) < 2048) {
    throw new CertificateRequestError("The certificate request's RSA key is shorter than 2048 bits");
  }
  return publicKey;
}

function issued(certPem: string): IssuedCertificate {
  const c = new crypto.X509Certificate(certPem);
  return {
    certPem, serial: c.serialNumber.toLowerCase(), fingerprint: fingerprintOf(c),
    notBefore: new Date(c.validFrom), notAfter: new Date(c.validTo),
  };
}

/**
 * Issues a short-lived TLS client certificate for the key in a PKCS#10 request. The request's
 * own signature must verify (the requester holds the private key, which never leaves it); its
 * subject is ignored — the CA names the holder (`commonName`, e.g. `device:<id>`) and binds it
 * with a URI SAN (`urn:slipway:device:<id>`).
 */
export async function issueClientCertificate(
  ca: CertificateAndKey,
  opts: { csrPem: string; commonName: string; uri: string; validDays?: number; now?: Date },
): Promise<IssuedCertificate> {
  const publicKey = await requestedKey(opts.csrPem);
  const certPem = await issue(ca, {
    commonName: opts.commonName,
    publicKey,
    validDays: validDaysOrDefault(opts.validDays, CLIENT_DEFAULT_DAYS),
    now: opts.now,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: opts.uri }]),
    ],
  });
  return issued(certPem);
}

/**
 * Issues a TLS server certificate for the key in a PKCS#10 request — for a role on another
 * host (a distribution point) whose key never leaves it. As with client certificates the
 * request's subject and extensions are ignored: the CA names exactly the hosts it is given.
 */
export async function issueServerCertificateForRequest(
  ca: CertificateAndKey,
  opts: { csrPem: string; dnsNames: string[]; ipAddresses: string[]; validDays?: number; now?: Date },
): Promise<IssuedCertificate> {
  const { dnsNames, ipAddresses } = serverNames(opts);
  const publicKey = await requestedKey(opts.csrPem);
  const certPem = await issue(ca, {
    commonName: dnsNames[0] ?? ipAddresses[0],
    publicKey,
    validDays: validDaysOrDefault(opts.validDays, SERVER_DEFAULT_DAYS),
    now: opts.now,
    extensions: serverExtensions(dnsNames, ipAddresses),
  });
  return issued(certPem);
}

/** SHA-256 of a certificate's DER in lower-case hex. */
export function fingerprintOf(cert: crypto.X509Certificate | { raw: Buffer }): string {
  return crypto.createHash("sha256").update(cert.raw).digest("hex");
}

export type RevokedEntry = { serial: string; revokedAt: Date; reason?: "keyCompromise" | "superseded" | "cessationOfOperation" | "unspecified" };

/** A CRL (RFC 5280 §5) signed by the CA, listing every revoked serial. */
export async function createCrl(
  ca: CertificateAndKey,
  opts: { revoked: RevokedEntry[]; thisUpdate: Date; nextUpdate: Date; crlNumber: number },
): Promise<string> {
  const { cert, signingKey } = await loadCa(ca);
  const reasons = { unspecified: x509.X509CrlReason.unspecified, keyCompromise: x509.X509CrlReason.keyCompromise,
    superseded: x509.X509CrlReason.superseded, cessationOfOperation: x509.X509CrlReason.cessationOfOperation };
  const caKeyId = cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const crl = await x509.X509CrlGenerator.create({
    issuer: cert.subjectName,
    thisUpdate: opts.thisUpdate,
    nextUpdate: opts.nextUpdate,
    signingAlgorithm: ECDSA_SHA256,
    signingKey,
    extensions: [
      ...(caKeyId ? [new x509.AuthorityKeyIdentifierExtension(caKeyId)] : []),
      // cRLNumber (RFC 5280 §5.2.3), a monotonically increasing INTEGER.
      new x509.Extension("2.5.29.20", false, derInteger(opts.crlNumber)),
    ],
    entries: opts.revoked.map((r) => ({ serialNumber: r.serial, revocationDate: r.revokedAt, reason: reasons[r.reason ?? "unspecified"] })),
  });
  // RFC 7468 §5 labels a CRL "X509 CRL" (what OpenSSL and others expect).
  return x509.PemConverter.encode(crl.rawData, "X509 CRL") + "\n";
}

/** DER INTEGER for a non-negative safe integer. */
function derInteger(n: number): ArrayBuffer {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if (bytes[0] & 0x80) bytes.unshift(0);
  return new Uint8Array([0x02, bytes.length, ...bytes]).buffer;
}
