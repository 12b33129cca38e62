import { test } from "node:test";
import assert from "node:assert/strict";
import {
  MAX_DOCUMENT_BYTES,
  canonicalTaskSequence,
  parseTaskSequenceText,
  readTaskSequenceText,
  secretReferences,
  type TaskSequenceResult,
  type ValidationIssue,
} from "./validate.ts";

function errorsOf(result: TaskSequenceResult): ValidationIssue[] {
  assert.equal(result.ok, false, "expected the document to be refused");
  return result.ok ? [] : result.errors;
}

function documentOf(result: TaskSequenceResult) {
  assert.ok(result.ok, `expected the document to be accepted, got ${JSON.stringify(!result.ok && result.errors, null, 1)}`);
  return result.document;
}

function timed<T>(limitMs: number, run: () => T): T {
  const started = performance.now();
  const out = run();
  const took = performance.now() - started;
  assert.ok(took < limitMs, `took ${Math.round(took)} ms, expected under ${limitMs} ms`);
  return out;
}

const SMALL = `
name: Small
steps:
  - name: Reboot
    type: reboot
`;

test("JSON text reads the same with and without format: 'json'", () => {
  const json = JSON.stringify({ name: "Small", steps: [{ name: "Reboot", type: "reboot" }] }, null, "\t");
  assert.deepEqual(documentOf(parseTaskSequenceText(json)), documentOf(parseTaskSequenceText(json, "json")));
  assert.deepEqual(documentOf(parseTaskSequenceText(json)), documentOf(parseTaskSequenceText(SMALL)));
});

test("format 'json' reads strict JSON only", () => {
  const errors = errorsOf(parseTaskSequenceText(SMALL, "json"));
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /^Cannot read JSON: /);
});

test("YAML syntax errors say where they are", () => {
  const errors = errorsOf(parseTaskSequenceText("name: x\nsteps: [\n  - a\n"));
  assert.ok(errors.length >= 1);
  assert.match(errors[0].message, /^Cannot read YAML at line \d+, column \d+: /);
});

test("duplicate YAML keys are refused, with their line", () => {
  const errors = errorsOf(parseTaskSequenceText("name: A\nsteps:\n  - name: R\n    type: reboot\n    type: group\n"));
  assert.deepEqual(errors.map((e) => e.message), ['Cannot read YAML at line 5, column 5: duplicate key "type"']);
});

test("a mapping with tens of thousands of keys is read in linear time", () => {
  let text = "name: Many\nsteps: [{name: R, type: reboot}]\nvariables:\n";
  for (let i = 0; i < 40_000; i++) text += `  V${i}: x\n`;
  // yaml's own uniqueKeys check takes about 10 s here; ours a fraction of one.
  const errors = timed(4000, () => errorsOf(parseTaskSequenceText(text)));
  assert.match(errors[0].message, /Too many variables: 40000, at most 1000/);
});

test("YAML-only types and custom tags are refused, not turned into objects", () => {
  for (const text of [
    "name: !!binary aGVsbG8=\nsteps: [{name: R, type: reboot}]\n",
    "name: !js/function x\nsteps: [{name: R, type: reboot}]\n",
  ]) {
    const errors = errorsOf(parseTaskSequenceText(text));
    assert.match(errors[0].message, /^Cannot read YAML at line 1, column \d+: .*tag/i);
  }
});

test("non-text YAML keys are refused", () => {
  const errors = errorsOf(parseTaskSequenceText("name: A\n? [a, b]\n: 1\nsteps: [{name: R, type: reboot}]\n"));
  assert.match(errors[0].message, /a key must be plain text/);
});

test("a text with several YAML documents is refused", () => {
  errorsOf(parseTaskSequenceText(`${SMALL}---\n${SMALL}`));
});

test("empty text is not a task sequence", () => {
  assert.match(errorsOf(parseTaskSequenceText(""))[0].message, /^Expected a task sequence .* got null$/);
  assert.match(errorsOf(parseTaskSequenceText("", "json"))[0].message, /^Cannot read JSON/);
});

test("text over 1 MiB is refused before it is parsed", () => {
  const big = `${SMALL}# ${"x".repeat(MAX_DOCUMENT_BYTES)}\n`;
  const errors = timed(500, () => errorsOf(parseTaskSequenceText(big)));
  assert.match(errors[0].message, /larger than 1048576 bytes/);
  // Counted in UTF-8 bytes: 400 Ki three-byte characters are 1.2 MiB.
  const wide = `${SMALL}# ${"€".repeat(400 * 1024)}\n`;
  assert.match(errorsOf(parseTaskSequenceText(wide))[0].message, /larger than/);
});

test("a billion-laughs document is refused quickly", () => {
  const lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'];
  for (let i = 1; i <= 9; i++) lines.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(", ")}]`);
  const text = `name: Laughs\nsteps: [{name: R, type: reboot}]\nlaughs:\n${lines.map((l) => `  ${l}`).join("\n")}\n`;
  const errors = timed(1000, () => errorsOf(parseTaskSequenceText(text)));
  assert.deepEqual(errors.map((e) => e.message), [
    "Cannot read YAML: its aliases (*name) expand to too much data; at most 100 expansions",
  ]);
});

test("a few aliases are fine", () => {
  const text = `
