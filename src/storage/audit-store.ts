/**
 * The audit log in the database: appends sealed entries to the hash chain inside the
 * caller's transaction, lists them, and verifies the whole chain. A checkpoint of the
 * newest entry (`audit.head` in the data folder) lets verification notice rows cut off the
 * end, which a chain alone cannot show.
 */
import fs from "node:fs";
import path from "node:path";
import type { KeyObject } from "node:crypto";
import type { Db, Sql } from "./db.ts";
import { ChainVerifier, sealEntry, type AuditEntry, type ChainVerdict } from "../security/audit-chain.ts";

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

export type AuditHead = { seq: number; hash: string };

export function readHead(dataDir: string): AuditHead | undefined {
  try {
    const h = JSON.parse(fs.readFileSync(path.join(dataDir, "audit.head"), "utf8")) as AuditHead;
    return typeof h.seq === "number" && typeof h.hash === "string" ? h : undefined;
  } catch {
    return undefined;
  }
}

export class AuditStore {
  readonly #db: Db;
  readonly #key: KeyObject;
  readonly #headFile: string | null;
  readonly #now: () => Date;
  #lastWritten = 0;

  constructor(opts: { db: Db; signingKey: KeyObject; dataDir: string | null; now?: () => Date }) {
    this.#db = opts.db;
    this.#key = opts.signingKey;
    this.#headFile = opts.dataDir ? path.join(opts.dataDir, "audit.head") : null;
    this.#now = opts.now ?? (() => new Date());
  }

  /**
   * Appends within the caller's transaction (so a change and its record commit together),
   * or in a transaction of its own when tx is omitted.
   */
  async append(event: AuditEvent, tx?: Sql): Promise<AuditEntry> {
    const entry = tx ? await this.#appendIn(tx, event) : await this.#db.transaction((t) => this.#appendIn(t, event), { lockKey: AUDIT_LOCK });
    this.#writeHead(entry);
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
      let last: AuditEntry | undefined;
      try {
        await this.#db.transaction(async (tx) => {
          for (const e of batch) last = await this.#appendIn(tx, e);
        }, { lockKey: AUDIT_LOCK });
      } catch (err) {
        // Nothing was written (the transaction rolled back): keep the batch for the next flush.
        this.#queue.unshift(...batch);
        throw err;
      }
      if (last) this.#writeHead(last);
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

  #writeHead(entry: AuditEntry): void {
    if (!this.#headFile || entry.seq <= this.#lastWritten) return;
    this.#lastWritten = entry.seq;
    const tmp = `${this.#headFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ seq: entry.seq, hash: entry.hash }), { mode: 0o600 });
    fs.renameSync(tmp, this.#headFile);
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

/** Verifies the whole chain against the site's public key and the head checkpoint, streaming. */
export async function verifyAuditLog(db: Db, publicKey: KeyObject, head?: AuditHead): Promise<ChainVerdict> {
  const v = new ChainVerifier(publicKey, head);
  for await (const e of allEntries(db)) {
    const bad = v.push(e);
    if (bad) return bad;
  }
  return v.finish();
}
