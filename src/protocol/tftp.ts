/**
 * TFTP codec (RFC 1350) with option extension (RFC 2347 OACK, RFC 2348 blksize, RFC 2349
 * timeout and tsize, RFC 7440 windowsize), option negotiation and the lookup key for a
 * requested file name. Pure functions over bytes and strings: no sockets, no filesystem.
 *
 * `encodeTftp(decodeTftp(x))` reproduces `x` byte for byte: option names keep the client's
 * spelling and order, and `mode` keeps its case. The encoder refuses (RangeError) anything the
 * decoder would refuse, so whatever it writes decodes again.
 */

import { DecodeError, Reader, Writer } from "./reader.ts";

/** RFC 1350 §5 and RFC 2347 (OACK). */
export const TftpOpcode = {
  RRQ: 1,
  WRQ: 2,
  DATA: 3,
  ACK: 4,
  ERROR: 5,
  OACK: 6,
} as const;

/** ERROR codes: RFC 1350 appendix, plus 8 from RFC 2347. */
export const TftpErrorCode = {
  NotDefined: 0,
  FileNotFound: 1,
  AccessViolation: 2,
  DiskFull: 3,
  IllegalOperation: 4,
  UnknownTransferId: 5,
  FileExists: 6,
  NoSuchUser: 7,
  OptionsRefused: 8, // RFC 2347: the client refuses the OACK, or the server the options
} as const;

/** Largest DATA payload: blksize is at most 65464 (RFC 2348). */
export const TFTP_MAX_BLKSIZE = 65464;
/** Block size without a blksize option (RFC 1350 §2). */
export const TFTP_DEFAULT_BLKSIZE = 512;
/**
 * Longest file name accepted. RFC 1350 sets no limit; 255 bytes is NAME_MAX on Linux, longer
 * than any file a boot server serves, and keeps a hostile request from filling logs.
 */
export const TFTP_MAX_FILENAME = 255;

/** An option as sent: the name keeps the client's spelling; compare names lower-cased (RFC 2347). */
export type TftpOption = [name: string, value: string];

export type TftpPacket =
  | { op: "RRQ" | "WRQ"; filename: string; mode: string; options: TftpOption[] }
  | { op: "DATA"; block: number; data: Uint8Array }
  | { op: "ACK"; block: number }
  | { op: "ERROR"; code: number; message: string }
  | { op: "OACK"; options: TftpOption[] };

const MODES = new Set(["netascii", "octet", "mail"]); // RFC 1350 §5, case-insensitive

/** Decodes one TFTP packet (a UDP payload); throws DecodeError for anything malformed. */
export function decodeTftp(bytes: Uint8Array): TftpPacket {
  if (bytes.length < 2) {
    throw new DecodeError(`Cannot decode TFTP packet: ${bytes.length} bytes is shorter than the 2-byte opcode`, bytes.length);
  }
  const r = new Reader(bytes);
  const opcode = r.u16();
  switch (opcode) {
    case TftpOpcode.RRQ:
    case TftpOpcode.WRQ: {
      const op = opcode === TftpOpcode.RRQ ? "RRQ" : "WRQ";
      const at = r.offset;
      const raw = r.untilNul(`${op} filename`);
      if (raw.length === 0) r.fail(`Cannot decode TFTP ${op}: the filename at offset ${at} is empty`, at);
      if (raw.length > TFTP_MAX_FILENAME) {
        r.fail(
          `Cannot decode TFTP ${op}: the filename at offset ${at} is ${raw.length} bytes, longer than the ${TFTP_MAX_FILENAME} accepted (no served file has a longer name)`,
          at,
        );
      }
      const filename = printable(raw, at, `${op} filename`);
      const modeAt = r.offset;
      const mode = printable(r.untilNul(`${op} mode`), modeAt, `${op} mode`);
      if (!MODES.has(mode.toLowerCase())) {
        r.fail(`Cannot decode TFTP ${op}: mode ${JSON.stringify(mode)} at offset ${modeAt} is not netascii, octet or mail`, modeAt);
      }
      return { op, filename, mode, options: readOptions(r, op) };
    }
    case TftpOpcode.DATA: {
      const block = r.u16();
      if (r.remaining > TFTP_MAX_BLKSIZE) {
        r.fail(`Cannot decode TFTP DATA: ${r.remaining} data bytes exceed the largest block size, ${TFTP_MAX_BLKSIZE} (RFC 2348)`);
      }
      return { op: "DATA", block, data: r.bytes(r.remaining) };
    }
    case TftpOpcode.ACK: {
      const block = r.u16();
      noTrailing(r, "ACK");
      return { op: "ACK", block };
    }
    case TftpOpcode.ERROR: {
      const code = r.u16();
      const message = latin1(r.untilNul("ERROR message"));
      noTrailing(r, "ERROR");
      return { op: "ERROR", code, message };
    }
    case TftpOpcode.OACK:
      return { op: "OACK", options: readOptions(r, "OACK") };
    default:
      return r.fail(`Cannot decode TFTP packet: opcode ${opcode} at offset 0 is not one of 1-6 (RRQ, WRQ, DATA, ACK, ERROR, OACK)`, 0);
  }
}

