import { test } from "node:test";
import assert from "node:assert/strict";
import { DecodeError, Reader, Writer } from "./reader.ts";

function decodeErrorAt(offset: number, message: string) {
  return (e: unknown) => e instanceof DecodeError && e.offset === offset && e.message === message;
}

test("reads big-endian integers and advances the offset", () => {
  const r = new Reader(Uint8Array.of(0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xff, 0xff, 0xff, 0xff));
  assert.equal(r.u8(), 0x01);
  assert.equal(r.u16(), 0x0203);
  assert.equal(r.u32(), 0x04050607);
  assert.equal(r.u32(), 0xffffffff, "u32 is unsigned");
  assert.equal(r.offset, 11);
  assert.equal(r.remaining, 0);
});

test("a read past the end names the read, the offset and what is left", () => {
  const r = new Reader(new Uint8Array(241));
  r.skip(240);
  assert.throws(() => r.u16(), decodeErrorAt(240, "Cannot read u16 at offset 240: 1 byte left"));
  assert.throws(() => r.u32(), decodeErrorAt(240, "Cannot read u32 at offset 240: 1 byte left"));
  assert.throws(() => r.bytes(3), decodeErrorAt(240, "Cannot read 3 bytes at offset 240: 1 byte left"));
  r.u8();
  assert.throws(() => r.u8(), decodeErrorAt(241, "Cannot read u8 at offset 241: 0 bytes left"));
  assert.throws(() => r.skip(1), DecodeError);
});

test("bytes() returns a copy, so the caller may reuse its receive buffer", () => {
  const input = Uint8Array.of(1, 2, 3);
  const got = new Reader(input).bytes(2);
  input[0] = 9;
  assert.deepEqual(got, Uint8Array.of(1, 2));
});

test("untilNul consumes the terminator and refuses a string without one", () => {
  const r = new Reader(Uint8Array.of(0x61, 0x62, 0, 0x63));
  assert.deepEqual(r.untilNul("name"), Uint8Array.of(0x61, 0x62));
  assert.equal(r.offset, 3);
  assert.throws(
    () => r.untilNul("mode"),
    decodeErrorAt(3, "Cannot read mode at offset 3: no NUL terminator before the end of the packet"),
  );
});

test("a reader over a window stops at the window's end and reports absolute offsets", () => {
  const r = new Reader(Uint8Array.of(9, 9, 1, 2, 9), 2, 4);
  assert.equal(r.offset, 2);
  assert.equal(r.u16(), 0x0102);
  assert.throws(() => r.u8(), decodeErrorAt(4, "Cannot read u8 at offset 4: 0 bytes left"));
  assert.throws(() => new Reader(new Uint8Array(2), 1, 3), RangeError);
});

test("an impossible byte count is a programming error, not a DecodeError", () => {
  const r = new Reader(new Uint8Array(4));
  assert.throws(() => r.bytes(-1), RangeError);
  assert.throws(() => r.skip(1.5), RangeError);
});

test("the writer grows past its initial capacity and writes big-endian", () => {
  const w = new Writer(1);
  w.u8(1).u16(0x0203).u32(0x04050607).bytes(Uint8Array.of(8, 9)).zeros(20);
  const out = w.finish();
  assert.equal(out.length, 29);
  assert.equal(w.length, 29);
  assert.deepEqual(out.subarray(0, 9), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9));
  assert.ok(out.subarray(9).every((b) => b === 0));
});

test("the writer refuses values that do not fit their field", () => {
  const w = new Writer();
  assert.throws(() => w.u8(256), /Cannot write u8 256/);
  assert.throws(() => w.u16(-1), RangeError);
  assert.throws(() => w.u32(2 ** 32), RangeError);
  assert.throws(() => w.u8(1.5), RangeError);
  assert.equal(w.length, 0, "nothing was written by the failed calls");
});
