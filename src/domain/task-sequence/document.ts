/**
 * Task sequence documents as text and as signed data: reading YAML or JSON safely (size, alias
 * and nesting limits), the one canonical form that is signed, and the secrets a document names.
 * validate.ts checks what readTaskSequenceText returns and re-exports this module's API.
 */

import { isNode, isScalar, parseDocument, visit } from "yaml";
import { formatExpression, parseExpression } from "../expression.ts";
import { MAX_DOCUMENT_BYTES, type Step, type TaskSequenceDocument } from "./schema.ts";
import type { ValidationIssue } from "./issues.ts";

/**
 * Alias expansions allowed while reading YAML, weighted by the size of what each expands to,
 * so that a "billion laughs" document is refused after a few hundred nodes, not a billion.
 */
export const MAX_YAML_ALIAS_COUNT = 100;
/** Unclosed [ and { in a row; the YAML parser slows and then overflows its stack far beyond this. */
const MAX_YAML_FLOW_NESTING = 256;
/** Columns of indentation and "- ", "? ", ": " indicators that open a line. */
const MAX_YAML_INDENT = 1000;

function failure(message: string): { ok: false; errors: ValidationIssue[] } {
  return { ok: false, errors: [{ path: "", pointer: "", message }] };
}

function utf8Length(text: string): number {
  // Cheap bounds first: every UTF-16 unit is 1 to 3 bytes of UTF-8.
  if (text.length > MAX_DOCUMENT_BYTES) return text.length;
  if (text.length * 3 <= MAX_DOCUMENT_BYTES) return text.length;
  return new TextEncoder().encode(text).length;
}

export type ReadResult = { ok: true; value: unknown } | { ok: false; errors: ValidationIssue[] };

/**
 * Reads a document's text into plain data, unchecked. Without `format` the text is read as
 * YAML, which also reads JSON; with "json", as strict JSON. Never throws on any string.
 */
export function readTaskSequenceText(text: string, format?: "yaml" | "json"): ReadResult {
  if (typeof text !== "string") return failure("Cannot read the task sequence: expected text");
  if (utf8Length(text) > MAX_DOCUMENT_BYTES) {
    return failure(`Cannot read the task sequence: it is larger than ${MAX_DOCUMENT_BYTES} bytes (1 MiB)`);
  }
  if (format !== "json") return readYaml(text);
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (e) {
    return failure(`Cannot read JSON: ${(e as Error).message}`);
  }
}

/** "line 3, column 5" for a 0-based offset into text. */
function lineAndColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf("\n"); i >= 0 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/** How many YAML problems to report; past the first few they are mostly echoes. */
const MAX_YAML_PROBLEMS = 20;

function readYaml(text: string): ReadResult {
  const where = (offset: number): string => lineAndColumn(text, offset);
  const tooDeep = excessiveNesting(text);
  if (tooDeep !== undefined) return failure(`Cannot read YAML at ${where(tooDeep)}: nested too deeply`);

  const doc = parseDocument(text, {
    version: "1.2",
    schema: "core",
    // The library's own duplicate-key check is quadratic in the size of a mapping; ours is not.
    uniqueKeys: false,
    // Only plain data: no !!binary, !!set, !!timestamp.
    resolveKnownTags: false,
    merge: false,
    prettyErrors: false,
    // "error" keeps the library quiet about warnings yet still reports a second document.
    logLevel: "error",
  });
  const problems = [...doc.errors, ...doc.warnings]
    .slice(0, MAX_YAML_PROBLEMS)
    .map((e) => `Cannot read YAML at ${where(e.pos[0])}: ${e.message}`);
  if (problems.length === 0) {
    visit(doc, {
      Map(_, map) {
        const keys = new Set<string>();
        for (const pair of map.items) {
          if (problems.length >= MAX_YAML_PROBLEMS) return visit.BREAK;
          const key = pair.key;
          const at = isNode(key) ? (key.range?.[0] ?? 0) : 0;
          if (!isScalar(key) || (key.value !== null && typeof key.value === "object")) {
            problems.push(`Cannot read YAML at ${where(at)}: a key must be plain text`);
          } else if (keys.has(String(key.value))) {
            problems.push(`Cannot read YAML at ${where(at)}: duplicate key ${JSON.stringify(String(key.value))}`);
          } else {
            keys.add(String(key.value));
          }
        }
      },
    });
  }
  if (problems.length > 0) {
    return { ok: false, errors: problems.map((message) => ({ path: "", pointer: "", message })) };
  }
  try {
    return { ok: true, value: doc.toJS({ maxAliasCount: MAX_YAML_ALIAS_COUNT }) };
  } catch (e) {
    // yaml throws a ReferenceError when aliases expand past maxAliasCount.
    if (e instanceof ReferenceError) {
      return failure(`Cannot read YAML: its aliases (*name) expand to too much data; at most ${MAX_YAML_ALIAS_COUNT} expansions`);
    }
    return failure(`Cannot read YAML: ${(e as Error).message}`);
  }
}

