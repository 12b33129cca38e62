/**
 * Who is calling the management point: the device — or distribution point — named by the TLS
 * client certificate. Checked on every request — not once per connection — so blocking a
 * device or its certificate takes effect on the very next request, keep-alive connections
 * included. Which routes each kind may use is the server's authorize hook's decision.
 */
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { createHash } from "node:crypto";
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import type { Device } from "../../domain/device.ts";
import type { CertificateRecord } from "../../storage/certificate-store.ts";
import type { DistributionPoint } from "../../storage/distribution-point-store.ts";

export type DevicePrincipal = { kind: "device"; device: Device; certificate: CertificateRecord };
export type DpPrincipal = { kind: "dp"; dp: DistributionPoint; certificate: CertificateRecord };
export type MpPrincipal = DevicePrincipal | DpPrincipal;

const TOUCH_EVERY_MS = 60_000;

/** The reason a presented certificate is refused, or the device or distribution point it proves. */
export async function principalFromRequest(site: Site, req: IncomingMessage): Promise<MpPrincipal | SlipwayError> {
  const socket = req.socket as TLSSocket;
  const peer = typeof socket.getPeerCertificate === "function" ? socket.getPeerCertificate() : null;
  if (!peer || !peer.raw) return new SlipwayError("CERTIFICATE_REQUIRED");
  // The TLS layer checked the chain to the site CA (requestCert with the CA as the only trust root).
  if (!socket.authorized) return new SlipwayError("CERTIFICATE_REQUIRED", "The certificate is not issued by this site's CA or has expired");
  const fp = createHash("sha256").update(peer.raw).digest("hex");
  const s = stores(site.db);
  const cert = await s.certificates.byFingerprint(fp);
  if (!cert) return new SlipwayError("CERTIFICATE_REQUIRED", "The certificate is unknown to this site");
  const now = site.now();
  if (cert.notAfter <= now.toISOString()) return new SlipwayError("CERTIFICATE_REQUIRED", "The certificate has expired; enroll again");
  if (cert.status !== "active") {
    const why = cert.status === "revoked" && cert.statusReason === "superseded" ? " (superseded by a newer certificate)" : cert.statusReason ? ` (${cert.statusReason})` : "";
    // The status in details too: a distribution point stops for good only on "revoked" (a block can be lifted).
    return new SlipwayError("DEVICE_BLOCKED", `Certificate ${cert.serial} is ${cert.status}${why}`, { certificate: cert.status });
  }
  const stale = !cert.lastUsedAt || now.getTime() - Date.parse(cert.lastUsedAt) > TOUCH_EVERY_MS;
  if (cert.kind === "dp" && cert.dpId) {
    const dp = await s.distributionPoints.byId(cert.dpId);
    if (!dp) return new SlipwayError("CERTIFICATE_REQUIRED", "The certificate's distribution point is no longer registered");
    if (stale) await s.certificates.touch(cert.serial, now.toISOString());
    // Policies leave out DPs not heard from lately: throttle by the DP's own record, not the certificate's.
    if (!dp.lastSeenAt || now.getTime() - Date.parse(dp.lastSeenAt) > TOUCH_EVERY_MS) await s.distributionPoints.touch(dp.id, now.toISOString());
    return { kind: "dp", dp, certificate: cert };
  }
  if (cert.kind !== "device" || !cert.deviceId) return new SlipwayError("CERTIFICATE_REQUIRED", "The certificate is not a client certificate of this site");
  const device = await s.devices.byId(cert.deviceId);
  if (!device) return new SlipwayError("CERTIFICATE_REQUIRED", "The certificate's device no longer exists");
  if (device.state === "blocked") return new SlipwayError("DEVICE_BLOCKED");
  // Every enrollment needs an approved device, so a pending one with a live certificate was
  // unapproved since: an administrator withdrew the approval, and its identity waits with it.
  if (device.state !== "approved") return new SlipwayError("DEVICE_BLOCKED", "The device is not approved; an administrator must approve it again");
  if (stale) {
    await s.certificates.touch(cert.serial, now.toISOString());
    await s.devices.update(device.id, { lastSeenAt: now.toISOString() }, now.toISOString());
  }
  return { kind: "device", device, certificate: cert };
}
