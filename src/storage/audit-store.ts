/**
 * The audit log in the database: appends sealed entries to the hash chain inside the
 * caller's transaction, lists them, and verifies the whole chain. A signed checkpoint of the
 * newest entry (`audit.head` in the data folder), written only once the entry has committed,
 * lets verification notice rows cut off the end, which a chain alone cannot show.
 */
import fs from "node:fs";
import path from "node:path";
import { AsyncLocalStorage } from "node:async_hooks";
import { createPublicKey, type KeyObject } from "node:crypto";
import { isTx, type Db, type Sql } from "./db.ts";
import { ChainVerifier, checkHead, sealEntry, signHead, type AuditEntry, type AuditHead, type ChainVerdict } from "../security/audit-chain.ts";

export type AuditOutcome = AuditEntry["outcome"];
export type AuditEvent = {
  actor: string;
  action: string;
  object?: string | null;
  outcome?: AuditOutcome;
  details?: Record<string, unknown> | null;
  /** When it happened; defaults to the time it is written. */
  at?: string;
};

type AuditRow = {
  seq: number; at: string; actor: string; action: string; object: string | null; outcome: string;
  details: string | null; prev_hash: string; hash: string; signature: string;
};

/** Serializes appends across processes sharing one PostgreSQL database. */
export const AUDIT_LOCK = 0x5119_0002;

function fromRow(r: AuditRow): AuditEntry {
  return {
    seq: Number(r.seq),
    at: r.at,
    actor: r.actor,
    action: r.action,
    object: r.object,
    outcome: r.outcome as AuditOutcome,
    details: r.details === null ? null : (JSON.parse(r.details) as Record<string, unknown>),
    prevHash: r.prev_hash,
    hash: r.hash,
    signature: r.signature,
  };
}

export type { AuditHead };

/**
 * The head checkpoint file of a data folder as found: its parsed JSON, the raw text when it
 * is not JSON (which verification reports as forged), or null when there is none.
 */
export function readHead(dataDir: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dataDir, "audit.head"), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

// Which refusals a request has audited itself, so the pipeline audits the others once.
const refusalTallies = new AsyncLocalStorage<{ committed: number }>();

/**
 * Runs fn, counting the entries with outcome "denied" or "failure" that it appends and that
 * commit (one appended in a transaction that then rolls back does not count). The request
 * pipeline uses it to audit every refusal exactly once.
 */
export function countAuditedRefusals<T>(fn: () => Promise<T>): { result: Promise<T>; audited(): boolean } {
  const tally = { committed: 0 };
  return { result: refusalTallies.run(tally, fn), audited: () => tally.committed > 0 };
}

export class AuditStore {
  readonly #db: Db;
  readonly #key: KeyObject;
  readonly #verifyKey: KeyObject;
  readonly #headFile: string | null;
  readonly #now: () => Date;
  /** The newest head this process wrote: put back if the file goes missing or goes back. */
  #lastHead: AuditHead | null = null;

  constructor(opts: { db: Db; signingKey: KeyObject; dataDir: string | null; now?: () => Date }) {
    this.#db = opts.db;
    this.#key = opts.signingKey;
    this.#verifyKey = createPublicKey(opts.signingKey);
    this.#headFile = opts.dataDir ? path.join(opts.dataDir, "audit.head") : null;
    this.#now = opts.now ?? (() => new Date());
  }

