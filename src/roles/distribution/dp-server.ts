/**
 * The distribution point's HTTPS listener for devices: the same content routes and contract as
 * the management point (content-serving.ts), over mutual TLS with the site CA as the only trust
 * root. On every request the device's certificate must chain to the site CA, name a device and
 * be absent from the site's CRL (refreshed every poll; without a current CRL nothing is
 * served); the site then decides whether that device may have that manifest. Its answer — a
 * grant or a refusal alike — is used for 4 s at most, and not at all once the site's trust
 * generation has moved on (dp-trust.ts). A refusal carries the management point's own error.
 * Once the site has removed this distribution point, every request is refused. Only fully
 * replicated content is served.
 */
import https from "node:https";
import { constants, createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { createPipeline, HANDSHAKE_TIMEOUT_MS, listenHttps } from "../pipeline.ts";
import { contentServingRoutes } from "../content-serving.ts";
import { SlipwayError } from "../../errors.ts";
import type { BlobStore } from "../../content/blob-store.ts";
import type { Logger } from "../../log.ts";
import type { Replicator } from "./dp-replicator.ts";
import { HttpsError } from "../../security/pinned-https.ts";
import type { SiteLink } from "./dp-site-link.ts";
import { ANSWER_TTL_MS, type SiteTrust } from "./dp-trust.ts";

/** A device as its certificate shows it; whether it may have anything is the site's call. */
export type DevicePeer = { serial: string; fingerprint: string; deviceId: string; notAfter: number };

/** The site's answer to "may this certificate's device have this manifest?". */
export type AuthorizeAnswer = { allowed: boolean; code?: string; reason?: string; generation?: number };

const MAX_CACHED = 10_000;
// The refusals a site's answer may name: the management point's own for the same case.
const REFUSALS = new Set(["CERTIFICATE_REQUIRED", "DEVICE_BLOCKED", "NOT_FOUND", "NOT_YOUR_RESOURCE"] as const);

/**
 * The site's answers, kept per certificate and manifest for ANSWER_TTL_MS at most (never past
 * the certificate's expiry), and only while the trust generation they were given under is the
 * newest seen. A failure to ask is no answer and is not kept.
 */
export class DeviceAuthorizer {
  readonly #link: SiteLink;
  readonly #trust: SiteTrust;
  readonly #now: () => number;
  readonly #cache = new Map<string, { until: number; generation: number; answer: AuthorizeAnswer }>();
  readonly #asking = new Map<string, Promise<AuthorizeAnswer>>();

  constructor(opts: { link: SiteLink; trust: SiteTrust; now?: () => number }) {
    this.#link = opts.link;
    this.#trust = opts.trust;
    this.#now = opts.now ?? Date.now;
    opts.trust.onChange(() => {
      this.#cache.clear();
      // Requests arriving from now on do not join a question asked under the old generation.
      this.#asking.clear();
    });
  }

  async check(peer: DevicePeer, digest: string): Promise<AuthorizeAnswer> {
    this.#trust.assertServing();
    const key = `${peer.fingerprint} ${digest}`;
    const now = this.#now();
    const hit = this.#cache.get(key);
    if (hit && hit.until > now && hit.generation === this.#trust.generation) return hit.answer;
    if (hit) this.#cache.delete(key);
    let asking = this.#asking.get(key);
    if (!asking) {
      const p = this.#ask(peer, digest, key, now).finally(() => {
        if (this.#asking.get(key) === p) this.#asking.delete(key);
      });
      this.#asking.set(key, (asking = p));
    }
    return asking;
  }

  async #ask(peer: DevicePeer, digest: string, key: string, askedAt: number): Promise<AuthorizeAnswer> {
    let answer: AuthorizeAnswer;
    try {
      answer = await this.#link.json<AuthorizeAnswer>("POST", "/mp/v1/dp/authorize", { serial: peer.serial, fingerprint: peer.fingerprint, digest });
    } catch (err) {
      this.#trust.noteFailure(err);
      throw err;
    }
    if (this.#trust.observe(answer.generation)) {
      if (this.#cache.size >= MAX_CACHED) {
        for (const [k, v] of this.#cache) if (v.until <= askedAt) this.#cache.delete(k);
        if (this.#cache.size >= MAX_CACHED) this.#cache.delete(this.#cache.keys().next().value!);
      }
      this.#cache.set(key, { until: Math.min(askedAt + ANSWER_TTL_MS, peer.notAfter), generation: answer.generation!, answer });
    }
    return answer;
  }
}

/** The error a device gets for the site's refusal: the one the management point gives. */
function refusal(answer: AuthorizeAnswer, digest: string): SlipwayError {
  const code = REFUSALS.has(answer.code as never) ? (answer.code as "NOT_YOUR_RESOURCE") : "NOT_YOUR_RESOURCE";
  const why = typeof answer.reason === "string" ? answer.reason.slice(0, 200) : "this device's policy does not name that content";
  return new SlipwayError(code, `Cannot serve content ${digest}: ${why}`);
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
  return { serial: peer.serialNumber.toLowerCase(), fingerprint: createHash("sha256").update(peer.raw).digest("hex"), deviceId: m[1], notAfter: Date.parse(peer.valid_to) };
}

export type DpServer = { url: string; port: number; setCertificate(tls: { certPem: string; keyPem: string }): void; close(): Promise<void> };

export async function startDpServer(opts: {
  host: string; port: number; tls: { certPem: string; keyPem: string }; caPem: string;
  blobs: BlobStore; replicator: Replicator; authorizer: DeviceAuthorizer; trust: SiteTrust; log: Logger;
}): Promise<DpServer> {
  const { replicator, authorizer, trust, log } = opts;
  const routes = contentServingRoutes<"device", DevicePeer>({
    access: "device",
    blobs: opts.blobs,
    async find(ctx, digest) {
      const peer = ctx.principal!;
      let answer;
      try {
        answer = await authorizer.check(peer, digest);
      } catch (err) {
        if (err instanceof SlipwayError) throw err;
        trust.assertServing();
        log.warn("authorization request failed", { digest, device: peer.deviceId, reason: (err as Error).message });
        if (err instanceof HttpsError && err.status > 0 && err.status < 500) throw new SlipwayError("UNAVAILABLE", "Cannot serve content: the site refused this distribution point's question");
        throw new SlipwayError("UNAVAILABLE", "Cannot serve content: the site cannot be asked whether this device may have it; try again later");
      }
      if (!answer.allowed) throw refusal(answer, digest);
      const signed = replicator.ready.get(digest);
      if (!signed) throw new SlipwayError("NOT_FOUND", `Cannot find content ${digest} on this distribution point: it is not (yet) replicated here`);
      return { digest, signed };
    },
  });
  const pipeline = createPipeline<"device", DevicePeer>(routes, {
    log,
    async authenticate(req) {
      try {
        trust.assertServing();
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
