/**
 * The agent waits for an administrator's approval (issue #11 item 3): on this host, against a
 * real site, it enrolls with its boot token alone (`sniffable`), is told a deployment awaits
 * approval, waits asking for its policy, and — once `slipway enrollment approve` has run — gets
 * the deployment and its Run As step gets the secret. With a TPM (swtpm), the approval records
 * its endorsement key and the next enrollment is `tpm`, unattended.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestSite, type TestSite } from "../support/site.ts";
import { startSwtpm, type Swtpm } from "../support/swtpm.ts";
import { collectInventory } from "../../src/agent/inventory.ts";
import { issueBootToken } from "../../src/site/credentials.ts";

// Read when the agent's module loads: wait briefly between policy requests in this test.
process.env.SLIPWAY_APPROVAL_POLL_MS = "200";
process.env.SLIPWAY_APPROVAL_WAIT_MS = "20000";
const { main } = await import("../../src/agent/main.ts");

describe("agent waiting for enrollment approval", () => {
  let t: TestSite;
  let configDir = "";
  let deviceId = "";
  let sw: Swtpm;
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
    sw = await startSwtpm(path.join(t.dataDir, "tpm"));
    process.env.SLIPWAY_TPM_DEVICE = sw.socket;
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Here" })).status, 201);
    const d = await admin("POST", "/api/v1/devices", { name: "this-host", macs: [inv.macs[0]], smbiosUuid: inv.smbiosUuid, state: "approved", collections: ["Here"] });
    assert.equal(d.status, 201, d.text);
    deviceId = d.body.id;
    assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "join-credential-value-1", secret: true })).status, 201);
    const doc = { name: "Join", steps: [
      { name: "Join", type: "run-command", with: { command: "test ${#JoinCredential} -gt 8" }, runAs: { secret: "JoinCredential" } },
    ] };
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    const dep = await admin("POST", "/api/v1/deployments", { name: "Join here", taskSequence: "Join", collection: "Here", purpose: "required", bootPaths: ["pxe"] });
    assert.equal(dep.status, 201, dep.text);
  });
  after(async () => {
    delete process.env.SLIPWAY_TPM_DEVICE;
    await t?.close();
    await sw?.stop();
  });

  it("waits until an administrator approves its enrollment, then runs with its secret; approval records its EK and the re-image is tpm", async () => {
    const running = main({ configDir, cmdline: await cmdline(), reboot: false });
    let pending: any[] = [];
    for (let i = 0; i < 600 && pending.length === 0; i++) {
      await sleep(100);
      pending = (await admin("GET", "/api/v1/enrollments/pending")).body;
    }
    assert.equal(pending.length, 1, "the agent's enrollment awaits approval");
    assert.ok(pending[0].ekFingerprint, "it proved its TPM's EK, shown for review");
    await sleep(500);
    assert.equal(((await admin("GET", `/api/v1/runs?device=${deviceId}`)).body as unknown[]).length, 0, "nothing runs before approval");
    const ok = await admin("POST", "/api/v1/enrollments/approve", { serials: [pending[0].serial] });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(await running, 0, "the agent ran its deployment after approval");
    const runs = (await admin("GET", `/api/v1/runs?device=${deviceId}`)).body;
    const run = (await admin("GET", `/api/v1/runs/${runs[0].id}`)).body;
    assert.equal(run.state, "succeeded", JSON.stringify(run.events));
    assert.equal((await admin("GET", `/api/v1/devices/${deviceId}/tpm`)).body.ekFingerprint, pending[0].ekFingerprint);

    // The re-image: the TPM proves the EK on record; no approval needed.
    assert.equal((await admin("POST", `/api/v1/deployments/${run.deploymentId}/rerun`, { device: deviceId })).status, 200);
    assert.equal(await main({ configDir, cmdline: await cmdline(), reboot: false }), 0);
    const device = (await admin("GET", `/api/v1/devices/${deviceId}`)).body;
    assert.equal(device.enrollmentAssurance, "tpm", "the re-image enrolled as tpm");
    const live = ((await admin("GET", "/api/v1/certificates")).body as any[]).filter((c) => c.device === deviceId && c.status === "active");
    assert.deepEqual(live.map((c) => c.assurance), ["tpm"], "one live certificate, tpm");
  });
});
