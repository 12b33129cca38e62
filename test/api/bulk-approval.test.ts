/**
 * Enrollment approval in bulk (issue #11, item 3): the machines a lab's PXE link recorded as
 * pending are listed with their link, MAC, UUID and time, and "approve all 40 from lab0 in the
 * last 10 minutes" is one command — one transaction, one audit entry listing them, only the
 * devices the filter names and the administrator's scopes hold. Real site, real PXE responder
 * recording the machines, the real CLI as a child process; the site's clock is a fake one that
 * starts now and only moves forward.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFile } from "node:child_process";
import { adminWithRoles, startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { startPxeRecorder, type PxeRecorder } from "../support/pxe-recorder.ts";
import { databasesUnderTest } from "../support/postgres.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");
const mac = (link: number, i: number) => `52:54:00:${link.toString(16).padStart(2, "0")}:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
const uuid = (link: number, i: number) => `6f1f4a52-1c9b-4f7e-9d7e-${link.toString(16).padStart(4, "0")}${i.toString(16).padStart(8, "0")}`;

type Device = { id: string; name: string; state: string; macs: string[]; smbiosUuid: string | null; attributes: Record<string, unknown>; createdAt: string };

for (const database of databasesUnderTest()) {
  describe(`enrollment approval in bulk on ${database}`, () => {
    let t: TestSite;
    let pxe: PxeRecorder;
    let offset = 0;
    let dir = "";
    const lab0Fresh: string[] = [];

    const admin = (method: string, p: string, body?: unknown, token = t.adminToken) => t.request(method, p, { token, body });
    const devices = async () => (await admin("GET", "/api/v1/devices")).body as Device[];
    const byMac = async () => new Map((await devices()).map((d) => [d.macs[0], d]));
    const audit = async (action: string) => ((await admin("GET", `/api/v1/audit?action=${action}&limit=1000`)).body as { actor: string; outcome: string; details: any }[]);
    function cli(args: string[], token = t.adminToken): Promise<{ code: number; stdout: string; stderr: string }> {
      const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
        SLIPWAY_TOKEN: token, SLIPWAY_CONFIG: path.join(dir, "none.json"), SLIPWAY_DATA: path.join(dir, "no-data") };
      return new Promise((resolve) => {
        execFile(bin, args, { env, cwd: dir, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
      });
    }

    before(async () => {
      t = await startTestSite({ database, now: () => new Date(Date.now() + offset) });
      dir = tempDir("slipway-bulk-");
      fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
      pxe = await startPxeRecorder(t, ["lab0", "lab1"]);
      // Five machines seen on lab0 twenty minutes before the lab of forty.
      for (let i = 0; i < 5; i++) await pxe.discover("lab0", mac(0, 100 + i), uuid(0, 100 + i));
      offset += 20 * 60_000;
      for (let i = 0; i < 40; i++) {
        await pxe.discover("lab0", mac(0, i), uuid(0, i));
        lab0Fresh.push(mac(0, i));
      }
      for (let i = 0; i < 3; i++) await pxe.discover("lab1", mac(1, i), uuid(1, i));
      // One recorded by hand: no link, and the API will not give it one.
      assert.equal((await admin("POST", "/api/v1/devices", { name: "by-hand", macs: [mac(9, 1)] })).status, 201);
      assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab", rule: null })).status, 201);
      assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab1", rule: "attributes.firstSeenLink == 'lab1'" })).status, 201);
    });
    after(async () => {
      await pxe?.close();
      await t?.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it("the PXE responder records the link a machine was first seen on; the API refuses to set that attribute", async () => {
      const d = (await byMac()).get(mac(0, 0))!;
      assert.equal(d.state, "pending");
      assert.equal(d.attributes.firstSeenLink, "lab0");
      let r = await admin("POST", "/api/v1/devices", { name: "forged", macs: [mac(9, 2)], attributes: { firstSeenLink: "lab0" } });
      assert.equal(r.status, 400, r.text);
      r = await admin("PATCH", `/api/v1/devices/${d.id}`, { attributes: { ...d.attributes, firstSeenLink: "lab1" } });
      assert.equal(r.status, 400, r.text);
      // Keeping it as it is (what `slipway device update --attr` sends back) is fine.
      r = await admin("PATCH", `/api/v1/devices/${d.id}`, { attributes: { ...d.attributes, room: "B12" } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.attributes.firstSeenLink, "lab0");
      assert.ok(!(await devices()).some((x) => x.name === "forged"), "nothing was created");
    });

    it("slipway device pending lists the machines of one link and time window with link, MAC, UUID, firmware and first seen", async () => {
      const r = await cli(["device", "pending", "--link", "lab0", "--since", "10m", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const rows = JSON.parse(r.stdout) as Device[];
      assert.deepEqual(rows.map((x) => x.macs[0]).sort(), [...lab0Fresh].sort());
      assert.ok(rows.every((x) => x.attributes.firstSeenLink === "lab0" && x.attributes.firmware === "bios" && /^6f1f4a52-/.test(x.smbiosUuid ?? "") && x.createdAt));
      const all = JSON.parse((await cli(["device", "pending", "--json"])).stdout) as unknown[];
      assert.equal(all.length, 5 + 40 + 3 + 1);
      const table = await cli(["device", "pending", "--link", "lab1"]);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /LINK\s+MAC\s+SMBIOS UUID/);
      assert.match(table.stdout, new RegExp(`lab1\\s+${mac(1, 0)}\\s+${uuid(1, 0)}`));
      assert.equal(table.stdout.trim().split("\n").length, 1 + 3);
      const bad = await cli(["device", "pending", "--since", "yesterday"]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /since/i);
    });

    it("an administrator without device.approve, or approving into a collection without collection.write, is refused and nothing changes", async () => {
      const deployer = await adminWithRoles(t, "deployer", ["deployment-administrator"]);
      const security = await adminWithRoles(t, "security", ["security-administrator"]);
      const before = JSON.stringify(await devices());
      let r = await admin("POST", "/api/v1/devices/approve", { link: "lab0", since: "10m" }, deployer);
      assert.equal(r.status, 403, r.text);
      assert.equal(r.body.code, "SLIPWAY_FORBIDDEN");
      const c = await cli(["device", "approve", "--pending", "--link", "lab0", "--since", "10m"], deployer);
      assert.notEqual(c.code, 0);
      assert.match(c.stderr, /device\.approve/);
      r = await admin("POST", "/api/v1/devices/approve", { link: "lab0", since: "10m", collection: "Lab" }, security);
      assert.equal(r.status, 403, r.text);
      assert.match(r.body.message, /collection\.write/);
      // Without any filter: refused, so a stray "approve everything" needs all: true.
      r = await admin("POST", "/api/v1/devices/approve", {});
      assert.equal(r.status, 400, r.text);
      assert.equal(JSON.stringify(await devices()), before, "nothing changed");
      const denied = (await audit("request.denied")).filter((e) => e.actor === "admin:deployer" || e.actor === "admin:security");
      assert.ok(denied.length >= 3, "the refusals are audited");
    });

    it("--dry-run and a wrong --expect approve nothing; then one command approves all 40 of lab0 in the last 10 minutes, in one audited transaction", async () => {
      const dry = await cli(["device", "approve", "--pending", "--link", "lab0", "--since", "10m", "--dry-run"]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /Would approve 40 pending devices/);
      const wrong = await cli(["device", "approve", "--pending", "--link", "lab0", "--since", "10m", "--expect", "39"]);
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stderr, /40 .*not the 39 expected/);
      assert.ok([...(await byMac()).values()].every((d) => d.state === "pending"), "nothing approved yet");

      const r = await cli(["device", "approve", "--pending", "--link", "lab0", "--since", "10m", "--collection", "Lab", "--expect", "40", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const answer = JSON.parse(r.stdout) as { devices: { id: string; macs: string[] }[] };
      assert.deepEqual(answer.devices.map((d) => d.macs[0]).sort(), [...lab0Fresh].sort(), "the answer lists the devices approved");
      const now = await byMac();
      for (const m of lab0Fresh) assert.equal(now.get(m)!.state, "approved", m);
      for (let i = 0; i < 5; i++) assert.equal(now.get(mac(0, 100 + i))!.state, "pending", "seen on lab0 before the window");
      for (let i = 0; i < 3; i++) assert.equal(now.get(mac(1, i))!.state, "pending", "another link");
      assert.equal(now.get(mac(9, 1))!.state, "pending", "recorded by hand");
      // Each approved device is armed for one enrollment, as a single approval does.
      const one = await admin("GET", `/api/v1/devices/${now.get(lab0Fresh[7])!.id}`);
      assert.equal(one.body.preApproval, "armed");
      assert.ok(one.body.collections.length === 1);
      const members = await admin("GET", "/api/v1/collections/Lab/members");
      assert.equal(members.body.length, 40);
      const bulk = await audit("device.approve.bulk");
      assert.equal(bulk.length, 1);
      assert.equal(bulk[0].actor, "admin:admin");
      assert.deepEqual([...bulk[0].details.devices].sort(), answer.devices.map((d) => d.id).sort());
      assert.deepEqual(bulk[0].details.filter, { link: "lab0", since: "10m" });
      assert.equal((await audit("device.approve")).length, 40, "and the per-device entries a single approval writes");
    });

    it("a scoped administrator approves only the pending devices in its scopes; the others stay pending and the refusal is audited", async () => {
      const lab1 = (await admin("GET", "/api/v1/collections/Lab1")).body.id as string;
      const scoped = await adminWithRoles(t, "lab1-approver", ["security-administrator"], [lab1]);
      const r = await admin("POST", "/api/v1/devices/approve", { all: true }, scoped);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.devices.map((d: { macs: string[] }) => d.macs[0]).sort(), [mac(1, 0), mac(1, 1), mac(1, 2)]);
      const now = await byMac();
      for (let i = 0; i < 5; i++) assert.equal(now.get(mac(0, 100 + i))!.state, "pending");
      assert.equal(now.get(mac(9, 1))!.state, "pending");
      const denied = (await audit("device.approve.bulk")).filter((e) => e.actor === "admin:lab1-approver" && e.outcome === "denied");
      assert.equal(denied.length, 1);
      assert.equal(denied[0].details.outsideScopes, 6);
      // Its answer and its pending list name nothing outside its scopes.
      const list = (await admin("GET", "/api/v1/devices?state=pending", undefined, scoped)).body as Device[];
      assert.deepEqual(list, []);
    });

    it("blocks in bulk with the same filter: the five old lab0 machines", async () => {
      const r = await cli(["device", "block", "--pending", "--link", "lab0", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).devices.length, 5);
      const now = await byMac();
      for (let i = 0; i < 5; i++) assert.equal(now.get(mac(0, 100 + i))!.state, "blocked");
      assert.equal(now.get(mac(0, 0))!.state, "approved", "only pending devices are touched");
      assert.equal((await audit("device.block.bulk")).length, 1);
      // Nothing left to approve on lab0: an empty answer, not an error.
      const none = await cli(["device", "approve", "--pending", "--link", "lab0"]);
      assert.equal(none.code, 0, none.stderr);
      assert.match(none.stdout, /No pending device matches/);
    });

    it("approve DEVICE still decides one device; a filter without --pending, or both, is a usage error", async () => {
      assert.equal((await cli(["device", "approve", "--link", "lab0"])).code, 2);
      assert.equal((await cli(["device", "approve", "by-hand", "--pending", "--all"])).code, 2);
      assert.equal((await cli(["device", "approve"])).code, 2);
      const one = await cli(["device", "approve", "by-hand"]);
      assert.equal(one.code, 0, one.stderr);
      assert.match(one.stdout, /Device "by-hand" is now approved/);
      assert.equal((await byMac()).get(mac(9, 1))!.state, "approved");
    });
  });
}
