/**
 * Device identities as administrators see them: the certificate inventory, blocking and
 * revocation (published in the CRL), enrollment credentials for boot media, the PXE
 * password, deployment runs and what a device's policy would hold. Issuing and revoking are
 * the Security Administrator's (certificate.* and enrollment.write); a Deployment
 * Administrator can do none of it.
 *
 * Revoking a device's certificate, for any reason, also blocks the device: a revoked identity
 * never comes back by itself — no boot token, media credential or pre-approval enrolls the
 * device again until an administrator approves it (POST /api/v1/devices/:id/approve).
 * A scoped administrator sees and changes only the certificates of devices in its scopes;
 * another device's certificate, a distribution point's or the site's own is, for it, not
 * there (404, audited), as devices outside its scopes are.
 */
import fs from "node:fs";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import type { CertificateRecord } from "../../../storage/certificate-store.ts";
import { SlipwayError } from "../../../errors.ts";
import { fingerprintOf } from "../../../security/ca.ts";
import { passwordProblems } from "../../../security/password.ts";
import { currentCrl } from "../../../site/crl.ts";
import { createMediaCredential, setPxePassword, pxePasswordHash } from "../../../site/credentials.ts";
import { devicePolicy } from "../../../site/policy.ts";
import { computeMembership, deviceInScope, deviceVisible, scopeOf } from "../../../site/membership.ts";
import { actor, Name, notFound, principal } from "./common.ts";

const certView = (c: CertificateRecord, now: string) => ({
  serial: c.serial, kind: c.kind, device: c.deviceId, distributionPoint: c.dpId, subject: c.subject, fingerprint256: c.fingerprint,
  issued: c.createdAt, notBefore: c.notBefore, expires: c.notAfter, expired: c.notAfter <= now,
  status: c.status, statusChangedAt: c.statusChangedAt, reason: c.statusReason, issuedVia: c.issuedVia, lastUsedAt: c.lastUsedAt,
  ...(c.kind === "device" ? { assurance: c.assurance, enrollment: c.enrollmentSerial } : {}),
});

