/**
 * A distribution point running as its own process (`slipway up --role distribution`): the
 * whole wiring in one place. It enrolls once with its one-time secret (or loads the identity
 * it stored), then polls its site every few seconds — renewing its certificates when they near
 * their end, refreshing the site key and CRL, replicating its assigned content — and serves
 * that content to devices with the management point's contract. Every second it also asks for
 * the site's trust generation, so blocks, revocations and deletions reach it within 5 s
 * (dp-trust.ts). When the site refuses its own certificate it has been removed: it stops
 * serving, stops polling, records that in its data folder, and will not start again on that
 * identity — an administrator's new secret is needed. It holds no database and no site key:
 * only its own keys, the pinned site CA, and verified chunks.
 */
import fs from "node:fs";
import { BlobStore } from "../../content/blob-store.ts";
import { makePrivateDir } from "../../security/key-files.ts";
import type { Logger } from "../../log.ts";
import { SiteLink } from "./dp-site-link.ts";
import { clientExpiry, enrollIdentity, loadIdentity, markRemoved, needsRenewal, removedMark, renewIdentity, type DpIdentity } from "./dp-identity.ts";
import { Replicator } from "./dp-replicator.ts";
import { DeviceAuthorizer, startDpServer } from "./dp-server.ts";
import { SiteTrust, TRUST_POLL_MS } from "./dp-trust.ts";

export const DEFAULT_POLL_SECONDS = 30;

export type DistributionPointOptions = {
  dataDir: string;
  /** The management point, `https://host:port`. */
  siteUrl: string;
  /** The site CA certificate (PEM), pinned: the only root trusted, both ways. */
  caPem: string;
  host: string;
  /** The port to listen on; by default the one in the URL the site registered. */
  port?: number;
  /** Host names the server certificate should carry (a subset of those registered); all of them when empty. */
  publicNames: string[];
  /** The one-time enrollment secret, needed only before the first enrollment. */
  enrollSecret?: string;
  pollSeconds?: number;
  log: Logger;
  /** The clock renewal and the kept answers of the site go by (a test's may run ahead); Date.now by default. */
  now?: () => number;
};

export type RunningDistributionPoint = {
  url: string; port: number; identity: DpIdentity; replicator: Replicator;
  /** Runs one poll now (tests; the timer keeps polling regardless). */
  poll(): Promise<void>;
  /** Asks the site for its trust generation now (tests; a timer asks every second). */
  checkTrust(): Promise<void>;
  /** The site's trust generation as last seen; null before the first answer. */
  readonly trustGeneration: number | null;
  /** Why the site no longer has this distribution point serve, once it said so. */
  readonly removed: string | null;
  close(): Promise<void>;
};

