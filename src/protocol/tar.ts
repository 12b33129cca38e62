/**
 * A streaming reader and rewriter of POSIX tar archives (pax interchange format, POSIX.1-2008
 * "pax" §Extended Header; ustar header layout §ustar Interchange Format), pure over bytes.
 *
 * User-state migration needs to look at every member of a GNU tar stream as it passes — count
 * files, read the first member (a manifest), and change owners (uid/gid fields and the numeric
 * ids inside POSIX ACL records) — without holding more than one header in memory. File data is
 * passed through as slices of the input, never copied.
 *
 * The reader is strict: a bad checksum, an unknown header magic, a malformed pax record, a
 * member that declares data where its type has none, or an archive that ends before its
 * end-of-archive marker is a `DecodeError` with the stream offset — never a silently shifted
 * frame. An edit that changes nothing leaves the member's bytes untouched.
 */
import { DecodeError } from "./reader.ts";

export { DecodeError };

export const BLOCK = 512;

/** ustar header fields: [offset, length] (POSIX.1-2008 pax, Table: ustar Header Block). */
const F = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const;

/** Member types whose data blocks the archive never carries (links, devices, dirs, FIFOs). */
const NO_DATA_TYPES = new Set(["1", "2", "3", "4", "5", "6"]);
/** Largest value a 7-digit octal uid/gid field holds; bigger ids go in pax records. */
const MAX_OCTAL_ID = 0o7777777;
/** Pax headers and GNU long names are buffered; more than this is not an archive we made. */
export const MAX_EXTENDED_HEADER = 8 * 1024 * 1024;

/** One member as read: pax records already applied over the ustar fields. */
export interface TarMember {
  /** The member's path (pax `path`, else GNU long name, else ustar prefix/name). */
  path: string;
  /** The typeflag: "0" regular file (a NUL flag reads as "0"), "1" hard link, "2" symlink, "5" directory, … */
  type: string;
  /** Bytes of data that follow the header (0 for links, dirs, devices). */
  size: number;
  uid: number;
  gid: number;
  mode: number;
  linkpath: string;
  /** This member's own pax records, in archive order (values are raw bytes). */
  pax: [string, Buffer][];
  /** Offset of the member's first header (its pax header, if any) in the stream. */
  offset: number;
}

/** What to do with a member; omitted fields stay as they are. */
export interface TarEdit {
  uid?: number;
  gid?: number;
  /** The member's pax records as they should be written (replaces them all). */
  pax?: [string, Buffer][];
  /** Leave the member (headers and data) out of the output. */
  drop?: boolean;
  /** Hand the member's data to `onData` once it is complete (at most `maxCollect` bytes). */
  collect?: boolean;
}

export interface TarRewriterOptions {
  /** Called once per member, before any of its data passes. */
  onMember?: (m: TarMember) => TarEdit | void;
  /** Called with the whole data of a member whose edit asked to `collect` it. */
  onData?: (m: TarMember, data: Buffer) => void;
  /** Largest member data `collect` may gather (default 1 MiB). */
  maxCollect?: number;
}

type State = "header" | "extended" | "data" | "end";

/**
 * Feed it the archive in chunks of any size (`push`) and write what it returns, in order;
 * call `end()` when the input is over: it throws unless the end-of-archive marker was seen.
 */
export class TarRewriter {
  readonly #opts: TarRewriterOptions;
  #state: State = "header";
  /** Bytes of a header or extended header not yet complete. */
  #pending: Buffer[] = [];
  #pendingLen = 0;
  #need = BLOCK;
  /** Stream offset of the next byte pushed. */
  #offset = 0;
  /** Extended headers seen for the coming member. */
  #ext: { type: string; header: Buffer; data: Buffer; offset: number }[] = [];
  #dataLeft = 0;
  #dataMode: "pass" | "drop" | "collect" = "pass";
  #collected: Buffer[] = [];
  #dropping = false;
  #member: TarMember | undefined;
  #zeroBlocks = 0;
  /** Members seen so far. */
  members = 0;

  constructor(opts: TarRewriterOptions = {}) {
    this.#opts = opts;
  }

