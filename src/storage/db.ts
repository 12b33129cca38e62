/**
 * The narrow database port every store is written against. SQL is written once, portable
 * between SQLite and PostgreSQL, with `?` placeholders; each implementation adapts it.
 */

export type Row = Record<string, unknown>;

export interface Sql {
  /** All rows of a query. */
  all<T = Row>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** The first row of a query, or undefined. */
  get<T = Row>(sql: string, params?: readonly unknown[]): Promise<T | undefined>;
  /** A statement that changes rows; returns how many it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<{ changes: number }>;
}

export interface Db extends Sql {
  readonly dialect: "sqlite" | "postgres";
  /**
   * Runs fn in one serializable unit: on SQLite an IMMEDIATE transaction behind the
   * connection's lock, on PostgreSQL a transaction on one pooled client. `lockKey`
   * additionally takes a named exclusive lock (used to append to the audit chain from
   * several processes).
   */
  transaction<T>(fn: (tx: Sql) => Promise<T>, opts?: { lockKey?: number }): Promise<T>;
  close(): Promise<void>;
  /** Human description for logs, never including credentials. */
  readonly description: string;
}

/** Opens the database named by a URL: `postgres://…` or a SQLite file path. */
export async function openDb(target: { url?: string; sqlitePath: string }): Promise<Db> {
  if (target.url && /^postgres(ql)?:\/\//.test(target.url)) {
    const { openPostgres } = await import("./postgres.ts");
    return openPostgres(target.url);
  }
  const { openSqlite } = await import("./sqlite.ts");
  return openSqlite(target.sqlitePath);
}
