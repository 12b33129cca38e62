import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseRange, contentRange } from "./http-range.ts";

test("open, closed and suffix ranges select the bytes RFC 9110 says", () => {
  assert.deepEqual(parseRange("bytes=0-", 100), { start: 0, end: 99 });
  assert.deepEqual(parseRange("bytes=50-", 100), { start: 50, end: 99 });
  assert.deepEqual(parseRange("bytes=10-19", 100), { start: 10, end: 19 });
  assert.deepEqual(parseRange("bytes=90-1000", 100), { start: 90, end: 99 }, "an end past the content is cut");
  assert.deepEqual(parseRange("bytes=-10", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-1000", 100), { start: 0, end: 99 });
  assert.deepEqual(parseRange("Bytes = 5 - 6", 100), { start: 5, end: 6 }, "unit is case-insensitive; whitespace allowed");
});

test("a range starting at or past the end is unsatisfiable", () => {
  assert.equal(parseRange("bytes=100-", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=100-200", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=99999999999999999999999-", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=-0", 100), "unsatisfiable");
  assert.equal(contentRange(null, 100), "bytes */100");
  assert.equal(contentRange({ start: 1, end: 2 }, 100), "bytes 1-2/100");
});

test("malformed ranges, other units and several ranges are ignored: the whole content is sent", () => {
  for (const h of [undefined, "", "bytes=", "bytes=-", "bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=a-b", "bytes=1.5-", "bytes=0x10-", "bytes=-1-2", "x".repeat(500)]) {
    assert.equal(parseRange(h, 100), null, String(h));
  }
});

test("any header gives null, unsatisfiable or a range inside the content", () => {
  fc.assert(fc.property(fc.string(), fc.nat(1_000_000), (h, size) => {
    const r = parseRange("bytes=" + h, size);
    if (r === null || r === "unsatisfiable") return true;
    return r.start >= 0 && r.start <= r.end && r.end < size && Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end);
  }));
  fc.assert(fc.property(fc.nat(1000), fc.nat(1000), fc.nat(1000), (a, b, size) => {
    const r = parseRange(`bytes=${a}-${b}`, size);
    if (b < a) return r === null;
    if (a >= size) return r === "unsatisfiable";
    return r !== null && r !== "unsatisfiable" && r.start === a && r.end === Math.min(b, size - 1);
  }));
});
