/**
 * Distribution points the site knows: each registered by an administrator with the URL
 * devices reach it at, enrolled once with a one-time secret (stored only as its hash), and
 * the content manifests assigned to it with the replication state it last reported.
 */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";
import { bumpTrustGeneration } from "./trust-generation.ts";
import { parseJson } from "./json-column.ts";

export type DistributionPoint = {
  id: string; name: string;
  /** The origin devices fetch content from, `https://host:port`. */
  url: string;
  /** The DNS names and IP addresses its server certificate may name. */
  hostNames: string[];
  secretHash: string | null; secretExpiresAt: string | null;
  enrolledAt: string | null; lastSeenAt: string | null;
  createdBy: string; createdAt: string; updatedAt: string;
};

/** `pending` until the distribution point first reports on a manifest. */
export type ReplicationState = "pending" | "replicating" | "ready" | "failed";

export type Assignment = {
  dpId: string; digest: string; state: ReplicationState; message: string | null;
  assignedBy: string; assignedAt: string; updatedAt: string;
};

type R = Record<string, unknown>;
const nullable = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const dp = (r: R): DistributionPoint => ({
  id: String(r.id), name: String(r.name), url: String(r.url), hostNames: parseJson<string[]>(r.host_names, []),
  secretHash: nullable(r.secret_hash), secretExpiresAt: nullable(r.secret_expires_at),
  enrolledAt: nullable(r.enrolled_at), lastSeenAt: nullable(r.last_seen_at),
  createdBy: String(r.created_by), createdAt: String(r.created_at), updatedAt: String(r.updated_at),
});
const assignment = (r: R): Assignment => ({
  dpId: String(r.dp_id), digest: String(r.digest), state: String(r.state) as ReplicationState, message: nullable(r.message),
  assignedBy: String(r.assigned_by), assignedAt: String(r.assigned_at), updatedAt: String(r.updated_at),
});

