/**
 * User state, as a device in a run sees it: the association's data key released just in time
 * to the step that needs it (capture on the source, restore on the destination), chunks stored
 * and read, the capture and the restore confirmed. Every request must come from the enrollment
 * that started the run, while the run is running, the deployment still targets the device, and
 * the run's open step is a user-state step of the right kind — the same gate as a Run As secret
 * (runs.ts), because a data key opens the most personal data Slipway touches. Refusals are
 * audited as denied.
 */
import crypto from "node:crypto";
import type { Site } from "../site.ts";
import { stores } from "../../storage/stores.ts";
import type { Association } from "../../storage/association-store.ts";
import type { Run } from "../../storage/run-store.ts";
import type { CertificateRecord } from "../../storage/certificate-store.ts";
import type { Device } from "../../domain/device.ts";
import { captureRefusal, restoreRefusal } from "../../domain/association.ts";
import { mayReceiveSecrets } from "../../domain/assurance.ts";
import { stepAt } from "../../domain/task-sequence/step-at.ts";
import type { TaskSequenceDocument } from "../../domain/task-sequence/validate.ts";
import { SlipwayError } from "../../errors.ts";
import { devicePolicy } from "../policy.ts";
import { runDocument } from "./runs.ts";
import { associationKeyAad, ensureRefreshAssociation, expireIfDue } from "./associations.ts";
import { stateStoreOf, type StateStore } from "../state-store.ts";

export type UserStateAction = "capture" | "restore";
const STEP_TYPE: Record<UserStateAction, string> = { capture: "capture-user-state", restore: "restore-user-state" };

/** What the step gets: the association, its data key (base64) and, for a capture, the new stream. */
export type UserStateGrant = {
  association: string; kind: Association["kind"]; action: UserStateAction; dataKey: string;
  streamId: string | null; chunks: number; quotaBytes: number; stateBytes: number; files: number;
};

type Caller = { device: Device; certificate: CertificateRecord };

function hasStep(doc: TaskSequenceDocument, type: string): boolean {
  const walk = (steps: unknown[]): boolean => steps.some((s) => {
    const step = s as { type?: string; steps?: unknown[] };
    return step.type === type || (Array.isArray(step.steps) && walk(step.steps));
  });
  return walk((doc as { steps?: unknown[] }).steps ?? []);
}

/** Refuses, audited as denied, unless `run` is the caller's own running run whose open step is `step`, of the given kind. */
async function gate(site: Site, c: Caller, run: Run, step: string, action: UserStateAction, object: string): Promise<TaskSequenceDocument> {
  const deny = async (reason: string, err?: SlipwayError) => {
    await site.audit.append({ actor: `device:${c.device.id}`, action: `association.${action}`, outcome: "denied", object,
      details: { run: run.id, step, reason, serial: c.certificate.serial, assurance: c.certificate.assurance } });
    return err ?? new SlipwayError("FORBIDDEN", `Not allowed: ${reason}`);
  };
  if (!mayReceiveSecrets(c.certificate.assurance)) {
    throw await deny("the enrollment is sniffable (a boot token alone)", new SlipwayError("ASSURANCE_TOO_LOW",
      "Cannot release user state: this enrollment proved only a MAC and UUID (a boot token alone); enroll with the PXE password, an administrator's approval or media"));
  }
  if (run.deviceId !== c.device.id) throw await deny("the run belongs to another device", new SlipwayError("NOT_YOUR_RESOURCE"));
  if (run.enrollmentSerial === null || run.enrollmentSerial !== c.certificate.enrollmentSerial) {
    throw await deny("the run belongs to another enrollment of this device", new SlipwayError("NOT_YOUR_RESOURCE",
      `Not allowed: run ${run.id} was started by another enrollment of this device`));
  }
  if (run.state !== "running") throw await deny("the run is not running");
  const current = await devicePolicy(site, c.device, run.bootPath as "pxe" | "media");
  if (!current.deployments.some((x) => x.id === run.deploymentId)) {
    throw await deny("the deployment no longer targets this device (disabled, withdrawn, another boot path or outside its window)");
  }
  const doc = await runDocument(site, run);
  if (stepAt(doc, step)?.type !== STEP_TYPE[action]) throw await deny(`step ${step} is not a ${STEP_TYPE[action]} step`);
  if (run.openStep !== step) throw await deny(`step ${step} is not the step the run reported started`);
  return doc;
}

