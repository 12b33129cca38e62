/**
 * DHCP/BOOTP codec (RFC 2131, RFC 2132) with the PXE (RFC 4578, PXE 2.1) and iPXE options a
 * network-boot responder reads and writes. Pure functions over bytes: no sockets, no clock.
 *
 * Round trip is exact: `encodeDhcp(decodeDhcp(x))` reproduces `x` byte for byte. To allow
 * that, options stay an ordered list (Pad bytes and duplicates included), the raw `sname` and
 * `file` fields are kept beside their text, and whatever follows the END option is kept as
 * `padding`. The *logical* view — what an option means — comes from `optionData()`, which joins
 * split options (RFC 3396) and options carried in `file`/`sname` under option 52 overload.
 */

import { DecodeError, Reader, Writer } from "./reader.ts";

/** BOOTP `op` field (RFC 2131 §2, RFC 951). */
export const DhcpOp = {
  BootRequest: 1,
  BootReply: 2,
} as const;

/** Option 53 values (RFC 2132 §9.6). */
export const DhcpMessageType = {
  Discover: 1,
  Offer: 2,
  Request: 3,
  Decline: 4,
  Ack: 5,
  Nak: 6,
  Release: 7,
  Inform: 8,
} as const;

/** Option codes used by network boot. */
export const DhcpOption = {
  Pad: 0, // RFC 2132 §3.1
  SubnetMask: 1, // RFC 2132 §3.3
  TimeOffset: 2, // RFC 2132 §3.4
  Router: 3, // RFC 2132 §3.5
  DnsServers: 6, // RFC 2132 §3.8
  LogServers: 7, // RFC 2132 §3.9
  HostName: 12, // RFC 2132 §3.14
  DomainName: 15, // RFC 2132 §3.17
  RootPath: 17, // RFC 2132 §3.19
  InterfaceMtu: 26, // RFC 2132 §5.1
  BroadcastAddress: 28, // RFC 2132 §5.3
  NtpServers: 42, // RFC 2132 §8.3
  VendorSpecific: 43, // RFC 2132 §8.4; PXE 2.1 §2.4 sub-options (PxeVendorOption)
  RequestedIp: 50, // RFC 2132 §9.1
  LeaseTime: 51, // RFC 2132 §9.2
  Overload: 52, // RFC 2132 §9.3
  MessageType: 53, // RFC 2132 §9.6
  ServerId: 54, // RFC 2132 §9.7
  ParameterList: 55, // RFC 2132 §9.8
  Message: 56, // RFC 2132 §9.9
  MaxMessageSize: 57, // RFC 2132 §9.10
  RenewalTime: 58, // RFC 2132 §9.11
  RebindingTime: 59, // RFC 2132 §9.12
  VendorClass: 60, // RFC 2132 §9.13
  ClientId: 61, // RFC 2132 §9.14
  TftpServerName: 66, // RFC 2132 §9.4
  BootfileName: 67, // RFC 2132 §9.5
  UserClass: 77, // RFC 3004 §4
  RelayAgentInfo: 82, // RFC 3046 §2.0
  ClientArch: 93, // RFC 4578 §2.1
  ClientNdi: 94, // RFC 4578 §2.2
  ClientUuid: 97, // RFC 4578 §2.5
  DomainSearch: 119, // RFC 3397 §2
  IpxeEncap: 175, // iPXE encapsulated options (ipxe.org/cfg, include/ipxe/dhcp.h)
  End: 255, // RFC 2132 §3.2
} as const;

/**
 * Option 93 client system architecture (RFC 4578 §2.1, IANA "Processor Architecture Types").
 * RFC 4578 printed 7 as "EFI BC" and 9 as "EFI x86-64"; Errata 4624 and the IANA registry
 * swap them, and x64 UEFI firmware (OVMF, iPXE's ipxe.efi) sends 7. Some older x64 firmware
 * still sends 9, so a responder should boot both with the x64 loader.
 */
