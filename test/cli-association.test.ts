/**
 * `slipway association` and `slipway privacy` as administrators run them: create, list, show,
 * retention, delete; and `recover`, which only a Recovery Agent may run, with a reason, into an
 * empty folder — the files of a real capture (tar → zstd → sealed chunks over mutual TLS) come
 * back, owned by the caller, without set-id bits; a Full Administrator is refused.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, tempDir, adminWithRoles, type TestSite } from "./support/site.ts";
import { newMachine, enrollApproved, bytesCall } from "./support/device.ts";
import { sealStream } from "../src/security/state-cipher.ts";
import { zstdCompressSync } from "node:zlib";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

async function* once(b: Buffer) {
  yield b;
}

describe("slipway association and privacy", () => {
  let t: TestSite;
  let dir: string;
  let agentToken = "";
  const cli = (args: string[], token = t.adminToken): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
      SLIPWAY_CONFIG: path.join(dir, "profile.json"), SLIPWAY_TOKEN: token };
    execFile(bin, args, { env, cwd: dir, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
  });
  const admin = (method: string, p: string, body?: unknown) => t.request(method, p, { token: t.adminToken, body });

  before(async () => {
    t = await startTestSite();
    dir = tempDir("slipway-cli-assoc-");
    fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
    agentToken = await adminWithRoles(t, "cli.recovery", ["recovery-agent"]);
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("creates, lists, shows, changes and deletes associations; refuses a delete-after of 0", async () => {
    for (const name of ["cli-old", "cli-new"]) assert.equal((await admin("POST", "/api/v1/devices", { name, state: "approved" })).status, 201);
    const zero = await cli(["association", "create", "--source", "cli-old", "--destination", "cli-new", "--delete-after", "0"]);
    assert.notEqual(zero.code, 0);
    assert.match(zero.stderr, /--delete-after must be a whole number from 1/);
    const made = await cli(["association", "create", "--source", "cli-old", "--destination", "cli-new", "--json"]);
    assert.equal(made.code, 0, made.stderr);
    const id = JSON.parse(made.stdout).id as string;
    const list = await cli(["association", "list", "--device", "cli-new"]);
    assert.match(list.stdout, new RegExp(`${id}\\s+replace\\s+cli-old\\s+cli-new\\s+pending`));
    const ret = await cli(["association", "retention", id, "--delete-after", "48"]);
    assert.equal(ret.code, 0, ret.stderr);
    assert.match((await cli(["association", "show", id])).stdout, /Delete after restore:\s+48 h/);
    const del = await cli(["association", "delete", id]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /its key is destroyed and its stored state removed/);
    assert.match((await cli(["association", "show", id])).stdout, /State:\s+gone/);
  });

  it("recover: a Recovery Agent gets the captured files back with a reason; a Full Administrator is refused", async () => {
    // The user's files, as the agent's capture makes them (tar, zstd), sealed and stored over mutual TLS.
    const src = path.join(dir, "src");
    fs.mkdirSync(path.join(src, "home/alice"), { recursive: true });
    fs.writeFileSync(path.join(src, "home/alice/letter.txt"), "Dear Bob\n");
    fs.writeFileSync(path.join(src, "home/alice/tool"), "#!/bin/sh\n");
    fs.chmodSync(path.join(src, "home/alice/tool"), 0o4755);
    const tar = execFileSync("tar", ["-c", "-C", src, "home"]);
    const ids = { macs: ["52:54:00:7c:00:01"], smbiosUuid: "00000000-0000-4000-8000-0000007c0001" };
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Recover lab" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/devices", { name: "cli-pc", ...ids, state: "approved", collections: ["Recover lab"] })).status, 201);
    const doc = { name: "Cli keep", steps: [{ name: "Capture", type: "capture-user-state" }, { name: "Restore", type: "restore-user-state" }] };
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Cli keep", taskSequence: "Cli keep", collection: "Recover lab", purpose: "available", bootPaths: ["media"] });
    const m = await newMachine(t, ids);
    try {
      assert.equal((await enrollApproved(t, m)).status, 201);
      const run = await m.call("POST", "/mp/v1/runs", { deployment: dep.body.id, bootPath: "media" });
      assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "0", state: "started" })).status, 201);
      const g = await m.call("POST", `/mp/v1/runs/${run.body.id}/user-state`, { step: "0", action: "capture" });
      assert.equal(g.status, 200, g.text);
      for await (const c of sealStream(once(zstdCompressSync(tar)), { dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: g.body.association, streamId: g.body.streamId })) {
        assert.equal((await bytesCall(t, m, "PUT", `/mp/v1/user-state/${g.body.association}/chunks/${c.index}`, c.bytes)).status, 201);
      }
      assert.equal((await m.call("POST", `/mp/v1/user-state/${g.body.association}/captured`, { files: 2, stateBytes: tar.length })).status, 200);
      const id = g.body.association as string;

      const out = path.join(dir, "recovered");
      const full = await cli(["association", "recover", id, "--output", out, "--reason", "I am curious about this"]);
      assert.notEqual(full.code, 0);
      assert.match(full.stderr, /recovery\.read/);
      assert.ok(!fs.existsSync(out), "a refused recover made the folder");
      const noReason = await cli(["association", "recover", id, "--output", out], agentToken);
      assert.notEqual(noReason.code, 0);
      assert.match(noReason.stderr, /--reason/);
      const ok = await cli(["association", "recover", id, "--output", out, "--reason", "Ticket 4711: Alice lost her letter"], agentToken);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(fs.readFileSync(path.join(out, "home/alice/letter.txt"), "utf8"), "Dear Bob\n");
      assert.equal(fs.statSync(path.join(out, "home/alice/tool")).mode & 0o6000, 0, "a set-id bit survived the recovery");
      assert.equal(fs.statSync(out).mode & 0o777, 0o700);
      const again = await cli(["association", "recover", id, "--output", out, "--reason", "Ticket 4711: Alice lost her letter"], agentToken);
      assert.match(again.stderr, /is not empty/);
      const audit = await t.site.audit.list({ action: "association.recover", limit: 1000 });
      assert.ok(audit.some((e) => e.actor === "admin:cli.recovery" && (e.details as any).reason === "Ticket 4711: Alice lost her letter"), JSON.stringify(audit));

      const report = await cli(["privacy", "report", "cli-pc"]);
      assert.equal(report.code, 0, report.stderr);
      assert.match(report.stdout, new RegExp(`${id} refresh captured`));
      assert.match(report.stdout, /Run logs kept:\s+90 days/);
    } finally {
      m.close();
    }
  });
});
