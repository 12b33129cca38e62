/**
 * What distribution points ask the management point (`/mp/v1/dp`), over mutual TLS with their
 * own client certificates — never a device's: enrollment (public, with the one-time secret,
 * rate-limited), renewal, the site's public signing key and CRL, their assigned manifests and
 * those manifests' chunks, replication status, whether a device may have a manifest, and the
 * site's trust generation (polled every second: when it changes, a block, revocation, deletion
 * or removal happened, and the distribution point drops every answer it kept). The chunks
 * travel as they are on disk: the distribution point checks each against the signed manifest
 * before it stores it.
 */
import fs from "node:fs";
import { z } from "zod";
import { mpRoute, type MpRoute } from "./routes.ts";
import type { RequestContext } from "../pipeline.ts";
import type { Site } from "../../site/site.ts";
import type { DpPrincipal, MpPrincipal } from "./device-auth.ts";
import { stores } from "../../storage/stores.ts";
import { BlobStore } from "../../content/blob-store.ts";
import { SlipwayError, type ErrorCode } from "../../errors.ts";
import { RateLimiter } from "../../site/auth.ts";
import { publicKeyFingerprint } from "../../security/signing.ts";
import { isManifestDigest } from "../../content/manifest.ts";
import { currentCrl } from "../../site/crl.ts";
import { policyNamesContent } from "./content-routes.ts";
import { DpEnrollBody, DpRenewBody, enrollDistributionPoint, renewDistributionPoint } from "../../site/dp-enroll.ts";
import { trustGeneration } from "../../storage/trust-generation.ts";

type Ctx = RequestContext<unknown, unknown, MpPrincipal>;

const Digest = z.string().max(100).refine(isManifestDigest, 'a content digest is "sha256:" and 64 lowercase hex digits');
const TOUCH_EVERY_MS = 60_000;

/** The calling distribution point (the server's authorize hook refused every other caller on these routes). */
function dpOf(ctx: Ctx): DpPrincipal {
  if (ctx.principal?.kind !== "dp") throw new SlipwayError("CERTIFICATE_REQUIRED");
  return ctx.principal;
}

