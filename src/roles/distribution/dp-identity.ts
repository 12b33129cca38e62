/**
 * A distribution point's own identity, kept in its data folder: two key pairs it made itself
 * (the private keys never leave it), the client certificate it talks to the site with and the
 * server certificate devices see, both from the site CA. Enrolling needs the one-time secret
 * once; later starts need nothing. Renewal replaces both before the client certificate runs
 * out, proving itself with the current one. Once the site refuses the identity (the
 * distribution point was removed, or its certificate revoked), that is recorded, and the
 * identity is not used again: only enrolling with a new secret replaces it.
 *
 *   DIR/                 0700
 *     dp.json            id, name, URL and host names the site registered, 0600
 *     removed.json       when and why the site refused the identity, if it did, 0600
 *     keys/              0700
 *       client.key/.crt  0600
 *       server.key/.crt  0600 (server.crt holds the leaf and the site CA)
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createKeyAndCsr } from "../../security/csr.ts";
import { assertPrivate, makePrivateDir, writeFileAtomic } from "../../security/key-files.ts";
import type { SiteLink } from "./dp-site-link.ts";

export type DpIdentity = {
  id: string; name: string; url: string; hostNames: string[];
  client: { keyPem: string; certPem: string };
  server: { keyPem: string; certPem: string };
};

type Enrolled = {
  id: string; name: string; url: string; hostNames: string[];
  certificate: string; serverCertificate: string; caCertificate: string;
};

const files = (dataDir: string) => {
  const keys = path.join(dataDir, "keys");
  return {
    keys, meta: path.join(dataDir, "dp.json"), removed: path.join(dataDir, "removed.json"),
    clientKey: path.join(keys, "client.key"), clientCert: path.join(keys, "client.crt"),
    serverKey: path.join(keys, "server.key"), serverCert: path.join(keys, "server.crt"),
  };
};

function readPrivate(file: string): string {
  assertPrivate(file, "load the distribution point's identity");
  return fs.readFileSync(file, "utf8");
}

/** The identity stored in `dataDir`, or null when this distribution point has not enrolled. */
export function loadIdentity(dataDir: string): DpIdentity | null {
  const f = files(dataDir);
  if (!fs.existsSync(f.meta)) return null;
  assertPrivate(dataDir, "load the distribution point's identity");
  const meta = JSON.parse(readPrivate(f.meta)) as { id: string; name: string; url: string; hostNames: string[] };
  const identity: DpIdentity = {
    ...meta,
    client: { keyPem: readPrivate(f.clientKey), certPem: readPrivate(f.clientCert) },
    server: { keyPem: readPrivate(f.serverKey), certPem: readPrivate(f.serverCert) },
  };
  for (const pair of [identity.client, identity.server]) {
    if (!new crypto.X509Certificate(pair.certPem).checkPrivateKey(crypto.createPrivateKey(pair.keyPem))) {
      throw new Error(`Cannot load the distribution point's identity in ${dataDir}: a certificate does not belong to its key`);
    }
  }
  return identity;
}

/** Checks what the site issued: each certificate for our own key, from the pinned CA. */
function accept(answer: Enrolled, keys: { client: string; server: string }, caPem: string): DpIdentity {
  const ca = new crypto.X509Certificate(caPem);
  const check = (pem: string, keyPem: string, what: string) => {
    const c = new crypto.X509Certificate(pem);
    if (!c.checkIssued(ca) || !c.verify(ca.publicKey)) throw new Error(`The site's ${what} certificate is not issued by the pinned site CA`);
    if (!c.checkPrivateKey(crypto.createPrivateKey(keyPem))) throw new Error(`The site's ${what} certificate is not for this distribution point's key`);
  };
  check(answer.certificate, keys.client, "client");
  check(answer.serverCertificate, keys.server, "server");
  return {
    id: answer.id, name: answer.name, url: answer.url, hostNames: answer.hostNames,
    client: { keyPem: keys.client, certPem: answer.certificate },
    // Served as a chain, so a device that pins the site CA can build it.
    server: { keyPem: keys.server, certPem: answer.serverCertificate + caPem },
  };
}