export function identityRoutes(site: Site): Route[] {
  /** Whether the caller may see a certificate: unscoped, or a device certificate of a device in its scopes. */
  async function certificateInScope(ctx: Parameters<Route["handler"]>[0], c: CertificateRecord): Promise<boolean> {
    const p = principal(ctx);
    if (p.scopes === null) return true;
    if (c.kind !== "device" || !c.deviceId) return false;
    return deviceVisible(stores(site.db), p, c.deviceId);
  }
  const siteCert = (pem: string, role: string) => {
    const c = new X509Certificate(pem);
    return { serial: c.serialNumber.toLowerCase(), kind: role, device: null, subject: c.subject, fingerprint256: fingerprintOf(c),
      notBefore: new Date(c.validFrom).toISOString(), expires: new Date(c.validTo).toISOString(), status: "active" };
  };
  const setStatus = (action: "block" | "unblock" | "revoke"): Route => route({
    method: "POST", path: `/api/v1/certificates/:serial/${action}`, access: "certificate.revoke", tag: "certificates",
    summary: action === "revoke" ? "Revoke a certificate for good; it appears in the CRL; a device certificate's device is blocked until an administrator approves it again" : action === "block" ? "Block a certificate: refused on its next request" : "Unblock a blocked certificate",
    body: z.strictObject({ reason: z.enum(["keyCompromise", "superseded", "cessationOfOperation", "unspecified"]).default("unspecified") }),
    handler: async (ctx) => {
      const s = stores(site.db);
      const c = await s.certificates.bySerial(ctx.params.serial);
      if (!c) throw notFound("certificate", ctx.params.serial);
      if (!(await certificateInScope(ctx, c))) {
        await site.audit.append({ actor: actor(ctx), action: `certificate.${action}`, outcome: "denied", object: `certificate:${c.serial}`, details: { device: c.deviceId, reason: "out of scope" } });
        throw notFound("certificate", ctx.params.serial);
      }
      if (c.status === "revoked") throw new SlipwayError("CONFLICT", `Certificate ${c.serial} is revoked; revocation is final`);
      if (action === "unblock" && c.status !== "blocked") throw new SlipwayError("CONFLICT", `Certificate ${c.serial} is not blocked`);
      const status = action === "revoke" ? "revoked" : action === "block" ? "blocked" : "active";
      const now = site.now().toISOString();
      await site.db.transaction(async (tx) => {
        const t = stores(tx);
        await t.certificates.setStatus(c.serial, status, action === "unblock" ? null : ctx.body.reason, now);
        await site.audit.append({ actor: actor(ctx), action: `certificate.${action}`, object: `certificate:${c.serial}`, details: { device: c.deviceId, reason: ctx.body.reason } }, tx);
        const d = action === "revoke" && c.kind === "device" && c.deviceId ? await t.devices.byId(c.deviceId) : undefined;
        if (d) {
          // Strict reading: whatever the reason, the device needs an administrator's new approval.
          if (d.state !== "blocked") await t.devices.update(d.id, { state: "blocked" }, now);
          await t.devices.setPreApproval(d.id, false);
          await site.audit.append({ actor: actor(ctx), action: "device.block", object: `device:${d.id}`,
            details: { name: d.name, from: d.state, to: "blocked", reason: `certificate ${c.serial} revoked (${ctx.body.reason}); approve the device to let it enroll again` } }, tx);
        }
      });
      return { body: certView((await s.certificates.bySerial(c.serial))!, now) };
    },
  });

  return [
    route({
      method: "GET", path: "/api/v1/certificates", access: "certificate.read", tag: "certificates",
      summary: "Certificate inventory: the site's own and every device certificate (issued, expires, status, last used)",
      query: z.object({ device: z.string().max(200).optional(), status: z.enum(["active", "blocked", "revoked"]).optional() }),
      handler: async (ctx) => {
        const s = stores(site.db);
        const q = ctx.query;
        const p = principal(ctx);
        const m = p.scopes === null ? null : await computeMembership(s);
        const inScope = (deviceId: string | null) => m === null || (deviceId !== null && deviceInScope(p, m, deviceId));
        let deviceId: string | undefined;
        if (q.device) {
          const d = (await s.devices.byId(q.device)) ?? (await s.devices.byName(q.device));
          if (!d) throw notFound("device", q.device);
          if (!inScope(d.id)) {
            await site.audit.append({ actor: actor(ctx), action: "certificate.read", outcome: "denied", object: `device:${d.id}`, details: { reason: "out of scope" } });
            throw notFound("device", q.device);
          }
          deviceId = d.id;
        }
        const now = site.now().toISOString();
        const own = [];
        // The site's own certificates and distribution points' are only for unscoped administrators.
        if (m === null && !deviceId && (!q.status || q.status === "active")) {
          own.push(siteCert(site.keys.ca.certPem, "site-ca"));
          const server = path.join(site.dataDir, "keys", "server.crt");
          if (fs.existsSync(server)) own.push(siteCert(fs.readFileSync(server, "utf8"), "site-server"));
        }
        const certs = (await s.certificates.list({ deviceId, status: q.status })).filter((c) => m === null || (c.kind === "device" && inScope(c.deviceId)));
        return { body: [...own, ...certs.map((c) => certView(c, now))] };
      },
    }),
    setStatus("block"),
    setStatus("unblock"),
    setStatus("revoke"),
    route({
      method: "GET", path: "/api/v1/crl.pem", access: "public", tag: "certificates", summary: "The certificate revocation list (PEM, signed by the site CA)",
      handler: async () => ({ body: { pem: await currentCrl(site) } }),
    }),
    route({
      method: "GET", path: "/api/v1/enrollment-credentials", access: "certificate.read", tag: "enrollment",
      summary: "Enrollment credentials for boot media (never their secret)",
      handler: async () => ({
        body: (await stores(site.db).enrollment.list("media")).map((c) => ({ id: c.id, name: c.name, usesLeft: c.usesLeft, expiresAt: c.expiresAt,
          createdBy: c.createdBy, createdAt: c.createdAt, revokedAt: c.revokedAt, lastUsedAt: c.lastUsedAt })),
      }),
    }),
    route({
      method: "POST", path: "/api/v1/enrollment-credentials", access: "enrollment.write", tag: "enrollment",
      summary: "Create a media enrollment credential; the secret is shown once",
      body: z.strictObject({ name: Name, uses: z.int().min(1).max(10_000).default(1), expiresInHours: z.int().min(1).max(24 * 365).default(24 * 7) }),
      handler: async (ctx) => {
        const c = await site.db.transaction(async (tx) => {
          const made = await createMediaCredential(site, { ...ctx.body, createdBy: actor(ctx) }, tx);
          await site.audit.append({ actor: actor(ctx), action: "enrollment-credential.create", object: `credential:${made.id}`, details: { name: made.name, uses: made.usesLeft, expiresAt: made.expiresAt } }, tx);
          return made;
        });
        return { status: 201, body: { id: c.id, name: c.name, usesLeft: c.usesLeft, expiresAt: c.expiresAt, secret: c.secret } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/enrollment-credentials/:id", access: "enrollment.write", tag: "enrollment", summary: "Revoke a media enrollment credential",
      handler: async (ctx) => {
        const s = stores(site.db);
        const c = await s.enrollment.byId(ctx.params.id);
        if (!c || c.kind !== "media") throw notFound("enrollment credential", ctx.params.id);
        await site.db.transaction(async (tx) => {
          await stores(tx).enrollment.revoke(c.id, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "enrollment-credential.revoke", object: `credential:${c.id}` }, tx);
        });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/pxe/password", access: "site.read", tag: "pxe", summary: "Whether a PXE password is set (never the password)",
      handler: async () => ({ body: { set: (await pxePasswordHash(site)) !== null } }),
    }),
    route({
      method: "PUT", path: "/api/v1/pxe/password", access: "site.write", tag: "pxe",
      summary: "Set the PXE password machines must give (inside TLS) to redeem a boot token",
      body: z.strictObject({ password: z.string().min(1).max(1024) }),
      handler: async (ctx) => {
        const problems = passwordProblems(ctx.body.password);
        if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that PXE password: ${problems.join("; ")}`, { problems });
        await site.db.transaction(async (tx) => {
          await setPxePassword(site, ctx.body.password, tx);
          await site.audit.append({ actor: actor(ctx), action: "pxe.password.set", object: "pxe-password" }, tx);
        });
        return {};
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/pxe/password", access: "site.write", tag: "pxe", summary: "Remove the PXE password",
      handler: async (ctx) => {
        await site.db.transaction(async (tx) => {
          await setPxePassword(site, null, tx);
          await site.audit.append({ actor: actor(ctx), action: "pxe.password.clear", object: "pxe-password" }, tx);
        });
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/runs", access: "deployment.read", tag: "runs", summary: "Deployment runs (filter by device, deployment, state)",
      query: z.object({ device: z.string().max(200).optional(), deployment: z.string().max(100).optional(), state: z.enum(["running", "succeeded", "failed", "cancelled"]).optional() }),
      handler: async (ctx) => {
        const s = stores(site.db);
        const q = ctx.query;
        let deviceId: string | undefined;
        if (q.device) deviceId = ((await s.devices.byId(q.device)) ?? (await s.devices.byName(q.device)))?.id ?? "-";
        const inScope = await scopeOf(s, principal(ctx));
        const runs = (await s.runs.list({ deviceId, deploymentId: q.deployment, state: q.state })).filter((r) => inScope(r.deviceId));
        return { body: runs };
      },
    }),
    route({
      method: "GET", path: "/api/v1/runs/:id", access: "deployment.read", tag: "runs", summary: "A run with every step event, in order",
      handler: async (ctx) => {
        const s = stores(site.db);
        const run = await s.runs.byId(ctx.params.id);
        if (!run || !(await deviceVisible(s, principal(ctx), run.deviceId))) throw notFound("run", ctx.params.id);
        return { body: { ...run, events: await s.runs.events(run.id) } };
      },
    }),
    route({
      method: "GET", path: "/api/v1/devices/:id/policy", access: "deployment.read", tag: "devices",
      summary: "What the device's policy holds now (unsigned preview; secrets by name only)",
      query: z.object({ bootPath: z.enum(["pxe", "media"]).default("pxe") }),
      handler: async (ctx) => {
        const s = stores(site.db);
        const d = (await s.devices.byId(ctx.params.id)) ?? (await s.devices.byName(ctx.params.id));
        if (!d || !(await deviceVisible(s, principal(ctx), d))) throw notFound("device", ctx.params.id);
        return { body: await devicePolicy(site, d, ctx.query.bootPath) };
      },
    }),
  ];
}
