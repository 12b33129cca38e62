/**
 * Enrollment: a machine proves itself with a boot token (plus the PXE password when one is
 * set), a media credential, or an administrator's pre-approval, and sends a certificate
 * request for a key it made itself. It gets a short-lived client certificate bound to its
 * device record. Every attempt is audited; a refusal says as little as it can.
 */
import { z } from "zod";
import type { Site } from "../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { hashToken } from "../../security/password.ts";
import { CertificateRequestError, issueClientCertificate } from "../../security/ca.ts";
import { normalizeMac, normalizeUuid, type Device } from "../../domain/device.ts";
import { SlipwayError } from "../../errors.ts";
import { checkPxePassword } from "./credentials.ts";

export const DEVICE_CERT_DAYS = 7;

const Mac = z.string().max(32).transform((s, c) => normalizeMac(s) ?? (c.addIssue({ code: "custom", message: "not a MAC address" }), z.NEVER));
const Uuid = z.string().max(64).transform((s, c) => normalizeUuid(s) ?? (c.addIssue({ code: "custom", message: "not a UUID" }), z.NEVER));
const Short = z.string().max(200);

export const Inventory = z.strictObject({
  macs: z.array(Mac).min(1).max(16),
  smbiosUuid: Uuid.nullable().optional(),
  serial: Short.nullable().optional(),
  vendor: Short.optional(),
  model: Short.optional(),
  firmware: z.enum(["bios", "uefi"]).optional(),
  memoryMiB: z.int().min(0).max(1 << 30).optional(),
  cpus: z.int().min(0).max(100_000).optional(),
  disks: z.array(z.strictObject({ name: z.string().max(64), sizeBytes: z.int().min(0) })).max(64).optional(),
});
export type Inventory = z.infer<typeof Inventory>;

export const EnrollBody = z.strictObject({
  credential: z.discriminatedUnion("kind", [
    z.strictObject({ kind: z.literal("boot-token"), token: z.string().min(10).max(200), pxePassword: z.string().max(1024).optional() }),
    z.strictObject({ kind: z.literal("media"), secret: z.string().min(10).max(200) }),
    z.strictObject({ kind: z.literal("pre-approved") }),
  ]),
  csr: z.string().min(100).max(16 * 1024),
  inventory: Inventory,
});
export type EnrollBody = z.infer<typeof EnrollBody>;

export type Enrolled = { deviceId: string; deviceName: string; certificate: string; caCertificate: string; serial: string; expiresAt: string };

function inventoryAttributes(inv: Inventory): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  if (inv.vendor) out.vendor = inv.vendor;
  if (inv.model) out.model = inv.model;
  if (inv.firmware) out.firmware = inv.firmware;
  if (inv.memoryMiB !== undefined) out.memoryMiB = inv.memoryMiB;
  if (inv.cpus !== undefined) out.cpus = inv.cpus;
  if (inv.disks) out.diskCount = inv.disks.length;
  return out;
}