/**
 * Releases the association's data key to the running user-state step (audited
 * association.key-release). A capture starts a new stream (discarding chunks of an earlier,
 * unfinished attempt); a refresh association is made when the device has none and the task
 * sequence both captures and restores.
 */
export async function grantUserState(site: Site, store: StateStore, c: Caller, run: Run, req: { step: string; action: UserStateAction; estimateBytes?: number }): Promise<UserStateGrant> {
  const doc = await gate(site, c, run, req.step, req.action, `run:${run.id}`);
  const s = stores(site.db);
  let a = await s.associations.liveFor(c.device.id);
  if (!a && req.action === "capture" && hasStep(doc, STEP_TYPE.restore)) a = await ensureRefreshAssociation(site, c.device, run.id);
  const denied = async (reason: string) => {
    await site.audit.append({ actor: `device:${c.device.id}`, action: `association.${req.action}`, outcome: "denied", object: a ? `association:${a.id}` : `run:${run.id}`,
      details: { run: run.id, step: req.step, reason, serial: c.certificate.serial } });
    return new SlipwayError("CONFLICT", `Cannot ${req.action} user state: ${reason}`);
  };
  if (!a) throw await denied(`no association names this device as its ${req.action === "capture" ? "source" : "destination"}; create one (slipway association create)`);
  const refusal = req.action === "capture" ? captureRefusal(a, c.device.id) : restoreRefusal(a, c.device.id);
  if (refusal) throw await denied(refusal);
  if (!a.sealedKey) throw await denied("its key was destroyed");
  if (await expireIfDue(site, store, a)) throw await denied("it expired: its key was destroyed");
  // A refresh gives the state back to the machine that gave it: the enrollment that captured.
  // An identity made for the device since (a revoke and a new enrollment, by an administrator
  // or anyone holding a credential) gets nothing; the state is then a Recovery Agent's to read.
  if (req.action === "restore" && a.kind === "refresh") {
    const captured = a.captureRunId ? await s.runs.byId(a.captureRunId) : undefined;
    if (!captured || captured.enrollmentSerial === null || captured.enrollmentSerial !== c.certificate.enrollmentSerial) {
      throw await denied("a refresh restores only to the enrollment that captured it; this device enrolled again since (a Recovery Agent can recover the state)");
    }
  }
  const dataKey = site.keys.keyring.open(JSON.parse(a.sealedKey), associationKeyAad(a.id));
  const now = site.now().toISOString();
  // A restore opens only the stream the capture completed: a store cannot serve another in its place.
  let streamId: string | null = req.action === "restore" ? a.streamId : null;
  if (req.action === "capture") {
    // Refused at the start, not by filling a disk: the uncompressed size is an upper bound of what is stored.
    if (req.estimateBytes !== undefined && req.estimateBytes > a.quotaBytes) {
      await denied(`the user state (${req.estimateBytes} bytes before compression) exceeds the association's quota of ${a.quotaBytes} bytes`);
      throw new SlipwayError("QUOTA_EXCEEDED", `Cannot capture user state: ${req.estimateBytes} bytes before compression exceed association ${a.id}'s quota of ${a.quotaBytes} bytes; exclude paths or raise the quota`);
    }
    streamId = crypto.randomBytes(16).toString("hex");
    // Whatever a pending association holds is an attempt nobody confirmed (even a complete
    // one whose run ended before it said so): it goes, and this attempt starts clean.
    await store.destroy(a.id);
    await store.beginStream(a.id, streamId, { expectedBytes: req.estimateBytes });
    if (!(await s.associations.beginCapture(a.id, streamId, run.id, now))) throw await denied("the association changed meanwhile");
  } else if (!(await s.associations.beginRestore(a.id, run.id, now))) {
    throw await denied("the association changed meanwhile");
  }
  await site.audit.append({ actor: `device:${c.device.id}`, action: "association.key-release", object: `association:${a.id}`,
    details: { run: run.id, step: req.step, for: req.action, serial: c.certificate.serial, assurance: c.certificate.assurance } });
  return {
    association: a.id, kind: a.kind, action: req.action, dataKey, streamId, chunks: a.chunks, quotaBytes: a.quotaBytes,
    stateBytes: a.stateBytes, files: a.files,
  };
}

