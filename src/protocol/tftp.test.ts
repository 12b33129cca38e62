import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { DecodeError } from "./reader.ts";
import {
  TFTP_MAX_BLKSIZE,
  TftpErrorCode,
  TftpOpcode,
  decodeTftp,
  encodeTftp,
  negotiateOptions,
  normalizeTftpPath,
  optionMap,
  type TftpLimits,
  type TftpOption,
  type TftpPacket,
} from "./tftp.ts";

const ascii = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));
/** A packet as bytes: an opcode then NUL-terminated strings (built by hand, not by the encoder). */
const strings = (opcode: number, ...parts: string[]): Uint8Array => Uint8Array.from([0, opcode, ...parts.flatMap((p) => [...ascii(p), 0])]);

// OVMF's request as LAB-NOTES records it: tsize=0, blksize=1468, windowsize=4.
const ovmfRrq = strings(TftpOpcode.RRQ, "ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "4");

const examples: { name: string; bytes: Uint8Array; packet: TftpPacket }[] = [
  {
    name: "RRQ with options (OVMF)",
    bytes: ovmfRrq,
    packet: { op: "RRQ", filename: "ipxe.efi", mode: "octet", options: [["tsize", "0"], ["blksize", "1468"], ["windowsize", "4"]] },
  },
  { name: "RRQ without options", bytes: strings(1, "pxelinux.0", "netascii"), packet: { op: "RRQ", filename: "pxelinux.0", mode: "netascii", options: [] } },
  { name: "WRQ", bytes: strings(2, "upload/log.txt", "OCTET", "tsize", "1234"), packet: { op: "WRQ", filename: "upload/log.txt", mode: "OCTET", options: [["tsize", "1234"]] } },
  { name: "DATA", bytes: Uint8Array.of(0, 3, 0x12, 0x34, 1, 2, 3), packet: { op: "DATA", block: 0x1234, data: Uint8Array.of(1, 2, 3) } },
  { name: "empty DATA (end of a file of whole blocks)", bytes: Uint8Array.of(0, 3, 0, 9), packet: { op: "DATA", block: 9, data: new Uint8Array(0) } },
  { name: "ACK", bytes: Uint8Array.of(0, 4, 0xff, 0xff), packet: { op: "ACK", block: 65535 } },
  {
    name: "ERROR",
    bytes: Uint8Array.of(0, 5, 0, 1, ...ascii("File not found"), 0),
    packet: { op: "ERROR", code: TftpErrorCode.FileNotFound, message: "File not found" },
  },
  { name: "ERROR without text", bytes: Uint8Array.of(0, 5, 0, 8, 0), packet: { op: "ERROR", code: 8, message: "" } },
  {
    name: "OACK",
    bytes: strings(6, "BlkSize", "1468", "tsize", "1048576"),
    packet: { op: "OACK", options: [["BlkSize", "1468"], ["tsize", "1048576"]] },
  },
  { name: "empty OACK", bytes: Uint8Array.of(0, 6), packet: { op: "OACK", options: [] } },
];

function refuses(bytes: Uint8Array, message: RegExp, offset?: number): void {
  assert.throws(
    () => decodeTftp(bytes),
    (e: unknown) => e instanceof DecodeError && message.test(e.message) && (offset === undefined || e.offset === offset),
    `expected DecodeError matching ${message}`,
  );
}

/** Decodes expecting success or DecodeError only; a success must re-encode to the same bytes. */
function decodeOrRefuse(bytes: Uint8Array, context: string): void {
  let packet: TftpPacket;
  try {
    packet = decodeTftp(bytes);
  } catch (e) {
    if (e instanceof DecodeError) return;
    assert.fail(`${context}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} instead of DecodeError`);
  }
  assert.deepEqual(encodeTftp(packet), bytes, `${context}: decoded but did not re-encode to the same bytes`);
  if (packet.op === "RRQ" || packet.op === "WRQ") {
    normalizeTftpPath(packet.filename);
    negotiateOptions(packet.options, { maxBlksize: 1468, maxWindowsize: 16, fileSize: 10 });
  }
}

for (const { name, bytes, packet } of examples) {
  test(`${name}: decodes, and encodes back to the same bytes`, () => {
    assert.deepEqual(decodeTftp(bytes), packet);
    assert.deepEqual(encodeTftp(packet), bytes);
  });

  test(`${name}: truncated at every offset and with every bit flipped, only DecodeError comes out`, () => {
    for (let cut = 0; cut < bytes.length; cut++) decodeOrRefuse(bytes.subarray(0, cut), `cut at ${cut}`);
    for (let i = 0; i < bytes.length; i++) {
      const inverted = bytes.slice();
      inverted[i] ^= 0xff;
      decodeOrRefuse(inverted, `byte ${i} inverted`);
      for (let bit = 0; bit < 8; bit++) {
        const flipped = bytes.slice();
        flipped[i] ^= 1 << bit;
        decodeOrRefuse(flipped, `bit ${bit} of byte ${i}`);
      }
    }
  });
}

test("DATA carries up to 65464 bytes (RFC 2348) and no more", () => {
  const full = new Uint8Array(4 + TFTP_MAX_BLKSIZE);
  full[1] = 3;
  const packet = decodeTftp(full);
  assert.equal(packet.op === "DATA" && packet.data.length, TFTP_MAX_BLKSIZE);
  assert.deepEqual(encodeTftp(packet), full);
  const over = new Uint8Array(5 + TFTP_MAX_BLKSIZE);
  over[1] = 3;
  refuses(over, /65465 data bytes exceed the largest block size, 65464/, 4);
  assert.throws(() => encodeTftp({ op: "DATA", block: 1, data: new Uint8Array(TFTP_MAX_BLKSIZE + 1) }), RangeError);
});

test("option names compare case-insensitively but keep the client's spelling", () => {
  const packet = decodeTftp(strings(1, "a", "octet", "BLKSIZE", "1024", "TSize", "0"));
  assert.ok(packet.op === "RRQ");
  assert.deepEqual(packet.options, [["BLKSIZE", "1024"], ["TSize", "0"]]);
  assert.deepEqual(optionMap(packet.options), new Map([["blksize", "1024"], ["tsize", "0"]]));
  assert.deepEqual(optionMap([["blksize", "1"], ["BLKSIZE", "2"]]).get("blksize"), "1", "the first instance wins");
});

test("refuses packets too short for an opcode, and unknown opcodes", () => {
  refuses(new Uint8Array(0), /0 bytes is shorter than the 2-byte opcode/, 0);
  refuses(Uint8Array.of(0), /1 bytes is shorter than the 2-byte opcode/, 1);
  refuses(Uint8Array.of(0, 0), /opcode 0 at offset 0 is not one of 1-6/, 0);
  refuses(Uint8Array.of(0, 7, 0, 0), /opcode 7/);
  refuses(Uint8Array.of(0xff, 0xff), /opcode 65535/);
});

test("refuses requests with a missing NUL terminator", () => {
  refuses(Uint8Array.of(0, 1, ...ascii("ipxe.efi")), /RRQ filename at offset 2: no NUL terminator/, 2);
  refuses(Uint8Array.of(0, 1, ...ascii("ipxe.efi"), 0, ...ascii("octet")), /RRQ mode at offset 11: no NUL terminator/, 11);
  refuses(Uint8Array.of(0, 1, ...ascii("a"), 0, ...ascii("octet"), 0, ...ascii("tsize"), 0, ...ascii("0")), /RRQ option .* no NUL terminator/);
  refuses(Uint8Array.of(0, 5, 0, 1, ...ascii("File not found")), /ERROR message at offset 4: no NUL terminator/, 4);
});

test("refuses a file name longer than 255 bytes, and says why", () => {
  assert.equal(decodeTftp(strings(1, "a".repeat(255), "octet")).op, "RRQ");
  refuses(strings(1, "a".repeat(256), "octet"), /filename at offset 2 is 256 bytes, longer than the 255 accepted \(no served file has a longer name\)/, 2);
  refuses(strings(1, "", "octet"), /filename at offset 2 is empty/);
});

test("refuses an odd number of option strings", () => {
  refuses(strings(1, "a", "octet", "blksize"), /option "blksize" has no value \(an odd number of option strings\)/);
  refuses(strings(6, "tsize", "1", "blksize"), /OACK: option "blksize" has no value/);
  refuses(strings(1, "a", "octet", ""), /odd number/, undefined);
});

test("refuses non-ASCII and control characters in file name, mode and options", () => {
  refuses(Uint8Array.of(0, 1, 0x61, 0x80, 0, ...ascii("octet"), 0), /RRQ filename: byte 0x80 at offset 3 is not printable ASCII/, 3);
  refuses(Uint8Array.of(0, 1, 0xc3, 0xa9, 0, ...ascii("octet"), 0), /byte 0xc3 at offset 2/);
  refuses(Uint8Array.of(0, 1, 0x61, 0x0a, 0x62, 0, ...ascii("octet"), 0), /byte 0x0a at offset 3/);
  refuses(Uint8Array.of(0, 1, 0x61, 0, ...ascii("oct"), 0x1b, 0), /RRQ mode: byte 0x1b/);
  refuses(Uint8Array.of(0, 1, 0x61, 0, ...ascii("octet"), 0, ...ascii("tsize"), 0, 0x7f, 0), /RRQ option: byte 0x7f/);
});

test("accepts the three RFC 1350 modes in any case and refuses others", () => {
  for (const mode of ["netascii", "octet", "mail", "OCTET", "NetAscii"]) assert.equal(decodeTftp(strings(1, "f", mode)).op, "RRQ");
  refuses(strings(1, "f", "binary"), /mode "binary" at offset 4 is not netascii, octet or mail/, 4);
  refuses(strings(2, "f", ""), /mode "" .* is not netascii/);
});

test("refuses bytes after a complete ACK or ERROR", () => {
  refuses(Uint8Array.of(0, 4, 0, 1, 0), /ACK: 1 unexpected bytes after the packet at offset 4/, 4);
  refuses(Uint8Array.of(0, 5, 0, 0, 0x78, 0, 0x79), /ERROR: 1 unexpected bytes/);
  refuses(Uint8Array.of(0, 4, 0), /Cannot read u16 at offset 2: 1 byte left/, 2);
});

test("the encoder refuses what the decoder would refuse", () => {
  assert.throws(() => encodeTftp({ op: "RRQ", filename: "a\u0000b", mode: "octet", options: [] }), RangeError);
  assert.throws(() => encodeTftp({ op: "RRQ", filename: "é", mode: "octet", options: [] }), RangeError);
  assert.throws(() => encodeTftp({ op: "RRQ", filename: "a", mode: "binary", options: [] }), RangeError);
  assert.throws(() => encodeTftp({ op: "RRQ", filename: "a".repeat(256), mode: "octet", options: [] }), RangeError);
  assert.throws(() => encodeTftp({ op: "OACK", options: [["blksize", "14\n68"]] }), RangeError);
  assert.throws(() => encodeTftp({ op: "ACK", block: 65536 }), RangeError);
  assert.throws(() => encodeTftp({ op: "ERROR", code: 0, message: "a\u0000" }), RangeError);
});

// ---------------------------------------------------------------------------------------
// Option negotiation

const lan: TftpLimits = { maxBlksize: 1468, maxWindowsize: 16, fileSize: 1_048_576 };

const negotiationTable: { why: string; requested: TftpOption[]; limits?: TftpLimits; accepted: TftpOption[]; blksize?: number; windowsize?: number; timeout?: number; tsize?: number }[] = [
  {
    why: "OVMF's request is answered in full, in its order",
    requested: [["tsize", "0"], ["blksize", "1468"], ["windowsize", "4"]],
    accepted: [["tsize", "1048576"], ["blksize", "1468"], ["windowsize", "4"]],
    blksize: 1468,
    windowsize: 4,
    tsize: 1_048_576,
  },
  { why: "no options: defaults, no OACK", requested: [], accepted: [] },
  { why: "blksize above the limit is lowered to it", requested: [["blksize", "65464"]], accepted: [["blksize", "1468"]], blksize: 1468 },
  { why: "blksize below the limit is kept", requested: [["blksize", "1024"]], accepted: [["blksize", "1024"]], blksize: 1024 },
  { why: "blksize 8 is the smallest allowed", requested: [["blksize", "8"]], accepted: [["blksize", "8"]], blksize: 8 },
  { why: "blksize under 8 is ignored", requested: [["blksize", "7"]], accepted: [] },
  { why: "blksize with leading zeros is read as decimal", requested: [["blksize", "01024"]], accepted: [["blksize", "1024"]], blksize: 1024 },
  { why: "windowsize above the limit is lowered to it", requested: [["windowsize", "64"]], accepted: [["windowsize", "16"]], windowsize: 16 },
  { why: "windowsize 0 is ignored", requested: [["windowsize", "0"]], accepted: [] },
  { why: "timeout 1 is accepted", requested: [["timeout", "1"]], accepted: [["timeout", "1"]], timeout: 1 },
  { why: "timeout 255 is accepted", requested: [["timeout", "255"]], accepted: [["timeout", "255"]], timeout: 255 },
  { why: "timeout 0 is ignored", requested: [["timeout", "0"]], accepted: [] },
  { why: "timeout 256 is ignored, not clamped", requested: [["timeout", "256"]], accepted: [] },
  { why: "tsize other than 0 in a read request is ignored", requested: [["tsize", "5"]], accepted: [] },
  {
    why: "tsize is not answered without a file size (a write request)",
    requested: [["tsize", "0"]],
    limits: { maxBlksize: 1468, maxWindowsize: 16 },
    accepted: [],
  },
  { why: "tsize of an empty file is 0", requested: [["tsize", "0"]], limits: { ...lan, fileSize: 0 }, accepted: [["tsize", "0"]], tsize: 0 },
  { why: "unknown options are ignored", requested: [["multicast", ""], ["rollover", "0"], ["utimeout", "500"]], accepted: [] },
  {
    why: "malformed numbers are ignored, not fatal",
    requested: [["blksize", "abc"], ["windowsize", ""], ["timeout", "-1"], ["tsize", " 0"]],
    accepted: [],
  },
  { why: "malformed blksize forms are ignored", requested: [["blksize", "1e3"]], accepted: [] },
  { why: "huge numbers are ignored", requested: [["blksize", "1".repeat(40)]], accepted: [] },
  {
    why: "names match in any case and are echoed as spelled",
    requested: [["BLKSIZE", "512"], ["WindowSize", "2"]],
    accepted: [["BLKSIZE", "512"], ["WindowSize", "2"]],
    blksize: 512,
    windowsize: 2,
  },
  { why: "a repeated name: the first instance decides", requested: [["blksize", "1024"], ["BLKSIZE", "1200"]], accepted: [["blksize", "1024"]], blksize: 1024 },
];

for (const row of negotiationTable) {
  test(`negotiation: ${row.why}`, () => {
    const got = negotiateOptions(row.requested, row.limits ?? lan);
    assert.deepEqual(got.accepted, row.accepted);
    assert.equal(got.blksize, row.blksize ?? 512);
    assert.equal(got.windowsize, row.windowsize ?? 1);
    assert.equal(got.timeout, row.timeout);
    assert.equal(got.tsize, row.tsize);
  });
}

test("negotiation refuses impossible server limits", () => {
  assert.throws(() => negotiateOptions([], { maxBlksize: 7, maxWindowsize: 1 }), RangeError);
  assert.throws(() => negotiateOptions([], { maxBlksize: 65465, maxWindowsize: 1 }), RangeError);
  assert.throws(() => negotiateOptions([], { maxBlksize: 512, maxWindowsize: 0 }), RangeError);
  assert.throws(() => negotiateOptions([], { maxBlksize: 512, maxWindowsize: 1, fileSize: -1 }), RangeError);
});

test("the negotiated OACK encodes and decodes", () => {
  const { accepted } = negotiateOptions([["tsize", "0"], ["blksize", "1468"], ["windowsize", "4"]], lan);
  const bytes = encodeTftp({ op: "OACK", options: accepted });
  assert.deepEqual(bytes, strings(6, "tsize", "1048576", "blksize", "1468", "windowsize", "4"));
});

// ---------------------------------------------------------------------------------------
// File names

const served: [string, string][] = [
  ["pxelinux.0", "pxelinux.0"],
  ["/boot/ipxe.efi", "boot/ipxe.efi"],
  ["\\Boot\\BCD", "Boot/BCD"],
  ["//a//b/", "a/b"],
  ["./a/./b", "a/b"],
  ["pxelinux.cfg/01-52-54-00-12-34-56", "pxelinux.cfg/01-52-54-00-12-34-56"],
  ["a.b..c", "a.b..c"],
  ["..a", "..a"],
  // TFTP names are not URLs: no percent-decoding, so this is a literal name that matches nothing served.
  ["%2e%2e/", "%2e%2e"],
  ["%2e%2e/etc/passwd", "%2e%2e/etc/passwd"],
];
for (const [name, key] of served) {
  test(`file name ${JSON.stringify(name)} is looked up as ${JSON.stringify(key)}`, () => {
    assert.equal(normalizeTftpPath(name), key);
  });
}

const refused = ["", "../x", "..\\x", "a/../../x", "/..", "x/..", "....//", ".../x", "C:\\boot.ini", "c:boot.ini", "/C:/x", "a\u0000b", "a\nb", "/", ".", "\\", "a".repeat(256)];
test("file names that climb out, name a drive, or hold control characters are refused", () => {
  for (const name of refused) assert.equal(normalizeTftpPath(name), null, JSON.stringify(name));
});

// ---------------------------------------------------------------------------------------
// Property tests

test("random bytes never raise anything but DecodeError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => decodeOrRefuse(bytes, "random bytes")),
    { numRuns: 5000 },
  );
});