export class DistributionPointStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }

  async create(d: { name: string; url: string; hostNames: string[]; secretHash: string; secretExpiresAt: string; createdBy: string }, now: string): Promise<DistributionPoint> {
    const id = randomUUID();
    await this.#db.run(
      `INSERT INTO distribution_points (id, name, url, host_names, secret_hash, secret_expires_at, enrolled_at, last_seen_at, created_by, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?)`,
      [id, d.name, d.url, JSON.stringify(d.hostNames), d.secretHash, d.secretExpiresAt, d.createdBy, now, now]);
    return (await this.byId(id))!;
  }
  async byId(id: string): Promise<DistributionPoint | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM distribution_points WHERE id = ?`, [id]);
    return r && dp(r);
  }
  async byName(name: string): Promise<DistributionPoint | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM distribution_points WHERE name = ?`, [name]);
    return r && dp(r);
  }
  async bySecretHash(hash: string): Promise<DistributionPoint | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM distribution_points WHERE secret_hash = ?`, [hash]);
    return r && dp(r);
  }
  async list(): Promise<DistributionPoint[]> {
    return (await this.#db.all<R>(`SELECT * FROM distribution_points ORDER BY name`)).map(dp);
  }
  /** A new one-time enrollment secret (its hash), replacing any unused one. */
  async setSecret(id: string, secretHash: string, expiresAt: string, now: string): Promise<number> {
    return (await this.#db.run(`UPDATE distribution_points SET secret_hash = ?, secret_expires_at = ?, updated_at = ? WHERE id = ?`,
      [secretHash, expiresAt, now, id])).changes;
  }
  /**
   * Spends the enrollment secret, atomically: succeeds once, only while it is unexpired, so
   * two processes racing with one secret cannot both enroll.
   */
  async spendSecret(id: string, secretHash: string, now: string): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE distribution_points SET secret_hash = NULL, secret_expires_at = NULL, enrolled_at = ?, last_seen_at = ?, updated_at = ?
       WHERE id = ? AND secret_hash = ? AND secret_expires_at > ?`, [now, now, now, id, secretHash, now])).changes === 1;
  }
  /**
   * Revokes one of a distribution point's certificates as superseded, atomically: true only
   * when it was still active, so of two renewals proven with one certificate only one wins.
   */
  async supersedeCertificate(dpId: string, serial: string, at: string): Promise<boolean> {
    const done = (await this.#db.run(
      `UPDATE certificates SET status = 'revoked', status_reason = 'superseded', status_changed_at = ?
       WHERE serial = ? AND dp_id = ? AND status = 'active'`, [at, serial.toLowerCase(), dpId])).changes === 1;
    if (done) await bumpTrustGeneration(this.#db);
    return done;
  }
  async touch(id: string, at: string): Promise<void> {
    await this.#db.run(`UPDATE distribution_points SET last_seen_at = ? WHERE id = ?`, [at, id]);
  }
  async delete(id: string): Promise<number> {
    const changes = (await this.#db.run(`DELETE FROM distribution_points WHERE id = ?`, [id])).changes;
    if (changes) await bumpTrustGeneration(this.#db);
    return changes;
  }

  /** Assigns a manifest; true when it was not assigned already (an existing assignment keeps its state). */
  async assign(dpId: string, digest: string, by: string, now: string): Promise<boolean> {
    return (await this.#db.run(
      `INSERT INTO distribution_point_content (dp_id, digest, state, message, assigned_by, assigned_at, updated_at)
       VALUES (?, ?, 'pending', NULL, ?, ?, ?) ON CONFLICT (dp_id, digest) DO NOTHING`, [dpId, digest, by, now, now])).changes === 1;
  }
  async unassign(dpId: string, digest: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM distribution_point_content WHERE dp_id = ? AND digest = ?`, [dpId, digest])).changes;
  }
  async assignment(dpId: string, digest: string): Promise<Assignment | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM distribution_point_content WHERE dp_id = ? AND digest = ?`, [dpId, digest]);
    return r && assignment(r);
  }
  /** One distribution point's assignments, or every assignment. */
  async assignments(dpId?: string): Promise<Assignment[]> {
    const rows = dpId === undefined
      ? await this.#db.all<R>(`SELECT * FROM distribution_point_content ORDER BY dp_id, assigned_at, digest`)
      : await this.#db.all<R>(`SELECT * FROM distribution_point_content WHERE dp_id = ? ORDER BY assigned_at, digest`, [dpId]);
    return rows.map(assignment);
  }
  async setState(dpId: string, digest: string, state: ReplicationState, message: string | null, now: string): Promise<number> {
    return (await this.#db.run(`UPDATE distribution_point_content SET state = ?, message = ?, updated_at = ? WHERE dp_id = ? AND digest = ?`,
      [state, message, now, dpId, digest])).changes;
  }

  /**
   * For each digest, the URLs of the distribution points that hold it ready, still have an
   * active, unexpired client certificate and were heard from at `seenSince` or later, ordered
   * by name: the sources a policy lists.
   */
  async readySources(digests: readonly string[], now: string, seenSince: string): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    const wanted = [...new Set(digests)];
    for (let i = 0; i < wanted.length; i += 500) {
      const part = wanted.slice(i, i + 500);
      const rows = await this.#db.all<{ digest: string; url: string }>(
        `SELECT c.digest AS digest, d.url AS url FROM distribution_point_content c JOIN distribution_points d ON d.id = c.dp_id
         WHERE c.state = 'ready' AND c.digest IN (${part.map(() => "?").join(",")}) AND d.last_seen_at >= ?
           AND EXISTS (SELECT 1 FROM certificates k WHERE k.dp_id = d.id AND k.kind = 'dp' AND k.status = 'active' AND k.not_after > ?)
         ORDER BY d.name, d.url`, [...part, seenSince, now]);
      for (const r of rows) out.set(String(r.digest), [...(out.get(String(r.digest)) ?? []), String(r.url)]);
    }
    return out;
  }
}
