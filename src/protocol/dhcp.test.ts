import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ClientArch,
  DhcpMessageType,
  DhcpOption,
  IpxeOption,
  PxeDiscoveryControl,
  PxeVendorOption,
  buildReply,
  clientArch,
  clientUuid,
  decodeDhcp,
  decodePxeVendorOptions,
  encodeClientUuid,
  encodeDhcp,
  encodePxeBootMenu,
  encodePxeMenuPrompt,
  encodePxeVendorOptions,
  ipxeFeatures,
  isHttpClient,
  isIpxe,
  isPxeClient,
  messageType,
  optionData,
  pxeBootItem,
  userClass,
  vendorClass,
  type DhcpMessage,
  type DhcpOptionEntry,
} from "./dhcp.ts";
import { DecodeError } from "./reader.ts";
import { readFixture, readFixtures } from "./fixtures/load.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const fixtures = readFixtures("dhcp-");

type Expected = {
  arch: number[] | undefined;
  vendor: string | undefined;
  user: string[] | undefined;
  uuid: string | undefined;
  mac: string;
  pxe: boolean;
  http: boolean;
  ipxe: boolean;
  giaddr: string;
  hops: number;
  paddingBytes: number;
};

// What LAB-NOTES.md says each client sends; a real capture of the same client must match.
const expected: Record<string, Expected> = {
  "dhcp-ipxe-bios-discover.hex": {
    arch: [ClientArch.X86Bios],
    vendor: "PXEClient:Arch:00000:UNDI:002001",
    user: ["iPXE"],
    uuid: "8b3c4f4e-1c2d-4a5b-9c8d-0e1f2a3b4c5d",
    mac: "52:54:00:12:34:56",
    pxe: true,
    http: false,
    ipxe: true,
    giaddr: "0.0.0.0",
    hops: 0,
    paddingBytes: 0,
  },
  "dhcp-ipxe-efi-discover.hex": {
    arch: [ClientArch.EfiX64],
    vendor: "PXEClient:Arch:00007:UNDI:003010",
    user: ["iPXE"],
    uuid: "00112233-4455-6677-8899-aabbccddeeff",
    mac: "52:54:00:12:34:57",
    pxe: true,
    http: false,
    ipxe: true,
    giaddr: "0.0.0.0",
    hops: 0,
    paddingBytes: 0,
  },
  "dhcp-ovmf-pxe-discover.hex": {
    arch: [ClientArch.EfiX64],
    vendor: "PXEClient:Arch:00007:UNDI:003000",
    user: undefined,
    uuid: "c0ffee00-1234-5678-9abc-def012345678",
    mac: "52:54:00:ab:cd:01",
    pxe: true,
    http: false,
    ipxe: false,
    giaddr: "0.0.0.0",
    hops: 0,
    paddingBytes: 0,
  },
  "dhcp-uefi-http-discover.hex": {
    arch: [ClientArch.EfiX64Http],
    vendor: "HTTPClient:Arch:00016:UNDI:003000",
    user: undefined,
    uuid: "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    mac: "52:54:00:ab:cd:02",
    pxe: false,
    http: true,
    ipxe: false,
    giaddr: "0.0.0.0",
    hops: 0,
    paddingBytes: 0,
  },
  "dhcp-relayed-discover.hex": {
    arch: [ClientArch.EfiX64],
    vendor: "PXEClient:Arch:00007:UNDI:003000",
    user: undefined,
    uuid: "a1b2c3d4-e5f6-4788-99aa-bbccddeeff00",
    mac: "52:54:00:ab:cd:03",
    pxe: true,
    http: false,
    ipxe: false,
    giaddr: "10.20.30.1",
    hops: 1,
    paddingBytes: 0,
  },
  "dhcp-udhcpc-discover.hex": {
    arch: [ClientArch.X86Bios],
    vendor: "PXEClient:Arch:00000:UNDI:002001",
    user: undefined,
    uuid: undefined,
    mac: "02:5b:1e:00:00:05",
    pxe: true,
    http: false,
    ipxe: false,
    giaddr: "0.0.0.0",
    hops: 0,
    paddingBytes: 0,
  },
  "dhcp-udhcpc-plain-discover.hex": {
    arch: undefined,
    vendor: "udhcp 1.35.0",
    user: undefined,
    uuid: undefined,
    mac: "02:5b:1e:00:00:06",
    pxe: false,
    http: false,
    ipxe: false,
    giaddr: "0.0.0.0",
    hops: 0,
    paddingBytes: 20,
  },
};

