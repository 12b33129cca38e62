import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ExpressionError,
  MAX_EXPRESSION_DEPTH,
  evaluate,
  formatExpression,
  parseExpression,
  referencedNames,
  type Expr,
  type Operand,
  type Value,
} from "./expression.ts";

const vars: Record<string, Value> = {
  Firmware: "uefi",
  OSDComputerName: "LAB-PC-07",
  _SMSTSInWinPE: "TRUE",
  "attributes.vendor": "Dell Inc.",
  "attributes.memoryMb": "16384",
  "attributes.cores": 8,
  "attributes.virtual": false,
  "device.name": "pc-07",
  Version: "10",
};
const lookup = (name: string): Value | undefined => (Object.hasOwn(vars, name) ? vars[name] : undefined);
const run = (text: string): boolean => evaluate(parseExpression(text), lookup);

function throwsAt(text: string, position: number, message: RegExp): void {
  assert.throws(
    () => parseExpression(text),
    (e: unknown) => e instanceof ExpressionError && e.position === position && message.test(e.message),
    `${JSON.stringify(text)} should fail at ${position} with ${message}`,
  );
}

test("== and != compare strings case-sensitively", () => {
  assert.equal(run("Firmware == 'uefi'"), true);
  assert.equal(run('Firmware == "UEFI"'), false);
  assert.equal(run("Firmware != 'bios'"), true);
  assert.equal(run("'uefi' == Firmware"), true);
});

test("numbers and numeric strings compare numerically, other strings by code unit", () => {
  assert.equal(run("attributes.memoryMb >= 8192"), true);
  assert.equal(run("attributes.memoryMb > '9999'"), true, "numeric strings on both sides");
  assert.equal(run("Version > 9"), true, "'10' > 9 numerically, although '10' < '9' as strings");
  assert.equal(run("attributes.cores == 8.0"), true);
  assert.equal(run("attributes.cores < 8"), false);
  assert.equal(run("attributes.cores <= 8"), true);
  assert.equal(run("OSDComputerName < 'LAB-PC-10'"), true);
  assert.equal(run("OSDComputerName > 'lab'"), false, "uppercase sorts before lowercase");
  assert.equal(run("x == -1.5e3"), false);
  assert.equal(evaluate(parseExpression("n == -1500"), () => -1.5e3), true);
});

test("true and false equal the strings true and false in any case, and have no order", () => {
  assert.equal(run("_SMSTSInWinPE == true"), true);
  assert.equal(run("attributes.virtual == false"), true);
  assert.equal(run("attributes.virtual == 'False'"), true);
  assert.equal(run("attributes.virtual < true"), false);
  assert.equal(run("attributes.cores == true"), false);
});

test("like is a case-insensitive glob with * and ?", () => {
  assert.equal(run("attributes.vendor like 'dell*'"), true);
  assert.equal(run("attributes.vendor LIKE '*INC?'"), true);
  assert.equal(run("attributes.vendor like 'dell'"), false);
  assert.equal(run("OSDComputerName like 'lab-pc-0?'"), true);
  assert.equal(run("OSDComputerName like 'lab-pc-?'"), false);
  assert.equal(run("OSDComputerName like '*'"), true);
  assert.equal(run("OSDComputerName like '**pc**7'"), true);
  assert.equal(run("OSDComputerName like 'lab.*'"), false, "a dot is literal, not a regex");
  assert.equal(run("attributes.cores like '8'"), true);
});

test("like stays fast on patterns that make backtracking regexes explode", () => {
  const started = performance.now();
  const text = "a".repeat(4000);
  const pattern = `${"*a".repeat(1000)}b`;
  assert.equal(evaluate(parseExpression(`x like "${pattern}"`), () => text), false);
  assert.ok(performance.now() - started < 2000);
});

test("in matches any listed value with == semantics", () => {
  assert.equal(run("Firmware in ['bios', 'uefi']"), true);
  assert.equal(run("Firmware IN ['BIOS', 'UEFI']"), false);
  assert.equal(run("attributes.cores in [4, 8, 16]"), true);
  assert.equal(run("attributes.memoryMb in [16384]"), true);
  assert.equal(run("Firmware in []"), false);
  assert.equal(run("missing in ['a']"), false);
});

test("exists asks whether a name has a value", () => {
  assert.equal(run("exists(OSDComputerName)"), true);
  assert.equal(run("EXISTS( attributes.virtual )"), true, "false is a value");
  assert.equal(run("exists(OSDJoinDomain)"), false);
});

test("a missing name makes != true and every other comparison false", () => {
  for (const op of ["==", "<", "<=", ">", ">=", "like"]) assert.equal(run(`Nope ${op} 'x'`), false, op);
  assert.equal(run("Nope != 'x'"), true);
  assert.equal(run("Nope != Nada"), true);
});

