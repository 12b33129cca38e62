/**
 * HTTPS from one Slipway part to another: the one client the agent, the CLI and distribution
 * points use. The server's certificate must chain to a pinned CA (given by configuration,
 * never learned from the network) and is always verified; an optional client certificate can
 * be replaced while the client is in use (enrollment, renewal). Requests carry JSON; answers
 * are JSON or a raw stream; the site's error envelope `{ code, message, details }` and every
 * way of getting no answer at all come out as one error class, HttpsError.
 */
import https from "node:https";
import type { IncomingMessage } from "node:http";

export type ClientIdentity = { keyPem: string; certPem: string };

/**
 * A request that did not succeed. Either the server answered outside 2xx — `status` is its
 * status, and `code`, `message` and `details` come from its error envelope (`HTTP_<status>`
 * and a plain message when it has none) — or no whole answer came (cannot connect, the
 * certificate is not trusted, no answer in time, cut off): then `status` is 0, `code` the
 * socket's error code (ECONNREFUSED, ETIMEDOUT, ERR_TLS_CERT_ALTNAME_INVALID …) and `cause`
 * the socket's error.
 */
export class HttpsError extends Error {
  readonly status: number;
  readonly code: string;
  /** The envelope's `details` (e.g. each invalid field), or null. */
  readonly details: unknown;
  /**
   * Whether the request went out with the client certificate the client still uses, and no
   * replacement was under way meanwhile: only then is a refusal of the certificate a refusal
   * of this client (not of the certificate a renewal just superseded).
   */
  sameIdentity = true;
  constructor(status: number, code: string, message: string, opts: { details?: unknown; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "HttpsError";
    this.status = status;
    this.code = code;
    this.details = opts.details ?? null;
  }
}

export interface PinnedHttpsOptions {
  /** The server; requests go to paths under its origin. */
  url: string;
  /** PEM certificate(s) the server's certificate must chain to; null trusts the system's CAs. */
  ca: string | null;
  /** The client certificate to present, if any. */
  identity?: ClientIdentity;
  /**
   * Connections kept open for reuse, at most this many at once. 0 (the default) opens one
   * connection per request and closes it after, so a short-lived process exits at once.
   */
  keepAlive?: number;
  /** What the server is called in messages: "Cannot reach the site at …". Default "the server". */
  peer?: string;
  userAgent?: string;
  /** How long a request may go without data before it fails with ETIMEDOUT (default 30 s). */
  timeoutMs?: number;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as they are (application/octet-stream), instead of a JSON body. */
  bytes?: Buffer;
  query?: Query;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export class PinnedHttpsClient {
  /** The server's origin, `https://host:port`. */
  readonly url: string;
  readonly #ca: string | undefined;
  readonly #peer: string;
  readonly #userAgent: string | undefined;
  readonly #timeoutMs: number;
  readonly #keepAlive: number;
  #identity: ClientIdentity | undefined;
  #agent: https.Agent | null;
  /** How often the identity was replaced, and whether a replacement is under way. */
  #identityChanges = 0;
  #changing = 0;

  constructor(opts: PinnedHttpsOptions) {
    this.url = new URL(opts.url).origin;
    this.#ca = opts.ca ?? undefined;
    this.#peer = opts.peer ?? "the server";
    this.#userAgent = opts.userAgent;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#keepAlive = opts.keepAlive ?? 0;
    this.#identity = opts.identity;
    this.#agent = this.#newAgent();
  }

  #tls(): https.AgentOptions {
    // Explicit, so NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment cannot turn checking off.
    return { ca: this.#ca, key: this.#identity?.keyPem, cert: this.#identity?.certPem, rejectUnauthorized: true };
  }

  #newAgent(): https.Agent | null {
    return this.#keepAlive > 0 ? new https.Agent({ keepAlive: true, maxSockets: this.#keepAlive, ...this.#tls() }) : null;
  }

  /** Presents this certificate from the next request on; connections made with the old one are closed. */
  setIdentity(identity: ClientIdentity): void {
    const old = this.#agent;
    this.#identity = identity;
    this.#agent = this.#newAgent();
    this.#identityChanges++;
    old?.destroy();
  }

  /**
   * Replaces the client certificate with the one `renew` gets (which may use this client):
   * requests refused while it runs are not taken as refusals of this client (`sameIdentity`).
   */
  async changeIdentity(renew: () => Promise<ClientIdentity>): Promise<void> {
    this.#changing++;
    try {
      this.setIdentity(await renew());
    } finally {
      this.#changing--;
      this.#identityChanges++;
    }
  }