/** Runs `fn`; passes if it returns or throws DecodeError, fails on any other error. */
function onlyDecodeError(fn: () => unknown, context: string): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (e instanceof DecodeError) return false;
    assert.fail(`${context}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} instead of DecodeError`);
  }
}

/** Decodes `bytes` expecting success or DecodeError; a success must re-encode exactly and its accessors may only throw DecodeError. */
function decodeOrRefuse(bytes: Uint8Array, context: string): void {
  let msg: DhcpMessage | undefined;
  onlyDecodeError(() => (msg = decodeDhcp(bytes)), context);
  if (msg === undefined) return;
  const decoded = msg;
  assert.deepEqual(encodeDhcp(decoded), bytes, `${context}: decoded but did not re-encode to the same bytes`);
  for (const read of [messageType, vendorClass, userClass, clientArch, clientUuid, ipxeFeatures, pxeBootItem, isPxeClient, isIpxe]) {
    onlyDecodeError(() => read(decoded), `${context}: ${read.name}`);
  }
}

function refuses(bytes: Uint8Array, offset: number, message: RegExp): void {
  assert.throws(
    () => decodeDhcp(bytes),
    (e: unknown) => e instanceof DecodeError && e.offset === offset && message.test(e.message),
    `expected DecodeError at ${offset} matching ${message}`,
  );
}

/** A minimal valid request with these options and padding, built by hand (not by the encoder). */
function rawMessage(options: number[], padding: number[] = []): Uint8Array {
  const out = new Uint8Array(240 + options.length + padding.length);
  out.set([1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef]);
  out.set([0x52, 0x54, 0, 1, 2, 3], 28);
  out.set([99, 130, 83, 99], 236);
  out.set(options, 240);
  out.set(padding, 240 + options.length);
  return out;
}

test("every fixture has expectations", () => {
  assert.deepEqual([...fixtures.keys()].sort(), Object.keys(expected).sort());
});

for (const [name, bytes] of fixtures) {
  const want = expected[name];

  test(`${name}: encode(decode(x)) reproduces the capture byte for byte`, () => {
    assert.deepEqual(encodeDhcp(decodeDhcp(bytes)), bytes);
  });

  test(`${name}: decodes to the client's architecture, classes, UUID and MAC`, () => {
    const msg = decodeDhcp(bytes);
    assert.equal(msg.op, 1);
    assert.equal(messageType(msg), DhcpMessageType.Discover);
    assert.deepEqual(clientArch(msg), want.arch);
    assert.equal(vendorClass(msg), want.vendor);
    assert.deepEqual(userClass(msg), want.user);
    assert.equal(clientUuid(msg), want.uuid);
    assert.equal(msg.mac, want.mac);
    assert.equal(isPxeClient(msg), want.pxe);
    assert.equal(isHttpClient(msg), want.http);
    assert.equal(isIpxe(msg), want.ipxe);
    assert.equal(msg.giaddr, want.giaddr);
    assert.equal(msg.hops, want.hops);
    assert.equal(msg.padding?.length, want.paddingBytes);
    assert.equal(msg.sname, "");
    assert.equal(msg.file, "");
  });

  test(`${name}: truncated at every offset, only DecodeError comes out`, () => {
    const endAt = bytes.length - want.paddingBytes; // one past END
    for (let cut = 0; cut < bytes.length; cut++) {
      const piece = bytes.subarray(0, cut);
      if (cut < endAt) {
        assert.throws(() => decodeDhcp(piece), DecodeError, `cut at ${cut} must be refused`);
      } else {
        decodeOrRefuse(piece, `cut at ${cut}`);
      }
    }
  });

  test(`${name}: every byte inverted and every bit flipped, only DecodeError comes out`, () => {
    for (let i = 0; i < bytes.length; i++) {
      const flipped = bytes.slice();
      flipped[i] ^= 0xff;
      decodeOrRefuse(flipped, `byte ${i} inverted`);
      for (let bit = 0; bit < 8; bit++) {
        const one = bytes.slice();
        one[i] ^= 1 << bit;
        decodeOrRefuse(one, `bit ${bit} of byte ${i} flipped`);
      }
    }
  });
}

