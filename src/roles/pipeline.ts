/**
 * The request pipeline every HTTPS role shares: route table, body limits, JSON parsing,
 * schema validation, authentication and authorization through the role's own hooks, and the
 * one place where errors become responses. Every route declares its access; there is no
 * route without one.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline as pipeStreams, type Readable, type Writable } from "node:stream";
import { randomUUID } from "node:crypto";
import type { z } from "zod";
import { SlipwayError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { countAuditedRefusals } from "../storage/audit-store.ts";

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/**
 * What a handler sees of a request. A route made with `route()` gets it typed from its
 * declaration: `body` and `query` are what its zod schemas produce (z.output: defaults
 * applied, transforms run), `params` has one string per `:name` in its path.
 */
export type RequestContext<B = unknown, Q = unknown, P = unknown, Params = Record<never, string>> = {
  /** "HEAD" only for GET routes that allow it (`head: true`): answer with headers, no body. */
  method: HttpMethod | "HEAD";
  path: string;
  params: Params;
  /** The query string as the route's `query` schema produced it; without one, every parameter as a string. */
  query: Q;
  /** The JSON body as the route's `body` schema produced it; undefined for a route without one. */
  body: B;
  /** The raw body of a route that takes bytes (`bytes`), such as a sealed user-state chunk; undefined otherwise. */
  bytes?: Buffer;
  principal: P | null;
  ip: string;
  requestId: string;
  headers: IncomingMessage["headers"];
};

/**
 * What a handler answers: a JSON body, or — for bytes such as image content — a `stream`
 * sent as it is, or a `send` that writes the bytes to the response itself (for a writer that
 * reuses its buffers, which a Readable cannot: nothing tells it when a chunk it pushed has been
 * consumed), with the handler's headers (it sets content-type and content-length).
 */
export type Reply = { status?: number; body?: unknown; headers?: Record<string, string>; stream?: Readable; send?: (out: Writable) => Promise<void> };

/** What every route declares besides its schemas and handler. */
type RouteInfo<A extends string> = {
  method: HttpMethod;
  path: string;
  /** "public", or a value the role's authorize hook understands. */
  access: A | "public";
  summary: string;
  tag: string;
  /** Allowed while the administrator still has to change a one-time password. */
  allowWithPendingPasswordChange?: boolean;
  /** A GET route that also answers HEAD (the handler sees ctx.method "HEAD"; no body is sent). */
  head?: boolean;
  /**
   * The route takes raw bytes (application/octet-stream, at most maxBytes, read only after
   * authorization) instead of a JSON body; the handler finds them in ctx.bytes.
   */
  bytes?: { maxBytes: number };
};

/**
 * A route in a route table, as the pipeline and the OpenAPI generator see it: its schemas and a
 * handler of the request as validated. Made with `route()`, which types the handler from them.
 */
export type Route<A extends string = string, P = unknown> = RouteInfo<A> & {
  body?: z.ZodType;
  query?: z.ZodType;
  handler: (ctx: RequestContext<unknown, unknown, P, Record<string, string>>) => Promise<Reply>;
};

/** The `:name` segments of a route path, e.g. "id" | "digest" for "/x/:id/y/:digest". */
type ParamNames<S extends string> = S extends `${string}:${infer N}/${infer Rest}` ? N | ParamNames<`/${Rest}`>
  : S extends `${string}:${infer N}` ? N : never;
/** The path parameters of a route path: one string per `:name`. */
export type PathParams<S extends string> = string extends S ? Record<string, string> : { [K in ParamNames<S>]: string };
type BodyOf<B> = B extends z.ZodType ? z.output<B> : undefined;
/** Without a query schema a handler sees the raw query string: any parameter, each maybe absent. */
type QueryOf<Q> = Q extends z.ZodType ? z.output<Q> : Partial<Record<string, string>>;

/** A route as written: the handler's ctx is typed from the path, the body and the query schema. */
export type RouteDefinition<A extends string, P, Path extends string, B extends z.ZodType | undefined, Q extends z.ZodType | undefined> =
  RouteInfo<A> & {
    path: Path;
    body?: B;
    query?: Q;
    handler: (ctx: RequestContext<BodyOf<B>, QueryOf<Q>, P, PathParams<Path>>) => Promise<Reply>;
  };