/** Encodes a packet; throws RangeError for a packet decodeTftp would refuse. */
export function encodeTftp(packet: TftpPacket): Uint8Array {
  switch (packet.op) {
    case "RRQ":
    case "WRQ": {
      if (packet.filename.length === 0 || packet.filename.length > TFTP_MAX_FILENAME) {
        throw new RangeError(`Cannot encode TFTP ${packet.op}: the filename must be 1-${TFTP_MAX_FILENAME} bytes`);
      }
      if (!MODES.has(packet.mode.toLowerCase())) throw new RangeError(`Cannot encode TFTP ${packet.op}: mode ${JSON.stringify(packet.mode)}`);
      const w = new Writer(64 + packet.filename.length).u16(TftpOpcode[packet.op]);
      cstring(w, packet.filename, "filename");
      cstring(w, packet.mode, "mode");
      writeOptions(w, packet.options);
      return w.finish();
    }
    case "DATA":
      if (packet.data.length > TFTP_MAX_BLKSIZE) {
        throw new RangeError(`Cannot encode TFTP DATA of ${packet.data.length} bytes: at most ${TFTP_MAX_BLKSIZE}`);
      }
      return new Writer(4 + packet.data.length).u16(TftpOpcode.DATA).u16(packet.block).bytes(packet.data).finish();
    case "ACK":
      return new Writer(4).u16(TftpOpcode.ACK).u16(packet.block).finish();
    case "ERROR": {
      const w = new Writer(5 + packet.message.length).u16(TftpOpcode.ERROR).u16(packet.code);
      for (let i = 0; i < packet.message.length; i++) {
        const c = packet.message.charCodeAt(i);
        if (c === 0 || c > 0xff) throw new RangeError(`Cannot encode TFTP ERROR message: character ${i} is NUL or not a single byte`);
        w.u8(c);
      }
      return w.u8(0).finish();
    }
    case "OACK": {
      const w = new Writer(64).u16(TftpOpcode.OACK);
      writeOptions(w, packet.options);
      return w.finish();
    }
  }
}

/** Options a request carries, by lower-case name; the first instance of a name wins. */
export function optionMap(options: readonly TftpOption[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const [name, value] of options) {
    const key = name.toLowerCase();
    if (!map.has(key)) map.set(key, value);
  }
  return map;
}

export type TftpLimits = {
  /** Largest block size this server sends (e.g. what the path MTU allows: 1468 for 1500). */
  maxBlksize: number;
  /** Largest window this server sends before waiting for an ACK. */
  maxWindowsize: number;
  /** Size of the requested file. Give it only when answering an RRQ: tsize is then answered. */
  fileSize?: number;
};

export type TftpNegotiation = {
  /** The options to put in the OACK, in the client's order and spelling; empty means send no OACK. */
  accepted: TftpOption[];
  /** Block size for the transfer (512 unless negotiated). */
  blksize: number;
  /** Blocks sent per ACK (1 unless negotiated). */
  windowsize: number;
  /** Retransmission timeout in seconds the client asked for, or undefined for the server's own. */
  timeout: number | undefined;
  /** File size announced in the OACK, when tsize was accepted. */
  tsize?: number;
};

/**
 * Negotiates a request's options (RFC 2347 §"Negotiation"): the server answers only options
 * it understands, so unknown names and malformed values are left out, never fatal. blksize
 * (8..65464, RFC 2348) and windowsize (1..65535, RFC 7440) are lowered to the server's limits;
 * timeout (1..255, RFC 2349) is accepted as asked or not at all; tsize is answered with the file
 * size when the client sent 0 and `limits.fileSize` is given (RFC 2349: RRQ). The first instance
 * of a repeated name decides.
 */
