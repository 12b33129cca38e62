import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { assertPrivate, makePrivateDir, writeFileAtomic } from "./key-files.ts";

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-key-files-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("an atomic write replaces the content, sets the mode and leaves no temporary file", (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "a.key");
  writeFileAtomic(file, "one", 0o600);
  writeFileAtomic(file, Buffer.from("two"), 0o600);
  assert.equal(fs.readFileSync(file, "utf8"), "two");
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ["a.key"]);
});

test("an atomic write narrows the mode of a file that was world-readable", (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "b.key");
  fs.writeFileSync(file, "old", { mode: 0o644 });
  writeFileAtomic(file, "new", 0o600);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
});

test("a failed write leaves the old file and no temporary file", (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "c.key");
  writeFileAtomic(file, "keep", 0o600);
  fs.mkdirSync(path.join(dir, "sub"));
  // Renaming a file over a directory fails.
  assert.throws(() => writeFileAtomic(path.join(dir, "sub"), "x", 0o600));
  assert.equal(fs.readFileSync(file, "utf8"), "keep");
  assert.deepEqual(fs.readdirSync(dir).sort(), ["c.key", "sub"]);
});

test("private directories are 0700 and readable files are refused", (t) => {
  const dir = path.join(tempDir(t), "x", "y");
  makePrivateDir(dir);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  assert.doesNotThrow(() => assertPrivate(dir, "test"));
  const file = path.join(dir, "k");
  fs.writeFileSync(file, "k", { mode: 0o604 });
  fs.chmodSync(file, 0o604);
  assert.throws(() => assertPrivate(file, "open thing"), /^Error: Cannot open thing: .* has mode 0604; .*chmod 600/);
});
