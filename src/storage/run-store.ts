/** Deployment runs on devices and the step events they report. */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";

export type RunState = "running" | "succeeded" | "failed" | "cancelled";
export type Run = {
  id: string; deploymentId: string; deviceId: string; bootPath: string; taskSequenceId: string; taskSequenceVersion: number;
  state: RunState; currentStep: string | null; startedAt: string; updatedAt: string; endedAt: string | null;
};
export type RunEvent = {
  runId: string; seq: number; at: string; step: string; state: string; progress: number | null; exitCode: number | null; message: string | null;
};

type R = Record<string, unknown>;
const run = (r: R): Run => ({
  id: String(r.id), deploymentId: String(r.deployment_id), deviceId: String(r.device_id), bootPath: String(r.boot_path),
  taskSequenceId: String(r.task_sequence_id), taskSequenceVersion: Number(r.task_sequence_version), state: String(r.state) as RunState,
  currentStep: (r.current_step as string | null) ?? null, startedAt: String(r.started_at), updatedAt: String(r.updated_at),
  endedAt: (r.ended_at as string | null) ?? null,
});
const ev = (r: R): RunEvent => ({
  runId: String(r.run_id), seq: Number(r.seq), at: String(r.at), step: String(r.step), state: String(r.state),
  progress: r.progress === null ? null : Number(r.progress), exitCode: r.exit_code === null ? null : Number(r.exit_code),
  message: (r.message as string | null) ?? null,
});

export class RunStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  async start(r: Omit<Run, "id" | "state" | "currentStep" | "updatedAt" | "endedAt">): Promise<Run> {
    const id = randomUUID();
    await this.#db.run(
      `INSERT INTO deployment_runs (id, deployment_id, device_id, boot_path, task_sequence_id, task_sequence_version, state,
         current_step, started_at, updated_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, ?, ?, NULL)`,
      [id, r.deploymentId, r.deviceId, r.bootPath, r.taskSequenceId, r.taskSequenceVersion, r.startedAt, r.startedAt]);
    return (await this.byId(id))!;
  }
  async byId(id: string): Promise<Run | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM deployment_runs WHERE id = ?`, [id]);
    return r && run(r);
  }
  async list(filter: { deviceId?: string; deploymentId?: string; state?: RunState } = {}): Promise<Run[]> {
    const where: string[] = [];
    const p: unknown[] = [];
    if (filter.deviceId) (where.push("device_id = ?"), p.push(filter.deviceId));
    if (filter.deploymentId) (where.push("deployment_id = ?"), p.push(filter.deploymentId));
    if (filter.state) (where.push("state = ?"), p.push(filter.state));
    return (await this.#db.all<R>(
      `SELECT * FROM deployment_runs ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY started_at DESC`, p)).map(run);
  }
  async update(id: string, patch: { state?: RunState; currentStep?: string | null; endedAt?: string | null }, now: string): Promise<void> {
    const cur = await this.byId(id);
    if (!cur) return;
    await this.#db.run(`UPDATE deployment_runs SET state = ?, current_step = ?, ended_at = ?, updated_at = ? WHERE id = ?`, [
      patch.state ?? cur.state, patch.currentStep === undefined ? cur.currentStep : patch.currentStep,
      patch.endedAt === undefined ? cur.endedAt : patch.endedAt, now, id]);
  }
  async addEvent(e: Omit<RunEvent, "seq">): Promise<RunEvent> {
    const last = await this.#db.get<{ m: number | null }>(`SELECT MAX(seq) AS m FROM run_events WHERE run_id = ?`, [e.runId]);
    const seq = Number(last?.m ?? 0) + 1;
    await this.#db.run(`INSERT INTO run_events (run_id, seq, at, step, state, progress, exit_code, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [e.runId, seq, e.at, e.step, e.state, e.progress, e.exitCode, e.message]);
    return { ...e, seq };
  }
  async events(runId: string, afterSeq = 0): Promise<RunEvent[]> {
    return (await this.#db.all<R>(`SELECT * FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq`, [runId, afterSeq])).map(ev);
  }
}
