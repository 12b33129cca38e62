/** Deployments: a task sequence version targeted at a collection. */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";
import { defined, parseJson } from "./json-column.ts";
import type { Assurance } from "../domain/assurance.ts";

export type BootPath = "pxe" | "media";
export type Deployment = {
  id: string; name: string; taskSequenceId: string; taskSequenceVersion: number; collectionId: string;
  purpose: "available" | "required"; bootPaths: BootPath[]; availableFrom: string | null; availableUntil: string | null;
  enabled: boolean; createdAt: string; updatedAt: string;
  /** The least enrollment assurance a device needs for it; null: the default (see domain/assurance.ts effectiveMinimum). */
  minimumAssurance: Assurance | null;
  /** An administrator opted it into sniffable enrollments (only for task sequences that use no secret). */
  allowSniffableEnrollment: boolean;
};

type R = Record<string, unknown>;
const dep = (r: R): Deployment => ({
  id: String(r.id), name: String(r.name), taskSequenceId: String(r.task_sequence_id),
  taskSequenceVersion: Number(r.task_sequence_version), collectionId: String(r.collection_id),
  purpose: String(r.purpose) as Deployment["purpose"], bootPaths: parseJson<BootPath[]>(r.boot_paths, []),
  availableFrom: (r.available_from as string | null) ?? null, availableUntil: (r.available_until as string | null) ?? null,
  enabled: Number(r.enabled) === 1, createdAt: String(r.created_at), updatedAt: String(r.updated_at),
  minimumAssurance: (r.minimum_assurance as Assurance | null) ?? null, allowSniffableEnrollment: Number(r.allow_sniffable_enrollment ?? 0) === 1,
});

export type DeploymentInput = Omit<Deployment, "id" | "createdAt" | "updatedAt" | "minimumAssurance" | "allowSniffableEnrollment">
  & { minimumAssurance?: Assurance | null; allowSniffableEnrollment?: boolean };

export class DeploymentStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  async create(d: DeploymentInput, now: string): Promise<Deployment> {
    const id = randomUUID();
    await this.#db.run(
      `INSERT INTO deployments (id, name, task_sequence_id, task_sequence_version, collection_id, purpose, boot_paths,
         available_from, available_until, enabled, created_at, updated_at, minimum_assurance, allow_sniffable_enrollment)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [id, d.name, d.taskSequenceId, d.taskSequenceVersion, d.collectionId, d.purpose, JSON.stringify(d.bootPaths),
        d.availableFrom, d.availableUntil, d.enabled, now, now, d.minimumAssurance ?? null, d.allowSniffableEnrollment ? 1 : 0]);
    return (await this.byId(id))!;
  }
  async byId(id: string): Promise<Deployment | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM deployments WHERE id = ?`, [id]);
    return r && dep(r);
  }
  async list(filter: { collectionId?: string; taskSequenceId?: string } = {}): Promise<Deployment[]> {
    const where: string[] = [];
    const p: unknown[] = [];
    if (filter.collectionId) (where.push("collection_id = ?"), p.push(filter.collectionId));
    if (filter.taskSequenceId) (where.push("task_sequence_id = ?"), p.push(filter.taskSequenceId));
    return (await this.#db.all<R>(
      `SELECT * FROM deployments ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY name`, p)).map(dep);
  }
  async update(id: string, patch: Partial<DeploymentInput>, now: string): Promise<Deployment | undefined> {
    const cur = await this.byId(id);
    if (!cur) return undefined;
    const n = { ...cur, ...defined(patch) };
    await this.#db.run(
      `UPDATE deployments SET name = ?, task_sequence_version = ?, collection_id = ?, purpose = ?, boot_paths = ?,
         available_from = ?, available_until = ?, enabled = ?, updated_at = ?, minimum_assurance = ?, allow_sniffable_enrollment = ? WHERE id = ?`,
      [n.name, n.taskSequenceVersion, n.collectionId, n.purpose, JSON.stringify(n.bootPaths), n.availableFrom,
        n.availableUntil, n.enabled, now, n.minimumAssurance, n.allowSniffableEnrollment ? 1 : 0, id]);
    return this.byId(id);
  }
  async delete(id: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM deployments WHERE id = ?`, [id])).changes;
  }
}
