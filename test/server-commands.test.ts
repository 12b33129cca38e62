/**
 * `slipway init` and `slipway up` as an administrator runs them: a real process, a real
 * data folder, HTTPS trusted through the site CA, structured logs without secrets.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawn, execFile } from "node:child_process";
import { tempDir, httpsRequest } from "./support/site.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...process.env, SLIPWAY_DATABASE_URL: "", ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("slipway init and up", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  it("init creates the keys with private modes, prints a one-time password once, and refuses a second time", async () => {
    const dir = path.join(tempDir(), "site");
    dirs.push(path.dirname(dir));
    const r = await run(["init", "--data", dir]);
    assert.equal(r.code, 0, r.stderr);
    const otp = /One-time password:\s+(\S+)/.exec(r.stdout)?.[1];
    assert.ok(otp && otp.length >= 16, r.stdout);
    const mode = (f: string) => fs.statSync(path.join(dir, f)).mode & 0o777;
    assert.equal(mode("."), 0o700);
    assert.equal(mode("keys"), 0o700);
    for (const f of ["keys/signing.key", "keys/ca.key"]) assert.equal(mode(f), 0o600, f);
    const master = fs.readdirSync(path.join(dir, "keys/master")).filter((f) => f.endsWith(".key"));
    assert.equal(master.length, 1);
    assert.equal(mode(`keys/master/${master[0]}`), 0o600);
    assert.ok(fs.existsSync(path.join(dir, "keys/ca.crt")));
    assert.ok(fs.existsSync(path.join(dir, "slipway.db")));
    const again = await run(["init", "--data", dir]);
    assert.equal(again.code, 6);
    assert.match(again.stderr, /already exists/);
    assert.ok(!again.stdout.includes(otp!), "the password is never shown again");
  });

  it("up initializes an empty folder, serves HTTPS trusted by the site CA, logs JSON without secrets, and stops on SIGTERM", async () => {
    const dir = path.join(tempDir(), "site");
    dirs.push(path.dirname(dir));
    const password = "Automation-Passphrase-2026";
    const child = spawn(bin, ["up", "--data", dir, "--listen", "127.0.0.1:0", "--mp-listen", "127.0.0.1:0"], {
      env: { ...process.env, SLIPWAY_DATABASE_URL: "", SLIPWAY_ADMIN_PASSWORD: password, SLIPWAY_LOG_LEVEL: "debug" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setInterval(() => {
        const m = /listening on (https:\/\/\S+)/.exec(stderr);
        if (m) {
          clearInterval(timer);
          resolve(m[1]);
        }
      }, 50);
      child.once("exit", (code) => {
        clearInterval(timer);
        reject(new Error(`up exited ${code}: ${stderr}`));
      });
    });
    try {
      const ca = fs.readFileSync(path.join(dir, "keys/ca.crt"), "utf8");
      const server = JSON.parse(fs.readFileSync(path.join(dir, "server.json"), "utf8"));
      assert.equal(server.url, url);
      const login = await httpsRequest(url, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password } });
      assert.equal(login.status, 201);
      assert.equal(login.body.mustChangePassword, true);
      // Without the site CA the certificate is not trusted.
      await assert.rejects(httpsRequest(url, fs.readFileSync(path.join(import.meta.dirname, "fixtures/other-ca.pem"), "utf8"), "GET", "/api/v1/health"));
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
    }
    const lines = stdout.trim().split("\n");
    assert.ok(lines.length >= 2);
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not JSON: ${l}`);
    assert.ok(lines.some((l) => JSON.parse(l).msg === "request"), "requests are logged at debug level");
    assert.ok(!stdout.includes(password) && !stderr.includes(password), "the password reached the output");
  });

  it("rejects a malformed --listen with a usage error", async () => {
    const r = await run(["up", "--data", tempDir(), "--listen", "nonsense"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /HOST:PORT/);
  });
});