/** The association a chunk request names, with its run checked like a grant. */
async function current(site: Site, c: Caller, associationId: string, action: UserStateAction): Promise<Association> {
  const s = stores(site.db);
  const a = await s.associations.byId(associationId);
  const object = `association:${associationId}`;
  const end = action === "capture" ? a?.sourceDeviceId : a?.destinationDeviceId;
  if (!a || end !== c.device.id) {
    await site.audit.append({ actor: `device:${c.device.id}`, action: `association.${action}`, outcome: "denied", object,
      details: { reason: a ? `the device is not the association's ${action === "capture" ? "source" : "destination"}` : "no such association", serial: c.certificate.serial } });
    throw new SlipwayError("NOT_YOUR_RESOURCE", `Not allowed: association ${associationId} does not name this device as its ${action === "capture" ? "source" : "destination"}`);
  }
  const conflict = async (why: string) => {
    await site.audit.append({ actor: `device:${c.device.id}`, action: `association.${action}`, outcome: "denied", object, details: { reason: why, serial: c.certificate.serial } });
    return new SlipwayError("CONFLICT", `Cannot ${action} user state of association ${a.id}: ${why}`);
  };
  const runId = action === "capture" ? a.captureRunId : a.restoreRunId;
  const run = runId ? await s.runs.byId(runId) : undefined;
  if (!run) throw await conflict("no running step holds its key (ask for it first)");
  await gate(site, c, run, run.openStep ?? "", action, object);
  const refusal = action === "capture" ? captureRefusal(a, c.device.id) : restoreRefusal(a, c.device.id);
  if (refusal) throw await conflict(refusal);
  if (await expireIfDue(site, stateStoreOf(site), a)) throw await conflict("it expired: its key was destroyed");
  return a;
}

/** Stores one sealed chunk of the capture under way (durable before this resolves). */
export async function putStateChunk(site: Site, store: StateStore, c: Caller, associationId: string, index: number, bytes: Buffer): Promise<{ index: number; stored: number }> {
  const a = await current(site, c, associationId, "capture");
  await store.put(a.id, a.streamId!, index, bytes, a.quotaBytes);
  return { index, stored: bytes.length };
}

/** Ends the capture: every chunk up to the final one is stored; the association is captured (audited). */
export async function completeCapture(site: Site, store: StateStore, c: Caller, associationId: string, req: { files: number; stateBytes: number }): Promise<{ chunks: number; storedBytes: number }> {
  const a = await current(site, c, associationId, "capture");
  const done = await store.complete(a.id, a.streamId!);
  const now = site.now().toISOString();
  await site.db.transaction(async (tx) => {
    if (!(await stores(tx).associations.markCaptured(a.id, a.streamId!, { chunks: done.chunks, storedBytes: done.storedBytes, stateBytes: req.stateBytes, files: req.files }, now))) {
      throw new SlipwayError("CONFLICT", `Cannot complete the capture of association ${a.id}: it changed meanwhile`);
    }
    await site.audit.append({ actor: `device:${c.device.id}`, action: "association.capture", object: `association:${a.id}`,
      details: { run: a.captureRunId, chunks: done.chunks, storedBytes: done.storedBytes, stateBytes: req.stateBytes, files: req.files } }, tx);
  });
  return done;
}

/** One stored chunk, for the restore under way. */
export async function readStateChunk(site: Site, store: StateStore, c: Caller, associationId: string, index: number): Promise<Buffer> {
  const a = await current(site, c, associationId, "restore");
  if (index >= a.chunks) throw new SlipwayError("NOT_FOUND", `Association ${a.id} has ${a.chunks} chunks; there is no chunk ${index}`);
  return store.read(a.id, index);
}

/** The destination verified its restore: the "delete after" clock starts (audited). */
export async function confirmRestore(site: Site, c: Caller, associationId: string, req: { files: number; notRestored: number }): Promise<{ deleteAt: string }> {
  const a = await current(site, c, associationId, "restore");
  const now = site.now();
  const deleteAt = new Date(now.getTime() + a.deleteAfterSeconds * 1000).toISOString();
  await site.db.transaction(async (tx) => {
    if (!(await stores(tx).associations.markRestored(a.id, deleteAt, now.toISOString()))) throw new SlipwayError("CONFLICT", `Cannot confirm the restore of association ${a.id}: it changed meanwhile`);
    await site.audit.append({ actor: `device:${c.device.id}`, action: "association.restore", object: `association:${a.id}`,
      details: { run: a.restoreRunId, files: req.files, notRestored: req.notRestored, deleteAt } }, tx);
  });
  return { deleteAt };
}
