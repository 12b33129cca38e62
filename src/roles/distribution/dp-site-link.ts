/**
 * A distribution point's connection to its site's management point: the pinned HTTPS client
 * (security/pinned-https.ts) trusting only the site CA given on the command line (never
 * learned from the network), with the distribution point's client certificate once it has
 * one. JSON in and out, and raw streams for chunks; failures are HttpsError.
 */
import type { IncomingMessage } from "node:http";
import { PinnedHttpsClient, type ClientIdentity } from "../../security/pinned-https.ts";

/** How long a chunk download may stall before it is given up. */
const STREAM_IDLE_MS = 120_000;

export class SiteLink extends PinnedHttpsClient {
  constructor(opts: { url: string; caPem: string; identity?: ClientIdentity }) {
    super({ url: opts.url, ca: opts.caPem, identity: opts.identity, keepAlive: 8, peer: "the site", userAgent: "slipway-dp/0.1.0", timeoutMs: 30_000 });
  }

  /** A GET whose body is bytes: the open response, or an HttpsError. */
  override stream(p: string): Promise<IncomingMessage> {
    return super.stream(p, { timeoutMs: STREAM_IDLE_MS });
  }
}