test("the MAC comes from chaddr only for Ethernet with a 6-byte address", () => {
  const bytes = readFixture("dhcp-ovmf-pxe-discover.hex");
  const ib = bytes.slice();
  ib[1] = 32; // InfiniBand
  assert.equal(decodeDhcp(ib).mac, undefined);
  const short = bytes.slice();
  short[2] = 4;
  assert.equal(decodeDhcp(short).mac, undefined);
});

test("iPXE's option 175 yields its bus id, version and feature flags", () => {
  const msg = decodeDhcp(readFixture("dhcp-ipxe-bios-discover.hex"));
  const features = ipxeFeatures(msg);
  assert.ok(features);
  assert.deepEqual(features.get(IpxeOption.BusId), Uint8Array.of(1, 0x80, 0x86, 0x10, 0x0e));
  assert.deepEqual(features.get(IpxeOption.Version), Uint8Array.of(1, 0, 0));
  assert.deepEqual(features.get(IpxeOption.FeatureHttp), Uint8Array.of(1));
  assert.equal(ipxeFeatures(decodeDhcp(readFixture("dhcp-ovmf-pxe-discover.hex"))), undefined);
});

test("option 94 and the rest of the options stay in wire order, relay option 82 last", () => {
  const msg = decodeDhcp(readFixture("dhcp-relayed-discover.hex"));
  assert.deepEqual(
    msg.options.map((o) => o.code),
    [53, 57, 55, 97, 94, 93, 60, 82],
  );
  assert.deepEqual(optionData(msg, DhcpOption.ClientNdi), Uint8Array.of(1, 3, 0));
});

test("refuses a message shorter than the fixed header and cookie", () => {
  refuses(new Uint8Array(0), 0, /0 bytes is shorter than the 240-byte header/);
  refuses(new Uint8Array(239), 239, /239 bytes is shorter than the 240-byte header/);
});

test("refuses an op other than BOOTREQUEST or BOOTREPLY", () => {
  const bytes = rawMessage([255]);
  bytes[0] = 3;
  refuses(bytes, 0, /op 3 at offset 0 is neither BOOTREQUEST \(1\) nor BOOTREPLY \(2\)/);
});

test("refuses hlen longer than chaddr", () => {
  const bytes = rawMessage([255]);
  bytes[2] = 17;
  refuses(bytes, 2, /hlen 17 .* longer than the 16-byte chaddr/);
  bytes[2] = 16;
  assert.equal(decodeDhcp(bytes).hlen, 16);
});

test("refuses a bad magic cookie", () => {
  const bytes = rawMessage([255]);
  bytes[239] = 98;
  refuses(bytes, 236, /magic cookie at offset 236 is not 99\.130\.83\.99/);
});

test("refuses an option whose length runs past the end", () => {
  refuses(rawMessage([53, 1, 1, 60, 9, 0x50, 0x58]), 243, /option 60 at offset 243: its 9 bytes run past the end of the options field \(2 left\)/);
  refuses(rawMessage([53]), 240, /option 53 at offset 240: its length byte is past the end/);
});