export function distributionPointRoutes(site: Site): MpRoute[] {
  // A guessed secret costs little to check, but there is no reason to let anyone try often.
  const enrollLimiter = new RateLimiter(20, 60_000, () => site.now().getTime());
  const blobs = new BlobStore(site.dataDir);

  /** The calling distribution point's assignment of a manifest, and the manifest. */
  async function assigned(ctx: Ctx, digest: string) {
    const { dp } = dpOf(ctx);
    const s = stores(site.db);
    const a = await s.distributionPoints.assignment(dp.id, digest);
    const record = a && (await s.content.byDigest(digest));
    if (!a || !record) throw new SlipwayError("NOT_FOUND", `Content ${digest} is not assigned to distribution point "${dp.name}"`);
    return { dp, assignment: a, record };
  }

  const routes: MpRoute[] = [
    mpRoute({
      method: "POST", path: "/mp/v1/dp/enroll", access: "public", tag: "distribution-points", body: DpEnrollBody,
      summary: "Enroll a registered distribution point with its one-time secret: a client and a server certificate",
      handler: async (ctx) => {
        if (!enrollLimiter.hit(ctx.ip)) throw new SlipwayError("RATE_LIMITED", "Cannot enroll: too many attempts from this address; wait a minute");
        return { status: 201, body: await enrollDistributionPoint(site, ctx.body, ctx.ip) };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/dp/renew", access: "dp", tag: "distribution-points", body: DpRenewBody,
      summary: "New client and server certificates for new keys, before the current ones expire",
      handler: async (ctx) => {
        const { dp, certificate } = dpOf(ctx);
        return { status: 201, body: await renewDistributionPoint(site, dp, certificate.serial, ctx.body, ctx.ip) };
      },
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/dp/site", access: "dp", tag: "distribution-points",
      summary: "The site's public signing key (to verify manifests) and its CRL (to refuse revoked device certificates)",
      handler: async (ctx) => {
        const { dp } = dpOf(ctx);
        return {
          body: {
            signingKey: site.keys.verifyKey.export({ type: "spki", format: "pem" }).toString(),
            signingKeyFingerprint: publicKeyFingerprint(site.keys.verifyKey),
            crl: await currentCrl(site),
            distributionPoint: { id: dp.id, name: dp.name, url: dp.url, hostNames: dp.hostNames },
          },
        };
      },
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/dp/assignments", access: "dp", tag: "distribution-points",
      summary: "The signed manifests assigned to the calling distribution point, with their last reported state",
      handler: async (ctx) => {
        const { dp } = dpOf(ctx);
        const s = stores(site.db);
        const out = [];
        for (const a of await s.distributionPoints.assignments(dp.id)) {
          const record = await s.content.byDigest(a.digest);
          if (record) out.push({ digest: a.digest, name: record.name, state: a.state, message: a.message, signed: record.signed });
        }
        return { body: out };
      },
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/dp/content/:digest/chunks/:sha256", access: "dp", tag: "distribution-points",
      summary: "One chunk of an assigned manifest, as stored on the site (the distribution point verifies it)",
      handler: async (ctx) => {
        if (!isManifestDigest(ctx.params.digest) || !/^[0-9a-f]{64}$/.test(ctx.params.sha256)) {
          throw new SlipwayError("BAD_REQUEST", "Cannot find the chunk: name a content digest and a chunk's SHA-256 (64 lowercase hex digits)");
        }
        const { record } = await assigned(ctx, ctx.params.digest);
        if (!record.signed.manifest.chunks.some((c) => c.sha256 === ctx.params.sha256)) {
          throw new SlipwayError("NOT_FOUND", `Content ${record.digest} lists no chunk ${ctx.params.sha256}`);
        }
        const file = blobs.pathOf(ctx.params.sha256);
        let size: number;
        try {
          size = (await fs.promises.stat(file)).size;
        } catch {
          throw new SlipwayError("NOT_FOUND", `Chunk ${ctx.params.sha256} is missing from the site's content store`);
        }
        return {
          headers: { "content-type": "application/octet-stream", "content-length": String(size) },
          stream: fs.createReadStream(file, { highWaterMark: 256 * 1024 }),
        };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/dp/status", access: "dp", tag: "distribution-points",
      summary: "Report an assigned manifest's replication state: replicating, ready or failed (with why)",
      body: z.strictObject({ digest: Digest, state: z.enum(["replicating", "ready", "failed"]), message: z.string().max(2000).optional() }),
      handler: async (ctx) => {
        const { dp, assignment } = await assigned(ctx, ctx.body.digest);
        const message = ctx.body.message ?? null;
        if (assignment.state === ctx.body.state && assignment.message === message) return {};
        const now = site.now().toISOString();
        await site.db.transaction(async (tx) => {
          await stores(tx).distributionPoints.setState(dp.id, assignment.digest, ctx.body.state, message, now);
          if (assignment.state !== ctx.body.state) {
            await site.audit.append({ actor: `dp:${dp.id}`, action: "dp.replication", outcome: ctx.body.state === "failed" ? "failure" : "success",
              object: `content:${assignment.digest}`, details: { dp: dp.name, state: ctx.body.state, previous: assignment.state, message } }, tx);
          }
        });
        return {};
      },
    }),
    mpRoute({
      method: "GET", path: "/mp/v1/dp/trust", access: "dp", tag: "distribution-points",
      summary: "The site's trust generation: it changes with every block, revocation, device deletion and distribution point removal (a removed distribution point's certificate is refused here)",
      handler: async (ctx) => {
        dpOf(ctx);
        return { headers: { "cache-control": "no-store" }, body: { generation: await trustGeneration(site.db) } };
      },
    }),
    mpRoute({
      method: "POST", path: "/mp/v1/dp/authorize", access: "dp", tag: "distribution-points",
      summary: "Whether the device holding a certificate (by serial) may have a manifest: a current, unblocked device certificate of an approved device whose policy names it. A refusal names the error the management point itself would give; every answer carries the trust generation it was decided under",
      body: z.strictObject({ serial: z.string().regex(/^[0-9a-fA-F]{1,64}$/), fingerprint: z.string().regex(/^[0-9a-f]{64}$/).optional(), digest: Digest }),
      handler: async (ctx) => {
        const { dp } = dpOf(ctx);
        const s = stores(site.db);
        const now = site.now();
        // Read before anything it decides on: a change committed meanwhile bumps it past this
        // answer's, and the distribution point drops the answer when it sees that.
        const generation = await trustGeneration(site.db);
        const cert = await s.certificates.bySerial(ctx.body.serial);
        // The same checks, in the same order and with the same error, as the management point's own.
        const deny = async (code: ErrorCode, reason: string) => {
          await site.audit.append({ actor: cert?.deviceId ? `device:${cert.deviceId}` : `certificate:${ctx.body.serial.toLowerCase()}`, action: "content.denied", outcome: "denied",
            object: `content:${ctx.body.digest}`, details: { via: `dp:${dp.id}`, dp: dp.name, reason } });
          return { body: { allowed: false, code, reason, generation } };
        };
        if (!cert) return deny("CERTIFICATE_REQUIRED", "the certificate is unknown to this site");
        if (ctx.body.fingerprint && cert.fingerprint !== ctx.body.fingerprint) return deny("CERTIFICATE_REQUIRED", "the certificate is not the one the site issued with that serial");
        if (cert.notAfter <= now.toISOString()) return deny("CERTIFICATE_REQUIRED", "the certificate has expired");
        if (cert.status !== "active") return deny("DEVICE_BLOCKED", `the certificate is ${cert.status}`);
        if (cert.kind !== "device" || !cert.deviceId) return deny("CERTIFICATE_REQUIRED", "not a device certificate of this site");
        const device = await s.devices.byId(cert.deviceId);
        if (!device) return deny("CERTIFICATE_REQUIRED", "the certificate's device no longer exists");
        if (device.state === "blocked") return deny("DEVICE_BLOCKED", "the device is blocked");
        if (device.state !== "approved") return deny("DEVICE_BLOCKED", "the device is not approved; an administrator must approve it again");
        if (!(await s.content.byDigest(ctx.body.digest))) return deny("NOT_FOUND", "there is no such content");
        if (!(await policyNamesContent(site, device, ctx.body.digest, cert.assurance))) return deny("NOT_YOUR_RESOURCE", "this device's policy does not name that content");
        if (!cert.lastUsedAt || now.getTime() - Date.parse(cert.lastUsedAt) > TOUCH_EVERY_MS) {
          await s.certificates.touch(cert.serial, now.toISOString());
          await s.devices.update(device.id, { lastSeenAt: now.toISOString() }, now.toISOString());
        }
        return { body: { allowed: true, deviceId: device.id, generation } };
      },
    }),
  ];
  return routes;
}
