/**
 * A device's TPM endorsement key (EK), as administrators see and decide it:
 *   GET    /api/v1/devices/:id/tpm   the EK on record (fingerprint, how and when it was recorded)
 *   PUT    /api/v1/devices/:id/tpm   import one: a PEM public key or certificate (the vendor's
 *                                    platform certificates, a previous deployment), or the
 *                                    TPM's own public area (base64) — replaces any on record
 *   DELETE /api/v1/devices/:id/tpm   forget it (a replaced motherboard or TPM): the device's
 *                                    next enrollment above `sniffable` records the new one
 * Importing and clearing need device.approve, like approving: each is the administrator's
 * decision about which machine is that device. Both are audited; a scoped administrator sees
 * only devices within its scopes (404 otherwise, audited).
 */
import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { z } from "zod";
import { route, type Route, type RequestContext } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import { SlipwayError } from "../../../errors.ts";
import { deviceVisible } from "../../../site/membership.ts";
import { ekFingerprint, parseEkPublic, TpmProofError } from "../../../security/tpm-credential.ts";
import { actor, notFound, principal } from "./common.ts";
import { ekCertificateProblem, parseRoots } from "../../../security/ek-certificate.ts";

const CERTIFICATE_LABEL = /-----BEGIN [A-Z0-9 ]*CERTIFICATE-----/;
const ImportBody = z.strictObject({ ek: z.string().min(40).max(16 * 1024) });

/** An EK an administrator gives: PEM public key, PEM certificate, or a TPM public area in base64. */
function importedKey(text: string): KeyObject {
  const t = text.trim();
  let key: KeyObject;
  try {
    // Any certificate label (CERTIFICATE, X509 CERTIFICATE, TRUSTED CERTIFICATE…) is read as a
    // certificate, so it is checked like one; a key must say PUBLIC KEY.
    if (CERTIFICATE_LABEL.test(t)) key = new X509Certificate(t.replace(/-----(BEGIN|END) [A-Z0-9 ]*CERTIFICATE-----/g, "-----$1 CERTIFICATE-----")).publicKey;
    else if (t.startsWith("-----BEGIN PUBLIC KEY-----")) key = createPublicKey(t);
    else if (t.includes("-----BEGIN")) throw new Error("a PEM block other than PUBLIC KEY or CERTIFICATE");
    else key = parseEkPublic(t).key;
  } catch (err) {
    const why = err instanceof TpmProofError ? err.message : `it is not a PEM public key, PEM certificate or TPM public area (${(err as Error).message.split("\n")[0]})`;
    throw new SlipwayError("VALIDATION", `Cannot import the endorsement key: ${why}`);
  }
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType !== "rsa" || d?.modulusLength !== 2048) {
    throw new SlipwayError("VALIDATION", "Cannot import the endorsement key: Slipway binds RSA 2048 endorsement keys (the TCG default template); this is another kind of key");
  }
  return key;
}

export function deviceTpmRoutes(site: Site): Route[] {
  async function load(ctx: RequestContext<unknown, unknown, { id: string }>, action: string) {
    const s = stores(site.db);
    const d = (await s.devices.byId(ctx.params.id)) ?? (await s.devices.byName(ctx.params.id));
    if (!d) throw notFound("device", ctx.params.id);
    if (!(await deviceVisible(s, principal(ctx), d))) {
      await site.audit.append({ actor: actor(ctx), action, outcome: "denied", object: `device:${d.id}`, details: { reason: "out of scope" } });
      throw notFound("device", ctx.params.id);
    }
    return d;
  }
  const view = (t: Awaited<ReturnType<ReturnType<typeof stores>["deviceTpm"]["of"]>>) =>
    t ? { ekFingerprint: t.fingerprint, source: t.source, recordedAt: t.recordedAt, recordedBy: t.recordedBy } : { ekFingerprint: null };

  return [
    route({
      method: "GET", path: "/api/v1/devices/:id/tpm", access: "device.read", tag: "devices",
      summary: "The TPM endorsement key on record for a device (its fingerprint, how and when it was recorded)",
      handler: async (ctx) => {
        const d = await load(ctx, "device.tpm.read");
        return { body: view(await stores(site.db).deviceTpm.of(d.id)) };
      },
    }),
    route({
      method: "PUT", path: "/api/v1/devices/:id/tpm", access: "device.approve", tag: "devices", body: ImportBody,
      summary: "Import a device's TPM endorsement key (PEM public key or certificate, or the TPM public area in base64); its enrollments that prove it are then `tpm`",
      handler: async (ctx) => {
        const d = await load(ctx, "device.tpm.import");
        const text = ctx.body.ek;
        const key = importedKey(text);
        // A certificate is checked against the TPM manufacturer roots when there are any; a bare
        // public key is the administrator's own decision.
        const roots = await stores(site.db).deviceTpm.roots();
        if (roots && CERTIFICATE_LABEL.test(text)) {
          const pem = text.trim().replace(/-----(BEGIN|END) [A-Z0-9 ]*CERTIFICATE-----/g, "-----$1 CERTIFICATE-----");
          const problem = ekCertificateProblem(new X509Certificate(pem).raw, key, parseRoots(roots));
          if (problem) throw new SlipwayError("VALIDATION", `Cannot import the endorsement key: ${problem}`);
        }
        const fingerprint = ekFingerprint(key);
        const now = site.now().toISOString();
        const t = await site.db.transaction(async (tx) => {
          const s = stores(tx);
          const holder = await s.deviceTpm.deviceByFingerprint(fingerprint);
          if (holder && holder !== d.id) throw new SlipwayError("CONFLICT", `Cannot import the endorsement key: it is bound to another device (${holder}); clear it there first`);
          const before = await s.deviceTpm.of(d.id);
          const rec = { ek: key.export({ type: "spki", format: "der" }).toString("base64"), fingerprint, source: "import", recordedAt: now, recordedBy: actor(ctx) };
          await s.deviceTpm.set(d.id, rec);
          await site.audit.append({ actor: actor(ctx), action: "device.tpm.import", object: `device:${d.id}`,
            details: { name: d.name, ekFingerprint: fingerprint, replaced: before?.fingerprint ?? null } }, tx);
          return rec;
        });
        return { body: view(t) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/devices/:id/tpm", access: "device.approve", tag: "devices",
      summary: "Forget a device's TPM endorsement key; its next enrollment above sniffable records the one it proves",
      handler: async (ctx) => {
        const d = await load(ctx, "device.tpm.clear");
        await site.db.transaction(async (tx) => {
          const s = stores(tx);
          const before = await s.deviceTpm.of(d.id);
          if (!before) throw new SlipwayError("NOT_FOUND", `Cannot clear: device "${d.name}" has no TPM endorsement key on record`);
          await s.deviceTpm.clear(d.id);
          await site.audit.append({ actor: actor(ctx), action: "device.tpm.clear", object: `device:${d.id}`, details: { name: d.name, ekFingerprint: before.fingerprint } }, tx);
        });
        return { status: 204 };
      },
    }),
  ];
}