export async function enroll(site: Site, body: EnrollBody, ip: string): Promise<Enrolled> {
  const s = stores(site.db);
  const now = site.now();
  const inv = body.inventory;
  const cred = body.credential;
  const machine = `mac:${inv.macs[0]}`;
  const refuse = async (reason: string, err: SlipwayError = new SlipwayError("ENROLLMENT_REFUSED")) => {
    await site.audit.append({ actor: machine, action: "device.enroll", outcome: "denied", details: { via: cred.kind, reason, ip, macs: inv.macs, smbiosUuid: inv.smbiosUuid ?? null } });
    return err;
  };

  let device: Device | undefined;
  let spend: string | null = null;
  if (cred.kind === "boot-token") {
    const c = await s.enrollment.byHash(hashToken(cred.token));
    if (!c || c.kind !== "boot-token") throw await refuse("unknown boot token");
    if (c.revokedAt || c.usesLeft < 1) throw await refuse("boot token already used");
    if (c.expiresAt <= now.toISOString()) throw await refuse("boot token expired");
    if (!c.mac || !inv.macs.includes(c.mac)) throw await refuse("boot token bound to another MAC");
    if (c.smbiosUuid && c.smbiosUuid !== (inv.smbiosUuid ?? null)) throw await refuse("boot token bound to another SMBIOS UUID");
    const pxe = await checkPxePassword(site, `mac:${c.mac}`, cred.pxePassword);
    if (pxe === "locked") throw await refuse("PXE password locked out", new SlipwayError("PXE_PASSWORD_LOCKED"));
    if (pxe === "required") throw await refuse("PXE password missing", new SlipwayError("PXE_PASSWORD_REQUIRED"));
    if (pxe === "wrong") throw await refuse("wrong PXE password");
    device = c.deviceId ? await s.devices.byId(c.deviceId) : undefined;
    spend = c.id;
  } else if (cred.kind === "media") {
    const c = await s.enrollment.byHash(hashToken(cred.secret));
    if (!c || c.kind !== "media") throw await refuse("unknown media credential");
    if (c.revokedAt) throw await refuse("media credential revoked");
    if (c.usesLeft < 1) throw await refuse("media credential used up");
    if (c.expiresAt <= now.toISOString()) throw await refuse("media credential expired");
    spend = c.id;
    device = await findByIdentifiers(site, inv);
  } else {
    // Pre-approval trusts the MAC and UUID a machine claims — spoofable on the wire — so it
    // only serves a device's first enrollment, and every identifier on record must match.
    device = await findByIdentifiers(site, inv);
    if (!device || device.state !== "approved") throw await refuse("no pre-approved device with these identifiers");
    if (device.smbiosUuid && device.smbiosUuid !== (inv.smbiosUuid ?? null)) throw await refuse("SMBIOS UUID does not match the approved device");
    if (!device.macs.some((m) => inv.macs.includes(m))) throw await refuse("MAC does not match the approved device");
    const active = (await s.certificates.list({ deviceId: device.id, status: "active" })).filter((c) => c.notAfter > now.toISOString());
    if (active.length) throw await refuse("device already enrolled; re-enrollment needs a boot token or media credential");
  }
  if (device?.state === "blocked") throw await refuse("device blocked", new SlipwayError("DEVICE_BLOCKED"));
  if (cred.kind === "boot-token" && (!device || device.state !== "approved")) throw await refuse("device not approved");

  const enrolled = await site.db.transaction(async (tx) => {
    const t = stores(tx);
    // Two machines racing with one single-use token: the conditional update lets one win.
    // (The loser is audited after the transaction: appending inside it would wait on itself.)
    if (spend && !(await t.enrollment.spend(spend, now.toISOString()))) return null;
    const nowIso = now.toISOString();
    let d = device;
    const attrs = inventoryAttributes(inv);
    if (!d) {
      // A media credential is the administrator's decision to admit whatever boots the media.
      const base = inv.serial ? `serial-${inv.serial}` : `mac-${inv.macs[0].replace(/:/g, "")}`;
      const name = (await t.devices.byName(base)) ? `${base}-${nowIso.slice(0, 19).replace(/\D/g, "")}` : base;
      // None of its MACs or its UUID is on record (findByIdentifiers looked), so all are free.
      d = await t.devices.create({ name, macs: inv.macs, smbiosUuid: inv.smbiosUuid ?? null,
        serial: inv.serial ?? null, state: "approved", attributes: attrs }, nowIso);
    } else {
      d = (await t.devices.update(d.id, {
        attributes: { ...d.attributes, ...attrs }, serial: inv.serial ?? d.serial, lastSeenAt: nowIso,
        ...(cred.kind === "media" && d.state === "pending" ? { state: "approved" as const } : {}),
      }, nowIso))!;
    }
    let issued;
    try {
      issued = await issueClientCertificate(site.keys.ca, { csrPem: body.csr, commonName: `device:${d.id}`, uri: `urn:slipway:device:${d.id}`, validDays: DEVICE_CERT_DAYS, now: site.now() });
    } catch (err) {
      if (err instanceof CertificateRequestError) throw new SlipwayError("CSR_INVALID", `The certificate request is not valid: ${err.message}`);
      throw err;
    }
    await t.certificates.add({
      serial: issued.serial, fingerprint: issued.fingerprint, kind: "device", deviceId: d.id, subject: `device:${d.id}`,
      notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString(), issuedVia: cred.kind, createdAt: nowIso,
    });
    await site.audit.append({ actor: machine, action: "device.enroll", object: `device:${d.id}`, details: { via: cred.kind, serial: issued.serial, ip, expiresAt: issued.notAfter.toISOString() } }, tx);
    return { deviceId: d.id, deviceName: d.name, certificate: issued.certPem, caCertificate: site.keys.ca.certPem, serial: issued.serial, expiresAt: issued.notAfter.toISOString() };
  });
  if (!enrolled) throw await refuse("credential already spent");
  return enrolled;
}

async function findByIdentifiers(site: Site, inv: Inventory): Promise<Device | undefined> {
  const s = stores(site.db);
  if (inv.smbiosUuid) {
    const d = await s.devices.bySmbiosUuid(inv.smbiosUuid);
    if (d) return d;
  }
  for (const mac of inv.macs) {
    const d = await s.devices.byMac(mac);
    if (d) return d;
  }
  return undefined;
}