export async function startDistributionPoint(opts: DistributionPointOptions): Promise<RunningDistributionPoint> {
  const { log } = opts;
  makePrivateDir(opts.dataDir);
  let identity = loadIdentity(opts.dataDir);
  const removed = identity && removedMark(opts.dataDir);
  if (removed) {
    if (!opts.enrollSecret) {
      throw new Error(`${opts.dataDir} holds a distribution point its site removed (or whose certificate it revoked) at ${removed.at}: ${removed.reason}. `
        + `It serves nothing until an administrator registers it again ("slipway dp add", or "slipway dp secret" if it is still registered) and it is started once with --enroll-secret-file FILE`);
    }
    identity = null;
  }
  if (!identity) {
    if (!opts.enrollSecret) throw new Error(`Cannot start the distribution point: ${opts.dataDir} holds no identity yet; enroll it once with --enroll-secret-file FILE (from "slipway dp add")`);
    const anonymous = new SiteLink({ url: opts.siteUrl, caPem: opts.caPem });
    try {
      identity = await enrollIdentity({ link: anonymous, dataDir: opts.dataDir, caPem: opts.caPem, secret: opts.enrollSecret, names: opts.publicNames });
    } finally {
      anonymous.close();
    }
    log.info("distribution point enrolled", { id: identity.id, name: identity.name, url: identity.url, hostNames: identity.hostNames, expiresAt: clientExpiry(identity) });
  }
  const link = new SiteLink({ url: opts.siteUrl, caPem: opts.caPem, identity: identity.client });
  const blobs = new BlobStore(opts.dataDir);
  const replicator = new Replicator({ link, blobs, caPem: opts.caPem, log });
  let timer: NodeJS.Timeout | null = null;
  let trustTimer: NodeJS.Timeout | null = null;
  let stopped = false;
  const trust = new SiteTrust({
    link,
    onRemoved(reason) {
      // For good: no more polling with an identity the site refuses, nothing ready to serve,
      // and a record in the data folder so that a restart does not serve either.
      if (timer) clearTimeout(timer);
      if (trustTimer) clearTimeout(trustTimer);
      replicator.ready.clear();
      try {
        markRemoved(opts.dataDir, { at: new Date().toISOString(), reason });
      } catch (err) {
        log.error("cannot record the removal in the data folder", { reason: (err as Error).message });
      }
      log.error("distribution point removed by its site: serving nothing until an administrator enrolls it again", { reason });
    },
  });
  const port = opts.port ?? Number(new URL(identity.url).port || 443);
  const authorizer = new DeviceAuthorizer({ link, trust, now: opts.now });
  const server = await startDpServer({ host: opts.host, port, tls: identity.server, caPem: opts.caPem, blobs, replicator, authorizer, trust, log });
  log.info("distribution point listening", { name: identity.name, listen: server.url, url: identity.url, site: link.url });

  const pollMs = Math.max(1, opts.pollSeconds ?? DEFAULT_POLL_SECONDS) * 1000;
  let running: Promise<void> | null = null;
  const round = async () => {
    if (trust.removed !== null) return;
    if (needsRenewal(identity!, (opts.now ?? Date.now)())) {
      try {
        let renewed!: DpIdentity;
        await link.changeIdentity(async () => (renewed = await renewIdentity({ link, dataDir: opts.dataDir, caPem: opts.caPem, names: opts.publicNames })).client);
        identity = renewed;
        server.setCertificate(identity.server);
        log.info("distribution point certificates renewed", { expiresAt: clientExpiry(identity) });
      } catch (err) {
        log.warn("certificate renewal failed; trying again next poll", { reason: (err as Error).message });
      }
    }
    try {
      await replicator.pollOnce();
    } catch (err) {
      if (!trust.noteFailure(err)) log.warn("poll failed; trying again next poll", { reason: (err as Error).message });
    }
    // A round that was under way when the site removed us may have made content ready again.
    if (trust.removed !== null) replicator.ready.clear();
  };
  const poll = (): Promise<void> => (running ??= round().finally(() => (running = null)));
  const tick = () => {
    void poll().finally(() => {
      if (!stopped && trust.removed === null) timer = setTimeout(tick, pollMs);
    });
  };
  tick();

  // Trust checks run on their own timer: a long replication round must not hold them up.
  let trustFailing = false;
  const checkTrust = async () => {
    try {
      await trust.check();
      if (trustFailing) log.info("the site answers trust checks again");
      trustFailing = false;
    } catch (err) {
      // Logged once per outage; meanwhile answers expire within seconds and each request asks the site.
      if (!trustFailing) log.warn("trust check failed; content is served only while the site can be asked", { reason: (err as Error).message });
      trustFailing = true;
    }
  };
  const trustTick = () => {
    void checkTrust().finally(() => {
      if (!stopped && trust.removed === null) trustTimer = setTimeout(trustTick, TRUST_POLL_MS);
    });
  };
  trustTick();

  return {
    url: server.url, port: server.port, replicator, poll, checkTrust,
    get identity() {
      return identity!;
    },
    get trustGeneration() {
      return trust.generation;
    },
    get removed() {
      return trust.removed;
    },
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (trustTimer) clearTimeout(trustTimer);
      await running?.catch(() => {});
      await server.close();
      link.close();
    },
  };
}

/** Reads a one-time secret from a file (never the command line, which `ps` shows). */
export function readSecretFile(file: string): string {
  const secret = fs.readFileSync(file, "utf8").trim();
  if (!secret) throw new Error(`Cannot enroll: ${file} is empty`);
  return secret;
}