export const ClientArch = {
  X86Bios: 0, // x86 BIOS
  NecPc98: 1, // deprecated
  EfiItanium: 2,
  DecAlpha: 3, // deprecated
  ArcX86: 4, // deprecated
  IntelLeanClient: 5, // deprecated
  EfiIa32: 6, // x86 (32-bit) UEFI
  EfiX64: 7, // x64 UEFI (RFC 4578's "EFI BC"; see above)
  EfiXscale: 8, // deprecated
  EfiBc: 9, // EFI byte code per IANA; RFC 4578's "EFI x86-64", sent by some x64 firmware
  EfiArm32: 10, // 0x0a ARM 32-bit UEFI
  EfiArm64: 11, // 0x0b ARM 64-bit UEFI
  EfiX86Http: 15, // 0x0f x86 UEFI HTTP boot
  EfiX64Http: 16, // 0x10 x64 UEFI HTTP boot
  EfiBcHttp: 17, // 0x11 EBC HTTP boot
  EfiArm32Http: 18, // 0x12 ARM 32-bit UEFI HTTP boot
  EfiArm64Http: 19, // 0x13 ARM 64-bit UEFI HTTP boot
  BiosHttp: 20, // 0x14 PC/AT BIOS HTTP boot
  EfiRiscV64: 27, // 0x1b RISC-V 64-bit UEFI
  EfiRiscV64Http: 28, // 0x1c RISC-V 64-bit UEFI HTTP boot
} as const;

/** Option 43 sub-options a PXE client understands (PXE 2.1 spec, §2.4 table 2-1). */
export const PxeVendorOption = {
  MtftpIp: 1,
  MtftpClientPort: 2,
  MtftpServerPort: 3,
  MtftpTimeout: 4,
  MtftpDelay: 5,
  DiscoveryControl: 6,
  DiscoveryMcastAddr: 7,
  BootServers: 8,
  BootMenu: 9,
  MenuPrompt: 10,
  McastAddrsAlloc: 11,
  CredentialTypes: 12,
  BootItem: 71,
  End: 255,
} as const;

/** Bits of PXE_DISCOVERY_CONTROL (PXE 2.1 spec §2.4). */
export const PxeDiscoveryControl = {
  NoBroadcast: 0x01, // do not broadcast boot server discovery
  NoMulticast: 0x02, // do not multicast boot server discovery
  OnlyListedServers: 0x04, // accept only servers from PXE_BOOT_SERVERS
  UseBootfile: 0x08, // download the boot file from the offer without discovery
} as const;

/** Sub-options of iPXE's option 175 (iPXE include/ipxe/dhcp.h, ipxe.org/cfg). */
export const IpxeOption = {
  Priority: 1, // 175.1: offer priority
  FeatureHttp: 0x13, // the feature list: the build can do HTTP …
  FeatureHttps: 0x14,
  FeatureTftp: 0x15,
  FeatureDns: 0x17,
  FeaturePxe: 0x21,
  FeatureEfi: 0x24,
  FeatureMenu: 0x27,
  NoPxeDhcp: 176, // 175.176: do not wait for ProxyDHCP offers
  BusId: 177, // 175.177: bus type, vendor and device of the NIC
  Version: 235, // 175.235: iPXE major, minor, patch
} as const;

/** One option as it appears on the wire; a Pad byte is `{ code: 0, data: empty }`. */
export type DhcpOptionEntry = { code: number; data: Uint8Array };

export type DhcpMessage = {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** All 16 bytes of the client hardware address field; `hlen` says how many count. */
  chaddr: Uint8Array;
  /** `aa:bb:cc:dd:ee:ff` when htype is Ethernet (1) and hlen 6; set by the decoder and buildReply, ignored by the encoder. */
  mac?: string;
  /** Server host name text (up to the first NUL); "" when the field carries overloaded options. */
  sname: string;
  /** Boot file name text (up to the first NUL); "" when the field carries overloaded options. */
  file: string;
  /** The 64 bytes of `sname` as received; the encoder writes them while `sname` still matches. */
  rawSname?: Uint8Array;
  /** The 128 bytes of `file` as received; the encoder writes them while `file` still matches. */
  rawFile?: Uint8Array;
  /** Options of the options field in wire order, duplicates and Pad bytes included; END is implicit. */
  options: DhcpOptionEntry[];
  /** Options found in `file` then `sname` under option 52 (RFC 2131 §4.1); decoded only, never encoded. */
  overloadOptions?: DhcpOptionEntry[];
  /** Bytes after the END option (usually zeros: many clients pad to 300 bytes or more). */
  padding?: Uint8Array;
};

