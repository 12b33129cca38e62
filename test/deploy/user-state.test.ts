/**
 * User state migration end to end, in a network namespace this test makes: a BIOS machine whose
 * disk holds an installed system with two users (files with owners, modes, nanosecond times, a
 * symlink, a hard link, an extended attribute, a POSIX ACL naming the other user, a set-group-id
 * folder, a name with a space and non-ASCII letters, a cache folder) PXE-boots into the deploy
 * environment, waits for an administrator to approve its enrollment (a task sequence that moves
 * user state is never open to a boot token alone), and is refreshed in place by one task sequence: capture-user-state (the old
 * system read-only), partition, format, apply the test OS, a command that gives the new system
 * the same users with other ids, restore-user-state. The disk is then read on the host: every
 * file is back, identical, owned by the same *names*; the cache was skipped; the association
 * is restored with its delete-after deadline; and a canary from a user's file is found nowhere
 * in the site's data folder (state store, database) or the server's log. Then a replace: an old
 * machine captures, a new machine with an empty disk installs and restores the same files.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { run, type Lab, type Link } from "../lab/netns.ts";
import { startVm } from "../lab/qemu.ts";
import { ensureTestOsImages } from "../lab/test-os.ts";
import { startLabSite, type LabSite } from "../lab/lab-site.ts";

if (process.getuid?.() !== 0) throw new Error("the user-state deployment test needs root (network namespaces, loop devices): run scripts/test.sh as root");

const PASSWORD = "User-State-End-To-End-Passphrase-1";
const DEPLOY_TIMEOUT_MS = 900_000;
const BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649";
const LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

// The new system gets the same names with other ids: alice and bob swap uids, and the
// projects group moves.
const NEW_PASSWD = "root:x:0:0:root:/root:/bin/sh\\nbob:x:1000:1000::/home/bob:/bin/sh\\nalice:x:1001:1001::/home/alice:/bin/sh\\n";
const NEW_GROUP = "root:x:0:\\nbob:x:1000:\\nalice:x:1001:\\nprojects:x:3000:alice\\n";

/** After the capture: a new system with the same users (other ids), then its users' files back. */
const INSTALL_AND_RESTORE_STEPS = `
  - name: Partition
    type: partition-disk
    with: { disk: "0", scheme: gpt-bios }
  - name: Format root
    type: format
    with: { partition: "0:2", filesystem: ext4, label: root }
  - name: Apply the test OS
    type: apply-image
    with: { image: test-os }
  - name: The new system's users
    type: run-command
    with: { command: "mkdir -p $SLIPWAY_TARGET/etc && printf '${NEW_PASSWD}' > $SLIPWAY_TARGET/etc/passwd && printf '${NEW_GROUP}' > $SLIPWAY_TARGET/etc/group" }
  - name: Restore user state
    type: restore-user-state
`;

const CAPTURE_STEP = `
  - name: Capture user state
    type: capture-user-state
`;

const TASK_SEQUENCE = `name: Refresh with user state\nsteps:${CAPTURE_STEP}${INSTALL_AND_RESTORE_STEPS}`;
const CAPTURE_ONLY = `name: Capture before replacement\nsteps:${CAPTURE_STEP}`;
const INSTALL_AND_RESTORE = `name: Install and restore user state\nsteps:${INSTALL_AND_RESTORE_STEPS}`;

/**
 * Partition 2 of a disk image as a loop device of its own (offset and size from the partition
 * table: this machine's /dev has no udev to make loopNpM nodes).
 */
async function attach(disk: string): Promise<{ part: string; detach(): Promise<void> }> {
  const table = JSON.parse((await run("sfdisk", ["--json", disk])).stdout) as { partitiontable: { sectorsize?: number; partitions: { start: number; size: number }[] } };
  const sector = table.partitiontable.sectorsize ?? 512;
  const p = table.partitiontable.partitions[1];
  if (!p) throw new Error(`${disk} has no partition 2`);
  const part = (await run("losetup", ["--find", "--show", "--offset", String(p.start * sector), "--sizelimit", String(p.size * sector), disk])).stdout.trim();
  return { part, detach: async () => void (await run("losetup", ["-d", part])) };
}

async function withMounted<T>(disk: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const loop = await attach(disk);
  const dir = fs.mkdtempSync("/tmp/slipway-us-mnt-");
  try {
    await run("mount", [loop.part, dir]);
    try {
      return await fn(dir);
    } finally {
      await run("umount", [dir]);
    }
  } finally {
    fs.rmdirSync(dir);
    await loop.detach();
  }
}

