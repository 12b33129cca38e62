/**
 * The narrow database port every store is written against. SQL is written once, portable
 * between SQLite and PostgreSQL, with `?` placeholders; each implementation (sqlite.ts,
 * postgres.ts) adapts it. Stores name it through db.ts, which also opens one.
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

/** The handle a transaction's body works through. */
export interface Tx extends Sql {
  /**
   * Runs fn once the transaction has committed, and never when it rolls back: for side
   * effects outside the database that must agree with it (the audit head checkpoint).
   * Callbacks run in the order registered, after the connection is free again, before
   * `transaction` resolves; one that fails is reported as a process warning and does not
   * turn the committed transaction into an error.
   */
  afterCommit(fn: () => void | Promise<void>): void;
}

/** Whether an Sql handle is a transaction's (so it can take after-commit callbacks). */
export function isTx(sql: Sql): sql is Tx {
  return typeof (sql as Partial<Tx>).afterCommit === "function";
}

/** Runs the after-commit callbacks of a transaction that committed. */
export async function runAfterCommit(callbacks: readonly (() => void | Promise<void>)[]): Promise<void> {
  for (const fn of callbacks) {
    try {
      await fn();
    } catch (err) {
      // The transaction is durable; reporting failure to its caller would invite a retry
      // that does the change twice. Say so where an operator looks instead.
      process.emitWarning(`An action after a committed transaction failed: ${(err as Error)?.message ?? String(err)}`, { code: "SLIPWAY_AFTER_COMMIT" });
    }
  }
}

export interface Db extends Sql {
  readonly dialect: "sqlite" | "postgres";
  /**
   * Runs fn in one serializable unit: on SQLite an IMMEDIATE transaction behind the
   * connection's lock, on PostgreSQL a transaction on one pooled client. `lockKey`
   * additionally takes a named exclusive lock (used to append to the audit chain from
   * several processes). Callbacks registered with `tx.afterCommit` run after COMMIT.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>, opts?: { lockKey?: number }): Promise<T>;
  close(): Promise<void>;
  /** Human description for logs, never including credentials. */
  readonly description: string;
}
