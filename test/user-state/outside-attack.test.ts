/**
 * Regression tests for holes an outside attacker (authorized red team, issue #14) found in the
 * user-state feature, each as the attacker observes it: a real site, real HTTPS and mutual TLS,
 * real state store and database files, the real CLI and GNU tar. Each test fails on the code the
 * attack was made against and passes once the hole is closed.
 *
 *  1. A Security Administrator (no recovery.read) takes over a device's identity — revoke its
 *     certificate, approve it again, enroll an impostor with a media credential and the device's
 *     identifiers — and the impostor's "restore" step receives the captured state's data key.
 *  2. Crypto-shred leaves the sealed data key in the data folder (SQLite's WAL): with the master
 *     key beside it, a copy of the folder opens a deleted association's key.
 *  3. Concurrent chunk uploads overshoot the association's quota (checked outside the store's
 *     per-association lock).
 *  4. A recovery "reason" of ten invisible or NUL characters is accepted.
 *  5. A Recovery Agent's refused chunk read of a destroyed association is not audited.
 *  6. An association past its expiry still releases its key until the sweep happens to run.
 *  7. `slipway association recover`, run as root, writes setuid files from the machine's archive.
 *  8. A management-point association id that is no id at all is audited verbatim instead of refused.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { execFileSync, spawn } from "node:child_process";
import { startTestSite, adminWithRoles, tempDir, type TestSite } from "../support/site.ts";
import { newMachine, enrollApproved, type TestMachine, bytesCall } from "../support/device.ts";
import { sealStream } from "../../src/security/state-cipher.ts";
import { stores } from "../../src/storage/stores.ts";

async function* once(b: Buffer) {
  yield b;
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

/** A chunk whose header is well formed (the store checks only the header; it cannot check the tag). */
function craftedChunk(streamId: string, index: number, plaintextBytes: number, final: boolean): Buffer {
  const header = Buffer.alloc(30);
  header.write("SWUS", 0, "latin1");
  header[4] = 1;
  header[5] = final ? 1 : 0;
  Buffer.from(streamId, "hex").copy(header, 6);
  header.writeUInt32BE(index, 22);
  header.writeUInt32BE(plaintextBytes, 26);
  return Buffer.concat([header, crypto.randomBytes(plaintextBytes + 16)]);
}

