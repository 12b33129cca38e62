/**
 * Restoring into paths the new system already has: directories merge, the user's files replace
 * the image's (reported), and where the types differ the new system's entry is kept and the
 * archive's is reported as not restored — never silently dropped.
 */
import assert from "node:assert/strict";
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { captureUserState } from "../../src/agent/user-state/capture.ts";
import { restoreUserState } from "../../src/agent/user-state/restore.ts";
import { writeAccounts } from "./support.ts";

test("merging into existing paths: dirs merge, files are replaced and reported, type clashes are kept and reported", async () => {
  const work = await mkdtemp(path.join(os.tmpdir(), "slipway-us-merge-"));
  try {
    const oldRoot = path.join(work, "old");
    const newRoot = path.join(work, "new");
    await writeAccounts(oldRoot, [["alice", 1000, 1000]], [["alice", 1000]]);
    await writeAccounts(newRoot, [["alice", 1000, 1000]], [["alice", 1000]]);
    const o = path.join(oldRoot, "home/alice");
    await mkdir(path.join(o, "code"), { recursive: true });
    await writeFile(path.join(o, "code/main.js"), "old code\n");
    await writeFile(path.join(o, "notes.txt"), "old notes\n");
    await mkdir(path.join(o, "Documents"));
    await writeFile(path.join(o, "Documents/a.txt"), "a from the old system\n");
    await writeFile(path.join(o, "Documents/same.txt"), "the user's version\n");
    const n = path.join(newRoot, "home/alice");
    await mkdir(path.join(n, "notes.txt"), { recursive: true }); // a directory where the archive has a file
    await writeFile(path.join(n, "code"), "the image's file\n"); // a file where the archive has a directory
    await mkdir(path.join(n, "Documents"));
    await writeFile(path.join(n, "Documents/b.txt"), "b from the image\n");
    await writeFile(path.join(n, "Documents/same.txt"), "the image's version\n");

    const cap = captureUserState({ root: oldRoot });
    const summary = await restoreUserState(cap.stream, { root: newRoot });
    await cap.done;

    assert.deepEqual(summary.conflicts.map((c) => c.path), ["/home/alice/Documents/same.txt"]);
    const notRestored = new Map(summary.notRestored.map((x) => [x.path, x.reason]));
    assert.deepEqual([...notRestored.keys()].sort(), ["/home/alice/code", "/home/alice/notes.txt"]);
    assert.match(notRestored.get("/home/alice/code")!, /new system has a file there, the archive a directory/);
    assert.match(notRestored.get("/home/alice/notes.txt")!, /new system has a directory there, the archive a file/);
    assert.equal(await readFile(path.join(n, "code"), "utf8"), "the image's file\n");
    assert.deepEqual((await readdir(path.join(n, "Documents"))).sort(), ["a.txt", "b.txt", "same.txt"]);
    assert.equal(await readFile(path.join(n, "Documents/same.txt"), "utf8"), "the user's version\n");
    assert.deepEqual((await readdir(newRoot)).filter((x) => x.startsWith(".slipway-restore-")), []);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

test("a new system whose /home is a symbolic link (/home -> /var/home) gets the files where the link leads, inside it", async () => {
  const work = await mkdtemp(path.join(os.tmpdir(), "slipway-us-merge-"));
  try {
    const oldRoot = path.join(work, "old");
    const newRoot = path.join(work, "new");
    await writeAccounts(oldRoot, [["alice", 1000, 1000]], [["alice", 1000]]);
    await writeAccounts(newRoot, [["alice", 1000, 1000]], [["alice", 1000]]);
    const o = path.join(oldRoot, "home/alice");
    await mkdir(path.join(o, "Documents"), { recursive: true });
    await writeFile(path.join(o, "Documents/a.txt"), "a\n");
    await chmod(o, 0o700);
    await mkdir(path.join(newRoot, "var/home/alice"), { recursive: true, mode: 0o755 });
    await chmod(path.join(newRoot, "var/home/alice"), 0o755);
    // Absolute, as on ostree systems: read from the host it would lead out of the new system.
    await symlink("/var/home", path.join(newRoot, "home"));

    const cap = captureUserState({ root: oldRoot });
    const summary = await restoreUserState(cap.stream, { root: newRoot });
    await cap.done;

    assert.deepEqual(summary.notRestored, []);
    assert.equal(await readFile(path.join(newRoot, "var/home/alice/Documents/a.txt"), "utf8"), "a\n");
    assert.equal((await lstat(path.join(newRoot, "home"))).isSymbolicLink(), true);
    assert.equal((await stat(path.join(newRoot, "var/home/alice"))).mode & 0o7777, 0o700, "the archive's mode, set through the link");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});
