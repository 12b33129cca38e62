/**
 * SQLite through node:sqlite (the SQLite built into Node 24, so there is no native addon to
 * compile). The connection is synchronous; a mutex keeps a transaction's statements from
 * interleaving with other requests' statements while the transaction awaits.
 */
import fs from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { runAfterCommit, type Db, type Row, type Sql, type Tx } from "./sql.ts";
import { Mutex } from "./mutex.ts";

type Param = null | number | bigint | string | Uint8Array;

function toParam(v: unknown): Param {
  if (v === undefined || v === null) return null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "string") return v;
  if (v instanceof Uint8Array) return v;
  throw new TypeError(`Cannot bind a ${typeof v} as an SQL parameter`);
}

/**
 * Makes the database file (and its WAL and shared-memory files) readable by the owner only,
 * before a byte of data is written: the file holds password hashes, sealed secrets and the
 * audit log. SQLite gives the -wal and -shm files it creates the main file's mode, so
 * creating the main file 0600 covers them; files from before this rule are narrowed too.
 */
function ownerOnly(path: string): void {
  if (path === "" || path === ":memory:" || path.startsWith("file:")) return;
  try {
    fs.closeSync(fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  for (const f of [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    try {
      if ((fs.statSync(f).mode & 0o077) !== 0) fs.chmodSync(f, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}

export function openSqlite(path: string): Db {
  ownerOnly(path);
  const conn = new DatabaseSync(path);
  // WAL for concurrent readers; synchronous=FULL so an acknowledged write survives a power cut.
  conn.exec("PRAGMA journal_mode = WAL");
  conn.exec("PRAGMA synchronous = FULL");
  conn.exec("PRAGMA foreign_keys = ON");
  conn.exec("PRAGMA busy_timeout = 10000");
  conn.exec("PRAGMA secure_delete = ON");

  const cache = new Map<string, StatementSync>();
  const prepare = (sql: string): StatementSync => {
    let st = cache.get(sql);
    if (!st) {
      st = conn.prepare(sql);
      cache.set(sql, st);
    }
    return st;
  };
  const direct: Sql = {
    async all<T>(sql: string, params: readonly unknown[] = []) {
      return prepare(sql).all(...params.map(toParam)) as T[];
    },
    async get<T>(sql: string, params: readonly unknown[] = []) {
      return prepare(sql).get(...params.map(toParam)) as T | undefined;
    },
    async run(sql: string, params: readonly unknown[] = []) {
      const r = prepare(sql).run(...params.map(toParam));
      return { changes: Number(r.changes) };
    },
  };

  const mutex = new Mutex();
  const locked = async <T>(fn: () => Promise<T>): Promise<T> => {
    const release = await mutex.lock();
    try {
      return await fn();
    } finally {
      release();
    }
  };

  let closed = false;
  return {
    dialect: "sqlite",
    description: `sqlite:${path}`,
    all: <T = Row>(sql: string, p?: readonly unknown[]) => locked(() => direct.all<T>(sql, p)),
    get: <T = Row>(sql: string, p?: readonly unknown[]) => locked(() => direct.get<T>(sql, p)),
    run: (sql: string, p?: readonly unknown[]) => locked(() => direct.run(sql, p)),
    // The lock key needs nothing more here: BEGIN IMMEDIATE already takes SQLite's one write
    // lock, which also keeps out other processes writing to the same file.
    async transaction<T>(fn: (tx: Tx) => Promise<T>) {
      const callbacks: (() => void | Promise<void>)[] = [];
      const tx: Tx = { ...direct, afterCommit: (cb) => void callbacks.push(cb) };
      const result = await locked(async () => {
        conn.exec("BEGIN IMMEDIATE");
        try {
          const r = await fn(tx);
          conn.exec("COMMIT");
          return r;
        } catch (err) {
          conn.exec("ROLLBACK");
          throw err;
        }
      });
      // Outside the lock: a callback may itself use the database.
      await runAfterCommit(callbacks);
      return result;
    },
    async close() {
      if (closed) return;
      closed = true;
      await locked(async () => {
        cache.clear();
        conn.close();
      });
    },
  };
}
