import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  MAX_ISSUES,
  MAX_STEP_DEPTH,
  MAX_STEPS,
  parseTaskSequenceText,
  validateTaskSequence,
  type TaskSequenceResult,
  type ValidationIssue,
} from "./validate.ts";

const EXAMPLE = `
name: Deploy Debian base
description: Wipes the disk and installs Debian 12 with the lab's packages
variables:
  OSDTimeZone: UTC
  OSDDomain: lab.example.com
steps:
  - name: Partition disk
    type: partition-disk
    with: { disk: "0", scheme: gpt }
    condition: "Firmware == 'uefi'"
    continueOnError: false
    disabled: false
    timeoutSeconds: 3600
  - name: Format root
    type: format
    with: { partition: "0:2", filesystem: ext4, label: root }
  - name: Apply image
    type: apply-image
    with: { image: "sha256:${"ab".repeat(32)}", partition: "0:2" }
  - name: Install software
    type: group
    condition: not exists(OSDSkipSoftware)
    steps:
      - name: Join domain
        type: run-command
        with: { command: "realm join %OSDDomain%", successCodes: [0, 3010] }
        runAs: { secret: DomainJoinCredential }
      - name: Packages
        type: install-packages
        with: { packages: [openssh-server, "nginx=1.22.1-9", vim/bookworm-backports] }
      - name: Set flag
        type: set-variable
        with: { name: OSDDone, value: "yes" }
  - name: Reboot
    type: reboot
`;

function errorsOf(result: TaskSequenceResult): ValidationIssue[] {
  assert.equal(result.ok, false, "expected the document to be refused");
  return result.ok ? [] : result.errors;
}

function documentOf(result: TaskSequenceResult) {
  assert.ok(result.ok, `expected the document to be accepted, got ${JSON.stringify(!result.ok && result.errors, null, 1)}`);
  return result.document;
}

/** A minimal valid document around `steps`. */
const doc = (steps: unknown[], extra: Record<string, unknown> = {}) => ({ name: "T", ...extra, steps });
const reboot = (name: string) => ({ name, type: "reboot" });

test("a valid document is accepted and reads the same from YAML and from JSON", () => {
  const fromYaml = documentOf(parseTaskSequenceText(EXAMPLE));
  assert.equal(fromYaml.name, "Deploy Debian base");
  assert.deepEqual(fromYaml.variables, { OSDTimeZone: "UTC", OSDDomain: "lab.example.com" });
  const group = fromYaml.steps[3];
  assert.equal(group.type, "group");
  assert.equal(group.type === "group" && group.steps[0].type === "run-command" && group.steps[0].runAs?.secret, "DomainJoinCredential");
  const fromJson = documentOf(parseTaskSequenceText(JSON.stringify(fromYaml), "json"));
  assert.deepEqual(fromJson, fromYaml);
  assert.deepEqual(documentOf(validateTaskSequence(fromYaml)), fromYaml);
});

test("steps that take no parameters may leave out with, and come back with with: {}", () => {
  const d = documentOf(validateTaskSequence(doc([reboot("Reboot")])));
  assert.deepEqual(d.steps[0], { name: "Reboot", type: "reboot", with: {} });
});

test("five distinct errors are all reported, each with its step path and pointer", () => {
  const errors = errorsOf(
    validateTaskSequence({
      name: "Five mistakes",
      steps: [
        { name: "Partition disk", type: "partition-disk", with: { disk: "0", scheme: "zfs" } },
        {
          name: "Install software",
          type: "group",
          steps: [
            { name: "Join domain", type: "run-command", with: {}, condition: "Domain ==" },
            { name: "Wait", type: "reboot", timeoutSeconds: 100000 },
          ],
        },
        { name: "Apply", type: "apply-image", with: { image: "sha256:1234" } },
      ],
    }),
  );
  assert.deepEqual(
    errors.map(({ path, pointer }) => ({ path, pointer })),
    [
      { path: 'steps[0] "Partition disk" > with.scheme', pointer: "/steps/0/with/scheme" },
      { path: 'steps[1] "Install software" > steps[0] "Join domain" > condition', pointer: "/steps/1/steps/0/condition" },
      { path: 'steps[1] "Install software" > steps[0] "Join domain" > with.command', pointer: "/steps/1/steps/0/with/command" },
      { path: 'steps[1] "Install software" > steps[1] "Wait" > timeoutSeconds', pointer: "/steps/1/steps/1/timeoutSeconds" },
      { path: 'steps[2] "Apply" > with.image', pointer: "/steps/2/with/image" },
    ],
  );
  assert.match(errors[0].message, /Must be one of "gpt", "mbr", "gpt-bios"/);
  assert.match(errors[1].message, /^Not a valid condition: Unexpected end of expression at 9: expected a value$/);
  assert.equal(errors[2].message, "Required");
  assert.equal(errors[3].message, "Must be at most 86400");
  assert.match(errors[4].message, /sha256/);
});