name: Anchors
steps:
  - name: One
    type: run-command
    with: &cmd { command: "echo hi", successCodes: [0] }
  - name: Two
    type: run-command
    with: *cmd
`;
  const d = documentOf(parseTaskSequenceText(text));
  assert.deepEqual(d.steps[0].type === "run-command" && d.steps[0].with, d.steps[1].type === "run-command" && d.steps[1].with);
});

test("absurdly deep YAML nesting is refused quickly", () => {
  for (const text of [
    `name: Deep\nsteps: ${"[".repeat(400_000)}${"]".repeat(400_000)}\n`,
    `name: Deep\nsteps: ${"{a: ".repeat(200_000)}1${"}".repeat(200_000)}\n`,
    `name: Deep\nsteps:\n${"- ".repeat(400_000)}x\n`,
  ]) {
    const errors = timed(1000, () => errorsOf(parseTaskSequenceText(text)));
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /^Cannot read YAML at line [23], column \d+: nested too deeply$/);
  }
});

test("deep but sane JSON is read and refused by the validator, not by a stack overflow", () => {
  const text = `{"name":"Deep","steps":[{"name":"R","type":"reboot","with":${"[".repeat(50_000)}${"]".repeat(50_000)}}]}`;
  const errors = errorsOf(parseTaskSequenceText(text, "json"));
  assert.deepEqual(errors.map((e) => e.path), ['steps[0] "R" > with']);
});

test("readTaskSequenceText gives plain data without checking it", () => {
  assert.deepEqual(readTaskSequenceText("a: 1"), { ok: true, value: { a: 1 } });
  assert.deepEqual(readTaskSequenceText("[1, 2]", "json"), { ok: true, value: [1, 2] });
});

// ---------------------------------------------------------------------------------------------

const WRITTEN_ONE_WAY = `
name: Same
description: d
variables: { B: "2", A: "1" }
steps:
  - name: Install
    type: group
    condition: "Firmware=='uefi'  AND not exists( X )"
    steps:
      - name: Cmd
        type: run-command
        runAs: { secret: Cred }
        with: { workingDirectory: /tmp, command: "make", successCodes: [0, 1] }
  - name: Reboot
    type: reboot
`;

const WRITTEN_ANOTHER_WAY = `
steps:
  - type: group
    name: Install
    continueOnError: false
    condition: 'Firmware == "uefi" and not exists(X)'
    disabled: false
    steps:
      - type: run-command
        name: Cmd
        with: { command: make, successCodes: [0, 1], workingDirectory: /tmp }
        runAs: { secret: Cred }
        disabled: false
  - { name: Reboot, type: reboot, with: {} }
variables: { A: "1", B: "2" }
description: d
name: Same
`;

test("the same content written two ways has one canonical JSON", () => {
  const one = canonicalTaskSequence(documentOf(parseTaskSequenceText(WRITTEN_ONE_WAY)));
  const another = canonicalTaskSequence(documentOf(parseTaskSequenceText(WRITTEN_ANOTHER_WAY)));
  assert.equal(JSON.stringify(one), JSON.stringify(another));
  assert.equal(
    JSON.stringify(one),
    JSON.stringify({
      name: "Same",
      description: "d",
      variables: { A: "1", B: "2" },
      steps: [
        {
          name: "Install",
          type: "group",
          condition: 'Firmware == "uefi" and not exists(X)',
          continueOnError: false,
          disabled: false,
          steps: [
            {
              name: "Cmd",
              type: "run-command",
              continueOnError: false,
              disabled: false,
              runAs: { secret: "Cred" },
              with: { command: "make", successCodes: [0, 1], workingDirectory: "/tmp" },
            },
          ],
        },
        { name: "Reboot", type: "reboot", continueOnError: false, disabled: false, with: {} },
      ],
    }),
  );
});

test("the canonical form is itself valid and canonical", () => {
  const once = canonicalTaskSequence(documentOf(parseTaskSequenceText(WRITTEN_ONE_WAY)));
  const again = documentOf(parseTaskSequenceText(JSON.stringify(once), "json"));
  assert.equal(JSON.stringify(canonicalTaskSequence(again)), JSON.stringify(once));
  assert.deepEqual(canonicalTaskSequence(once), once);
});

test("different content has different canonical JSON", () => {
  const one = canonicalTaskSequence(documentOf(parseTaskSequenceText(WRITTEN_ONE_WAY)));
  const changed = canonicalTaskSequence(documentOf(parseTaskSequenceText(WRITTEN_ONE_WAY.replace("successCodes: [0, 1]", "successCodes: [1, 0]"))));
  assert.notEqual(JSON.stringify(one), JSON.stringify(changed));
});

test("secretReferences lists every runAs secret once, in document order, disabled steps too", () => {
  const d = documentOf(
    parseTaskSequenceText(`
name: Secrets
steps:
  - { name: A, type: run-command, with: { command: a }, runAs: { secret: Second } }
  - name: G
    type: group
    steps:
      - { name: B, type: install-packages, with: { packages: [vim] }, runAs: { secret: First }, disabled: true }
      - { name: C, type: run-command, with: { command: c }, runAs: { secret: Second } }
      - { name: D, type: run-command, with: { command: d } }
`),
  );
  assert.deepEqual(secretReferences(d), ["Second", "First"]);
  assert.deepEqual(secretReferences(documentOf(parseTaskSequenceText(SMALL))), []);
});