const HEADER_LENGTH = 236; // RFC 2131 §2, figure 1: fixed fields up to the options
const MAGIC_COOKIE = 0x63825363; // RFC 2131 §3: 99.130.83.99
const MIN_MESSAGE = HEADER_LENGTH + 4;
const SNAME_OFFSET = 44;
const SNAME_LENGTH = 64;
const FILE_OFFSET = 108;
const FILE_LENGTH = 128;
// RFC 951 fixed BOOTP messages at 300 octets (a 64-octet vend field); some relays and old
// PXE ROMs drop shorter replies, so replies are padded to it as ISC dhcpd does.
const MIN_BOOTP_MESSAGE = 300;

/** Decodes a DHCP/BOOTP message; throws DecodeError for anything malformed. */
export function decodeDhcp(bytes: Uint8Array): DhcpMessage {
  if (bytes.length < MIN_MESSAGE) {
    throw new DecodeError(
      `Cannot decode DHCP message: ${bytes.length} bytes is shorter than the ${MIN_MESSAGE}-byte header and magic cookie`,
      bytes.length,
    );
  }
  // One copy of the datagram up front (the caller may reuse its receive buffer); every field
  // and option below is a view of it, which costs far less than a copy per option.
  const own = new Uint8Array(bytes);
  const r = new Reader(own);
  const op = r.u8();
  if (op !== DhcpOp.BootRequest && op !== DhcpOp.BootReply) {
    r.fail(`Cannot decode DHCP message: op ${op} at offset 0 is neither BOOTREQUEST (1) nor BOOTREPLY (2)`, 0);
  }
  const htype = r.u8();
  const hlen = r.u8();
  if (hlen > 16) r.fail(`Cannot decode DHCP message: hlen ${hlen} at offset 2 is longer than the 16-byte chaddr field`, 2);
  const hops = r.u8();
  const xid = r.u32();
  const secs = r.u16();
  const flags = r.u16();
  const ciaddr = readIp(r);
  const yiaddr = readIp(r);
  const siaddr = readIp(r);
  const giaddr = readIp(r);
  const chaddr = r.view(16);
  const rawSname = r.view(SNAME_LENGTH);
  const rawFile = r.view(FILE_LENGTH);
  const cookie = r.u32();
  if (cookie !== MAGIC_COOKIE) {
    r.fail(`Cannot decode DHCP message: the magic cookie at offset ${HEADER_LENGTH} is not 99.130.83.99 (RFC 2131 §3)`, HEADER_LENGTH);
  }
  const options = readOptions(r, "options field", true);
  const padding = r.view(r.remaining);

  const overload = overloadOf(options, true);
  const overloadOptions: DhcpOptionEntry[] = [];
  // RFC 2131 §4.1: the file field is read before sname. A fixed-size field may end without
  // END (its end is a clean boundary), but an option may not run past it.
  if (overload & 1) overloadOptions.push(...readOptions(new Reader(own, FILE_OFFSET, FILE_OFFSET + FILE_LENGTH), "file field", false));
  if (overload & 2) overloadOptions.push(...readOptions(new Reader(own, SNAME_OFFSET, SNAME_OFFSET + SNAME_LENGTH), "sname field", false));

  const msg: DhcpMessage = {
    op,
    htype,
    hlen,
    hops,
    xid,
    secs,
    flags,
    ciaddr,
    yiaddr,
    siaddr,
    giaddr,
    chaddr,
    sname: overload & 2 ? "" : fieldText(rawSname),
    file: overload & 1 ? "" : fieldText(rawFile),
    rawSname,
    rawFile,
    options,
    overloadOptions,
    padding,
  };
  const mac = macOf(msg);
  if (mac !== undefined) msg.mac = mac;
  return msg;
}