function save(dataDir: string, id: DpIdentity): void {
  const f = files(dataDir);
  makePrivateDir(dataDir);
  makePrivateDir(f.keys);
  // Keys before certificates, and the metadata last: a crash part-way leaves a folder that
  // loadIdentity either refuses (a mismatched pair) or does not see as enrolled.
  writeFileAtomic(f.clientKey, id.client.keyPem, 0o600);
  writeFileAtomic(f.serverKey, id.server.keyPem, 0o600);
  writeFileAtomic(f.clientCert, id.client.certPem, 0o600);
  writeFileAtomic(f.serverCert, id.server.certPem, 0o600);
  writeFileAtomic(f.meta, JSON.stringify({ id: id.id, name: id.name, url: id.url, hostNames: id.hostNames }, null, 2) + "\n", 0o600);
}

/** Enrolls with the one-time secret (`link` has no client certificate yet) and stores the identity. */
export async function enrollIdentity(opts: { link: SiteLink; dataDir: string; caPem: string; secret: string; names: string[] }): Promise<DpIdentity> {
  const client = await createKeyAndCsr("slipway-dp");
  const server = await createKeyAndCsr("slipway-dp-server");
  const answer = await opts.link.json<Enrolled>("POST", "/mp/v1/dp/enroll", { secret: opts.secret, csr: client.csrPem, serverCsr: server.csrPem, names: opts.names });
  const identity = accept(answer, { client: client.keyPem, server: server.keyPem }, opts.caPem);
  save(opts.dataDir, identity);
  // A new identity from an administrator's secret: whatever refused the old one does not refuse it.
  fs.rmSync(files(opts.dataDir).removed, { force: true });
  return identity;
}

export type RemovedMark = { at: string; reason: string };

/** Records that the site refused the identity in `dataDir`: it is not used again. */
export function markRemoved(dataDir: string, mark: RemovedMark): void {
  writeFileAtomic(files(dataDir).removed, JSON.stringify(mark, null, 2) + "\n", 0o600);
}

/** When and why the site refused the identity in `dataDir`, or null if it has not. */
export function removedMark(dataDir: string): RemovedMark | null {
  const file = files(dataDir).removed;
  if (!fs.existsSync(file)) return null;
  try {
    const m = JSON.parse(readPrivate(file)) as Partial<RemovedMark>;
    return { at: String(m.at ?? "an unknown time"), reason: String(m.reason ?? "no reason recorded") };
  } catch {
    // Unreadable is no licence to serve: the identity stays refused.
    return { at: "an unknown time", reason: "removed.json is unreadable" };
  }
}

/** New keys and certificates, asked for with the current client certificate (`link` uses it). */
export async function renewIdentity(opts: { link: SiteLink; dataDir: string; caPem: string; names: string[] }): Promise<DpIdentity> {
  const client = await createKeyAndCsr("slipway-dp");
  const server = await createKeyAndCsr("slipway-dp-server");
  const answer = await opts.link.json<Enrolled>("POST", "/mp/v1/dp/renew", { csr: client.csrPem, serverCsr: server.csrPem, names: opts.names });
  const identity = accept(answer, { client: client.keyPem, server: server.keyPem }, opts.caPem);
  save(opts.dataDir, identity);
  return identity;
}

/** True once less than a third of the client certificate's lifetime is left. */
export function needsRenewal(identity: DpIdentity, now = Date.now()): boolean {
  const c = new crypto.X509Certificate(identity.client.certPem);
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  return to - now < (to - from) / 3;
}

/** When the client certificate expires (ISO 8601). */
export function clientExpiry(identity: DpIdentity): string {
  return new Date(new crypto.X509Certificate(identity.client.certPem).validTo).toISOString();
}
