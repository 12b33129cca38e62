/**
 * Boot scripts asked for again and again, over real HTTP: a machine gets back its unused boot
 * token instead of a new one (still bound to its MAC and SMBIOS UUID, still single use, never
 * longer-lived), and requests are limited per MAC and per link — a clear 429 that says to wait,
 * counted and audited once per window rather than once per request.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { newMachine } from "../support/device.ts";
import { startBootHttp, type BootHttp } from "../../src/roles/distribution/boot-http.ts";
import { deployToEveryone } from "../support/deployment.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");
type Got = { status: number; body: string; headers: http.IncomingHttpHeaders };
const get = (url: string, from?: string): Promise<Got> => new Promise((resolve, reject) => {
  http.get(url, { agent: false, ...(from ? { localAddress: from } : {}) }, (res) => {
    const chunks: Buffer[] = [];
    res.on("data", (c) => chunks.push(c));
    res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
  }).on("error", reject);
});
const run = (args: string[]): Promise<{ code: number; stderr: string }> => new Promise((resolve) => {
  execFile(bin, args, { env: { ...process.env, SLIPWAY_DATABASE_URL: "" } }, (err, _stdout, stderr) => resolve({ code: err ? 1 : 0, stderr }));
});
const tokenOf = (script: string) => /slipway\.token=(\S+)/.exec(script)?.[1];

describe("boot tokens asked for again, and boot script limits", () => {
  let t: TestSite;
  let boot: BootHttp;
  let url = "";
  let offset = 0; // the site's clock: real time, moved only forward
  const link = { name: "lo", address: "127.0.0.1", netmask: "255.0.0.0" };
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  const audit = async (action: string) => (await admin("GET", `/api/v1/audit?action=${action}&limit=1000`)).body as { object: string; details: Record<string, unknown> }[];
  const credentials = async (mac: string) => (await t.site.db.all<{ id: string }>(`SELECT id FROM enrollment_credentials WHERE kind = 'boot-token' AND mac = ?`, [mac])).length;
  let n = 0;
  async function approved(uuid: string | null = null): Promise<{ mac: string; id: string }> {
    const mac = `52:54:00:7b:00:${(++n).toString(16).padStart(2, "0")}`;
    const r = await admin("POST", "/api/v1/devices", { name: `limits-${n}`, macs: [mac], ...(uuid ? { smbiosUuid: uuid } : {}), state: "approved" });
    assert.equal(r.status, 201, r.text);
    return { mac, id: r.body.id };
  }

  before(async () => {
    t = await startTestSite({ now: () => new Date(Date.now() + offset) });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, "vmlinuz"), randomBytes(1000));
    fs.writeFileSync(path.join(dir, "initrd"), randomBytes(1000));
    const added = await run(["bootimage", "add", "--data", t.dataDir, "--name", "deploy-env", "--kernel", path.join(dir, "vmlinuz"), "--initrd", path.join(dir, "initrd")]);
    assert.equal(added.code, 0, added.stderr);
    await deployToEveryone(admin);
    boot = await startBootHttp({ site: t.site, links: [link], port: 0, unknown: "deny", managementPointUrl: () => t.mp.url, bindToDevice: false });
    url = boot.baseUrl(link);
  });
  after(async () => {
    await boot.close();
    await t.close();
  });

  it("asking again returns the same unused token: one credential, one audit entry; it still enrolls only its machine, once", async () => {
    const uuid = "7b7b7b7b-0000-4000-8000-000000000001";
    const { mac, id } = await approved(uuid);
    const tokens = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`);
      assert.equal(r.status, 200, r.body);
      tokens.add(tokenOf(r.body)!);
    }
    assert.equal(tokens.size, 1, "one token");
    const [token] = tokens;
    assert.match(token, /^swb_[A-Za-z0-9_-]{43}$/);
    assert.equal(await credentials(mac), 1, "one credential");
    assert.equal((await audit("pxe.script")).filter((e) => e.object === `device:${id}`).length, 1, "one audit entry");

    const wrongUuid = await newMachine(t, { macs: [mac], smbiosUuid: "7b7b7b7b-0000-4000-8000-0000000000ff" });
    assert.equal((await wrongUuid.enroll({ kind: "boot-token", token })).status, 401, "bound to the UUID");
    const wrongMac = await newMachine(t, { macs: ["52:54:00:7b:ff:ff"], smbiosUuid: uuid });
    assert.equal((await wrongMac.enroll({ kind: "boot-token", token })).status, 401, "bound to the MAC");
    const m = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
    assert.equal((await m.enroll({ kind: "boot-token", token })).status, 201);
    assert.equal((await (await newMachine(t, { macs: [mac], smbiosUuid: uuid })).enroll({ kind: "boot-token", token })).status, 401, "single use");

    const next = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`);
    const fresh = tokenOf(next.body);
    assert.ok(fresh && fresh !== token, "a spent token is never handed out again");
    assert.equal((await audit("pxe.script")).filter((e) => e.object === `device:${id}`).length, 2);
    const everything = JSON.stringify(await audit("pxe.script")) + JSON.stringify((await admin("GET", "/api/v1/audit?limit=1000")).body) + t.logLines.join("\n");
    for (const x of [token, fresh!]) assert.ok(!everything.includes(x), "a token is never logged nor audited");
    for (const x of [wrongUuid, wrongMac, m]) x.close();
  });

  it("a token is reused only for the same MAC and SMBIOS UUID", async () => {
    const { mac } = await approved(null);
    const u1 = "7b7b7b7b-0000-4000-8000-0000000000a1";
    const u2 = "7b7b7b7b-0000-4000-8000-0000000000a2";
    const t1 = tokenOf((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${u1}`)).body)!;
    const t2 = tokenOf((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${u2}`)).body)!;
    assert.notEqual(t1, t2);
    assert.equal(tokenOf((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${u1}`)).body), t1);
    const m = await newMachine(t, { macs: [mac], smbiosUuid: u2 });
    assert.equal((await m.enroll({ kind: "boot-token", token: t1 })).status, 401, "the first UUID's token does not enroll the second");
    m.close();
  });

  it("more than 10 requests a minute for one MAC: 429 with Retry-After and a script that says to wait, audited once; a minute later it is answered again", async () => {
    const uuid = "7b7b7b7b-0000-4000-8000-0000000000b1";
    const { mac } = await approved(uuid);
    const statuses: number[] = [];
    let refused: Got | null = null;
    for (let i = 0; i < 25; i++) {
      const r = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`);
      statuses.push(r.status);
      if (r.status === 429) refused = r;
    }
    assert.deepEqual(statuses, [...Array(10).fill(200), ...Array(15).fill(429)]);
    assert.ok(Number(refused!.headers["retry-after"]) >= 1 && Number(refused!.headers["retry-after"]) <= 60);
    assert.match(refused!.body, /^#!ipxe\necho Slipway: too many boot requests from this machine; wait \d+ seconds/);
    assert.ok(!refused!.body.includes("slipway.token"));
    const limited = () => audit("pxe.script.limited").then((a) => a.filter((e) => e.object === `mac:${mac}`));
    assert.equal((await limited()).length, 1, "fifteen refusals, one audit entry");
    assert.equal(await credentials(mac), 1, "and one token");
    offset += 61_000;
    assert.equal((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`)).status, 200, "answered again in the next minute");
    for (let i = 0; i < 9; i++) await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`);
    assert.equal((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`)).status, 429);
    const entries = await limited();
    assert.equal(entries.length, 2);
    assert.equal(entries.find((e) => e.details.refusedUnrecorded !== 0)?.details.refusedUnrecorded, 14, "the last window's unrecorded refusals are counted");
  });

  it("someone else asking for a machine's MAC from another address does not use up that machine's requests; one address cannot use up the link's", async () => {
    const uuid = "7b7b7b7b-0000-4000-8000-0000000000d1";
    const { mac } = await approved(uuid);
    // The attacker (127.0.0.2) asks for the victim's MAC until it is refused.
    const attacker: number[] = [];
    for (let i = 0; i < 12; i++) attacker.push((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`, "127.0.0.2")).status);
    assert.deepEqual(attacker, [...Array(10).fill(200), 429, 429]);
    // The machine itself (127.0.0.3) is answered, with a boot script.
    const own = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`, "127.0.0.3");
    assert.equal(own.status, 200, own.body);
    assert.ok(tokenOf(own.body));
    // One address asking with made-up MACs is stopped at 60 a minute; the link still answers others.
    const flood: number[] = [];
    for (let i = 0; i < 62; i++) flood.push((await get(`${url}/ipxe/machine?mac=02:00:00:7d:00:${i.toString(16).padStart(2, "0")}`, "127.0.0.4")).status);
    assert.deepEqual(flood.slice(60), [429, 429]);
    assert.match((await get(`${url}/ipxe/machine?mac=02:00:00:7d:01:01`, "127.0.0.4")).body, /too many boot requests from this address/);
    assert.equal((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`, "127.0.0.5")).status, 200, "another address is still answered");
    assert.equal((await audit("pxe.script.limited")).filter((e) => e.object === "address:127.0.0.4").length, 1, "recorded once");
  });

  it("made-up MACs never use up the link's budget and cannot flood the audit log; machines on record share a bounded link budget", async () => {
    const small = await startBootHttp({ site: t.site, links: [link], port: 0, unknown: "deny", managementPointUrl: () => t.mp.url, bindToDevice: false, limits: { perLink: 15 } });
    try {
      // Ten addresses asking with made-up MACs (what used up the link before): 404s, one audit entry per address.
      const macs = Array.from({ length: 40 }, (_, i) => `02:00:00:7c:00:${i.toString(16).padStart(2, "0")}`);
      const statuses: number[] = [];
      for (const [i, mac] of macs.entries()) statuses.push((await get(`${small.baseUrl(link)}/ipxe/machine?mac=${mac}`, `127.0.1.${i % 10 + 1}`)).status);
      assert.deepEqual(statuses, Array(40).fill(404));
      const refusedEntries = (await audit("pxe.script.refused")).filter((e) => macs.includes(e.details.mac as string));
      assert.equal(refusedEntries.length, 10, "one per address and minute");
      // A machine on record is still answered.
      const uuid = "7b7b7b7b-0000-4000-8000-0000000000e1";
      const { mac } = await approved(uuid);
      assert.equal((await get(`${small.baseUrl(link)}/ipxe/machine?mac=${mac}&uuid=${uuid}`, "127.0.1.20")).status, 200);
      // Machines on record, from many addresses, share the link's 15.
      const known: number[] = [];
      for (let i = 0; i < 16; i++) known.push((await get(`${small.baseUrl(link)}/ipxe/machine?mac=${mac}&uuid=${uuid}`, `127.0.2.${i + 1}`)).status);
      assert.deepEqual(known, [...Array(14).fill(200), 429, 429]);
      assert.equal((await audit("pxe.script.limited")).filter((e) => e.object === "link:lo").length, 1);
    } finally {
      await small.close();
    }
  });

  it("SMBIOS UUIDs that identify nobody: an all-zero or all-one UUID counts as absent (the machine enrolls without one); two machines sharing a UUID are not taken for each other", async () => {
    // A machine on record by MAC whose firmware reports the "not set" UUID (QEMU without -uuid, many real boards).
    for (const junk of ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]) {
      const { mac } = await approved();
      const r = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${junk}`);
      assert.equal(r.status, 200, r.body);
      const m = await newMachine(t, { macs: [mac], smbiosUuid: null }); // what the agent reports for it
      const e = await m.enroll({ kind: "boot-token", token: tokenOf(r.body) });
      assert.equal(e.status, 201, `the token is bound to no UUID: ${e.text}`);
      m.close();
    }
    // Machine A is on record with its MAC and UUID U; machine B, unknown, reports the same U.
    const shared = "7b7b7b7b-0000-4000-8000-0000000000f1";
    const a = await approved(shared);
    const bMac = "52:54:00:7b:ff:01";
    const b = await get(`${url}/ipxe/machine?mac=${bMac}&uuid=${shared}`);
    assert.equal(b.status, 404, `B is an unknown machine, not A: ${b.body}`);
    assert.equal(tokenOf(b.body), undefined, "no token of A's for B");
    assert.equal(await credentials(bMac), 0);
    assert.equal((await get(`${url}/ipxe/machine?mac=${a.mac}&uuid=${shared}`)).status, 200, "A still boots");
  });

  it("a device on record with a UUID gets no token for its MAC alone: absent, all-zero and all-one UUIDs are refused like another UUID, audited", async () => {
    const uuid = "7b7b7b7b-0000-4000-8000-0000000000f2";
    const { mac, id } = await approved(uuid);
    for (const claim of ["", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"]) {
      const r = await get(`${url}/ipxe/machine?mac=${mac}&uuid=${claim}`);
      assert.equal(r.status, 404, `uuid=${claim}: ${r.body}`);
      assert.match(r.body, /this machine does not match its record/);
      assert.equal(tokenOf(r.body), undefined);
    }
    assert.equal(await credentials(mac), 0, "no boot token was made");
    const refusals = (await t.site.audit.list({ action: "pxe.script.refused", limit: 1000 })).filter((e) => e.object === `device:${id}`);
    assert.equal(refusals.length, 4);
    assert.match(String(refusals[0].details?.reason), /the machine reported none/);
    assert.equal((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid.toUpperCase()}`)).status, 200, "its own UUID, in any case, still boots");
  });

  it("a token is handed out again only while 5 of its 10 minutes are left; never with a longer life", async () => {
    const uuid = "7b7b7b7b-0000-4000-8000-0000000000c1";
    const { mac } = await approved(uuid);
    const first = tokenOf((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`)).body)!;
    offset += 4 * 60_000;
    assert.equal(tokenOf((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`)).body), first, "6 minutes left");
    offset += 90_000;
    const second = tokenOf((await get(`${url}/ipxe/machine?mac=${mac}&uuid=${uuid}`)).body)!;
    assert.notEqual(second, first, "4.5 minutes left: a new one");
    const rows = await t.site.db.all<{ expires_at: string }>(`SELECT expires_at FROM enrollment_credentials WHERE mac = ? ORDER BY created_at`, [mac]);
    assert.equal(rows.length, 2);
    assert.ok(Date.parse(rows[0].expires_at) - Date.parse(rows[1].expires_at) < 0);
    assert.equal(Date.parse(rows[1].expires_at) - (Date.now() + offset) <= 10 * 60_000, true, "10 minutes from now, no more");
  });
});
