/**
 * Computer associations (src/domain/association.ts): one row each, kept after deletion as a
 * tombstone in state "gone" (no key, no chunks) so the history of who moved whose state stays.
 * State changes are conditional updates (`WHERE state = ?`): two requests racing to capture,
 * restore or delete one association cannot both win.
 */
import { randomUUID } from "node:crypto";
import type { Db, Sql } from "./db.ts";
import type { AssociationKind, AssociationState } from "../domain/association.ts";

export type Association = {
  id: string; kind: AssociationKind; sourceDeviceId: string; destinationDeviceId: string; state: AssociationState;
  /** "site" (the built-in state store) or a state migration point's id. */
  store: string;
  /** The data key sealed by the master key (JSON of a Sealed); null once shredded. */
  sealedKey: string | null;
  /** The capture attempt whose chunks count (hex); null before the first. */
  streamId: string | null;
  chunks: number; storedBytes: number; stateBytes: number; files: number;
  quotaBytes: number; deleteAfterSeconds: number; expiresAt: string; deleteAt: string | null; expiryWarnedAt: string | null;
  captureRunId: string | null; restoreRunId: string | null;
  createdBy: string; createdAt: string; updatedAt: string; capturedAt: string | null; restoredAt: string | null; deletedAt: string | null;
  goneReason: string | null;
};

type R = Record<string, unknown>;
const s = (v: unknown) => (v === null || v === undefined ? null : String(v));
const row = (r: R): Association => ({
  id: String(r.id), kind: String(r.kind) as AssociationKind, sourceDeviceId: String(r.source_device_id),
  destinationDeviceId: String(r.destination_device_id), state: String(r.state) as AssociationState, store: String(r.store),
  sealedKey: s(r.sealed_key), streamId: s(r.stream_id), chunks: Number(r.chunks), storedBytes: Number(r.stored_bytes),
  stateBytes: Number(r.state_bytes), files: Number(r.files), quotaBytes: Number(r.quota_bytes),
  deleteAfterSeconds: Number(r.delete_after_seconds), expiresAt: String(r.expires_at), deleteAt: s(r.delete_at),
  expiryWarnedAt: s(r.expiry_warned_at), captureRunId: s(r.capture_run_id), restoreRunId: s(r.restore_run_id),
  createdBy: String(r.created_by), createdAt: String(r.created_at), updatedAt: String(r.updated_at),
  capturedAt: s(r.captured_at), restoredAt: s(r.restored_at), deletedAt: s(r.deleted_at), goneReason: s(r.gone_reason),
});

export type NewAssociation = {
  kind: AssociationKind; sourceDeviceId: string; destinationDeviceId: string; store: string; sealedKey: string;
  quotaBytes: number; deleteAfterSeconds: number; expiresAt: string; createdBy: string;
};

const LIVE = `state IN ('pending', 'captured', 'restored')`;

/**
 * After a shred: pushes the old row versions (which hold the sealed key) out of the database's
 * own files where the database allows — SQLite (secure_delete on) checkpoints and truncates its
 * write-ahead log; PostgreSQL vacuums the table (its WAL archive and backups still hold them
 * until they expire: docs/security-model.md). Outside any transaction.
 */
export async function scrubAssociations(db: Db): Promise<void> {
  if (db.dialect === "sqlite") await db.run(`PRAGMA wal_checkpoint(TRUNCATE)`);
  else await db.run(`VACUUM associations`);
}

