/**
 * The distribution point's HTTPS listener for devices: the same content routes and contract as
 * the management point (content-serving.ts), over mutual TLS with the site CA as the only trust
 * root. On every request the device's certificate must chain to the site CA, name a device and
 * be absent from the site's CRL (refreshed every poll; without a current CRL nothing is
 * served); the site then decides whether that device may have that manifest — asked once a
 * minute at most per certificate and manifest. Only fully replicated content is served.
 */
import https from "node:https";
import { constants, createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { createPipeline, HANDSHAKE_TIMEOUT_MS, listenHttps } from "../pipeline.ts";
import { contentServingRoutes } from "./content-serving.ts";
import { SlipwayError } from "../../errors.ts";
import type { BlobStore } from "../../storage/blob-store.ts";
import type { Logger } from "../../log.ts";
import type { Replicator } from "./dp-replicator.ts";
import { SiteError, type SiteLink } from "./dp-site-link.ts";

/** A device as its certificate shows it; whether it may have anything is the site's call. */
export type DevicePeer = { serial: string; fingerprint: string; deviceId: string };

const AUTHORIZE_TTL_MS = 60_000;
const MAX_CACHED = 10_000;

/** The site's answers to "may this certificate's device have this manifest?", kept for a minute. */
export class DeviceAuthorizer {
  readonly #link: SiteLink;
  readonly #cache = new Map<string, { until: number; answer: Promise<{ allowed: boolean; reason?: string }> }>();
  constructor(link: SiteLink) {
    this.#link = link;
  }
  async check(peer: DevicePeer, digest: string, now = Date.now()): Promise<{ allowed: boolean; reason?: string }> {
    const key = `${peer.fingerprint} ${digest}`;
    const hit = this.#cache.get(key);
    if (hit && hit.until > now) return hit.answer;
    if (this.#cache.size >= MAX_CACHED) {
      for (const [k, v] of this.#cache) if (v.until <= now) this.#cache.delete(k);
      if (this.#cache.size >= MAX_CACHED) this.#cache.delete(this.#cache.keys().next().value!);
    }
    const answer = this.#link.json<{ allowed: boolean; reason?: string }>("POST", "/mp/v1/dp/authorize", { serial: peer.serial, fingerprint: peer.fingerprint, digest });
    this.#cache.set(key, { until: now + AUTHORIZE_TTL_MS, answer });
    try {
      return await answer;
    } catch (err) {
      // A failure is not an answer: ask again next time.
      this.#cache.delete(key);
      throw err;
    }
  }
}

function peerFromRequest(req: IncomingMessage, replicator: Replicator): DevicePeer {
  const socket = req.socket as TLSSocket;
  const peer = typeof socket.getPeerCertificate === "function" ? socket.getPeerCertificate() : null;
  if (!peer || !peer.raw) throw new SlipwayError("CERTIFICATE_REQUIRED");
  if (!socket.authorized) throw new SlipwayError("CERTIFICATE_REQUIRED", "The certificate is not issued by this site's CA or has expired");
  if (!replicator.crlCurrent()) throw new SlipwayError("UNAVAILABLE", "Cannot serve content: this distribution point has no current revocation list from its site yet");
  if (replicator.isRevoked(peer.serialNumber)) throw new SlipwayError("DEVICE_BLOCKED", "The certificate is revoked");
  const m = /(?:^|,\s*)URI:urn:slipway:device:([A-Za-z0-9-]{1,64})(?:,|$)/.exec(peer.subjectaltname ?? "");
  if (!m) throw new SlipwayError("CERTIFICATE_REQUIRED", "The certificate is not a device certificate");
  return { serial: peer.serialNumber.toLowerCase(), fingerprint: createHash("sha256").update(peer.raw).digest("hex"), deviceId: m[1] };
}

export type DpServer = { url: string; port: number; setCertificate(tls: { certPem: string; keyPem: string }): void; close(): Promise<void> };

export async function startDpServer(opts: {
  host: string; port: number; tls: { certPem: string; keyPem: string }; caPem: string;
  blobs: BlobStore; replicator: Replicator; authorizer: DeviceAuthorizer; log: Logger;
}): Promise<DpServer> {
  const { replicator, authorizer, log } = opts;
  const routes = contentServingRoutes<"device", DevicePeer>({
    access: "device",
    blobs: opts.blobs,
    async find(ctx, digest) {
      const peer = ctx.principal!;
      let answer;
      try {
        answer = await authorizer.check(peer, digest);
      } catch (err) {
        log.warn("authorization request failed", { digest, device: peer.deviceId, reason: (err as Error).message });
        if (err instanceof SiteError && err.status > 0 && err.status < 500) throw new SlipwayError("UNAVAILABLE", "Cannot serve content: the site refused this distribution point's question");
        throw new SlipwayError("UNAVAILABLE", "Cannot serve content: the site cannot be asked whether this device may have it; try again later");
      }
      if (!answer.allowed) throw new SlipwayError("NOT_YOUR_RESOURCE", "Not allowed: this device's policy does not name that content");
      const signed = replicator.ready.get(digest);
      if (!signed) throw new SlipwayError("NOT_FOUND", `Cannot find content ${digest} on this distribution point: it is not (yet) replicated here`);
      return { digest, signed };
    },
  });
  const pipeline = createPipeline<"device", DevicePeer>(routes, {
    log,
    async authenticate(req) {
      try {
        return peerFromRequest(req, replicator);
      } catch (err) {
        log.debug("device refused", { reason: (err as Error).message, ip: req.socket.remoteAddress });
        throw err;
      }
    },
    authorize: () => null,
    async onDenied() {},
  });
  const tlsOptions = (tls: { certPem: string; keyPem: string }) => ({
    cert: tls.certPem, key: tls.keyPem, ca: [opts.caPem], requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2" as const,
    // No session tickets: every connection proves its certificate afresh.
    secureOptions: constants.SSL_OP_NO_TICKET,
  });
  const server = https.createServer({
    ...tlsOptions(opts.tls),
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS, requestTimeout: 60_000, headersTimeout: 15_000, keepAliveTimeout: 30_000, maxHeaderSize: 16 * 1024,
  }, pipeline.handle);
  server.on("clientError", (_err, socket) => socket.destroy());
  const l = await listenHttps(server, opts.host, opts.port, { log });
  return {
    url: l.url, port: l.port,
    setCertificate: (tls) => server.setSecureContext(tlsOptions(tls)),
    close: l.close,
  };
}
