/**
 * How the CLI reaches the site API: which server, which CA its certificate must chain to,
 * which token to send; one HTTPS request function; and the one mapping from HTTP status
 * to exit code. Requests go through the pinned HTTPS client (security/pinned-https.ts): TLS
 * is always verified, and there is no option to turn that off.
 */
import fs from "node:fs";
import path from "node:path";
import { HttpsError, PinnedHttpsClient, type Query } from "../security/pinned-https.ts";
import { CliError, ExitCode } from "./command.ts";
import { profilePath, readProfile, type Profile } from "./profile.ts";

export const CONNECTION_HELP = `Connection (first match wins, for each of server, CA and token):
  server  --server URL, then $SLIPWAY_SERVER, then the saved profile, then
          DIR/server.json (written by "slipway up"); DIR is --data, $SLIPWAY_DATA or ./var
  CA      --ca FILE, then $SLIPWAY_CA (a PEM file), then the profile's CA (for its own
          server), then DIR/keys/ca.crt, then the system's trusted CAs
  token   $SLIPWAY_TOKEN, then the profile's token (only for the profile's own server).
          There is no --token flag: command lines leak into ps and shell history.
  The profile is $SLIPWAY_CONFIG or ~/.config/slipway/profile.json (mode 0600), written by
  "slipway login". The server's certificate is always verified.`;

export const USER_AGENT = "slipway-cli/0.1.0";
const TIMEOUT_MS = 30_000;

export type ConnectionFlags = { server?: string; ca?: string; data?: string };

export type Connection = {
  /** The server's origin, `https://host:port`. */
  server: string;
  /** PEM to trust instead of the system CAs; null means the system CAs. */
  ca: string | null;
  /** Where the CA came from, for error messages. */
  caSource: string;
  token: string | null;
  profileFile: string;
  profile: Profile;
};

/** Normalizes a server address to its origin; only https is accepted, since tokens travel in it. */
export function serverOrigin(text: string, source: string): string {
  let url: URL;
  try {
    url = new URL(text.includes("://") ? text : `https://${text}`);
  } catch {
    throw new CliError(`The server address from ${source} is not a URL: "${text}"`, ExitCode.USAGE);
  }
  if (url.protocol !== "https:") throw new CliError(`The server address from ${source} must use https, not ${url.protocol.replace(":", "")}`, ExitCode.USAGE);
  return url.origin;
}

function readCa(file: string, source: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`Cannot read the CA certificate ${file} (from ${source}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.USAGE);
  }
}

function dataServer(dataDir: string): string | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(dataDir, "server.json"), "utf8")) as { url?: unknown };
    return typeof v.url === "string" ? v.url : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Finds server, CA and token (see CONNECTION_HELP). `withToken: false` is for signing in,
 * where no token is sent.
 */
export function resolveConnection(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env, withToken = true): Connection {
  const profileFile = profilePath(env);
  const profile = readProfile(profileFile);
  const dataDir = path.resolve(flags.data ?? env.SLIPWAY_DATA ?? "./var");
  const profileServer = profile.server ? serverOrigin(profile.server, profileFile) : undefined;

  let server: string;
  if (flags.server) server = serverOrigin(flags.server, "--server");
  else if (env.SLIPWAY_SERVER) server = serverOrigin(env.SLIPWAY_SERVER, "SLIPWAY_SERVER");
  else if (profileServer) server = profileServer;
  else {
    const fromData = dataServer(dataDir);
    if (!fromData) {
      throw new CliError(`No server to talk to: give --server URL, set SLIPWAY_SERVER, run "slipway login --server URL", or run where the data folder is (no ${path.join(dataDir, "server.json")})`, ExitCode.USAGE);
    }
    server = serverOrigin(fromData, path.join(dataDir, "server.json"));
  }
  // The profile's CA and token belong to the profile's server; never hand them to another.
  const ownProfile = profileServer === server;

  let ca: string | null = null;
  let caSource = "the system's trusted CAs";
  const dataCa = path.join(dataDir, "keys", "ca.crt");
  if (flags.ca) [ca, caSource] = [readCa(flags.ca, "--ca"), flags.ca];
  else if (env.SLIPWAY_CA) [ca, caSource] = [readCa(env.SLIPWAY_CA, "SLIPWAY_CA"), env.SLIPWAY_CA];
  else if (ownProfile && profile.ca) [ca, caSource] = [profile.ca, `the CA saved in ${profileFile}`];
  else if (fs.existsSync(dataCa)) [ca, caSource] = [readCa(dataCa, "the data folder"), dataCa];

  let token: string | null = null;
  if (withToken) token = env.SLIPWAY_TOKEN || (ownProfile ? profile.token ?? null : null);
  return { server, ca, caSource, token, profileFile, profile };
}

/** The exit code for an HTTP error status: the one place this mapping lives. */
export function exitCodeForStatus(status: number): number {
  if (status === 401) return ExitCode.UNAUTHENTICATED;
  if (status === 403) return ExitCode.FORBIDDEN;
  if (status === 404) return ExitCode.NOT_FOUND;
  if (status === 409) return ExitCode.CONFLICT;
  if (status === 400 || status === 413 || status === 415 || status === 422) return ExitCode.INVALID;
  if (status >= 500) return ExitCode.UNAVAILABLE;
  return ExitCode.FAILURE;
}

/** A refusal from the API, carrying its stable code and the details (e.g. each invalid field). */
export class ApiError extends CliError {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  /** Extra lines a command adds: what state things are in now, what to do next. */
  readonly hints: string[] = [];
  constructor(status: number, code: string, message: string, details: unknown) {
    super(message, exitCodeForStatus(status));
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The lines that explain an error's details: one per invalid field or problem. */
export function detailLines(details: unknown, message = ""): string[] {
  if (details === null || details === undefined) return [];
  // A detail the message already says in full is left out rather than printed twice.
  const news = (text: string) => !message.includes(text);
  if (Array.isArray(details)) {
    return details.flatMap((d) => {
      if (d && typeof d === "object" && "message" in d) {
        const { path: where, message: text } = d as { path?: unknown; message: unknown };
        if (!news(String(text))) return [];
        return [where ? `${String(where)}: ${String(text)}` : String(text)];
      }
      return [typeof d === "string" ? d : JSON.stringify(d)];
    });
  }
  if (typeof details === "object") {
    const o = details as Record<string, unknown>;
    if (Array.isArray(o.problems)) return o.problems.map(String).filter(news);
    if (typeof o.requestId === "string") return [`request id ${o.requestId} (for the server's log)`];
    return [JSON.stringify(details)];
  }
  return [String(details)];
}

