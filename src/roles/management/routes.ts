/**
 * The management point's API (`/mp/v1`), spoken by agents over mutual TLS. Enrollment and
 * the CRL are the only routes without a device certificate; every other route acts on the
 * calling device's own resources and answers 403 for another device's. (Distribution points
 * have routes of their own under `/mp/v1/dp`, in dp-routes.ts.)
 */
import { z } from "zod";
import { routeOf, type Route, type RequestContext } from "../pipeline.ts";
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import { issueClientCertificate, CertificateRequestError } from "../../security/ca.ts";
import { releaseRunSecret, runDocument, runSecretValues } from "../../site/services/runs.ts";
import { stepAt } from "../../domain/task-sequence/step-at.ts";
import type { Run } from "../../storage/run-store.ts";
import { EnrollBody, enroll, DEVICE_CERT_DAYS } from "./enroll.ts";
import { ChallengeBody, tpmChallenge } from "./tpm-enroll.ts";
import { devicePolicy, signedDevicePolicy } from "../../site/policy.ts";
import type { DevicePrincipal, MpPrincipal } from "./device-auth.ts";
import { currentCrl } from "../../site/crl.ts";
import { RateLimiter } from "../../site/auth.ts";
import { maskSecrets } from "../../domain/mask.ts";
import { effectiveMinimum, meetsAssurance } from "../../domain/assurance.ts";
import { handlesSecrets, type TaskSequenceDocument } from "../../domain/task-sequence/validate.ts";

/** Which kind of client certificate a route takes: a device's, or a distribution point's. */
export type MpAccess = "device" | "dp";
export type MpRoute = Route<MpAccess, MpPrincipal>;
/** Defines a management point route; its handler is typed from its path and schemas (pipeline.ts). */
export const mpRoute = routeOf<MpAccess, MpPrincipal>();
/** A management point request, for helpers that need only who is calling (and the path parameters P). */
type Ctx<P = Record<never, string>> = RequestContext<unknown, unknown, MpPrincipal, P>;

const BootPath = z.enum(["pxe", "media"]);
const MAX_LOG_BYTES = 8 * 1024;

/** The calling device (the server's authorize hook already refused every other caller on device routes). */
export function me(ctx: Ctx): DevicePrincipal {
  if (ctx.principal?.kind !== "device") throw new SlipwayError("CERTIFICATE_REQUIRED");
  return ctx.principal;
}

