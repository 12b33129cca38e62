/**
 * A deployment run as the management point serves it to the device running it: the task
 * sequence version it runs, the secrets visible to it (opened: device scope over the target
 * collection over site), and releasing one secret just in time to the step that references
 * it — every refusal audited. The caller has already checked the run is the device's own.
 * Also the runs as administrators see them: those of devices in their scopes.
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { Run, RunState } from "../../storage/run-store.ts";
import type { Device } from "../../domain/device.ts";
import type { CertificateRecord } from "../../storage/certificate-store.ts";
import type { VariableScope } from "../../storage/variable-store.ts";
import { SlipwayError } from "../../errors.ts";
import { secretAad } from "../secrets.ts";
import { devicePolicy } from "../policy.ts";
import { deviceVisible, scopeOf } from "../membership.ts";
import { notFound } from "./common.ts";
import { effectiveMinimum, mayReceiveSecrets, meetsAssurance } from "../../domain/assurance.ts";
import { handlesSecrets, type TaskSequenceDocument } from "../../domain/task-sequence/validate.ts";
import { stepAt } from "../../domain/task-sequence/step-at.ts";

/** The task sequence document the run runs (its pinned version). */
export async function runDocument(site: Site, run: Run): Promise<TaskSequenceDocument> {
  const v = await stores(site.db).taskSequences.version(run.taskSequenceId, run.taskSequenceVersion);
  return (v!.document as { document: TaskSequenceDocument }).document;
}

/** The scopes a run's variables come from, nearest first: device, the deployment's target collection, site. */
async function runScopes(site: Site, run: Run): Promise<[VariableScope, string][]> {
  const dep = await stores(site.db).deployments.byId(run.deploymentId);
  return [["device", run.deviceId], ["collection", dep?.collectionId ?? ""], ["site", ""]];
}

/** A secret's value as the run's device sees it (device scope over the target collection over site), opened; null if none is set. */
export async function runSecretValue(site: Site, run: Run, name: string): Promise<string | null> {
  const s = stores(site.db);
  for (const [scope, id] of await runScopes(site, run)) {
    const v = await s.variables.byName(scope, id, name);
    if (v?.secret && v.sealed) return site.keys.keyring.open(v.sealed as never, secretAad(scope, id, name));
  }
  return null;
}

/** Every secret value visible to the run, opened — what a status message must never carry. */
export async function runSecretValues(site: Site, run: Run): Promise<string[]> {
  const s = stores(site.db);
  const out: string[] = [];
  for (const [scope, id] of await runScopes(site, run)) {
    for (const v of await s.variables.list({ scope, scopeId: id })) {
      if (v.secret && v.sealed) out.push(site.keys.keyring.open(v.sealed as never, secretAad(scope, id, v.name)));
    }
  }
  return out;
}

/**
 * Releases the secret `name` to step `step` of the device's own run, once per start of that
 * step, and audits it (secret.release). Refused, and audited as denied, when the enrollment is
 * sniffable or another of the device's, the run has ended, the deployment no longer targets
 * the device, the enrollment is below the deployment's minimum now, the step does not
 * reference the secret, no such secret is set, or it was already released for this start.
 */
export async function releaseRunSecret(site: Site, device: Device, certificate: CertificateRecord, run: Run, req: { step: string; name: string }): Promise<string> {
  const deny = async (reason: string, err?: SlipwayError) => {
    await site.audit.append({ actor: `device:${device.id}`, action: "secret.release", outcome: "denied", object: `run:${run.id}`,
      details: { step: req.step, name: req.name, reason, serial: certificate.serial, assurance: certificate.assurance } });
    return err ?? new SlipwayError("FORBIDDEN", `Not allowed: ${reason}`);
  };
  // Whatever the deployment says: a MAC and UUID anyone on the link can sniff never earn a secret.
  if (!mayReceiveSecrets(certificate.assurance)) {
    throw await deny("the enrollment is sniffable (a boot token alone)", new SlipwayError("ASSURANCE_TOO_LOW",
      "Cannot release a secret: this enrollment proved only a MAC and UUID (a boot token alone); enroll with the PXE password, an administrator's approval or media"));
  }
  if (run.enrollmentSerial === null || run.enrollmentSerial !== certificate.enrollmentSerial) {
    throw await deny("the run belongs to another enrollment of this device", new SlipwayError("NOT_YOUR_RESOURCE",
      `Not allowed: run ${run.id} was started by another enrollment of this device`));
  }
  if (run.state !== "running") throw await deny("the run is not running");
  // The deployment must still target this device on the run's boot path, enabled and in its
  // window: withdrawing it (disabling, removing the device from the collection, ending the
  // window) stops its secrets at once, not only new runs.
  const current = await devicePolicy(site, device, run.bootPath as "pxe" | "media");
  if (!current.deployments.some((x) => x.id === run.deploymentId)) {
    throw await deny("the deployment no longer targets this device (disabled, withdrawn, another boot path or outside its window)");
  }
  const doc = await runDocument(site, run);
  // The deployment's minimum now (an administrator may have raised it since the run started).
  const dep = await stores(site.db).deployments.byId(run.deploymentId);
  const minimum = dep ? effectiveMinimum(dep, handlesSecrets(doc)) : "password";
  if (!meetsAssurance(certificate.assurance, minimum)) {
    throw await deny(`enrollment assurance ${certificate.assurance} is below the deployment's minimum ${minimum}`, new SlipwayError("ASSURANCE_TOO_LOW",
      `Cannot release a secret: the deployment requires enrollment assurance ${minimum}`));
  }
  const step = stepAt(doc, req.step);
  if (!step || step.runAs?.secret !== req.name) throw await deny("that step does not reference that secret");
  const value = await runSecretValue(site, run, req.name);
  if (value === null) throw await deny("no such secret is set for this device");
  // Once per start of the step the run reported started and has not finished.
  const released = await site.db.transaction(async (tx) => {
    if (!(await stores(tx).runs.claimRelease(run.id, req.step))) return false;
    await site.audit.append({ actor: `device:${device.id}`, action: "secret.release", object: `run:${run.id}`,
      details: { step: req.step, name: req.name, serial: certificate.serial, assurance: certificate.assurance } }, tx);
    return true;
  });
  if (!released) throw await deny("the step is not the one the run reported started, or its secret was already released for this start");
  return value;
}

export type RunQuery = { device?: string; deployment?: string; state?: RunState };

/** The runs of devices in the administrator's scopes, by device (id or name), deployment and state. */
export async function listRuns(site: Site, p: Principal, q: RunQuery): Promise<Run[]> {
  const s = stores(site.db);
  let deviceId: string | undefined;
  if (q.device) deviceId = ((await s.devices.byId(q.device)) ?? (await s.devices.byName(q.device)))?.id ?? "-";
  const inScope = await scopeOf(s, p);
  return (await s.runs.list({ deviceId, deploymentId: q.deployment, state: q.state })).filter((r) => inScope(r.deviceId));
}

/** A run of a device in the administrator's scopes, with every step event in order. */
export async function getRun(site: Site, p: Principal, id: string) {
  const s = stores(site.db);
  const run = await s.runs.byId(id);
  if (!run || !(await deviceVisible(s, p, run.deviceId))) throw notFound("run", id);
  return { ...run, events: await s.runs.events(run.id) };
}
