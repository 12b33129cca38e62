/**
 * The one small expression language Slipway speaks: collection membership rules over device
 * attributes and task-sequence step conditions over variables.
 *
 *   Firmware == 'uefi' and not exists(OSDSkipDisk)
 *   attributes.vendor like "dell*" or attributes.model in ["X1", "T14"]
 *
 * It is parsed by hand and evaluated by walking the tree: no eval, no user-supplied RegExp.
 * Input length and nesting are capped so that a hostile rule costs little and never overflows
 * the stack.
 */

export const MAX_EXPRESSION_LENGTH = 4096;
/** Counts each parenthesis and each `not`. */
export const MAX_EXPRESSION_DEPTH = 64;

export type Value = string | number | boolean;
export type Lookup = (name: string) => Value | undefined;

export type Operand =
  | { kind: "name"; name: string }
  | { kind: "literal"; value: Value };

export type ComparisonOperator = "==" | "!=" | "<" | "<=" | ">" | ">=" | "like";

export type Expr =
  | { kind: "or"; operands: Expr[] }
  | { kind: "and"; operands: Expr[] }
  | { kind: "not"; operand: Expr }
  | { kind: "compare"; operator: ComparisonOperator; left: Operand; right: Operand }
  | { kind: "in"; operand: Operand; values: Value[] }
  | { kind: "exists"; name: string }
  | { kind: "constant"; value: boolean };

/** Why a text is not an expression, and the 0-based character offset where that was found. */
export class ExpressionError extends Error {
  readonly position: number;

  constructor(message: string, position: number) {
    super(message);
    this.name = "ExpressionError";
    this.position = position;
  }
}

// ---------------------------------------------------------------------------------------------
// Tokens

type Keyword = "and" | "or" | "not" | "like" | "in" | "true" | "false" | "exists";
const KEYWORDS: ReadonlySet<string> = new Set<Keyword>(["and", "or", "not", "like", "in", "true", "false", "exists"]);

type Token =
  | { type: "name"; text: string; pos: number }
  | { type: "keyword"; keyword: Keyword; text: string; pos: number }
  | { type: "string"; value: string; text: string; pos: number }
  | { type: "number"; value: number; text: string; pos: number }
  | { type: "operator"; operator: Exclude<ComparisonOperator, "like">; text: string; pos: number }
  | { type: "punct"; text: "(" | ")" | "[" | "]" | ","; pos: number }
  | { type: "end"; text: ""; pos: number };

const NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** A string holding exactly one number literal compares numerically. */
const NUMERIC_STRING = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
const NAME_START = /[A-Za-z_]/;
const NAME_PART = /[A-Za-z0-9_.]/;
const DIGIT = /[0-9]/;
const ESCAPES: Record<string, string> = { "\\": "\\", "'": "'", '"': '"', n: "\n", r: "\r", t: "\t", "0": "\0" };

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i++;
    } else if (NAME_START.test(c)) {
      const start = i;
      while (i < text.length && NAME_PART.test(text[i])) i++;
      const word = text.slice(start, i);
      const lower = word.toLowerCase();
      if (KEYWORDS.has(lower)) tokens.push({ type: "keyword", keyword: lower as Keyword, text: word, pos: start });
      else tokens.push({ type: "name", text: word, pos: start });
    } else if (DIGIT.test(c) || (c === "-" && DIGIT.test(text[i + 1] ?? ""))) {
      NUMBER.lastIndex = i;
      const literal = NUMBER.exec(text)![0];
      const value = Number(literal);
      if (!Number.isFinite(value)) throw new ExpressionError(`Number ${literal} at ${i} is out of range`, i);
      // -0 would print as "0" and come back as 0; there is only one zero here.
      tokens.push({ type: "number", value: value === 0 ? 0 : value, text: literal, pos: i });
      i += literal.length;
    } else if (c === '"' || c === "'") {
      const start = i;
      let value = "";
      i++;
      for (;;) {
        if (i >= text.length) throw new ExpressionError(`Unterminated string starting at ${start}`, start);
        const d = text[i];
        if (d === c) { i++; break; }
        if (d !== "\\") { value += d; i++; continue; }
        const e = text[i + 1];
        if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          value += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
          value += ESCAPES[e];
          i += 2;
        } else {
          const shown = e === undefined ? "\\" : `\\${e}`;
          throw new ExpressionError(`Unknown escape "${shown}" at ${i}: use \\\\, \\', \\", \\n, \\r, \\t, \\0 or \\uXXXX`, i);
        }
      }
      tokens.push({ type: "string", value, text: text.slice(start, i), pos: start });
    } else if (c === "=" || c === "!" || c === "<" || c === ">") {
      const two = text.slice(i, i + 2);
      if (two === "==" || two === "!=" || two === "<=" || two === ">=") {
        tokens.push({ type: "operator", operator: two, text: two, pos: i });
        i += 2;
      } else if (c === "<" || c === ">") {
        tokens.push({ type: "operator", operator: c, text: c, pos: i });
        i++;
      } else {
        const hint = c === "=" ? ': did you mean "=="?' : ': use "!=" or "not"';
        throw new ExpressionError(`Unexpected character "${c}" at ${i}${hint}`, i);
      }
    } else if (c === "(" || c === ")" || c === "[" || c === "]" || c === ",") {
      tokens.push({ type: "punct", text: c, pos: i });
      i++;
    } else {
      const cp = String.fromCodePoint(text.codePointAt(i)!);
      const shown = /^[\x20-\x7e]$/.test(cp) ? cp : `U+${cp.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
      throw new ExpressionError(`Unexpected character "${shown}" at ${i}`, i);
    }
  }
  tokens.push({ type: "end", text: "", pos: text.length });
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Parser: or := and ("or" and)*; and := unary ("and" unary)*; unary := "not" unary | primary

/** Parses a rule or condition; throws ExpressionError saying what is wrong and where. */
export function parseExpression(text: string): Expr {
  if (typeof text !== "string") throw new ExpressionError("An expression must be a string", 0);
  if (text.length > MAX_EXPRESSION_LENGTH) {
    throw new ExpressionError(
      `Expression is too long: ${text.length} characters, at most ${MAX_EXPRESSION_LENGTH}`,
      MAX_EXPRESSION_LENGTH,
    );
  }
  const tokens = tokenize(text);
  let at = 0;

  const peek = (): Token => tokens[at];
  const isKeyword = (t: Token, k: Keyword): boolean => t.type === "keyword" && t.keyword === k;
  const isPunct = (t: Token, p: string): boolean => t.type === "punct" && t.text === p;

  function fail(t: Token, expected: string): never {
    if (t.type === "end") throw new ExpressionError(`Unexpected end of expression at ${t.pos}: expected ${expected}`, t.pos);
    const shown = t.text.length > 40 ? `${t.text.slice(0, 40)}…` : t.text;
    throw new ExpressionError(`Unexpected token "${shown}" at ${t.pos}: expected ${expected}`, t.pos);
  }

  function expectPunct(p: string): void {
    if (!isPunct(peek(), p)) fail(peek(), `"${p}"`);
    at++;
  }

  function enter(t: Token, depth: number): number {
    if (depth >= MAX_EXPRESSION_DEPTH) {
      throw new ExpressionError(
        `Expression nests too deeply at ${t.pos}: at most ${MAX_EXPRESSION_DEPTH} levels of parentheses and "not"`,
        t.pos,
      );
    }
    return depth + 1;
  }

  function parseOr(depth: number): Expr {
    const operands = [parseAnd(depth)];
    while (isKeyword(peek(), "or")) { at++; operands.push(parseAnd(depth)); }
    return operands.length === 1 ? operands[0] : { kind: "or", operands };
  }

  function parseAnd(depth: number): Expr {
    const operands = [parseUnary(depth)];
    while (isKeyword(peek(), "and")) { at++; operands.push(parseUnary(depth)); }
    return operands.length === 1 ? operands[0] : { kind: "and", operands };
  }

  function parseUnary(depth: number): Expr {
    const t = peek();
    if (isKeyword(t, "not")) {
      const inner = enter(t, depth);
      at++;
      return { kind: "not", operand: parseUnary(inner) };
    }
    return parsePrimary(depth);
  }

  function parsePrimary(depth: number): Expr {
    const t = peek();
    if (isPunct(t, "(")) {
      const inner = enter(t, depth);
      at++;
      const e = parseOr(inner);
      expectPunct(")");
      return e;
    }
    if (isKeyword(t, "exists")) {
      at++;
      expectPunct("(");
      const n = peek();
      if (n.type !== "name") fail(n, "a name");
      at++;
      expectPunct(")");
      return { kind: "exists", name: n.text };
    }
    const left = parseOperand("a value");
    const op = peek();
    if (op.type === "operator" || isKeyword(op, "like")) {
      at++;
      const operator: ComparisonOperator = op.type === "operator" ? op.operator : "like";
      return { kind: "compare", operator, left, right: parseOperand("a value") };
    }
    if (isKeyword(op, "in")) {
      at++;
      return { kind: "in", operand: left, values: parseList() };
    }
    if (left.kind === "literal" && typeof left.value === "boolean") return { kind: "constant", value: left.value };
    return fail(op, "an operator (==, !=, <, <=, >, >=, like, in)");
  }

  function parseOperand(expected: string): Operand {
    const t = peek();
    if (t.type === "name") { at++; return { kind: "name", name: t.text }; }
    const value = literalOf(t);
    if (value === undefined) fail(t, expected);
    at++;
    return { kind: "literal", value };
  }

  function parseList(): Value[] {
    expectPunct("[");
    const values: Value[] = [];
    if (isPunct(peek(), "]")) { at++; return values; }
    for (;;) {
      const value = literalOf(peek());
      if (value === undefined) fail(peek(), "a string, number, true or false");
      values.push(value);
      at++;
      if (isPunct(peek(), "]")) { at++; return values; }
      if (!isPunct(peek(), ",")) fail(peek(), '"," or "]"');
      at++;
    }
  }

  const expr = parseOr(0);
  if (peek().type !== "end") fail(peek(), '"and", "or" or the end of the expression');
  return expr;
}

function literalOf(t: Token): Value | undefined {
  if (t.type === "string" || t.type === "number") return t.value;
  if (t.type === "keyword" && (t.keyword === "true" || t.keyword === "false")) return t.keyword === "true";
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/**
 * Evaluates against `lookup`. Numbers and numeric strings compare numerically, anything else
 * as strings (`==` case-sensitive, `like` not); true/false equal the strings "true"/"false" in
 * any case. A missing name makes `!=` true and every other comparison false.
 */
export function evaluate(expr: Expr, lookup: Lookup): boolean {
  switch (expr.kind) {
    case "or": return expr.operands.some((e) => evaluate(e, lookup));
    case "and": return expr.operands.every((e) => evaluate(e, lookup));
    case "not": return !evaluate(expr.operand, lookup);
    case "constant": return expr.value;
    case "exists": return present(lookup(expr.name)) !== undefined;
    case "in": {
      const v = resolve(expr.operand, lookup);
      return v !== undefined && expr.values.some((x) => equals(v, x));
    }
    case "compare": {
      const a = resolve(expr.left, lookup);
      const b = resolve(expr.right, lookup);
      if (a === undefined || b === undefined) return expr.operator === "!=";
      switch (expr.operator) {
        case "==": return equals(a, b);
        case "!=": return !equals(a, b);
        case "like": return globMatch(String(a).toLowerCase(), String(b).toLowerCase());
        default: {
          const c = compareOrder(a, b);
          if (c === undefined) return false;
          if (expr.operator === "<") return c < 0;
          if (expr.operator === "<=") return c <= 0;
          if (expr.operator === ">") return c > 0;
          return c >= 0;
        }
      }
    }
  }
}

function present(v: unknown): Value | undefined {
  return typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? v : undefined;
}

function resolve(o: Operand, lookup: Lookup): Value | undefined {
  return o.kind === "literal" ? o.value : present(lookup(o.name));
}

function asNumber(v: Value): number | undefined {
  if (typeof v === "number") return v;
  if (typeof v === "string" && NUMERIC_STRING.test(v)) return Number(v);
  return undefined;
}

function asBoolean(v: Value): boolean | undefined {
  if (typeof v === "boolean") return v;
  if (typeof v === "string") {
    const l = v.toLowerCase();
    if (l === "true") return true;
    if (l === "false") return false;
  }
  return undefined;
}

function equals(a: Value, b: Value): boolean {
  if (typeof a === "boolean" || typeof b === "boolean") {
    const x = asBoolean(a);
    return x !== undefined && x === asBoolean(b);
  }
  const x = asNumber(a);
  const y = asNumber(b);
  if (x !== undefined && y !== undefined) return x === y;
  return String(a) === String(b);
}

/** Negative, zero or positive; undefined when the two have no order (booleans, NaN). */
function compareOrder(a: Value, b: Value): number | undefined {
  if (typeof a === "boolean" || typeof b === "boolean") return undefined;
  const x = asNumber(a);
  const y = asNumber(b);
  if (x !== undefined && y !== undefined) return Number.isNaN(x - y) ? undefined : x - y;
  const s = String(a);
  const t = String(b);
  return s < t ? -1 : s > t ? 1 : 0;
}

/**
 * Glob match where `*` is any run and `?` one character. Backtracks only to the last `*`
 * seen, so the cost is at most length(text) × length(pattern), never exponential.
 */
function globMatch(textString: string, patternString: string): boolean {
  const text = Array.from(textString);
  const pattern = Array.from(patternString);
  let t = 0;
  let p = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    if (p < pattern.length && pattern[p] === "*") {
      starP = p++;
      starT = t;
    } else if (p < pattern.length && (pattern[p] === "?" || pattern[p] === text[t])) {
      p++;
      t++;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === "*") p++;
  return p === pattern.length;
}

// ---------------------------------------------------------------------------------------------
// Formatting and inspection

/** The canonical text of an expression; parseExpression(formatExpression(e)) equals e. */
export function formatExpression(expr: Expr): string {
  switch (expr.kind) {
    case "or":
    case "and":
      return expr.operands
        .map((e) => (e.kind === "or" || e.kind === "and" ? `(${formatExpression(e)})` : formatExpression(e)))
        .join(` ${expr.kind} `);
    case "not":
      return expr.operand.kind === "exists" || expr.operand.kind === "constant"
        ? `not ${formatExpression(expr.operand)}`
        : `not (${formatExpression(expr.operand)})`;
    case "constant": return String(expr.value);
    case "exists": return `exists(${expr.name})`;
    case "in": return `${formatOperand(expr.operand)} in [${expr.values.map(formatValue).join(", ")}]`;
    case "compare": return `${formatOperand(expr.left)} ${expr.operator} ${formatOperand(expr.right)}`;
  }
}

function formatOperand(o: Operand): string {
  return o.kind === "name" ? o.name : formatValue(o.value);
}

function formatValue(v: Value): string {
  if (typeof v !== "string") return String(v);
  let out = '"';
  for (const c of v) {
    if (c === '"' || c === "\\") out += `\\${c}`;
    else if (c === "\n") out += "\\n";
    else if (c === "\r") out += "\\r";
    else if (c === "\t") out += "\\t";
    else if (c < " " || c === "\x7f") out += `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
    else out += c;
  }
  return `${out}"`;
}

/** Every name the expression reads, once each, in order of first appearance. */
export function referencedNames(expr: Expr): string[] {
  const names = new Set<string>();
  const visit = (e: Expr): void => {
    switch (e.kind) {
      case "or":
      case "and": e.operands.forEach(visit); break;
      case "not": visit(e.operand); break;
      case "exists": names.add(e.name); break;
      case "in": if (e.operand.kind === "name") names.add(e.operand.name); break;
      case "compare":
        if (e.left.kind === "name") names.add(e.left.name);
        if (e.right.kind === "name") names.add(e.right.name);
        break;
      case "constant": break;
    }
  };
  visit(expr);
  return [...names];
}
