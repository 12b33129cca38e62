/**
 * `slipway dp` as an administrator runs it — register, list, show, assign, unassign, a new
 * secret, remove — and `slipway up --role distribution`'s refusals of a wrong command line.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { adminWithRoles, startTestSite, tempDir, type TestSite } from "./support/site.ts";
import { addImage } from "../src/site/content-library.ts";
import { ExitCode } from "../src/cli/command.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

describe("slipway dp", () => {
  let t: TestSite;
  let dir: string;
  let digest = "";
  const cli = (args: string[], token?: string): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
      SLIPWAY_CONFIG: path.join(dir, "profile.json"), SLIPWAY_TOKEN: token ?? t.adminToken, SLIPWAY_DATA: path.join(dir, "no-data") };
    const child = execFile(bin, args, { env, cwd: dir, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
    child.stdin!.end();
  });
  before(async () => {
    t = await startTestSite();
    dir = tempDir("slipway-cli-dp-");
    fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
    const file = path.join(dir, "img.raw");
    fs.writeFileSync(file, randomBytes(100_000));
    digest = (await addImage(t.site, { file, name: "cli-image", actor: "test" })).record.digest;
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("registers a distribution point, printing its secret once or writing it to a private file", async () => {
    const add = await cli(["dp", "add", "branch-1", "--url", "https://dp1.example:8445", "--alias", "10.1.2.3"]);
    assert.equal(add.code, 0, add.stderr);
    const secret = /Enrollment secret \(shown once\):\s+(swd_\S+)/.exec(add.stdout)?.[1];
    assert.ok(secret, add.stdout);
    assert.match(add.stdout, /dp1\.example, 10\.1\.2\.3/);
    const file = path.join(dir, "branch-2.secret");
    const add2 = await cli(["dp", "add", "branch-2", "--url", "https://dp2.example:8445", "--secret-file", file, "--json"]);
    assert.equal(add2.code, 0, add2.stderr);
    assert.equal(JSON.parse(add2.stdout).secret, undefined, "not printed when written to a file");
    assert.match(fs.readFileSync(file, "utf8"), /^swd_\S+\n$/);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal((await cli(["dp", "add", "branch-3", "--url", "https://dp3.example", "--secret-file", file])).code, ExitCode.FAILURE, "never overwrites a file");
    assert.equal((await cli(["dp", "add", "branch-1", "--url", "https://other.example"])).code, ExitCode.CONFLICT);
    assert.equal((await cli(["dp", "add", "branch-4", "--url", "http://dp4.example"])).code, ExitCode.INVALID);
    assert.equal((await cli(["dp", "add", "branch-4"])).code, ExitCode.USAGE);
    const list = await cli(["dp", "list"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /branch-1\s+https:\/\/dp1\.example:8445\s+awaiting enrollment\s+0\/0/);
    assert.ok(!list.stdout.includes(secret!));
  });

  it("assigns and unassigns images by name or digest and shows their state", async () => {
    const assign = await cli(["dp", "assign", "branch-1", "cli-image"]);
    assert.equal(assign.code, 0, assign.stderr);
    assert.match(assign.stdout, new RegExp(`Assigned "cli-image" \\(${digest}\\) to branch-1: pending`));
    assert.equal((await cli(["dp", "assign", "branch-1", digest])).code, 0, "again, by digest: still one assignment");
    const show = await cli(["dp", "show", "branch-1", "--json"]);
    const shown = JSON.parse(show.stdout);
    assert.deepEqual(shown.assignments.map((a: { image: string; state: string }) => `${a.image}:${a.state}`), ["cli-image:pending"]);
    assert.match((await cli(["dp", "show", "branch-1"])).stdout, /cli-image\s+pending/);
    assert.equal((await cli(["dp", "assign", "branch-1", "no-such-image"])).code, ExitCode.NOT_FOUND);
    assert.equal((await cli(["dp", "assign", "no-such-dp", "cli-image"])).code, ExitCode.NOT_FOUND);
    assert.equal((await cli(["dp", "unassign", "branch-1", "cli-image"])).code, 0);
    assert.equal((await cli(["dp", "unassign", "branch-1", "cli-image"])).code, ExitCode.NOT_FOUND);
    assert.equal((await cli(["dp", "assign", "branch-1", "cli-image"])).code, 0);
    assert.equal((await cli(["dp", "unassign", "branch-1", digest])).code, 0, "by digest");
  });

  it("issues a new secret, removes a distribution point, and is the Infrastructure Administrator's", async () => {
    const again = await cli(["dp", "secret", "branch-1"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /swd_\S+/);
    const deployer = await adminWithRoles(t, "dp.deployer", ["deployment-administrator"]);
    assert.equal((await cli(["dp", "list"], deployer)).code, 0, "a Deployment Administrator may look");
    assert.equal((await cli(["dp", "add", "sneaky", "--url", "https://sneaky.example"], deployer)).code, ExitCode.FORBIDDEN);
    assert.equal((await cli(["dp", "secret", "branch-1"], deployer)).code, ExitCode.FORBIDDEN);
    const infra = await adminWithRoles(t, "dp.infra", ["infrastructure-administrator"]);
    const removed = await cli(["dp", "remove", "branch-2"], infra);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal((await cli(["dp", "show", "branch-2"])).code, ExitCode.NOT_FOUND);
    const audit = JSON.parse((await cli(["audit", "list", "--json", "--limit", "200"])).stdout) as { action: string }[];
    for (const action of ["dp.create", "dp.assign", "dp.unassign", "dp.secret", "dp.delete"]) assert.ok(audit.some((e) => e.action === action), action);
  });

  it("up --role distribution refuses an incomplete or mixed command line", async () => {
    const data = path.join(dir, "dp-data");
    const help = await cli(["up", "--role", "distribution", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--enroll-secret-file FILE/);
    assert.equal((await cli(["up", "--role", "mirror"])).code, ExitCode.USAGE);
    const noSite = await cli(["up", "--role", "distribution", "--data", data]);
    assert.equal(noSite.code, ExitCode.USAGE);
    assert.match(noSite.stderr, /--site MP_URL and --ca CA_FILE/);
    assert.equal((await cli(["up", "--site", t.mp.url, "--data", data])).code, ExitCode.USAGE, "--site is for the distribution role");
    assert.equal((await cli(["up", "--role", "distribution", "--site", t.mp.url, "--ca", path.join(dir, "ca.pem"), "--data", data, "--pxe-interface", "eth0"])).code, ExitCode.USAGE);
    assert.equal((await cli(["up", "--role", "distribution", "--site", t.mp.url, "--ca", path.join(dir, "ca.pem"), "--data", t.dataDir])).code, ExitCode.USAGE, "not in a site's folder");
    const unenrolled = await cli(["up", "--role", "distribution", "--site", t.mp.url, "--ca", path.join(dir, "ca.pem"), "--data", data, "--listen", "127.0.0.1:0"]);
    assert.equal(unenrolled.code, ExitCode.FAILURE);
    assert.match(unenrolled.stderr, /holds no identity yet; enroll it once with --enroll-secret-file/);
  });
});