/**
 * Encodes a message. Options longer than 255 bytes are split into consecutive instances
 * (RFC 3396 §6); END is written after `options`, then `padding`. Throws RangeError when a
 * field does not fit (a caller bug, not bad input).
 */
export function encodeDhcp(msg: DhcpMessage): Uint8Array {
  const padding = msg.padding ?? new Uint8Array(0);
  const w = new Writer(MIN_MESSAGE + optionsLength(msg.options) + 1 + padding.length);
  w.u8(msg.op).u8(msg.htype).u8(msg.hlen).u8(msg.hops).u32(msg.xid).u16(msg.secs).u16(msg.flags);
  for (const ip of [msg.ciaddr, msg.yiaddr, msg.siaddr, msg.giaddr]) w.bytes(parseIp(ip));
  if (msg.chaddr.length > 16) throw new RangeError(`Cannot encode chaddr of ${msg.chaddr.length} bytes: the field holds 16`);
  w.bytes(msg.chaddr).zeros(16 - msg.chaddr.length);
  const overload = overloadOf(msg.options, false);
  w.bytes(fieldBytes("sname", SNAME_LENGTH, msg.sname, msg.rawSname, (overload & 2) !== 0));
  w.bytes(fieldBytes("file", FILE_LENGTH, msg.file, msg.rawFile, (overload & 1) !== 0));
  w.u32(MAGIC_COOKIE);
  writeOptions(w, msg.options);
  w.u8(DhcpOption.End);
  w.bytes(padding);
  return w.finish();
}

/**
 * The logical value of an option: every instance with this code joined in order — options
 * field, then `file`, then `sname` (RFC 3396 §7, RFC 2131 §4.1). Undefined when absent.
 */
export function optionData(msg: DhcpMessage, code: number): Uint8Array | undefined {
  if (code === DhcpOption.Pad || code === DhcpOption.End) return undefined;
  const parts: Uint8Array[] = [];
  for (const list of [msg.options, msg.overloadOptions ?? []]) {
    for (const o of list) if (o.code === code) parts.push(o.data);
  }
  if (parts.length === 0) return undefined;
  if (parts.length === 1) return parts[0];
  return concat(parts);
}

/** Option 53, or undefined for a plain BOOTP message. */
export function messageType(msg: DhcpMessage): number | undefined {
  const data = optionData(msg, DhcpOption.MessageType);
  if (data === undefined) return undefined;
  if (data.length !== 1) throw optionError(DhcpOption.MessageType, "message type", `is ${data.length} bytes, not 1`);
  return data[0];
}

/** Option 60 as text, e.g. `PXEClient:Arch:00007:UNDI:003000`. */
export function vendorClass(msg: DhcpMessage): string | undefined {
  const data = optionData(msg, DhcpOption.VendorClass);
  return data === undefined ? undefined : latin1(data);
}

/**
 * Option 77 as a list of classes. RFC 3004 §4 makes it a list of length-prefixed strings, but
 * iPXE sends the bare text `iPXE`: the data is read as RFC 3004 only when its length bytes
 * tile it exactly, otherwise as one raw string.
 */
export function userClass(msg: DhcpMessage): string[] | undefined {
  const data = optionData(msg, DhcpOption.UserClass);
  if (data === undefined) return undefined;
  const classes: string[] = [];
  let i = 0;
  while (i < data.length) {
    const len = data[i];
    if (len === 0 || i + 1 + len > data.length) return [latin1(data)];
    classes.push(latin1(data.subarray(i + 1, i + 1 + len)));
    i += 1 + len;
  }
  return data.length === 0 ? [""] : classes;
}

/** Option 93: the client's architecture types (RFC 4578 §2.1), usually one. */
export function clientArch(msg: DhcpMessage): number[] | undefined {
  const data = optionData(msg, DhcpOption.ClientArch);
  if (data === undefined) return undefined;
  if (data.length === 0 || data.length % 2 !== 0) {
    throw optionError(DhcpOption.ClientArch, "client architecture", `is ${data.length} bytes, not a non-empty list of 16-bit types`);
  }
  const types: number[] = [];
  for (let i = 0; i < data.length; i += 2) types.push((data[i] << 8) | data[i + 1]);
  return types;
}

