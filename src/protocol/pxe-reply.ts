/**
 * The replies of the PXE responder, built from values: a ProxyDHCP answer (boot information
 * only, PXE 2.1 §2.2.1), patched from a template per request; a lab DHCP OFFER or ACK (an
 * address and the boot information, RFC 2131 §4.3.1); a NAK. Pure, no sockets.
 */
import {
  buildReply, encodePxeVendorOptions, DhcpMessageType, DhcpOption, PxeDiscoveryControl, PxeVendorOption,
  type DhcpMessage, type DhcpOptionEntry, type ReplyFields,
} from "./dhcp.ts";
import { ReplyTemplate, replyShape } from "./dhcp-reply-template.ts";
import { NO_ADDRESS } from "./dhcp-server.ts";

/** What the reply tells the client to boot (domain/boot-file.ts chooses it). */
export type PxeBoot = { path: string; via: "ipxe-script" | "http" | "tftp" };

/** The reply fields that carry `boot`. */
export function bootReplyFields(boot: PxeBoot): Pick<ReplyFields, "bootfile" | "options" | "ipxeNoProxyDhcp"> {
  // iPXE answers the first offer with a boot file instead of waiting for ProxyDHCP.
  if (boot.via === "ipxe-script") return { bootfile: boot.path, options: [], ipxeNoProxyDhcp: true };
  if (boot.via === "http") return { bootfile: boot.path, options: [] };
  // Firmware PXE: take the boot file from this offer, no boot server discovery (PXE 2.1 §2.4).
  const vendor = encodePxeVendorOptions([[PxeVendorOption.DiscoveryControl, Uint8Array.of(PxeDiscoveryControl.UseBootfile)]]);
  return { bootfile: boot.path, options: [{ code: DhcpOption.VendorSpecific, data: vendor }] };
}

/** The link a reply is sent on: its name, and its address as server identifier and next server. */
export type ReplyServer = { name: string; address: string };

/**
 * ProxyDHCP answers, an OFFER to a DISCOVER and an ACK to a REQUEST on port 4011: one
 * template per link, request kind, boot file and request shape, built on first use and patched
 * per request (dhcp-reply-template.ts), so answering a known machine costs a copy, not an encode.
 */
export class ProxyReplies {
  readonly #templates = new Map<string, ReplyTemplate>();

  /** The encoded answer to `req` (decoded from `raw`, with option 60 `vendor`). */
  answer(req: DhcpMessage, raw: Uint8Array, vendor: string | undefined, server: ReplyServer, type: number, boot: PxeBoot): Uint8Array {
    // Everything in a proxy answer but the patched fields follows from this key.
    const key = `${server.name} ${server.address} ${type} ${boot.via} ${boot.path} ${replyShape(req, vendor)}`;
    let template = this.#templates.get(key);
    if (!template) {
      template = new ReplyTemplate(req, vendor, {
        messageType: type === DhcpMessageType.Discover ? DhcpMessageType.Offer : DhcpMessageType.Ack,
        serverId: server.address, siaddr: server.address, ...bootReplyFields(boot),
      });
      this.#templates.set(key, template);
    }
    return template.fill(req, raw);
  }

  /** How many templates are held (one per key above: links × kinds × boot files × shapes). */
  get size(): number {
    return this.#templates.size;
  }
}

/** What a lab DHCP server hands out with an address. */
export type LabLeaseInfo = { ip: string; netmask: string; router: string; dns: readonly string[]; leaseSeconds: number };

/**
 * The lab DHCP OFFER (to a DISCOVER) or ACK (to a REQUEST): the address with its subnet mask,
 * router, DNS servers and lease time, and the boot file when the client is a PXE client.
 */
export function labReply(req: DhcpMessage, type: number, server: string, lease: LabLeaseInfo, boot?: PxeBoot): DhcpMessage {
  const b = boot ? bootReplyFields(boot) : undefined;
  return buildReply(req, {
    messageType: type === DhcpMessageType.Discover ? DhcpMessageType.Offer : DhcpMessageType.Ack,
    serverId: server, siaddr: server, yiaddr: lease.ip, bootfile: b?.bootfile, ipxeNoProxyDhcp: b?.ipxeNoProxyDhcp,
    options: [
      ...(b?.options ?? []),
      ipv4ListOption(DhcpOption.SubnetMask, [lease.netmask]),
      ipv4ListOption(DhcpOption.Router, [lease.router]),
      ...(lease.dns.length ? [ipv4ListOption(DhcpOption.DnsServers, lease.dns)] : []),
      u32Option(DhcpOption.LeaseTime, lease.leaseSeconds),
    ],
  });
}

/** A DHCPNAK (§4.3.2). Through a relay it must say "broadcast it": the client has no usable address. */
export function labNak(req: DhcpMessage, server: string): DhcpMessage {
  const reply = buildReply(req, { messageType: DhcpMessageType.Nak, serverId: server, siaddr: NO_ADDRESS });
  if (req.giaddr !== NO_ADDRESS) reply.flags |= 0x8000;
  return reply;
}

/** An option holding IPv4 addresses (1, 3, 6). */
export function ipv4ListOption(code: number, ips: readonly string[]): DhcpOptionEntry {
  const data = new Uint8Array(ips.length * 4);
  ips.forEach((ip, i) => data.set(ipv4Bytes(ip), i * 4));
  return { code, data };
}

/** An option holding one unsigned 32-bit number (51). */
export function u32Option(code: number, n: number): DhcpOptionEntry {
  const data = new Uint8Array(4);
  new DataView(data.buffer).setUint32(0, n);
  return { code, data };
}

function ipv4Bytes(ip: string): Uint8Array {
  const parts = ip.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new TypeError(`Not an IPv4 address: "${ip}"`);
  return Uint8Array.from(parts, Number);
}