  /** A mark of the identity in use: -1 while one is being replaced. */
  #identityMark(): number {
    return this.#changing ? -1 : this.#identityChanges;
  }

  /** Closes kept-open connections. */
  close(): void {
    this.#agent?.destroy();
  }

  #unreachable(err: Error): HttpsError {
    return new HttpsError(0, (err as NodeJS.ErrnoException).code ?? "UNREACHABLE", `Cannot reach ${this.#peer} at ${this.url}: ${err.message}`, { cause: err });
  }

  /** Sends a request and resolves with the answer, whatever its status, without reading its body. */
  open(method: string, path: string, opts: RequestOptions = {}): Promise<IncomingMessage> {
    const url = new URL(path, this.url);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const payload = opts.bytes ?? (opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body)));
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.#userAgent) headers["user-agent"] = this.#userAgent;
    if (payload) Object.assign(headers, { "content-type": opts.bytes ? "application/octet-stream" : "application/json", "content-length": String(payload.length) });
    Object.assign(headers, opts.headers);
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method, headers, ...(this.#agent ? { agent: this.#agent, rejectUnauthorized: true } : { agent: false, ...this.#tls() }) }, resolve);
      // An idle timeout: it also cuts a streamed answer that stops moving.
      req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer in ${timeoutMs / 1000} s`), { code: "ETIMEDOUT" })));
      req.on("error", (err) => reject(this.#unreachable(err)));
      req.end(payload);
    });
  }

  async #text(res: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    try {
      for await (const c of res) chunks.push(c as Buffer);
    } catch (err) {
      throw this.#unreachable(err as Error);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  /** The error for an answer outside 2xx, from its envelope where it has one. */
  #refusal(status: number, text: string, mark: number): HttpsError {
    let e: { code?: unknown; message?: unknown; details?: unknown } = {};
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === "object") e = parsed;
    } catch {
      // not JSON (a proxy's error page): the status alone says what happened
    }
    const message = typeof e.message === "string" ? e.message : `${this.#peer[0].toUpperCase()}${this.#peer.slice(1)} answered HTTP ${status}`;
    const err = new HttpsError(status, typeof e.code === "string" ? e.code : `HTTP_${status}`, message, { details: e.details });
    err.sameIdentity = mark >= 0 && mark === this.#identityMark();
    return err;
  }

  /** One JSON request: the parsed answer (undefined when empty, as for 204), or an HttpsError. */
  async json<T = unknown>(method: string, path: string, body?: unknown, opts: Omit<RequestOptions, "body"> = {}): Promise<T> {
    const mark = this.#identityMark();
    const res = await this.open(method, path, { ...opts, body });
    const text = await this.#text(res);
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw this.#refusal(status, text, mark);
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new HttpsError(status, "NOT_JSON", `Cannot read the answer to ${method} ${withoutQuery(path)}: ${this.#peer} at ${this.url} answered with something that is not JSON`);
    }
  }

  /** Sends bytes (application/octet-stream) and reads a JSON answer, like json(). */
  async putBytes<T = unknown>(method: string, path: string, bytes: Buffer, opts: Omit<RequestOptions, "body" | "bytes"> = {}): Promise<T> {
    const mark = this.#identityMark();
    const res = await this.open(method, path, { ...opts, bytes });
    const text = await this.#text(res);
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw this.#refusal(status, text, mark);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** A GET whose whole answer is bytes (small: a chunk), or an HttpsError. */
  async getBytes(path: string, opts: Omit<RequestOptions, "body" | "bytes"> = {}): Promise<Buffer> {
    const res = await this.stream(path, opts);
    const chunks: Buffer[] = [];
    try {
      for await (const c of res) chunks.push(c as Buffer);
    } catch (err) {
      throw this.#unreachable(err as Error);
    }
    return Buffer.concat(chunks);
  }

  /** A GET whose answer is bytes: the open answer (2xx) to read from, or an HttpsError. */
  async stream(path: string, opts: Omit<RequestOptions, "body"> = {}): Promise<IncomingMessage> {
    const mark = this.#identityMark();
    const res = await this.open("GET", path, opts);
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw this.#refusal(status, await this.#text(res), mark);
    return res;
  }
}

/** A path without its query, for messages (a query may hold what a log should not). */
function withoutQuery(path: string): string {
  return path.split("?")[0];
}
