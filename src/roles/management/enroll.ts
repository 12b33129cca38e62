/**
 * Enrollment: a machine proves itself with a boot token (plus the PXE password when one is
 * set), a media credential, or an administrator's pre-approval, and sends a certificate
 * request for a key it made itself. It gets a short-lived client certificate bound to its
 * device record. Every attempt is audited; a refusal says as little as it can.
 *
 * The lifecycle rules kept here (docs/security-model.md, "Devices"):
 *  - A blocked device, or one with a blocked certificate, never enrolls, whatever the
 *    credential; revoking a device's certificate blocks the device, so only an
 *    administrator's approval (POST /api/v1/devices/:id/approve) lets it enroll again.
 *  - Pre-approval admits one enrollment: the device's first (of any kind) spends it, for good;
 *    only an administrator approving the device while it holds no live certificate arms it again.
 *  - A media credential never hands out an existing device's identity: it enrolls a new
 *    (approved) device, or an existing one only if that device is approved, the machine
 *    presents every identifier on record and no identifier of another device, and the device
 *    holds no live certificate. It never approves a device on record.
 *  - Each enrollment supersedes the device's earlier active certificates: one live identity.
 *  - Each enrollment records its assurance on the certificate and the device: `sniffable` (a
 *    boot token alone — MAC and UUID are broadcast in clear), `password` (boot token and the
 *    PXE password), `approved` (pre-approval), `media` (a media credential). Renewals keep it.
 */
