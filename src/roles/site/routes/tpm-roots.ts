/**
 * The TPM manufacturer roots (src/security/ek-certificate.ts), a site setting:
 *   GET    /api/v1/tpm/ek-roots   the certificates (subject, issuer, fingerprint)     site.read
 *   PUT    /api/v1/tpm/ek-roots   { pem } a bundle of root and intermediate CAs        site.write
 *   DELETE /api/v1/tpm/ek-roots   no roots: EKs are recorded without a certificate     site.write
 * Changes are audited.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { SlipwayError } from "../../../errors.ts";
import { certificateFingerprint, parseRoots } from "../../../security/ek-certificate.ts";
import { stores } from "../../../storage/stores.ts";
import { actor } from "./common.ts";

const view = (pem: string | null) => ({
  certificates: pem ? parseRoots(pem).map((c) => ({ subject: c.subject, issuer: c.issuer, fingerprint: certificateFingerprint(c), notAfter: c.validTo })) : [],
});

export function tpmRootRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/tpm/ek-roots", access: "site.read", tag: "site",
      summary: "The TPM manufacturer certificates EK certificates must chain to before an EK is recorded (none: no check)",
      handler: async () => ({ body: view(await stores(site.db).deviceTpm.roots()) }),
    }),
    route({
      method: "PUT", path: "/api/v1/tpm/ek-roots", access: "site.write", tag: "site",
      summary: "Set the TPM manufacturer certificates (a PEM bundle of roots and intermediates)",
      body: z.strictObject({ pem: z.string().min(50).max(512 * 1024) }),
      handler: async (ctx) => {
        let certs;
        try {
          certs = parseRoots(ctx.body.pem);
        } catch (err) {
          throw new SlipwayError("VALIDATION", `Cannot set the TPM manufacturer roots: ${(err as Error).message}`);
        }
        const pem = certs.map((c) => c.toString().trim()).join("\n") + "\n";
        await site.db.transaction(async (tx) => {
          await stores(tx).deviceTpm.setRoots(pem);
          await site.audit.append({ actor: actor(ctx), action: "tpm.ek-roots.set", details: { certificates: certs.map((c) => ({ subject: c.subject, fingerprint: certificateFingerprint(c) })) } }, tx);
        });
        return { body: view(pem) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/tpm/ek-roots", access: "site.write", tag: "site",
      summary: "Remove the TPM manufacturer certificates: EKs are then recorded without an EK certificate check",
      handler: async (ctx) => {
        await site.db.transaction(async (tx) => {
          await stores(tx).deviceTpm.setRoots(null);
          await site.audit.append({ actor: actor(ctx), action: "tpm.ek-roots.clear" }, tx);
        });
        return { status: 204 };
      },
    }),
  ];
}
