/** Task sequences and their immutable, signed versions. */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";
import { parseJson } from "./json-column.ts";

export type TaskSequence = {
  id: string; name: string; description: string; latestVersion: number; createdAt: string; updatedAt: string;
};
export type TaskSequenceVersion = {
  taskSequenceId: string; version: number; document: unknown; digest: string; signature: string;
  publishedBy: string; publishedAt: string;
};

type R = Record<string, unknown>;
const ts = (r: R): TaskSequence => ({
  id: String(r.id), name: String(r.name), description: String(r.description),
  latestVersion: Number(r.latest_version), createdAt: String(r.created_at), updatedAt: String(r.updated_at),
});
const ver = (r: R): TaskSequenceVersion => ({
  taskSequenceId: String(r.task_sequence_id), version: Number(r.version), document: parseJson(r.document, null),
  digest: String(r.digest), signature: String(r.signature), publishedBy: String(r.published_by), publishedAt: String(r.published_at),
});

export class TaskSequenceStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  async create(t: { name: string; description: string }, now: string): Promise<TaskSequence> {
    const id = randomUUID();
    await this.#db.run(
      `INSERT INTO task_sequences (id, name, description, latest_version, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)`,
      [id, t.name, t.description, now, now]);
    return (await this.byId(id))!;
  }
  async byId(id: string): Promise<TaskSequence | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM task_sequences WHERE id = ?`, [id]);
    return r && ts(r);
  }
  async byName(name: string): Promise<TaskSequence | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM task_sequences WHERE name = ?`, [name]);
    return r && ts(r);
  }
  async list(): Promise<TaskSequence[]> {
    return (await this.#db.all<R>(`SELECT * FROM task_sequences ORDER BY name`)).map(ts);
  }
  async updateDescription(id: string, description: string, now: string): Promise<void> {
    await this.#db.run(`UPDATE task_sequences SET description = ?, updated_at = ? WHERE id = ?`, [description, now, id]);
  }
  /** Adds the next version; the primary key makes a concurrent publish of the same number fail. */
  async addVersion(v: TaskSequenceVersion, now: string): Promise<void> {
    await this.#db.run(
      `INSERT INTO task_sequence_versions (task_sequence_id, version, document, digest, signature, published_by, published_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
      [v.taskSequenceId, v.version, JSON.stringify(v.document), v.digest, v.signature, v.publishedBy, v.publishedAt]);
    await this.#db.run(`UPDATE task_sequences SET latest_version = ?, updated_at = ? WHERE id = ?`, [v.version, now, v.taskSequenceId]);
  }
  async version(id: string, version: number): Promise<TaskSequenceVersion | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM task_sequence_versions WHERE task_sequence_id = ? AND version = ?`, [id, version]);
    return r && ver(r);
  }
  async versions(id: string): Promise<TaskSequenceVersion[]> {
    return (await this.#db.all<R>(`SELECT * FROM task_sequence_versions WHERE task_sequence_id = ? ORDER BY version`, [id])).map(ver);
  }
  async delete(id: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM task_sequences WHERE id = ?`, [id])).changes;
  }
}
