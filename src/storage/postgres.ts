/**
 * PostgreSQL through node-postgres, adapting the portable `?` placeholders to `$n`. TLS
 * follows libpq's `sslmode` and `sslrootcert` URL parameters, read here rather than by
 * node-postgres (whose meaning of them depends on its version and flags).
 */
import fs from "node:fs";
import type { ConnectionOptions } from "node:tls";
import pg from "pg";
import { runAfterCommit, type Db, type Row, type Sql, type Tx } from "./sql.ts";

export type SslMode = "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full";
const SSL_MODES: readonly SslMode[] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/** How to connect: the URL without its TLS parameters, and what TLS to use. */
export type PostgresTarget = {
  connectionString: string;
  mode: SslMode;
  /** false: no TLS; otherwise Node's TLS options. */
  ssl: false | ConnectionOptions;
  /** allow/prefer: when the server offers no TLS, connect without (libpq does the same). */
  plainIfRefused: boolean;
};

function readPem(what: string, file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`Cannot connect to PostgreSQL: cannot read ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

/**
 * Reads libpq's TLS parameters from a `postgres://` URL, as libpq means them:
 * disable (no TLS); allow and prefer (TLS when the server offers it, nothing verified —
 * prefer is the default, as in libpq); require (TLS, nothing verified — unless sslrootcert is
 * given, then as verify-ca); verify-ca (the server's chain must lead to sslrootcert);
 * verify-full (and the host name in the URL must be in the server's certificate;
 * sslrootcert defaults to the system's roots, or `sslrootcert=system`). sslcert and sslkey
 * name a client certificate. Only verify-full stops a man in the middle who holds any
 * certificate from the same CA.
 */
export function postgresTarget(url: string): PostgresTarget {
  const u = new URL(url);
  const p = u.searchParams;
  const given = p.get("sslmode") ?? (p.get("ssl") === "true" || p.get("ssl") === "1" ? "verify-full" : p.get("ssl") === "false" || p.get("ssl") === "0" ? "disable" : null);
  const mode = (given ?? "prefer") as SslMode;
  if (!SSL_MODES.includes(mode)) {
    throw new Error(`Cannot connect to PostgreSQL: unknown sslmode "${given}" (use one of ${SSL_MODES.join(", ")})`);
  }
  const rootcert = p.get("sslrootcert");
  const cert = p.get("sslcert");
  const key = p.get("sslkey");
  for (const k of ["sslmode", "ssl", "sslrootcert", "sslcert", "sslkey", "uselibpqcompat", "sslnegotiation"]) p.delete(k);
  const connectionString = u.toString();
  if (mode === "disable") return { connectionString, mode, ssl: false, plainIfRefused: false };
  const ssl: ConnectionOptions = {};
  if (cert) ssl.cert = readPem("sslcert", cert);
  if (key) ssl.key = readPem("sslkey", key);
  const system = rootcert === "system";
  if (system && mode !== "verify-full") {
    throw new Error(`Cannot connect to PostgreSQL: sslrootcert=system needs sslmode=verify-full (a public CA without a host name check lets anyone with a certificate from it in)`);
  }
  if (rootcert && !system) ssl.ca = readPem("sslrootcert", rootcert);
  const verifyChain = mode === "verify-full" || mode === "verify-ca" || (mode === "require" && rootcert !== null);
  if (mode === "verify-ca" && !ssl.ca) {
    throw new Error("Cannot connect to PostgreSQL: sslmode=verify-ca needs sslrootcert=FILE (the CA that issued the server's certificate)");
  }
  if (!verifyChain) ssl.rejectUnauthorized = false;
  else if (mode !== "verify-full") ssl.checkServerIdentity = () => undefined;
  return { connectionString, mode, ssl, plainIfRefused: mode === "allow" || mode === "prefer" };
}

// BIGINT (int8) and NUMERIC arrive as strings by default; our integers fit in a double.
pg.types.setTypeParser(20, (v) => Number(v));

/** Rewrites `?` placeholders to `$1…$n`. Our SQL never has `?` inside string literals. */
export function toPgPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function toParam(v: unknown): unknown {
  if (typeof v === "boolean") return v ? 1 : 0;
  return v === undefined ? null : v;
}

function sqlOn(q: (text: string, values: unknown[]) => Promise<pg.QueryResult>): Sql {
  const conv = new Map<string, string>();
  const text = (sql: string) => {
    let t = conv.get(sql);
    if (!t) conv.set(sql, (t = toPgPlaceholders(sql)));
    return t;
  };
  return {
    async all<T>(sql: string, params: readonly unknown[] = []) {
      return (await q(text(sql), params.map(toParam))).rows as T[];
    },
    async get<T>(sql: string, params: readonly unknown[] = []) {
      return (await q(text(sql), params.map(toParam))).rows[0] as T | undefined;
    },
    async run(sql: string, params: readonly unknown[] = []) {
      return { changes: (await q(text(sql), params.map(toParam))).rowCount ?? 0 };
    },
  };
}

function newPool(connectionString: string, ssl: false | ConnectionOptions): pg.Pool {
  const pool = new pg.Pool({ connectionString, ssl, max: 10 });
  // An idle client's connection error must not crash the process; the next query reports it.
  pool.on("error", () => {});
  return pool;
}

export async function openPostgres(url: string): Promise<Db> {
  const target = postgresTarget(url);
  let pool = newPool(target.connectionString, target.ssl);
  let tls = target.ssl !== false;
  try {
    await pool.query("SELECT 1");
  } catch (err) {
    await pool.end().catch(() => {});
    if (!(target.plainIfRefused && /does not support SSL/i.test((err as Error)?.message ?? ""))) throw err;
    pool = newPool(target.connectionString, false);
    tls = false;
    await pool.query("SELECT 1");
  }
  const top = sqlOn((t, v) => pool.query(t, v));
  const host = (() => {
    try {
      const u = new URL(url);
      return `${u.hostname}:${u.port || 5432}${u.pathname}`;
    } catch {
      return "?";
    }
  })();
  return {
    dialect: "postgres",
    description: `postgres://${host} (${tls ? `TLS, sslmode=${target.mode}` : "no TLS"})`,
    all: <T = Row>(s: string, p?: readonly unknown[]) => top.all<T>(s, p),
    get: <T = Row>(s: string, p?: readonly unknown[]) => top.get<T>(s, p),
    run: (s: string, p?: readonly unknown[]) => top.run(s, p),
    async transaction<T>(fn: (tx: Tx) => Promise<T>, opts?: { lockKey?: number }) {
      const callbacks: (() => void | Promise<void>)[] = [];
      const client = await pool.connect();
      let result: T;
      try {
        await client.query("BEGIN");
        if (opts?.lockKey !== undefined) await client.query("SELECT pg_advisory_xact_lock($1)", [opts.lockKey]);
        result = await fn({ ...sqlOn((t, v) => client.query(t, v)), afterCommit: (cb) => void callbacks.push(cb) });
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {});
        throw err;
      } finally {
        client.release();
      }
      // After the client is back in the pool: a callback may itself use the database.
      await runAfterCommit(callbacks);
      return result;
    },
    async close() {
      await pool.end();
    },
  };
}
