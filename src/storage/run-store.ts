/** Deployment runs on devices and the step events they report. */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";

export type RunState = "running" | "succeeded" | "failed" | "cancelled";
export type Run = {
  id: string; deploymentId: string; deviceId: string; bootPath: string; taskSequenceId: string; taskSequenceVersion: number;
  state: RunState; currentStep: string | null; startedAt: string; updatedAt: string; endedAt: string | null;
  /** The enrollment (serial of the certificate it issued) whose certificate chain alone may act on the run; null for runs from before. */
  enrollmentSerial: string | null;
  /** The step path reported started and not yet finished, and whether its secret was released. */
  openStep: string | null; openStepReleased: boolean;
  /** When an administrator allowed the deployment to run again after this (succeeded) run. */
  rerunAllowedAt: string | null;
};
export type RunEvent = {
  runId: string; seq: number; at: string; step: string; state: string; progress: number | null; exitCode: number | null; message: string | null;
};

type R = Record<string, unknown>;
const run = (r: R): Run => ({
  id: String(r.id), deploymentId: String(r.deployment_id), deviceId: String(r.device_id), bootPath: String(r.boot_path),
  taskSequenceId: String(r.task_sequence_id), taskSequenceVersion: Number(r.task_sequence_version), state: String(r.state) as RunState,
  currentStep: (r.current_step as string | null) ?? null, startedAt: String(r.started_at), updatedAt: String(r.updated_at),
  endedAt: (r.ended_at as string | null) ?? null, enrollmentSerial: (r.enrollment_serial as string | null) ?? null,
  openStep: (r.open_step as string | null) ?? null, openStepReleased: Number(r.open_step_released ?? 0) === 1,
  rerunAllowedAt: (r.rerun_allowed_at as string | null) ?? null,
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
  async start(r: Omit<Run, "id" | "state" | "currentStep" | "updatedAt" | "endedAt" | "openStep" | "openStepReleased" | "rerunAllowedAt">): Promise<Run> {
    const id = randomUUID();
    await this.#db.run(
      `INSERT INTO deployment_runs (id, deployment_id, device_id, boot_path, task_sequence_id, task_sequence_version, state,
         current_step, started_at, updated_at, ended_at, enrollment_serial) VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, ?, ?, NULL, ?)`,
      [id, r.deploymentId, r.deviceId, r.bootPath, r.taskSequenceId, r.taskSequenceVersion, r.startedAt, r.startedAt, r.enrollmentSerial]);
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
  /**
   * Records a step's start (`open` a path: its secret not yet released) or end (`close` a path:
   * nothing open, if that path was the open one).
   */
  async setOpenStep(id: string, change: { open: string } | { close: string }): Promise<void> {
    if ("open" in change) await this.#db.run(`UPDATE deployment_runs SET open_step = ?, open_step_released = 0 WHERE id = ?`, [change.open, id]);
    else await this.#db.run(`UPDATE deployment_runs SET open_step = NULL, open_step_released = 0 WHERE id = ? AND open_step = ?`, [id, change.close]);
  }
  /**
   * Claims the one secret release of the step started last, atomically: true only if the run
   * is running, `step` is its open step and nothing was released for this start of it yet.
   */
  async claimRelease(id: string, step: string): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE deployment_runs SET open_step_released = 1 WHERE id = ? AND state = 'running' AND open_step = ? AND open_step_released = 0`,
      [id, step])).changes === 1;
  }
  /** Ends a running run (only a running one); whether it did. */
  async end(id: string, state: Exclude<RunState, "running">, now: string): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE deployment_runs SET state = ?, ended_at = ?, current_step = NULL, open_step = NULL, updated_at = ? WHERE id = ? AND state = 'running'`,
      [state, now, now, id])).changes === 1;
  }
  /** Lets a device's succeeded runs of a deployment be run again (an administrator's decision); how many it marked. */
  async allowRerun(deviceId: string, deploymentId: string, now: string): Promise<number> {
    return (await this.#db.run(
      `UPDATE deployment_runs SET rerun_allowed_at = ? WHERE device_id = ? AND deployment_id = ? AND state = 'succeeded' AND rerun_allowed_at IS NULL`,
      [now, deviceId, deploymentId])).changes;
  }
  /** Whether the device finished the deployment (a succeeded run no administrator has released for a rerun). */
  async finished(deviceId: string, deploymentId: string): Promise<boolean> {
    return (await this.#db.get<R>(
      `SELECT 1 AS x FROM deployment_runs WHERE device_id = ? AND deployment_id = ? AND state = 'succeeded' AND rerun_allowed_at IS NULL LIMIT 1`,
      [deviceId, deploymentId])) !== undefined;
  }
  async addEvent(e: Omit<RunEvent, "seq">): Promise<RunEvent> {
    const last = await this.#db.get<{ m: number | null }>(`SELECT MAX(seq) AS m FROM run_events WHERE run_id = ?`, [e.runId]);
    const seq = Number(last?.m ?? 0) + 1;
    await this.#db.run(`INSERT INTO run_events (run_id, seq, at, step, state, progress, exit_code, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [e.runId, seq, e.at, e.step, e.state, e.progress, e.exitCode, e.message]);
    return { ...e, seq };
  }
  /** Deletes the step output (events) of runs that ended before `endedBefore`; the runs stay (a finished required deployment stays finished). */
  async purgeEvents(endedBefore: string): Promise<number> {
    return (await this.#db.run(
      `DELETE FROM run_events WHERE run_id IN (SELECT id FROM deployment_runs WHERE state <> 'running' AND ended_at IS NOT NULL AND ended_at < ?)`,
      [endedBefore])).changes;
  }
  /** How many events (log lines) a run holds. */
  async eventCount(runId: string): Promise<number> {
    const r = await this.#db.get<{ n: number | string }>(`SELECT COUNT(*) AS n FROM run_events WHERE run_id = ?`, [runId]);
    return Number(r?.n ?? 0);
  }
  async events(runId: string, afterSeq = 0): Promise<RunEvent[]> {
    return (await this.#db.all<R>(`SELECT * FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq`, [runId, afterSeq])).map(ev);
  }
}
