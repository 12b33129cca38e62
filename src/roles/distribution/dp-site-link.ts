/**
 * A distribution point's connection to its site's management point: HTTPS that trusts only the
 * pinned site CA (given on the command line, never learned from the network), with the
 * distribution point's client certificate once it has one. JSON in and out, and raw streams
 * for chunks.
 */
import https from "node:https";
import type { IncomingMessage } from "node:http";

const JSON_TIMEOUT_MS = 30_000;
const STREAM_IDLE_MS = 120_000;

/** The site answered with an error (its `{ code, message }`), or could not be reached. */
export class SiteError extends Error {
  readonly status: number;
  readonly code: string;
  /** The site's `details`, if it gave any. */
  details: unknown = null;
  /**
   * Whether the request went out with the client certificate the link still uses, and no
   * renewal was under way meanwhile: only then is a refusal of the certificate a refusal of
   * this distribution point (not of the certificate a renewal just superseded).
   */
  sameIdentity = true;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "SiteError";
    this.status = status;
    this.code = code;
  }
}

export type ClientIdentity = { keyPem: string; certPem: string };

export class SiteLink {
  readonly url: string;
  readonly #ca: string;
  #agent: https.Agent;
  /** How often the identity was replaced, and whether a replacement is under way. */
  #identityChanges = 0;
  #changing = 0;

  constructor(opts: { url: string; caPem: string; identity?: ClientIdentity }) {
    this.url = new URL(opts.url).origin;
    this.#ca = opts.caPem;
    this.#agent = this.#newAgent(opts.identity);
  }

  #newAgent(identity?: ClientIdentity): https.Agent {
    return new https.Agent({ keepAlive: true, maxSockets: 8, ca: this.#ca, key: identity?.keyPem, cert: identity?.certPem, rejectUnauthorized: true });
  }

  /** Uses a new client certificate from the next request on (after renewal). */
  setIdentity(identity: ClientIdentity): void {
    const old = this.#agent;
    this.#agent = this.#newAgent(identity);
    this.#identityChanges++;
    old.destroy();
  }

  /**
   * Replaces the client certificate with the one `renew` gets (which may use this link):
   * requests refused while it runs are not taken as refusals of this distribution point.
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

  async #refusal(res: IncomingMessage, mark: number): Promise<SiteError> {
    const err = await SiteLink.#parseRefusal(res);
    err.sameIdentity = mark >= 0 && mark === this.#identityMark();
    return err;
  }

  #open(method: string, p: string, body: unknown, timeoutMs: number): Promise<IncomingMessage> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(new URL(p, this.url), {
        method, agent: this.#agent,
        headers: { accept: "application/json", "user-agent": "slipway-dp/0.1.0", ...(payload !== undefined ? { "content-type": "application/json" } : {}) },
      }, resolve);
      req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer from ${this.url} in ${timeoutMs / 1000} s`), { code: "ETIMEDOUT" })));
      req.on("error", (err) => reject(new SiteError(0, (err as NodeJS.ErrnoException).code ?? "UNREACHABLE", `Cannot reach the site at ${this.url}: ${err.message}`)));
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  static async #parseRefusal(res: IncomingMessage): Promise<SiteError> {
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    let e: { code?: unknown; message?: unknown; details?: unknown } = {};
    try {
      e = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      // not JSON: keep the status alone
    }
    const status = res.statusCode ?? 0;
    const err = new SiteError(status, typeof e.code === "string" ? e.code : `HTTP_${status}`, typeof e.message === "string" ? e.message : `The site answered HTTP ${status}`);
    err.details = e.details ?? null;
    return err;
  }

  /** One JSON request; the parsed answer (undefined for 204), or a SiteError. */
  async json<T>(method: string, p: string, body?: unknown): Promise<T> {
    const mark = this.#identityMark();
    const res = await this.#open(method, p, body, JSON_TIMEOUT_MS);
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300) throw await this.#refusal(res, mark);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** A GET whose body is bytes: the open response (status 200), or a SiteError. */
  async stream(p: string): Promise<IncomingMessage> {
    const mark = this.#identityMark();
    const res = await this.#open("GET", p, undefined, STREAM_IDLE_MS);
    if (res.statusCode !== 200) throw await this.#refusal(res, mark);
    return res;
  }

  close(): void {
    this.#agent.destroy();
  }
}
