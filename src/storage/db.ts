/**
 * The narrow database port every store is written against (sql.ts), and opening the database
 * that implements it: SQLite or PostgreSQL. The implementations import the port from sql.ts,
 * not from here, so that this file can load them without an import circle.
 */
import type { Db } from "./sql.ts";

export { isTx, runAfterCommit, type Db, type Row, type Sql, type Tx } from "./sql.ts";

/** Opens the database named by a URL: `postgres://…` or a SQLite file path. */
export async function openDb(target: { url?: string; sqlitePath: string }): Promise<Db> {
  if (target.url && /^postgres(ql)?:\/\//.test(target.url)) {
    const { openPostgres } = await import("./postgres.ts");
    return openPostgres(target.url);
  }
  const { openSqlite } = await import("./sqlite.ts");
  return openSqlite(target.sqlitePath);
}