test("refuses options that run to the end of the message without END", () => {
  refuses(rawMessage([53, 1, 1]), 243, /ends at offset 243 without an END option/);
  refuses(rawMessage([]), 240, /without an END option/);
  refuses(rawMessage([0, 0, 0]), 243, /without an END option/);
});

test("keeps bytes after END as padding, zero or not", () => {
  const zeros = rawMessage([53, 1, 1, 255], new Array(57).fill(0));
  const msg = decodeDhcp(zeros);
  assert.equal(msg.padding?.length, 57);
  assert.deepEqual(encodeDhcp(msg), zeros);
  const junk = rawMessage([53, 1, 1, 255], [1, 2, 3, 255, 53]);
  assert.deepEqual(decodeDhcp(junk).padding, Uint8Array.of(1, 2, 3, 255, 53));
  assert.deepEqual(encodeDhcp(decodeDhcp(junk)), junk);
});

test("keeps Pad bytes between options as code-0 entries and ignores them in the logical view", () => {
  const bytes = rawMessage([0, 53, 1, 1, 0, 0, 93, 2, 0, 7, 0, 255]);
  const msg = decodeDhcp(bytes);
  assert.deepEqual(
    msg.options.map((o) => o.code),
    [0, 53, 0, 0, 93, 0],
  );
  assert.equal(optionData(msg, DhcpOption.Pad), undefined);
  assert.deepEqual(clientArch(msg), [7]);
  assert.deepEqual(encodeDhcp(msg), bytes);
});

test("duplicate options are kept and joined in order for the logical view (RFC 3396)", () => {
  const bytes = rawMessage([60, 3, 0x50, 0x58, 0x45, 53, 1, 1, 60, 6, 0x43, 0x6c, 0x69, 0x65, 0x6e, 0x74, 255]);
  const msg = decodeDhcp(bytes);
  assert.equal(msg.options.filter((o) => o.code === 60).length, 2);
  assert.equal(vendorClass(msg), "PXEClient");
  assert.deepEqual(encodeDhcp(msg), bytes);
});

test("an option longer than 255 bytes is split into consecutive instances and joined again", () => {
  const url = `http://deploy.example/boot/${"x".repeat(600)}`;
  const msg = decodeDhcp(rawMessage([53, 1, 1, 255]));
  msg.options.push({ code: DhcpOption.BootfileName, data: text(url) });
  const bytes = encodeDhcp(msg);
  const again = decodeDhcp(bytes);
  assert.deepEqual(
    again.options.filter((o) => o.code === 67).map((o) => o.data.length),
    [255, 255, url.length - 510],
  );
  assert.equal(new TextDecoder().decode(optionData(again, DhcpOption.BootfileName)), url);
  assert.deepEqual(encodeDhcp(again), bytes);
});

test("options carried in file and sname under option 52 join the logical view, file first", () => {
  const bytes = rawMessage([53, 1, 2, 52, 1, 3, 60, 2, 0x50, 0x58, 255]);
  // file field (offset 108): option 67 "a.efi", option 60 "EC", END
  bytes.set([67, 5, 0x61, 0x2e, 0x65, 0x66, 0x69, 60, 2, 0x45, 0x43, 255], 108);
  // sname field (offset 44): option 60 "lient", then the field simply ends (no END needed)
  bytes.set([60, 5, 0x6c, 0x69, 0x65, 0x6e, 0x74], 44);
  bytes.fill(0, 51, 108);
  const msg = decodeDhcp(bytes);
  assert.equal(msg.file, "", "an overloaded field is not a file name");
  assert.equal(msg.sname, "");
  assert.equal(new TextDecoder().decode(optionData(msg, DhcpOption.BootfileName)), "a.efi");
  assert.equal(vendorClass(msg), "PXEClient");
  assert.deepEqual(encodeDhcp(msg), bytes, "the raw fields are written back as received");
});

