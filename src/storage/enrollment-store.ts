/**
 * Enrollment credentials — one-time boot tokens from the PXE responder and bounded-use
 * media credentials — stored only as hashes, and the failed-password record that limits
 * online guessing.
 */
import type { Sql } from "./db.ts";

export type CredentialKind = "boot-token" | "media";
export type CredentialRecord = {
  id: string; kind: CredentialKind; name: string; secretHash: string; deviceId: string | null; mac: string | null;
  smbiosUuid: string | null; usesLeft: number; expiresAt: string; createdBy: string; createdAt: string;
  revokedAt: string | null; lastUsedAt: string | null;
};

type R = Record<string, unknown>;
const cred = (r: R): CredentialRecord => ({
  id: String(r.id), kind: String(r.kind) as CredentialKind, name: String(r.name), secretHash: String(r.secret_hash),
  deviceId: (r.device_id as string | null) ?? null, mac: (r.mac as string | null) ?? null,
  smbiosUuid: (r.smbios_uuid as string | null) ?? null, usesLeft: Number(r.uses_left), expiresAt: String(r.expires_at),
  createdBy: String(r.created_by), createdAt: String(r.created_at), revokedAt: (r.revoked_at as string | null) ?? null,
  lastUsedAt: (r.last_used_at as string | null) ?? null,
});

