/**
 * Restore refuses what capture did not make — a plain tar without the manifest, a member that
 * climbs out of the new system, garbage — with a clear error, and changes nothing.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { captureUserState, MANIFEST_NAME } from "../../src/agent/user-state/capture.ts";
import { restoreUserState } from "../../src/agent/user-state/restore.ts";
import { encodeTarHeader, END_OF_ARCHIVE, padBlock } from "../../src/protocol/tar.ts";
import { writeAccounts } from "./support.ts";

let root: string;
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "slipway-us-refuse-"));
  await writeAccounts(root, [["alice", 1001, 1001]], [["alice", 1001]]);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function member(p: string, data: string, type = "0", linkpath?: string): Buffer {
  const d = Buffer.from(data);
  return Buffer.concat([encodeTarHeader({ path: p, type, size: type === "0" ? d.length : 0, linkpath }), type === "0" ? padBlock(d) : Buffer.alloc(0)]);
}
const manifest = member(MANIFEST_NAME, JSON.stringify({ format: "slipway-user-state-1", users: [], groups: [], included: [] }));

async function* once(b: Buffer): AsyncIterable<Buffer> {
  yield b;
}

async function assertRefused(archive: Buffer, message: RegExp): Promise<void> {
  const before = (await readdir(root)).sort();
  await assert.rejects(restoreUserState(once(archive), { root }), message);
  assert.deepEqual((await readdir(root)).sort(), before, "nothing written, no staging folder left");
}

test("a tar archive without the user-state manifest is refused", async () => {
  await assertRefused(Buffer.concat([member("home/alice/x", "x"), END_OF_ARCHIVE]), /does not start with its manifest.*nothing was restored/s);
});

test("members that climb out of the new system are refused, also as hard-link targets", async () => {
  await assertRefused(Buffer.concat([manifest, member("home/../../etc/passwd", "x"), END_OF_ARCHIVE]), /not a path inside the new system/);
  await assertRefused(Buffer.concat([manifest, member("/etc/shadow", "x"), END_OF_ARCHIVE]), /not a path inside the new system/);
  await assertRefused(Buffer.concat([manifest, member("home/alice/l", "", "1", "../../etc/shadow"), END_OF_ARCHIVE]), /not a path inside the new system/);
});

test("bytes that are not a tar archive are refused", async () => {
  await assertRefused(Buffer.alloc(4096, 0x41), /Cannot read the tar archive.*nothing was restored/s);
  await assertRefused(Buffer.alloc(0), /truncated|no manifest/);
});

test("a manifest that is not ours is refused", async () => {
  await assertRefused(Buffer.concat([member(MANIFEST_NAME, "{\"format\":\"other\"}"), END_OF_ARCHIVE]), /not a slipway-user-state-1 manifest/);
});

test("capture refuses an include path outside the old system", async () => {
  const old = await mkdtemp(path.join(os.tmpdir(), "slipway-us-old-"));
  try {
    await writeAccounts(old, [], []);
    await mkdir(path.join(old, "root"));
    await writeFile(path.join(old, "root/x"), "x");
    for (const bad of ["relative/path", "/home/../../etc"]) {
      const cap = captureUserState({ root: old, include: [bad] });
      await assert.rejects(async () => {
        for await (const _ of cap.stream) void _;
      }, /include path .* is not an absolute path inside the old system/);
      await assert.rejects(cap.done);
    }
  } finally {
    await rm(old, { recursive: true, force: true });
  }
});

test("an aborted capture stops tar and fails; an aborted restore restores nothing", async () => {
  const old = await mkdtemp(path.join(os.tmpdir(), "slipway-us-old-"));
  try {
    await writeAccounts(old, [], []);
    await mkdir(path.join(old, "root"));
    for (let i = 0; i < 200; i++) await writeFile(path.join(old, `root/f${i}`), Buffer.alloc(64 * 1024, i));
    const ac = new AbortController();
    const cap = captureUserState({ root: old, signal: ac.signal });
    let seen = 0;
    await assert.rejects(async () => {
      for await (const c of cap.stream) {
        seen += c.length;
        if (seen > 1 << 20) ac.abort();
      }
    }, /abort/i);
    await assert.rejects(cap.done, /abort/i);

    const whole: Buffer[] = [];
    for await (const c of captureUserState({ root: old }).stream) whole.push(c);
    const before = (await readdir(root)).sort();
    const ac2 = new AbortController();
    async function* slow(): AsyncIterable<Buffer> {
      const all = Buffer.concat(whole);
      for (let i = 0; i < all.length; i += 65536) {
        if (i > all.length / 2) ac2.abort();
        yield all.subarray(i, i + 65536);
      }
    }
    await assert.rejects(restoreUserState(slow(), { root, signal: ac2.signal }), /abort.*nothing was restored/is);
    assert.deepEqual((await readdir(root)).sort(), before);
  } finally {
    await rm(old, { recursive: true, force: true });
  }
});

test("a reader that stops early ends the capture: done says it is incomplete", async () => {
  const old = await mkdtemp(path.join(os.tmpdir(), "slipway-us-old-"));
  try {
    await writeAccounts(old, [], []);
    await mkdir(path.join(old, "root"));
    for (let i = 0; i < 50; i++) await writeFile(path.join(old, `root/f${i}`), Buffer.alloc(64 * 1024, i));
    const cap = captureUserState({ root: old });
    for await (const _ of cap.stream) break;
    await assert.rejects(cap.done, /stopped before its end/);
  } finally {
    await rm(old, { recursive: true, force: true });
  }
});