test("refuses an overloaded field whose option runs past the field, and a malformed option 52", () => {
  const bytes = rawMessage([53, 1, 2, 52, 1, 1, 255]);
  bytes.set([67, 200], 108);
  refuses(bytes, 108, /option 67 at offset 108: its 200 bytes run past the end of the file field/);
  refuses(rawMessage([52, 1, 4, 255]), 240, /option 52 \(overload\)/);
  refuses(rawMessage([52, 2, 1, 1, 255]), 240, /option 52 \(overload\)/);
});

test("sname and file: text up to the first NUL, raw bytes kept for the round trip", () => {
  const bytes = rawMessage([53, 1, 2, 255]);
  bytes.set(text("pxe-server"), 44);
  bytes.set(text("boot/ipxe.efi"), 108);
  bytes.set(text("junk after NUL"), 108 + 20);
  const msg = decodeDhcp(bytes);
  assert.equal(msg.sname, "pxe-server");
  assert.equal(msg.file, "boot/ipxe.efi");
  assert.deepEqual(encodeDhcp(msg), bytes);
  msg.file = "undionly.kpxe";
  const changed = decodeDhcp(encodeDhcp(msg));
  assert.equal(changed.file, "undionly.kpxe");
  assert.ok(changed.rawFile?.subarray(13).every((b) => b === 0), "a changed name is written fresh, without the old junk");
});

test("sname filled to the last byte without NUL is accepted", () => {
  const bytes = rawMessage([255]);
  bytes.fill(0x41, 44, 108);
  const msg = decodeDhcp(bytes);
  assert.equal(msg.sname, "A".repeat(64));
  assert.deepEqual(encodeDhcp(msg), bytes);
});

test("user class: RFC 3004 length-prefixed lists and iPXE's bare text", () => {
  const rfc = decodeDhcp(rawMessage([77, 7, 2, 0x61, 0x62, 3, 0x63, 0x64, 0x65, 255]));
  assert.deepEqual(userClass(rfc), ["ab", "cde"]);
  const bare = decodeDhcp(rawMessage([77, 4, 0x69, 0x50, 0x58, 0x45, 255]));
  assert.deepEqual(userClass(bare), ["iPXE"]);
  // A length byte that does not tile the data exactly: one raw string.
  const ragged = decodeDhcp(rawMessage([77, 3, 1, 0x61, 0x62, 255]));
  assert.deepEqual(userClass(ragged), ["\u0001ab"]);
  assert.equal(isIpxe(bare), true);
  assert.equal(isIpxe(rfc), false);
});

test("client UUID: SMBIOS order by default, wire order on request, and both refuse a malformed option", () => {
  const msg = decodeDhcp(rawMessage([97, 17, 0, 0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 255]));
  assert.equal(clientUuid(msg), "00112233-4455-6677-8899-aabbccddeeff");
  assert.equal(clientUuid(msg, "network"), "33221100-5544-7766-8899-aabbccddeeff");
  assert.deepEqual(optionData(msg, DhcpOption.ClientUuid), encodeClientUuid("00112233-4455-6677-8899-AABBCCDDEEFF"));
  assert.throws(() => clientUuid(decodeDhcp(rawMessage([97, 16, ...new Array(16).fill(1), 255]))), /is 16 bytes, not 17/);
  assert.throws(() => clientUuid(decodeDhcp(rawMessage([97, 17, 1, ...new Array(16).fill(1), 255]))), /has type 1, not 0/);
  assert.throws(() => encodeClientUuid("not-a-uuid"), RangeError);
});

test("client architecture is a list of 16-bit types; an odd length is refused", () => {
  assert.deepEqual(clientArch(decodeDhcp(rawMessage([93, 4, 0, 7, 0, 9, 255]))), [7, 9]);
  assert.throws(() => clientArch(decodeDhcp(rawMessage([93, 3, 0, 7, 0, 255]))), DecodeError);
  assert.throws(() => clientArch(decodeDhcp(rawMessage([93, 0, 255]))), DecodeError);
  assert.throws(() => messageType(decodeDhcp(rawMessage([53, 2, 1, 1, 255]))), /message type\): it is 2 bytes, not 1/);
  assert.equal(messageType(decodeDhcp(rawMessage([255]))), undefined, "plain BOOTP has no message type");
});

