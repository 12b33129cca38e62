/**
 * The administrator CLI as people and scripts run it: bin/slipway as a child process against
 * a real site server over verified TLS, with a profile file in a temporary folder. Each spawn
 * costs about 300 ms, so each test checks several outcomes of a few invocations.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ADMIN_PASSWORD, adminWithRoles, startTestSite, tempDir, type TestSite } from "./support/site.ts";
import { ExitCode } from "../src/cli/command.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

type Run = { code: number; stdout: string; stderr: string };

describe("slipway CLI against a running site", () => {
  let t: TestSite;
  let dir: string;
  let caFile: string;

  /** Runs bin/slipway with only the environment given (plus PATH), never the developer's own. */
  function cli(args: string[], opts: { env?: Record<string, string>; input?: string } = {}): Promise<Run> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: dir,
      SLIPWAY_SERVER: t.url,
      SLIPWAY_CA: caFile,
      SLIPWAY_CONFIG: path.join(dir, "none", "profile.json"),
      SLIPWAY_DATA: path.join(dir, "no-data"),
      ...opts.env,
    };
    return new Promise((resolve) => {
      const child = execFile(bin, args, { env, cwd: dir, timeout: 30_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
      });
      child.stdin!.end(opts.input ?? "");
    });
  }
  const asAdmin = (args: string[], input?: string) => cli(args, { env: { SLIPWAY_TOKEN: t.adminToken }, input });

  before(async () => {
    t = await startTestSite();
    dir = tempDir("slipway-cli-");
    caFile = path.join(dir, "ca.pem");
    fs.writeFileSync(caFile, t.ca);
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("signs in from stdin into a 0600 profile, works through it, and logout ends the session", async () => {
    const profile = path.join(dir, "config", "slipway", "profile.json");
    const env = { SLIPWAY_CONFIG: profile };

    const login = await cli(["login", "--password-stdin"], { env, input: ADMIN_PASSWORD + "-changed\n" });
    assert.equal(login.code, 0, login.stderr);
    assert.equal(fs.statSync(profile).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(profile)).mode & 0o777, 0o700);
    const saved = JSON.parse(fs.readFileSync(profile, "utf8"));
    assert.equal(saved.server, t.url);
    assert.match(saved.token, /\S{20,}/);
    assert.equal(saved.ca, t.ca);
    assert.ok(!login.stdout.includes(saved.token) && !login.stderr.includes(saved.token), "the session token was printed");

    const created = await cli(["device", "create", "lab-pc-1", "--mac", "AA-BB-CC-00-00-01", "--attr", "ram=16", "--attr", "site=berlin"], { env });
    assert.equal(created.code, 0, created.stderr);
    const list = await cli(["device", "list", "--json"], { env });
    assert.equal(list.code, 0, list.stderr);
    const devices = JSON.parse(list.stdout) as { name: string; macs: string[]; state: string; attributes: Record<string, unknown> }[];
    const d = devices.find((x) => x.name === "lab-pc-1");
    assert.ok(d, list.stdout);
    assert.deepEqual(d.macs, ["aa:bb:cc:00:00:01"]);
    assert.equal(d.state, "pending");
    assert.deepEqual(d.attributes, { ram: 16, site: "berlin" });

    const logout = await cli(["logout"], { env });
    assert.equal(logout.code, 0, logout.stderr);
    assert.equal(JSON.parse(fs.readFileSync(profile, "utf8")).token, undefined);
    assert.equal((await t.request("GET", "/api/v1/me", { token: saved.token })).status, 401, "the session still works on the server");
  });

  it("changes a one-time password during login, from the second line of stdin", async () => {
    const r = await t.request("POST", "/api/v1/admins", { token: t.adminToken, body: { username: "newbie", roles: ["read-only-analyst"] } });
    assert.equal(r.status, 201, r.text);
    const oneTime = r.body.oneTimePassword as string;
    const next = "Quiet-Harbor-Lantern-9182";
    const login = await cli(["login", "--username", "newbie", "--password-stdin"], {
      env: { SLIPWAY_CONFIG: path.join(dir, "newbie.json") }, input: `${oneTime}\n${next}\n`,
    });
    assert.equal(login.code, 0, login.stderr);
    assert.ok(!(login.stdout + login.stderr).includes(next), "the new password was echoed");
    const signIn = await t.request("POST", "/api/v1/sessions", { body: { username: "newbie", password: next } });
    assert.equal(signIn.status, 201);
    assert.equal(signIn.body.mustChangePassword, false);
  });

  it("never shows a secret set from stdin, neither in tables nor in --json", async () => {
    const secret = "Tr0ub4dor&3-do-not-print";
    const set = await asAdmin(["variable", "set", "DomainJoinPassword", "--secret", "--value-stdin"], secret + "\n");
    assert.equal(set.code, 0, set.stderr);
    const table = await asAdmin(["variable", "list"]);
    const json = await asAdmin(["variable", "list", "--json"]);
    for (const r of [set, table, json]) assert.ok(!(r.stdout + r.stderr).includes(secret), `secret printed: ${r.stdout}${r.stderr}`);
    assert.match(table.stdout, /DomainJoinPassword\s+site\s+\(secret, set\)/);
    const v = (JSON.parse(json.stdout) as Record<string, unknown>[]).find((x) => x.name === "DomainJoinPassword");
    assert.ok(v);
    assert.equal(v.secret, true);
    assert.equal(v.isSet, true);
    assert.ok(!("value" in v));
    // The value went in whole: without the final line break, as sealed ciphertext.
    const row = await t.site.db.get<{ sealed: string | null; value: string | null }>(`SELECT sealed, value FROM variables WHERE name = ?`, ["DomainJoinPassword"]);
    assert.equal(row?.value, null);
    assert.ok(row?.sealed);
  });

  it("maps refusals to exit codes: 404 → 5, 403 → 4, 409 → 6, usage → 2", async () => {
    const missing = await asAdmin(["device", "show", "no-such-device"]);
    assert.equal(missing.code, ExitCode.NOT_FOUND);
    assert.match(missing.stderr, /^slipway device show: Cannot find device "no-such-device"/);

    const analyst = await adminWithRoles(t, "analyst", ["read-only-analyst"]);
    const denied = await cli(["device", "create", "sneaky"], { env: { SLIPWAY_TOKEN: analyst } });
    assert.equal(denied.code, ExitCode.FORBIDDEN, denied.stderr);
    assert.match(denied.stderr, /device\.write/);

    const taken = await asAdmin(["device", "create", "lab-pc-1"]);
    assert.equal(taken.code, ExitCode.CONFLICT, taken.stderr);

    const unknownSub = await asAdmin(["device", "frobnicate"]);
    assert.equal(unknownSub.code, ExitCode.USAGE);
    assert.match(unknownSub.stderr, /unknown subcommand "frobnicate"/);
    const unknownFlag = await asAdmin(["device", "list", "--token", "abc"]);
    assert.equal(unknownFlag.code, ExitCode.USAGE, "a --token flag must not exist");
  });

  it("exits 8 when the server cannot be reached", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const r = await cli(["device", "list"], { env: { SLIPWAY_SERVER: `https://127.0.0.1:${port}`, SLIPWAY_TOKEN: "x" } });
    assert.equal(r.code, ExitCode.UNAVAILABLE, r.stderr);
    assert.match(r.stderr, /Cannot reach https:\/\/127\.0\.0\.1:\d+/);
  });

  it("refuses a server whose certificate does not chain to the CA, even with NODE_TLS_REJECT_UNAUTHORIZED=0", async () => {
    const other = await startTestSite();
    try {
      const wrongCa = path.join(dir, "other-ca.pem");
      fs.writeFileSync(wrongCa, other.ca);
      const r = await cli(["site"], { env: { SLIPWAY_CA: wrongCa, SLIPWAY_TOKEN: t.adminToken, NODE_TLS_REJECT_UNAUTHORIZED: "0" } });
      assert.equal(r.code, ExitCode.FAILURE, r.stdout + r.stderr);
      assert.match(r.stderr, /Cannot trust/);
      assert.equal(r.stdout, "");
    } finally {
      await other.close();
    }
  });

  it("validates a task sequence file: every problem with its path, exit 7", async () => {
    const file = path.join(dir, "broken.yaml");
    fs.writeFileSync(file, [
      "name: broken", "steps:", "  - name: Mystery", "    type: no-such-step",
      "  - name: Hello", "    type: run-command", "    with:", "      cmd: echo hi", "",
    ].join("\n"));
    const r = await asAdmin(["ts", "validate", file]);
    assert.equal(r.code, ExitCode.INVALID, r.stderr);
    assert.match(r.stdout, /steps\[0\] "Mystery" > type: .*no-such-step/);
    assert.match(r.stdout, /steps\[1\] "Hello" > with\.command: /);
    assert.match(r.stdout, /steps\[1\] "Hello" > with\.cmd: /);
  });

  it("publishes a new task sequence, then the same file as its next version", async () => {
    const file = path.join(dir, "hello.yaml");
    fs.writeFileSync(file, "name: hello\nsteps:\n  - name: Say hello\n    type: run-command\n    with:\n      command: echo hello\n");
    const first = await asAdmin(["ts", "publish", file]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /Published "hello" version 1 \(sha256:[0-9a-f]{64}\)/);
    const second = await asAdmin(["ts", "publish", file, "--json"]);
    assert.equal(second.code, 0, second.stderr);
    const v = JSON.parse(second.stdout);
    assert.equal(v.version, 2);
    assert.equal(v.name, "hello");
    assert.match(v.signature, /\S+/);
  });
});