test("random NUL-separated words behind each opcode never raise anything but DecodeError", () => {
  const word = fc.oneof(fc.constantFrom("octet", "NETASCII", "blksize", "tsize", "0", "1468", "..", ""), fc.uint8Array({ maxLength: 6 }).map((b) => String.fromCharCode(...b)));
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 7 }), fc.array(word, { maxLength: 6 }), fc.boolean(), (opcode, words, terminated) => {
      const body = words.flatMap((w) => [...Array.from(w, (c) => c.charCodeAt(0) & 0xff), 0]);
      if (!terminated && body.length > 0) body.pop();
      decodeOrRefuse(Uint8Array.from([0, opcode, ...body]), "words");
    }),
    { numRuns: 5000 },
  );
});

const text = (min: number, max: number) =>
  fc.array(fc.integer({ min: 0x20, max: 0x7e }), { minLength: min, maxLength: max }).map((c) => String.fromCharCode(...c));
const options = fc.array(fc.tuple(text(0, 12), text(0, 12)), { maxLength: 5 });
const packet: fc.Arbitrary<TftpPacket> = fc.oneof(
  fc.record({ op: fc.constantFrom("RRQ" as const, "WRQ" as const), filename: text(1, 255), mode: fc.constantFrom("octet", "netascii", "mail", "Octet"), options }),
  fc.record({ op: fc.constant("DATA" as const), block: fc.integer({ min: 0, max: 65535 }), data: fc.uint8Array({ maxLength: 1500 }) }),
  fc.record({ op: fc.constant("ACK" as const), block: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({
    op: fc.constant("ERROR" as const),
    code: fc.integer({ min: 0, max: 65535 }),
    message: fc.array(fc.integer({ min: 1, max: 255 }), { maxLength: 40 }).map((c) => String.fromCharCode(...c)),
  }),
  fc.record({ op: fc.constant("OACK" as const), options }),
);

test("generated packets survive encode → decode → encode", () => {
  fc.assert(
    fc.property(packet, (p) => {
      const bytes = encodeTftp(p);
      const decoded = decodeTftp(bytes);
      assert.deepEqual(decoded, { ...p });
      assert.deepEqual(encodeTftp(decoded), bytes);
    }),
    { numRuns: 2000 },
  );
});

test("negotiation never accepts values outside the RFC ranges or the server's limits", () => {
  const value = fc.oneof(fc.integer({ min: 0, max: 70000 }).map(String), fc.string({ maxLength: 6 }));
  const name = fc.constantFrom("blksize", "BLKSIZE", "windowsize", "timeout", "tsize", "other");
  fc.assert(
    fc.property(
      fc.array(fc.tuple(name, value), { maxLength: 8 }),
      fc.integer({ min: 8, max: TFTP_MAX_BLKSIZE }),
      fc.integer({ min: 1, max: 65535 }),
      (requested, maxBlksize, maxWindowsize) => {
        const got = negotiateOptions(requested, { maxBlksize, maxWindowsize, fileSize: 42 });
        const names = got.accepted.map(([n]) => n.toLowerCase());
        // Without a negotiated value the RFC defaults apply: 512 (RFC 1350) and 1 (RFC 7440).
        assert.ok(names.includes("blksize") ? got.blksize >= 8 && got.blksize <= maxBlksize : got.blksize === 512);
        assert.ok(names.includes("windowsize") ? got.windowsize >= 1 && got.windowsize <= maxWindowsize : got.windowsize === 1);
        assert.ok(got.timeout === undefined || (got.timeout >= 1 && got.timeout <= 255));
        assert.ok(got.accepted.length <= 4);
        assert.ok(got.accepted.every(([n]) => ["blksize", "windowsize", "timeout", "tsize"].includes(n.toLowerCase())));
      },
    ),
    { numRuns: 2000 },
  );
});
