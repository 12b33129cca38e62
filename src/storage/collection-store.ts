/**
 * Collections: static members plus an optional rule over device attributes. Every write that
 * can change membership counts in the membership generation (membership-generation.ts).
 */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";
import { countingMembership } from "./membership-generation.ts";

export type Collection = {
  id: string; name: string; description: string; rule: string | null; createdAt: string; updatedAt: string;
};

type R = Record<string, unknown>;
const coll = (r: R): Collection => ({
  id: String(r.id), name: String(r.name), description: String(r.description),
  rule: (r.rule as string | null) ?? null, createdAt: String(r.created_at), updatedAt: String(r.updated_at),
});

export class CollectionStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  /**
   * The connection or transaction this store works through: the membership cache keeps one
   * copy per connection, and keeps nothing computed inside a transaction.
   */
  get sql(): Sql {
    return this.#db;
  }
  async create(c: { name: string; description: string; rule: string | null }, now: string): Promise<Collection> {
    const id = randomUUID();
    // A new collection is in every listing of collections that membership keeps, rule or not.
    await countingMembership(this.#db, () => this.#db.run(
      `INSERT INTO collections (id, name, description, rule, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
      [id, c.name, c.description, c.rule, now, now]));
    return (await this.byId(id))!;
  }
  async byId(id: string): Promise<Collection | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM collections WHERE id = ?`, [id]);
    return r && coll(r);
  }
  async byName(name: string): Promise<Collection | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM collections WHERE name = ?`, [name]);
    return r && coll(r);
  }
  async list(): Promise<Collection[]> {
    return (await this.#db.all<R>(`SELECT * FROM collections ORDER BY name`)).map(coll);
  }
  async update(id: string, patch: { name?: string; description?: string; rule?: string | null }, now: string): Promise<void> {
    const cur = await this.byId(id);
    if (!cur) return;
    // Name and description too: membership keeps the collections it lists.
    await countingMembership(this.#db, () => this.#db.run(`UPDATE collections SET name = ?, description = ?, rule = ?, updated_at = ? WHERE id = ?`, [
      patch.name ?? cur.name, patch.description ?? cur.description, patch.rule === undefined ? cur.rule : patch.rule, now, id,
    ]));
  }
  async delete(id: string): Promise<number> {
    return countingMembership(this.#db, async () => (await this.#db.run(`DELETE FROM collections WHERE id = ?`, [id])).changes);
  }
  async staticMembers(id: string): Promise<string[]> {
    return (await this.#db.all<{ device_id: string }>(
      `SELECT device_id FROM collection_members WHERE collection_id = ? ORDER BY device_id`, [id])).map((r) => r.device_id);
  }
  /** The collections a device is a static member of (an index lookup, whatever the fleet's size). */
  async staticCollectionsOf(deviceId: string): Promise<string[]> {
    return (await this.#db.all<{ collection_id: string }>(
      `SELECT collection_id FROM collection_members WHERE device_id = ?`, [deviceId])).map((r) => r.collection_id);
  }
  async allStaticMembers(): Promise<{ collectionId: string; deviceId: string }[]> {
    return (await this.#db.all<{ collection_id: string; device_id: string }>(`SELECT collection_id, device_id FROM collection_members`))
      .map((r) => ({ collectionId: r.collection_id, deviceId: r.device_id }));
  }
  async addMember(id: string, deviceId: string): Promise<void> {
    await countingMembership(this.#db, () => this.#db.run(
      `INSERT INTO collection_members (collection_id, device_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, [id, deviceId]));
  }
  async removeMember(id: string, deviceId: string): Promise<number> {
    return countingMembership(this.#db, async () =>
      (await this.#db.run(`DELETE FROM collection_members WHERE collection_id = ? AND device_id = ?`, [id, deviceId])).changes);
  }
}
