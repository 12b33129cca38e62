/**
 * The PXE responder: ProxyDHCP beside the site's DHCP server (ports 67 and 4011), or full
 * DHCP for an isolated lab. It listens only on the chosen links — each socket bound to its
 * device — answers only machines the unknown-computer policy admits, offers the iPXE loader
 * for the firmware, and hands iPXE the URL of its boot script. Relayed requests (giaddr set)
 * are answered through the relay, and only from relays configured by address: anything else
 * could make us send to any address it names. Every decision is audited, at most once per
 * machine and decision every few minutes so a flood cannot fill the log; memory stays bounded.
 *
 * Lab DHCP follows RFC 2131 §4.3 against a client that lies: an OFFER reserves its address
 * only briefly; RELEASE and DECLINE count only when they name the lease the sender's MAC holds
 * and this server (a RELEASE also from that address); a declined address rests; NAKs are
 * broadcast; no device, and no crowd of pending devices, can take the whole pool.
 */
import type dgram from "node:dgram";
import type { Site } from "../site/site.ts";
import { stores } from "../../storage/stores.ts";
import {
  buildReply, clientArch, clientUuid, decodeDhcp, encodeDhcp, encodePxeVendorOptions, isIpxe,
  messageType, optionData, vendorClass, DhcpMessageType, DhcpOption, PxeDiscoveryControl, PxeVendorOption, type DhcpMessage, type DhcpOptionEntry,
} from "../../protocol/dhcp.ts";
import { ReplyTemplate, replyShape } from "../../protocol/dhcp-reply-template.ts";
import { BootIdentityCache } from "./boot-identity-cache.ts";
import { DecodeError } from "../../protocol/reader.ts";
import { decideBoot, firmwareOf, LOADERS, type FirmwareKind, type UnknownPolicy } from "../../domain/pxe.ts";
import { chooseAddress, inRange, intToIp, ipToInt, rangeSize, type IpRange } from "../../domain/ip-pool.ts";
import type { Device } from "../../domain/device.ts";

export type PxeLink = { name: string; address: string; netmask: string };
export type OpenUdp = (opts: { interface: string | null; port: number; address?: string; broadcast?: boolean; reuseAddr?: boolean }) => Promise<dgram.Socket>;

