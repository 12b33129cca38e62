/**
 * Enrollment approval (issue #11 item 3): 40 machines that enrolled with only a boot token
 * (`sniffable`: no secret) are approved by one CLI command; they then get their secrets, and
 * the TPM endorsement key an approved enrollment proved is recorded on its device (its next
 * enrollment is `tpm`, unattended). What the filter does not name stays sniffable; --expect
 * refuses a count that does not match; the permission is needed; all of it audited.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { newMachine, type TestMachine } from "../support/device.ts";
import { startSwtpm, type Swtpm } from "../support/swtpm.ts";
import { tpmPart } from "../support/tpm.ts";
import { openTpmSocket, TpmSession } from "../../src/agent/tpm.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { parseEkPublic } from "../../src/security/tpm-credential.ts";
import { ExitCode } from "../../src/cli/command.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");

for (const database of databasesUnderTest()) {
  describe(`enrollment approval on ${database}`, () => {
    let t: TestSite;
    let dir = "";
    let sw: Swtpm;
    let offset = 0;
    let secretDeployment = "";
    let n = 0;
    const canary = `CANARY-${randomBytes(8).toString("hex")}`;
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const cli = (args: string[], token = t.adminToken): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
      const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
        SLIPWAY_CONFIG: path.join(dir, "profile.json"), SLIPWAY_TOKEN: token };
      execFile(bin, args, { env, cwd: dir, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
    });
    /** An approved device and a machine that enrolled with its boot token alone (sniffable). */
    async function sniffable(tpm?: Swtpm): Promise<{ m: TestMachine; id: string; serial: string }> {
      n++;
      const h = n.toString(16).padStart(4, "0");
      const ids = { macs: [`52:54:00:72:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000072${h}` };
      const r = await admin("POST", "/api/v1/devices", { name: `lab-${h}`, macs: ids.macs, smbiosUuid: ids.smbiosUuid, state: "approved", attributes: { vendor: "QEMU" } });
      assert.equal(r.status, 201, r.text);
      const m = await newMachine(t, ids);
      const e = await enrollAs(m, r.body.id, tpm);
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "sniffable");
      assert.equal(e.body.awaitingApproval, true, "the agent is told an approval would give it its deployment");
      return { m, id: r.body.id, serial: e.body.serial };
    }
    /** Enrolls `m` with a fresh boot token for `deviceId`, answering the site's TPM challenge when given a TPM. */
    async function enrollAs(m: TestMachine, deviceId: string, tpm?: Swtpm) {
      const token = (await issueBootToken(t.site, { deviceId, mac: m.macs[0], smbiosUuid: m.smbiosUuid })).token;
      let top = {};
      if (tpm) {
        const session = await TpmSession.open(await openTpmSocket(tpm.socket));
        try {
          top = { tpm: await tpmPart(t, token, session) };
        } finally {
          await session.close();
        }
      }
      return m.enroll({ kind: "boot-token", token }, {}, top);
    }
    async function askSecret(m: TestMachine) {
      const run = await m.call("POST", "/mp/v1/runs", { deployment: secretDeployment, bootPath: "pxe" });
      if (run.status !== 201 && run.status !== 200) return run;
      assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "1", name: "Join", state: "started" })).status, 201);
      return m.call("POST", `/mp/v1/runs/${run.body.id}/secrets`, { step: "1", name: "JoinCredential" });
    }

    before(async () => {
      t = await startTestSite({ database, now: () => new Date(Date.now() + offset) });
      dir = tempDir("slipway-enr-appr-");
      fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
      sw = await startSwtpm(path.join(dir, "tpm"));
      assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.vendor == 'QEMU'" })).status, 201);
      assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: canary, secret: true })).status, 201);
      const doc = { name: "Join build", steps: [
        { name: "Say", type: "run-command", with: { command: "true" } },
        { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } },
      ] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
      const d = await admin("POST", "/api/v1/deployments", { name: "Join lab", taskSequence: "Join build", collection: "Lab", purpose: "required", bootPaths: ["pxe"] });
      assert.equal(d.status, 201, d.text);
      secretDeployment = d.body.id;
    });
    after(async () => {
      await t?.close();
      await sw?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("one command approves the 40 enrollments of the last minutes: they get the secret, the EK one proved is recorded, older ones stay sniffable; all audited", async () => {
      const early = [await sniffable(), await sniffable()];
      offset += 4 * 60_000; // the lab boots four minutes later (less than the CA's 5-minute backdating)
      const lab: { m: TestMachine; id: string; serial: string }[] = [await sniffable(sw)];
      for (let i = 1; i < 40; i++) lab.push(await sniffable());
      for (const x of [early[0], lab[0]]) assert.equal((await askSecret(x.m)).status, 403, "sniffable: no secret before approval");

      const pending = await cli(["enrollment", "pending", "--since", "3m", "--json"]);
      assert.equal(pending.code, 0, pending.stderr);
      const listed = JSON.parse(pending.stdout) as { serial: string; ekFingerprint: string | null }[];
      assert.deepEqual(new Set(listed.map((e) => e.serial)), new Set(lab.map((x) => x.serial)));
      const ekListed = listed.find((e) => e.serial === lab[0].serial)!.ekFingerprint;
      const session = await TpmSession.open(await openTpmSocket(sw.socket));
      const ek = parseEkPublic(session.identity().ekPublic).fingerprint;
      await session.close();
      assert.equal(ekListed, ek, "the EK the enrollment proved is shown for review");

      const wrong = await cli(["enrollment", "approve", "--since", "3m", "--expect", "41"]);
      assert.equal(wrong.code, ExitCode.CONFLICT, wrong.stderr);
      assert.equal((await askSecret(lab[1].m)).status, 403, "a refused count changed nothing");
      const dry = await cli(["enrollment", "approve", "--since", "3m", "--expect", "40", "--dry-run"]);
      assert.match(dry.stdout, /Would approve 40 enrollments/);

      const approved = await cli(["enrollment", "approve", "--since", "3m", "--expect", "40"]);
      assert.equal(approved.code, 0, approved.stderr);
      assert.match(approved.stdout, /Approved 40 enrollments/);
      for (const x of lab) {
        const r = await askSecret(x.m);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.value, canary);
      }
      for (const x of early) assert.equal((await askSecret(x.m)).status, 403, "outside the filter: still sniffable");
      assert.equal((await admin("GET", `/api/v1/devices/${lab[0].id}/tpm`)).body.ekFingerprint, null, "a filter approval records no EK");
      const one = ((await admin("GET", "/api/v1/audit?action=enrollment.approve&limit=1000")).body as any[]).find((a) => a.details?.serial === lab[0].serial);
      assert.match(one.details.ekNotRecorded, /filter approval records no EK/);
      const bulk = (await admin("GET", "/api/v1/audit?action=enrollment.approve.bulk&limit=100")).body as any[];
      assert.equal(bulk.filter((a) => a.outcome === "success").length, 1);
      assert.equal(bulk.find((a) => a.outcome === "success").details.serials.length, 40);
      assert.equal(((await admin("GET", "/api/v1/audit?action=enrollment.approve&limit=1000")).body as any[]).length, 40);
      assert.deepEqual(JSON.parse((await cli(["enrollment", "pending", "--since", "3m", "--json"])).stdout), [], "nothing left to approve");

      // An enrollment of lab[1]'s device within the hour contests the filter approval: the real
      // machine after an impostor, or an impostor after the real machine — the site cannot tell.
      const second = await newMachine(t, { macs: lab[1].m.macs, smbiosUuid: lab[1].m.smbiosUuid });
      const c = await enrollAs(second, lab[1].id);
      assert.equal(c.status, 401, c.text);
      assert.equal((await admin("GET", `/api/v1/devices/${lab[1].id}`)).body.state, "blocked", "the device is blocked until an administrator decides");
      assert.equal((await askSecret(lab[1].m)).status, 403, "the approved certificate is revoked");
      const alert = ((await admin("GET", "/api/v1/audit?action=enrollment.contested&limit=10")).body as any[]).find((a) => a.object === `device:${lab[1].id}`);
      assert.equal(alert.details.revoked, lab[1].serial);
      second.close();
      for (const x of [...early, ...lab]) x.m.close();
    });

    it("approving by serial records the EK the enrollment proved: the machine's re-image is then tpm, unattended", async () => {
      const x = await sniffable(sw);
      const ok = await cli(["enrollment", "approve", x.serial]);
      assert.equal(ok.code, 0, ok.stderr);
      const session = await TpmSession.open(await openTpmSocket(sw.socket));
      const ek = parseEkPublic(session.identity().ekPublic).fingerprint;
      await session.close();
      assert.equal((await admin("GET", `/api/v1/devices/${x.id}/tpm`)).body.ekFingerprint, ek);
      const reimaged = await newMachine(t, { macs: x.m.macs, smbiosUuid: x.m.smbiosUuid });
      const e = await enrollAs(reimaged, x.id, sw);
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "tpm", "a serial approval is not contested by the machine's own re-image");
      assert.equal(e.body.awaitingApproval, false);
      reimaged.close();
      x.m.close();
    });

    it("a pre-approval enrollment (no boot, only a claimed MAC and UUID) is never approved by a filter", async () => {
      n++;
      const h = n.toString(16).padStart(4, "0");
      const ids = { macs: [`52:54:00:72:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000072${h}` };
      const d = await admin("POST", "/api/v1/devices", { name: `pre-${h}`, ...ids, state: "approved", attributes: { vendor: "QEMU" } });
      const m = await newMachine(t, ids);
      const e = await m.enroll({ kind: "pre-approved" });
      assert.equal(e.status, 201, e.text);
      const r = await admin("POST", "/api/v1/enrollments/approve", { all: true });
      assert.equal(r.status, 200, r.text);
      assert.ok(!r.body.enrollments.some((x: any) => x.serial === e.body.serial));
      assert.ok(r.body.contested.some((x: any) => x.serial === e.body.serial && x.preApproval));
      assert.equal((await askSecret(m)).status, 403);
      assert.equal((await admin("GET", `/api/v1/devices/${d.body.id}`)).body.state, "approved");
      m.close();
    });

    it("an impostor enrolling as a waiting machine makes its enrollment contested: a filter never approves it, nor records the impostor's EK", async () => {
      const real = await sniffable(sw);
      const impostorTpm = await startSwtpm(path.join(dir, "impostor-tpm"));
      try {
        const impostor = await newMachine(t, { macs: real.m.macs, smbiosUuid: real.m.smbiosUuid });
        const e = await enrollAs(impostor, real.id, impostorTpm);
        assert.equal(e.status, 201, e.text);
        const shown = JSON.parse((await cli(["enrollment", "pending", "--json"])).stdout) as { serial: string; deviceId: string; contested: number }[];
        const row = shown.find((x) => x.deviceId === real.id)!;
        assert.equal(row.serial, e.body.serial, "only the newest enrollment is live");
        assert.equal(row.contested, 1, "it is marked contested");
        const bulk = await cli(["enrollment", "approve", "--all"]);
        assert.equal(bulk.code, 0, bulk.stderr);
        assert.match(bulk.stdout, /Not approved: .* is contested/);
        assert.equal((await askSecret(impostor)).status, 403, "the impostor is not approved by a filter");
        assert.equal((await admin("GET", `/api/v1/devices/${real.id}/tpm`)).body.ekFingerprint, null, "no EK recorded");
        assert.ok(((await admin("GET", "/api/v1/audit?action=enrollment.approve.bulk&limit=100")).body as any[])
          .some((a) => a.outcome === "denied" && (a.details?.serials ?? []).includes(e.body.serial)), "audited");
        impostor.close();
      } finally {
        await impostorTpm.stop();
        real.m.close();
      }
    });

    it("needs device.approve, a filter or serials, and refuses bad input unchanged", async () => {
      const x = await sniffable();
      assert.equal((await cli(["enrollment", "approve"])).code, ExitCode.USAGE);
      assert.equal((await admin("POST", "/api/v1/enrollments/approve", {})).status, 400);
      assert.equal((await admin("POST", "/api/v1/enrollments/approve", { since: "yesterday" })).status, 400);
      assert.equal((await admin("POST", "/api/v1/enrollments/approve", { serials: ["zz"] })).status, 400);
      const r = await admin("POST", "/api/v1/admins", { username: `reader${n}`, password: "Reader-Passphrase-2026-x", roles: ["read-only-analyst"] });
      assert.equal(r.status, 201, r.text);
      const tok = (await t.request("POST", "/api/v1/sessions", { body: { username: `reader${n}`, password: "Reader-Passphrase-2026-x" } })).body.token as string;
      await t.request("POST", "/api/v1/me/password", { token: tok, body: { currentPassword: "Reader-Passphrase-2026-x", newPassword: "Reader-Passphrase-2026-y" } });
      const refused = await cli(["enrollment", "approve", x.serial], tok);
      assert.equal(refused.code, ExitCode.FORBIDDEN, refused.stderr);
      assert.equal((await askSecret(x.m)).status, 403, "still sniffable");
      const ok = await cli(["enrollment", "approve", x.serial]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal((await askSecret(x.m)).status, 200);
      x.m.close();
    });
  });
}
