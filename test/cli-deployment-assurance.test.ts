/** `slipway deployment create|update --minimum-assurance LEVEL --allow-sniffable-enrollment` as an administrator runs them. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, tempDir, type TestSite } from "./support/site.ts";
import { ExitCode } from "../src/cli/command.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

describe("slipway deployment assurance options", () => {
  let t: TestSite;
  let dir: string;
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  const cli = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
      SLIPWAY_CONFIG: path.join(dir, "profile.json"), SLIPWAY_TOKEN: t.adminToken };
    execFile(bin, args, { env, cwd: dir, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
  });
  before(async () => {
    t = await startTestSite();
    dir = tempDir("slipway-cli-dep-");
    fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "s3cret-value-1", secret: true })).status, 201);
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: { name: "Plain", steps: [{ name: "Say", type: "run-command", with: { command: "true" } }] } })).status, 201);
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: { name: "Join", steps: [
      { name: "Join", type: "run-command", with: { command: "true" }, runAs: { secret: "JoinCredential" } }] } })).status, 201);
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("opens a secret-free deployment to sniffable enrollments (shown, audited) and refuses it for one that uses secrets", async () => {
    const made = await cli(["deployment", "create", "Lab plain", "--ts", "Plain", "--collection", "Lab", "--purpose", "required", "--allow-sniffable-enrollment"]);
    assert.equal(made.code, 0, made.stderr);
    assert.match((await cli(["deployment", "show", "Lab plain"])).stdout, /Sniffable enrollment:\s+allowed \(opted in\)/);
    const audit = (await admin("GET", "/api/v1/audit?action=deployment.create&limit=10")).body as any[];
    assert.ok(audit.some((a) => a.details?.allowSniffableEnrollment === true), JSON.stringify(audit));
    const refused = await cli(["deployment", "create", "Lab join", "--ts", "Join", "--collection", "Lab", "--allow-sniffable-enrollment"]);
    assert.equal(refused.code, ExitCode.INVALID, refused.stderr);
    assert.match(refused.stderr, /uses secrets/);
    assert.ok(!((await admin("GET", "/api/v1/deployments")).body as any[]).some((d) => d.name === "Lab join"), "nothing created");
  });

  it("sets, shows and resets the minimum assurance (tpm included); a level it does not know is a usage error", async () => {
    assert.equal((await cli(["deployment", "create", "Lab join 2", "--ts", "Join", "--collection", "Lab", "--minimum-assurance", "tpm"])).code, 0);
    assert.match((await cli(["deployment", "show", "Lab join 2"])).stdout, /Minimum assurance:\s+tpm/);
    assert.equal((await cli(["deployment", "update", "Lab join 2", "--minimum-assurance", ""])).code, 0);
    assert.match((await cli(["deployment", "show", "Lab join 2"])).stdout, /Minimum assurance:\s+default/);
    assert.equal((await cli(["deployment", "update", "Lab join 2", "--minimum-assurance", "trusted"])).code, ExitCode.USAGE);
    assert.equal((await cli(["deployment", "update", "Lab join 2", "--minimum-assurance", "sniffable"])).code, ExitCode.INVALID, "sniffable on a secret-using deployment");
    assert.equal((await cli(["deployment", "update", "Lab plain", "--disallow-sniffable-enrollment"])).code, 0);
    assert.match((await cli(["deployment", "show", "Lab plain"])).stdout, /Sniffable enrollment:\s+no/);
  });
});