describe("user state: holes found by an outside attacker", () => {
  let t: TestSite;
  let skewMs = 0;
  let depId = "";
  const machines: TestMachine[] = [];
  const admin = (method: string, p: string, body?: unknown) => t.request(method, p, { token: t.adminToken, body });

  async function device(name: string, n: number): Promise<{ m: TestMachine; id: string; serial: string; ids: { macs: string[]; smbiosUuid: string } }> {
    const ids = { macs: [`52:54:00:7a:00:${n.toString(16).padStart(2, "0")}`], smbiosUuid: `00000000-0000-4000-8000-0000007a00${n.toString(16).padStart(2, "0")}` };
    const d = await admin("POST", "/api/v1/devices", { name, ...ids, state: "approved", collections: ["Attack lab"] });
    assert.equal(d.status, 201, d.text);
    const m = await newMachine(t, ids);
    machines.push(m);
    const e = await enrollApproved(t, m);
    assert.equal(e.status, 201, e.text);
    return { m, id: d.body.id, serial: e.body.serial, ids };
  }

  /** The newest audit entry's seq. */
  async function auditHead(): Promise<number> {
    let seq = 0;
    for (;;) {
      const page = await t.site.audit.list({ afterSeq: seq, limit: 1000 });
      if (page.length === 0) return seq;
      seq = page.at(-1)!.seq;
    }
  }

  async function runAt(m: TestMachine, step: string): Promise<string> {
    const run = await m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
    assert.ok(run.status === 201 || run.status === 200, run.text);
    const ev = await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step, state: "started" });
    assert.equal(ev.status, 201, ev.text);
    return run.body.id;
  }

  /** Captures `state` as machine `m` (its refresh association is made by the grant); returns the association id. */
  async function capture(m: TestMachine, state: Buffer): Promise<string> {
    const runId = await runAt(m, "0");
    const g = await m.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: "0", action: "capture" });
    assert.equal(g.status, 200, g.text);
    const association = g.body.association as string;
    for await (const c of sealStream(once(state), { dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: association, streamId: g.body.streamId })) {
      const r = await bytesCall(t, m, "PUT", `/mp/v1/user-state/${association}/chunks/${c.index}`, c.bytes);
      assert.equal(r.status, 201, r.body.toString());
    }
    const done = await m.call("POST", `/mp/v1/user-state/${association}/captured`, { files: 1, stateBytes: state.length });
    assert.equal(done.status, 200, done.text);
    return association;
  }

  before(async () => {
    t = await startTestSite({ now: () => new Date(Date.now() + skewMs) });
    const doc = { name: "Refresh", steps: [
      { name: "Capture", type: "capture-user-state" },
      { name: "Restore", type: "restore-user-state" },
    ] };
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Attack lab" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Refresh", taskSequence: "Refresh", collection: "Attack lab", purpose: "available", bootPaths: ["pxe", "media"] });
    assert.equal(dep.status, 201, dep.text);
    depId = dep.body.id;
  });
  after(async () => {
    for (const m of machines) m.close();
    await t?.close();
  });

  it("a Security Administrator cannot get a device's captured user state by taking over its identity", async () => {
    const victim = await device("victim-pc", 1);
    const canary = `canary-${crypto.randomBytes(8).toString("hex")}`;
    const association = await capture(victim.m, Buffer.from(`${canary} the user's files`));
    const sa = await adminWithRoles(t, "attack-sa", ["security-administrator"]);
    const asSa = (method: string, p: string, body?: unknown) => t.request(method, p, { token: sa, body });
    // Every step below is a Security Administrator's own power; none of them is recovery.read.
    assert.equal((await asSa("POST", `/api/v1/associations/${association}/recover`, { reason: "ticket 4711: the user lost a file" })).status, 403);
    const revoked = await asSa("POST", `/api/v1/certificates/${victim.serial}/revoke`, { reason: "keyCompromise" });
    assert.equal(revoked.status, 200, revoked.text);
    const approved = await asSa("POST", `/api/v1/devices/${victim.id}/approve`);
    assert.equal(approved.status, 200, approved.text);
    const credential = await asSa("POST", "/api/v1/enrollment-credentials", { name: "attack-media", uses: 1, expiresInHours: 1 });
    assert.equal(credential.status, 201, credential.text);
    const impostor = await newMachine(t, victim.ids);
    machines.push(impostor);
    const enrolled = await impostor.enroll({ kind: "media", secret: credential.body.secret });
    assert.equal(enrolled.status, 201, enrolled.text);
    const runId = await runAt(impostor, "1");
    const g = await impostor.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: "1", action: "restore" });
    assert.equal(g.body?.dataKey, undefined, `a machine enrolled by a Security Administrator in the victim's name got association ${association}'s data key (status ${g.status})`);
    assert.notEqual(g.status, 200, g.text);
    const chunk = await bytesCall(t, impostor, "GET", `/mp/v1/user-state/${association}/chunks/0`);
    assert.notEqual(chunk.status, 200, "the impostor read the victim's stored chunks");
  });

  it("deleting an association leaves no copy of its sealed data key in the data folder", async (ctx) => {
    if (t.databaseUrl) return ctx.skip("the sealed key lives in PostgreSQL's files, not in the data folder");
    const owner = await device("shred-pc", 2);
    const made = await admin("POST", "/api/v1/associations", { inPlace: owner.id });
    assert.equal(made.status, 201, made.text);
    const id = made.body.id as string;
    const sealed = (await stores(t.site.db).associations.byId(id))!.sealedKey!;
    const wrapped = (JSON.parse(sealed) as { wrappedKey: string }).wrappedKey;
    assert.equal(t.site.keys.keyring.open(JSON.parse(sealed), `association:${id}`).length > 0, true);
    const del = await admin("DELETE", `/api/v1/associations/${id}`);
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.keyDestroyed, true);
    // An attacker with a copy of the data folder (a backup, a disk image) holds the master key too.
    const holding = filesUnder(t.dataDir).filter((f) => fs.readFileSync(f).toString("latin1").includes(wrapped));
    assert.deepEqual(holding.map((f) => path.relative(t.dataDir, f)), [], "the destroyed key's sealed copy is still on disk");
  });

  it("concurrent chunk uploads cannot store more than the association's quota", async () => {
    const owner = await device("quota-pc", 3);
    const quota = 1024 * 1024;
    const made = await admin("POST", "/api/v1/associations", { inPlace: owner.id, quotaBytes: quota });
    assert.equal(made.status, 201, made.text);
    const runId = await runAt(owner.m, "0");
    const g = await owner.m.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: "0", action: "capture" });
    assert.equal(g.status, 200, g.text);
    const size = 300 * 1024;
    const puts = await Promise.all(Array.from({ length: 8 }, (_, i) =>
      bytesCall(t, owner.m, "PUT", `/mp/v1/user-state/${g.body.association}/chunks/${i}`, craftedChunk(g.body.streamId, i, size, false))));
    const accepted = puts.filter((r) => r.status === 201).reduce((sum, r) => sum + (r.json.stored as number), 0);
    const refused = puts.filter((r) => r.status === 507).length;
    assert.ok(accepted <= quota, `${accepted} bytes were acknowledged against a quota of ${quota} (${refused} of ${puts.length} puts refused)`);
    const onDisk = filesUnder(path.join(t.dataDir, "state", g.body.association)).filter((f) => f.endsWith(".chunk")).reduce((s, f) => s + fs.statSync(f).size, 0);
    assert.ok(onDisk <= quota, `${onDisk} bytes of chunks are on disk for a quota of ${quota}`);
  });

  describe("recovery", () => {
    let association = "";
    let agent = "";
    before(async () => {
      const owner = await device("recovery-pc", 4);
      association = await capture(owner.m, Buffer.from("recoverable state"));
      agent = await adminWithRoles(t, "attack-ra", ["recovery-agent"]);
    });

    it("refuses a reason made only of invisible or control characters", async () => {
      for (const reason of ["\u200b".repeat(10), "\u0000".repeat(10), "\u200b\u200c\u200d\u2060\ufeff\u200b\u200c\u200d\u2060\u200b"]) {
        const r = await t.request("POST", `/api/v1/associations/${association}/recover`, { token: agent, body: { reason } });
        assert.equal(r.status, 400, `reason ${JSON.stringify(reason)} released the key: ${r.status} ${r.text.slice(0, 120)}`);
        assert.equal(r.body.dataKey, undefined);
      }
    });

    it("audits a Recovery Agent's refused chunk read of a destroyed association", async () => {
      assert.equal((await admin("DELETE", `/api/v1/associations/${association}`)).status, 200);
      const lastSeq = await auditHead();
      const r = await t.request("GET", `/api/v1/associations/${association}/chunks/0`, { token: agent });
      assert.equal(r.status, 409, r.text);
      const after = await t.site.audit.list({ afterSeq: lastSeq, limit: 1000 });
      const denied = after.filter((e) => e.outcome === "denied" && e.actor === "admin:attack-ra" && JSON.stringify(e).includes(association));
      assert.ok(denied.length >= 1, `the refused read left no audit entry (entries since: ${JSON.stringify(after.map((e) => e.action))})`);
    });
  });

  it("recover (the CLI, run as root) writes no setuid or setgid file from the machine's archive", async () => {
    assert.equal(process.getuid?.(), 0, "this attack needs root, as scripts/test.sh runs it: only root extracts set-id bits");
    const owner = await device("setuid-pc", 5);
    const src = tempDir("slipway-setuid-src-");
    const out = path.join(tempDir("slipway-setuid-out-"), "recovered");
    const caFile = path.join(os.tmpdir(), `slipway-ca-${crypto.randomBytes(4).toString("hex")}.pem`);
    try {
      fs.mkdirSync(path.join(src, "home/alice"), { recursive: true });
      fs.copyFileSync("/bin/true", path.join(src, "home/alice/tool"));
      fs.chmodSync(path.join(src, "home/alice/tool"), 0o6755);
      const archive = execFileSync("bash", ["-c", `tar -C '${src}' -cf - home | zstd -q -c`], { maxBuffer: 64 * 1024 * 1024 });
      const association = await capture(owner.m, archive);
      const agent = await adminWithRoles(t, "attack-ra-cli", ["recovery-agent"]);
      fs.writeFileSync(caFile, t.ca);
      // Not spawnSync: the site answers from this process.
      const child = spawn(path.resolve("bin/slipway"), ["association", "recover", association, "--output", out, "--reason", "ticket 4711: the user lost a file"], {
        env: { ...process.env, SLIPWAY_SERVER: t.url, SLIPWAY_CA: caFile, SLIPWAY_TOKEN: agent, SLIPWAY_CONFIG: path.join(src, "no-profile.json") }, stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      const status = await new Promise<number | null>((resolve) => child.on("close", resolve));
      const cli = { status, stderr };
      assert.equal(cli.status, 0, `recover failed: ${cli.stderr}`);
      const mode = fs.statSync(path.join(out, "home/alice/tool")).mode & 0o7777;
      assert.equal(mode & 0o6000, 0, `the recovered file is mode ${mode.toString(8)}: setuid/setgid ${fs.statSync(path.join(out, "home/alice/tool")).uid === 0 ? "root" : ""}`);
    } finally {
      fs.rmSync(src, { recursive: true, force: true });
      fs.rmSync(path.dirname(out), { recursive: true, force: true });
      fs.rmSync(caFile, { force: true });
    }
  });

  it("refuses a management-point association id that is not an id, without writing it into the audit log", async () => {
    const owner = await device("junk-pc", 6);
    const junk = `x${"\n".repeat(3)}${"a".repeat(400)}`;
    const lastSeq = await auditHead();
    const r = await bytesCall(t, owner.m, "GET", `/mp/v1/user-state/${encodeURIComponent(junk)}/chunks/0`);
    assert.equal(r.status, 400, r.body.toString());
    const after = await t.site.audit.list({ afterSeq: lastSeq, limit: 1000 });
    assert.ok(!JSON.stringify(after).includes("a".repeat(400)), "the junk id was written into the audit log");
  });

  // Last: moves the site's clock forward by 31 days (device certificates and sessions expire).
  it("an association past its expiry releases no key, even before the retention sweep runs", async () => {
    const owner = await device("expiry-pc", 7);
    const association = await capture(owner.m, Buffer.from("state nobody restored"));
    const agent = await adminWithRoles(t, "attack-ra-expiry", ["recovery-agent"]);
    const token = await t.request("POST", "/api/v1/me/tokens", { token: agent, body: { name: "expiry", role: "recovery-agent", expiresInDays: 365 } });
    assert.equal(token.status, 201, token.text);
    const shown = await admin("GET", `/api/v1/associations/${association}`);
    skewMs += Date.parse(shown.body.expiresAt) - t.site.now().getTime() + 3600_000;
    assert.ok(t.site.now().getTime() > Date.parse(shown.body.expiresAt));
    const r = await t.request("POST", `/api/v1/associations/${association}/recover`, { token: token.body.token, body: { reason: "ticket 4711: the user lost a file" } });
    assert.equal(r.body?.dataKey, undefined, `association ${association} expired at ${shown.body.expiresAt} but its key was released (status ${r.status})`);
  });
});