  /** Whether the end-of-archive marker (two zero blocks) has been read. */
  get ended(): boolean {
    return this.#state === "end";
  }

  push(chunk: Uint8Array): Buffer[] {
    const out: Buffer[] = [];
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (buf.length > 0) {
      if (this.#state === "end") {
        // After the marker, GNU tar pads the last record with zeros; anything else is not ours.
        const bad = buf.findIndex((b) => b !== 0);
        if (bad >= 0) throw new DecodeError("Cannot read the tar archive: data after its end-of-archive marker", this.#offset + bad);
        out.push(buf);
        this.#offset += buf.length;
        return out;
      }
      if (this.#state === "data") {
        const n = Math.min(this.#dataLeft, buf.length);
        const part = buf.subarray(0, n);
        if (this.#dataMode === "pass" || (this.#dataMode === "collect" && !this.#dropping)) out.push(part);
        if (this.#dataMode === "collect") this.#collected.push(part);
        this.#dataLeft -= n;
        this.#offset += n;
        buf = buf.subarray(n);
        if (this.#dataLeft === 0) this.#finishData();
        continue;
      }
      // header or extended: gather #need bytes
      const n = Math.min(this.#need - this.#pendingLen, buf.length);
      this.#pending.push(buf.subarray(0, n));
      this.#pendingLen += n;
      this.#offset += n;
      buf = buf.subarray(n);
      if (this.#pendingLen < this.#need) continue;
      const whole = Buffer.concat(this.#pending, this.#pendingLen);
      this.#pending = [];
      this.#pendingLen = 0;
      const start = this.#offset - whole.length;
      if (this.#state === "header") out.push(...this.#onHeader(whole, start));
      else out.push(...this.#onExtended(whole));
    }
    return out;
  }

  /** Throws a DecodeError unless the archive ended cleanly. */
  end(): void {
    if (this.#state === "end") return;
    const what = this.#member ? ` in the middle of "${this.#member.path}"` : this.#ext.length > 0 || this.#pendingLen > 0 ? " in the middle of a header" : " without its end-of-archive marker";
    throw new DecodeError(`Cannot read the tar archive: it ends${what} (truncated)`, this.#offset);
  }

  #onHeader(h: Buffer, start: number): Buffer[] {
    if (h.equals(ZERO_BLOCK)) {
      if (this.#ext.length > 0) throw new DecodeError("Cannot read the tar archive: an extended header is followed by the end-of-archive marker", start);
      this.#zeroBlocks++;
      if (this.#zeroBlocks === 2) this.#state = "end";
      return this.#zeroBlocks === 2 ? [Buffer.alloc(BLOCK * 2)] : [];
    }
    if (this.#zeroBlocks > 0) throw new DecodeError("Cannot read the tar archive: a header follows a zero block", start);
    checkHeader(h, start);
    const type = typeOf(h);
    if (type === "x" || type === "g" || type === "L" || type === "K") {
      const size = readNumber(h, F.size, start);
      if (size > MAX_EXTENDED_HEADER) throw new DecodeError(`Cannot read the tar archive: an extended header of ${size} bytes is larger than ${MAX_EXTENDED_HEADER}`, start);
      if (type === "g" && this.#ext.length > 0) throw new DecodeError("Cannot read the tar archive: a global header inside a member's headers", start);
      this.#ext.push({ type, header: h, data: Buffer.alloc(0), offset: start });
      this.#state = "extended";
      this.#need = padded(size);
      if (this.#need === 0) {
        this.#state = "header";
        this.#need = BLOCK;
        if (type === "g") return this.#flushGlobal();
      }
      return [];
    }
    return this.#onMemberHeader(h, start);
  }

  #onExtended(data: Buffer): Buffer[] {
    const ext = this.#ext[this.#ext.length - 1]!;
    ext.data = data.subarray(0, readNumber(ext.header, F.size, ext.offset));
    this.#state = "header";
    this.#need = BLOCK;
    if (ext.type === "x" || ext.type === "g") parsePax(ext.data, ext.offset + BLOCK); // validate now, offset of the data
    return ext.type === "g" ? this.#flushGlobal() : [];
  }

  /** A global header applies to the whole archive: it is passed through as it is. */
  #flushGlobal(): Buffer[] {
    const g = this.#ext.pop()!;
    return [g.header, padBlock(g.data)];
  }

  #onMemberHeader(h: Buffer, start: number): Buffer[] {
    const exts = this.#ext;
    this.#ext = [];
    const offset = exts[0]?.offset ?? start;
    let pax: [string, Buffer][] = [];
    let longName: string | undefined;
    let longLink: string | undefined;
    for (const e of exts) {
      if (e.type === "x") pax = pax.concat(parsePax(e.data, e.offset + BLOCK));
      else if (e.type === "L") longName = cString(e.data);
      else if (e.type === "K") longLink = cString(e.data);
    }
    const rec = (k: string) => {
      for (let i = pax.length - 1; i >= 0; i--) if (pax[i]![0] === k) return pax[i]![1];
      return undefined;
    };
    const paxNumber = (k: string): number | undefined => {
      const v = rec(k);
      if (v === undefined) return undefined;
      const s = v.toString("utf8");
      if (!/^\d{1,15}$/.test(s)) throw new DecodeError(`Cannot read the tar archive: pax record ${k}="${s.slice(0, 40)}" is not a number`, offset);
      return Number(s);
    };
    const type = typeOf(h);
    const ustarName = field(h, F.name);
    const prefix = isUstar(h) ? field(h, F.prefix) : "";
    const member: TarMember = {
      path: rec("path")?.toString("utf8") ?? longName ?? (prefix ? `${prefix}/${ustarName}` : ustarName),
      type,
      size: paxNumber("size") ?? readNumber(h, F.size, start),
      uid: paxNumber("uid") ?? readNumber(h, F.uid, start),
      gid: paxNumber("gid") ?? readNumber(h, F.gid, start),
      mode: readNumber(h, F.mode, start),
      linkpath: rec("linkpath")?.toString("utf8") ?? longLink ?? field(h, F.linkname),
      pax,
      offset,
    };
    if (NO_DATA_TYPES.has(type) && member.size !== 0) {
      throw new DecodeError(`Cannot read the tar archive: "${member.path}" (type ${type}) declares ${member.size} bytes of data`, start);
    }
    const edit = this.#opts.onMember?.(member) ?? {};
    this.members++;
    this.#member = member;
    this.#dataLeft = padded(member.size);
    // Collected data is handed to onData; it is written out only when not dropped.
    this.#dataMode = edit.collect ? "collect" : edit.drop ? "drop" : "pass";
    if (edit.collect && member.size > (this.#opts.maxCollect ?? 1024 * 1024)) {
      throw new DecodeError(`Cannot read the tar archive: "${member.path}" is ${member.size} bytes, more than can be collected`, start);
    }
    this.#collected = [];
    this.#dropping = edit.drop === true;
    this.#state = "data";
    const out: Buffer[] = [];
    if (!edit.drop) out.push(...encodeEdited(h, exts, member, edit));
    if (this.#dataLeft === 0) this.#finishData();
    return out;
  }

  #finishData(): void {
    const m = this.#member!;
    if (this.#dataMode === "collect") this.#opts.onData?.(m, Buffer.concat(this.#collected).subarray(0, m.size));
    this.#collected = [];
    this.#member = undefined;
    this.#state = "header";
    this.#need = BLOCK;
  }
}

/** The headers of a member after `edit`: the original bytes when nothing changes. */
function encodeEdited(h: Buffer, exts: { type: string; header: Buffer; data: Buffer }[], m: TarMember, edit: TarEdit): Buffer[] {
  const uid = edit.uid ?? m.uid;
  const gid = edit.gid ?? m.gid;
  const paxChanged = edit.pax !== undefined && !samePax(edit.pax, m.pax);
  if (uid === m.uid && gid === m.gid && !paxChanged) {
    return [...exts.flatMap((e) => [e.header, padBlock(e.data)]), h];
  }
  let pax = (edit.pax ?? m.pax).slice();
  const header = Buffer.from(h);
  const setId = (key: "uid" | "gid", value: number) => {
    const has = pax.some(([k]) => k === key);
    if (value <= MAX_OCTAL_ID) writeOctal(header, F[key], value);
    else writeOctal(header, F[key], 0);
    if (has || value > MAX_OCTAL_ID) {
      pax = pax.filter(([k]) => k !== key);
      pax.push([key, Buffer.from(String(value))]);
    }
  };
  setId("uid", uid);
  setId("gid", gid);
  writeChecksum(header);
  const out: Buffer[] = [];
  // GNU long names/links keep their place; the pax header is rebuilt from the records.
  for (const e of exts) if (e.type === "L" || e.type === "K") out.push(e.header, padBlock(e.data));
  if (pax.length > 0) {
    const data = encodePax(pax);
    const orig = exts.find((e) => e.type === "x");
    const xh = orig ? Buffer.from(orig.header) : paxHeaderFor(m.path);
    writeOctal(xh, F.size, data.length);
    writeChecksum(xh);
    out.push(xh, padBlock(data));
  }
  out.push(header);
  return out;
}

function samePax(a: [string, Buffer][], b: [string, Buffer][]): boolean {
  return a.length === b.length && a.every(([k, v], i) => k === b[i]![0] && v.equals(b[i]![1]));
}

/** Parses pax records `"%d %s=%s\n"` (POSIX.1-2008 pax, §pax Extended Header File Format). */
export function parsePax(data: Buffer, offset = 0): [string, Buffer][] {
  const out: [string, Buffer][] = [];
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    const digits = sp < 0 ? "" : data.toString("latin1", pos, sp);
    if (sp < 0 || !/^[1-9]\d{0,8}$/.test(digits)) throw new DecodeError("Cannot read the tar archive: a pax record has no length", offset + pos);
    const len = Number(digits);
    const end = pos + len;
    if (end > data.length || data[end - 1] !== 0x0a) throw new DecodeError("Cannot read the tar archive: a pax record overruns its header or lacks its newline", offset + pos);
    const eq = data.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= end - 1 || eq === sp + 1) throw new DecodeError("Cannot read the tar archive: a pax record has no keyword", offset + pos);
    out.push([data.toString("utf8", sp + 1, eq), Buffer.from(data.subarray(eq + 1, end - 1))]);
    pos = end;
  }
  return out;
}

/** Encodes pax records; the length prefix counts its own digits. */
export function encodePax(records: [string, Buffer | string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of records) {
    const body = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from("\n")]);
    let len = body.length + 1;
    while (String(len).length + body.length > len) len++;
    parts.push(Buffer.from(String(len)), body);
  }
  return Buffer.concat(parts);
}

export interface TarHeaderInput {
  path: string;
  type?: string;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkpath?: string;
  /** Extra pax records; `path`/`linkpath` records are added when the names need them. */
  pax?: [string, Buffer | string][];
}

/**
 * The header blocks (a pax header when needed, then the ustar header) of one member; its data
 * and `padBlock` padding follow. Used for the user-state manifest member and in tests.
 */
export function encodeTarHeader(m: TarHeaderInput): Buffer {
  const pax: [string, Buffer | string][] = [...(m.pax ?? [])];
  const fits = (s: string, n: number) => Buffer.byteLength(s) < n && /^[\x20-\x7e]*$/.test(s);
  if (!fits(m.path, 100)) pax.push(["path", m.path]);
  if (m.linkpath && !fits(m.linkpath, 100)) pax.push(["linkpath", m.linkpath]);
  const uid = m.uid ?? 0;
  const gid = m.gid ?? 0;
  if (uid > MAX_OCTAL_ID) pax.push(["uid", String(uid)]);
  if (gid > MAX_OCTAL_ID) pax.push(["gid", String(gid)]);
  const h = Buffer.alloc(BLOCK);
  writeString(h, F.name, fits(m.path, 100) ? m.path : placeholderName(m.path));
  writeOctal(h, F.mode, m.mode ?? 0o644);
  writeOctal(h, F.uid, uid > MAX_OCTAL_ID ? 0 : uid);
  writeOctal(h, F.gid, gid > MAX_OCTAL_ID ? 0 : gid);
  writeOctal(h, F.size, m.size ?? 0);
  writeOctal(h, F.mtime, m.mtime ?? 0);
  h.write(m.type ?? "0", F.typeflag[0], "latin1");
  if (m.linkpath) writeString(h, F.linkname, fits(m.linkpath, 100) ? m.linkpath : placeholderName(m.linkpath));
  h.write("ustar\u0000", F.magic[0], "latin1");
  h.write("00", F.version[0], "latin1");
  writeChecksum(h);
  if (pax.length === 0) return h;
  const data = encodePax(pax);
  const xh = paxHeaderFor(m.path);
  writeOctal(xh, F.size, data.length);
  writeChecksum(xh);
  return Buffer.concat([xh, padBlock(data), h]);
}

const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** The end-of-archive marker: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(BLOCK * 2);

function paxHeaderFor(p: string): Buffer {
  const h = Buffer.alloc(BLOCK);
  writeString(h, F.name, placeholderName(`PaxHeaders/${p.split("/").filter(Boolean).pop() ?? "x"}`));
  writeOctal(h, F.mode, 0o644);
  writeOctal(h, F.uid, 0);
  writeOctal(h, F.gid, 0);
  writeOctal(h, F.size, 0);
  writeOctal(h, F.mtime, 0);
  h.write("x", F.typeflag[0], "latin1");
  h.write("ustar\u0000", F.magic[0], "latin1");
  h.write("00", F.version[0], "latin1");
  writeChecksum(h);
  return h;
}

/** An ASCII stand-in for a name kept in a pax record (readers that know pax ignore it). */
function placeholderName(p: string): string {
  return p.replace(/[^\x20-\x7e]/g, "_").slice(-99);
}

export function padded(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

/** `data` followed by zeros up to the next block boundary. */
export function padBlock(data: Buffer): Buffer {
  const p = padded(data.length);
  return p === data.length ? data : Buffer.concat([data, Buffer.alloc(p - data.length)]);
}

function typeOf(h: Buffer): string {
  const t = h[F.typeflag[0]]!;
  return t === 0 ? "0" : String.fromCharCode(t);
}

function isUstar(h: Buffer): boolean {
  return h.toString("latin1", 257, 263) === "ustar\u0000";
}

function checkHeader(h: Buffer, start: number): void {
  const magic = h.toString("latin1", 257, 265);
  if (magic !== "ustar\u000000" && magic !== "ustar  \u0000") {
    throw new DecodeError("Cannot read the tar archive: a header has neither the ustar nor the GNU magic", start + 257);
  }
  const stored = readNumber(h, F.chksum, start);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed) throw new DecodeError("Cannot read the tar archive: a header's checksum does not match", start + 148);
}

function field(h: Buffer, [off, len]: readonly [number, number]): string {
  const end = h.indexOf(0, off);
  return h.toString("utf8", off, end < 0 || end > off + len ? off + len : end);
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString("utf8", 0, end < 0 ? b.length : end);
}

/** An octal field (NUL/space terminated) or GNU base-256 (high bit of the first byte set). */
function readNumber(h: Buffer, [off, len]: readonly [number, number], start: number): number {
  if (h[off]! & 0x80) {
    if (h[off] !== 0x80) throw new DecodeError("Cannot read the tar archive: a negative base-256 number", start + off);
    let v = 0;
    for (let i = off + 1; i < off + len; i++) v = v * 256 + h[i]!;
    if (!Number.isSafeInteger(v)) throw new DecodeError("Cannot read the tar archive: a base-256 number too large", start + off);
    return v;
  }
  const s = h.toString("latin1", off, off + len).replace(/[\0 ]+$/, "").replace(/^ +/, "");
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new DecodeError(`Cannot read the tar archive: "${s}" is not an octal number`, start + off);
  return parseInt(s, 8);
}

function writeOctal(h: Buffer, [off, len]: readonly [number, number], v: number): void {
  const s = v.toString(8).padStart(len - 1, "0");
  if (s.length > len - 1) throw new RangeError(`${v} does not fit a ${len}-byte octal field`);
  h.write(s + "\0", off, len, "latin1");
}

function writeString(h: Buffer, [off, len]: readonly [number, number], s: string): void {
  h.fill(0, off, off + len);
  h.write(s, off, len, "utf8");
}

function writeChecksum(h: Buffer): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "latin1");
}