export class EnrollmentStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  async add(c: Omit<CredentialRecord, "revokedAt" | "lastUsedAt">): Promise<void> {
    await this.#db.run(
      `INSERT INTO enrollment_credentials (id, kind, name, secret_hash, device_id, mac, smbios_uuid, uses_left, expires_at,
         created_by, created_at, revoked_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)`,
      [c.id, c.kind, c.name, c.secretHash, c.deviceId, c.mac, c.smbiosUuid, c.usesLeft, c.expiresAt, c.createdBy, c.createdAt]);
  }
  async byHash(hash: string): Promise<CredentialRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM enrollment_credentials WHERE secret_hash = ?`, [hash]);
    return r && cred(r);
  }
  async byId(id: string): Promise<CredentialRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM enrollment_credentials WHERE id = ?`, [id]);
    return r && cred(r);
  }
  async list(kind?: CredentialKind): Promise<CredentialRecord[]> {
    const rows = kind
      ? await this.#db.all<R>(`SELECT * FROM enrollment_credentials WHERE kind = ? ORDER BY created_at`, [kind])
      : await this.#db.all<R>(`SELECT * FROM enrollment_credentials ORDER BY created_at`);
    return rows.map(cred);
  }
  /**
   * The newest boot token for exactly this device, MAC and SMBIOS UUID (null matches null)
   * that is unused, unrevoked and valid until `validUntil` or later.
   */
  async unusedBootToken(q: { deviceId: string; mac: string; smbiosUuid: string | null; validUntil: string }): Promise<CredentialRecord | undefined> {
    const r = await this.#db.get<R>(
      `SELECT * FROM enrollment_credentials WHERE kind = 'boot-token' AND device_id = ? AND mac = ?
         AND ${q.smbiosUuid === null ? "smbios_uuid IS NULL" : "smbios_uuid = ?"}
         AND uses_left > 0 AND revoked_at IS NULL AND expires_at >= ?
       ORDER BY expires_at DESC, id LIMIT 1`,
      q.smbiosUuid === null ? [q.deviceId, q.mac, q.validUntil] : [q.deviceId, q.mac, q.smbiosUuid, q.validUntil]);
    return r && cred(r);
  }
  /**
   * Spends one use, atomically: succeeds only while uses remain, unexpired and unrevoked,
   * so two machines racing with one single-use token cannot both win.
   */
  async spend(id: string, now: string): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE enrollment_credentials SET uses_left = uses_left - 1, last_used_at = ?
       WHERE id = ? AND uses_left > 0 AND expires_at > ? AND revoked_at IS NULL`, [now, id, now])).changes === 1;
  }
  async revoke(id: string, now: string): Promise<number> {
    return (await this.#db.run(`UPDATE enrollment_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, [now, id])).changes;
  }
  async deleteExpired(before: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM enrollment_credentials WHERE kind = 'boot-token' AND expires_at < ?`, [before])).changes;
  }

  /** Deletes every password failure (PXE and sign-in) recorded before `before`. */
  async pruneFailures(before: string): Promise<void> {
    await this.#db.run(`DELETE FROM password_failures WHERE at < ?`, [before]);
  }

  // Wrong PXE passwords are rows of password_failures too, one per guess under each of four
  // subjects: its source address, its boot token, its machine (MAC) and the site. A guess is
  // reserved (its rows written) before the password is verified, and released (its rows
  // deleted) when the password was right, so that guesses racing each other all count. Its
  // rows share one `at` — the time, then "#" and a random id — that names the guess: it sorts
  // with the plain ISO times it starts with, at millisecond precision.

  /** Wrong PXE passwords since `since` (inclusive) from one source address, and site-wide. */
  async pxeFailures(source: string, since: string): Promise<{ source: number; site: number }> {
    const r = await this.#db.get<{ source: number; site: number }>(
      `SELECT COALESCE(SUM(CASE WHEN subject = ? THEN 1 ELSE 0 END), 0) AS source,
              COALESCE(SUM(CASE WHEN subject = ? THEN 1 ELSE 0 END), 0) AS site
       FROM password_failures WHERE subject IN (?, ?) AND at >= ?`,
      [pxeSubject.source(source), PXE_SITE, pxeSubject.source(source), PXE_SITE, since]);
    return { source: Number(r?.source ?? 0), site: Number(r?.site ?? 0) };
  }
  /** Wrong PXE passwords since `since` (inclusive) site-wide. */
  async pxeSiteFailures(since: string): Promise<number> {
    return this.#failuresFrom(PXE_SITE, since);
  }
  /** Wrong PXE passwords since `since` (inclusive) with one boot token and against one machine. */
  async pxeFailuresOf(g: { tokenId: string; mac: string }, since: string): Promise<{ token: number; machine: number }> {
    const token = await this.#failuresFrom(pxeSubject.token(g.tokenId), since);
    const machine = await this.#failuresFrom(pxeSubject.machine(g.mac), since);
    return { token, machine };
  }
  /** Writes the rows of one PXE password guess; returns its name, for releasePxeGuess. */
  async reservePxeGuess(g: { source: string; tokenId: string; mac: string }, at: string, id: string): Promise<string> {
    const guess = `${at}#${id}`;
    await this.#db.run(`INSERT INTO password_failures (subject, at) VALUES (?, ?), (?, ?), (?, ?), (?, ?)`,
      [pxeSubject.source(g.source), guess, pxeSubject.token(g.tokenId), guess, pxeSubject.machine(g.mac), guess, PXE_SITE, guess]);
    return guess;
  }
  /** Forgets a reserved guess (the password was right). */
  async releasePxeGuess(guess: string): Promise<void> {
    await this.#db.run(`DELETE FROM password_failures WHERE at = ?`, [guess]);
  }
  /** How many wrong PXE passwords since `since`, and from how many sources, against how many machines, with how many tokens. */
  async pxeSpread(since: string): Promise<{ failures: number; sources: number; machines: number; tokens: number }> {
    const distinct = async (prefix: string) => Number((await this.#db.get<{ n: number }>(
      // A range on the (subject, at) index rather than LIKE, which SQLite folds case for.
      `SELECT COUNT(DISTINCT subject) AS n FROM password_failures WHERE subject >= ? AND subject < ? AND at >= ?`,
      [prefix, prefix.slice(0, -1) + ";", since]))?.n ?? 0);
    return {
      failures: await this.#failuresFrom(PXE_SITE, since),
      sources: await distinct(pxeSubject.source("")), machines: await distinct(pxeSubject.machine("")), tokens: await distinct(pxeSubject.token("")),
    };
  }
  /** Whether a PXE password alert of this level was raised since `since`. */
  async pxeAlertSince(level: string, since: string): Promise<boolean> {
    return (await this.#failuresFrom(`pxe-alert:${level}`, since)) > 0;
  }
  async recordPxeAlert(level: string, at: string): Promise<void> {
    await this.#db.run(`INSERT INTO password_failures (subject, at) VALUES (?, ?)`, [`pxe-alert:${level}`, at]);
  }
  async #failuresFrom(subject: string, since: string): Promise<number> {
    const r = await this.#db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM password_failures WHERE subject = ? AND at >= ?`, [subject, since]);
    return Number(r?.n ?? 0);
  }
}

/** The advisory lock under which a PXE password guess is counted and reserved (one step across processes). */
export const PXE_GUESS_LOCK = 0x5119_0b01;
const PXE_SITE = "pxe-site";
const pxeSubject = {
  source: (address: string) => `pxe-source:${address}`,
  token: (id: string) => `pxe-token:${id}`,
  machine: (mac: string) => `pxe-mac:${mac}`,
};
