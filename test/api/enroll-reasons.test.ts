/**
 * What a machine is told when its boot token does not enroll it (issue #13): the reason — which
 * names only what the machine sent and what its token was issued for — and a next step, shown
 * on its console by the agent; the server logs it too. Refusals that would tell a stranger
 * something (a blocked device, a pre-approval) stay plain.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, type TestSite } from "../support/site.ts";
import { newMachine } from "../support/device.ts";
import { issueBootToken } from "../../src/site/credentials.ts";

describe("enrollment refusals the machine is told about", () => {
  let t: TestSite;
  let offset = 0;
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  const mac = "52:54:00:74:00:01";
  const uuid = "00000000-0000-4000-8000-000000740001";
  let deviceId = "";
  before(async () => {
    t = await startTestSite({ now: () => new Date(Date.now() + offset) });
    const d = await admin("POST", "/api/v1/devices", { name: "told-1", macs: [mac], smbiosUuid: uuid, state: "approved" });
    assert.equal(d.status, 201, d.text);
    deviceId = d.body.id;
  });
  after(() => t.close());

  it("a token bound to another UUID or MAC says which, and what to do", async () => {
    const { token } = await issueBootToken(t.site, { deviceId, mac, smbiosUuid: uuid });
    const other = await newMachine(t, { macs: [mac], smbiosUuid: null });
    let r = await other.enroll({ kind: "boot-token", token });
    assert.equal(r.status, 401);
    assert.match(r.body.message, new RegExp(`bound to SMBIOS UUID ${uuid}, and this machine reports none; the firmware and the deploy environment disagree`));
    const wrongMac = await newMachine(t, { macs: ["52:54:00:74:00:99"], smbiosUuid: uuid });
    r = await wrongMac.enroll({ kind: "boot-token", token });
    assert.match(r.body.message, /bound to MAC 52:54:00:74:00:01, and this machine reports 52:54:00:74:00:99; boot from the network card/);
    for (const m of [other, wrongMac]) m.close();
  });

  it("a used or expired token says so, and to restart through PXE", async () => {
    const { token } = await issueBootToken(t.site, { deviceId, mac, smbiosUuid: uuid });
    const m = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
    assert.equal((await m.enroll({ kind: "boot-token", token })).status, 201);
    const again = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
    let r = await again.enroll({ kind: "boot-token", token });
    assert.match(r.body.message, /boot token already used; restart the machine through PXE/);
    const late = await issueBootToken(t.site, { deviceId, mac, smbiosUuid: uuid });
    offset += 11 * 60_000;
    r = await again.enroll({ kind: "boot-token", token: late.token });
    assert.match(r.body.message, /boot token expired; restart the machine through PXE/);
    for (const x of [m, again]) x.close();
  });

  it("a pre-approval refusal stays plain: it would tell a stranger which MAC and UUID are on record", async () => {
    const stranger = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
    const r = await stranger.enroll({ kind: "pre-approved" });
    assert.equal(r.status, 401);
    assert.equal(r.body.message, "Cannot enroll: the credential is not valid for this machine");
    stranger.close();
  });
});
