import { test } from "node:test";
import assert from "node:assert/strict";
import {
  JSON_SCHEMA_ID,
  runAsStepTypeNames,
  stepTypeNames,
  stepTypes,
  taskSequenceJsonSchema,
} from "./schema.ts";
import { parseTaskSequenceText } from "./validate.ts";

type Schema = Record<string, unknown>;

/**
 * Just enough of a JSON Schema checker for the keywords the published schema uses, so the
 * tests can show that the schema accepts what the validator accepts and refuses the same shapes.
 */
function conforms(root: Schema, schema: Schema, value: unknown): boolean {
  const s = schema;
  if (typeof s.$ref === "string") {
    const target = s.$ref.replace(/^#\/\$defs\//, "");
    return conforms(root, (root.$defs as Record<string, Schema>)[target], value);
  }
  const isObject = typeof value === "object" && value !== null && !Array.isArray(value);
  if (s.type === "object" && !isObject) return false;
  if (s.type === "array" && !Array.isArray(value)) return false;
  if (s.type === "string" && typeof value !== "string") return false;
  if (s.type === "boolean" && typeof value !== "boolean") return false;
  if (s.type === "integer" && !Number.isInteger(value)) return false;
  if ("const" in s && value !== s.const) return false;
  if (Array.isArray(s.enum) && !s.enum.includes(value)) return false;
  if (typeof value === "string") {
    if (typeof s.minLength === "number" && value.length < s.minLength) return false;
    if (typeof s.maxLength === "number" && value.length > s.maxLength) return false;
    if (typeof s.pattern === "string" && !new RegExp(s.pattern, "u").test(value)) return false;
  }
  if (typeof value === "number") {
    if (typeof s.minimum === "number" && value < s.minimum) return false;
    if (typeof s.maximum === "number" && value > s.maximum) return false;
  }
  if (Array.isArray(value)) {
    if (typeof s.minItems === "number" && value.length < s.minItems) return false;
    if (typeof s.maxItems === "number" && value.length > s.maxItems) return false;
    if (s.items && !value.every((v) => conforms(root, s.items as Schema, v))) return false;
  }
  if (isObject) {
    const o = value as Record<string, unknown>;
    const properties = (s.properties ?? {}) as Record<string, Schema>;
    if (Array.isArray(s.required) && !s.required.every((k) => Object.hasOwn(o, k))) return false;
    for (const [k, v] of Object.entries(o)) {
      if (s.propertyNames && !conforms(root, s.propertyNames as Schema, k)) return false;
      if (Object.hasOwn(properties, k)) {
        if (!conforms(root, properties[k], v)) return false;
      } else if (s.additionalProperties === false) {
        return false;
      } else if (typeof s.additionalProperties === "object" && !conforms(root, s.additionalProperties as Schema, v)) {
        return false;
      }
    }
  }
  if (s.not && conforms(root, s.not as Schema, value)) return false;
  if (Array.isArray(s.oneOf) && s.oneOf.filter((b) => conforms(root, b as Schema, value)).length !== 1) return false;
  return true;
}

const schema = taskSequenceJsonSchema();
const check = (value: unknown) => conforms(schema, schema, value);

const VALID = {
  name: "Deploy",
  variables: { OSDTimeZone: "UTC" },
  steps: [
    { name: "Partition", type: "partition-disk", with: { disk: "0", scheme: "gpt" }, condition: "Firmware == 'uefi'" },
    {
      name: "Software",
      type: "group",
      steps: [
        { name: "Join", type: "run-command", with: { command: "realm join" }, runAs: { secret: "JoinCred" } },
        { name: "Reboot", type: "reboot" },
      ],
    },
  ],
};

test("the JSON Schema names itself and its draft", () => {
  assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
  assert.equal(schema.$id, JSON_SCHEMA_ID);
  assert.equal(schema.$id, "https://slipway.dev/schemas/task-sequence.json");
  assert.equal(typeof schema.title, "string");
  assert.deepEqual(JSON.parse(JSON.stringify(schema)), schema, "plain JSON, nothing lost in serialization");
});

test("the JSON Schema has one definition per step type, and every $ref resolves", () => {
  const defs = schema.$defs as Record<string, Schema>;
  for (const t of stepTypeNames) assert.ok(defs[`${t}-step`], t);
  const refs = JSON.stringify(schema).match(/"\$ref":"[^"]+"/g) ?? [];
  assert.ok(refs.length > stepTypeNames.length);
  for (const r of refs) assert.ok(defs[r.slice('"$ref":"#/$defs/'.length, -1)], r);
});

test("the JSON Schema offers runAs only on steps that run a program", () => {
  const defs = schema.$defs as Record<string, { properties: Record<string, unknown> }>;
  for (const t of stepTypeNames) {
    assert.equal("runAs" in defs[`${t}-step`].properties, (runAsStepTypeNames as readonly string[]).includes(t), t);
  }
});

test("the JSON Schema accepts a valid document and refuses the shapes the validator refuses", () => {
  assert.ok(parseTaskSequenceText(JSON.stringify(VALID), "json").ok);
  assert.equal(check(VALID), true);
  const broken: [string, (d: typeof VALID) => unknown][] = [
    ["no steps", (d) => ({ ...d, steps: [] })],
    ["unknown top-level field", (d) => ({ ...d, password: "x" })],
    ["password variable", (d) => ({ ...d, variables: { AdminPassword: "x" } })],
    ["unknown step type", (d) => ({ ...d, steps: [{ name: "X", type: "nope" }] })],
    ["runAs on partition", (d) => ({ ...d, steps: [{ ...d.steps[0], runAs: { secret: "S" } }] })],
    ["bad parameter", (d) => ({ ...d, steps: [{ ...d.steps[0], with: { disk: "0", scheme: "zfs" } }] })],
    ["missing with", (d) => ({ ...d, steps: [{ name: "R", type: "run-command" }] })],
    ["group without steps", (d) => ({ ...d, steps: [{ name: "G", type: "group" }] })],
    ["literal password in with", (d) => ({ ...d, steps: [{ name: "R", type: "run-command", with: { command: "x", password: "y" } }] })],
  ];
  for (const [what, change] of broken) {
    const value = change(structuredClone(VALID));
    assert.equal(check(value), false, `schema should refuse: ${what}`);
    assert.equal(parseTaskSequenceText(JSON.stringify(value), "json").ok, false, `validator should refuse: ${what}`);
  }
});

test("the registry lists every step type but group, each with a schema for with", () => {
  assert.deepEqual(stepTypeNames, ["group", ...Object.keys(stepTypes)]);
  for (const [name, s] of Object.entries(stepTypes)) assert.equal(typeof s.safeParse, "function", name);
  for (const t of runAsStepTypeNames) assert.ok(t in stepTypes);
});

test("image references are names or full sha256 digests", () => {
  const image = (image: string) => stepTypes["apply-image"].safeParse({ image }).success;
  assert.equal(image("debian-12-base"), true);
  assert.equal(image(`sha256:${"0f".repeat(32)}`), true);
  assert.equal(image("sha256:0f0f"), false);
  assert.equal(image(`sha256:${"0F".repeat(32)}`), false);
  assert.equal(image("../etc/passwd"), false);
  assert.equal(image(""), false);
});

test("a format label must fit the file system", () => {
  const format = (filesystem: string, label: string) => stepTypes.format.safeParse({ partition: "0:1", filesystem, label }).success;
  assert.equal(format("vfat", "EFI-SYSTEM1"), true);
  assert.equal(format("vfat", "EFI-SYSTEM12"), false);
  assert.equal(format("ext4", "root-filesystem!"), true);
  assert.equal(format("xfs", "a-very-long-name"), false);
  assert.equal(format("ntfs", "€".repeat(11)), false, "33 bytes");
});