test("a lookup returning something that is not a value counts as missing", () => {
  const odd = (() => null) as unknown as (n: string) => Value | undefined;
  assert.equal(evaluate(parseExpression("exists(x)"), odd), false);
  assert.equal(evaluate(parseExpression("x == 'null'"), odd), false);
});

test("not binds tighter than and, and tighter than or", () => {
  // or(a, and(b, c)): true if a alone is true
  assert.equal(run("Firmware == 'uefi' or Firmware == 'x' and Firmware == 'y'"), true);
  // (a or b) and c
  assert.equal(run("(Firmware == 'uefi' or Firmware == 'x') and Firmware == 'y'"), false);
  // (not a) and b
  assert.equal(run("not Firmware == 'bios' and Firmware == 'uefi'"), true);
  assert.equal(run("not (Firmware == 'uefi' and Firmware == 'bios')"), true);
  assert.deepEqual(parseExpression("not a == 1 and b == 2 or c == 3"), {
    kind: "or",
    operands: [
      {
        kind: "and",
        operands: [
          { kind: "not", operand: { kind: "compare", operator: "==", left: { kind: "name", name: "a" }, right: { kind: "literal", value: 1 } } },
          { kind: "compare", operator: "==", left: { kind: "name", name: "b" }, right: { kind: "literal", value: 2 } },
        ],
      },
      { kind: "compare", operator: "==", left: { kind: "name", name: "c" }, right: { kind: "literal", value: 3 } },
    ],
  });
});

test("keywords are case-insensitive and true/false stand alone", () => {
  assert.equal(run("TRUE"), true);
  assert.equal(run("Not False AND true"), true);
  assert.equal(run("false OR exists(Firmware)"), true);
});

test("string literals take either quote and backslash escapes", () => {
  const e = parseExpression(String.raw`x == 'it\'s "ok"\n\u0041\\'`);
  assert.deepEqual(e, { kind: "compare", operator: "==", left: { kind: "name", name: "x" }, right: { kind: "literal", value: `it's "ok"\nA\\` } });
  assert.deepEqual(parseExpression(String.raw`x == "a\"b"`), { kind: "compare", operator: "==", left: { kind: "name", name: "x" }, right: { kind: "literal", value: 'a"b' } });
});

test("errors say what was unexpected, where, and what was expected", () => {
  throwsAt("Firmware == == 'x'", 12, /^Unexpected token "==" at 12: expected a value$/);
  throwsAt("Firmware ==", 11, /^Unexpected end of expression at 11: expected a value$/);
  throwsAt("Firmware = 'x'", 9, /did you mean "=="/);
  throwsAt("Firmware", 8, /expected an operator/);
  throwsAt("'uefi'", 6, /expected an operator/);
  throwsAt("(a == 1", 7, /expected "\)"/);
  throwsAt("a == 1)", 6, /^Unexpected token "\)" at 6: expected "and", "or" or the end/);
  throwsAt("a == 'abc", 5, /^Unterminated string starting at 5$/);
  throwsAt(String.raw`a == 'a\qb'`, 7, /Unknown escape "\\q"/);
  throwsAt("a in ['x',]", 10, /expected a string, number, true or false/);
  throwsAt("a in ['x' 'y']", 10, /expected "," or "\]"/);
  throwsAt("a in x", 5, /expected "\["/);
  throwsAt("exists('a')", 7, /expected a name/);
  throwsAt("a == 1 && b == 2", 7, /Unexpected character "&" at 7/);
  throwsAt("a == 1e999", 5, /out of range/);
  throwsAt("a == 1 and", 10, /end of expression/);
  throwsAt("", 0, /^Unexpected end of expression at 0: expected a value$/);
  throwsAt("and == 1", 0, /^Unexpected token "and" at 0/);
  throwsAt("a == 'x' é", 9, /Unexpected character "U\+00E9"/);
});

test("input longer than the limit is refused", () => {
  const long = `a == '${"x".repeat(4100)}'`;
  throwsAt(long, 4096, /too long/);
});

test("nesting beyond the limit is refused without overflowing the stack", () => {
  const ok = `${"(".repeat(MAX_EXPRESSION_DEPTH)}a == 1${")".repeat(MAX_EXPRESSION_DEPTH)}`;
  assert.equal(evaluate(parseExpression(ok), () => 1), true);
  const tooDeep = `${"(".repeat(MAX_EXPRESSION_DEPTH + 1)}a == 1${")".repeat(MAX_EXPRESSION_DEPTH + 1)}`;
  throwsAt(tooDeep, MAX_EXPRESSION_DEPTH, /nests too deeply/);
  throwsAt("not ".repeat(1000) + "true", 4 * MAX_EXPRESSION_DEPTH, /nests too deeply/);
  throwsAt("(".repeat(4000), MAX_EXPRESSION_DEPTH, /nests too deeply/);
});

