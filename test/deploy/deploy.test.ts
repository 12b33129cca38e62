/**
 * Deployment end to end, in a network namespace this test makes: `slipway up` serves PXE on a
 * lab bridge; `slipway bootimage build` makes the deploy environment (Debian kernel, busybox,
 * disk tools, Node.js 24 and the agent); `slipway image import` puts the test OS into the
 * content library as a tar.gz and as a raw ext4 image. A QEMU machine with an empty disk
 * PXE-boots, enrolls with its one-time token, runs a task sequence that partitions, formats,
 * applies the image (streamed, verified), writes the host name from a device variable,
 * installs the boot loader and restarts; iPXE then finds nothing left to deploy and the
 * firmware boots the disk, where the deployed system prints the host name — BIOS and UEFI.
 * Then one byte of content is flipped on the distribution point and a third machine's apply
 * step fails, naming the chunk, with nothing bootable left on its disk.
 * Last, machines with a TPM (swtpm): with the PXE password set and the machine's endorsement
 * key on record, a re-image runs unattended (`tpm`) and its Run As step gets its secret, BIOS
 * and UEFI; a machine with the same MAC and UUID and another TPM is asked the password and
 * gets no secret.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { run, type Lab, type Link } from "../lab/netns.ts";
import { startLabSite, SLIPWAY_BIN as bin, type LabSite } from "../lab/lab-site.ts";
import { startVm } from "../lab/qemu.ts";
import { ensureTestOsImages } from "../lab/test-os.ts";
import { startSwtpm, swtpmForQemu } from "../support/swtpm.ts";
import { openTpmSocket, TpmSession } from "../../src/agent/tpm.ts";

if (process.getuid?.() !== 0) throw new Error("the deployment tests need root (network namespaces): run scripts/test.sh as root");

const PASSWORD = "Deploy-End-To-End-Passphrase-1";
const DEPLOY_TIMEOUT_MS = 600_000;

const TASK_SEQUENCE = `
name: Lab deploy
description: Partition, apply the test OS, name it, make it bootable, restart
variables:
  OSDComputerName: unnamed
steps:
  - name: Prepare disk
    type: group
    steps:
      - name: Partition for UEFI
        type: partition-disk
        condition: "Firmware == 'uefi'"
        with: { disk: "0", scheme: gpt }
      - name: Partition for BIOS
        type: partition-disk
        condition: "Firmware != 'uefi'"
        with: { disk: "0", scheme: gpt-bios }
      - name: Format root
        type: format
        with: { partition: "0:2", filesystem: ext4, label: root }
  - name: Apply the file-based image
    type: apply-image
    condition: "Firmware != 'uefi'"
    with: { image: test-os }
  - name: Apply the raw image
    type: apply-image
    condition: "Firmware == 'uefi'"
    with: { image: test-os-raw, partition: "0:2" }
  - name: Name the system
    type: configure-os
    with: { hostname: "\${OSDComputerName}", network: { mode: dhcp } }
  - name: Leave a note
    type: run-command
    with: { command: "echo deployed by run $RunId > $SLIPWAY_TARGET/etc/slipway-note" }
  - name: Install boot loader
    type: install-bootloader
    with: { disk: "0" }
  - name: Restart into the new system
    type: reboot
`;

describe("deployment end to end", () => {
  let site: LabSite;
  let srv: Lab;
  let br0: Link;
  let dataDir = "";
  let api = "";
  let token = "";
  const admin = (method: string, p: string, body?: unknown) => site.admin(method, p, body);

  async function addMachine(name: string, mac: string, uuid: string, hostname: string): Promise<void> {
    let r = await admin("POST", "/api/v1/devices", { name, macs: [mac], smbiosUuid: uuid, state: "approved", collections: ["Lab"] });
    assert.equal(r.status, 201, r.text);
    r = await admin("POST", "/api/v1/variables", { scope: "device", target: name, name: "OSDComputerName", value: hostname });
    assert.equal(r.status, 201, r.text);
  }

  async function runOf(device: string): Promise<any> {
    const devices = await admin("GET", `/api/v1/devices/${device}`);
    const runs = await admin("GET", `/api/v1/runs?device=${devices.body.id}`);
    assert.equal(runs.status, 200, runs.text);
    assert.equal(runs.body.length, 1, `one run for ${device}: ${runs.text}`);
    const r = await admin("GET", `/api/v1/runs/${runs.body[0].id}`);
    assert.equal(r.status, 200, r.text);
    return r.body;
  }

  before(async () => {
    const images = await ensureTestOsImages();
    site = await startLabSite({ name: "deploy", subnet: "10.82.0", adminPrefix: "10.81", password: PASSWORD,
      images: [["test-os", images.tarGz], ["test-os-raw", images.rawExt4]] });
    ({ lab: srv, link: br0, dataDir, api, token } = site);
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab" })).status, 201);
    let r = await admin("POST", "/api/v1/task-sequences", { document: TASK_SEQUENCE, format: "yaml" });
    assert.equal(r.status, 201, r.text);
    r = await admin("POST", "/api/v1/deployments", { name: "Lab rebuild", taskSequence: "Lab deploy", collection: "Lab", purpose: "required", bootPaths: ["pxe"] });
    assert.equal(r.status, 201, r.text);
  });

  after(async () => {
    await site?.close();
  });

  for (const m of [
    { firmware: "bios" as const, name: "lab-bios", mac: "52:54:00:82:00:01", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000820001", hostname: "bios-box-01", format: "tar.gz" },
    { firmware: "uefi" as const, name: "lab-uefi", mac: "52:54:00:82:00:02", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000820002", hostname: "uefi-box-02", format: "raw" },
  ]) {
    it(`a bare ${m.firmware.toUpperCase()} machine deploys the ${m.format} image and restarts into it under its own host name`, { timeout: DEPLOY_TIMEOUT_MS + 60_000 }, async (t) => {
      await addMachine(m.name, m.mac, m.uuid, m.hostname);
      const disk = path.join(srv.dir, `${m.name}.disk`);
      fs.writeFileSync(disk, "");
      fs.truncateSync(disk, 2 * 1024 ** 3);
      const tap = await br0.addTap(`tap${m.firmware}`);
      const vm = await startVm(srv, { tap, mac: m.mac, uuid: m.uuid, firmware: m.firmware, disk, memoryMiB: 1536, allowReboot: true, name: m.name });
      try {
        await vm.waitForSerial(/SLIPWAY-AGENT enrolled device=/, { timeoutMs: DEPLOY_TIMEOUT_MS });
        const done = await vm.waitForSerial(/SLIPWAY-AGENT run \S+ (succeeded|failed)/, { timeoutMs: DEPLOY_TIMEOUT_MS });
        assert.equal(done[1], "succeeded", vm.serial().slice(-4000));
        // After the restart iPXE is told there is nothing left to deploy and the disk boots.
        const deployed = await vm.waitForSerial(/SLIPWAY-DEPLOYED hostname=(\S+)/, { timeoutMs: DEPLOY_TIMEOUT_MS, from: done.index });
        assert.equal(deployed[1], m.hostname);
        t.diagnostic(`${m.firmware}: deployed and booted in ${Math.round(vm.elapsedMs() / 1000)} s`);
      } finally {
        await vm.kill();
      }
      const history = await runOf(m.name);
      assert.equal(history.state, "succeeded");
      const ended = history.events.filter((e: any) => e.state !== "started" && e.state !== "progress").map((e: any) => `${e.step} ${e.state}`);
      const firmwareStep = m.firmware === "uefi" ? "0/0 Partition for UEFI" : "0/1 Partition for BIOS";
      const applyStep = m.firmware === "uefi" ? "2 Apply the raw image" : "1 Apply the file-based image";
      for (const want of [`${firmwareStep} succeeded`, "0/2 Format root succeeded", `${applyStep} succeeded`, "3 Name the system succeeded", "5 Install boot loader succeeded", "6 Restart into the new system succeeded", "(run) succeeded"]) {
        assert.ok(ended.includes(want), `step history has "${want}":\n${ended.join("\n")}`);
      }
      assert.ok(history.events.some((e: any) => e.state === "progress" && /MiB verified/.test(e.message ?? "")), "apply reported progress");
      // The same history through the CLI.
      const cliEnv = { ...process.env, SLIPWAY_SERVER: api, SLIPWAY_CA: path.join(dataDir, "keys/ca.crt"), SLIPWAY_TOKEN: token, SLIPWAY_CONFIG: path.join(srv.dir, "profile.json") };
      const shown = await run(bin, ["run", "show", history.id], { env: cliEnv });
      assert.match(shown.stdout, /Install boot loader/);
      assert.match(shown.stdout, /succeeded/);
    });
  }

  it("a flipped byte on the distribution point fails the apply step, names the chunk, and leaves nothing bootable", { timeout: DEPLOY_TIMEOUT_MS + 60_000 }, async () => {
    const m = { name: "lab-flip", mac: "52:54:00:82:00:03", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000820003" };
    await addMachine(m.name, m.mac, m.uuid, "never-named");
    const images = await admin("GET", `/api/v1/devices/${m.name}/policy`);
    const content = (images.body?.deployments?.[0]?.content ?? []) as { image: string; manifest: string }[];
    const digest = content.find((c) => c.image === "test-os")?.manifest;
    assert.ok(digest, `the policy names the test-os manifest: ${images.text}`);
    const shown = await run(bin, ["image", "show", digest, "--data", dataDir, "--json"]);
    const manifest = JSON.parse(shown.stdout).signed.manifest;
    const chunk = manifest.chunks[manifest.chunks.length - 1].sha256 as string;
    const file = path.join(dataDir, "content/sha256", chunk);
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    fs.chmodSync(file, 0o600);
    fs.writeFileSync(file, bytes);

    const disk = path.join(srv.dir, `${m.name}.disk`);
    fs.writeFileSync(disk, "");
    fs.truncateSync(disk, 2 * 1024 ** 3);
    const tap = await br0.addTap("tapflip");
    const vm = await startVm(srv, { tap, mac: m.mac, uuid: m.uuid, firmware: "bios", disk, memoryMiB: 1536, name: m.name });
    try {
      const done = await vm.waitForSerial(/SLIPWAY-AGENT run \S+ (succeeded|failed)/, { timeoutMs: DEPLOY_TIMEOUT_MS });
      assert.equal(done[1], "failed");
      await vm.waitForSerial(/SLIPWAY-AGENT-EXIT code=1/, { timeoutMs: 60_000 });
    } finally {
      await vm.kill();
    }
    const history = await runOf(m.name);
    assert.equal(history.state, "failed");
    const failed = history.events.find((e: any) => e.state === "failed" && e.step.startsWith("1 "));
    assert.ok(failed, JSON.stringify(history.events, null, 1));
    assert.match(failed.message, new RegExp(`sha256 mismatch in chunk ${manifest.chunks.length - 1}`));
    assert.match(failed.message, /wiped/);
    // Nothing after the failed apply ran: no boot loader was installed.
    assert.ok(!history.events.some((e: any) => e.step.startsWith("5 ") && e.state === "succeeded"));
    // The root partition starts with zeros: no file system to mount, nothing to boot.
    const head = Buffer.alloc(1024 * 1024);
    const fd = fs.openSync(disk, "r");
    try {
      // Partition 2 of the gpt-bios layout starts at 2 MiB (1 MiB alignment + 1 MiB BIOS boot).
      fs.readSync(fd, head, 0, head.length, 2 * 1024 * 1024);
    } finally {
      fs.closeSync(fd);
    }
    assert.ok(head.every((b) => b === 0), "the half-applied root file system was wiped");
  });

  describe("TPM-bound re-image", () => {
    const PXE_PASSWORD = "Lab-PXE-Passphrase-For-TPM-Tests";
    const JOIN = `join-${randomBytes(6).toString("hex")}`;
    let deployment = "";
    before(async () => {
      assert.equal((await admin("POST", "/api/v1/collections", { name: "TPM lab" })).status, 201);
      let r = await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: JOIN, secret: true });
      assert.equal(r.status, 201, r.text);
      r = await admin("POST", "/api/v1/task-sequences", { document: { name: "TPM join", steps: [
        { name: "Join the directory", type: "run-command", with: { command: "test ${#JoinCredential} -gt 8 && echo joined with a credential of ${#JoinCredential} characters" },
          runAs: { secret: "JoinCredential" } },
      ] } });
      assert.equal(r.status, 201, r.text);
      r = await admin("POST", "/api/v1/deployments", { name: "TPM join", taskSequence: "TPM join", collection: "TPM lab", purpose: "required", bootPaths: ["pxe"] });
      assert.equal(r.status, 201, r.text);
      deployment = r.body.id;
      // Every machine is asked the PXE password from now on, unless its TPM proves it is the machine on record.
      assert.equal((await admin("PUT", "/api/v1/pxe/password", { password: PXE_PASSWORD })).status, 204);
    });

    /** The EK a swtpm state yields, read on the host as an administrator would from a previous deployment. */
    async function ekOf(stateDir: string): Promise<string> {
      const sw = await startSwtpm(stateDir);
      try {
        const tpm = await TpmSession.open(await openTpmSocket(sw.socket));
        try {
          return tpm.identity().ekPublic;
        } finally {
          await tpm.close();
        }
      } finally {
        await sw.stop();
      }
    }

    async function bootWithTpm(name: string, m: { mac: string; uuid: string; firmware: "bios" | "uefi" }, stateDir: string, until: RegExp) {
      const sw = await swtpmForQemu(stateDir);
      const tap = await br0.addTap(`tap${randomBytes(3).toString("hex")}`);
      const vm = await startVm(srv, { tap, mac: m.mac, uuid: m.uuid, firmware: m.firmware, memoryMiB: 1536, name, extraArgs: sw.qemuArgs });
      try {
        // partialLines: the password prompt waits for input at the end of a line.
        return { match: await vm.waitForSerial(until, { timeoutMs: DEPLOY_TIMEOUT_MS, partialLines: true }), serial: vm.serial() };
      } finally {
        await vm.kill();
        await sw.stop();
      }
    }

    for (const m of [
      { firmware: "bios" as const, name: "tpm-bios", mac: "52:54:00:82:00:11", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000820011" },
      { firmware: "uefi" as const, name: "tpm-uefi", mac: "52:54:00:82:00:12", uuid: "5f1c0d3e-8a4b-4c2d-9e1f-000000820012" },
    ]) {
      it(`a known ${m.firmware.toUpperCase()} machine re-images unattended with its TPM and its Run As step gets the secret; another TPM with its MAC and UUID gets none`, { timeout: 3 * DEPLOY_TIMEOUT_MS }, async (t) => {
        let r = await admin("POST", "/api/v1/devices", { name: m.name, macs: [m.mac], smbiosUuid: m.uuid, state: "approved", collections: ["TPM lab"] });
        assert.equal(r.status, 201, r.text);
        const deviceId = r.body.id as string;
        const stateDir = path.join(srv.dir, `${m.name}-tpm`);
        r = await admin("PUT", `/api/v1/devices/${m.name}/tpm`, { ek: await ekOf(stateDir) });
        assert.equal(r.status, 200, r.text);

        const real = await bootWithTpm(m.name, m, stateDir, /SLIPWAY-AGENT run \S+ (succeeded|failed)|SLIPWAY-AGENT-EXIT code=\d+|requires the PXE password/);
        assert.equal(real.match[1], "succeeded", real.serial.slice(-4000));
        assert.match(real.serial, /SLIPWAY-AGENT tpm challenge answered/);
        assert.match(real.serial, /SLIPWAY-AGENT enrolled device=\S+ name=\S+ assurance=tpm/);
        assert.doesNotMatch(real.serial, /requires the PXE password/, "nobody typed anything");
        assert.ok(!real.serial.includes(JOIN), "the secret never reaches the console");
        const runs = await admin("GET", `/api/v1/runs?device=${deviceId}`);
        const run = (await admin("GET", `/api/v1/runs/${runs.body[0].id}`)).body;
        assert.equal(run.state, "succeeded");
        assert.ok(run.events.some((e: any) => e.step === "0 Join the directory" && e.state === "succeeded"), JSON.stringify(run.events));
        const released = (await admin("GET", "/api/v1/audit?action=secret.release&limit=1000")).body as any[];
        assert.ok(released.some((a) => a.outcome === "success" && a.actor === `device:${deviceId}` && a.details?.assurance === "tpm"), "released to a tpm enrollment");
        t.diagnostic(`${m.firmware}: re-imaged unattended with its TPM`);

        if (m.firmware !== "uefi") return;
        // The impostor: same MAC and UUID, its own TPM. An administrator allows the deployment again.
        assert.equal((await admin("POST", `/api/v1/deployments/${deployment}/rerun`, { device: m.name })).status < 300, true);
        const impostor = await bootWithTpm(`${m.name}-impostor`, m, path.join(srv.dir, `${m.name}-impostor-tpm`), /requires the PXE password|SLIPWAY-AGENT run \S+ (succeeded|failed)|SLIPWAY-AGENT-EXIT code=\d+/);
        assert.match(impostor.match[0], /requires the PXE password/, impostor.serial.slice(-3000));
        assert.match(impostor.serial, /tpm endorsement key is not the one the site has on record/);
        const denied = ((await admin("GET", "/api/v1/audit?action=device.enroll&limit=1000")).body as any[])
          .filter((a) => a.outcome === "denied" && a.details?.macs?.includes(m.mac));
        assert.ok(denied.some((a) => a.details?.tpmEk && a.details.tpmEk !== undefined), `the refusal names the TPM presented: ${JSON.stringify(denied)}`);
        const after = ((await admin("GET", "/api/v1/audit?action=secret.release&limit=1000")).body as any[]).filter((a) => a.outcome === "success" && a.actor === `device:${deviceId}`);
        assert.equal(after.length, 1, "no second release");
      });
    }
  });
});
