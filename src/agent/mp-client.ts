/**
 * The agent's HTTPS client for the management point: the site CA pinned as the only trust
 * root, the device's own key and certificate once enrolled, keep-alive, and retries with
 * backoff for what a flaky deploy-time network does (resets, timeouts, 502/503).
 */
import https from "node:https";
import type { IncomingMessage } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

export class MpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "MpError";
    this.status = status;
    this.code = code;
  }
}

export type Identity = { keyPem: string; certPem: string };

const RETRYABLE = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "EAI_AGAIN", "ENOTFOUND"]);

export function isRetryable(err: unknown): boolean {
  if (err instanceof MpError) return err.status === 502 || err.status === 503 || err.status === 504;
  const code = (err as { code?: string })?.code;
  return code !== undefined && RETRYABLE.has(code);
}

export class MpClient {
  readonly baseUrl: string;
  readonly #ca: string;
  #identity: Identity | null = null;
  #agent: https.Agent;
  constructor(baseUrl: string, caPem: string) {
    this.baseUrl = baseUrl;
    this.#ca = caPem;
    this.#agent = this.#newAgent();
  }

  #newAgent(): https.Agent {
    return new https.Agent({ keepAlive: true, maxSockets: 4, ca: this.#ca, key: this.#identity?.keyPem, cert: this.#identity?.certPem });
  }

  /** Another server of the same site (a distribution point), reached with the same identity. */
  sibling(baseUrl: string): MpClient {
    const c = new MpClient(baseUrl, this.#ca);
    if (this.#identity) c.setIdentity(this.#identity);
    return c;
  }

  /** From now on every request presents this certificate. */
  setIdentity(identity: Identity): void {
    this.#identity = identity;
    this.#agent.destroy();
    this.#agent = this.#newAgent();
  }

  close(): void {
    this.#agent.destroy();
  }

  /** Opens a request and returns the response without reading its body. */
  open(method: string, path: string, opts: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
      const req = https.request(new URL(path, this.baseUrl), {
        method, agent: this.#agent,
        headers: { ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}), ...opts.headers },
      }, resolve);
      req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(Object.assign(new Error(`No answer from ${this.baseUrl} in time`), { code: "ETIMEDOUT" })));
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** A JSON call; a non-2xx answer throws MpError with the site's error code and message. */
  async json<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.open(method, path, { body });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let parsed: any;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) {
      throw new MpError(status, String(parsed?.code ?? `HTTP_${status}`), String(parsed?.message ?? `${method} ${path} answered ${status}`));
    }
    return parsed as T;
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