import { z } from "zod";
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { hashToken } from "../../security/password.ts";
import { CertificateRequestError, issueClientCertificate } from "../../security/ca.ts";
import { DeviceMac, isUnsetSmbiosUuid, normalizeMac, normalizeUuid, presentsEveryIdentifier, type Device, type DeviceEnrollment } from "../../domain/device.ts";
import type { Stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import { nameProblem } from "../../domain/name.ts";
import { checkPxePassword, pxePasswordHash } from "../../site/credentials.ts";
import { assuranceRank, mayReceiveSecrets, type Assurance } from "../../domain/assurance.ts";
import { EnrollTpm, provenEk } from "./tpm-enroll.ts";
import { ekCertificateRefusal } from "../../security/ek-certificate.ts";
import { policyInput } from "../../site/policy.ts";
import { compilePolicy } from "../../domain/policy.ts";
import { parseEkPublic, TpmProofError } from "../../security/tpm-credential.ts";

export const DEVICE_CERT_DAYS = 7;
/** How long after an approval by filter a new enrollment of the device contests it. */
export const FILTER_APPROVAL_WATCH_MS = 60 * 60_000;

const Mac = DeviceMac;
// A machine whose firmware reports SMBIOS's "not set" UUID has none: it is matched by MAC alone.
const Uuid = z.string().max(64).transform((s, c) => {
  const uuid = normalizeUuid(s);
  if (!uuid) return (c.addIssue({ code: "custom", message: "not a UUID" }), z.NEVER);
  return isUnsetSmbiosUuid(uuid) ? null : uuid;
});
// What a machine reports about itself becomes device names and attributes that administrators
// read: the same characters are refused as in names typed by an administrator.
const Short = z.string().max(200).superRefine((s, c) => {
  const problem = nameProblem(s);
  if (problem) c.addIssue({ code: "custom", message: problem });
});

export const Inventory = z.strictObject({
  macs: z.array(Mac).min(1).max(16),
  smbiosUuid: Uuid.nullable().optional(),
  serial: Short.nullable().optional(),
  vendor: Short.optional(),
  model: Short.optional(),
  firmware: z.enum(["bios", "uefi"]).optional(),
  memoryMiB: z.int().min(0).max(1 << 30).optional(),
  cpus: z.int().min(0).max(100_000).optional(),
  disks: z.array(z.strictObject({ name: Short.pipe(z.string().max(64)), sizeBytes: z.int().min(0) })).max(64).optional(),
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
  /** The machine's TPM: its EK and, answering a challenge, the proof it holds it (tpm-enroll.ts). */
  tpm: EnrollTpm.optional(),
});
export type EnrollBody = z.infer<typeof EnrollBody>;

export type Enrolled = {
  deviceId: string; deviceName: string; certificate: string; caCertificate: string; serial: string; expiresAt: string; assurance: Assurance;
  /** A deployment for this device needs more than this enrollment's assurance: an administrator may approve the enrollment. */
  awaitingApproval: boolean;
};

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

/** A refusal found inside or outside the transaction: thrown (rolling the transaction back), audited once after. */
class Refused extends Error {
  readonly reason: string;
  readonly error: SlipwayError;
  constructor(reason: string, error: SlipwayError = new SlipwayError("ENROLLMENT_REFUSED")) {
    super(reason);
    this.reason = reason;
    this.error = error;
  }
}

export async function enroll(site: Site, body: EnrollBody, ip: string): Promise<Enrolled> {
  const inv = body.inventory;
  try {
    return await enrollOrRefuse(site, body, ip);
  } catch (err) {
    if (!(err instanceof Refused)) throw err;
    site.log.warn("enrollment refused", { reason: err.reason, ip, mac: inv.macs[0], via: body.credential.kind });
    await site.audit.append({ actor: `mac:${inv.macs[0]}`, action: "device.enroll", outcome: "denied",
      details: { via: body.credential.kind, reason: err.reason, ip, macs: inv.macs, smbiosUuid: inv.smbiosUuid ?? null, ...tpmPresented(body) } });
    // Pre-approval and media are asked by identifiers anyone can claim: a distinct answer for a
    // blocked device would tell a stranger which MAC and UUID belong to one. The audit keeps why.
    if (body.credential.kind !== "boot-token" && err.error.code === "DEVICE_BLOCKED") throw new SlipwayError("ENROLLMENT_REFUSED");
    throw err.error;
  }
}

/** The TPM endorsement key a refused machine presented (its fingerprint), for the audit. */
function tpmPresented(body: EnrollBody): { tpmEk?: string } {
  if (!body.tpm) return {};
  try {
    return { tpmEk: parseEkPublic(body.tpm.ekPublic).fingerprint };
  } catch {
    return { tpmEk: "not an endorsement key" };
  }
}

type Kind = EnrollBody["credential"]["kind"];

/**
 * Why `device` may not enroll now with a credential of `kind`, or null. Asked before the
 * transaction (to refuse early) and again inside it, after the device is claimed.
 */
async function refusal(s: Stores, device: Device, e: DeviceEnrollment, kind: Kind, now: string): Promise<Refused | null> {
  if (device.state === "blocked") return new Refused("device blocked", new SlipwayError("DEVICE_BLOCKED"));
  const certs = await s.certificates.list({ deviceId: device.id });
  const blocked = certs.find((c) => c.status === "blocked");
  if (blocked) return new Refused(`certificate ${blocked.serial} of the device is blocked`, new SlipwayError("DEVICE_BLOCKED"));
  const live = certs.find((c) => c.status === "active" && c.notAfter > now);
  if (kind === "boot-token") {
    if (device.state !== "approved") return new Refused("device not approved");
  } else if (kind === "pre-approved") {
    if (device.state !== "approved") return new Refused("device not approved");
    if (!e.preApproved) return new Refused("pre-approval already spent by an earlier enrollment; an administrator must approve the device again");
    if (live) return new Refused("device already enrolled; re-enrollment needs a boot token or media credential");
  } else {
    // A pending device on record awaits an administrator (it may have been blocked and then
    // unapproved): media, which admits machines nobody has recorded, does not decide for them.
    if (device.state !== "approved") return new Refused("device awaits an administrator's approval; a media credential does not approve a device on record");
    if (live) return new Refused(`device holds a live certificate (${live.serial}); a media credential never hands out an enrolled device's identity`);
  }
  return null;
}

/** The one device every presented identifier points to; undefined if none; refused if several. */
async function matchDevice(s: Stores, inv: Inventory): Promise<Device | undefined> {
  const found = new Map<string, Device>();
  if (inv.smbiosUuid) {
    const d = await s.devices.bySmbiosUuid(inv.smbiosUuid);
    if (d) found.set(d.id, d);
  }
  for (const mac of inv.macs) {
    const d = await s.devices.byMac(mac);
    if (d) found.set(d.id, d);
  }
  if (found.size > 1) throw new Refused(`identifiers belong to ${found.size} different devices`);
  const d = [...found.values()][0];
  if (d && !presentsEveryIdentifier(d, inv.macs, inv.smbiosUuid ?? null)) {
    throw new Refused(`identifiers do not match every identifier on record of device ${d.id}`);
  }
  return d;
}

async function enrollOrRefuse(site: Site, body: EnrollBody, ip: string): Promise<Enrolled> {
  const s = stores(site.db);
  const now = site.now();
  const nowIso = now.toISOString();
  const inv = body.inventory;
  const cred = body.credential;
  const machine = `mac:${inv.macs[0]}`;

  let device: Device | undefined;
  let spend: string | null = null;
  let assurance: Assurance;
  /** The EK the machine proved it holds (boot-token enrollments), and the one on record for its device. */
  let tpm: { proven: { spki: string; fingerprint: string } | null; onRecord: string | null } = { proven: null, onRecord: null };
  if (cred.kind === "boot-token") {
    const c = await s.enrollment.byHash(hashToken(cred.token));
    // What is wrong with the token itself names only what this machine sent and was sent: the
    // machine is told, with what to do next (it is shown on its console).
    const tell = (reason: string, next: string) => new Refused(reason, new SlipwayError("ENROLLMENT_REFUSED", `Cannot enroll: ${reason}; ${next}`));
    if (!c || c.kind !== "boot-token") throw tell("unknown boot token", "restart the machine through PXE to get a new one");
    if (c.revokedAt || c.usesLeft < 1) throw tell("boot token already used", "restart the machine through PXE to get a new one");
    if (c.expiresAt <= nowIso) throw tell("boot token expired", "restart the machine through PXE to get a new one (a token lasts 10 minutes)");
    if (!c.mac || !inv.macs.includes(c.mac)) {
      throw tell(`boot token bound to MAC ${c.mac ?? "-"}, and this machine reports ${inv.macs.join(", ")}`, "boot from the network card the token was issued to");
    }
    if (c.smbiosUuid && c.smbiosUuid !== (inv.smbiosUuid ?? null)) {
      throw tell(`boot token bound to SMBIOS UUID ${c.smbiosUuid}, and this machine reports ${inv.smbiosUuid ?? "none"}`,
        "the firmware and the deploy environment disagree about the machine's UUID: restart it through PXE, and report the machine's model if it happens again");
    }
    device = c.deviceId ? await s.devices.byId(c.deviceId) : undefined;
    if (!device) throw new Refused("the boot token's device no longer exists");
    spend = c.id;
    // A machine that proves it holds the TPM endorsement key on record for the device needs no
    // PXE password: nothing on the wire lets anyone else answer the TPM's challenge.
    try {
      tpm = { proven: provenEk(site, device.id, c.id, body.tpm), onRecord: (await s.deviceTpm.of(device.id))?.fingerprint ?? null };
    } catch (err) {
      if (err instanceof TpmProofError) throw new Refused(`TPM proof failed: ${err.message}`);
      throw err;
    }
    if (tpm.proven && tpm.proven.fingerprint === tpm.onRecord) {
      assurance = "tpm";
    } else {
      // Without a PXE password set, the token is all the machine proved: what anyone on its link can obtain.
      const passwordSet = (await pxePasswordHash(site)) !== null;
      // Guesses count per address, token, machine and site; only the address and the site refuse (credentials.ts).
      const pxe = await checkPxePassword(site, { source: ip, tokenId: c.id, mac: c.mac }, cred.pxePassword);
      if (pxe.result === "locked") throw new Refused(pxe.reason, new SlipwayError("PXE_PASSWORD_LOCKED", pxe.message));
      if (pxe.result === "required") throw new Refused(pxe.reason, new SlipwayError("PXE_PASSWORD_REQUIRED"));
      if (pxe.result === "wrong") throw new Refused(pxe.reason);
      assurance = passwordSet ? "password" : "sniffable";
      // A device bound to a TPM is that TPM: anyone can present its MAC, UUID and boot token, so
      // a sniffable enrollment is refused before it spends the token the real machine boots with.
      if (assurance === "sniffable" && tpm.onRecord) {
        throw new Refused(tpm.proven ? "the device is bound to another TPM endorsement key; a sniffable enrollment is refused"
          : "the device is bound to a TPM and the machine proved none; a sniffable enrollment is refused");
      }
    }
  } else if (cred.kind === "media") {
    const c = await s.enrollment.byHash(hashToken(cred.secret));
    if (!c || c.kind !== "media") throw new Refused("unknown media credential");
    if (c.revokedAt) throw new Refused("media credential revoked");
    if (c.usesLeft < 1) throw new Refused("media credential used up");
    if (c.expiresAt <= nowIso) throw new Refused("media credential expired");
    spend = c.id;
    device = await matchDevice(s, inv);
    assurance = "media";
  } else {
    // Pre-approval trusts the MAC and UUID a machine claims — spoofable on the wire — so it
    // serves one enrollment only, every identifier on record must match, and it proves no more
    // than a boot token: `sniffable`. (`approved` is an administrator approving an enrollment.)
    device = await matchDevice(s, inv);
    if (!device) throw new Refused("no pre-approved device with these identifiers");
    assurance = "sniffable";
  }
  if (device && cred.kind === "pre-approved" && (await s.deviceTpm.of(device.id))) {
    throw new Refused("the device is bound to a TPM; pre-approval does not enroll it");
  }
  // A device enrolling again soon after a filter approval contests it: the real machine after an
  // impostor, or an impostor after the real machine — the site cannot tell which was which.
  if (device) {
    const contested = await s.deviceTpm.filterApprovedSince(device.id, new Date(now.getTime() - FILTER_APPROVAL_WATCH_MS).toISOString(), nowIso);
    if (contested) {
      await site.db.transaction(async (tx) => {
        const t = stores(tx);
        await t.certificates.setStatus(contested, "revoked", "contested", nowIso);
        await t.devices.update(device!.id, { state: "blocked" }, nowIso);
        await site.audit.append({ actor: "system", action: "enrollment.contested", outcome: "denied", object: `device:${device!.id}`,
          details: { revoked: contested, reason: "the device enrolled again within the hour after its enrollment was approved by a filter: one of the two was an impostor; the device is blocked until an administrator approves it", ip, macs: inv.macs } }, tx);
      });
      throw new Refused(`the device's enrollment approved by a filter (${contested}) is contested by this one; both are refused and the device is blocked`);
    }
  }
  // With TPM manufacturer roots configured, an EK is recorded only with an EK certificate chaining to one.
  const ekUncertified = tpm.proven && tpm.onRecord === null ? ekCertificateRefusal(await s.deviceTpm.roots(), tpm.proven.spki, body.tpm?.ekCertificate) : null;
  const seen = device ? await s.devices.enrollmentOf(device.id) : undefined;
  if (device) {
    const no = await refusal(s, device, seen!, cred.kind, nowIso);
    if (no) throw no;
  }

  return site.db.transaction(async (tx) => {
    const t = stores(tx);
    // Two machines racing with one single-use token: the conditional update lets one win.
    if (spend && !(await t.enrollment.spend(spend, nowIso))) throw new Refused("credential already spent");
    const attrs = inventoryAttributes(inv);
    let d: Device;
    if (device) {
      // Claim the device (on PostgreSQL this also locks its row), then ask again: an
      // administrator may have blocked or revoked in the meantime, another enrollment won.
      if (!(await t.devices.claimEnrollment(device.id, { seen: seen!.enrollments, preApproval: cred.kind === "pre-approved", now: nowIso, assurance }))) {
        throw new Refused("another enrollment of this device won the race");
      }
      const current = await t.devices.byId(device.id);
      if (!current) throw new Refused("device deleted");
      const no = await refusal(t, current, seen!, cred.kind, nowIso);
      if (no) throw no;
      d = (await t.devices.update(current.id, {
        attributes: { ...current.attributes, ...attrs }, serial: inv.serial ?? current.serial,
      }, nowIso))!;
    } else {
      // A media credential is the administrator's decision to admit whatever boots the media.
      const base = inv.serial ? `serial-${inv.serial}` : `mac-${inv.macs[0].replace(/:/g, "")}`;
      const name = (await t.devices.byName(base)) ? `${base}-${nowIso.slice(0, 19).replace(/\D/g, "")}` : base;
      // None of its MACs or its UUID is on record (matchDevice looked), so all are free.
      d = await t.devices.create({ name, macs: inv.macs, smbiosUuid: inv.smbiosUuid ?? null,
        serial: inv.serial ?? null, state: "approved", attributes: attrs }, nowIso);
      await t.devices.claimEnrollment(d.id, { seen: 0, preApproval: false, now: nowIso, assurance });
    }
    let issued;
    try {
      issued = await issueClientCertificate(site.keys.ca, { csrPem: body.csr, commonName: `device:${d.id}`, uri: `urn:slipway:device:${d.id}`, validDays: DEVICE_CERT_DAYS, now: site.now() });
    } catch (err) {
      if (err instanceof CertificateRequestError) throw new SlipwayError("CSR_INVALID", `The certificate request is not valid: ${err.message}`);
      throw err;
    }
    // A live certificate of higher assurance is not displaced by a weaker enrollment: an
    // attacker with a sniffed MAC and UUID cannot end a TPM- or password-enrolled identity.
    const stronger = (await t.certificates.list({ deviceId: d.id }))
      .find((c) => c.status === "active" && c.notAfter > nowIso && assuranceRank(c.assurance) > assuranceRank(assurance));
    if (stronger) {
      throw new Refused(`the device holds a live certificate (${stronger.serial}) of assurance ${stronger.assurance}; a ${assurance} enrollment does not displace it`);
    }
    // The EK is recorded by the first enrollment that proves it and is more than sniffable.
    let ekRecorded: string | null = null;
    let ekRefused: string | null = null;
    if (tpm.proven && tpm.onRecord === null && mayReceiveSecrets(assurance)) {
      const holder = await t.deviceTpm.deviceByFingerprint(tpm.proven.fingerprint);
      if (holder && holder !== d.id) ekRefused = `the endorsement key is bound to device ${holder}`;
      else if (ekUncertified) ekRefused = ekUncertified;
      else if (await t.deviceTpm.recordIfNone(d.id, { ek: tpm.proven.spki, fingerprint: tpm.proven.fingerprint, source: assurance, recordedAt: nowIso, recordedBy: `device:${d.id}` })) {
        ekRecorded = tpm.proven.fingerprint;
      }
    }
    // One live identity per device: the new certificate supersedes every earlier one.
    const superseded = await t.certificates.supersedeDevice(d.id, nowIso);
    await t.certificates.add({
      serial: issued.serial, fingerprint: issued.fingerprint, kind: "device", deviceId: d.id, subject: `device:${d.id}`,
      notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString(), issuedVia: cred.kind, createdAt: nowIso, assurance,
    });
    // A sniffable enrollment keeps the EK it proved on its certificate: an administrator who
    // approves that enrollment (POST /api/v1/enrollments/approve) records it then.
    if (tpm.proven && !ekRecorded && tpm.onRecord === null && !mayReceiveSecrets(assurance) && !ekUncertified) await t.deviceTpm.noteProven(issued.serial, { ...tpm.proven, certificate: body.tpm?.ekCertificate });
    if (tpm.proven && !ekRecorded && tpm.onRecord === null && ekUncertified) ekRefused ??= ekUncertified;
    await site.audit.append({ actor: machine, action: "device.enroll", object: `device:${d.id}`,
      details: { via: cred.kind, assurance, serial: issued.serial, ip, expiresAt: issued.notAfter.toISOString(), superseded, preApprovalSpent: seen?.preApproved ?? false,
        ...(tpm.proven || tpm.onRecord ? { tpm: { proven: tpm.proven?.fingerprint ?? null, onRecord: tpm.onRecord,
          ...(tpm.onRecord && tpm.proven?.fingerprint !== tpm.onRecord ? { warning: tpm.proven ? "the machine proved another endorsement key than the one on record" : "the device has an endorsement key on record and the machine proved none" } : {}),
          ...(ekRecorded ? { recorded: ekRecorded } : {}), ...(ekRefused ? { notRecorded: ekRefused } : {}) } } : {}) } }, tx);
    return { deviceId: d.id, deviceName: d.name, certificate: issued.certPem, caCertificate: site.keys.ca.certPem, serial: issued.serial, expiresAt: issued.notAfter.toISOString(), assurance, awaitingApproval: false };
  }).then(async (e) => {
    // Whether approving this enrollment would give the machine something to run: a deployment its assurance withholds.
    if (mayReceiveSecrets(e.assurance)) return e;
    const device = await stores(site.db).devices.byId(e.deviceId);
    if (!device) return e;
    const input = await policyInput(site, device, "pxe", e.assurance);
    const all = compilePolicy({ ...input, assurance: "tpm" }).deployments.length;
    const mine = compilePolicy(input).deployments.length;
    return { ...e, awaitingApproval: all > mine };
  });
}
