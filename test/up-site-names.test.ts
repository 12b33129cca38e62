/**
 * `slipway up --public-name NAME` as an administrator runs it: the site's own names — its
 * certificate's, --public-name — are never a distribution point's, whatever the spelling.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { httpsRequest, tempDir } from "./support/site.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

describe("slipway up and distribution point names", () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it("a distribution point cannot be registered under the site's --public-name or its certificate's names", async () => {
    const dir = path.join(tempDir(), "site");
    dirs.push(path.dirname(dir));
    const password = "Automation-Passphrase-2026";
    const child = spawn(bin, ["up", "--data", dir, "--listen", "127.0.0.1:0", "--mp-listen", "127.0.0.1:0", "--public-name", "site.example", "--public-name", "192.0.2.77"], {
      env: { ...process.env, SLIPWAY_DATABASE_URL: "", SLIPWAY_ADMIN_PASSWORD: password },
    });
    let stderr = "";
    child.stderr.on("data", (c) => (stderr += c));
    child.stdout.resume();
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
      const call = (m: string, p: string, token?: string, body?: unknown) => httpsRequest(url, ca, m, p, { token, body });
      const first = (await call("POST", "/api/v1/sessions", undefined, { username: "admin", password })).body.token as string;
      assert.equal((await call("POST", "/api/v1/me/password", first, { currentPassword: password, newPassword: `${password}-changed` })).status, 204);
      for (const [body, name] of [
        [{ name: "dp-a", url: "https://site.example:8445" }, "site.example"],
        [{ name: "dp-b", url: "https://SITE.Example.:9000" }, "site.example"],
        [{ name: "dp-c", url: "https://dp-c.example", aliases: ["192.0.2.77"] }, "192.0.2.77"],
        [{ name: "dp-d", url: "https://dp-d.example", aliases: ["::ffff:192.0.2.77"] }, "::ffff:c000:24d"],
        [{ name: "dp-e", url: "https://[::1]:8445" }, "::1"],
      ] as const) {
        const r = await call("POST", "/api/v1/distribution-points", first, body);
        assert.ok(r.status === 409 || r.status === 400, `${JSON.stringify(body)}: ${r.status} ${r.text}`);
        assert.ok(r.body.message.includes(`"${name}"`), r.body.message);
      }
      assert.deepEqual((await call("GET", "/api/v1/distribution-points", first)).body, []);
      assert.equal((await call("POST", "/api/v1/distribution-points", first, { name: "dp-ok", url: "https://dp-ok.example:8445" })).status, 201);
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
    }
    // The other order: the site restarted under a name a distribution point already holds.
    const cert = fs.readFileSync(path.join(dir, "keys/server.crt"));
    const again = spawn(bin, ["up", "--data", dir, "--listen", "127.0.0.1:0", "--mp-listen", "127.0.0.1:0", "--public-name", "DP-OK.example."], {
      env: { ...process.env, SLIPWAY_DATABASE_URL: "" },
    });
    let err = "";
    again.stderr.on("data", (c) => (err += c));
    again.stdout.resume();
    const code = await new Promise<number | null>((resolve) => again.once("exit", resolve));
    assert.equal(code, 6, `up refuses to start (exit 6, conflict): ${err}`);
    assert.match(err, /distribution point "dp-ok" holds that name/);
    assert.deepEqual(fs.readFileSync(path.join(dir, "keys/server.crt")), cert, "the site's certificate was not reissued with that name");
  });
});
