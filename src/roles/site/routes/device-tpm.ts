/**
 * A device's TPM endorsement key (EK), as administrators see and decide it:
 *   GET    /api/v1/devices/:id/tpm   the EK on record (fingerprint, how and when it was recorded)
 *   PUT    /api/v1/devices/:id/tpm   import one: a PEM public key or certificate (the vendor's
 *                                    platform certificates, a previous deployment), or the
 *                                    TPM's own public area (base64) — replaces any on record
 *   DELETE /api/v1/devices/:id/tpm   forget it (a replaced motherboard or TPM): the device's
 *                                    next enrollment above `sniffable` records the new one
 * Importing and clearing need device.approve, like approving: each is the administrator's
 * decision about which machine is that device. The checks and transactions are in the service
 * (src/site/services/device-tpm.ts); these handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import type { DeviceTpm } from "../../../storage/device-tpm-store.ts";
import { clearDeviceTpm, deviceTpmOf, importDeviceTpm } from "../../../site/services/device-tpm.ts";
import { principal } from "./common.ts";

const ImportBody = z.strictObject({ ek: z.string().min(40).max(16 * 1024) });

const view = (t: DeviceTpm | null) =>
  t ? { ekFingerprint: t.fingerprint, source: t.source, recordedAt: t.recordedAt, recordedBy: t.recordedBy } : { ekFingerprint: null };

export function deviceTpmRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/devices/:id/tpm", access: "device.read", tag: "devices",
      summary: "The TPM endorsement key on record for a device (its fingerprint, how and when it was recorded)",
      handler: async (ctx) => ({ body: view(await deviceTpmOf(site, principal(ctx), ctx.params.id)) }),
    }),
    route({
      method: "PUT", path: "/api/v1/devices/:id/tpm", access: "device.approve", tag: "devices", body: ImportBody,
      summary: "Import a device's TPM endorsement key (PEM public key or certificate, or the TPM public area in base64); its enrollments that prove it are then `tpm`",
      handler: async (ctx) => ({ body: view(await importDeviceTpm(site, principal(ctx), ctx.params.id, ctx.body.ek)) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/devices/:id/tpm", access: "device.approve", tag: "devices",
      summary: "Forget a device's TPM endorsement key; its next enrollment above sniffable records the one it proves",
      handler: async (ctx) => {
        await clearDeviceTpm(site, principal(ctx), ctx.params.id);
        return { status: 204 };
      },
    }),
  ];
}
