/**
 * The network-boot posture as an administrator sees it: `slipway up --pxe-interface` warns at
 * start when someone on the PXE link could enroll with what it sniffs and reach a deployment
 * that uses secrets, and `slipway site` shows where PXE is served, the PXE password, the
 * deployments open to sniffable enrollments and the same warning. Real processes: `up` runs
 * inside a network namespace with a bridge as its PXE link; the CLI talks to it over TLS.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { createLab, waitForOutput, type Lab } from "./lab/netns.ts";
import { httpsRequest, tempDir } from "./support/site.ts";
import { openSite } from "../src/site/site.ts";
import { createLogger } from "../src/log.ts";

if (process.getuid?.() !== 0) throw new Error("the posture tests need root (a network namespace for the PXE link): run scripts/test.sh as root");

const bin = path.resolve(import.meta.dirname, "../bin/slipway");
const PASSWORD = "Posture-Test-Passphrase-1";
const env = { ...process.env, SLIPWAY_DATABASE_URL: "", SLIPWAY_LOG_LEVEL: "warn", SLIPWAY_ADMIN_PASSWORD: PASSWORD };

describe("network-boot posture: the warning of up --pxe-interface and the posture of slipway site", () => {
  let lab: Lab;
  let dataDir = "";
  let token = "";
  let caFile = "";

  /** `up` outside the namespace, without PXE, to set the site up through its API. */
  async function upPlain(): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
    const child = spawn(bin, ["up", "--data", dataDir, "--listen", "127.0.0.1:0", "--mp-listen", "127.0.0.1:0"], { env });
    let stderr = "";
    child.stderr!.on("data", (c) => (stderr += c));
    child.stdout!.resume();
    await waitForOutput(child, /listening on https:\/\/\S+/, 60_000, "slipway up");
    return { child, url: /listening on (https:\/\/\S+)/.exec(stderr)![1], stderr: () => stderr };
  }
  const stop = async (child: ChildProcess) => {
    if (child.exitCode !== null) return;
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
  };
  /** `up --pxe-interface br0` inside the namespace; resolves once PXE is announced. */
  async function upWithPxe(): Promise<{ child: ChildProcess; output: () => string }> {
    const child = lab.spawn(bin, ["up", "--data", dataDir, "--listen", "127.0.0.1:8443", "--pxe-interface", "br0", "--unknown", "approve", "--ipxe-dir", lab.dir], { env });
    let output = "";
    child.stdout!.on("data", (c) => (output += c));
    child.stderr!.on("data", (c) => (output += c));
    await waitForOutput(child, /PXE \(proxy/, 60_000, "slipway up --pxe-interface");
    return { child, output: () => output };
  }
  /** `slipway site` inside the namespace, as the administrator. */
  async function siteCommand(args: string[] = []) {
    const r = await lab.exec(bin, ["site", ...args], {
      env: { PATH: process.env.PATH!, HOME: lab.dir, SLIPWAY_SERVER: "https://127.0.0.1:8443", SLIPWAY_CA: caFile, SLIPWAY_TOKEN: token,
        SLIPWAY_CONFIG: path.join(lab.dir, "none.json") },
      allowFailure: true,
    });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  before(async () => {
    lab = await createLab({ name: "posture" });
    await lab.addLink("br0", { cidr: "10.78.41.1/24" });
    dataDir = tempDir("slipway-posture-");
    caFile = path.join(dataDir, "keys/ca.crt");
    const up = await upPlain();
    try {
      const api = (method: string, p: string, body?: unknown) => httpsRequest(up.url, fs.readFileSync(caFile, "utf8"), method, p, { token, body });
      // The first administrator signs in with the password set at init and changes it.
      let r = await httpsRequest(up.url, fs.readFileSync(caFile, "utf8"), "POST", "/api/v1/sessions", { body: { username: "admin", password: PASSWORD } });
      assert.equal(r.status, 201, r.text);
      token = r.body.token;
      assert.equal((await api("POST", "/api/v1/me/password", { currentPassword: PASSWORD, newPassword: PASSWORD + "-2" })).status, 204);
      for (const [p, body] of [
        ["/api/v1/collections", { name: "Lab", rule: "true" }],
        ["/api/v1/variables", { scope: "site", name: "JoinCredential", value: "join-secret-canary", secret: true }],
        ["/api/v1/task-sequences", { document: { name: "Join build", steps: [
          { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } }] } }],
        ["/api/v1/task-sequences", { document: { name: "Plain build", steps: [{ name: "Say", type: "run-command", with: { command: "true" } }] } }],
        ["/api/v1/deployments", { name: "Join lab", taskSequence: "Join build", collection: "Lab", purpose: "required" }],
        ["/api/v1/deployments", { name: "Plain lab", taskSequence: "Plain build", collection: "Lab", purpose: "required", allowSniffableEnrollment: true }],
      ] as const) {
        r = await api("POST", p, body);
        assert.equal(r.status, 201, `${p}: ${r.text}`);
      }
    } finally {
      await stop(up.child);
    }
  });
  after(async () => {
    await lab?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("a site whose secret-using deployment needs more than sniffable is protected: no warning at start; slipway site lists the opt-in", async () => {
    const up = await upWithPxe();
    try {
      const out = await siteCommand();
      assert.match(out, /Network-boot posture/);
      assert.match(out, /PXE served:\s+br0 \(10\.78\.41\.1, proxy, unknown computers: approve/);
      assert.match(out, /PXE password:\s+not set/);
      assert.match(out, /PXE enrollments:\s+sniffable/);
      assert.match(out, /Open to sniffable:\s+Plain lab \(allowSniffableEnrollment, no secrets\)/);
      assert.doesNotMatch(out, /Join lab/, "a secret-using deployment at its default minimum (password) is not open to sniffable enrollments");
      assert.match(out, /Protected:\s+yes/);
      assert.doesNotMatch(out, /WARNING/);
      assert.doesNotMatch(up.output(), /WARNING/, "no warning at start");
    } finally {
      await lab.stop(up.child);
    }
  });

  it("a secret-using deployment open to sniffable enrollments (left by an older version) makes up warn at start and slipway site say so; a PXE password ends it", async () => {
    // The API refuses this since enrollment assurance came; a deployment saved before still has it.
    const site = await openSite({ dataDir, log: createLogger({ level: "error" }) });
    await site.db.run(`UPDATE deployments SET minimum_assurance = 'sniffable' WHERE name = ?`, ["Join lab"]);
    await site.close();

    let up = await upWithPxe();
    try {
      const out = await siteCommand();
      assert.match(up.output(), /WARNING: network boot is not protected: anyone on PXE link br0 who sniffs a machine's MAC and SMBIOS UUID can enroll as it/);
      assert.match(up.output(), /"Join lab"/);
      assert.match(out, /Open to sniffable:\s+.*Join lab \(minimumAssurance, USES SECRETS\)/);
      assert.match(out, /Protected:\s+NO/);
      assert.match(out, /^WARNING: network boot is not protected: .*"Join lab"/m);
      const json = JSON.parse(await siteCommand(["--json"]));
      assert.equal(json.posture.unprotected, true);
      assert.deepEqual(json.posture.exposed.map((d: { name: string }) => d.name), ["Join lab"]);

      // A PXE password makes every boot-token enrollment "password": nothing is sniffable.
      const set = await lab.exec(bin, ["pxe", "password", "set"], {
        env: { PATH: process.env.PATH!, HOME: lab.dir, SLIPWAY_SERVER: "https://127.0.0.1:8443", SLIPWAY_CA: caFile, SLIPWAY_TOKEN: token, SLIPWAY_CONFIG: path.join(lab.dir, "none.json") },
        input: "Pxe-Password-For-The-Lab-7\n", allowFailure: true,
      });
      assert.equal(set.code, 0, set.stderr);
      const after = await siteCommand();
      assert.match(after, /PXE password:\s+set/);
      assert.match(after, /Protected:\s+yes/);
      assert.doesNotMatch(after, /WARNING/);
    } finally {
      await lab.stop(up.child);
    }
    up = await upWithPxe();
    try {
      await siteCommand();
      assert.doesNotMatch(up.output(), /WARNING/, "with the PXE password set, up starts without the warning");
    } finally {
      await lab.stop(up.child);
    }
    // Stopped: PXE is no longer served.
    const plain = await upPlain();
    try {
      const r = await httpsRequest(plain.url, fs.readFileSync(caFile, "utf8"), "GET", "/api/v1/site", { token });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.posture.pxeServed, false);
      assert.equal(r.body.posture.unprotected, false);
      assert.doesNotMatch(plain.stderr(), /WARNING/);
    } finally {
      await stop(plain.child);
    }
  });
});
