/**
 * What the PXE responder answers to one datagram, with no socket in sight: decode it, find
 * the machine, apply the unknown-computer policy, record it if the policy says so, choose its
 * boot file and (lab DHCP) its lease, build the reply and say where it goes. Every decision is
 * audited, at most once per machine and decision every few minutes, so a flood cannot fill
 * the log. pxe-responder.ts feeds it from the sockets and sends what it returns.
 *
 * The pieces: protocol/dhcp-server.ts (which requests count, relays, where replies go),
 * domain/pxe.ts and boot-file.ts (whom to answer, with what), machine-recorder.ts (unknown
 * machines), lab-leases.ts over domain/ip-pool.ts (addresses), protocol/pxe-reply.ts (the
 * reply), domain/audit-throttle.ts (how often a decision is audited).
 */
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { clientArch, clientUuid, decodeDhcp, encodeDhcp, isIpxe, DhcpMessageType, DhcpOption, type DhcpMessage } from "../../protocol/dhcp.ts";
import { DecodeError } from "../../protocol/reader.ts";
import { choseOtherServer, declineClaim, ipv4Option, relayAccepted, releaseClaim, replyDestination, requestedAddress, servedRequest, NO_ADDRESS } from "../../protocol/dhcp-server.ts";
import { labNak, labReply, ProxyReplies } from "../../protocol/pxe-reply.ts";
import { decideBoot, firmwareOf, type UnknownPolicy } from "../../domain/pxe.ts";
import { bootFileFor } from "../../domain/boot-file.ts";
import { rangeForSubnet, type IpRange } from "../../domain/ip-pool.ts";
import { AuditThrottle } from "../../domain/audit-throttle.ts";
import { isUnsetSmbiosUuid } from "../../domain/device.ts";
import { BootIdentityCache } from "./boot-identity-cache.ts";
import { MachineRecorder } from "./machine-recorder.ts";
import { LabLeases, MAX_DECLINED_PER_DEVICE } from "./lab-leases.ts";

export type PxeLink = { name: string; address: string; netmask: string };

export type PxeAnswererOptions = {
  site: Site;
  links: PxeLink[];
  mode: "proxy" | "dhcp";
  unknown: UnknownPolicy;
  /** Base URL of the boot script server as seen from a link, e.g. http://10.0.0.1:8080. */
  bootBaseUrl(link: PxeLink): string;
  /** Lab DHCP: the pools (each serves the link whose subnet holds it), lease time, router and DNS. */
  ranges?: IpRange[];
  leaseSeconds?: number;
  router?: string;
  dns?: string[];
  /** Firmware loader for UEFI x64 (ipxe.efi or snponly.efi). */
  uefiLoader?: string;
  /** At most this many unknown machines recorded per minute, and pending in all. */
  recordPerMinute?: number;
  maxPending?: number;
  /** `--unknown allow`: at most this many machines recorded as approved automatically, in all. */
  maxRecordedApproved?: number;
  /** Relay agents (giaddr) whose relayed requests are answered; others are ignored and audited. */
  relays?: string[];
  /** Lab DHCP: how long an OFFER reserves its address, and a DECLINEd address rests (seconds). */
  offerSeconds?: number;
  declineSeconds?: number;
};

export type PxeStats = { received: number; malformed: number; answered: number; ignored: number; suppressedAudits: number };

/** A datagram to send: its bytes and where to. */
export type PxeAnswer = { bytes: Uint8Array; to: { address: string; port: number } };

export type PxeAnswerer = {
  stats: PxeStats;
  /**
   * The answer to `bytes`, received on `link` from `from` (on port 4011 when `viaProxyPort`),
   * or undefined when it gets none. Malformed requests are counted, never thrown.
   */
  answer(link: PxeLink, bytes: Uint8Array, from: { address: string; port: number }, viaProxyPort: boolean): Promise<PxeAnswer | undefined>;
};

const AUDIT_EVERY_MS = 5 * 60_000;
const AUDIT_MEMORY = 10_000;