/**
 * Option 97, the machine's UUID (RFC 4578 §2.5: type 0 and 16 bytes), as a lower-case
 * `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` string.
 *
 * Byte order: PXE clients copy the SMBIOS system UUID, whose first three fields SMBIOS ≥ 2.6
 * stores little-endian (the EFI GUID layout); EDK2/OVMF copies it as is and iPXE byte-swaps its
 * UUID into that layout on purpose (net/udp/dhcp.c, "follows the EFI spec"). By default the
 * first three fields are therefore swapped back, giving the string `dmidecode`, QEMU `-uuid`
 * and iPXE's `${uuid}` show. `"network"` returns the 16 bytes in wire order, unswapped.
 * All-zero means the firmware has no UUID set (e.g. QEMU without `-uuid`).
 */
export function clientUuid(msg: DhcpMessage, byteOrder: "smbios" | "network" = "smbios"): string | undefined {
  const data = optionData(msg, DhcpOption.ClientUuid);
  if (data === undefined) return undefined;
  if (data.length !== 17) throw optionError(DhcpOption.ClientUuid, "client UUID", `is ${data.length} bytes, not 17 (type and 16 bytes)`);
  if (data[0] !== 0) throw optionError(DhcpOption.ClientUuid, "client UUID", `has type ${data[0]}, not 0 (RFC 4578 §2.5)`);
  return formatUuid(data.subarray(1), byteOrder === "smbios");
}

/** The 17-byte option 97 value for a UUID string, in the SMBIOS/EFI byte order PXE clients send. */
export function encodeClientUuid(uuid: string): Uint8Array {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(uuid);
  if (m === null) throw new RangeError(`Cannot encode UUID ${JSON.stringify(uuid)}: not in 8-4-4-4-12 hex form`);
  const bytes = hexBytes(m.slice(1).join(""));
  swapGuidFields(bytes);
  const out = new Uint8Array(17);
  out.set(bytes, 1);
  return out;
}

/** Option 175 sub-options (iPXE's feature list, bus id, version …) by code, or undefined. */
export function ipxeFeatures(msg: DhcpMessage): Map<number, Uint8Array> | undefined {
  const data = optionData(msg, DhcpOption.IpxeEncap);
  return data === undefined ? undefined : decodeSubOptions(data, DhcpOption.IpxeEncap);
}

/** Option 43 sub-options (PxeVendorOption) by code; throws DecodeError when malformed. */
export function decodePxeVendorOptions(data: Uint8Array): Map<number, Uint8Array> {
  return decodeSubOptions(data, DhcpOption.VendorSpecific);
}

/** The option 43 value for these sub-options, END-terminated as the PXE 2.1 spec requires. */
export function encodePxeVendorOptions(entries: Iterable<readonly [number, Uint8Array]>): Uint8Array {
  return encodeSubOptions(entries, DhcpOption.VendorSpecific, true);
}

/** PXE_BOOT_MENU (43.9) data: for each item its boot server type and description. */
export function encodePxeBootMenu(items: readonly { type: number; description: string }[]): Uint8Array {
  const w = new Writer(64);
  for (const item of items) {
    const text = latin1Bytes(item.description, "PXE boot menu description");
    w.u16(item.type).u8(text.length).bytes(text);
  }
  return w.finish();
}

/** PXE_MENU_PROMPT (43.10) data: seconds to wait (255 = forever, 0 = boot the first item) and the prompt. */
export function encodePxeMenuPrompt(timeoutSeconds: number, prompt: string): Uint8Array {
  return new Writer(64).u8(timeoutSeconds).bytes(latin1Bytes(prompt, "PXE menu prompt")).finish();
}

