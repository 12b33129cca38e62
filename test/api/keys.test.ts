/** Master key rotation while the site keeps serving. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { Keyring, type Sealed } from "../../src/security/envelope.ts";
import { secretAad } from "../../src/site/secrets.ts";

describe("master key rotation", () => {
  let t: TestSite;
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  it("rewraps every secret while requests keep being served, then destroys the old key", async () => {
    const value = (i: number) => `secret-value-${i}-${"x".repeat(i % 7)}`;
    for (let i = 0; i < 40; i++) {
      const r = await t.request("POST", "/api/v1/variables", { token: t.adminToken, body: { scope: "site", name: `S${i}`, value: value(i), secret: true } });
      assert.equal(r.status, 201);
    }
    const before = (await t.request("GET", "/api/v1/keys", { token: t.adminToken })).body;
    assert.deepEqual(Object.values(before.secretsByKey), [40]);

    // Writes and reads race the rotation.
    const traffic = Array.from({ length: 60 }, (_, i) => i % 2
      ? t.request("GET", "/api/v1/variables", { token: t.adminToken })
      : t.request("POST", "/api/v1/variables", { token: t.adminToken, body: { scope: "site", name: `During${i}`, value: value(100 + i), secret: true } }));
    const [rotation, ...results] = await Promise.all([t.request("POST", "/api/v1/keys/rotate", { token: t.adminToken }), ...traffic]);
    assert.equal(rotation.status, 200, rotation.text);
    for (const r of results) assert.ok(r.status === 200 || r.status === 201, `${r.status} ${r.text}`);
    assert.notEqual(rotation.body.to, before.current);
    assert.deepEqual(rotation.body.retired, [before.current]);

    const after = (await t.request("GET", "/api/v1/keys", { token: t.adminToken })).body;
    assert.equal(after.current, rotation.body.to);
    assert.deepEqual(Object.keys(after.secretsByKey), [rotation.body.to], "no secret is left under the old key");
    const dir = path.join(t.dataDir, "keys", "master");
    assert.ok(!fs.readdirSync(dir).some((f) => f.includes(before.current)), "the old master key file is gone");

    // A fresh keyring from disk (another process) opens every secret.
    const fresh = Keyring.open(dir);
    const rows = await t.site.db.all<{ name: string; sealed: string }>(`SELECT name, sealed FROM variables WHERE secret = 1`);
    assert.equal(rows.length, 70);
    for (const r of rows) {
      const i = r.name.startsWith("During") ? 100 + Number(r.name.slice(6)) : Number(r.name.slice(1));
      assert.equal(fresh.open(JSON.parse(r.sealed) as Sealed, secretAad("site", "", r.name)), value(i));
    }
    const audit = await t.request("GET", "/api/v1/audit?action=keys.rotate", { token: t.adminToken });
    assert.ok(audit.body[0].details.rewrapped >= 40, "every secret written before the rotation was rewrapped");
  });

  it("only key holders may rotate", async () => {
    const token = await adminWithRoles(t, "deployer", ["deployment-administrator"]);
    assert.equal((await t.request("POST", "/api/v1/keys/rotate", { token })).status, 403);
  });
});
