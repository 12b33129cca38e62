/**
 * Secret variables are write-only and never rest in plaintext: a canary secret is written,
 * the site is exercised, and the canary is then searched for — as text, base64 and hex —
 * in every API response, the server's log, the audit log, the data folder and the raw
 * database (SQLite file and WAL, or a PostgreSQL dump).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { secretAad } from "../../src/site/secrets.ts";

/** Every form the canary could take in bytes: text, base64 at each alignment, hex. */
function encodings(secret: string): Buffer[] {
  const raw = Buffer.from(secret, "utf8");
  const out = [raw, Buffer.from(raw.toString("hex")), Buffer.from(raw.toString("hex").toUpperCase())];
  for (let pad = 0; pad < 3; pad++) {
    const b64 = Buffer.concat([Buffer.alloc(pad, 0x41), raw]).toString("base64");
    // Drop characters that depend on the padding bytes or the end; the rest is stable.
    const stable = b64.slice(Math.ceil((pad * 4) / 3) + 1, b64.length - 4);
    out.push(Buffer.from(stable), Buffer.from(stable.replace(/\+/g, "-").replace(/\//g, "_")));
  }
  return out;
}

function findIn(haystack: Buffer, secret: string): string | null {
  for (const e of encodings(secret)) if (haystack.includes(e)) return e.toString();
  return null;
}

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true }).filter((d) => d.isFile()).map((d) => path.join(d.parentPath, d.name));
}

for (const database of databasesUnderTest()) {
  describe(`canary secret on ${database}`, () => {
    let t: TestSite;
    const canary = `CANARY-${randomBytes(12).toString("hex")}`;
    const responses: string[] = [];
    let secretId = "";
    const call = async (method: string, p: string, body?: unknown) => {
      const r = await t.request(method, p, { token: t.adminToken, body });
      responses.push(r.text);
      return r;
    };

    before(async () => {
      t = await startTestSite({ database });
      const coll = await call("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.room == 'B12'" });
      await call("POST", "/api/v1/devices", { name: "pc-1", macs: ["52:54:00:aa:00:01"], attributes: { room: "B12" } });
      const s = await call("POST", "/api/v1/variables", { scope: "site", name: "DomainJoinPassword", value: canary, secret: true });
      assert.equal(s.status, 201, s.text);
      secretId = s.body.id;
      await call("POST", "/api/v1/variables", { scope: "collection", target: coll.body.id, name: "LabSecret", value: canary, secret: true });
      await call("POST", "/api/v1/variables", { scope: "device", target: "pc-1", name: "DeviceSecret", value: canary, secret: true });
      const doc = `name: Join\nsteps:\n  - name: Join domain\n    type: run-command\n    with: { command: "realm join example.test" }\n    runAs: { secret: DomainJoinPassword }\n`;
      const ts = await call("POST", "/api/v1/task-sequences", { document: doc });
      assert.equal(ts.status, 201, ts.text);
      await call("POST", "/api/v1/deployments", { name: "Join lab", taskSequence: "Join", collection: "Lab" });
      // Every read there is, plus a rotation that rewraps the secret's data key.
      for (const p of ["/api/v1/variables", `/api/v1/variables/${secretId}`, "/api/v1/variables?scope=device&target=pc-1",
        "/api/v1/task-sequences/Join/versions/1", "/api/v1/deployments", "/api/v1/audit?limit=1000", "/api/v1/openapi.json",
        "/api/v1/devices/pc-1", "/api/v1/collections/Lab", "/api/v1/keys"]) await call("GET", p);
      const rot = await call("POST", "/api/v1/keys/rotate");
      assert.equal(rot.status, 200, rot.text);
      assert.equal(rot.body.rewrapped, 3);
      // Writing it again replaces it; the value still never comes back.
      await call("POST", "/api/v1/variables", { scope: "site", name: "DomainJoinPassword", value: canary, secret: true });
      await call("GET", "/api/v1/audit?limit=1000");
    });
    after(() => t.close());

    it("is stored, sealed, and opens only with the master key", async () => {
      const row = (await t.site.db.get<{ sealed: string; value: string | null }>(`SELECT sealed, value FROM variables WHERE id = ?`, [secretId]))!;
      assert.equal(row.value, null);
      assert.equal(t.site.keys.keyring.open(JSON.parse(row.sealed), secretAad("site", "", "DomainJoinPassword")), canary);
    });

    it("never appears in an API response", () => {
      for (const text of responses) assert.equal(findIn(Buffer.from(text), canary), null, `response leaked it: ${text.slice(0, 200)}`);
      const list = JSON.parse(responses.find((r) => r.includes("DomainJoinPassword") && r.startsWith("["))!);
      const v = list.find((x: { name: string }) => x.name === "DomainJoinPassword");
      assert.deepEqual(Object.keys(v).sort(), ["createdAt", "id", "isSet", "name", "scope", "secret", "target", "updatedAt"]);
    });

    it("never appears in the server log or the audit log", async () => {
      assert.ok(t.logLines.length > 0);
      assert.equal(findIn(Buffer.from(t.logLines.join("\n")), canary), null);
      const rows = await t.site.db.all(`SELECT * FROM audit_log`);
      assert.ok(rows.length > 5);
      assert.equal(findIn(Buffer.from(JSON.stringify(rows)), canary), null);
    });

    it("never appears in the data folder or the raw database", async () => {
      if (database === "sqlite") {
        // Checkpointing would hide what sat in the WAL: read the files as they are.
        const files = filesUnder(t.dataDir);
        assert.ok(files.some((f) => f.endsWith("slipway.db-wal")), `no WAL among ${files.join(", ")}`);
        for (const f of files) assert.equal(findIn(fs.readFileSync(f), canary), null, `${f} holds it`);
      } else {
        for (const f of filesUnder(t.dataDir)) assert.equal(findIn(fs.readFileSync(f), canary), null, `${f} holds it`);
        const dump = execFileSync("pg_dump", ["--no-owner", "--dbname", process.env.SLIPWAY_TEST_DATABASE_URL!], { maxBuffer: 256 * 1024 * 1024 });
        assert.ok(dump.includes(Buffer.from("DomainJoinPassword")), "the dump holds the variables table");
        assert.equal(findIn(dump, canary), null, "the PostgreSQL dump holds it");
      }
    });
  });
}
