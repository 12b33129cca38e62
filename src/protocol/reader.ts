/**
 * Bounds-checked byte cursor and growable writer shared by the wire codecs (DHCP, TFTP).
 *
 * Every read checks that the bytes are there and throws `DecodeError` — the codecs' only
 * error type for bad input — with the offset it failed at, so a truncated or hostile packet
 * can never surface as a RangeError or an `undefined` read. Encoders throw RangeError
 * instead: a value that does not fit its field is a bug in the caller, not bad input.
 */

/**
 * A packet could not be decoded. `offset` is where in the input the problem was found; for an
 * error about an option's value (DHCP accessors, sub-options) it is the position within that value.
 */
export class DecodeError extends Error {
  readonly offset: number;

  constructor(message: string, offset: number) {
    super(message);
    this.name = "DecodeError";
    this.offset = offset;
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** A read cursor over a byte array; every read is bounds-checked. */
export class Reader {
  readonly #bytes: Uint8Array;
  readonly #end: number;
  #pos: number;

  /** Reads `bytes[start, end)`; offsets in errors are relative to `bytes`, not `start`. */
  constructor(bytes: Uint8Array, start = 0, end = bytes.length) {
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= bytes.length)) {
      throw new RangeError(`Cannot create a reader over [${start}, ${end}) of ${bytes.length} bytes`);
    }
    this.#bytes = bytes;
    this.#pos = start;
    this.#end = end;
  }

  /** Position of the next read. */
  get offset(): number {
    return this.#pos;
  }

  /** Bytes left before the end of the readable range. */
  get remaining(): number {
    return this.#end - this.#pos;
  }

  u8(): number {
    this.#need(1, "u8");
    return this.#bytes[this.#pos++];
  }

  /** Big-endian (network order) unsigned 16-bit. */
  u16(): number {
    this.#need(2, "u16");
    const b = this.#bytes;
    const p = this.#pos;
    this.#pos += 2;
    return (b[p] << 8) | b[p + 1];
  }

  /** Big-endian (network order) unsigned 32-bit. */
  u32(): number {
    this.#need(4, "u32");
    const b = this.#bytes;
    const p = this.#pos;
    this.#pos += 4;
    return ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
  }

  /** A copy of the next `n` bytes (a copy, so the caller may reuse its receive buffer). */
  bytes(n: number): Uint8Array {
    this.#checkCount(n);
    this.#need(n, plural(n, "byte"));
    const out = this.#bytes.slice(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** The next `n` bytes as a view of the reader's buffer, no copy: for a buffer the caller owns. */
  view(n: number): Uint8Array {
    this.#checkCount(n);
    this.#need(n, plural(n, "byte"));
    const out = this.#bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  skip(n: number): void {
    this.#checkCount(n);
    this.#need(n, plural(n, "byte"));
    this.#pos += n;
  }

  /** The bytes up to the next NUL (exclusive), consuming the NUL; `what` names the field in errors. */
  untilNul(what: string): Uint8Array {
    const start = this.#pos;
    const nul = this.#bytes.subarray(start, this.#end).indexOf(0);
    if (nul < 0) {
      throw new DecodeError(`Cannot read ${what} at offset ${start}: no NUL terminator before the end of the packet`, start);
    }
    this.#pos = start + nul + 1;
    return this.#bytes.slice(start, start + nul);
  }

  /** Throws a DecodeError at the current offset. */
  fail(message: string, offset = this.#pos): never {
    throw new DecodeError(message, offset);
  }

  #need(n: number, what: string): void {
    const left = this.#end - this.#pos;
    if (n > left) {
      throw new DecodeError(`Cannot read ${what} at offset ${this.#pos}: ${plural(left, "byte")} left`, this.#pos);
    }
  }

  #checkCount(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`Cannot read ${n} bytes: not a byte count`);
  }
}

/** A growable big-endian byte writer for encoders. */
export class Writer {
  #buf: Uint8Array;
  #len = 0;

  constructor(initialCapacity = 576) {
    this.#buf = new Uint8Array(Math.max(16, initialCapacity));
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#len;
  }

  u8(v: number): this {
    checkUint(v, 0xff, "u8");
    this.#reserve(1)[this.#len++] = v;
    return this;
  }

  u16(v: number): this {
    checkUint(v, 0xffff, "u16");
    const b = this.#reserve(2);
    b[this.#len++] = v >>> 8;
    b[this.#len++] = v & 0xff;
    return this;
  }

  u32(v: number): this {
    checkUint(v, 0xffffffff, "u32");
    const b = this.#reserve(4);
    b[this.#len++] = v >>> 24;
    b[this.#len++] = (v >>> 16) & 0xff;
    b[this.#len++] = (v >>> 8) & 0xff;
    b[this.#len++] = v & 0xff;
    return this;
  }

  bytes(data: Uint8Array): this {
    this.#reserve(data.length).set(data, this.#len);
    this.#len += data.length;
    return this;
  }

  /** `n` zero bytes. */
  zeros(n: number): this {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`Cannot write ${n} zero bytes`);
    this.#reserve(n).fill(0, this.#len, this.#len + n);
    this.#len += n;
    return this;
  }

  /** The bytes written, as a new array of exactly that length. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }

  #reserve(n: number): Uint8Array {
    if (this.#len + n > this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    return this.#buf;
  }
}

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`Cannot write ${what} ${v}: out of range 0..${max}`);
}