/** Throws when lab DHCP has a link with no pool in its subnet: checked once, at start. */
export function createPxeAnswerer(opts: PxeAnswererOptions): PxeAnswerer {
  const { site } = opts;
  const s = stores(site.db);
  const relays = new Set(opts.relays ?? []);
  const stats: PxeStats = { received: 0, malformed: 0, answered: 0, ignored: 0, suppressedAudits: 0 };
  const throttle = new AuditThrottle({ everyMs: AUDIT_EVERY_MS, maxKeys: AUDIT_MEMORY });
  const identities = new BootIdentityCache({ byMac: (mac) => s.devices.bootIdentityByMac(mac), byUuid: (uuid) => s.devices.bootIdentityByUuid(uuid) });
  const recorder = new MachineRecorder({ db: site.db, audit: site.audit, now: site.now, perMinute: opts.recordPerMinute, maxPending: opts.maxPending, maxRecordedApproved: opts.maxRecordedApproved });
  const leases = new LabLeases({ db: site.db, now: site.now, offerSeconds: opts.offerSeconds, declineSeconds: opts.declineSeconds });
  const proxyReplies = new ProxyReplies();
  const ranges = new Map<string, IpRange>();
  if (opts.mode === "dhcp") {
    for (const link of opts.links) {
      const range = rangeForSubnet(opts.ranges ?? [], link.address, link.netmask);
      if (!range) throw new Error(`Cannot serve DHCP on ${link.name}: no --dhcp-range lies in its subnet ${link.address}/${link.netmask}`);
      ranges.set(link.name, range);
    }
  }

  /** Whether `key`'s decision is due an audit entry: at most one per AUDIT_EVERY_MS. */
  function auditDue(key: string): boolean {
    if (throttle.due(key, site.now().getTime())) return true;
    stats.suppressedAudits++;
    return false;
  }

  function audit(key: string, event: Parameters<Site["audit"]["append"]>[0]): void {
    // Batched: a burst of first-time machines costs one commit, not one per machine.
    if (auditDue(key)) site.audit.appendSoon(event);
  }

  /**
   * DHCPRELEASE and DHCPDECLINE count only when they name this server and the lease the
   * sender's MAC holds; anything else — no ciaddr, no server identifier, another client's
   * address — changes nothing, and is audited as refused.
   */
  async function releaseOrDecline(link: PxeLink, req: DhcpMessage, type: number, from: string, mac: string): Promise<void> {
    const serverId = ipv4Option(req, DhcpOption.ServerId);
    if (type === DhcpMessageType.Release) {
      const ip = releaseClaim(req, from, link.address);
      if (!(ip && (await leases.release(mac, ip)))) {
        stats.ignored++;
        audit(`release-refused:${link.name}`, { actor: "pxe", action: "dhcp.release-refused", object: `mac:${mac}`, outcome: "denied",
          details: { mac, ciaddr: req.ciaddr, serverId: serverId ?? null, from, link: link.name, reason: "names no lease this MAC holds from this server" } });
      }
      return;
    }
    const ip = declineClaim(req, link.address);
    const outcome = ip ? await leases.decline(mac, ip) : "refused";
    if (outcome === "declined") {
      // The server MUST mark the address not available and SHOULD tell an administrator (§4.3.3).
      audit(`declined:${ip}`, { actor: "pxe", action: "dhcp.declined", object: `mac:${mac}`, outcome: "failure",
        details: { mac, ip, link: link.name, restsSeconds: leases.declineSeconds, reason: "the client found the address in use: another machine on the link has it" } });
      return;
    }
    stats.ignored++;
    audit(`decline-refused:${link.name}`, { actor: "pxe", action: "dhcp.decline-refused", object: `mac:${mac}`, outcome: "denied",
      details: { mac, ip: ipv4Option(req, DhcpOption.RequestedIp) ?? null, serverId: serverId ?? null, link: link.name,
        reason: outcome === "too-many" ? `the device already declined ${MAX_DECLINED_PER_DEVICE} addresses that still rest` : "names no lease this MAC holds from this server" } });
  }

  async function answer(link: PxeLink, bytes: Uint8Array, from: { address: string; port: number }, viaProxyPort: boolean): Promise<PxeAnswer | undefined> {
    stats.received++;
    const req = decodeDhcp(bytes);
    const served = servedRequest(req, opts.mode, viaProxyPort);
    if (!served) {
      stats.ignored++;
      return undefined;
    }
    const { type, mac, vendor, httpClient, pxe } = served;
    const relayed = req.giaddr !== NO_ADDRESS;
    if (!relayAccepted(req, from.address, relays)) {
      stats.ignored++;
      audit(`relay-refused:${link.name}`, { actor: "pxe", action: "pxe.refused", object: `mac:${mac}`, outcome: "denied",
        details: { mac, giaddr: req.giaddr, from: from.address, link: link.name, reason: "relayed by an address not configured as a relay (--dhcp-relay)" } });
      return undefined;
    }
    if (type === DhcpMessageType.Release || type === DhcpMessageType.Decline) {
      await releaseOrDecline(link, req, type, from.address, mac);
      return undefined;
    }
    let uuid: string | undefined;
    try {
      uuid = clientUuid(req);
    } catch {
      uuid = undefined;
    }
    // SMBIOS's "not set" and "not present" UUIDs (all zeros, all ones) name no machine: absent, as everywhere.
    if (uuid && isUnsetSmbiosUuid(uuid)) uuid = undefined;
    // From memory when it can: no await, so a known machine is answered in this same turn.
    const cached = identities.peek(mac, uuid);
    let device = cached === undefined ? await identities.get(mac, uuid) : (cached ?? undefined);
    const decision = decideBoot(device, opts.unknown);
    const firmware = firmwareOf(clientArch(req), httpClient);
    const auditBase = { actor: "pxe", object: device ? `device:${device.id}` : `mac:${mac}` };
    if (decision === "ignore") {
      stats.ignored++;
      const why = device ? (device.state === "blocked" ? "blocked" : "pending (unknown-computer policy deny)") : "unknown computer (policy deny)";
      audit(`${mac}:ignore`, { ...auditBase, action: "pxe.refused", outcome: "denied", details: { mac, smbiosUuid: uuid ?? null, link: link.name, reason: why, relayed } });
      return undefined;
    }
    if (decision === "record-pending" || decision === "record-approved") {
      if (!pxe) {
        stats.ignored++;
        return undefined;
      }
      const recorded = await recorder.record({ mac, uuid, firmware, link: link.name }, decision === "record-pending" ? "pending" : "approved");
      if ("refused" in recorded) {
        stats.ignored++;
        audit(`record-limit`, { actor: "pxe", action: "pxe.refused", outcome: "denied", details: { mac, reason: recorded.refused, link: link.name } });
        return undefined;
      }
      device = recorded;
    }
    const ipxe = pxe && isIpxe(req);
    const boot = pxe ? bootFileFor(firmware, ipxe, opts.bootBaseUrl(link), opts.uefiLoader) : undefined;
    if (pxe && !boot) {
      stats.ignored++;
      audit(`${mac}:arch`, { ...auditBase, action: "pxe.refused", outcome: "denied", details: { mac, reason: `unsupported architecture ${clientArch(req)?.join(",")}` } });
      return undefined;
    }

    let reply: Uint8Array;
    let nak = false;
    if (opts.mode === "proxy") {
      reply = proxyReplies.answer(req, bytes, vendor, link, type, boot!);
    } else {
      if (choseOtherServer(req, link.address)) {
        await leases.dropOffer(mac);
        stats.ignored++;
        return undefined;
      }
      const leaseSeconds = opts.leaseSeconds ?? 3600;
      const range = ranges.get(link.name)!;
      const serverAddresses = [link.address, ...(opts.router ? [opts.router] : []), ...(opts.dns ?? [])];
      const got = await leases.lease({ range, serverAddresses, mac, device: device!, requested: requestedAddress(req), request: type === DhcpMessageType.Request, leaseSeconds });
      if (got.refused) {
        stats.ignored++;
        // Keyed by device: random MACs sent with one SMBIOS UUID are one machine to the log.
        audit(`${device!.id}:lease-refused`, { ...auditBase, action: "dhcp.refused", outcome: "denied", details: { mac, link: link.name, reason: got.refused } });
        return undefined;
      }
      if (!got.ip) {
        stats.ignored++;
        audit("pool-exhausted", { actor: "pxe", action: "dhcp.pool-exhausted", outcome: "failure", details: { link: link.name } });
        return undefined;
      }
      nak = got.nak === true;
      reply = encodeDhcp(nak ? labNak(req, link.address)
        : labReply(req, type, link.address, { ip: got.ip, netmask: link.netmask, router: opts.router ?? link.address, dns: opts.dns ?? [], leaseSeconds }, boot));
    }
    stats.answered++;
    if (pxe && type === DhcpMessageType.Discover && auditDue(`${mac}:${decision}`)) {
      site.audit.appendSoon({ ...auditBase, action: decision === "wait" || decision === "record-pending" ? "pxe.waiting" : "pxe.offer",
        details: { mac, smbiosUuid: uuid ?? null, link: link.name, firmware, bootfile: boot?.path ?? null, relayed } });
    }
    return { bytes: reply, to: replyDestination(req, from, viaProxyPort, nak) };
  }

  return {
    stats,
    async answer(link, bytes, from, viaProxyPort) {
      try {
        return await answer(link, bytes, from, viaProxyPort);
      } catch (err) {
        // The decoder and the option accessors (lazily) refuse malformed input with the codec's own error.
        if (err instanceof DecodeError) {
          stats.malformed++;
          return undefined;
        }
        throw err;
      }
    },
  };
}
