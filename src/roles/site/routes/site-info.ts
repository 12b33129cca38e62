/** Health, the OpenAPI document, the site's public keys, and site facts. */
import { X509Certificate } from "node:crypto";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { publicKeyFingerprint } from "../../../security/signing.ts";
import { sitePosture } from "../posture.ts";

export const VERSION = "0.1.0";

export function siteInfoRoutes(site: Site, getRoutes: () => readonly Route[], openapi: (r: readonly Route[]) => unknown): Route[] {
  let doc: unknown = null;
  return [
    route({
      method: "GET", path: "/api/v1/health", access: "public", tag: "site", summary: "Liveness: answers while the server can reach its database",
      handler: async () => {
        await site.db.get("SELECT 1 AS ok");
        return { body: { ok: true } };
      },
    }),
    route({
      method: "GET", path: "/api/v1/openapi.json", access: "public", tag: "site", summary: "This API's OpenAPI 3.1 document",
      handler: async () => ({ body: (doc ??= openapi(getRoutes())) }),
    }),
    route({
      method: "GET", path: "/api/v1/site/ca.pem", access: "public", tag: "site", summary: "The site CA certificate (PEM) — public",
      handler: async () => ({ body: { pem: site.keys.ca.certPem } }),
    }),
    route({
      method: "GET", path: "/api/v1/site/signing-key.pem", access: "public", tag: "site", summary: "The site's public signing key (PEM) — what agents pin",
      handler: async () => ({ body: { pem: site.keys.verifyKey.export({ type: "spki", format: "pem" }).toString(), fingerprint: publicKeyFingerprint(site.keys.verifyKey) } }),
    }),
    route({
      method: "GET", path: "/api/v1/site", access: "site.read", tag: "site",
      summary: "Site facts: version, database, key fingerprints, and the network-boot posture (where PXE is served, the PXE password, deployments open to sniffable enrollments, warnings)",
      handler: async (ctx) => ({
        body: {
          version: VERSION, database: site.db.dialect, signingKeyFingerprint: publicKeyFingerprint(site.keys.verifyKey),
          caFingerprint256: new X509Certificate(site.keys.ca.certPem).fingerprint256,
          posture: await sitePosture(site, ctx.principal ?? null),
        },
      }),
    }),
  ];
}