  /**
   * Appends within the caller's transaction (so a change and its record commit together),
   * or in a transaction of its own when tx is omitted. The head checkpoint follows once the
   * entry has committed; a rolled-back append leaves no trace.
   */
  async append(event: AuditEvent, tx?: Sql): Promise<AuditEntry> {
    const tally = event.outcome === "denied" || event.outcome === "failure" ? refusalTallies.getStore() : undefined;
    const committed = (entry: AuditEntry) => async () => {
      if (tally) tally.committed++;
      await this.#writeHead(entry);
    };
    if (!tx) {
      return this.#db.transaction(async (t) => {
        const entry = await this.#appendIn(t, event);
        t.afterCommit(committed(entry));
        return entry;
      }, { lockKey: AUDIT_LOCK });
    }
    const entry = await this.#appendIn(tx, event);
    // A plain connection (no transaction) has committed the row already.
    if (isTx(tx)) tx.afterCommit(committed(entry));
    else await committed(entry)();
    return entry;
  }

  #queue: AuditEvent[] = [];
  #flushing: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;

  /**
   * Appends soon, together with whatever else arrives within `delayMs`, in one transaction:
   * for high-rate events (a PXE responder's decisions) where one fsync and head rewrite per
   * event would stall the event loop. The order of events is kept; `flush()` writes what is
   * queued now (call it before shutting down).
   */
  appendSoon(event: AuditEvent, delayMs = 50): void {
    this.#queue.push({ ...event, details: event.details ?? null, at: event.at ?? this.#now().toISOString() });
    this.#timer ??= setTimeout(() => {
      this.#timer = null;
      void this.flush().catch(() => {});
    }, delayMs);
  }

  async flush(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    while (this.#flushing) await this.#flushing;
    if (this.#queue.length === 0) return;
    const batch = this.#queue.splice(0, this.#queue.length);
    this.#flushing = (async () => {
      try {
        await this.#db.transaction(async (tx) => {
          let last: AuditEntry | undefined;
          for (const e of batch) last = await this.#appendIn(tx, e);
          if (last) tx.afterCommit(() => this.#writeHead(last!));
        }, { lockKey: AUDIT_LOCK });
      } catch (err) {
        // Nothing was written (the transaction rolled back): keep the batch for the next flush.
        this.#queue.unshift(...batch);
        throw err;
      }
    })().finally(() => {
      this.#flushing = null;
    });
    await this.#flushing;
  }

  async #appendIn(tx: Sql, event: AuditEvent): Promise<AuditEntry> {
    if (this.#db.dialect === "postgres") await tx.get("SELECT pg_advisory_xact_lock(?)", [AUDIT_LOCK]);
    const last = await tx.get<{ seq: number; hash: string }>(`SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`);
    const entry = sealEntry(
      last ? { seq: Number(last.seq), hash: last.hash } : null,
      {
        at: event.at ?? this.#now().toISOString(),
        actor: event.actor,
        action: event.action,
        object: event.object ?? null,
        outcome: event.outcome ?? "success",
        // Through JSON once, as it will be stored: undefined fields drop out, dates become text.
        details: event.details ? (JSON.parse(JSON.stringify(event.details)) as Record<string, unknown>) : null,
      },
      this.#key,
    );
    await tx.run(
      `INSERT INTO audit_log (seq, at, actor, action, object, outcome, details, prev_hash, hash, signature)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [entry.seq, entry.at, entry.actor, entry.action, entry.object, entry.outcome,
        entry.details === null ? null : JSON.stringify(entry.details), entry.prevHash, entry.hash, entry.signature],
    );
    return entry;
  }

  /**
   * Moves the head checkpoint forward to a committed entry. Under the audit lock, so the
   * read-compare-replace of one process never interleaves with another's: a head is never
   * replaced by an older one. A head that is evidence of tampering stays as it is, for
   * `audit verify` to report: one not signed by the site key, or one naming an entry the
   * database no longer holds as it was. A head that went missing or back is replaced by the
   * newest this process wrote, when that is newer than the entry.
   */
  async #writeHead(entry: AuditEntry): Promise<void> {
    const file = this.#headFile;
    if (!file || (this.#lastHead && entry.seq <= this.#lastHead.seq && fs.existsSync(file))) return;
    await this.#db.transaction(async (tx) => {
      const found = readHead(path.dirname(file));
      const current = found === null ? null : checkHead(found, this.#verifyKey);
      if (found !== null && !current) return;
      if (current) {
        if (current.seq >= entry.seq) {
          if (!this.#lastHead || current.seq > this.#lastHead.seq) this.#lastHead = current;
          return;
        }
        const row = await tx.get<{ hash: string }>(`SELECT hash FROM audit_log WHERE seq = ?`, [current.seq]);
        if (row?.hash !== current.hash) return;
      }
      const head = this.#lastHead && this.#lastHead.seq > entry.seq && (!current || current.seq < this.#lastHead.seq)
        ? this.#lastHead
        : signHead({ seq: entry.seq, hash: entry.hash, writtenAt: this.#now().toISOString() }, this.#key);
      const tmp = `${file}.${process.pid}.tmp`;
      const fd = fs.openSync(tmp, "w", 0o600);
      try {
        fs.writeFileSync(fd, JSON.stringify(head));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, file);
      this.#lastHead = head;
    }, { lockKey: AUDIT_LOCK });
  }

  /** The newest entry with exactly this action, actor, object and outcome, if any. */
  async latest(filter: { action: string; actor: string; object: string; outcome: string }): Promise<AuditEntry | undefined> {
    const r = await this.#db.get<AuditRow>(
      `SELECT * FROM audit_log WHERE action = ? AND actor = ? AND object = ? AND outcome = ? ORDER BY seq DESC LIMIT 1`,
      [filter.action, filter.actor, filter.object, filter.outcome]);
    return r ? fromRow(r) : undefined;
  }

  /** How many entries name `who` as actor or object, by action, with the first and last time. */
  async about(who: string): Promise<{ entries: number; first: string | null; last: string | null; actions: Record<string, number> }> {
    const rows = await this.#db.all<{ action: string; n: number | string; first: string; last: string }>(
      `SELECT action, COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last FROM audit_log WHERE actor = ? OR object = ? GROUP BY action ORDER BY action`, [who, who]);
    const actions = Object.fromEntries(rows.map((r) => [r.action, Number(r.n)]));
    const firsts = rows.map((r) => r.first).sort();
    const lasts = rows.map((r) => r.last).sort();
    return { entries: rows.reduce((n, r) => n + Number(r.n), 0), first: firsts[0] ?? null, last: lasts.at(-1) ?? null, actions };
  }

  async list(filter: { afterSeq?: number; limit?: number; action?: string; actor?: string; outcome?: string } = {}): Promise<AuditEntry[]> {
    const where: string[] = ["seq > ?"];
    const params: unknown[] = [filter.afterSeq ?? 0];
    if (filter.action) (where.push("action = ?"), params.push(filter.action));
    if (filter.actor) (where.push("actor = ?"), params.push(filter.actor));
    if (filter.outcome) (where.push("outcome = ?"), params.push(filter.outcome));
    params.push(Math.min(Math.max(filter.limit ?? 100, 1), 1000));
    const rows = await this.#db.all<AuditRow>(
      `SELECT * FROM audit_log WHERE ${where.join(" AND ")} ORDER BY seq LIMIT ?`,
      params,
    );
    return rows.map(fromRow);
  }
}

/** The entry with that sequence number, if the log still holds it. */
export async function entryAt(db: Db, seq: number): Promise<AuditEntry | undefined> {
  const r = await db.get<AuditRow>(`SELECT * FROM audit_log WHERE seq = ?`, [seq]);
  return r ? fromRow(r) : undefined;
}

/** Streams every entry in seq order, a page at a time. */
export async function* allEntries(db: Db, pageSize = 1000): AsyncGenerator<AuditEntry> {
  let after = -1;
  for (;;) {
    const rows = await db.all<AuditRow>(`SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`, [after, pageSize]);
    for (const r of rows) yield fromRow(r);
    if (rows.length < pageSize) return;
    after = Number(rows[rows.length - 1].seq);
  }
}

/**
 * Verifies the whole chain against the site's public key, streaming. With `evidence` (the
 * head file as `readHead` found it) the site's rules apply: a missing, unsigned or passed
 * head, or an empty log, is tampering.
 */
export async function verifyAuditLog(db: Db, publicKey: KeyObject, evidence?: { head: unknown }): Promise<ChainVerdict> {
  const v = new ChainVerifier(publicKey, evidence);
  for await (const e of allEntries(db)) {
    const bad = v.push(e);
    if (bad) return bad;
  }
  return v.finish();
}