/** PXE_BOOT_ITEM (43.71) a client sends to a boot server on port 4011, or undefined. */
export function pxeBootItem(msg: DhcpMessage): { type: number; layer: number } | undefined {
  const vendor = optionData(msg, DhcpOption.VendorSpecific);
  if (vendor === undefined) return undefined;
  const item = decodePxeVendorOptions(vendor).get(PxeVendorOption.BootItem);
  if (item === undefined) return undefined;
  if (item.length !== 4) throw optionError(DhcpOption.VendorSpecific, "PXE boot item (43.71)", `is ${item.length} bytes, not 4`);
  return { type: (item[0] << 8) | item[1], layer: (item[2] << 8) | item[3] };
}

/** Option 60 starts with `PXEClient` (PXE 2.1 §2.2): a PXE ROM or iPXE asking for a boot file. */
export function isPxeClient(msg: DhcpMessage): boolean {
  return vendorClass(msg)?.startsWith("PXEClient") ?? false;
}

/** Option 60 starts with `HTTPClient` (UEFI 2.5+ HTTP boot): wants a URL as boot file. */
export function isHttpClient(msg: DhcpMessage): boolean {
  return vendorClass(msg)?.startsWith("HTTPClient") ?? false;
}

/** The request comes from iPXE: user class `iPXE` or iPXE's option 175 present. */
export function isIpxe(msg: DhcpMessage): boolean {
  if (optionData(msg, DhcpOption.IpxeEncap) !== undefined) return true;
  return userClass(msg)?.includes("iPXE") ?? false;
}

export type ReplyFields = {
  /** DhcpMessageType.Offer or .Ack. */
  messageType: number;
  /** Option 54; also the next server (`siaddr`) unless `siaddr` is given. */
  serverId: string;
  /** Next server for TFTP. iPXE ignores a ProxyDHCP offer without it ("Nothing to boot"). */
  siaddr?: string;
  /** Address offered; 0.0.0.0 (the default) for ProxyDHCP, which gives no address. */
  yiaddr?: string;
  /** Boot file (a TFTP path, or a URL for HTTP clients): option 67, and the `file` field when it fits. */
  bootfile?: string;
  /** Option 66. */
  tftpServerName?: string;
  /** Further options (subnet mask, router, lease time, option 43 …); a code given here replaces the automatic one. */
  options?: DhcpOptionEntry[];
  /** Add iPXE option 175.176 = 1 so iPXE stops waiting ~2 s for ProxyDHCP offers. */
  ipxeNoProxyDhcp?: boolean;
};

/**
 * An OFFER/ACK (or ProxyDHCP answer) to `request`: BOOTREPLY with the request's xid, flags,
 * giaddr, htype, hlen and chaddr (RFC 2131 §4.3.1 table 3); option 60 `PXEClient` or
 * `HTTPClient` when the client sent it (PXE 2.1 §2.2.2; UEFI HTTP boot needs it); option 97
 * echoed when sent; padded to 300 bytes.
 */
export function buildReply(request: DhcpMessage, fields: ReplyFields): DhcpMessage {
  const extra = fields.options ?? [];
  for (const o of extra) {
    if (o.code === DhcpOption.MessageType || o.code === DhcpOption.ServerId || o.code === DhcpOption.End) {
      throw new RangeError(`Cannot build a DHCP reply: option ${o.code} is set by buildReply itself`);
    }
  }
  const given = new Set(extra.map((o) => o.code));
  const options: DhcpOptionEntry[] = [
    { code: DhcpOption.MessageType, data: Uint8Array.of(fields.messageType) },
    { code: DhcpOption.ServerId, data: parseIp(fields.serverId) },
    ...extra,
  ];
  const add = (code: number, data: Uint8Array | undefined): void => {
    if (data !== undefined && !given.has(code)) options.push({ code, data });
  };
  add(DhcpOption.VendorClass, isHttpClient(request) ? ascii("HTTPClient") : isPxeClient(request) ? ascii("PXEClient") : undefined);
  add(DhcpOption.ClientUuid, optionData(request, DhcpOption.ClientUuid));
  if (fields.tftpServerName !== undefined) add(DhcpOption.TftpServerName, latin1Bytes(fields.tftpServerName, "TFTP server name"));
  if (fields.bootfile !== undefined) add(DhcpOption.BootfileName, latin1Bytes(fields.bootfile, "boot file name"));
  if (fields.ipxeNoProxyDhcp) add(DhcpOption.IpxeEncap, Uint8Array.of(IpxeOption.NoPxeDhcp, 1, 1));

  const bootfileFits = fields.bootfile !== undefined && fields.bootfile.length < FILE_LENGTH;
  const used = MIN_MESSAGE + optionsLength(options) + 1;
  const reply: DhcpMessage = {
    op: DhcpOp.BootReply,
    htype: request.htype,
    hlen: request.hlen,
    hops: 0,
    xid: request.xid,
    secs: 0,
    flags: request.flags,
    ciaddr: fields.messageType === DhcpMessageType.Ack ? request.ciaddr : "0.0.0.0",
    yiaddr: fields.yiaddr ?? "0.0.0.0",
    siaddr: fields.siaddr ?? fields.serverId,
    giaddr: request.giaddr,
    chaddr: request.chaddr.slice(),
    sname: "",
    file: bootfileFits ? (fields.bootfile as string) : "",
    options,
    padding: new Uint8Array(Math.max(0, MIN_BOOTP_MESSAGE - used)),
  };
  const mac = macOf(reply);
  if (mac !== undefined) reply.mac = mac;
  return reply;
}

