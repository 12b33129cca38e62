/**
 * The agent's HTTPS client for the management point (and the distribution points it names):
 * the pinned client of security/pinned-https.ts with the site CA as the only trust root, the
 * device's own key and certificate once enrolled, keep-alive, and retries with backoff for
 * what a flaky deploy-time network does (resets, timeouts, 502/503).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { HttpsError, PinnedHttpsClient, type ClientIdentity } from "../security/pinned-https.ts";

const RETRYABLE = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "EAI_AGAIN", "ENOTFOUND"]);

/** A failure worth another try: the network, or a 502-504 from a proxy or a busy server. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof HttpsError && err.status > 0) return err.status === 502 || err.status === 503 || err.status === 504;
  const code = (err as { code?: string })?.code;
  return code !== undefined && RETRYABLE.has(code);
}

export class MpClient extends PinnedHttpsClient {
  /** The address as configured (for messages). */
  readonly baseUrl: string;
  readonly #ca: string;
  #identity: ClientIdentity | undefined;

  constructor(baseUrl: string, caPem: string, peer = "the management point") {
    super({ url: baseUrl, ca: caPem, keepAlive: 4, peer, userAgent: "slipway-agent/0.1.0", timeoutMs: 60_000 });
    this.baseUrl = baseUrl;
    this.#ca = caPem;
  }

  /** Another server of the same site (a distribution point), reached with the same identity. */
  sibling(baseUrl: string): MpClient {
    const c = new MpClient(baseUrl, this.#ca, "the distribution point");
    if (this.#identity) c.setIdentity(this.#identity);
    return c;
  }

  /** From now on every request presents this certificate. */
  override setIdentity(identity: ClientIdentity): void {
    this.#identity = identity;
    super.setIdentity(identity);
  }

  /** Like json(), retrying network failures and 502-504 with backoff (1, 2, 4 … 30 s). */
  async jsonRetry<T = any>(method: string, path: string, body?: unknown, attempts = 8): Promise<T> {
    for (let i = 1; ; i++) {
      try {
        return await this.json<T>(method, path, body);
      } catch (err) {
        if (i >= attempts || !isRetryable(err)) throw err;
        await sleep(Math.min(30_000, 1000 * 2 ** (i - 1)));
      }
    }
  }
}