test("a long flat chain of and/or parses and evaluates", () => {
  const text = Array.from({ length: 250 }, (_, i) => `a${i} == ${i}`).join(" and ");
  const e = parseExpression(text);
  assert.equal(e.kind === "and" && e.operands.length, 250);
  assert.equal(evaluate(e, (n) => Number(n.slice(1))), true);
});

test("referencedNames lists each name once in order of appearance", () => {
  assert.deepEqual(
    referencedNames(parseExpression("b == a or exists(c) and not (b in [1]) or 'x' like d or true")),
    ["b", "a", "c", "d"],
  );
});

test("formatExpression writes the canonical form", () => {
  assert.equal(
    formatExpression(parseExpression("NOT a=='x'  AND (b < 2 OR c LIKE 'y*')  or exists( d )")),
    '(not (a == "x") and (b < 2 or c like "y*")) or exists(d)',
  );
  assert.equal(formatExpression(parseExpression("a in [ 'x' , 1,true ]")), 'a in ["x", 1, true]');
  assert.equal(formatExpression(parseExpression("a == 'tab\there\u0001'")), String.raw`a == "tab\there\u0001"`);
});

test("random text never throws anything but ExpressionError", () => {
  const pieces = fc.constantFrom(
    "a", "b.c", "_X", "==", "!=", "<", "<=", ">", ">=", "=", "!", "like", "in", "not", "and", "or", "exists",
    "(", ")", "[", "]", ",", "'s'", '"d"', "'", '"', "\\", "1", "-2.5", "1e3", "true", "FALSE", " ", "*", "?", "é", "\u{1F600}",
  );
  const soup = fc.array(pieces, { maxLength: 40 }).map((p) => p.join(" "));
  const dense = fc.array(pieces, { maxLength: 40 }).map((p) => p.join(""));
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: "binary", maxLength: 200 }), soup, dense), (text) => {
      try {
        const e = parseExpression(text);
        evaluate(e, () => "1");
        formatExpression(e);
      } catch (err) {
        if (!(err instanceof ExpressionError)) throw err;
        assert.ok(err.position >= 0 && err.position <= text.length);
      }
    }),
    { numRuns: 3000 },
  );
});

const KEYWORDS = new Set(["and", "or", "not", "like", "in", "true", "false", "exists"]);
const nameArb = fc
  .stringMatching(/^[A-Za-z_][A-Za-z0-9_.]{0,12}$/)
  .filter((n) => !KEYWORDS.has(n.toLowerCase()));
const valueArb: fc.Arbitrary<Value> = fc.oneof(
  fc.string({ unit: "binary", maxLength: 12 }),
  fc.integer().map((n) => n),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => (n === 0 ? 0 : n)),
  fc.boolean(),
);
const operandArb: fc.Arbitrary<Operand> = fc.oneof(
  nameArb.map((name) => ({ kind: "name" as const, name })),
  valueArb.map((value) => ({ kind: "literal" as const, value })),
);
const plain = { noNullPrototype: true };
const { expr: exprArb } = fc.letrec<{ expr: Expr }>((tie) => ({
  expr: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.record({
      kind: fc.constant("compare" as const),
      operator: fc.constantFrom("==", "!=", "<", "<=", ">", ">=", "like" as const),
      left: operandArb,
      right: operandArb,
    }, plain),
    fc.record({ kind: fc.constant("in" as const), operand: operandArb, values: fc.array(valueArb, { maxLength: 4 }) }, plain),
    fc.record({ kind: fc.constant("exists" as const), name: nameArb }, plain),
    fc.record({ kind: fc.constant("constant" as const), value: fc.boolean() }, plain),
    fc.record({ kind: fc.constant("not" as const), operand: tie("expr") }, plain),
    fc.record({ kind: fc.constant("and" as const), operands: fc.array(tie("expr"), { minLength: 2, maxLength: 4 }) }, plain),
    fc.record({ kind: fc.constant("or" as const), operands: fc.array(tie("expr"), { minLength: 2, maxLength: 4 }) }, plain),
  ),
}));

test("parse(format(e)) gives back e for generated expressions", () => {
  fc.assert(
    fc.property(exprArb, (e) => {
      const text = formatExpression(e);
      assert.deepEqual(parseExpression(text), e, text);
    }),
    { numRuns: 2000 },
  );
});