export type PxeResponderOptions = {
  site: Site;
  links: PxeLink[];
  mode: "proxy" | "dhcp";
  unknown: UnknownPolicy;
  /** Base URL of the boot script server as seen from a link, e.g. http://10.0.0.1:8080. */
  bootBaseUrl(link: PxeLink): string;
  openSocket: OpenUdp;
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
export type PxeResponder = { stats: PxeStats; close(): Promise<void> };

const AUDIT_EVERY_MS = 5 * 60_000;
const AUDIT_MEMORY = 10_000;
/** Addresses one device may have declined and still resting: more is a client burning the pool. */
const MAX_DECLINED_PER_DEVICE = 3;
const NO_ADDRESS = "0.0.0.0";
/** Devices not yet approved hold at most this share of a pool, so approved machines always find one. */
const UNAPPROVED_SHARE = 0.5;

type Identity = Pick<Device, "id" | "name" | "state">;
type LeaseResult = { ip?: string; nak?: boolean; refused?: string };

/** An option carrying one IPv4 address (50, 54), or undefined when absent or not 4 bytes. */
function ipOptionOf(req: DhcpMessage, code: number): string | undefined {
  const b = optionData(req, code);
  return b?.length === 4 ? intToIp(new DataView(b.buffer, b.byteOffset).getUint32(0)) : undefined;
}

export async function startPxeResponder(opts: PxeResponderOptions): Promise<PxeResponder> {
  const { site } = opts;
  const s = stores(site.db);
  const relays = new Set(opts.relays ?? []);
  const offerSeconds = opts.offerSeconds ?? 60;
  const declineSeconds = opts.declineSeconds ?? 600;
  const stats: PxeStats = { received: 0, malformed: 0, answered: 0, ignored: 0, suppressedAudits: 0 };
  const lastAudit = new Map<string, number>();
  let recordWindow = { start: 0, count: 0 };
  const sockets: dgram.Socket[] = [];

  const identities = new BootIdentityCache({ byMac: (mac) => s.devices.bootIdentityByMac(mac), byUuid: (uuid) => s.devices.bootIdentityByUuid(uuid) });
  /** ProxyDHCP answers by link, request kind and shape: built once, patched per request. */
  const templates = new Map<string, ReplyTemplate>();

  /** Whether `key`'s decision is due an audit entry: at most one per AUDIT_EVERY_MS. */
  function auditDue(key: string): boolean {
    const now = site.now().getTime();
    const prev = lastAudit.get(key);
    if (prev !== undefined && now - prev < AUDIT_EVERY_MS) {
      stats.suppressedAudits++;
      return false;
    }
    lastAudit.delete(key);
    lastAudit.set(key, now);
    // Oldest first in a Map: evicting from the front keeps it bounded under a flood of MACs.
    while (lastAudit.size > AUDIT_MEMORY) lastAudit.delete(lastAudit.keys().next().value!);
    return true;
  }

  function audit(key: string, event: Parameters<Site["audit"]["append"]>[0]): void {
    // Batched: a burst of first-time machines costs one commit, not one per machine.
    if (auditDue(key)) site.audit.appendSoon(event);
  }

  /** Records an unknown machine, or says which limit refused it. */
  async function record(mac: string, uuid: string | undefined, firmware: string, link: PxeLink, state: "pending" | "approved"): Promise<Identity | { refused: string }> {
    const now = site.now();
    const perMinute = opts.recordPerMinute ?? 30;
    if (now.getTime() - recordWindow.start > 60_000) recordWindow = { start: now.getTime(), count: 0 };
    if (recordWindow.count >= perMinute) return { refused: `more than ${perMinute} unknown machines this minute; not recording more for now` };
    if (state === "pending") {
      const pending = (await site.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE state = 'pending'`))?.n ?? 0;
      const max = opts.maxPending ?? 1000;
      if (Number(pending) >= max) return { refused: `${max} machines already wait for approval; not recording more` };
    } else {
      // Marked at creation (attributes.recorded), so the cap counts only what this policy let in.
      const auto = (await site.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE attributes LIKE '%"recorded":"allow"%'`))?.n ?? 0;
      const max = opts.maxRecordedApproved ?? 100;
      if (Number(auto) >= max) return { refused: `${max} machines were already approved automatically (--unknown allow); not recording more until an administrator deletes some` };
    }
    recordWindow.count++;
    const nowIso = now.toISOString();
    return site.db.transaction(async (tx) => {
      const t = stores(tx);
      const known = await t.devices.byMac(mac);
      if (known) return known;
      const d = await t.devices.create({ name: `pxe-${mac.replace(/:/g, "")}`, macs: [mac], smbiosUuid: uuid && !(await t.devices.bySmbiosUuid(uuid)) ? uuid : null,
        serial: null, state, attributes: { firmware, firstSeenLink: link.name, ...(state === "approved" ? { recorded: "allow" } : {}) } }, nowIso);
      await site.audit.append({ actor: "pxe", action: "device.recorded", object: `device:${d.id}`, details: { mac, smbiosUuid: d.smbiosUuid, firmware, link: link.name, state } }, tx);
      return d;
    });
  }

  function bootOptions(ipxe: boolean, link: PxeLink, firmware: FirmwareKind): { bootfile?: string; options: DhcpOptionEntry[]; ipxeNoProxyDhcp?: boolean } | undefined {
    if (firmware === "unsupported") return undefined;
    if (ipxe) return { bootfile: `${opts.bootBaseUrl(link)}/ipxe/start`, options: [], ipxeNoProxyDhcp: true };
    if (firmware === "uefi-http") return { bootfile: `${opts.bootBaseUrl(link)}/ipxe/loaders/${opts.uefiLoader ?? LOADERS.uefi}`, options: [] };
    // Firmware PXE: take the boot file from this offer, no boot server discovery (PXE 2.1 §2.4).
    const vendor = encodePxeVendorOptions([[PxeVendorOption.DiscoveryControl, Uint8Array.of(PxeDiscoveryControl.UseBootfile)]]);
    return { bootfile: firmware === "bios" ? LOADERS.bios : (opts.uefiLoader ?? LOADERS.uefi), options: [{ code: DhcpOption.VendorSpecific, data: vendor }] };
  }

  /** Where a reply goes (RFC 2131 §4.1); giaddr was checked against the configured relays. */
  function destination(req: DhcpMessage, rinfo: dgram.RemoteInfo, viaProxyPort: boolean, nak: boolean): { address: string; port: number } {
    if (req.giaddr !== NO_ADDRESS) return { address: req.giaddr, port: 67 };
    if (viaProxyPort) return { address: rinfo.address, port: rinfo.port };
    // A NAK is always broadcast when giaddr is 0: the client's ciaddr is exactly what is wrong.
    if (req.ciaddr !== NO_ADDRESS && !nak) return { address: req.ciaddr, port: 68 };
    return { address: "255.255.255.255", port: 68 };
  }

  function rangeOf(link: PxeLink): IpRange | undefined {
    const mask = ipToInt(link.netmask);
    const net = (ipToInt(link.address) & mask) >>> 0;
    return opts.ranges?.find((r) => ((r.first & mask) >>> 0) === net && ((r.last & mask) >>> 0) === net);
  }

  /** Addresses of the server itself on a link, never handed out. */
  function serverAddresses(link: PxeLink): string[] {
    return [link.address, ...(opts.router ? [opts.router] : []), ...(opts.dns ?? [])];
  }

  /**
   * The address for `mac` — for a DISCOVER reserved for `offerSeconds`, for a REQUEST bound for
   * the lease time — in one transaction, so two machines asking for the same address at once
   * cannot both get it (the second is NAKed and starts over, as RFC 2131 §3.1 expects).
   * Nothing held by another client's unexpired lease or offer, nothing declined and none of the
   * server's own addresses is offered (§4.3.1); a new address is refused beyond the device's
   * share of the pool.
   */
  function lease(link: PxeLink, mac: string, device: Identity, requested: string | undefined, request: boolean, leaseSeconds: number): Promise<LeaseResult> {
    const range = rangeOf(link);
    if (!range) return Promise.resolve({});
    return site.db.transaction(async (tx): Promise<LeaseResult> => {
      const t = stores(tx);
      const now = site.now();
      const nowIso = now.toISOString();
      await t.leases.deleteExpired(nowIso);
      const rows = await t.leases.all();
      const own = rows.find((l) => l.mac === mac);
      const taken = new Set<string>(serverAddresses(link));
      const remembered = new Set<string>();
      for (const l of rows) if (l.mac !== mac) (l.state === "released" ? remembered : taken).add(l.ip);
      for (const ip of await t.leases.declined()) taken.add(ip);
      if (!own || own.state === "released") {
        const refused = await newAddressRefused(t, range, device, mac);
        if (refused) return { refused };
      }
      const ip = chooseAddress(range, { taken, remembered }, own?.ip, requested);
      if (!ip) return {};
      if (request && requested && requested !== ip) return { ip, nak: true };
      if (request) await t.leases.put({ mac, ip, state: "bound", deviceId: device.id, expiresAt: new Date(now.getTime() + leaseSeconds * 1000).toISOString() }, nowIso);
      else if (!(own?.state === "bound" && own.ip === ip)) {
        await t.leases.put({ mac, ip, state: "offered", deviceId: device.id, expiresAt: new Date(now.getTime() + offerSeconds * 1000).toISOString() }, nowIso);
      }
      return { ip };
    });
  }

  /**
   * Why `mac` may not take a new address, or undefined. Each MAC on a device's record may hold
   * one; a device recognised only by its SMBIOS UUID (which any machine can send) gets one
   * address for all its unrecorded MACs; devices awaiting approval share half the pool.
   */
  async function newAddressRefused(t: ReturnType<typeof stores>, range: IpRange, device: Identity, mac: string): Promise<string | undefined> {
    if (!(await t.leases.macOnRecord(device.id, mac)) && (await t.leases.heldForUnrecordedMacs(device.id, mac)) >= 1) {
      return "the device already holds an address for a MAC not on its record";
    }
    if (device.state !== "approved" && (await t.leases.heldByUnapproved()).filter((ip) => inRange(range, ip)).length >= Math.floor(rangeSize(range) * UNAPPROVED_SHARE)) {
      return "devices awaiting approval already hold half of the pool";
    }
    return undefined;
  }

  /**
   * DHCPRELEASE (§4.3.4) and DHCPDECLINE (§4.3.3) count only when they name this server and
   * the lease the sender's MAC holds: a RELEASE with that lease's address in ciaddr, sent from
   * it (or through a configured relay); a DECLINE with it as the requested address. Anything
   * else — no ciaddr, no server identifier, another client's address — changes nothing.
   */
  async function releaseOrDecline(link: PxeLink, req: DhcpMessage, rinfo: dgram.RemoteInfo, mac: string): Promise<void> {
    const type = messageType(req);
    const serverId = ipOptionOf(req, DhcpOption.ServerId);
    const relayed = req.giaddr !== NO_ADDRESS;
    const nowIso = site.now().toISOString();
    if (type === DhcpMessageType.Release) {
      const ok = serverId === link.address && req.ciaddr !== NO_ADDRESS && (relayed || rinfo.address === req.ciaddr) &&
        (await s.leases.release(mac, req.ciaddr, nowIso));
      if (!ok) {
        stats.ignored++;
        audit(`release-refused:${link.name}`, { actor: "pxe", action: "dhcp.release-refused", object: `mac:${mac}`, outcome: "denied",
          details: { mac, ciaddr: req.ciaddr, serverId: serverId ?? null, from: rinfo.address, link: link.name, reason: "names no lease this MAC holds from this server" } });
      }
      return;
    }
    const ip = ipOptionOf(req, DhcpOption.RequestedIp);
    const outcome = await site.db.transaction(async (tx): Promise<"declined" | "refused" | "too-many"> => {
      const t = stores(tx);
      const held = await t.leases.byMac(mac);
      if (serverId !== link.address || !ip || req.ciaddr !== NO_ADDRESS || held?.state !== "bound" || held.ip !== ip) return "refused";
      if (held.deviceId && (await t.leases.declinedBy(held.deviceId)) >= MAX_DECLINED_PER_DEVICE) return "too-many";
      await t.leases.decline(mac, ip, held.deviceId, new Date(site.now().getTime() + declineSeconds * 1000).toISOString());
      return "declined";
    });
    if (outcome === "declined") {
      // The server MUST mark the address not available and SHOULD tell an administrator (§4.3.3).
      audit(`declined:${ip}`, { actor: "pxe", action: "dhcp.declined", object: `mac:${mac}`, outcome: "failure",
        details: { mac, ip, link: link.name, restsSeconds: declineSeconds, reason: "the client found the address in use: another machine on the link has it" } });
      return;
    }
    stats.ignored++;
    audit(`decline-refused:${link.name}`, { actor: "pxe", action: "dhcp.decline-refused", object: `mac:${mac}`, outcome: "denied",
      details: { mac, ip: ip ?? null, serverId: serverId ?? null, link: link.name,
        reason: outcome === "too-many" ? `the device already declined ${MAX_DECLINED_PER_DEVICE} addresses that still rest` : "names no lease this MAC holds from this server" } });
  }

  function ipOption(code: number, ips: string[]): DhcpOptionEntry {
    const data = new Uint8Array(ips.length * 4);
    ips.forEach((ip, i) => new DataView(data.buffer).setUint32(i * 4, ipToInt(ip)));
    return { code, data };
  }
  function u32Option(code: number, n: number): DhcpOptionEntry {
    const data = new Uint8Array(4);
    new DataView(data.buffer).setUint32(0, n);
    return { code, data };
  }

  async function handle(link: PxeLink, socket: dgram.Socket, bytes: Buffer, rinfo: dgram.RemoteInfo, viaProxyPort: boolean): Promise<void> {
    stats.received++;
    let req: DhcpMessage;
    try {
      req = decodeDhcp(bytes);
    } catch (err) {
      if (err instanceof DecodeError) {
        stats.malformed++;
        return;
      }
      throw err;
    }
    const type = messageType(req);
    if (req.op !== 1 || !req.mac || (type !== DhcpMessageType.Discover && type !== DhcpMessageType.Request && type !== DhcpMessageType.Release && type !== DhcpMessageType.Decline)) {
      stats.ignored++;
      return;
    }
    // Read the vendor class once: it decides PXE-ness, HTTP boot and the loader.
    const vendor = vendorClass(req);
    const httpClient = vendor?.startsWith("HTTPClient") ?? false;
    const pxe = httpClient || (vendor?.startsWith("PXEClient") ?? false);
    if (opts.mode === "proxy" && (!pxe || (type === DhcpMessageType.Request && !viaProxyPort) || type === DhcpMessageType.Release || type === DhcpMessageType.Decline)) {
      stats.ignored++;
      return;
    }
    const mac = req.mac;
    // Only a relay configured by address may set giaddr (and the datagram must come from one):
    // we answer to giaddr, so anyone else could aim our replies at any host.
    if (req.giaddr !== NO_ADDRESS && !(relays.has(req.giaddr) && relays.has(rinfo.address))) {
      stats.ignored++;
      audit(`relay-refused:${link.name}`, { actor: "pxe", action: "pxe.refused", object: `mac:${mac}`, outcome: "denied",
        details: { mac, giaddr: req.giaddr, from: rinfo.address, link: link.name, reason: "relayed by an address not configured as a relay (--dhcp-relay)" } });
      return;
    }
    if (type === DhcpMessageType.Release || type === DhcpMessageType.Decline) {
      await releaseOrDecline(link, req, rinfo, mac);
      return;
    }
    let uuid: string | undefined;
    try {
      uuid = clientUuid(req);
    } catch {
      uuid = undefined;
    }
    if (uuid === "00000000-0000-0000-0000-000000000000") uuid = undefined;
    // From memory when it can: no await, so a known machine is answered in this same turn.
    const cached = identities.peek(mac, uuid);
    let device = cached === undefined ? await identities.get(mac, uuid) : (cached ?? undefined);
    const decision = decideBoot(device, opts.unknown);
    const firmware = firmwareOf(clientArch(req), httpClient);
    const auditBase = { actor: "pxe", object: device ? `device:${device.id}` : `mac:${mac}` };
    if (decision === "ignore") {
      stats.ignored++;
      const why = device ? (device.state === "blocked" ? "blocked" : "pending (unknown-computer policy deny)") : "unknown computer (policy deny)";
      audit(`${mac}:ignore`, { ...auditBase, action: "pxe.refused", outcome: "denied", details: { mac, smbiosUuid: uuid ?? null, link: link.name, reason: why, relayed: req.giaddr !== "0.0.0.0" } });
      return;
    }
    if (decision === "record-pending" || decision === "record-approved") {
      if (!pxe) {
        stats.ignored++;
        return;
      }
      const recorded = await record(mac, uuid, firmware, link, decision === "record-pending" ? "pending" : "approved");
      if ("refused" in recorded) {
        stats.ignored++;
        audit(`record-limit`, { actor: "pxe", action: "pxe.refused", outcome: "denied", details: { mac, reason: recorded.refused, link: link.name } });
        return;
      }
      device = recorded;
    }
    const ipxe = pxe && isIpxe(req);
    const boot = pxe ? bootOptions(ipxe, link, firmware) : undefined;
    if (pxe && !boot) {
      stats.ignored++;
      audit(`${mac}:arch`, { ...auditBase, action: "pxe.refused", outcome: "denied", details: { mac, reason: `unsupported architecture ${clientArch(req)?.join(",")}` } });
      return;
    }

    let reply: DhcpMessage | Uint8Array;
    let nakked = false;
    if (opts.mode === "proxy") {
      // Everything in a proxy answer but the patched fields follows from this key.
      const key = `${link.name} ${type} ${firmware} ${ipxe} ${replyShape(req, vendor)}`;
      let template = templates.get(key);
      if (!template) {
        template = new ReplyTemplate(req, vendor, {
          messageType: type === DhcpMessageType.Discover ? DhcpMessageType.Offer : DhcpMessageType.Ack,
          serverId: link.address, siaddr: link.address, bootfile: boot!.bootfile, options: boot!.options, ipxeNoProxyDhcp: boot!.ipxeNoProxyDhcp,
        });
        templates.set(key, template);
      }
      reply = template.fill(req, bytes);
    } else {
      const requested = ipOptionOf(req, DhcpOption.RequestedIp) ?? (req.ciaddr !== NO_ADDRESS ? req.ciaddr : undefined);
      const serverId = ipOptionOf(req, DhcpOption.ServerId);
      if (type === DhcpMessageType.Request && serverId !== undefined && serverId !== link.address) {
        // The client chose another server's offer: ours is free again (§4.3.2); a binding stays.
        await s.leases.dropOffer(mac);
        stats.ignored++;
        return;
      }
      const leaseSeconds = opts.leaseSeconds ?? 3600;
      const { ip, nak, refused } = await lease(link, mac, device!, requested, type === DhcpMessageType.Request, leaseSeconds);
      if (refused) {
        stats.ignored++;
        // Keyed by device: random MACs sent with one SMBIOS UUID are one machine to the log.
        audit(`${device!.id}:lease-refused`, { ...auditBase, action: "dhcp.refused", outcome: "denied", details: { mac, link: link.name, reason: refused } });
        return;
      }
      if (!ip) {
        stats.ignored++;
        audit("pool-exhausted", { actor: "pxe", action: "dhcp.pool-exhausted", outcome: "failure", details: { link: link.name } });
        return;
      }
      if (nak) {
        nakked = true;
        reply = buildReply(req, { messageType: DhcpMessageType.Nak, serverId: link.address, siaddr: NO_ADDRESS });
        // Through a relay the NAK must say "broadcast it" (§4.3.2): the client has no usable address.
        if (req.giaddr !== NO_ADDRESS) reply.flags |= 0x8000;
      } else {
        reply = buildReply(req, {
          messageType: type === DhcpMessageType.Discover ? DhcpMessageType.Offer : DhcpMessageType.Ack,
          serverId: link.address, siaddr: link.address, yiaddr: ip, bootfile: boot?.bootfile, ipxeNoProxyDhcp: boot?.ipxeNoProxyDhcp,
          options: [
            ...(boot?.options ?? []),
            ipOption(DhcpOption.SubnetMask, [link.netmask]),
            ipOption(DhcpOption.Router, [opts.router ?? link.address]),
            ...(opts.dns?.length ? [ipOption(DhcpOption.DnsServers, opts.dns)] : []),
            u32Option(DhcpOption.LeaseTime, leaseSeconds),
          ],
        });
      }
    }
    const to = destination(req, rinfo, viaProxyPort, nakked);
    socket.send(reply instanceof Uint8Array ? reply : encodeDhcp(reply), to.port, to.address);
    stats.answered++;
    if (pxe && type === DhcpMessageType.Discover && auditDue(`${mac}:${decision}`)) {
      site.audit.appendSoon({ ...auditBase, action: decision === "wait" || decision === "record-pending" ? "pxe.waiting" : "pxe.offer",
        details: { mac, smbiosUuid: uuid ?? null, link: link.name, firmware, bootfile: boot?.bootfile ?? null, relayed: req.giaddr !== "0.0.0.0" } });
    }
  }

  if (opts.mode === "dhcp") {
    for (const link of opts.links) {
      if (!rangeOf(link)) throw new Error(`Cannot serve DHCP on ${link.name}: no --dhcp-range lies in its subnet ${link.address}/${link.netmask}`);
    }
  }
  for (const link of opts.links) {
    for (const port of opts.mode === "proxy" ? [67, 4011] : [67]) {
      const socket = await opts.openSocket({ interface: link.name, port, broadcast: true, reuseAddr: true });
      socket.on("message", (msg, rinfo) => {
        handle(link, socket, msg, rinfo, port === 4011).catch((err) => {
          // The accessors refuse malformed options lazily, with the codec's own error.
          if (err instanceof DecodeError) stats.malformed++;
          else site.log.error("pxe request failed", { err, link: link.name });
        });
      });
      socket.on("error", (err) => site.log.error("pxe socket error", { err, link: link.name, port }));
      sockets.push(socket);
    }
    site.log.info("pxe responder listening", { link: link.name, address: link.address, mode: opts.mode, unknown: opts.unknown });
  }

  return {
    stats,
    async close() {
      await Promise.all(sockets.map((x) => new Promise<void>((resolve) => x.close(() => resolve()))));
      await site.audit.flush();
    },
  };
}
