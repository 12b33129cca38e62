import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { canonicalJson } from "./canonical-json.ts";

test("object keys are sorted by UTF-16 code unit at every depth, without whitespace", () => {
  const value = { b: 1, a: [true, null, { z: "x", y: 2 }], "\u{1F600}": 0, "\uFFFF": 0, A: -0 };
  // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FFFF by code unit.
  assert.equal(
    canonicalJson(value),
    '{"A":0,"a":[true,null,{"y":2,"z":"x"}],"b":1,"\u{1F600}":0,"\uFFFF":0}',
  );
});

test("the same value built in a different key order gives the same bytes", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const reversed = JSON.parse(JSON.stringify(v), function (_k, x) {
        if (x === null || typeof x !== "object" || Array.isArray(x)) return x;
        return Object.fromEntries(Object.entries(x).reverse());
      });
      assert.equal(canonicalJson(reversed), canonicalJson(v));
    }),
  );
});

test("canonical output parses back to an equal value", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const text = canonicalJson(v);
      assert.equal(canonicalJson(JSON.parse(text)), text);
      assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(v)));
    }),
  );
});

test("numbers and strings use the ECMAScript JSON forms", () => {
  assert.equal(canonicalJson([1e21, 1e-7, 0.1, 100, -0]), "[1e+21,1e-7,0.1,100,0]");
  assert.equal(canonicalJson("a\"\\\n\u0001\uD800"), '"a\\"\\\\\\n\\u0001\\ud800"');
});

test("Dates serialize through toJSON as ISO strings", () => {
  assert.equal(canonicalJson({ at: new Date(0) }), '{"at":"1970-01-01T00:00:00.000Z"}');
});

test("values JSON cannot carry faithfully are refused with a TypeError", () => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const bad: unknown[] = [
    undefined,
    { a: undefined },
    [undefined],
    () => 1,
    Symbol("s"),
    10n,
    NaN,
    Infinity,
    { n: -Infinity },
    new Map(),
    new Set([1]),
    new Uint8Array(2),
    [, 1],
    cyclic,
    [[cyclic]],
  ];
  for (const v of bad) assert.throws(() => canonicalJson(v), TypeError, String(v));
});

test("a shared (non-cyclic) reference is serialized at each place", () => {
  const shared = { x: 1 };
  assert.equal(canonicalJson({ a: shared, b: [shared] }), '{"a":{"x":1},"b":[{"x":1}]}');
});

test("objects without a prototype are plain objects", () => {
  const o = Object.create(null) as Record<string, number>;
  o.b = 2;
  o.a = 1;
  assert.equal(canonicalJson(o), '{"a":1,"b":2}');
});
