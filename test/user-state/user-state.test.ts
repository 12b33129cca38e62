/**
 * User-state capture and restore between two real ext4 file systems (loop-mounted images):
 * owners mapped by name where uids differ, modes, nanosecond times, links, xattrs, ACLs and
 * awkward names survive; caches are skipped; a source that fails midway restores nothing.
 */
import assert from "node:assert/strict";
import { chmod, chown, lchown, link, mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { captureUserState } from "../../src/agent/user-state/capture.ts";
import { restoreUserState } from "../../src/agent/user-state/restore.ts";
import { describeTree, makeExt4, run, writeAccounts, type Described, type LoopFs } from "./support.ts";

// Old and new systems: alice and bob swap uids, "project" changes gid, carol is gone.
const OLD_USERS: [string, number, number][] = [["alice", 1000, 1000], ["bob", 1001, 1001], ["carol", 1002, 1002]];
const OLD_GROUPS: [string, number][] = [["alice", 1000], ["bob", 1001], ["carol", 1002], ["project", 1500]];
const NEW_USERS: [string, number, number][] = [["bob", 1000, 1000], ["alice", 1001, 1001]];
const NEW_GROUPS: [string, number][] = [["bob", 1000], ["alice", 1001], ["project", 1600]];
const UID_MAP = new Map([[0, 0], [1000, 1001], [1001, 1000], [1002, 1002]]);
const GID_MAP = new Map([[0, 0], [1000, 1001], [1001, 1000], [1002, 1002], [1500, 1600]]);

const A = { uid: 1000, gid: 1000 };
const B = { uid: 1001, gid: 1001 };
const NAMES = ["with space.txt", "naïve résumé – 日本.txt", "line\nbreak.txt", "-starts-with-dash", "back\\slash"];

async function buildOldSystem(root: string): Promise<void> {
  await writeAccounts(root, OLD_USERS, OLD_GROUPS);
  const h = path.join(root, "home/alice");
  await mkdir(path.join(h, "Documents"), { recursive: true });
  await writeFile(path.join(h, "Documents/report.txt"), "quarterly numbers\n");
  await link(path.join(h, "Documents/report.txt"), path.join(h, "Documents/hard.txt"));
  await symlink("Documents/report.txt", path.join(h, "link"));
  for (const n of NAMES) await writeFile(path.join(h, n), `content of ${n}\n`);
  await writeFile(path.join(h, ".bashrc"), "# alice's own\n");
  await mkdir(path.join(h, "shared"));
  await writeFile(path.join(h, "shared/plan.md"), "plan\n");
  await writeFile(path.join(h, "carol-left-this"), "x\n");
  await mkdir(path.join(h, ".cache/thumbnails"), { recursive: true });
  await writeFile(path.join(h, ".cache/thumbnails/big.png"), Buffer.alloc(100_000, 1));
  await mkdir(path.join(h, "code/node_modules/.cache"), { recursive: true });
  await writeFile(path.join(h, "code/node_modules/.cache/x"), "cache\n");
  await writeFile(path.join(h, "code/main.js"), "console.log(1)\n");
  run("truncate", ["-s", "20M", path.join(h, "sparse.bin")]);
  await writeFile(path.join(h, "sparse.bin"), "middle", { flag: "r+" });
  await mkdir(path.join(root, "home/bob"), { recursive: true });
  await writeFile(path.join(root, "home/bob/notes.md"), "bob's notes\n");
  await mkdir(path.join(root, "root"), { recursive: true });
  await writeFile(path.join(root, "root/.profile"), "export EDITOR=vi\n");

  // owners, modes, ACLs, xattrs
  for (const p of ["home/alice", "home/alice/Documents", "home/alice/code", "home/alice/.cache"]) await chown(path.join(root, p), A.uid, A.gid);
  for (const n of [...NAMES, ".bashrc", "sparse.bin", "code/main.js"]) await chown(path.join(h, n), A.uid, A.gid);
  await chown(path.join(h, "Documents/report.txt"), A.uid, 1500);
  await lchown(path.join(h, "link"), A.uid, A.gid);
  await chown(path.join(h, "shared"), A.uid, 1500);
  await chown(path.join(h, "shared/plan.md"), B.uid, 1500);
  await chown(path.join(h, "carol-left-this"), 1002, 1002);
  await chown(path.join(root, "home/bob"), B.uid, B.gid);
  await chown(path.join(root, "home/bob/notes.md"), B.uid, B.gid);
  await chmod(h, 0o700);
  await chmod(path.join(root, "home/bob"), 0o750);
  await chmod(path.join(h, "Documents/report.txt"), 0o640);
  await chmod(path.join(h, "shared"), 0o2775);
  await chmod(path.join(h, NAMES[1]!), 0o600);
  run("setfacl", ["-m", "u:1001:rw-,g:1500:r--", path.join(h, "Documents/report.txt")]);
  run("setfacl", ["-m", "d:u:1001:rwx,d:g:1500:rwx,u:1001:rwx", path.join(h, "shared")]);
  // GNU tar names ACL qualifiers by the running system's accounts ("user:root"): capture must
  // turn those back into the old system's numbers. uid 0 has a name on every host.
  run("setfacl", ["-m", "u:0:r--,g:0:r--,u:1000:r--", path.join(h, "shared/plan.md")]);
  run("setfattr", ["-n", "user.color", "-v", "blue", path.join(h, "Documents/report.txt")]);
  run("setfattr", ["-n", "user.bin", "-v", "0x00ff0a", path.join(h, NAMES[2]!)]);

  // Times with nanoseconds, children before their directories.
  const tree = await describeTree(root, "home");
  let i = 0;
  for (const p of [...tree.keys()].reverse()) {
    i++;
    run("touch", ["-h", "-d", `@${1_600_000_000 + i * 1000}.${String(123456789 + i).padStart(9, "0")}`, path.join(root, p)]);
  }
}

async function buildNewSystem(root: string): Promise<void> {
  await writeAccounts(root, NEW_USERS, NEW_GROUPS);
  // The image already made alice's home, with a skeleton .bashrc.
  await mkdir(path.join(root, "home/alice"), { recursive: true });
  await writeFile(path.join(root, "home/alice/.bashrc"), "# from /etc/skel\n");
  await writeFile(path.join(root, "home/alice/.profile-from-image"), "kept\n");
  await chown(path.join(root, "home/alice"), 1001, 1001);
  await chmod(path.join(root, "home/alice"), 0o755);
  await mkdir(path.join(root, "root"), { mode: 0o700 });
}

/** The old system's ACL text with its numeric qualifiers mapped to the new system's ids. */
function mapAcl(acl: string): string {
  return acl.replace(/^(default:)?(user|group):(\d+):/gm, (_m, d: string | undefined, tag: string, id: string) => {
    const mapped = (tag === "user" ? UID_MAP : GID_MAP).get(Number(id));
    return `${d ?? ""}${tag}:${mapped ?? id}:`;
  });
}

function expected(d: Described): Omit<Described, "ino"> {
  const { ino: _ino, ...rest } = d;
  return { ...rest, uid: UID_MAP.get(d.uid) ?? d.uid, gid: GID_MAP.get(d.gid) ?? d.gid, acl: mapAcl(d.acl) };
}

function comparable(d: Described): Omit<Described, "ino"> {
  const { ino: _ino, ...rest } = d;
  return rest;
}

async function* fromChunks(chunks: Buffer[]): AsyncIterable<Buffer> {
  for (const c of chunks) yield c;
}

describe("user state between two ext4 file systems", { concurrency: false }, () => {
  let oldFs: LoopFs;
  let newFs: LoopFs;
  let archive: Buffer[] = [];

  before(async () => {
    oldFs = await makeExt4(96, "old");
    newFs = await makeExt4(96, "new");
    await buildOldSystem(oldFs.dir);
    await buildNewSystem(newFs.dir);
    run("mount", ["-o", "remount,ro", oldFs.dir]);
  });
  after(async () => {
    await oldFs?.cleanup();
    await newFs?.cleanup();
  });

  test("capture reads every home and /root, skips caches with the reason, and starts with the manifest", async () => {
    const lines: string[] = [];
    const cap = captureUserState({ root: oldFs.dir, log: (l) => lines.push(l) });
    for await (const c of cap.stream) archive.push(Buffer.from(c));
    const summary = await cap.done;
    assert.deepEqual(summary.included, ["/home/alice", "/home/bob", "/root"]);
    assert.deepEqual(summary.users.map((u) => u.name).sort(), ["alice", "bob", "carol", "root"]); // carol has no home left
    const skipped = new Map(summary.skipped.map((s) => [s.path, s.reason]));
    assert.match(skipped.get("/home/alice/.cache") ?? "", /cache/);
    assert.match(skipped.get("/home/alice/code/node_modules/.cache") ?? "", /cache/);
    assert.equal(summary.skippedCount, 3, JSON.stringify(summary.skipped)); // the two caches and carol's missing home
    assert.ok(skipped.get("/home/carol")?.includes("does not exist"));
    const whole = Buffer.concat(archive);
    assert.equal(whole.toString("latin1", 0, 24), ".slipway-user-state.json");
    assert.equal(whole.includes(Buffer.alloc(100_000, 1).subarray(0, 4096)), false, "the thumbnail cache is not in the archive");
    assert.ok(summary.files >= 12 && summary.bytes >= 20 * 1024 * 1024, JSON.stringify({ files: summary.files, bytes: summary.bytes }));
  });

  test("a source that throws midway leaves the new system's paths untouched", async () => {
    assert.ok(archive.length > 0, "capture ran");
    const before = await snapshot(newFs.dir);
    const whole = Buffer.concat(archive);
    // Past the first files (so tar has written some into staging), well before the end.
    const cut = Math.floor(whole.length * 0.6);
    async function* tampered(): AsyncIterable<Buffer> {
      for (let i = 0; i < cut; i += 65536) yield whole.subarray(i, Math.min(cut, i + 65536));
      throw new Error("chunk 7 failed authentication");
    }
    await assert.rejects(restoreUserState(tampered(), { root: newFs.dir }), /chunk 7 failed authentication.*nothing was restored/s);
    assert.deepEqual(await snapshot(newFs.dir), before);
    // Truncated without an error from the source: refused the same way.
    await assert.rejects(restoreUserState(fromChunks([whole.subarray(0, cut)]), { root: newFs.dir }), /truncated.*nothing was restored/s);
    assert.deepEqual(await snapshot(newFs.dir), before);
  });

  test("restore maps owners and ACL ids by name and keeps modes, times, links, xattrs and names", async () => {
    const summary = await restoreUserState(fromChunks(archive), { root: newFs.dir });
    assert.deepEqual(summary.notRestored, []);
    assert.deepEqual(
      summary.unmappedOwners.sort((a, b) => a.kind.localeCompare(b.kind)),
      [{ kind: "group", name: "carol", id: 1002 }, { kind: "user", name: "carol", id: 1002 }],
    );
    assert.deepEqual(summary.conflicts.map((c) => c.path), ["/home/alice/.bashrc"]);

    const oldTree = await describeTree(oldFs.dir, "home");
    const newTree = await describeTree(newFs.dir, "home");
    oldTree.delete("home");
    newTree.delete("home");
    const skippedDirs = ["home/alice/.cache", "home/alice/code/node_modules/.cache"];
    for (const k of [...oldTree.keys()]) if (skippedDirs.some((d) => k === d || k.startsWith(`${d}/`))) oldTree.delete(k);
    assert.equal(newTree.has("home/alice/.cache"), false);
    assert.equal(newTree.has("home/alice/code/node_modules/.cache"), false);
    assert.equal(newTree.get("home/alice/.profile-from-image")?.sha256 !== undefined, true, "the image's own file is kept");
    newTree.delete("home/alice/.profile-from-image");
    assert.deepEqual([...newTree.keys()].sort(), [...oldTree.keys()].sort());
    for (const [p, d] of oldTree) assert.deepEqual(comparable(newTree.get(p)!), expected(d), p);
    // spot checks a reader would make by hand
    const report = newTree.get("home/alice/Documents/report.txt")!;
    assert.equal(report.uid, 1001);
    assert.equal(report.gid, 1600);
    assert.match(report.acl, /^user:1000:rw-$/m); // bob, who was 1001
    assert.match(report.xattrs, /user\.color=0x626c7565/);
    assert.equal(newTree.get("home/alice/Documents/hard.txt")!.ino, report.ino, "the hard link is one file");
    assert.equal(newTree.get("home/alice/shared")!.mode, 0o2775);
    assert.match(newTree.get("home/alice/shared")!.acl, /^default:user:1000:rwx$/m);
    assert.match(newTree.get("home/alice/shared/plan.md")!.acl, /^user:0:r--$[^]*^user:1001:r--$/m); // root, and alice who was 1000
    assert.equal(newTree.get("home/alice")!.mode, 0o700, "the image's /home/alice takes the archive's mode");
    assert.equal(await readFile(path.join(newFs.dir, "home/alice/.bashrc"), "utf8"), "# alice's own\n");
    assert.equal(await readFile(path.join(newFs.dir, "root/.profile"), "utf8"), "export EDITOR=vi\n");
    assert.deepEqual((await readdir(newFs.dir)).filter((n) => n.startsWith(".slipway-restore-")), []);
  });

  test("a capture whose last pieces arrive slowly (chunks over a network) restores whole: the zeros after the end marker are read", async () => {
    // GNU tar pads the capture's last record with zeros after the end-of-archive marker; a
    // restore that let tar stop at the marker broke its pipe on them and failed as a whole.
    const whole = Buffer.concat(archive);
    const tail = 64 * 1024;
    async function* slowly(): AsyncIterable<Buffer> {
      yield whole.subarray(0, whole.length - tail);
      for (let i = whole.length - tail; i < whole.length; i += 4096) {
        await new Promise((r) => setTimeout(r, 20));
        yield whole.subarray(i, Math.min(whole.length, i + 4096));
      }
    }
    const root = path.join(newFs.dir, "slow");
    await writeAccounts(root, NEW_USERS, NEW_GROUPS);
    const summary = await restoreUserState(slowly(), { root });
    assert.deepEqual(summary.notRestored, []);
    const oldTree = await describeTree(oldFs.dir, "home/bob");
    const newTree = await describeTree(root, "home/bob");
    assert.deepEqual([...newTree.keys()], [...oldTree.keys()]);
    assert.equal(newTree.get("home/bob/notes.md")?.sha256, oldTree.get("home/bob/notes.md")?.sha256);
    assert.equal(await readFile(path.join(root, "home/alice/Documents/report.txt"), "utf8"), "quarterly numbers\n");
  });
});

/** What a user would see of the new system: every path under home and root, and the top level. */
async function snapshot(root: string): Promise<unknown> {
  const top = (await readdir(root)).sort();
  const trees = [...(await describeTree(root, "home")), ...(await describeTree(root, "root"))];
  return { top, trees };
}