/**
 * Finds, in one pass, the offset where the text nests deeper than the YAML parser should be
 * asked to go. It over-counts brackets inside quoted text, which only matters for absurd text.
 */
function excessiveNesting(text: string): number | undefined {
  let flow = 0;
  let indent = 0;
  let lineStart = true;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n") {
      lineStart = true;
      indent = 0;
      continue;
    }
    if (lineStart) {
      if (c === " " || c === "\t" || c === "-" || c === "?" || c === ":") {
        if (++indent > MAX_YAML_INDENT) return i;
        continue;
      }
      lineStart = false;
    }
    if (c === "[" || c === "{") {
      if (++flow > MAX_YAML_FLOW_NESTING) return i;
    } else if ((c === "]" || c === "}") && flow > 0) {
      flow--;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------

/** Every step, depth first, in document order. */
function* allSteps(steps: readonly Step[]): Generator<Step> {
  for (const step of steps) {
    yield step;
    if (step.type === "group") yield* allSteps(step.steps);
  }
}

/**
 * Every secret variable named by a runAs, once each, in document order — disabled steps
 * included, since the document still names them.
 */
export function secretReferences(doc: TaskSequenceDocument): string[] {
  const names = new Set<string>();
  for (const step of allSteps(doc.steps)) {
    if ("runAs" in step && step.runAs) names.add(step.runAs.secret);
  }
  return [...names];
}

/** The user-state steps a document holds (a data key that opens users' files is released to them). */
export function userStateSteps(doc: TaskSequenceDocument): string[] {
  const types = new Set<string>();
  for (const step of allSteps(doc.steps)) if (step.type === "capture-user-state" || step.type === "restore-user-state") types.add(step.type);
  return [...types];
}

/**
 * Whether running the document releases anything secret to the machine: a Run As secret, or an
 * association's user-state key. Such a deployment is never open to a sniffable enrollment.
 */
export function handlesSecrets(doc: TaskSequenceDocument): boolean {
  return secretReferences(doc).length > 0 || userStateSteps(doc).length > 0;
}

function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries.map(([k, v]) => [k, sortedKeys(v)]));
  }
  return value;
}

function canonicalStep(step: Step): Step {
  const out: Record<string, unknown> = { name: step.name, type: step.type };
  if (step.description !== undefined) out.description = step.description;
  if (step.condition !== undefined) out.condition = formatExpression(parseExpression(step.condition));
  out.continueOnError = step.continueOnError ?? false;
  out.disabled = step.disabled ?? false;
  if (step.timeoutSeconds !== undefined) out.timeoutSeconds = step.timeoutSeconds;
  if (step.type === "group") {
    out.steps = step.steps.map(canonicalStep);
  } else {
    if ("runAs" in step && step.runAs) out.runAs = { secret: step.runAs.secret };
    out.with = sortedKeys(step.with ?? {});
  }
  return out as Step;
}

/**
 * One form per meaning, for signing and comparing: fixed key order, every default written out
 * (continueOnError and disabled false, variables {}, with {}), variables sorted by name, and
 * conditions rewritten by formatExpression. Takes a document validateTaskSequence accepted.
 */
export function canonicalTaskSequence(doc: TaskSequenceDocument): TaskSequenceDocument {
  const variables = Object.entries(doc.variables ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    name: doc.name,
    ...(doc.description !== undefined ? { description: doc.description } : {}),
    variables: Object.fromEntries(variables),
    steps: doc.steps.map(canonicalStep),
  };
}