// ---------------------------------------------------------------------------------------

function readOptions(r: Reader, area: string, requireEnd: boolean): DhcpOptionEntry[] {
  const options: DhcpOptionEntry[] = [];
  while (r.remaining > 0) {
    const at = r.offset;
    const code = r.u8();
    if (code === DhcpOption.End) return options;
    if (code === DhcpOption.Pad) {
      options.push({ code, data: new Uint8Array(0) });
      continue;
    }
    if (r.remaining === 0) r.fail(`Cannot decode DHCP option ${code} at offset ${at}: its length byte is past the end of the ${area}`, at);
    const len = r.u8();
    if (len > r.remaining) {
      r.fail(`Cannot decode DHCP option ${code} at offset ${at}: its ${len} bytes run past the end of the ${area} (${r.remaining} left)`, at);
    }
    options.push({ code, data: r.view(len) });
  }
  if (requireEnd) {
    // Every client seen sends END (RFC 2131 §3 requires it); a message without one was cut short.
    r.fail(`Cannot decode DHCP options: the ${area} ends at offset ${r.offset} without an END option (255)`);
  }
  return options;
}

function optionsLength(options: readonly DhcpOptionEntry[]): number {
  let n = 0;
  for (const o of options) {
    n += o.code === DhcpOption.Pad ? 1 : o.data.length + 2 * Math.max(1, Math.ceil(o.data.length / 255));
  }
  return n;
}

function writeOptions(w: Writer, options: readonly DhcpOptionEntry[]): void {
  for (const { code, data } of options) {
    if (code === DhcpOption.Pad) {
      if (data.length !== 0) throw new RangeError("Cannot encode a Pad option (0) with data");
      w.u8(0);
      continue;
    }
    if (code === DhcpOption.End) throw new RangeError("Cannot encode END (255) as an option: the encoder writes it after the options");
    // RFC 3396 §6: an option longer than 255 bytes goes out as consecutive instances.
    let i = 0;
    do {
      const chunk = data.subarray(i, i + 255);
      w.u8(code).u8(chunk.length).bytes(chunk);
      i += 255;
    } while (i < data.length);
  }
}

/** Option 52 bits: 1 = file carries options, 2 = sname does (RFC 2132 §9.3). */
function overloadOf(options: readonly DhcpOptionEntry[], strict: boolean): number {
  const parts = options.filter((o) => o.code === DhcpOption.Overload);
  if (parts.length === 0) return 0;
  const data = concat(parts.map((o) => o.data));
  if (data.length === 1 && data[0] >= 1 && data[0] <= 3) return data[0];
  if (!strict) return 0;
  throw new DecodeError(`Cannot decode DHCP option 52 (overload): its value must be one byte of 1, 2 or 3 (RFC 2132 §9.3)`, MIN_MESSAGE);
}