test("an unknown step type is refused, naming the types there are", () => {
  const errors = errorsOf(validateTaskSequence(doc([{ name: "Frob", type: "frobnicate" }])));
  assert.equal(errors.length, 1);
  assert.equal(errors[0].path, 'steps[0] "Frob" > type');
  assert.match(errors[0].message, /^Unknown step type "frobnicate"; expected one of group, partition-disk, .*install-packages$/);
  const missing = errorsOf(validateTaskSequence(doc([{ name: "No type" }])));
  assert.deepEqual(missing.map((e) => e.path), ['steps[0] "No type" > type']);
  assert.match(missing[0].message, /^Required/);
});

test("runAs is refused on a step that runs no program, and must name a secret", () => {
  const errors = errorsOf(
    validateTaskSequence(
      doc([
        { name: "Partition", type: "partition-disk", with: { disk: "0", scheme: "gpt" }, runAs: { secret: "Admin" } },
        { name: "Group", type: "group", runAs: { secret: "Admin" }, steps: [reboot("R")] },
        { name: "Cmd", type: "run-command", with: { command: "id" }, runAs: { secret: "not a name" } },
        { name: "Cmd2", type: "run-command", with: { command: "id" }, runAs: "Admin" },
      ]),
    ),
  );
  assert.deepEqual(errors.map((e) => e.path), [
    'steps[0] "Partition" > runAs',
    'steps[1] "Group" > runAs',
    'steps[2] "Cmd" > runAs.secret',
    'steps[3] "Cmd2" > runAs',
  ]);
  assert.match(errors[0].message, /cannot run as another account; only run-command and install-packages take runAs/);
  assert.match(errors[3].message, /Expected an object, got text/);
  documentOf(validateTaskSequence(doc([{ name: "Pk", type: "install-packages", with: { packages: ["vim"] }, runAs: { secret: "Repo.Cred" } }])));
});

test("a literal password is refused wherever it is written", () => {
  const errors = errorsOf(
    validateTaskSequence({
      name: "T",
      password: "hunter2",
      variables: { DomainJoinPassword: "hunter2", OSDTimeZone: "UTC" },
      steps: [
        { name: "Join", type: "run-command", with: { command: "realm join", password: "hunter2" }, runAs: { secret: "Cred", password: "x" } },
        { name: "Login", type: "reboot", passwd: "hunter2" },
        { name: "Set", type: "set-variable", with: { name: "AdminPassword", value: "hunter2" } },
      ],
    }),
  );
  assert.deepEqual(errors.map((e) => e.pointer), [
    "/password",
    "/variables/DomainJoinPassword",
    "/steps/0/runAs/password",
    "/steps/0/with/password",
    "/steps/1/passwd",
    "/steps/2/with/name",
  ]);
  for (const e of errors) assert.match(e.message, /password/i);
  assert.ok(errors.every((e) => !e.message.includes("hunter2")), "the value is never echoed");
});

test("duplicate names among siblings are refused, case-insensitively; cousins may share a name", () => {
  const errors = errorsOf(
    validateTaskSequence(
      doc([
        reboot("Restart"),
        { name: "A", type: "group", steps: [reboot("Restart"), reboot("Other")] },
        { name: "B", type: "group", steps: [reboot("Restart")] },
        reboot("restart"),
      ]),
    ),
  );
  assert.equal(errors.length, 1);
  assert.equal(errors[0].path, 'steps[3] "restart" > name');
  assert.equal(errors[0].message, 'Duplicate step name: steps[0] "Restart" in the same list has the same name');
});

function nested(depth: number): unknown {
  let steps: unknown[] = [reboot("Leaf")];
  for (let level = depth - 1; level >= 1; level--) steps = [{ name: `Level ${level}`, type: "group", steps }];
  return doc(steps);
}

test(`groups nest at most ${MAX_STEP_DEPTH} levels deep`, () => {
  documentOf(validateTaskSequence(nested(MAX_STEP_DEPTH)));
  const errors = errorsOf(validateTaskSequence(nested(MAX_STEP_DEPTH + 1)));
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /Groups nest too deeply: at most 16 levels/);
  assert.equal(errors[0].pointer, `${"/steps/0".repeat(MAX_STEP_DEPTH)}/steps`);
  assert.ok(errors[0].path.startsWith('steps[0] "Level 1" > steps[0] "Level 2" > '));
});

