/**
 * The public entry to task sequence documents: read them from text and check them here; the
 * rest of their API (canonical form, secret references, types, JSON Schema) is re-exported.
 *
 * Checking reports every problem at once, each with a path a person can follow
 * (`steps[2] "Install software" > steps[0] "Join domain" > with.command`) and a JSON pointer a
 * program can (`/steps/2/steps/0/with/command`).
 *
 * The walk is by hand rather than one recursive zod schema so that paths can name steps, so that
 * the rules zod cannot say (sibling names, depth, step count, conditions) sit beside the shape
 * checks, and so that recursion stops at the depth limit whatever the input.
 */

import type { z } from "zod";
import { ExpressionError, parseExpression } from "../expression.ts";
import { readTaskSequenceText } from "./document.ts";
import { Issues, check, kindOf, unknownKeyMessage, type Path, type ValidationIssue } from "./issues.ts";
import {
  MAX_STEP_DEPTH,
  MAX_STEPS,
  MAX_VARIABLES,
  fields,
  passwordLikeName,
  plainVariableName,
  runAsStepTypeNames,
  stepTypeNames,
  stepTypes,
  type ActionStepType,
  type Step,
  type TaskSequenceDocument,
} from "./schema.ts";

export { MAX_ISSUES, type ValidationIssue } from "./issues.ts";
export { canonicalTaskSequence, secretReferences, handlesSecrets, userStateSteps, readTaskSequenceText, MAX_YAML_ALIAS_COUNT } from "./document.ts";
export {
  MAX_DOCUMENT_BYTES,
  MAX_STEP_DEPTH,
  MAX_STEPS,
  JSON_SCHEMA_ID,
  runAsStepTypeNames,
  stepTypeNames,
  stepTypes,
  taskSequenceJsonSchema,
  type ActionStep,
  type ActionStepType,
  type GroupStep,
  type RunAs,
  type Step,
  type StepParameters,
  type StepType,
  type TaskSequenceDocument,
} from "./schema.ts";

export type TaskSequenceResult =
  | { ok: true; document: TaskSequenceDocument }
  | { ok: false; errors: ValidationIssue[] };

const DOCUMENT_KEYS: ReadonlySet<string> = new Set(["$schema", "name", "description", "variables", "steps"]);
const STEP_KEYS: ReadonlySet<string> = new Set([
  "name", "type", "description", "condition", "continueOnError", "disabled", "timeoutSeconds", "runAs", "with", "steps",
]);
const RUN_AS_TYPES: ReadonlySet<string> = new Set(runAsStepTypeNames);

// ---------------------------------------------------------------------------------------------
// The walk

/** A JSON object as read, nothing known about its fields yet. */
type Fields = Record<string, unknown>;

