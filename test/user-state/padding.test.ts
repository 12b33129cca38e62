/**
 * GNU tar stops reading at the end-of-archive marker and exits; a capture's record padding (up
 * to 64 KiB of zeros) that arrives afterwards must not fail the restore (found in QEMU, where
 * the padding came in a later chunk: "write EPIPE; nothing was restored"). The rest of the
 * source is still read to its end.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import { MANIFEST_NAME } from "../../src/agent/user-state/capture.ts";
import { restoreUserState } from "../../src/agent/user-state/restore.ts";
import { encodeTarHeader, END_OF_ARCHIVE, padBlock } from "../../src/protocol/tar.ts";
import { writeAccounts } from "./support.ts";

let root: string;
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "slipway-us-padding-"));
  await writeAccounts(root, [["alice", 1001, 1001]], [["alice", 1001]]);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function member(p: string, data: string): Buffer {
  const d = Buffer.from(data);
  return Buffer.concat([encodeTarHeader({ path: p, type: "0", size: d.length, mode: 0o644, uid: 1001, gid: 1001 }), padBlock(d)]);
}

test("padding after the end-of-archive marker, arriving after tar has exited, is read and the restore succeeds", async () => {
  const manifest = member(MANIFEST_NAME, JSON.stringify({ format: "slipway-user-state-1", users: [{ name: "alice", uid: 1001, gid: 1001, home: "/home/alice" }], groups: [{ name: "alice", gid: 1001 }], included: ["/home/alice"] }));
  const body = Buffer.concat([manifest, member("home/alice/note.txt", "kept\n"), END_OF_ARCHIVE]);
  let tail = false;
  async function* source(): AsyncIterable<Buffer> {
    yield body;
    // Long enough for tar to have read the marker and exited.
    await sleep(1500);
    yield Buffer.alloc(64 * 1024);
    yield Buffer.alloc(64 * 1024);
    tail = true;
  }
  const summary = await restoreUserState(source(), { root });
  assert.ok(tail, "the source was not read to its end");
  assert.equal(await readFile(path.join(root, "home/alice/note.txt"), "utf8"), "kept\n");
  assert.deepEqual(summary.notRestored, []);
});
