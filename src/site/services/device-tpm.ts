/**
 * A device's TPM endorsement key (EK), as administrators see and decide it: the EK on record,
 * importing one (a PEM public key or certificate — the vendor's platform certificates, a
 * previous deployment — or the TPM's own public area in base64; it replaces any on record), and
 * forgetting it (a replaced motherboard or TPM: the device's next enrollment above `sniffable`
 * records the new one). A certificate is checked against the TPM manufacturer roots when there
 * are any; a bare public key is the administrator's own decision. One EK is bound to one
 * device. Each write is audited in its transaction; a device outside a scoped administrator's
 * scopes reads as missing (audited). Refusals are SlipwayErrors.
 */
import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import type { DeviceTpm } from "../../storage/device-tpm-store.ts";
import { SlipwayError } from "../../errors.ts";
import { ekFingerprint, parseEkPublic, TpmProofError } from "../../security/tpm-credential.ts";
import { ekCertificateProblem, parseRoots } from "../../security/ek-certificate.ts";
import { adminActor } from "./common.ts";
import { visibleDevice } from "./devices.ts";

const CERTIFICATE_LABEL = /-----BEGIN [A-Z0-9 ]*CERTIFICATE-----/;
/** Any certificate label (CERTIFICATE, X509 CERTIFICATE, TRUSTED CERTIFICATE…) as plain CERTIFICATE. */
const asCertificatePem = (t: string) => t.replace(/-----(BEGIN|END) [A-Z0-9 ]*CERTIFICATE-----/g, "-----$1 CERTIFICATE-----");

/** An EK an administrator gives: PEM public key, PEM certificate, or a TPM public area in base64. */
function importedKey(text: string): KeyObject {
  const t = text.trim();
  let key: KeyObject;
  try {
    // Any certificate label is read as a certificate, so it is checked like one; a key must say PUBLIC KEY.
    if (CERTIFICATE_LABEL.test(t)) key = new X509Certificate(asCertificatePem(t)).publicKey;
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

/** The EK on record for a device (id or name) the administrator sees, or null. */
export async function deviceTpmOf(site: Site, p: Principal, ref: string): Promise<DeviceTpm | null> {
  const d = await visibleDevice(site, p, ref, "device.tpm.read");
  return stores(site.db).deviceTpm.of(d.id);
}

/** Imports a device's EK (replacing any on record); refused when another device holds it. Audited device.tpm.import. */
export async function importDeviceTpm(site: Site, p: Principal, ref: string, text: string): Promise<DeviceTpm> {
  const d = await visibleDevice(site, p, ref, "device.tpm.import");
  const key = importedKey(text);
  const roots = await stores(site.db).deviceTpm.roots();
  if (roots && CERTIFICATE_LABEL.test(text)) {
    const problem = ekCertificateProblem(new X509Certificate(asCertificatePem(text.trim())).raw, key, parseRoots(roots));
    if (problem) throw new SlipwayError("VALIDATION", `Cannot import the endorsement key: ${problem}`);
  }
  const fingerprint = ekFingerprint(key);
  const now = site.now().toISOString();
  return site.db.transaction(async (tx) => {
    const s = stores(tx);
    const holder = await s.deviceTpm.deviceByFingerprint(fingerprint);
    if (holder && holder !== d.id) throw new SlipwayError("CONFLICT", `Cannot import the endorsement key: it is bound to another device (${holder}); clear it there first`);
    const before = await s.deviceTpm.of(d.id);
    const rec = { ek: key.export({ type: "spki", format: "der" }).toString("base64"), fingerprint, source: "import", recordedAt: now, recordedBy: adminActor(p) };
    await s.deviceTpm.set(d.id, rec);
    await site.audit.append({ actor: adminActor(p), action: "device.tpm.import", object: `device:${d.id}`,
      details: { name: d.name, ekFingerprint: fingerprint, replaced: before?.fingerprint ?? null } }, tx);
    return rec;
  });
}

/** Forgets a device's EK; NOT_FOUND when none is on record. Audited device.tpm.clear. */
export async function clearDeviceTpm(site: Site, p: Principal, ref: string): Promise<void> {
  const d = await visibleDevice(site, p, ref, "device.tpm.clear");
  await site.db.transaction(async (tx) => {
    const s = stores(tx);
    const before = await s.deviceTpm.of(d.id);
    if (!before) throw new SlipwayError("NOT_FOUND", `Cannot clear: device "${d.name}" has no TPM endorsement key on record`);
    await s.deviceTpm.clear(d.id);
    await site.audit.append({ actor: adminActor(p), action: "device.tpm.clear", object: `device:${d.id}`, details: { name: d.name, ekFingerprint: before.fingerprint } }, tx);
  });
}