function isRecord(v: unknown): v is Fields {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function has(o: Fields, key: string): boolean {
  return Object.hasOwn(o, key) && o[key] !== undefined;
}

function reportUnknownKeys(o: Fields, allowed: ReadonlySet<string>, path: Path, issues: Issues): void {
  for (const key of Object.keys(o)) if (!allowed.has(key)) issues.add([...path, { key }], unknownKeyMessage(key));
}

/** Counts steps, stopping past `limit` and at the depth limit, so the count itself stays cheap. */
function countSteps(steps: unknown, depth: number, limit: number): number {
  if (!Array.isArray(steps) || depth > MAX_STEP_DEPTH) return 0;
  let n = steps.length;
  for (const s of steps) {
    if (n > limit) break;
    if (isRecord(s) && Array.isArray(s.steps)) n += countSteps(s.steps, depth + 1, limit - n);
  }
  return n;
}

function checkSteps(value: unknown, path: Path, depth: number, issues: Issues): Step[] {
  if (!Array.isArray(value)) {
    issues.add(path, value === undefined ? "Required: a list of steps" : `Expected a list of steps, got ${kindOf(value)}`);
    return [];
  }
  const steps: Step[] = [];
  const seen = new Map<string, { index: number; name: string }>();
  value.forEach((raw, i) => {
    const name = isRecord(raw) && fields.stepName.safeParse(raw.name).success ? (raw.name as string) : null;
    const here = [...path, { key: i, step: name }];
    const step = checkStep(raw, here, depth, issues);
    if (step) steps.push(step);
    if (name !== null) {
      // Case-insensitively: "Join domain" and "Join Domain" read as the same step in a log.
      const key = name.toLowerCase();
      const first = seen.get(key);
      if (first === undefined) {
        seen.set(key, { index: i, name });
      } else {
        issues.add([...here, { key: "name" }], `Duplicate step name: steps[${first.index}] ${JSON.stringify(first.name)} in the same list has the same name`);
      }
    }
  });
  return steps;
}

function checkStep(raw: unknown, path: Path, depth: number, issues: Issues): Step | undefined {
  if (!isRecord(raw)) {
    issues.add(path, `Expected a step (an object with a name and a type), got ${kindOf(raw)}`);
    return undefined;
  }
  const before = issues.count;
  const at = (key: string): Path => [...path, { key }];
  reportUnknownKeys(raw, STEP_KEYS, path, issues);

  const name = check(fields.stepName, raw.name, at("name"), issues);
  const common: Fields = { name };
  for (const key of ["description", "continueOnError", "disabled", "timeoutSeconds"] as const) {
    if (has(raw, key)) common[key] = check(fields[key] as z.ZodType, raw[key], at(key), issues);
  }
  if (has(raw, "condition")) {
    const condition = check(fields.condition, raw.condition, at("condition"), issues);
    if (condition !== undefined) {
      try {
        parseExpression(condition);
        common.condition = condition;
      } catch (e) {
        if (!(e instanceof ExpressionError)) throw e;
        issues.add(at("condition"), `Not a valid condition: ${e.message}`);
      }
    }
  }

  const type = raw.type;
  if (type === undefined) {
    issues.add(at("type"), `Required: the step type, one of ${stepTypeNames.join(", ")}`);
    return undefined;
  }
  if (typeof type !== "string" || !(stepTypeNames as readonly string[]).includes(type)) {
    const shown = typeof type === "string" ? `"${type.length > 60 ? `${type.slice(0, 60)}…` : type}"` : kindOf(type);
    issues.add(at("type"), `Unknown step type ${shown}; expected one of ${stepTypeNames.join(", ")}`);
    return undefined;
  }

  if (has(raw, "runAs")) {
    if (!RUN_AS_TYPES.has(type)) {
      issues.add(at("runAs"), `Step type "${type}" runs no program, so it cannot run as another account; only ${runAsStepTypeNames.join(" and ")} take runAs`);
    } else {
      common.runAs = check(fields.runAs, raw.runAs, at("runAs"), issues);
    }
  }

  if (type === "group") {
    if (has(raw, "with")) issues.add(at("with"), 'A group takes no "with"; give parameters to the steps inside it');
    let steps: Step[] = [];
    if (!has(raw, "steps")) {
      issues.add(at("steps"), 'Required: a group holds its steps in "steps"');
    } else if (depth >= MAX_STEP_DEPTH && !(Array.isArray(raw.steps) && raw.steps.length === 0)) {
      issues.add(at("steps"), `Groups nest too deeply: at most ${MAX_STEP_DEPTH} levels of steps`);
    } else {
      steps = checkSteps(raw.steps, at("steps"), depth + 1, issues);
    }
    return issues.count === before ? ({ ...common, type, steps } as Step) : undefined;
  }

  if (has(raw, "steps")) issues.add(at("steps"), `Only a group holds "steps"; this step's type is "${type}"`);
  const schema = stepTypes[type as ActionStepType] as z.ZodType;
  const parameters = check(schema, has(raw, "with") ? raw.with : {}, at("with"), issues);
  return issues.count === before ? ({ ...common, type, with: parameters } as Step) : undefined;
}

function checkVariables(value: unknown, path: Path, issues: Issues): Record<string, string> | undefined {
  if (!isRecord(value)) {
    issues.add(path, `Expected an object of variable names and values, got ${kindOf(value)}`);
    return undefined;
  }
  const entries = Object.entries(value);
  if (entries.length > MAX_VARIABLES) {
    issues.add(path, `Too many variables: ${entries.length}, at most ${MAX_VARIABLES}`);
    return undefined;
  }
  const out: [string, string][] = [];
  for (const [name, v] of entries) {
    const at = [...path, { key: name }];
    const checked = plainVariableName.safeParse(name);
    if (!checked.success) {
      issues.add(at, passwordLikeName.test(name)
        ? `Variable "${name}" looks like a password: keep passwords in secret variables, not in the task sequence`
        : checked.error.issues[0].message);
      continue;
    }
    const text = check(fields.variableValue, v, at, issues);
    if (text !== undefined) out.push([name, text]);
  }
  // fromEntries defines each name as an own property, even "__proto__".
  return Object.fromEntries(out);
}

/**
 * Checks a parsed document (from YAML, JSON or an API body). Never throws on any JSON value;
 * reports every problem found, up to MAX_ISSUES. A valid document comes back with `with` filled
 * in (as {}) on every step that takes none, and without `$schema`.
 */
export function validateTaskSequence(value: unknown): TaskSequenceResult {
  const issues = new Issues();
  if (!isRecord(value)) {
    issues.add([], `Expected a task sequence (an object with a name and steps), got ${kindOf(value)}`);
    return { ok: false, errors: issues.list };
  }
  reportUnknownKeys(value, DOCUMENT_KEYS, [], issues);
  if (has(value, "$schema")) check(fields.schemaUrl, value.$schema, [{ key: "$schema" }], issues);
  const name = check(fields.documentName, value.name, [{ key: "name" }], issues);
  const description = has(value, "description")
    ? check(fields.description, value.description, [{ key: "description" }], issues)
    : undefined;
  const variables = has(value, "variables") ? checkVariables(value.variables, [{ key: "variables" }], issues) : undefined;

  let steps: Step[] = [];
  const stepsPath = [{ key: "steps" }];
  if (Array.isArray(value.steps) && value.steps.length === 0) {
    issues.add(stepsPath, "A task sequence needs at least one step");
  } else if (countSteps(value.steps, 1, MAX_STEPS) > MAX_STEPS) {
    issues.add(stepsPath, `Too many steps: more than ${MAX_STEPS}, counting groups and the steps inside them`);
  } else {
    steps = checkSteps(value.steps, stepsPath, 1, issues);
  }

  if (issues.count > 0) return { ok: false, errors: issues.list };
  const document: TaskSequenceDocument = { name: name!, steps };
  if (description !== undefined) document.description = description;
  if (variables !== undefined) document.variables = variables;
  return { ok: true, document };
}

/**
 * Reads a document from YAML (the default, which also reads JSON) or strict JSON text and
 * checks it; see readTaskSequenceText and validateTaskSequence. Never throws on any string.
 */
export function parseTaskSequenceText(text: string, format?: "yaml" | "json"): TaskSequenceResult {
  const read = readTaskSequenceText(text, format);
  return read.ok ? validateTaskSequence(read.value) : read;
}