/**
 * Defines a route of a role whose access values are A and principals P: `routeOf<A, P>()`
 * gives the role's `route` function, which checks each handler against its own schemas.
 */
export function routeOf<A extends string, P>() {
  return function route<const Path extends string, B extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined>(
    def: RouteDefinition<A, P, Path, B, Q>,
  ): Route<A, P> {
    // The one place the types meet the pipeline's guarantee: it calls a handler only with
    // params from this path, a query this `query` schema produced (or the raw one without it)
    // and a body this `body` schema produced (or undefined without it) — see dispatch().
    return { ...def, handler: def.handler as Route<A, P>["handler"] };
  };
}

export const MAX_BODY_BYTES = 1024 * 1024;

type Compiled<A extends string, P> = { route: Route<A, P>; re: RegExp; names: string[] };

function compile<A extends string, P>(route: Route<A, P>): Compiled<A, P> {
  const names: string[] = [];
  const pattern = route.path
    .split("/")
    .map((seg) => {
      if (seg.startsWith(":")) {
        names.push(seg.slice(1));
        return "([^/]+)";
      }
      return seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  return { route, re: new RegExp(`^${pattern}$`), names };
}

export type Pipeline = {
  handle(req: IncomingMessage, res: ServerResponse): void;
};

export type PipelineHooks<A extends string, P> = {
  log: Logger;
  authenticate(req: IncomingMessage): Promise<P | null>;
  /** Decides a non-public route for an authenticated caller: null allows, an error refuses. */
  authorize(route: Route<A, P>, principal: P): SlipwayError | null;
  /**
   * Called once for every refused request (401/403, whether the pipeline or a handler
   * refused it) that did not already commit an audit entry of its own with outcome "denied"
   * or "failure", to audit it. A one-time-password session's PASSWORD_CHANGE_REQUIRED is not
   * a refusal. `reason` is the error's message.
   */
  onDenied(ctx: RequestContext<unknown, unknown, P, Record<string, string>>, code: string, reason?: string): Promise<void>;
  /** Counts malformed input, by code. */
  onRejected?(code: string): void;
  /** Turns known low-level errors (e.g. a constraint violation in a race) into catalogue errors. */
  mapError?(err: unknown): SlipwayError | null;
};

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > limit) {
      reject(new SlipwayError("BODY_TOO_LARGE", `The request body is too large: the limit is ${limit} bytes`));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        reject(new SlipwayError("BODY_TOO_LARGE", `The request body is too large: the limit is ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => failed || resolve(Buffer.concat(chunks)));
    req.on("error", (e) => failed || reject(e));
  });
}

function zodDetails(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join(".") || "(body)", message: i.message }));
}

export function createPipeline<A extends string, P>(routes: readonly Route<A, P>[], hooks: PipelineHooks<A, P>): Pipeline {
  const compiled = routes.map(compile);
  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.headersSent) return;
    const text = body === undefined ? "" : JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      "strict-transport-security": "max-age=31536000",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };
  const SECURITY_HEADERS = { "cache-control": "no-store", "x-content-type-options": "nosniff", "strict-transport-security": "max-age=31536000" };
  /** Sends a streamed reply; a failure mid-stream can only cut the connection, so it is logged. */
  const sendStream = (req: IncomingMessage, res: ServerResponse, reply: Reply, requestId: string) => {
    res.writeHead(reply.status ?? 200, { ...SECURITY_HEADERS, ...reply.headers });
    const failed = (err: unknown) => {
      // A client that goes away mid-download is normal (it resumes with Range); anything else is ours.
      if (err && (err as NodeJS.ErrnoException).code !== "ERR_STREAM_PREMATURE_CLOSE") {
        hooks.log.error("streamed response failed", { requestId, method: req.method, path: (req.url ?? "").split("?")[0], err });
      }
    };
    if (req.method === "HEAD") {
      reply.stream?.destroy();
      res.end();
      return;
    }
    if (reply.send) {
      reply.send(res).then(() => res.end(), (err) => {
        if (!res.destroyed) failed(err);
        res.destroy();
      });
      return;
    }
    pipeStreams(reply.stream!, res, failed);
  };

  async function dispatch(req: IncomingMessage, res: ServerResponse, requestId: string, seen: { ctx?: RequestContext<unknown, unknown, P, Record<string, string>> }): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "https://site.invalid");
    } catch {
      throw new SlipwayError("BAD_REQUEST", "The request URL is malformed");
    }
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    const method = (req.method ?? "GET").toUpperCase();
    let match: { c: Compiled<A, P>; m: RegExpExecArray } | null = null;
    let pathMatched = false;
    for (const c of compiled) {
      const m = c.re.exec(path);
      if (!m) continue;
      pathMatched = true;
      if (c.route.method === method || (method === "HEAD" && c.route.method === "GET" && c.route.head)) {
        match = { c, m };
        break;
      }
    }
    if (!match) {
      req.resume();
      throw pathMatched ? new SlipwayError("METHOD_NOT_ALLOWED") : new SlipwayError("NOT_FOUND", `No API route ${path}`);
    }
    const { route } = match.c;
    const params: Record<string, string> = {};
    try {
      match.c.names.forEach((n, i) => (params[n] = decodeURIComponent(match.m[i + 1])));
    } catch {
      throw new SlipwayError("BAD_REQUEST", "The request path is malformed");
    }
    const ctx: RequestContext<unknown, unknown, P, Record<string, string>> = {
      method: method as HttpMethod | "HEAD",
      path,
      params,
      query: Object.fromEntries(url.searchParams),
      body: undefined,
      principal: null,
      ip: req.socket.remoteAddress ?? "",
      requestId,
      headers: req.headers,
    };
    seen.ctx = ctx;

    // Authenticate and authorize before reading a body: an anonymous client cannot make
    // the server buffer a megabyte.
    if (route.access !== "public") {
      ctx.principal = await hooks.authenticate(req);
      if (!ctx.principal) {
        req.resume();
        throw new SlipwayError("UNAUTHENTICATED");
      }
      const refusal = hooks.authorize(route, ctx.principal);
      if (refusal) {
        req.resume();
        throw refusal;
      }
    }

    if (route.query) {
      const q = route.query.safeParse(ctx.query);
      if (!q.success) throw new SlipwayError("VALIDATION", "The query string is not valid", zodDetails(q.error));
      ctx.query = q.data;
    }

    const raw = await readBody(req, route.bytes?.maxBytes ?? MAX_BODY_BYTES);
    if (route.bytes) {
      const type = String(req.headers["content-type"] ?? "");
      if (!/^application\/octet-stream\b/i.test(type)) throw new SlipwayError("UNSUPPORTED_MEDIA_TYPE", "The request body must be application/octet-stream");
      ctx.bytes = raw;
    } else if (route.body) {
      const type = String(req.headers["content-type"] ?? "");
      if (!/^application\/json\b/i.test(type)) throw new SlipwayError("UNSUPPORTED_MEDIA_TYPE");
      let text: string;
      try {
        // Strict: malformed UTF-8 is refused, not silently turned into U+FFFD and stored.
        text = strictUtf8.decode(raw);
      } catch {
        throw new SlipwayError("BAD_REQUEST", "The request body is not valid UTF-8");
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new SlipwayError("BAD_REQUEST", "The request body is not valid JSON");
      }
      const b = route.body.safeParse(parsed);
      if (!b.success) throw new SlipwayError("VALIDATION", undefined, zodDetails(b.error));
      ctx.body = b.data;
    } else if (raw.length > 0) {
      throw new SlipwayError("BAD_REQUEST", "This route takes no request body");
    }

    const reply = await route.handler(ctx);
    if (reply.stream || reply.send) {
      sendStream(req, res, reply, requestId);
      return;
    }
    send(res, reply.status ?? (reply.body === undefined ? 204 : 200), reply.body, reply.headers);
  }

  return {
    handle(req, res) {
      const requestId = randomUUID();
      const started = performance.now();
      const seen: { ctx?: RequestContext<unknown, unknown, P, Record<string, string>> } = {};
      const run = countAuditedRefusals(() => dispatch(req, res, requestId, seen));
      run.result
        .catch(async (caught: unknown) => {
          const err = caught instanceof SlipwayError ? caught : (hooks.mapError?.(caught) ?? caught);
          if (err instanceof SlipwayError) {
            if (err.status < 500) hooks.onRejected?.(err.code);
            // Every refusal is audited once: by the handler that refused, or here.
            if ((err.status === 401 || err.status === 403) && err.code !== "PASSWORD_CHANGE_REQUIRED" && seen.ctx && !run.audited()) {
              await hooks.onDenied(seen.ctx, err.code, err.message).catch((auditErr: unknown) => {
                hooks.log.error("auditing a refused request failed", { requestId, err: auditErr });
              });
            }
            send(res, err.status, err.toJSON());
            return;
          }
          hooks.log.error("request failed", { requestId, method: req.method, err });
          send(res, 500, { code: "SLIPWAY_INTERNAL", message: "Internal error", details: { requestId } });
        })
        .finally(() => {
          hooks.log.debug("request", {
            requestId,
            method: req.method,
            path: (req.url ?? "").split("?")[0],
            status: res.statusCode,
            ms: Math.round((performance.now() - started) * 10) / 10,
          });
        });
    },
  };
}

export type Listening = { url: string; port: number; host: string; close(): Promise<void> };

/**
 * Starts an HTTPS server listening (rejecting on EADDRINUSE and the like) and says where: the
 * bound port, and the URL with an IPv6 address in brackets. `close` also ends keep-alive
 * connections, so it does not wait for idle clients.
 */
/**
 * A TLS handshake must finish this soon: a connection that never starts one holds a file
 * descriptor, and Node's default (120 s) let an attacker hold them all (measured: 21,000 idle
 * connections from two addresses refused every other client).
 */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connections one client address may hold open at once (a NAT'ed lab of machines fits). */
export const MAX_CONNECTIONS_PER_ADDRESS = 256;
/** Connections a server holds at once, below common descriptor limits. */
export const MAX_CONNECTIONS = 8_192;

/**
 * Bounds the connections a server holds, per client address and in all, so that no one
 * client can take every file descriptor; says so in the log (once a minute per address).
 */
export function guardConnections(server: Server, opts: { log?: Logger; perAddress?: number; total?: number } = {}): void {
  const perAddress = opts.perAddress ?? MAX_CONNECTIONS_PER_ADDRESS;
  server.maxConnections = opts.total ?? MAX_CONNECTIONS;
  const open = new Map<string, number>();
  const told = new Map<string, number>();
  server.on("connection", (socket) => {
    const who = socket.remoteAddress ?? "?";
    const n = open.get(who) ?? 0;
    if (n >= perAddress) {
      socket.destroy();
      const now = Date.now();
      if ((told.get(who) ?? 0) < now - 60_000) {
        told.set(who, now);
        if (told.size > 10_000) told.clear();
        opts.log?.warn("connection refused: too many open connections from one address", { ip: who, limit: perAddress });
      }
      return;
    }
    open.set(who, n + 1);
    socket.once("close", () => {
      const left = (open.get(who) ?? 1) - 1;
      if (left <= 0) open.delete(who);
      else open.set(who, left);
    });
  });
  server.on("drop", (data) => opts.log?.warn("connection refused: the server holds its maximum of connections", { ip: data?.remoteAddress, limit: server.maxConnections }));
}

export async function listenHttps(server: Server, host: string, port: number, opts: { log?: Logger } = {}): Promise<Listening> {
  guardConnections(server, opts);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const hostPart = addr.address.includes(":") ? `[${addr.address}]` : addr.address;
  return {
    url: `https://${hostPart}:${addr.port}`, port: addr.port, host: addr.address,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