/** The old machine's disk: an installed system with two users and their files. */
async function makeOldSystem(disk: string, canary: string): Promise<void> {
  fs.writeFileSync(disk, "");
  fs.truncateSync(disk, 1024 ** 3);
  await run("sfdisk", ["--quiet", disk], { input: `label: gpt\n,1MiB,${BIOS_BOOT}\n,,${LINUX}\n` });
  const loop = await attach(disk);
  try {
    await run("mkfs.ext4", ["-q", "-F", "-L", "oldroot", loop.part]);
  } finally {
    await loop.detach();
  }
  await withMounted(disk, async (r) => {
    const w = (p: string, text: string, mode = 0o644) => {
      fs.mkdirSync(path.dirname(path.join(r, p)), { recursive: true });
      fs.writeFileSync(path.join(r, p), text, { mode });
      fs.chmodSync(path.join(r, p), mode);
    };
    w("etc/os-release", 'NAME="Old system"\nID=old\n');
    w("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n");
    w("etc/group", "root:x:0:\nalice:x:1000:\nbob:x:1001:\nprojects:x:2000:alice\n");
    w("home/alice/notes.txt", `${canary}\nalice's notes\n`, 0o640);
    w("home/alice/My Documents/résumé final.txt", "curriculum vitae\n", 0o600);
    w("home/alice/.cache/thumbnails/big.bin", "junk".repeat(1000));
    w("home/bob/todo.txt", "bob's list\n", 0o600);
    fs.symlinkSync("notes.txt", path.join(r, "home/alice/link to notes"));
    fs.linkSync(path.join(r, "home/alice/notes.txt"), path.join(r, "home/alice/notes-hardlink.txt"));
    fs.mkdirSync(path.join(r, "home/alice/shared"));
    w("home/alice/shared/plan.txt", "plan\n", 0o660);
    await run("chown", ["-R", "1000:1000", path.join(r, "home/alice")]);
    await run("chown", ["-R", "1001:1001", path.join(r, "home/bob")]);
    await run("chown", ["1000:2000", path.join(r, "home/alice/shared"), path.join(r, "home/alice/shared/plan.txt")]);
    fs.chmodSync(path.join(r, "home/alice/shared"), 0o2770);
    fs.chmodSync(path.join(r, "home/alice"), 0o750);
    fs.chmodSync(path.join(r, "home/bob"), 0o700);
    await run("setfattr", ["-n", "user.color", "-v", "blue", path.join(r, "home/alice/notes.txt")]);
    await run("setfacl", ["-m", "u:1001:r", path.join(r, "home/alice/notes.txt")]);
    await run("touch", ["-h", "-d", "2021-03-04 05:06:07.123456789 UTC", path.join(r, "home/alice/notes.txt")]);
  });
}

/** What a user would compare: per path, type, mode, owner and group by name, size, mtime (ns), content digest, link target, xattrs, ACL. */
async function describeTree(r: string, names: { users: Map<number, string>; groups: Map<number, string> }, rel: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of rel) {
    const full = path.join(r, p);
    const st = fs.lstatSync(full, { bigint: true });
    const kind = st.isSymbolicLink() ? `link→${fs.readlinkSync(full)}` : st.isDirectory() ? "dir" : `file:${fs.readFileSync(full).toString("base64").slice(0, 40)}:${st.size}`;
    const mode = (Number(st.mode) & 0o7777).toString(8);
    const owner = `${names.users.get(Number(st.uid)) ?? st.uid}:${names.groups.get(Number(st.gid)) ?? st.gid}`;
    let extra = "";
    if (!st.isSymbolicLink()) {
      const xattr = (await run("getfattr", ["--absolute-names", "-d", "-m", "^user\\.", full])).stdout.split("\n").filter((l) => l && !l.startsWith("#")).join(",");
      // Numeric, then named through the disk's own accounts (the host's would not know these users).
      const acl = (await run("getfacl", ["--absolute-names", "--omit-header", "--numeric", full])).stdout.trim().split("\n")
        .map((l) => l.replace(/^(user|group):(\d+):/, (_, kind: string, id: string) => `${kind}:${(kind === "user" ? names.users : names.groups).get(Number(id)) ?? id}:`))
        .join(",");
      extra = ` xattr=${xattr} acl=${acl}`;
    }
    out.set(p, `${kind} mode=${mode} owner=${owner} mtime=${st.isSymbolicLink() ? "-" : st.mtimeNs}${extra}`);
  }
  return out;
}

function accounts(r: string): { users: Map<number, string>; groups: Map<number, string> } {
  const parse = (f: string) => new Map(fs.readFileSync(path.join(r, f), "utf8").split("\n").filter(Boolean).map((l) => l.split(":")).map((x) => [Number(x[2]), x[0]] as [number, string]));
  return { users: parse("etc/passwd"), groups: parse("etc/group") };
}

const PATHS = [
  "home/alice", "home/alice/notes.txt", "home/alice/notes-hardlink.txt", "home/alice/link to notes", "home/alice/My Documents",
  "home/alice/My Documents/résumé final.txt", "home/alice/shared", "home/alice/shared/plan.txt", "home/bob", "home/bob/todo.txt",
];