export function managementRoutes(site: Site): MpRoute[] {
  // Enrollment does Argon2 work for the PXE password: bound how often one address may try.
  const enrollLimiter = new RateLimiter(120, 60_000, () => site.now().getTime());
  async function ownRun(ctx: Ctx, id: string): Promise<Run> {
    const run = await stores(site.db).runs.byId(id);
    if (!run) throw new SlipwayError("NOT_FOUND", `Cannot find run "${id}"`);
    if (run.deviceId !== me(ctx).device.id) {
      await site.audit.append({ actor: `device:${me(ctx).device.id}`, action: "mp.denied", outcome: "denied", object: `run:${run.id}`, details: { path: ctx.path } });
      throw new SlipwayError("NOT_YOUR_RESOURCE");
    }
    return run;
  }
  /**
   * The calling device's run, if the calling certificate may act on it: a run belongs to the
   * enrollment that started it (its certificate and that certificate's renewals). Another
   * certificate of the same device — an impostor's, or the real machine's after an impostor
   * enrolled — gets 403, audited.
   */
  async function ownedRun(ctx: Ctx, id: string, action: string): Promise<Run> {
    const run = await ownRun(ctx, id);
    const { device, certificate } = me(ctx);
    if (run.enrollmentSerial === null || run.enrollmentSerial !== certificate.enrollmentSerial) {
      await site.audit.append({ actor: `device:${device.id}`, action, outcome: "denied", object: `run:${run.id}`,
        details: { reason: "the run belongs to another enrollment of this device", serial: certificate.serial, runEnrollment: run.enrollmentSerial } });
      throw new SlipwayError("NOT_YOUR_RESOURCE", `Not allowed: run ${run.id} was started by another enrollment of this device`);
    }
    return run;
  }
  return [
    mpRoute({
      method: "POST", path: "/mp/v1/enroll", access: "public", tag: "enrollment",
      summary: "Enroll with a boot token, media credential or pre-approval; returns a client certificate", body: EnrollBody,
      handler: async (ctx) => {
        if (!enrollLimiter.hit(ctx.ip)) throw new SlipwayError("RATE_LIMITED", "Cannot enroll: too many attempts from this address; wait a minute");
        return { status: 201, body: await enroll(site, ctx.body, ctx.ip) };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/enroll/tpm-challenge", access: "public", tag: "enrollment",
      summary: "A TPM challenge for a machine with a boot token: a credential only the TPM holding its endorsement key recovers (null when that EK cannot help: another one is on record)",
      body: ChallengeBody,
      handler: async (ctx) => {
        if (!enrollLimiter.hit(ctx.ip)) throw new SlipwayError("RATE_LIMITED", "Cannot make a TPM challenge: too many attempts from this address; wait a minute");
        return { body: await tpmChallenge(site, ctx.body) };
      },
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/crl", access: "public", tag: "enrollment", summary: "The site CA's certificate revocation list (PEM)",
      handler: async () => ({ body: { pem: await currentCrl(site) } }),
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/renew", access: "device", tag: "enrollment", summary: "Renew the device certificate with a new key; the certificate presented is superseded (revoked, in the CRL)",
      body: z.strictObject({ csr: z.string().min(100).max(16 * 1024) }),
      handler: async (ctx) => {
        const { device, certificate } = me(ctx);
        const now = site.now().toISOString();
        const refuse = async (reason: string, err: SlipwayError) => {
          await site.audit.append({ actor: `device:${device.id}`, action: "device.renew", outcome: "denied", object: `device:${device.id}`,
            details: { serial: certificate.serial, reason } });
          return err;
        };
        // Renewal carries on an identity the device holds now; it never extends one that an
        // administrator withdrew (an unapproved device's certificate runs out and is not renewed).
        if (device.state !== "approved") throw await refuse("device not approved", new SlipwayError("DEVICE_BLOCKED", "Cannot renew: the device is not approved"));
        let issued;
        try {
          issued = await issueClientCertificate(site.keys.ca, { csrPem: ctx.body.csr, commonName: `device:${device.id}`, uri: `urn:slipway:device:${device.id}`, validDays: DEVICE_CERT_DAYS, now: site.now() });
        } catch (err) {
          if (err instanceof CertificateRequestError) throw new SlipwayError("CSR_INVALID", `The certificate request is not valid: ${err.message}`);
          throw err;
        }
        // The new certificate supersedes the one it was proven with, in the same transaction:
        // a stolen certificate renews at most once, and then neither it nor the thief's
        // renewal outlives the device's next enrollment. Only an active certificate can be
        // superseded, so of two renewals racing with one certificate only one wins.
        const outcome = await site.db.transaction(async (tx) => {
          const t = stores(tx);
          if ((await t.devices.byId(device.id))?.state !== "approved") return "device not approved";
          if (!(await t.certificates.supersede(certificate.serial, now))) return "certificate already superseded or no longer active";
          await t.certificates.add({ serial: issued.serial, fingerprint: issued.fingerprint, kind: "device", deviceId: device.id, subject: `device:${device.id}`,
            notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString(), issuedVia: `renewal:${certificate.serial}`, createdAt: now,
            // A renewal chain carries its enrollment's assurance, never more.
            assurance: certificate.assurance, enrollmentSerial: certificate.enrollmentSerial });
          await site.audit.append({ actor: `device:${device.id}`, action: "device.renew", object: `device:${device.id}`,
            details: { serial: issued.serial, previous: certificate.serial, superseded: certificate.serial, assurance: certificate.assurance } }, tx);
          return null;
        });
        if (outcome) throw await refuse(outcome, new SlipwayError("DEVICE_BLOCKED", `Cannot renew: ${outcome === "device not approved" ? "the device is not approved"
          : `certificate ${certificate.serial} is no longer active (renewed already, blocked or revoked)`}`));
        return { status: 201, body: { certificate: issued.certPem, serial: issued.serial, expiresAt: issued.notAfter.toISOString() } };
      },
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/policy", access: "device", tag: "policy", summary: "The calling device's signed policy",
      query: z.object({ bootPath: BootPath.default("pxe") }),
      handler: async (ctx) => ({ body: await signedDevicePolicy(site, me(ctx).device, ctx.query.bootPath, me(ctx).certificate.assurance) }),
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/devices/:id/policy", access: "device", tag: "policy", summary: "A device's signed policy (only its own)",
      query: z.object({ bootPath: BootPath.default("pxe") }),
      handler: async (ctx) => {
        const { device } = me(ctx);
        if (ctx.params.id !== device.id) {
          await site.audit.append({ actor: `device:${device.id}`, action: "mp.denied", outcome: "denied", object: `device:${ctx.params.id}`, details: { path: ctx.path } });
          throw new SlipwayError("NOT_YOUR_RESOURCE");
        }
        return { body: await signedDevicePolicy(site, device, ctx.query.bootPath, me(ctx).certificate.assurance) };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/runs", access: "device", tag: "runs", summary: "Start (or resume) a deployment from the device's policy",
      body: z.strictObject({ deployment: z.string().min(1).max(100), bootPath: BootPath }),
      handler: async (ctx) => {
        const { device, certificate } = me(ctx);
        const policy = await devicePolicy(site, device, ctx.body.bootPath);
        const d = policy.deployments.find((x) => x.id === ctx.body.deployment);
        if (!d) throw new SlipwayError("NOT_FOUND", `Deployment "${ctx.body.deployment}" is not in this device's policy`);
        const deny = async (reason: string, err: SlipwayError) => {
          await site.audit.append({ actor: `device:${device.id}`, action: "run.start", outcome: "denied", object: `deployment:${d.id}`,
            details: { reason, serial: certificate.serial, assurance: certificate.assurance } });
          return err;
        };
        // The policy this certificate gets leaves the deployment out when its enrollment is not sure enough.
        const record = await stores(site.db).deployments.byId(d.id);
        const minimum = record ? effectiveMinimum(record, handlesSecrets(d.taskSequence.document as TaskSequenceDocument)) : "password";
        if (!meetsAssurance(certificate.assurance, minimum)) {
          throw await deny(`enrollment assurance ${certificate.assurance} is below the deployment's minimum ${minimum}`, new SlipwayError("ASSURANCE_TOO_LOW",
            `Cannot start deployment "${d.name}": it requires enrollment assurance ${minimum}, this enrollment is ${certificate.assurance}; enroll with the PXE password, an administrator's approval or media`));
        }
        const outcome = await site.db.transaction(async (tx) => {
          const t = stores(tx);
          const now = site.now().toISOString();
          // A required deployment the device finished stays finished: running it again (and
          // getting its secrets again) is an administrator's decision (POST /api/v1/deployments/:id/rerun).
          if (d.purpose === "required" && (await t.runs.finished(device.id, d.id))) return "finished" as const;
          for (const r of await t.runs.list({ deviceId: device.id, deploymentId: d.id, state: "running" })) {
            if (r.enrollmentSerial === certificate.enrollmentSerial) return { resumed: r };
            // A run of an earlier enrollment (superseded, so it can no longer act): this
            // enrollment's run replaces it.
            if (await t.runs.end(r.id, "cancelled", now)) {
              await site.audit.append({ actor: `device:${device.id}`, action: "run.cancel", object: `run:${r.id}`,
                details: { reason: "replaced by a run of a newer enrollment of the device", enrollment: r.enrollmentSerial, by: certificate.enrollmentSerial } }, tx);
            }
          }
          const r = await t.runs.start({ deploymentId: d.id, deviceId: device.id, bootPath: ctx.body.bootPath,
            taskSequenceId: d.taskSequence.id, taskSequenceVersion: d.taskSequence.version, startedAt: now, enrollmentSerial: certificate.enrollmentSerial });
          await site.audit.append({ actor: `device:${device.id}`, action: "run.start", object: `run:${r.id}`,
            details: { deployment: d.id, serial: certificate.serial, assurance: certificate.assurance } }, tx);
          return { started: r };
        });
        if (outcome === "finished") {
          throw await deny("the required deployment already succeeded on this device", new SlipwayError("CONFLICT",
            `Cannot start deployment "${d.name}" again: it already succeeded on this device; an administrator must allow a rerun`));
        }
        return "resumed" in outcome ? { body: outcome.resumed } : { status: 201, body: outcome.started };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/runs/:id/events", access: "device", tag: "runs",
      summary: "Report a step's status (started, progress, succeeded, failed, skipped) or the run's end (step \"\")",
      body: z.strictObject({
        step: z.string().max(100), name: z.string().max(200).optional(),
        state: z.enum(["started", "progress", "succeeded", "failed", "skipped"]),
        progress: z.int().min(0).max(100).optional(), exitCode: z.int().min(-2147483648).max(2147483647).optional(),
        message: z.string().max(64 * 1024).optional(),
      }),
      handler: async (ctx) => {
        const run = await ownedRun(ctx, ctx.params.id, "run.report");
        if (run.state !== "running") throw new SlipwayError("CONFLICT", `Run ${run.id} has ended (${run.state})`);
        const b = ctx.body;
        // Mask any secret this run could have received, whatever the agent did or did not mask —
        // taken from the run's own scopes, so it holds even if the deployment left the policy.
        const doc = await runDocument(site, run);
        const secrets = await runSecretValues(site, run);
        let message = b.message === undefined ? null : maskSecrets(b.message, secrets);
        if (message && Buffer.byteLength(message) > MAX_LOG_BYTES) message = message.slice(-MAX_LOG_BYTES);
        // The step's name comes from the device too: masked like the message (b.step is an index path).
        const name = b.name === undefined ? undefined : maskSecrets(b.name, secrets);
        const label = b.step === "" ? "(run)" : `${b.step}${name ? ` ${name}` : ""}`;
        if (b.step !== "" && !stepAt(doc, b.step)) throw new SlipwayError("VALIDATION", `Step "${b.step}" is not in the task sequence`);
        const now = site.now().toISOString();
        const ev = await site.db.transaction(async (tx) => {
          const t = stores(tx);
          if (b.step === "" && (b.state === "succeeded" || b.state === "failed")) {
            // Only a running run ends, once: a run cancelled or ended meanwhile stays as it is.
            if (!(await t.runs.end(run.id, b.state, now))) return null;
            await site.audit.append({ actor: `device:${run.deviceId}`, action: "run.end", object: `run:${run.id}`, outcome: b.state === "succeeded" ? "success" : "failure",
              details: { exitCode: b.exitCode ?? null, serial: me(ctx).certificate.serial } }, tx);
          } else if (b.step !== "") {
            await t.runs.update(run.id, { currentStep: label }, now);
            // A secret goes only to the step last reported started and not yet finished.
            if (b.state === "started") await t.runs.setOpenStep(run.id, { open: b.step });
            else if (b.state !== "progress") await t.runs.setOpenStep(run.id, { close: b.step });
          }
          return t.runs.addEvent({ runId: run.id, at: now, step: label, state: b.state, progress: b.progress ?? null, exitCode: b.exitCode ?? null, message });
        });
        if (!ev) throw new SlipwayError("CONFLICT", `Run ${run.id} has ended`);
        return { status: 201, body: ev };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/runs/:id/secrets", access: "device", tag: "runs",
      summary: "Release a secret just in time to the running step that references it",
      body: z.strictObject({ step: z.string().max(100), name: z.string().max(128) }),
      handler: async (ctx) => {
        const run = await ownRun(ctx, ctx.params.id);
        const { device, certificate } = me(ctx);
        return { body: { name: ctx.body.name, value: await releaseRunSecret(site, device, certificate, run, ctx.body) } };
      },
    }),
  ];
}