test("PXE vendor options (43): encode, decode and the boot menu layout", () => {
  const menu = encodePxeBootMenu([{ type: 0x8000, description: "Slipway" }]);
  assert.deepEqual(menu, Uint8Array.of(0x80, 0x00, 7, ...text("Slipway")));
  assert.deepEqual(encodePxeMenuPrompt(5, "F8"), Uint8Array.of(5, 0x46, 0x38));
  const value = encodePxeVendorOptions([
    [PxeVendorOption.DiscoveryControl, Uint8Array.of(PxeDiscoveryControl.UseBootfile)],
    [PxeVendorOption.BootMenu, menu],
  ]);
  assert.deepEqual(value.subarray(0, 3), Uint8Array.of(6, 1, 8));
  assert.equal(value[value.length - 1], 255, "END-terminated");
  const decoded = decodePxeVendorOptions(value);
  assert.deepEqual(decoded.get(PxeVendorOption.DiscoveryControl), Uint8Array.of(8));
  assert.deepEqual(decoded.get(PxeVendorOption.BootMenu), menu);
  assert.throws(() => decodePxeVendorOptions(Uint8Array.of(6, 5, 1)), DecodeError);
  assert.throws(() => encodePxeVendorOptions([[255, new Uint8Array(0)]]), RangeError);
});

test("a boot server request's PXE_BOOT_ITEM is read from option 43", () => {
  const msg = decodeDhcp(rawMessage([43, 7, 71, 4, 0x80, 0x00, 0x00, 0x00, 255, 255]));
  assert.deepEqual(pxeBootItem(msg), { type: 0x8000, layer: 0 });
  assert.equal(pxeBootItem(decodeDhcp(rawMessage([255]))), undefined);
});

test("a ProxyDHCP offer to iPXE: BOOTREPLY with the request's identity, next server, PXEClient, UUID echo and no-pxedhcp", () => {
  const request = decodeDhcp(readFixture("dhcp-ipxe-bios-discover.hex"));
  const before = structuredClone(request);
  const reply = buildReply(request, {
    messageType: DhcpMessageType.Offer,
    serverId: "192.168.50.1",
    bootfile: "http://192.168.50.1/boot/script.ipxe",
    ipxeNoProxyDhcp: true,
  });
  assert.deepEqual(request, before, "buildReply does not touch the request");
  const bytes = encodeDhcp(reply);
  assert.ok(bytes.length >= 300, "padded to the 300-byte BOOTP minimum");
  const got = decodeDhcp(bytes);
  assert.equal(got.op, 2);
  assert.equal(got.xid, request.xid);
  assert.equal(got.flags, request.flags);
  assert.deepEqual(got.chaddr, request.chaddr);
  assert.equal(got.mac, "52:54:00:12:34:56");
  assert.equal(got.yiaddr, "0.0.0.0");
  assert.equal(got.siaddr, "192.168.50.1", "iPXE ignores ProxyDHCP offers without siaddr");
  assert.equal(got.file, "http://192.168.50.1/boot/script.ipxe");
  assert.equal(messageType(got), DhcpMessageType.Offer);
  assert.deepEqual(optionData(got, DhcpOption.ServerId), Uint8Array.of(192, 168, 50, 1));
  assert.equal(vendorClass(got), "PXEClient");
  assert.equal(clientUuid(got), "8b3c4f4e-1c2d-4a5b-9c8d-0e1f2a3b4c5d");
  assert.equal(new TextDecoder().decode(optionData(got, DhcpOption.BootfileName)), "http://192.168.50.1/boot/script.ipxe");
  assert.deepEqual(ipxeFeatures(got)?.get(IpxeOption.NoPxeDhcp), Uint8Array.of(1));
  assert.equal(got.options[0].code, DhcpOption.MessageType, "option 53 comes first");
});

