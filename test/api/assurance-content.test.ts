/**
 * An enrollment not sure enough for a deployment gets none of its content either: the
 * management point decides image access from the policy that enrollment's certificate gets,
 * not from the device's unfiltered policy (found in review of issue #11's first part).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { fetchBytes, newMachine, type TestMachine, enrollApproved } from "../support/device.ts";
import { addImage } from "../../src/site/content-library.ts";
import { issueBootToken } from "../../src/site/credentials.ts";

describe("content and enrollment assurance", () => {
  let t: TestSite;
  let digest = "";
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  const machines: TestMachine[] = [];
  before(async () => {
    t = await startTestSite();
    const file = path.join(t.dataDir, "base.img");
    fs.writeFileSync(file, randomBytes(64 * 1024));
    digest = (await addImage(t.site, { file, name: "base", actor: "test" })).record.digest;
    assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.room == 'L1'" })).status, 201);
    assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "not-for-sniffers", secret: true })).status, 201);
    const doc = { name: "Build", steps: [
      { name: "Apply", type: "apply-image", with: { image: "base" } },
      { name: "Join", type: "run-command", with: { command: "true" }, runAs: { secret: "JoinCredential" } },
    ] };
    assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
    assert.equal((await admin("POST", "/api/v1/deployments", { name: "Build", taskSequence: "Build", collection: "Lab", purpose: "required", bootPaths: ["pxe"] })).status, 201);
  });
  after(async () => {
    for (const m of machines) m.close();
    await t.close();
  });

  async function enrolled(n: number, how: "boot-token" | "pre-approved"): Promise<TestMachine> {
    const ids = { macs: [`52:54:00:61:00:0${n}`], smbiosUuid: `00000000-0000-4000-8000-00000061000${n}` };
    const d = await admin("POST", "/api/v1/devices", { name: `content-${n}`, ...ids, state: "approved", attributes: { room: "L1" } });
    assert.equal(d.status, 201, d.text);
    const m = await newMachine(t, ids);
    machines.push(m);
    const cred = how === "boot-token"
      ? { kind: "boot-token", token: (await issueBootToken(t.site, { deviceId: d.body.id, mac: ids.macs[0], smbiosUuid: ids.smbiosUuid })).token }
      : { kind: "pre-approved" };
    assert.equal((how === "pre-approved" ? await enrollApproved(t, m) : await m.enroll(cred)).status, 201);
    return m;
  }

  it("a sniffable enrollment gets 403 for the image of a deployment it may not run; an approved one gets it", async () => {
    const sniffable = await enrolled(1, "boot-token");
    for (const part of ["manifest", "data"]) {
      const r = await fetchBytes(t.mp.url, t.ca, sniffable, `/mp/v1/content/${digest}/${part}`, { agent: sniffable.agent });
      assert.equal(r.status, 403, `${part}: ${r.body.toString()}`);
    }
    const denied = (await admin("GET", "/api/v1/audit?action=content.denied&limit=100")).body as unknown[];
    assert.ok(denied.length >= 2, "each refusal is audited");
    const sure = await enrolled(2, "pre-approved");
    const ok = await fetchBytes(t.mp.url, t.ca, sure, `/mp/v1/content/${digest}/data`, { agent: sure.agent });
    assert.equal(ok.status, 200);
  });
});
