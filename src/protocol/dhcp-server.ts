/**
 * What a DHCP or ProxyDHCP server decides from a request's own fields, before it looks
 * anything up: which requests it acts on, whether a relay may be believed, where the answer
 * goes (RFC 2131 §4.1), and whether a RELEASE or DECLINE names this server (§4.3.3, §4.3.4).
 * Pure, over decoded messages; the accessors throw the codec's DecodeError for a malformed option.
 */
import { DhcpMessageType, DhcpOption, messageType, optionData, vendorClass, type DhcpMessage } from "./dhcp.ts";

/** The all-zero address: "none" in ciaddr, giaddr and yiaddr. */
export const NO_ADDRESS = "0.0.0.0";

/** The message types a server acts on: DISCOVER and REQUEST get answers; RELEASE and DECLINE change leases. */
export type ServedType = typeof DhcpMessageType.Discover | typeof DhcpMessageType.Request | typeof DhcpMessageType.Release | typeof DhcpMessageType.Decline;

/** A request worth acting on, and what its vendor class (option 60) says about the client. */
export type ServedRequest = {
  type: ServedType;
  mac: string;
  vendor: string | undefined;
  /** Option 60 starts `HTTPClient`: UEFI HTTP boot (UEFI 2.5 §24.7.2). */
  httpClient: boolean;
  /** A PXE client (option 60 `PXEClient`, PXE 2.1 §2.2) or an HTTP boot client. */
  pxe: boolean;
};

/**
 * The request as a server in `mode` acts on it, or undefined when it ignores it: anything
 * but a client's DISCOVER, REQUEST, RELEASE or DECLINE from an Ethernet address. ProxyDHCP
 * (PXE 2.1 §2.2.1) answers PXE clients only, a REQUEST only on port 4011, and leaves RELEASE
 * and DECLINE to the DHCP server that leased the address.
 */
export function servedRequest(req: DhcpMessage, mode: "proxy" | "dhcp", viaProxyPort: boolean): ServedRequest | undefined {
  const type = messageType(req);
  if (req.op !== 1 || !req.mac) return undefined;
  if (type !== DhcpMessageType.Discover && type !== DhcpMessageType.Request && type !== DhcpMessageType.Release && type !== DhcpMessageType.Decline) return undefined;
  // Read once: it decides PXE-ness, HTTP boot and the loader.
  const vendor = vendorClass(req);
  const httpClient = vendor?.startsWith("HTTPClient") ?? false;
  const pxe = httpClient || (vendor?.startsWith("PXEClient") ?? false);
  if (mode === "proxy" && (!pxe || (type === DhcpMessageType.Request && !viaProxyPort) || type === DhcpMessageType.Release || type === DhcpMessageType.Decline)) return undefined;
  return { type, mac: req.mac, vendor, httpClient, pxe };
}

/** An option carrying one IPv4 address (50, 54), or undefined when absent or not 4 bytes. */
export function ipv4Option(req: DhcpMessage, code: number): string | undefined {
  const b = optionData(req, code);
  return b?.length === 4 ? `${b[0]}.${b[1]}.${b[2]}.${b[3]}` : undefined;
}

/** The address a client asks for: option 50 (SELECTING, INIT-REBOOT), else ciaddr (RENEWING, REBINDING). */
export function requestedAddress(req: DhcpMessage): string | undefined {
  return ipv4Option(req, DhcpOption.RequestedIp) ?? (req.ciaddr !== NO_ADDRESS ? req.ciaddr : undefined);
}

/**
 * Whether a relayed request (giaddr set) may be answered: only when both giaddr and the
 * datagram's sender are relays configured by address. We answer to giaddr, so believing
 * anyone else's would let them aim our replies at any host. Unrelayed requests always may.
 */
export function relayAccepted(req: DhcpMessage, from: string, relays: ReadonlySet<string>): boolean {
  return req.giaddr === NO_ADDRESS || (relays.has(req.giaddr) && relays.has(from));
}

/**
 * Where a reply goes (RFC 2131 §4.1): to the relay's server port; on the ProxyDHCP port back
 * to the sender (PXE 2.1 §2.2.1); to ciaddr when the client has one; else broadcast. A NAK
 * is broadcast even then: the client's ciaddr is exactly what is wrong.
 */
export function replyDestination(req: DhcpMessage, from: { address: string; port: number }, viaProxyPort: boolean, nak: boolean): { address: string; port: number } {
  if (req.giaddr !== NO_ADDRESS) return { address: req.giaddr, port: 67 };
  if (viaProxyPort) return { address: from.address, port: from.port };
  if (req.ciaddr !== NO_ADDRESS && !nak) return { address: req.ciaddr, port: 68 };
  return { address: "255.255.255.255", port: 68 };
}

/** A REQUEST naming another server (option 54): the client took that server's offer (§4.3.2). */
export function choseOtherServer(req: DhcpMessage, server: string): boolean {
  const id = ipv4Option(req, DhcpOption.ServerId);
  return messageType(req) === DhcpMessageType.Request && id !== undefined && id !== server;
}

/**
 * The address a DHCPRELEASE asks `server` to end (§4.3.4), or undefined when it cannot count:
 * it must name this server, carry the address in ciaddr and come from that address (or
 * through a relay, already checked). Whether the sender's MAC holds it is the lease's business.
 */
export function releaseClaim(req: DhcpMessage, from: string, server: string): string | undefined {
  const ok = ipv4Option(req, DhcpOption.ServerId) === server && req.ciaddr !== NO_ADDRESS && (req.giaddr !== NO_ADDRESS || from === req.ciaddr);
  return ok ? req.ciaddr : undefined;
}

/**
 * The address a DHCPDECLINE says is in use (§4.3.3), or undefined when it cannot count: it
 * must name this server, carry the address as option 50 and leave ciaddr zero.
 */
export function declineClaim(req: DhcpMessage, server: string): string | undefined {
  const ip = ipv4Option(req, DhcpOption.RequestedIp);
  return ipv4Option(req, DhcpOption.ServerId) === server && ip && req.ciaddr === NO_ADDRESS ? ip : undefined;
}
