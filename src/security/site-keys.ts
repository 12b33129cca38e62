/**
 * The data folder's key material (trust model §1): the site signing key, the site CA, the
 * master keyring, and the TLS server certificate the CA issues to this server.
 *
 *   DATA/keys/            0700
 *     signing.key         Ed25519 PKCS#8 PEM, 0600
 *     signing.pub         SPKI PEM, copied onto boot media
 *     ca.key              ECDSA P-256 PKCS#8 PEM, 0600
 *     ca.crt              the root that boot media pin
 *     master/             the envelope keyring (see envelope.ts)
 *     server.crt          leaf + CA chain, 0600   (made by ensureServerCertificate)
 *     server.key          0600
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { createCertificateAuthority, issueServerCertificate, type CertificateAndKey } from "./ca.ts";
import { assertPrivate, fsyncDir, makePrivateDir, writeFileAtomic } from "./key-files.ts";
import { Keyring } from "./envelope.ts";
import { generateSigningKeyPair } from "./signing.ts";

export type SiteKeys = {
  /** Ed25519 private key that signs policies, manifests, boot scripts and the audit chain. */
  signingKey: crypto.KeyObject;
  verifyKey: crypto.KeyObject;
  ca: CertificateAndKey;
  keyring: Keyring;
  /** The keys directory, DATA/keys. */
  dir: string;
};

const RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;

/** Create the site's keys under DATA/keys; refuses if DATA/keys already exists. The directory
 *  is assembled beside its final place and renamed in one step, so a crash leaves either no
 *  keys or all of them. */
export async function initSiteKeys(dataDir: string, opts: { siteName: string }): Promise<SiteKeys> {
  const dir = keysDir(dataDir);
  if (fs.existsSync(dir)) {
    throw new Error(`Cannot initialise site keys: ${dir} already exists; the site already has keys`);
  }
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const staging = path.join(dataDir, `.keys-init-${crypto.randomBytes(6).toString("hex")}`);
  try {
    makePrivateDir(staging);
    const signing = generateSigningKeyPair();
    writeFileAtomic(path.join(staging, "signing.key"), signing.privateKeyPem, 0o600);
    writeFileAtomic(path.join(staging, "signing.pub"), signing.publicKeyPem, 0o644);
    const ca = await createCertificateAuthority({ commonName: `Slipway CA (${opts.siteName})` });
    writeFileAtomic(path.join(staging, "ca.key"), ca.keyPem, 0o600);
    writeFileAtomic(path.join(staging, "ca.crt"), ca.certPem, 0o644);
    Keyring.create(path.join(staging, "master"));
    // Re-check right before the rename: a directory that appeared meanwhile must not be
    // replaced (rename would silently replace an empty one).
    if (fs.existsSync(dir)) throw new Error(`Cannot initialise site keys: ${dir} already exists; the site already has keys`);
    fs.renameSync(staging, dir);
    fsyncDir(dataDir);
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  return loadSiteKeys(dataDir);
}

/** Load the site's keys (synchronously: it runs once at start-up). Refuses private key files
 *  that others can read and key pairs whose halves do not match. */
export function loadSiteKeys(dataDir: string): SiteKeys {
  const dir = keysDir(dataDir);
  assertPrivate(dir, "load site keys");
  const signingKey = crypto.createPrivateKey(readPrivate(path.join(dir, "signing.key")));
  if (signingKey.asymmetricKeyType !== "ed25519") {
    throw new Error(`Cannot load site keys: ${path.join(dir, "signing.key")} is not an Ed25519 key`);
  }
  const verifyKey = crypto.createPublicKey(fs.readFileSync(path.join(dir, "signing.pub"), "utf8"));
  if (!spki(verifyKey).equals(spki(crypto.createPublicKey(signingKey)))) {
    throw new Error(`Cannot load site keys: signing.pub does not belong to signing.key in ${dir}`);
  }
  const ca = {
    certPem: fs.readFileSync(path.join(dir, "ca.crt"), "utf8"),
    keyPem: readPrivate(path.join(dir, "ca.key")),
  };
  if (!new crypto.X509Certificate(ca.certPem).checkPrivateKey(crypto.createPrivateKey(ca.keyPem))) {
    throw new Error(`Cannot load site keys: ca.key does not belong to ca.crt in ${dir}`);
  }
  return { signingKey, verifyKey, ca, keyring: Keyring.open(path.join(dir, "master")), dir };
}

/**
 * The server's TLS certificate for `hosts` (DNS names and IP addresses), with the CA appended.
 * Reuses DATA/keys/server.crt when it is the site CA's, matches its key, names every host and
 * has more than 30 days left; otherwise issues a new one for exactly `hosts` and stores it.
 */
export async function ensureServerCertificate(
  keys: SiteKeys,
  dataDir: string,
  hosts: string[],
): Promise<CertificateAndKey> {
  const wanted = [...new Set(hosts.map((h) => h.trim()).filter((h) => h !== ""))];
  if (wanted.length === 0) throw new TypeError("Cannot issue the server certificate: no host names given");
  const dir = keysDir(dataDir);
  const certFile = path.join(dir, "server.crt");
  const keyFile = path.join(dir, "server.key");

  const existing = readIfPresent(certFile, keyFile);
  if (existing && isReusable(existing, keys.ca.certPem, wanted)) return existing;

  const leaf = await issueServerCertificate(keys.ca, {
    dnsNames: wanted.filter((h) => net.isIP(h) === 0),
    ipAddresses: wanted.filter((h) => net.isIP(h) !== 0),
  });
  const issued = { certPem: leaf.certPem + keys.ca.certPem, keyPem: leaf.keyPem };
  // Key first: a crash between the two writes leaves a mismatched pair, which the next start
  // notices (checkPrivateKey) and reissues.
  writeFileAtomic(keyFile, issued.keyPem, 0o600);
  writeFileAtomic(certFile, issued.certPem, 0o600);
  return issued;
}

function isReusable(current: CertificateAndKey, caCertPem: string, hosts: string[]): boolean {
  try {
    const cert = new crypto.X509Certificate(current.certPem); // the first certificate: the leaf
    const ca = new crypto.X509Certificate(caCertPem);
    const now = Date.now();
    return (
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey) &&
      cert.checkPrivateKey(crypto.createPrivateKey(current.keyPem)) &&
      Date.parse(cert.validFrom) <= now &&
      Date.parse(cert.validTo) - now > RENEW_BEFORE_MS &&
      hosts.every((h) =>
        net.isIP(h) !== 0 ? cert.checkIP(h) !== undefined : cert.checkHost(h, { subject: "never", wildcards: false }) !== undefined,
      )
    );
  } catch {
    return false; // unreadable or corrupt: issue a fresh one
  }
}

function readIfPresent(certFile: string, keyFile: string): CertificateAndKey | null {
  try {
    return { certPem: fs.readFileSync(certFile, "utf8"), keyPem: readPrivate(keyFile) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

function keysDir(dataDir: string): string {
  return path.join(dataDir, "keys");
}

function readPrivate(file: string): string {
  assertPrivate(file, "load site keys");
  return fs.readFileSync(file, "utf8");
}

function spki(key: crypto.KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" });
}