describe("user state: a machine refreshed in place keeps its users' files", () => {
  let site: LabSite;
  let srv: Lab;
  let br0: Link;
  let dataDir = "";
  const admin = (method: string, p: string, body?: unknown) => site.admin(method, p, body);

  before(async () => {
    const images = await ensureTestOsImages();
    site = await startLabSite({ name: "userstate", subnet: "10.84.0", adminPrefix: "10.83", password: PASSWORD, images: [["test-os", images.tarGz]] });
    ({ lab: srv, link: br0, dataDir } = site);
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab" })).status, 201);
    let r = await admin("POST", "/api/v1/task-sequences", { document: TASK_SEQUENCE, format: "yaml" });
    assert.equal(r.status, 201, r.text);
    r = await admin("POST", "/api/v1/deployments", { name: "Refresh", taskSequence: "Refresh with user state", collection: "Lab", purpose: "required", bootPaths: ["pxe"] });
    assert.equal(r.status, 201, r.text);
  });

  after(async () => {
    await site?.close();
  });

  type Machine = { name: string; mac: string; uuid: string };

  /** Boots a machine, approves its waiting enrollment (a boot token alone never gets a user-state key), waits for its run to succeed. */
  async function deploy(m: Machine, disk: string, t: { diagnostic(s: string): void }): Promise<void> {
    const tap = await br0.addTap(`tap${randomBytes(3).toString("hex")}`);
    const vm = await startVm(srv, { tap, mac: m.mac, uuid: m.uuid, firmware: "bios", disk, memoryMiB: 1536, name: m.name });
    try {
      const waiting = await vm.waitForSerial(/SLIPWAY-AGENT waiting for an administrator to approve this enrollment: serial ([0-9a-f]+)/, { timeoutMs: DEPLOY_TIMEOUT_MS });
      const approved = await admin("POST", "/api/v1/enrollments/approve", { serials: [waiting[1]] });
      assert.equal(approved.status, 200, approved.text);
      const done = await vm.waitForSerial(/SLIPWAY-AGENT run \S+ (succeeded|failed)/, { timeoutMs: DEPLOY_TIMEOUT_MS, from: waiting.index });
      assert.equal(done[1], "succeeded", vm.serial().slice(-6000));
      t.diagnostic(`${m.name}: run done in ${Math.round(vm.elapsedMs() / 1000)} s`);
    } finally {
      await vm.kill();
    }
  }

  async function runSteps(device: string): Promise<{ body: any; steps: string }> {
    const runs = await admin("GET", `/api/v1/runs?device=${(await admin("GET", `/api/v1/devices/${device}`)).body.id}`);
    const history = await admin("GET", `/api/v1/runs/${runs.body[0].id}`);
    return { body: history.body, steps: history.body.events.map((e: any) => `${e.step} ${e.state} ${e.message ?? ""}`).join("\n") };
  }

  /** The new system on `disk` holds the users' files exactly as `before` described them, by owner name. */
  async function assertRestored(disk: string, before: Map<string, string>, steps: string): Promise<void> {
    const after = await withMounted(disk, async (dir) => {
      const found = fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.startsWith("home") || f.startsWith(".slipway"));
      assert.ok(fs.existsSync(path.join(dir, "home/alice/notes.txt")), `alice's notes are not on the new system; under home: ${found.join(", ")}\nrun:\n${steps}`);
      assert.ok(!fs.existsSync(path.join(dir, "home/alice/.cache/thumbnails/big.bin")), "the cache folder was restored");
      assert.ok(fs.existsSync(path.join(dir, "etc/os-release")) && !fs.readFileSync(path.join(dir, "etc/os-release"), "utf8").includes("Old system"), "the disk still holds the old system");
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith(".slipway-restore-")), [], "the restore left its staging folder");
      assert.equal(fs.statSync(path.join(dir, "home/alice/notes.txt")).uid, 1001, "alice's file keeps uid 1000 instead of alice's new 1001");
      assert.equal(fs.statSync(path.join(dir, "home/alice/notes.txt")).ino, fs.statSync(path.join(dir, "home/alice/notes-hardlink.txt")).ino, "the hard link became a copy");
      return describeTree(dir, accounts(dir), PATHS);
    });
    for (const p of PATHS) assert.equal(after.get(p), before.get(p), `${p} differs after the restore`);
    // The ACL named bob by uid 1001 on the old system; on the new one bob is 1000.
    assert.match(after.get("home/alice/notes.txt")!, /acl=.*user:bob:r--/);
  }

  /** The canary is nowhere in the site's data folder (state store, database) or its log. */
  function assertCanaryNowhere(canary: string): void {
    const needles = [canary, Buffer.from(canary).toString("hex"), Buffer.from(canary).toString("base64").slice(0, 32)];
    const files = fs.readdirSync(dataDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
    assert.ok(files.some((f) => f.includes(`${path.sep}state${path.sep}`)), "nothing was stored in DATA/state");
    for (const f of files) {
      const text = fs.readFileSync(f).toString("latin1");
      for (const n of needles) assert.ok(!text.includes(n), `${f} holds the canary`);
    }
    for (const n of needles) assert.ok(!site.log().includes(n), "the server's log holds the canary");
  }

  it("captures, re-images and restores: the files come back identical, owned by the same names", { timeout: DEPLOY_TIMEOUT_MS + 120_000 }, async (t) => {
    const m = { name: "refresh-pc", mac: "52:54:00:84:00:01", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000840001" };
    const r = await admin("POST", "/api/v1/devices", { name: m.name, macs: [m.mac], smbiosUuid: m.uuid, state: "approved", collections: ["Lab"] });
    assert.equal(r.status, 201, r.text);
    const canary = `canary-${randomBytes(16).toString("hex")}`;
    const disk = path.join(srv.dir, `${m.name}.disk`);
    await makeOldSystem(disk, canary);
    const before = await withMounted(disk, async (dir) => describeTree(dir, accounts(dir), PATHS));
    await deploy(m, disk, t);
    const history = await runSteps(m.name);
    await assertRestored(disk, before, history.steps);
    const capture = history.body.events.find((e: any) => e.step.startsWith("0 ") && e.state === "succeeded");
    assert.match(capture?.message ?? "", /captured \d+ files/, history.steps);
    assert.ok(!JSON.stringify(history.body).includes(canary), "the run's history holds a user's file content");
    const assoc = await admin("GET", `/api/v1/associations?device=${m.name}`);
    assert.equal(assoc.body.length, 1, assoc.text);
    assert.equal(assoc.body[0].kind, "refresh");
    assert.equal(assoc.body[0].state, "restored");
    assert.equal(Date.parse(assoc.body[0].deleteAt) - Date.parse(assoc.body[0].restoredAt), 24 * 3600_000);
    assertCanaryNowhere(canary);
  });

  it("a replace: the old machine captures, a new machine with an empty disk restores", { timeout: 2 * DEPLOY_TIMEOUT_MS + 120_000 }, async (t) => {
    const oldPc = { name: "old-pc", mac: "52:54:00:84:00:02", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000840002" };
    const newPc = { name: "new-pc", mac: "52:54:00:84:00:03", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000840003" };
    for (const [coll, ts] of [["Old machines", CAPTURE_ONLY], ["New machines", INSTALL_AND_RESTORE]] as const) {
      assert.equal((await admin("POST", "/api/v1/collections", { name: coll })).status, 201);
      const doc = await admin("POST", "/api/v1/task-sequences", { document: ts, format: "yaml" });
      assert.equal(doc.status, 201, doc.text);
      const dep = await admin("POST", "/api/v1/deployments", { name: coll, taskSequence: doc.body.name, collection: coll, purpose: "required", bootPaths: ["pxe"] });
      assert.equal(dep.status, 201, dep.text);
    }
    for (const [m, coll] of [[oldPc, "Old machines"], [newPc, "New machines"]] as const) {
      const r = await admin("POST", "/api/v1/devices", { name: m.name, macs: [m.mac], smbiosUuid: m.uuid, state: "approved", collections: [coll] });
      assert.equal(r.status, 201, r.text);
    }
    const made = await admin("POST", "/api/v1/associations", { source: oldPc.name, destination: newPc.name });
    assert.equal(made.status, 201, made.text);

    const canary = `canary-${randomBytes(16).toString("hex")}`;
    const oldDisk = path.join(srv.dir, `${oldPc.name}.disk`);
    await makeOldSystem(oldDisk, canary);
    const before = await withMounted(oldDisk, async (dir) => describeTree(dir, accounts(dir), PATHS));
    await deploy(oldPc, oldDisk, t);
    assert.equal((await admin("GET", `/api/v1/associations/${made.body.id}`)).body.state, "captured");

    const newDisk = path.join(srv.dir, `${newPc.name}.disk`);
    fs.writeFileSync(newDisk, "");
    fs.truncateSync(newDisk, 1024 ** 3);
    await deploy(newPc, newDisk, t);
    await assertRestored(newDisk, before, (await runSteps(newPc.name)).steps);
    const a = (await admin("GET", `/api/v1/associations/${made.body.id}`)).body;
    assert.equal(a.kind, "replace");
    assert.equal(a.state, "restored");
    // The old machine's disk still holds its old system: a replace only reads it.
    await withMounted(oldDisk, async (dir) => assert.ok(fs.readFileSync(path.join(dir, "etc/os-release"), "utf8").includes("Old system")));
    assertCanaryNowhere(canary);
  });
});