export function negotiateOptions(requested: readonly TftpOption[], limits: TftpLimits): TftpNegotiation {
  if (!(Number.isInteger(limits.maxBlksize) && limits.maxBlksize >= 8 && limits.maxBlksize <= TFTP_MAX_BLKSIZE)) {
    throw new RangeError(`Cannot negotiate TFTP options: maxBlksize ${limits.maxBlksize} is not in 8..${TFTP_MAX_BLKSIZE}`);
  }
  if (!(Number.isInteger(limits.maxWindowsize) && limits.maxWindowsize >= 1 && limits.maxWindowsize <= 65535)) {
    throw new RangeError(`Cannot negotiate TFTP options: maxWindowsize ${limits.maxWindowsize} is not in 1..65535`);
  }
  if (limits.fileSize !== undefined && !(Number.isSafeInteger(limits.fileSize) && limits.fileSize >= 0)) {
    throw new RangeError(`Cannot negotiate TFTP options: fileSize ${limits.fileSize} is not a byte count`);
  }
  const result: TftpNegotiation = { accepted: [], blksize: TFTP_DEFAULT_BLKSIZE, windowsize: 1, timeout: undefined };
  const seen = new Set<string>();
  for (const [name, value] of requested) {
    const key = name.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    const n = decimal(value);
    if (n === undefined) continue;
    switch (key) {
      case "blksize":
        if (n < 8) break;
        result.blksize = Math.min(n, limits.maxBlksize);
        result.accepted.push([name, String(result.blksize)]);
        break;
      case "windowsize":
        if (n < 1) break;
        result.windowsize = Math.min(n, limits.maxWindowsize);
        result.accepted.push([name, String(result.windowsize)]);
        break;
      case "timeout":
        if (n < 1 || n > 255) break;
        result.timeout = n;
        result.accepted.push([name, String(n)]);
        break;
      case "tsize":
        if (n !== 0 || limits.fileSize === undefined) break;
        result.tsize = limits.fileSize;
        result.accepted.push([name, String(limits.fileSize)]);
        break;
    }
  }
  return result;
}

/**
 * The key to look a requested file up by, or null when the name must not be served: `\` becomes
 * `/` (Windows boot loaders ask for `\Boot\BCD`), leading and repeated `/` and `.` segments go,
 * and names that are empty, hold NUL or control characters, start with a drive (`C:`) or have a
 * segment of two or more dots are refused. Windows trims trailing dots from names, so `...`
 * can act like `..` there; refusing every all-dot segment avoids reasoning about it.
 * No percent-decoding: TFTP names are not URLs, so `%2e%2e` is a literal name that matches no
 * served file. Case is kept; the server's map decides how to compare.
 */
export function normalizeTftpPath(name: string): string | null {
  if (name.length === 0 || name.length > TFTP_MAX_FILENAME) return null;
  if (/[\u0000-\u001f\u007f]/.test(name)) return null;
  const segments: string[] = [];
  for (const segment of name.replaceAll("\\", "/").split("/")) {
    if (segment === "" || segment === ".") continue;
    if (/^\.+$/.test(segment)) return null;
    segments.push(segment);
  }
  if (segments.length === 0 || /^[A-Za-z]:/.test(segments[0])) return null;
  return segments.join("/");
}

// ---------------------------------------------------------------------------------------

function readOptions(r: Reader, op: string): TftpOption[] {
  const strings: string[] = [];
  while (r.remaining > 0) {
    const at = r.offset;
    strings.push(printable(r.untilNul(`${op} option`), at, `${op} option`));
  }
  if (strings.length % 2 !== 0) {
    r.fail(`Cannot decode TFTP ${op}: option ${JSON.stringify(strings[strings.length - 1])} has no value (an odd number of option strings)`);
  }
  const options: TftpOption[] = [];
  for (let i = 0; i < strings.length; i += 2) options.push([strings[i], strings[i + 1]]);
  return options;
}

function writeOptions(w: Writer, options: readonly TftpOption[]): void {
  for (const [name, value] of options) {
    cstring(w, name, "option name");
    cstring(w, value, "option value");
  }
}

function cstring(w: Writer, text: string, what: string): void {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) throw new RangeError(`Cannot encode TFTP ${what} ${JSON.stringify(text)}: character ${i} is not printable ASCII`);
    w.u8(c);
  }
  w.u8(0);
}

/** Request strings are ASCII (RFC 1350 §5, RFC 2347); control characters would only reach logs. */
function printable(bytes: Uint8Array, at: number, what: string): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c < 0x20 || c > 0x7e) {
      throw new DecodeError(
        `Cannot decode TFTP ${what}: byte 0x${c.toString(16).padStart(2, "0")} at offset ${at + i} is not printable ASCII`,
        at + i,
      );
    }
    s += String.fromCharCode(c);
  }
  return s;
}

function noTrailing(r: Reader, op: string): void {
  if (r.remaining > 0) r.fail(`Cannot decode TFTP ${op}: ${r.remaining} unexpected bytes after the packet at offset ${r.offset}`);
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/** A plain decimal number (RFC 2347 values are ASCII digits); undefined for anything else. */
function decimal(text: string): number | undefined {
  return /^[0-9]{1,15}$/.test(text) ? Number(text) : undefined;
}