// Errors that mean the certificate could not be trusted: waiting will not fix them.
const TLS_TRUST = /CERT|SIGNATURE|ISSUER|ALTNAME|SELF_SIGNED/;

/** What the CLI says when no answer came: why, in words, and what to try. */
function transportError(err: HttpsError, conn: Connection): CliError {
  const cause = (err.cause ?? err) as NodeJS.ErrnoException;
  const code = err.code;
  if (TLS_TRUST.test(code)) {
    return new CliError(`Cannot trust ${conn.server}: ${cause.message} (CA from ${conn.caSource}; give the site's CA with --ca FILE)`, ExitCode.FAILURE);
  }
  const why = code === "ECONNREFUSED" ? "connection refused (is \"slipway up\" running?)"
    : code === "ENOTFOUND" || code === "EAI_AGAIN" ? "the host name does not resolve"
    : code === "ETIMEDOUT" ? "no answer in time"
    : cause.message || code;
  return new CliError(`Cannot reach ${conn.server}: ${why}`, ExitCode.UNAVAILABLE);
}

/** Sends one request; resolves with the parsed JSON body (undefined for 204), rejects with ApiError or CliError. */
export async function apiRequest(conn: Connection, method: string, apiPath: string, opts: { body?: unknown; query?: Query; token?: string | null } = {}): Promise<unknown> {
  const token = opts.token === undefined ? conn.token : opts.token;
  // One connection per request, closed after it, so the command's process exits as soon as it is done.
  const client = new PinnedHttpsClient({ url: conn.server, ca: conn.ca, peer: "the server", userAgent: USER_AGENT, timeoutMs: TIMEOUT_MS });
  try {
    return await client.json(method, apiPath, opts.body, { query: opts.query, headers: token ? { authorization: `Bearer ${token}` } : {} });
  } catch (err) {
    if (!(err instanceof HttpsError)) throw err;
    if (err.status === 0) throw transportError(err, conn);
    throw new ApiError(err.status, err.code, err.message, err.details);
  }
}

/** A GET whose answer is bytes (a sealed chunk); ApiError or CliError like apiRequest. */
export async function apiBytes(conn: Connection, apiPath: string): Promise<Buffer> {
  const client = new PinnedHttpsClient({ url: conn.server, ca: conn.ca, peer: "the server", userAgent: USER_AGENT, timeoutMs: TIMEOUT_MS });
  try {
    return await client.getBytes(apiPath, { headers: conn.token ? { authorization: `Bearer ${conn.token}` } : {} });
  } catch (err) {
    if (!(err instanceof HttpsError)) throw err;
    if (err.status === 0) throw transportError(err, conn);
    throw new ApiError(err.status, err.code, err.message, err.details);
  } finally {
    client.close();
  }
}

/** Builds an API path, encoding every interpolated value as one path segment. */
export function apiPath(strings: TemplateStringsArray, ...values: (string | number)[]): string {
  return strings.reduce((out, s, i) => out + s + (i < values.length ? encodeURIComponent(String(values[i])) : ""), "");
}

/** The API as commands use it: typed helpers over one connection. */
export type Api = {
  connection: Connection;
  get<T = unknown>(p: string, query?: Query): Promise<T>;
  post<T = unknown>(p: string, body?: unknown): Promise<T>;
  patch<T = unknown>(p: string, body: unknown): Promise<T>;
  put<T = unknown>(p: string, body: unknown): Promise<T>;
  delete(p: string): Promise<void>;
};

export function createApi(conn: Connection): Api {
  return {
    connection: conn,
    get: (p, query) => apiRequest(conn, "GET", p, { query }) as Promise<never>,
    post: (p, body) => apiRequest(conn, "POST", p, { body }) as Promise<never>,
    patch: (p, body) => apiRequest(conn, "PATCH", p, { body }) as Promise<never>,
    put: (p, body) => apiRequest(conn, "PUT", p, { body }) as Promise<never>,
    delete: async (p) => {
      await apiRequest(conn, "DELETE", p);
    },
  };
}

/**
 * id → name for a list endpoint, so tables can show names where the API gives ids. Best
 * effort: without permission to read that list, the ids are shown instead.
 */
export async function namesById(api: Api, listPath: string): Promise<Map<string, string>> {
  try {
    const rows = await api.get<{ id: string; name: string }[]>(listPath);
    return new Map(rows.map((r) => [r.id, r.name]));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return new Map();
    throw err;
  }
}