test("very deep nesting is refused without overflowing the stack", () => {
  let steps: unknown = [reboot("Leaf")];
  for (let i = 0; i < 100_000; i++) steps = [{ name: "G", type: "group", steps }];
  const errors = errorsOf(validateTaskSequence(doc(steps as unknown[])));
  assert.equal(errors.length, 1);
});

test(`a document holds at most ${MAX_STEPS} steps, counting groups and what they hold`, () => {
  const flat = (n: number) => Array.from({ length: n }, (_, i) => reboot(`S${i}`));
  documentOf(validateTaskSequence(doc(flat(MAX_STEPS))));
  documentOf(validateTaskSequence(doc([...flat(MAX_STEPS - 2), { name: "G", type: "group", steps: [reboot("x")] }])));
  const inGroups = errorsOf(validateTaskSequence(doc([...flat(MAX_STEPS - 1), { name: "G", type: "group", steps: [reboot("x")] }])));
  assert.deepEqual(inGroups.map((e) => e.path), ["steps"]);
  assert.match(inGroups[0].message, /Too many steps: more than 1000/);
  const huge = errorsOf(validateTaskSequence(doc(flat(300_000))));
  assert.equal(huge.length, 1);
});

test("the shape of groups and steps is checked", () => {
  const errors = errorsOf(
    validateTaskSequence(
      doc([
        { name: "G1", type: "group" },
        { name: "G2", type: "group", with: {}, steps: [] },
        { name: "R", type: "reboot", steps: [] },
        "reboot",
        null,
        { name: "Bad\nname", type: "reboot" },
      ]),
    ),
  );
  assert.deepEqual(
    errors.map((e) => [e.path, e.message]),
    [
      ['steps[0] "G1" > steps', 'Required: a group holds its steps in "steps"'],
      ['steps[1] "G2" > with', 'A group takes no "with"; give parameters to the steps inside it'],
      ['steps[2] "R" > steps', 'Only a group holds "steps"; this step\'s type is "reboot"'],
      ["steps[3]", "Expected a step (an object with a name and a type), got text"],
      ["steps[4]", "Expected a step (an object with a name and a type), got null"],
      ["steps[5] > name", "Must not contain control characters such as line breaks or tabs"],
    ],
  );
});

test("the document itself must be an object with a name and at least one step", () => {
  for (const v of [null, 3, "text", [], true]) {
    const errors = errorsOf(validateTaskSequence(v));
    assert.equal(errors.length, 1);
    assert.equal(errors[0].path, "");
    assert.match(errors[0].message, /^Expected a task sequence/);
  }
  assert.deepEqual(errorsOf(validateTaskSequence({})).map((e) => [e.path, e.message]), [
    ["name", "Required"],
    ["steps", "Required: a list of steps"],
  ]);
  assert.deepEqual(errorsOf(validateTaskSequence({ name: "T", steps: [] })).map((e) => e.message), [
    "A task sequence needs at least one step",
  ]);
  assert.deepEqual(errorsOf(validateTaskSequence({ name: "T", steps: {} })).map((e) => e.message), [
    "Expected a list of steps, got an object",
  ]);
});

test("variables are names mapped to text", () => {
  const errors = errorsOf(
    validateTaskSequence(doc([reboot("R")], { variables: { Count: 3, "a/b": "x", Ok: "fine", On: true } })),
  );
  assert.deepEqual(errors.map((e) => [e.path, e.pointer]), [
    ["variables.Count", "/variables/Count"],
    ['variables["a/b"]', "/variables/a~1b"],
    ["variables.On", "/variables/On"],
  ]);
  assert.match(errors[0].message, /Expected text, got a number \(in YAML, put it in quotes\)/);
  assert.deepEqual(errorsOf(validateTaskSequence(doc([reboot("R")], { variables: ["x"] }))).map((e) => e.message), [
    "Expected an object of variable names and values, got a list",
  ]);
});

