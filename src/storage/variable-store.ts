/**
 * Variables at site, collection and device scope. A secret variable's value is kept only
 * as an envelope (`sealed`), never in `value`; `key_id` names the master key that wraps its
 * data key so rotation can find every row still under an old key.
 */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";
import { parseJson } from "./json-column.ts";

export type VariableScope = "site" | "collection" | "device";

export type VariableRecord = {
  id: string; scope: VariableScope; scopeId: string; name: string; secret: boolean;
  value: string | null; sealed: unknown | null; keyId: string | null; createdAt: string; updatedAt: string;
};

type R = Record<string, unknown>;
const v = (r: R): VariableRecord => ({
  id: String(r.id), scope: String(r.scope) as VariableScope, scopeId: String(r.scope_id), name: String(r.name),
  secret: Number(r.secret) === 1, value: (r.value as string | null) ?? null,
  sealed: r.sealed === null ? null : parseJson(r.sealed, null), keyId: (r.key_id as string | null) ?? null,
  createdAt: String(r.created_at), updatedAt: String(r.updated_at),
});

export class VariableStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }

  /** Creates or replaces the variable with this scope and name. */
  async put(x: { scope: VariableScope; scopeId: string; name: string; secret: boolean; value: string | null; sealed: unknown | null; keyId: string | null }, now: string): Promise<VariableRecord> {
    await this.#db.run(
      `INSERT INTO variables (id, scope, scope_id, name, secret, value, sealed, key_id, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (scope, scope_id, name) DO UPDATE SET secret = excluded.secret, value = excluded.value,
         sealed = excluded.sealed, key_id = excluded.key_id, updated_at = excluded.updated_at`,
      [randomUUID(), x.scope, x.scopeId, x.name, x.secret, x.value, x.sealed === null ? null : JSON.stringify(x.sealed), x.keyId, now, now],
    );
    return (await this.byName(x.scope, x.scopeId, x.name))!;
  }
  async byName(scope: VariableScope, scopeId: string, name: string): Promise<VariableRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM variables WHERE scope = ? AND scope_id = ? AND name = ?`, [scope, scopeId, name]);
    return r && v(r);
  }
  /** Whether a variable of this name exists at any scope, and whether any of them is secret. */
  async kindOf(name: string): Promise<{ exists: boolean; secret: boolean }> {
    const rows = await this.#db.all<{ secret: number }>(`SELECT secret FROM variables WHERE name = ?`, [name]);
    return { exists: rows.length > 0, secret: rows.some((x) => Number(x.secret) === 1) };
  }
  async byId(id: string): Promise<VariableRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM variables WHERE id = ?`, [id]);
    return r && v(r);
  }
  async list(filter: { scope?: VariableScope; scopeId?: string } = {}): Promise<VariableRecord[]> {
    const where: string[] = [];
    const p: unknown[] = [];
    if (filter.scope) (where.push("scope = ?"), p.push(filter.scope));
    if (filter.scopeId !== undefined) (where.push("scope_id = ?"), p.push(filter.scopeId));
    const rows = await this.#db.all<R>(
      `SELECT * FROM variables ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY scope, scope_id, name`, p);
    return rows.map(v);
  }
  async delete(id: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM variables WHERE id = ?`, [id])).changes;
  }
  async deleteScope(scope: VariableScope, scopeId: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM variables WHERE scope = ? AND scope_id = ?`, [scope, scopeId])).changes;
  }
  /** Secret rows whose data key is wrapped by a master key other than `keyId`. */
  async sealedNotUnder(keyId: string, limit: number): Promise<VariableRecord[]> {
    return (await this.#db.all<R>(
      `SELECT * FROM variables WHERE secret = 1 AND key_id <> ? ORDER BY id LIMIT ?`, [keyId, limit])).map(v);
  }
  async replaceSealed(id: string, expectedKeyId: string, sealed: unknown, keyId: string): Promise<number> {
    // Conditional on the old key id so a concurrent overwrite of the value is never undone.
    return (await this.#db.run(`UPDATE variables SET sealed = ?, key_id = ? WHERE id = ? AND key_id = ?`,
      [JSON.stringify(sealed), keyId, id, expectedKeyId])).changes;
  }
  async countByKey(): Promise<Record<string, number>> {
    const rows = await this.#db.all<{ key_id: string; n: number }>(
      `SELECT key_id, COUNT(*) AS n FROM variables WHERE secret = 1 GROUP BY key_id`);
    return Object.fromEntries(rows.map((r) => [r.key_id, Number(r.n)]));
  }
}
