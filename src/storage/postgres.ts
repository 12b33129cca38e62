/** PostgreSQL through node-postgres, adapting the portable `?` placeholders to `$n`. */
import pg from "pg";
import type { Db, Row, Sql } from "./db.ts";

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

export async function openPostgres(url: string): Promise<Db> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // An idle client's connection error must not crash the process; the next query reports it.
  pool.on("error", () => {});
  await pool.query("SELECT 1");
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
    description: `postgres://${host}`,
    all: <T = Row>(s: string, p?: readonly unknown[]) => top.all<T>(s, p),
    get: <T = Row>(s: string, p?: readonly unknown[]) => top.get<T>(s, p),
    run: (s: string, p?: readonly unknown[]) => top.run(s, p),
    async transaction<T>(fn: (tx: Sql) => Promise<T>, opts?: { lockKey?: number }) {
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        if (opts?.lockKey !== undefined) await client.query("SELECT pg_advisory_xact_lock($1)", [opts.lockKey]);
        const result = await fn(sqlOn((t, v) => client.query(t, v)));
        await client.query("COMMIT");
        return result;
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    },
    async close() {
      await pool.end();
    },
  };
}
