/**
 * Problems found in a task sequence document, as a person and a program each want them: a path
 * that names steps (`steps[2] "Install software" > with.command`) and an RFC 6901 JSON pointer
 * (`/steps/2/with/command`). Also turns zod's issues into messages an administrator can act on.
 */

import type { z } from "zod";

export type ValidationIssue = {
  /** For people: `steps[2] "Install software" > with.command`; "" for the document itself. */
  path: string;
  /** RFC 6901 JSON pointer to the same place: `/steps/2/with/command`. */
  pointer: string;
  message: string;
};

/** A document this broken gets its first problems back, then a note that there are more. */
export const MAX_ISSUES = 100;

/** Field names that suggest someone is about to write a secret into the document. */
const SECRET_LIKE_KEY = /pass(?:word|wd|phrase)|secret|credential|token|private.?key/i;

// ---------------------------------------------------------------------------------------------
// Paths

/** One step of a path; `step` is set on the index of a step: its name, or null if it has none. */
export type Segment = { key: string | number; step?: string | null };
export type Path = readonly Segment[];

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function humanPath(path: Path): string {
  let out = "";
  let afterStep = false;
  for (const { key, step } of path) {
    if (typeof key === "number") {
      out += `[${key}]`;
    } else {
      const plain = IDENTIFIER.test(key);
      if (afterStep) out += " > ";
      out += plain ? (out === "" || afterStep ? key : `.${key}`) : `[${JSON.stringify(key)}]`;
      afterStep = false;
    }
    if (step !== undefined) {
      if (step !== null) out += ` ${JSON.stringify(step)}`;
      afterStep = true;
    }
  }
  return out;
}

function pointer(path: Path): string {
  return path.map(({ key }) => `/${String(key).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
}

/** Collects problems, up to MAX_ISSUES and a note that there were more. */
export class Issues {
  readonly list: ValidationIssue[] = [];

  add(path: Path, message: string): void {
    if (this.list.length < MAX_ISSUES) {
      this.list.push({ path: humanPath(path), pointer: pointer(path), message });
    } else if (this.list.length === MAX_ISSUES) {
      this.list.push({ path: "", pointer: "", message: `Stopped after ${MAX_ISSUES} problems; fix these and check again` });
    }
  }

  get count(): number {
    return this.list.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Turning zod's issues into ours

/** "a number", "text", "null": what a value is, without echoing it (it may be a secret). */
export function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return "text";
  if (typeof v === "boolean") return v ? "true" : "false";
  return `a ${typeof v}`;
}

const NOUNS: Record<string, string> = {
  string: "text",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
  array: "a list",
  object: "an object",
};

export function unknownKeyMessage(key: string): string {
  return SECRET_LIKE_KEY.test(key)
    ? `Unknown field "${key}": a task sequence never holds a password or other secret; ` +
        "store it as a secret variable and reference it with runAs: { secret: NAME }"
    : `Unknown field "${key}"`;
}

function messageFor(issue: z.core.$ZodIssue & { input?: unknown }): string {
  switch (issue.code) {
    case "invalid_type": {
      if (issue.input === undefined) return "Required";
      const want = NOUNS[issue.expected] ?? issue.expected;
      const hint = issue.expected === "string" && (typeof issue.input === "number" || typeof issue.input === "boolean")
        ? " (in YAML, put it in quotes)"
        : "";
      return `Expected ${want}, got ${kindOf(issue.input)}${hint}`;
    }
    case "too_small": {
      const n = Number(issue.minimum);
      if (issue.origin === "string") return n === 1 ? "Must not be empty" : `Must be at least ${n} characters`;
      if (issue.origin === "array") return n === 1 ? "Must list at least one item" : `Must list at least ${n} items`;
      return issue.inclusive === false ? `Must be more than ${n}` : `Must be at least ${n}`;
    }
    case "too_big": {
      const n = Number(issue.maximum);
      if (issue.origin === "string") return `Must be at most ${n} characters`;
      if (issue.origin === "array") return `Must list at most ${n} items`;
      return issue.inclusive === false ? `Must be less than ${n}` : `Must be at most ${n}`;
    }
    case "invalid_value":
      return issue.values.length === 1
        ? `Must be ${JSON.stringify(issue.values[0])}`
        : `Must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    default:
      return issue.message;
  }
}

/** Checks `value` with `schema`, reporting under `path`; returns the parsed value or undefined. */
export function check<T>(schema: z.ZodType<T>, value: unknown, path: Path, issues: Issues): T | undefined {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    const at = [...path, ...issue.path.map((k) => ({ key: typeof k === "number" ? k : String(k) }))];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) issues.add([...at, { key }], unknownKeyMessage(key));
    } else {
      issues.add(at, messageFor(issue));
    }
  }
  return undefined;
}
