/**
 * A distribution point running as its own process (`slipway up --role distribution`): the
 * whole wiring in one place. It enrolls once with its one-time secret (or loads the identity
 * it stored), then polls its site every few seconds — renewing its certificates when they near
 * their end, refreshing the site key and CRL, replicating its assigned content — and serves
 * that content to devices with the management point's contract. It holds no database and no
 * site key: only its own keys, the pinned site CA, and verified chunks.
 */
import fs from "node:fs";
import { BlobStore } from "../../storage/blob-store.ts";
import { makePrivateDir } from "../../security/key-files.ts";
import type { Logger } from "../../log.ts";
import { SiteLink } from "./dp-site-link.ts";
import { clientExpiry, enrollIdentity, loadIdentity, needsRenewal, renewIdentity, type DpIdentity } from "./dp-identity.ts";
import { Replicator } from "./dp-replicator.ts";
import { DeviceAuthorizer, startDpServer } from "./dp-server.ts";

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
};

export type RunningDistributionPoint = {
  url: string; port: number; identity: DpIdentity; replicator: Replicator;
  /** Runs one poll now (tests; the timer keeps polling regardless). */
  poll(): Promise<void>;
  close(): Promise<void>;
};

export async function startDistributionPoint(opts: DistributionPointOptions): Promise<RunningDistributionPoint> {
  const { log } = opts;
  makePrivateDir(opts.dataDir);
  let identity = loadIdentity(opts.dataDir);
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
  const port = opts.port ?? Number(new URL(identity.url).port || 443);
  const server = await startDpServer({ host: opts.host, port, tls: identity.server, caPem: opts.caPem, blobs, replicator, authorizer: new DeviceAuthorizer(link), log });
  log.info("distribution point listening", { name: identity.name, listen: server.url, url: identity.url, site: link.url });

  const pollMs = Math.max(1, opts.pollSeconds ?? DEFAULT_POLL_SECONDS) * 1000;
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  let running: Promise<void> | null = null;
  const round = async () => {
    if (needsRenewal(identity!)) {
      try {
        identity = await renewIdentity({ link, dataDir: opts.dataDir, caPem: opts.caPem, names: opts.publicNames });
        link.setIdentity(identity.client);
        server.setCertificate(identity.server);
        log.info("distribution point certificates renewed", { expiresAt: clientExpiry(identity) });
      } catch (err) {
        log.warn("certificate renewal failed; trying again next poll", { reason: (err as Error).message });
      }
    }
    try {
      await replicator.pollOnce();
    } catch (err) {
      log.warn("poll failed; trying again next poll", { reason: (err as Error).message });
    }
  };
  const poll = (): Promise<void> => (running ??= round().finally(() => (running = null)));
  const tick = () => {
    void poll().finally(() => {
      if (!stopped) timer = setTimeout(tick, pollMs);
    });
  };
  tick();

  return {
    url: server.url, port: server.port, replicator, poll,
    get identity() {
      return identity!;
    },
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
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