test("a key named __proto__ is an unknown field, not a prototype", () => {
  const value = JSON.parse('{"name":"T","steps":[{"name":"R","type":"reboot","__proto__":{"polluted":true}}],"variables":{"__proto__":"x"}}');
  const errors = errorsOf(validateTaskSequence(value));
  assert.deepEqual(errors.map((e) => [e.path, e.message]), [
    ["variables.__proto__", '"__proto__" is reserved'],
    ['steps[0] "R" > __proto__', 'Unknown field "__proto__"'],
  ]);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test(`at most ${MAX_ISSUES} problems are listed, then a note that there are more`, () => {
  const steps = Array.from({ length: 300 }, (_, i) => ({ name: `S${i}`, type: "nope" }));
  const errors = errorsOf(validateTaskSequence(doc(steps)));
  assert.equal(errors.length, MAX_ISSUES + 1);
  assert.match(errors[MAX_ISSUES].message, /^Stopped after 100 problems/);
});

test("every step type accepts its documented parameters", () => {
  const steps = [
    { type: "partition-disk", with: { disk: "/dev/sda", scheme: "gpt-bios" } },
    { type: "format", with: { partition: "0:1", filesystem: "vfat", label: "EFI" } },
    { type: "format", with: { partition: "0:2", filesystem: "xfs" } },
    { type: "apply-image", with: { image: "debian-12_base.v2" } },
    { type: "capture-user-state", with: { from: "0:2", include: ["/srv/projects"], exclude: ["*.iso"], defaultExcludes: true } },
    { type: "capture-user-state" },
    { type: "restore-user-state", with: { to: "0:2" } },
    { type: "restore-user-state" },
    { type: "run-command", with: { command: "true", successCodes: [0], workingDirectory: "/tmp" } },
    { type: "set-variable", with: { name: "OSDStage", value: "" } },
    { type: "install-bootloader", with: { disk: "0" } },
    { type: "reboot", with: {} },
    { type: "disable-encryption" },
    { type: "enable-encryption", with: { method: "luks2" } },
    { type: "enable-encryption" },
    { type: "install-packages", with: { packages: ["vim"] } },
    { type: "group", steps: [] },
  ].map((s, i) => ({ name: `Step ${i}`, ...s }));
  documentOf(validateTaskSequence(doc(steps)));
});

test("parameters that would be misread by the agent are refused", () => {
  const errors = errorsOf(
    validateTaskSequence(
      doc([
        { name: "P", type: "install-packages", with: { packages: ["-oAPT::Update::Pre-Invoke::=evil", "vim"] } },
        { name: "C", type: "capture-user-state", with: { include: ["home/../etc"] } },
        { name: "R", type: "run-command", with: { command: "x", successCodes: [0.5] } },
        { name: "I", type: "apply-image", with: { image: `sha256:${"AB".repeat(32)}` } },
      ]),
    ),
  );
  assert.deepEqual(errors.map((e) => [e.path, e.message.slice(0, 30)]), [
    ['steps[0] "P" > with.packages[0]', "Must be a package name: starts"],
    ['steps[1] "C" > with.include[0]', "Must be an absolute path witho"],
    ['steps[2] "R" > with.successCodes[0]', "Expected a whole number, got a"],
    ['steps[3] "I" > with.image', "Must be an image name (letters"],
  ]);
});

function expectRefusedCleanly(value: unknown): void {
  const result = validateTaskSequence(value);
  if (result.ok) return;
  assert.ok(result.errors.length > 0 && result.errors.length <= MAX_ISSUES + 1);
  for (const e of result.errors) {
    assert.equal(typeof e.path, "string");
    assert.equal(typeof e.pointer, "string");
    assert.ok(typeof e.message === "string" && e.message.length > 0);
  }
}

test("no JSON value makes validateTaskSequence throw", () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
      const result = validateTaskSequence(value);
      assert.equal(result.ok, false);
      expectRefusedCleanly(value);
    }),
    { numRuns: 1000 },
  );
});

test("documents that are nearly right never make validateTaskSequence throw", () => {
  const base = documentOf(parseTaskSequenceText(EXAMPLE));
  const keys = ["name", "type", "with", "steps", "runAs", "secret", "condition", "disabled", "timeoutSeconds", "variables", "command", "password", "__proto__", "image", "disk"];
  // Replace or add one value anywhere in a valid document with arbitrary JSON.
  const mutation = fc.record({
    at: fc.array(fc.nat(20), { minLength: 1, maxLength: 8 }),
    key: fc.constantFrom(...keys),
    value: fc.jsonValue({ maxDepth: 3 }),
  });
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (mutations) => {
      const value = structuredClone(base) as unknown;
      for (const { at, key, value: replacement } of mutations) {
        let node = value as Record<string, unknown>;
        for (const i of at) {
          const children = Object.values(node).filter((c) => typeof c === "object" && c !== null);
          if (children.length === 0) break;
          node = children[i % children.length] as Record<string, unknown>;
        }
        Object.defineProperty(node, key, { value: replacement, enumerable: true, writable: true, configurable: true });
      }
      expectRefusedCleanly(value);
    }),
    { numRuns: 1000 },
  );
});