test("a reply to a UEFI HTTP boot client says HTTPClient", () => {
  const request = decodeDhcp(readFixture("dhcp-uefi-http-discover.hex"));
  const got = decodeDhcp(encodeDhcp(buildReply(request, { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", bootfile: "http://10.0.0.1/ipxe.efi" })));
  assert.equal(vendorClass(got), "HTTPClient");
  assert.equal(ipxeFeatures(got), undefined, "no iPXE option unless asked");
});

test("a reply to a relayed request keeps giaddr (it goes back through the relay) and resets hops", () => {
  const request = decodeDhcp(readFixture("dhcp-relayed-discover.hex"));
  const reply = buildReply(request, { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", siaddr: "10.0.0.2", bootfile: "ipxe.efi" });
  assert.equal(reply.giaddr, "10.20.30.1");
  assert.equal(reply.hops, 0);
  assert.equal(reply.siaddr, "10.0.0.2");
  assert.equal(reply.flags, 0x8000, "the broadcast flag is copied");
});

test("a reply to a non-PXE client carries no option 60 or 97; an ACK echoes ciaddr, an OFFER does not", () => {
  const request = decodeDhcp(readFixture("dhcp-udhcpc-plain-discover.hex"));
  request.ciaddr = "10.1.2.3";
  const offer = buildReply(request, { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", yiaddr: "10.0.0.50" });
  assert.equal(optionData(offer, DhcpOption.VendorClass), undefined);
  assert.equal(optionData(offer, DhcpOption.ClientUuid), undefined);
  assert.equal(offer.ciaddr, "0.0.0.0");
  assert.equal(offer.yiaddr, "10.0.0.50");
  const ack = buildReply(request, { messageType: DhcpMessageType.Ack, serverId: "10.0.0.1" });
  assert.equal(ack.ciaddr, "10.1.2.3");
});

test("a boot file too long for the file field goes in option 67 only; caller options win over automatic ones", () => {
  const request = decodeDhcp(readFixture("dhcp-ovmf-pxe-discover.hex"));
  const url = `http://10.0.0.1/${"a".repeat(300)}`;
  const reply = buildReply(request, {
    messageType: DhcpMessageType.Offer,
    serverId: "10.0.0.1",
    bootfile: url,
    options: [
      { code: DhcpOption.VendorClass, data: text("PXEClient:custom") },
      { code: DhcpOption.VendorSpecific, data: encodePxeVendorOptions([[PxeVendorOption.DiscoveryControl, Uint8Array.of(8)]]) },
    ],
  });
  const got = decodeDhcp(encodeDhcp(reply));
  assert.equal(got.file, "");
  assert.equal(new TextDecoder().decode(optionData(got, DhcpOption.BootfileName)), url);
  assert.equal(vendorClass(got), "PXEClient:custom");
  assert.throws(() => buildReply(request, { messageType: 2, serverId: "10.0.0.1", options: [{ code: 54, data: new Uint8Array(4) }] }), RangeError);
});

test("the encoder refuses fields that do not fit (caller bugs are RangeErrors)", () => {
  const msg = decodeDhcp(readFixture("dhcp-ovmf-pxe-discover.hex"));
  assert.throws(() => encodeDhcp({ ...msg, ciaddr: "10.0.0.256" }), RangeError);
  assert.throws(() => encodeDhcp({ ...msg, file: "x".repeat(128), rawFile: undefined }), RangeError);
  assert.throws(() => encodeDhcp({ ...msg, chaddr: new Uint8Array(17) }), RangeError);
  assert.throws(() => encodeDhcp({ ...msg, options: [{ code: 255, data: new Uint8Array(0) }] }), RangeError);
  assert.throws(() => encodeDhcp({ ...msg, options: [{ code: 0, data: Uint8Array.of(1) }] }), RangeError);
});

// ---------------------------------------------------------------------------------------
// Property tests

test("random bytes never raise anything but DecodeError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 700 }), (bytes) => {
      decodeOrRefuse(bytes, "random bytes");
    }),
    { numRuns: 3000 },
  );
});

test("random bytes behind a valid header and cookie never raise anything but DecodeError", () => {
  const header = rawMessage([]);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (options) => {
      const bytes = new Uint8Array(240 + options.length);
      bytes.set(header);
      bytes.set(options, 240);
      decodeOrRefuse(bytes, "random options");
    }),
    { numRuns: 3000 },
  );
});

test("random mutations of the fixtures never raise anything but DecodeError", () => {
  const seeds = [...fixtures.values()];
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("delete" as const), at: fc.nat() }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 6 }), (which, edits) => {
      let bytes = seeds[which].slice();
      for (const e of edits) {
        const at = bytes.length === 0 ? 0 : e.at % bytes.length;
        if (e.kind === "set" && bytes.length > 0) bytes[at] = e.value;
        else if (e.kind === "cut") bytes = bytes.slice(0, at);
        else if (e.kind === "insert") bytes = Uint8Array.from([...bytes.subarray(0, at), e.value, ...bytes.subarray(at)]);
        else if (e.kind === "delete") bytes = Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
      }
      decodeOrRefuse(bytes, "mutated fixture");
    }),
    { numRuns: 3000 },
  );
});