export class AssociationStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  /** A new pending association; its id is chosen here so the caller can bind the sealed key to it first. */
  static newId(): string {
    return randomUUID();
  }
  async create(id: string, a: NewAssociation, now: string): Promise<Association> {
    await this.#db.run(
      `INSERT INTO associations (id, kind, source_device_id, destination_device_id, state, store, sealed_key, stream_id, chunks,
         stored_bytes, state_bytes, files, quota_bytes, delete_after_seconds, expires_at, created_by, created_at, updated_at)
       VALUES (?, ?, ?, ?, 'pending', ?, ?, NULL, 0, 0, 0, 0, ?, ?, ?, ?, ?, ?)`,
      [id, a.kind, a.sourceDeviceId, a.destinationDeviceId, a.store, a.sealedKey, a.quotaBytes, a.deleteAfterSeconds, a.expiresAt, a.createdBy, now, now]);
    return (await this.byId(id))!;
  }
  async byId(id: string): Promise<Association | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM associations WHERE id = ?`, [id]);
    return r && row(r);
  }
  async list(filter: { deviceId?: string; state?: AssociationState; live?: boolean } = {}): Promise<Association[]> {
    const where: string[] = [];
    const p: unknown[] = [];
    if (filter.deviceId) (where.push("(source_device_id = ? OR destination_device_id = ?)"), p.push(filter.deviceId, filter.deviceId));
    if (filter.state) (where.push("state = ?"), p.push(filter.state));
    if (filter.live) where.push(LIVE);
    return (await this.#db.all<R>(`SELECT * FROM associations ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY created_at DESC, id`, p)).map(row);
  }
  /** The live association a device is part of (as source or destination), if any: there is at most one. */
  async liveFor(deviceId: string): Promise<Association | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM associations WHERE (source_device_id = ? OR destination_device_id = ?) AND ${LIVE} ORDER BY created_at LIMIT 1`, [deviceId, deviceId]);
    return r && row(r);
  }
  /** Starts a capture attempt: records the stream and run while the association is still pending. */
  async beginCapture(id: string, streamId: string, runId: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET stream_id = ?, capture_run_id = ?, updated_at = ? WHERE id = ? AND state = 'pending'`,
      [streamId, runId, now, id])).changes === 1;
  }
  async markCaptured(id: string, streamId: string, m: { chunks: number; storedBytes: number; stateBytes: number; files: number }, now: string): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE associations SET state = 'captured', chunks = ?, stored_bytes = ?, state_bytes = ?, files = ?, captured_at = ?, updated_at = ?
       WHERE id = ? AND state = 'pending' AND stream_id = ?`,
      [m.chunks, m.storedBytes, m.stateBytes, m.files, now, now, id, streamId])).changes === 1;
  }
  async beginRestore(id: string, runId: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET restore_run_id = ?, updated_at = ? WHERE id = ? AND state IN ('captured', 'restored')`,
      [runId, now, id])).changes === 1;
  }
  async markRestored(id: string, deleteAt: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET state = 'restored', restored_at = ?, delete_at = ?, updated_at = ? WHERE id = ? AND state IN ('captured', 'restored')`,
      [now, deleteAt, now, id])).changes === 1;
  }
  async setDeleteAfter(id: string, seconds: number, deleteAt: string | null, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET delete_after_seconds = ?, delete_at = ?, updated_at = ? WHERE id = ? AND ${LIVE}`,
      [seconds, deleteAt, now, id])).changes === 1;
  }
  async markExpiryWarned(id: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET expiry_warned_at = ? WHERE id = ? AND expiry_warned_at IS NULL AND state IN ('pending', 'captured')`,
      [now, id])).changes === 1;
  }
  /** Crypto-shred: the key goes first, in the same statement that leaves the live states. */
  async shred(id: string, reason: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET state = 'deleting', sealed_key = NULL, gone_reason = ?, deleted_at = ?, updated_at = ? WHERE id = ? AND ${LIVE}`,
      [reason, now, now, id])).changes === 1;
  }
  /** After the chunks are removed. */
  async markGone(id: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE associations SET state = 'gone', chunks = 0, stored_bytes = 0, updated_at = ? WHERE id = ? AND state = 'deleting'`,
      [now, id])).changes === 1;
  }
  /** Live associations due for deletion or expiry at `now`, and those to warn about. */
  async due(now: string, warnBefore: string): Promise<{ deleteDue: Association[]; expired: Association[]; warn: Association[]; deleting: Association[] }> {
    const deleteDue = (await this.#db.all<R>(`SELECT * FROM associations WHERE state = 'restored' AND delete_at IS NOT NULL AND delete_at <= ?`, [now])).map(row);
    const expired = (await this.#db.all<R>(`SELECT * FROM associations WHERE state IN ('pending', 'captured') AND expires_at <= ?`, [now])).map(row);
    const warn = (await this.#db.all<R>(`SELECT * FROM associations WHERE state IN ('pending', 'captured') AND expiry_warned_at IS NULL AND expires_at <= ? AND expires_at > ?`, [warnBefore, now])).map(row);
    const deleting = (await this.#db.all<R>(`SELECT * FROM associations WHERE state = 'deleting'`)).map(row);
    return { deleteDue, expired, warn, deleting };
  }
  /** Removes every association of a device (deleting the device purges what is held about it). */
  async deleteForDevice(deviceId: string): Promise<Association[]> {
    const rows = await this.list({ deviceId });
    await this.#db.run(`DELETE FROM associations WHERE source_device_id = ? OR destination_device_id = ?`, [deviceId, deviceId]);
    return rows;
  }
}
