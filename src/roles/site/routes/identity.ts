/**
 * Device identities as administrators see them: the certificate inventory, blocking and
 * revocation (published in the CRL), enrollment credentials for boot media, the PXE
 * password, deployment runs and what a device's policy would hold. Issuing and revoking are
 * the Security Administrator's (certificate.* and enrollment.write); a Deployment
 * Administrator can do none of it.
 *
 * Revoking a device's certificate, for any reason, also blocks the device until an
 * administrator approves it (POST /api/v1/devices/:id/approve). The rules and transactions are
 * in the identity service (src/site/services/identity.ts; runs in runs.ts, the policy preview
 * in devices.ts); these handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { currentCrl } from "../../../site/crl.ts";
import {
  changePxePassword, listCertificates, listMediaCredentials, newMediaCredential, pxePasswordIsSet, revokeMediaCredential, setCertificateStatus,
} from "../../../site/services/identity.ts";
import { getRun, listRuns } from "../../../site/services/runs.ts";
import { previewPolicy } from "../../../site/services/devices.ts";
import { Name, principal } from "./common.ts";

export function identityRoutes(site: Site): Route[] {
  const setStatus = (action: "block" | "unblock" | "revoke"): Route => route({
    method: "POST", path: `/api/v1/certificates/:serial/${action}`, access: "certificate.revoke", tag: "certificates",
    summary: action === "revoke" ? "Revoke a certificate for good; it appears in the CRL; a device certificate's device is blocked until an administrator approves it again" : action === "block" ? "Block a certificate: refused on its next request" : "Unblock a blocked certificate",
    body: z.strictObject({ reason: z.enum(["keyCompromise", "superseded", "cessationOfOperation", "unspecified"]).default("unspecified") }),
    handler: async (ctx) => ({ body: await setCertificateStatus(site, principal(ctx), ctx.params.serial, action, ctx.body.reason) }),
  });

  return [
    route({
      method: "GET", path: "/api/v1/certificates", access: "certificate.read", tag: "certificates",
      summary: "Certificate inventory: the site's own and every device certificate (issued, expires, status, last used)",
      query: z.object({ device: z.string().max(200).optional(), status: z.enum(["active", "blocked", "revoked"]).optional() }),
      handler: async (ctx) => ({ body: await listCertificates(site, principal(ctx), ctx.query) }),
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
      handler: async () => ({ body: await listMediaCredentials(site) }),
    }),
    route({
      method: "POST", path: "/api/v1/enrollment-credentials", access: "enrollment.write", tag: "enrollment",
      summary: "Create a media enrollment credential; the secret is shown once",
      body: z.strictObject({ name: Name, uses: z.int().min(1).max(10_000).default(1), expiresInHours: z.int().min(1).max(24 * 365).default(24 * 7) }),
      handler: async (ctx) => ({ status: 201, body: await newMediaCredential(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/enrollment-credentials/:id", access: "enrollment.write", tag: "enrollment", summary: "Revoke a media enrollment credential",
      handler: async (ctx) => {
        await revokeMediaCredential(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/pxe/password", access: "site.read", tag: "pxe", summary: "Whether a PXE password is set (never the password)",
      handler: async () => ({ body: { set: await pxePasswordIsSet(site) } }),
    }),
    route({
      method: "PUT", path: "/api/v1/pxe/password", access: "site.write", tag: "pxe",
      summary: "Set the PXE password machines must give (inside TLS) to redeem a boot token",
      body: z.strictObject({ password: z.string().min(1).max(1024) }),
      handler: async (ctx) => {
        await changePxePassword(site, principal(ctx), ctx.body.password);
        return {};
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/pxe/password", access: "site.write", tag: "pxe", summary: "Remove the PXE password",
      handler: async (ctx) => {
        await changePxePassword(site, principal(ctx), null);
        return {};
      },
    }),
    route({
      method: "GET", path: "/api/v1/runs", access: "deployment.read", tag: "runs", summary: "Deployment runs (filter by device, deployment, state)",
      query: z.object({ device: z.string().max(200).optional(), deployment: z.string().max(100).optional(), state: z.enum(["running", "succeeded", "failed", "cancelled"]).optional() }),
      handler: async (ctx) => ({ body: await listRuns(site, principal(ctx), ctx.query) }),
    }),
    route({
      method: "GET", path: "/api/v1/runs/:id", access: "deployment.read", tag: "runs", summary: "A run with every step event, in order",
      handler: async (ctx) => ({ body: await getRun(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "GET", path: "/api/v1/devices/:id/policy", access: "deployment.read", tag: "devices",
      summary: "What the device's policy holds now (unsigned preview; secrets by name only)",
      query: z.object({ bootPath: z.enum(["pxe", "media"]).default("pxe") }),
      handler: async (ctx) => ({ body: await previewPolicy(site, principal(ctx), ctx.params.id, ctx.query.bootPath) }),
    }),
  ];
}