function fieldBytes(name: string, size: number, text: string, raw: Uint8Array | undefined, overloaded: boolean): Uint8Array {
  if (raw !== undefined && raw.length === size && (overloaded || fieldText(raw) === text)) return raw;
  const bytes = latin1Bytes(text, name);
  if (bytes.length >= size || bytes.includes(0)) {
    throw new RangeError(`Cannot encode ${name} ${JSON.stringify(text)}: it must be under ${size} bytes and without NUL`);
  }
  const out = new Uint8Array(size);
  out.set(bytes);
  return out;
}

function fieldText(raw: Uint8Array): string {
  const nul = raw.indexOf(0);
  return latin1(nul < 0 ? raw : raw.subarray(0, nul));
}

function decodeSubOptions(data: Uint8Array, parent: number): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  let i = 0;
  while (i < data.length) {
    const code = data[i];
    if (code === 255) break;
    if (code === 0) {
      i++;
      continue;
    }
    if (i + 1 >= data.length) {
      throw new DecodeError(`Cannot decode option ${parent} sub-option ${code} at offset ${i} of the option: its length byte is missing`, i);
    }
    const len = data[i + 1];
    if (i + 2 + len > data.length) {
      throw new DecodeError(`Cannot decode option ${parent} sub-option ${code} at offset ${i} of the option: its ${len} bytes run past the end`, i);
    }
    const value = data.slice(i + 2, i + 2 + len);
    const seen = out.get(code);
    out.set(code, seen === undefined ? value : concat([seen, value]));
    i += 2 + len;
  }
  return out;
}

function encodeSubOptions(entries: Iterable<readonly [number, Uint8Array]>, parent: number, end: boolean): Uint8Array {
  const w = new Writer(64);
  for (const [code, data] of entries) {
    if (code === 0 || code === 255 || data.length > 255) {
      throw new RangeError(`Cannot encode option ${parent} sub-option ${code} of ${data.length} bytes`);
    }
    w.u8(code).u8(data.length).bytes(data);
  }
  if (end) w.u8(255);
  return w.finish();
}

function optionError(code: number, name: string, problem: string): DecodeError {
  return new DecodeError(`Cannot read DHCP option ${code} (${name}): it ${problem}`, 0);
}

/** Two lower-case hex digits per byte value: formatting MACs and UUIDs is on the per-packet path. */
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

function macOf(msg: DhcpMessage): string | undefined {
  const c = msg.chaddr;
  if (msg.htype !== 1 || msg.hlen !== 6 || c.length < 6) return undefined;
  return `${HEX[c[0]]}:${HEX[c[1]]}:${HEX[c[2]]}:${HEX[c[3]]}:${HEX[c[4]]}:${HEX[c[5]]}`;
}

function readIp(r: Reader): string {
  return `${r.u8()}.${r.u8()}.${r.u8()}.${r.u8()}`;
}

function parseIp(ip: string): Uint8Array {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  const parts = m === null ? [] : m.slice(1).map(Number);
  if (parts.length !== 4 || parts.some((p) => p > 255)) throw new RangeError(`Cannot encode IPv4 address ${JSON.stringify(ip)}`);
  return Uint8Array.from(parts);
}

function formatUuid(bytes16: Uint8Array, swap: boolean): string {
  const b = bytes16.slice();
  if (swap) swapGuidFields(b);
  let hex = "";
  for (const x of b) hex += HEX[x];
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Reverses the first three UUID fields (4, 2 and 2 bytes): EFI GUID layout ⇄ RFC 4122 order. */
function swapGuidFields(b: Uint8Array): void {
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes as text, one character per byte (ISO-8859-1), so any bytes survive a round trip. */
function latin1(bytes: Uint8Array): string {
  let s = "";
  // apply takes the typed array as is; spreading it would go through an iterator.
  for (let i = 0; i < bytes.length; i += 4096) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  return s;
}

function latin1Bytes(text: string, what: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`Cannot encode ${what} ${JSON.stringify(text)}: character ${i} is not a single byte`);
    out[i] = c;
  }
  return out;
}

function ascii(text: string): Uint8Array {
  return latin1Bytes(text, "text");
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
