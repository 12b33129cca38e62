/**
 * The agent's whole life on this host, against a real site: boot token from the "kernel
 * command line", the host's own inventory (so the token is bound to this machine's real MAC
 * and SMBIOS UUID), enrollment, signed policy checked against the pinned key, the task
 * sequence's steps reported to the management point, and the exit codes an administrator
 * reads on the console. (The disk steps run only in the lab VMs: test/deploy.)
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, type TestSite } from "../support/site.ts";
import { collectInventory } from "../../src/agent/inventory.ts";
import { main } from "../../src/agent/main.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { generateSigningKeyPair } from "../../src/security/signing.ts";
import { spawn } from "node:child_process";

/**
 * The agent in its own process with a terminal (`script` gives it a pseudo-terminal), typing
 * `answers` at each prompt it prints; resolves with its exit code and what it printed.
 */
function agentAtConsole(configDir: string, cmdline: string, answers: string[]): Promise<{ code: number; output: string }> {
  const runner = path.resolve(import.meta.dirname, "../support/agent-runner.ts");
  return new Promise((resolve, reject) => {
    const child = spawn("script", ["-qfec", `${JSON.stringify(process.execPath)} ${JSON.stringify(runner)}`, "/dev/null"], {
      env: { ...process.env, SLIPWAY_CONFIG_DIR: configDir, SLIPWAY_CMDLINE: cmdline }, stdio: ["pipe", "pipe", "pipe"],
    });
    let output = "";
    let prompts = 0;
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString("utf8");
      const seen = output.split("requires the PXE password: ").length - 1;
      while (prompts < seen && prompts < answers.length) child.stdin.write(answers[prompts++] + "\r");
    });
    child.stderr.on("data", (d: Buffer) => (output += d.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, output }));
  });
}

describe("agent on this host", () => {
  let t: TestSite;
  let configDir = "";
  let deviceId = "";
  let deploymentId = "";
  const inv = collectInventory();
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  const cmdline = async () => {
    const { token } = await issueBootToken(t.site, { deviceId, mac: inv.macs[0], smbiosUuid: inv.smbiosUuid });
    return `console=ttyS0 slipway.token=${token} slipway.mac=${inv.macs[0]} slipway.mp=${t.mp.url}`;
  };

  before(async () => {
    assert.ok(inv.macs.length > 0, "this host has a network card with a MAC");
    t = await startTestSite();
    configDir = path.join(t.dataDir, "agent-etc");
    fs.mkdirSync(configDir);
    fs.writeFileSync(path.join(configDir, "ca.pem"), t.ca);
    fs.writeFileSync(path.join(configDir, "signing-key.pub.pem"), (await t.request("GET", "/api/v1/site/signing-key.pem")).body.pem);
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Here" })).status, 201);
    const d = await admin("POST", "/api/v1/devices", { name: "this-host", macs: [inv.macs[0]], smbiosUuid: inv.smbiosUuid, state: "approved", collections: ["Here"] });
    assert.equal(d.status, 201, d.text);
    deviceId = d.body.id;
    await admin("POST", "/api/v1/variables", { scope: "device", target: "this-host", name: "Greeting", value: "hello" });
    const doc = { name: "Host steps", steps: [
      { name: "Compose", type: "set-variable", with: { name: "Message", value: "${Greeting} from ${DeviceName} (${Firmware})" } },
      { name: "Say it", type: "run-command", with: { command: "echo \"$Message\"" } },
      { name: "Only on UEFI", type: "run-command", condition: "Firmware == 'never'", with: { command: "exit 1" } },
      { name: "Tolerated", type: "run-command", continueOnError: true, with: { command: "echo nope >&2; exit 7" } },
      { name: "Done", type: "reboot" },
    ] };
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Host run", taskSequence: "Host steps", collection: "Here", purpose: "required", bootPaths: ["pxe"] });
    assert.equal(dep.status, 201);
    deploymentId = dep.body.id;
  });
  /** A required deployment that succeeded runs again only once an administrator allows it. */
  const allowRerun = async () => assert.equal((await admin("POST", `/api/v1/deployments/${deploymentId}/rerun`, { device: deviceId })).status, 200);

  after(async () => {
    await t.close();
  });

  it("enrolls with its boot token, verifies its policy, runs the sequence and reports every step", async () => {
    const code = await main({ configDir, cmdline: await cmdline(), reboot: false });
    assert.equal(code, 0);
    const runs = (await admin("GET", `/api/v1/runs?device=${deviceId}`)).body;
    assert.equal(runs.length, 1);
    const run = (await admin("GET", `/api/v1/runs/${runs[0].id}`)).body;
    assert.equal(run.state, "succeeded");
    const ends = run.events.filter((e: any) => !["started", "progress"].includes(e.state)).map((e: any) => `${e.step} ${e.state}`);
    assert.deepEqual(ends, ["0 Compose succeeded", "1 Say it succeeded", "2 Only on UEFI skipped", "3 Tolerated failed", "4 Done succeeded", "(run) succeeded"]);
    const said = run.events.find((e: any) => e.step === "1 Say it" && e.state === "succeeded");
    assert.match(said.message, new RegExp(`hello from this-host \\(${inv.firmware}\\)`));
    const tolerated = run.events.find((e: any) => e.step === "3 Tolerated" && e.state === "failed");
    assert.equal(tolerated.exitCode, 7);
  });

  it("a used boot token is refused: exit 3, nothing run", async () => {
    const line = await cmdline();
    await allowRerun();
    assert.equal(await main({ configDir, cmdline: line, reboot: false }), 0);
    assert.equal(await main({ configDir, cmdline: line, reboot: false }), 3);
  });

  it("a policy signed by another key is refused before any step runs", async () => {
    const other = path.join(t.dataDir, "other-etc");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "ca.pem"), t.ca);
    fs.writeFileSync(path.join(other, "signing-key.pub.pem"), generateSigningKeyPair().publicKeyPem);
    const before = (await admin("GET", `/api/v1/runs?device=${deviceId}`)).body.length;
    assert.equal(await main({ configDir: other, cmdline: await cmdline(), reboot: false }), 3);
    assert.equal((await admin("GET", `/api/v1/runs?device=${deviceId}`)).body.length, before, "no run was started");
  });

  it("with a PXE password set and no console to ask it on, the agent stops with exit 3", async () => {
    assert.equal((await admin("PUT", "/api/v1/pxe/password", { password: "Lab-PXE-Passphrase-77" })).status, 204);
    try {
      assert.equal(await main({ configDir, cmdline: await cmdline(), reboot: false }), 3);
    } finally {
      await admin("DELETE", "/api/v1/pxe/password");
    }
  });

  it("at a console it asks the PXE password without echoing it, says when it is wrong, and enrolls with the right one", async () => {
    const password = "Lab-PXE-Passphrase-78";
    assert.equal((await admin("PUT", "/api/v1/pxe/password", { password })).status, 204);
    try {
      await allowRerun();
      const r = await agentAtConsole(configDir, await cmdline(), ["not-the-password", password]);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /the PXE password was not accepted/);
      assert.match(r.output, /SLIPWAY-AGENT enrolled device=/);
      assert.ok(!r.output.includes(password) && !r.output.includes("not-the-password"), `typed passwords are not echoed:\n${r.output}`);
    } finally {
      await admin("DELETE", "/api/v1/pxe/password");
    }
  });

  it("without slipway.mp= on the command line the agent says so: exit 4", async () => {
    assert.equal(await main({ configDir, cmdline: "console=ttyS0 quiet", reboot: false }), 4);
  });
});