const printable = (max: number) =>
  fc.array(fc.integer({ min: 0x20, max: 0x7e }), { maxLength: max }).map((codes) => String.fromCharCode(...codes));
const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."));
const optionEntry: fc.Arbitrary<DhcpOptionEntry> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ code: 0, data: new Uint8Array(0) }) },
  {
    weight: 8,
    arbitrary: fc.record({
      code: fc.integer({ min: 1, max: 254 }).filter((c) => c !== DhcpOption.Overload),
      data: fc.uint8Array({ maxLength: 300 }),
    }),
  },
);
const message: fc.Arbitrary<DhcpMessage> = fc.record({
  op: fc.constantFrom(1, 2),
  htype: fc.integer({ min: 0, max: 255 }),
  hlen: fc.integer({ min: 0, max: 16 }),
  hops: fc.integer({ min: 0, max: 255 }),
  xid: fc.integer({ min: 0, max: 0xffffffff }),
  secs: fc.integer({ min: 0, max: 0xffff }),
  flags: fc.integer({ min: 0, max: 0xffff }),
  ciaddr: ip,
  yiaddr: ip,
  siaddr: ip,
  giaddr: ip,
  chaddr: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  sname: printable(63),
  file: printable(127),
  options: fc.array(optionEntry, { maxLength: 12 }),
  padding: fc.uint8Array({ maxLength: 80 }),
});

test("generated messages survive encode → decode → encode, with the same logical options", () => {
  fc.assert(
    fc.property(message, (msg) => {
      const bytes = encodeDhcp(msg);
      const decoded = decodeDhcp(bytes);
      assert.deepEqual(encodeDhcp(decoded), bytes);
      for (const field of ["op", "htype", "hlen", "hops", "xid", "secs", "flags", "ciaddr", "yiaddr", "siaddr", "giaddr", "sname", "file"] as const) {
        assert.equal(decoded[field], msg[field], field);
      }
      assert.deepEqual(decoded.chaddr, msg.chaddr);
      assert.deepEqual(decoded.padding, msg.padding);
      for (const code of new Set(msg.options.map((o) => o.code))) {
        if (code === 0) continue;
        const want = msg.options.filter((o) => o.code === code).flatMap((o) => [...o.data]);
        assert.deepEqual(optionData(decoded, code), Uint8Array.from(want), `option ${code}`);
      }
    }),
    { numRuns: 1000 },
  );
});
