/**
 * The PXE responder: ProxyDHCP beside the site's DHCP server (ports 67 and 4011), or full
 * DHCP for an isolated lab. It listens only on the chosen links — each socket bound to its
 * device — answers only machines the unknown-computer policy admits, offers the iPXE loader
 * for the firmware, and hands iPXE the URL of its boot script. Relayed requests (giaddr set)
 * are answered through the relay. Every decision is audited, at most once per machine and
 * decision every few minutes so a flood cannot fill the log; memory stays bounded.
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
import { chooseAddress, intToIp, ipToInt, type IpRange } from "../../domain/ip-pool.ts";
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
};

export type PxeStats = { received: number; malformed: number; answered: number; ignored: number; suppressedAudits: number };
export type PxeResponder = { stats: PxeStats; close(): Promise<void> };

const AUDIT_EVERY_MS = 5 * 60_000;
const AUDIT_MEMORY = 10_000;

export async function startPxeResponder(opts: PxeResponderOptions): Promise<PxeResponder> {
  const { site } = opts;
  const s = stores(site.db);
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

  async function record(mac: string, uuid: string | undefined, firmware: string, link: PxeLink, state: "pending" | "approved"): Promise<Pick<Device, "id" | "name" | "state"> | undefined> {
    const now = site.now();
    const perMinute = opts.recordPerMinute ?? 30;
    if (now.getTime() - recordWindow.start > 60_000) recordWindow = { start: now.getTime(), count: 0 };
    if (recordWindow.count >= perMinute) return undefined;
    const pending = (await site.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE state = 'pending'`))?.n ?? 0;
    if (state === "pending" && Number(pending) >= (opts.maxPending ?? 1000)) return undefined;
    recordWindow.count++;
    const nowIso = now.toISOString();
    return site.db.transaction(async (tx) => {
      const t = stores(tx);
      if (await t.devices.byMac(mac)) return t.devices.byMac(mac);
      const d = await t.devices.create({ name: `pxe-${mac.replace(/:/g, "")}`, macs: [mac], smbiosUuid: uuid && !(await t.devices.bySmbiosUuid(uuid)) ? uuid : null,
        serial: null, state, attributes: { firmware, firstSeenLink: link.name } }, nowIso);
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

  function destination(req: DhcpMessage, rinfo: dgram.RemoteInfo, viaProxyPort: boolean): { address: string; port: number } {
    if (req.giaddr !== "0.0.0.0") return { address: req.giaddr, port: 67 };
    if (viaProxyPort) return { address: rinfo.address, port: rinfo.port };
    if (req.ciaddr !== "0.0.0.0") return { address: req.ciaddr, port: 68 };
    return { address: "255.255.255.255", port: 68 };
  }

  function rangeOf(link: PxeLink): IpRange | undefined {
    const mask = ipToInt(link.netmask);
    const net = (ipToInt(link.address) & mask) >>> 0;
    return opts.ranges?.find((r) => ((r.first & mask) >>> 0) === net && ((r.last & mask) >>> 0) === net);
  }

  /**
   * The address for `mac` and, for a REQUEST, the lease recorded — in one transaction, so two
   * machines asking for the same offered address at once cannot both get it (the second is
   * NAKed and starts over, as RFC 2131 §3.1 expects).
   */
  function lease(link: PxeLink, mac: string, requested: string | undefined, request: boolean, leaseSeconds: number): Promise<{ ip?: string; nak?: boolean }> {
    const range = rangeOf(link);
    if (!range) return Promise.resolve({});
    return site.db.transaction(async (tx) => {
      const t = stores(tx);
      const now = site.now();
      await t.leases.deleteExpired(now.toISOString());
      const current = await t.leases.byMac(mac);
      const taken = new Set((await t.leases.all()).filter((l) => l.mac !== mac).map((l) => l.ip));
      const ip = chooseAddress(range, taken, current?.ip, requested);
      if (!ip) return {};
      if (request && requested && requested !== ip) return { ip, nak: true };
      if (request) await t.leases.put({ mac, ip, expiresAt: new Date(now.getTime() + leaseSeconds * 1000).toISOString() }, now.toISOString());
      return { ip };
    });
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
    if (req.op !== 1 || !req.mac || (type !== DhcpMessageType.Discover && type !== DhcpMessageType.Request && type !== DhcpMessageType.Release)) {
      stats.ignored++;
      return;
    }
    // Read the vendor class once: it decides PXE-ness, HTTP boot and the loader.
    const vendor = vendorClass(req);
    const httpClient = vendor?.startsWith("HTTPClient") ?? false;
    const pxe = httpClient || (vendor?.startsWith("PXEClient") ?? false);
    if (opts.mode === "proxy" && (!pxe || (type === DhcpMessageType.Request && !viaProxyPort) || type === DhcpMessageType.Release)) {
      stats.ignored++;
      return;
    }
    const mac = req.mac;
    if (type === DhcpMessageType.Release) {
      await s.leases.release(mac);
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
      device = await record(mac, uuid, firmware, link, decision === "record-pending" ? "pending" : "approved");
      if (!device) {
        stats.ignored++;
        audit(`record-limit`, { actor: "pxe", action: "pxe.refused", outcome: "denied", details: { reason: "too many unknown machines; not recording more for now", link: link.name } });
        return;
      }
    }
    const ipxe = pxe && isIpxe(req);
    const boot = pxe ? bootOptions(ipxe, link, firmware) : undefined;
    if (pxe && !boot) {
      stats.ignored++;
      audit(`${mac}:arch`, { ...auditBase, action: "pxe.refused", outcome: "denied", details: { mac, reason: `unsupported architecture ${clientArch(req)?.join(",")}` } });
      return;
    }

    let reply: DhcpMessage | Uint8Array;
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
      const requestedBytes = optionData(req, DhcpOption.RequestedIp);
      const requested = requestedBytes?.length === 4 ? intToIp(new DataView(requestedBytes.buffer, requestedBytes.byteOffset).getUint32(0)) : (req.ciaddr !== "0.0.0.0" ? req.ciaddr : undefined);
      const serverIdBytes = optionData(req, DhcpOption.ServerId);
      if (type === DhcpMessageType.Request && serverIdBytes?.length === 4 && intToIp(new DataView(serverIdBytes.buffer, serverIdBytes.byteOffset).getUint32(0)) !== link.address) {
        stats.ignored++; // the client chose another server's offer
        return;
      }
      const leaseSeconds = opts.leaseSeconds ?? 3600;
      const { ip, nak } = await lease(link, mac, requested, type === DhcpMessageType.Request, leaseSeconds);
      if (!ip) {
        stats.ignored++;
        audit("pool-exhausted", { actor: "pxe", action: "dhcp.pool-exhausted", outcome: "failure", details: { link: link.name } });
        return;
      }
      if (nak) {
        reply = buildReply(req, { messageType: DhcpMessageType.Nak, serverId: link.address, siaddr: "0.0.0.0" });
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
    const to = destination(req, rinfo, viaProxyPort);
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
