/**
 * The audit log is append-only in effect: any single edited, deleted, inserted or
 * reordered row makes `slipway audit verify` fail and name the first bad entry; so do a
 * deleted head checkpoint, a log cut back with a rewritten or replayed head, and an empty
 * log. A transaction that appended and then failed never makes it fail.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import fs from "node:fs";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");

type Row = Record<string, unknown> & { seq: number };

for (const database of databasesUnderTest()) {
  describe(`audit verify on ${database}`, () => {
    let t: TestSite;
    let rows: Row[];
    const verify = (json = true) => new Promise<{ code: number; out: string }>((resolve) => {
      const env = { ...process.env, SLIPWAY_DATABASE_URL: t.databaseUrl ?? "" };
      execFile(bin, ["audit", "verify", "--data", t.dataDir, ...(json ? ["--json"] : [])], { env }, (err, stdout, stderr) => {
        resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, out: stdout + stderr });
      });
    });

    before(async () => {
      t = await startTestSite({ database });
      for (let i = 0; i < 6; i++) await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: `pc-${i}` } });
      await t.request("GET", "/api/v1/admins", { token: null }); // a denied request is audited too
      rows = (await t.site.db.all<Row>(`SELECT * FROM audit_log ORDER BY seq`)).map((r) => ({ ...r, seq: Number(r.seq) }));
      assert.ok(rows.length >= 10, `only ${rows.length} audit rows`);
    });
    after(() => t.close());

    const insert = (r: Row) => t.site.db.run(
      `INSERT INTO audit_log (seq, at, actor, action, object, outcome, details, prev_hash, hash, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [r.seq, r.at, r.actor, r.action, r.object, r.outcome, r.details, r.prev_hash, r.hash, r.signature]);

    async function expectBad(seq: number) {
      const r = await verify();
      assert.equal(r.code, 9, `verify should fail: ${r.out}`);
      assert.equal(JSON.parse(r.out).seq, seq, r.out);
    }
    async function expectGood() {
      const r = await verify();
      assert.equal(r.code, 0, r.out);
      assert.equal(JSON.parse(r.out).ok, true);
    }

    it("passes on the untouched log", expectGood);

    it("an edited row fails at that row", async () => {
      const r = rows[4];
      await t.site.db.run(`UPDATE audit_log SET actor = ? WHERE seq = ?`, ["admin:someone-else", r.seq]);
      try {
        await expectBad(r.seq);
      } finally {
        await t.site.db.run(`UPDATE audit_log SET actor = ? WHERE seq = ?`, [r.actor, r.seq]);
      }
      await expectGood();
    });

    it("a deleted middle row fails, naming the missing entry", async () => {
      const r = rows[3];
      await t.site.db.run(`DELETE FROM audit_log WHERE seq = ?`, [r.seq]);
      try {
        await expectBad(r.seq);
      } finally {
        await insert(r);
      }
      await expectGood();
    });

    it("deleting the newest row fails against the head checkpoint", async () => {
      const last = (await t.site.db.all<Row>(`SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1`))[0];
      const lastRow = { ...last, seq: Number(last.seq) };
      await t.site.db.run(`DELETE FROM audit_log WHERE seq = ?`, [lastRow.seq]);
      try {
        await expectBad(lastRow.seq);
      } finally {
        await insert(lastRow);
      }
      await expectGood();
    });

    it("an inserted row fails, at the end or past a gap", async () => {
      const last = Number((await t.site.db.get<{ m: number }>(`SELECT MAX(seq) AS m FROM audit_log`))!.m);
      const lastHash = (await t.site.db.get<{ hash: string }>(`SELECT hash FROM audit_log WHERE seq = ?`, [last]))!.hash;
      // A forger copies a real entry's hash and signature onto a new row chained to the last one.
      for (const seq of [last + 1, last + 50]) {
        await insert({ ...rows[2], seq, prev_hash: lastHash, action: "device.delete" });
        try {
          await expectBad(last + 1);
        } finally {
          await t.site.db.run(`DELETE FROM audit_log WHERE seq = ?`, [seq]);
        }
      }
      await expectGood();
    });

    it("two reordered rows fail at the first of them", async () => {
      const [a, b] = [rows[5], rows[6]];
      const swap = async (x: Row, y: Row) => {
        await t.site.db.run(`DELETE FROM audit_log WHERE seq IN (?, ?)`, [x.seq, y.seq]);
        await insert({ ...x, seq: y.seq });
        await insert({ ...y, seq: x.seq });
      };
      await swap(a, b);
      try {
        await expectBad(a.seq);
      } finally {
        await t.site.db.run(`DELETE FROM audit_log WHERE seq IN (?, ?)`, [a.seq, b.seq]);
        await insert(a);
        await insert(b);
      }
      await expectGood();
    });

    it("the API reports the same verdict, with how many entries it checked", async () => {
      const count = Number((await t.site.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM audit_log`))!.n);
      const r = await t.request("POST", "/api/v1/audit/verify", { token: t.adminToken });
      assert.equal(r.status, 200);
      assert.equal(r.body.ok, true);
      assert.equal(r.body.count, count);
    });

    it("the command says how many entries it checked, and the signed head it checked against", async () => {
      const count = Number((await t.site.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM audit_log`))!.n);
      const r = await verify(false);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, new RegExp(`Audit log intact: ${count} entries checked, last #${count} `));
      assert.match(r.out, new RegExp(`Head checkpoint: #${count}, signed, written `));
    });

    const headFile = () => path.join(t.dataDir, "audit.head");
    /** Runs `attack`, expects verify to fail with `reason`, then puts the rows and the head back. */
    async function tampered(attack: (rows: Row[], head: string) => Promise<void>, reason: RegExp, alsoText = false) {
      const all = (await t.site.db.all<Row>(`SELECT * FROM audit_log ORDER BY seq`)).map((r) => ({ ...r, seq: Number(r.seq) }));
      const head = fs.readFileSync(headFile(), "utf8");
      await attack(all, head);
      try {
        const r = await verify();
        assert.equal(r.code, 9, `verify should fail: ${r.out}`);
        assert.match(JSON.parse(r.out).reason, reason, r.out);
        if (alsoText) assert.match((await verify(false)).out, /TAMPERED at entry #\d+: .* \(\d+ entries checked before it\)/);
      } finally {
        await t.site.db.run(`DELETE FROM audit_log`);
        for (const r of all) await insert(r);
        fs.writeFileSync(headFile(), head);
      }
      await expectGood();
    }

    it("a deleted head checkpoint fails", () => tampered(async () => fs.rmSync(headFile()), /head checkpoint is missing/, true));

    it("an empty log fails, with or without its head", async () => {
      await tampered(async () => {
        await t.site.db.run(`DELETE FROM audit_log`);
        fs.rmSync(headFile());
      }, /log is empty/);
      await tampered(() => t.site.db.run(`DELETE FROM audit_log`).then(() => {}), /truncated/);
    });

    it("rows cut off the end together with a head rewritten without the key fail", async () => {
      // The old unsigned format, naming the new last row.
      await tampered(async (rows) => {
        const keep = rows[rows.length - 4];
        await t.site.db.run(`DELETE FROM audit_log WHERE seq > ?`, [keep.seq]);
        fs.writeFileSync(headFile(), JSON.stringify({ seq: keep.seq, hash: keep.hash }));
      }, /not signed/);
      // The real head's signature over the new last row's seq and hash.
      await tampered(async (rows, head) => {
        const keep = rows[rows.length - 4];
        await t.site.db.run(`DELETE FROM audit_log WHERE seq > ?`, [keep.seq]);
        fs.writeFileSync(headFile(), JSON.stringify({ ...JSON.parse(head), seq: keep.seq, hash: keep.hash }));
      }, /not signed/);
    });

    it("rows cut off past an older, genuinely signed head that was put back fail", async () => {
      const old = fs.readFileSync(headFile(), "utf8");
      const oldSeq = JSON.parse(old).seq as number;
      for (let i = 0; i < 3; i++) await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: `later-${i}` } });
      await tampered(async () => {
        await t.site.db.run(`DELETE FROM audit_log WHERE seq >= ?`, [oldSeq]);
        fs.writeFileSync(headFile(), old);
      }, /truncated/);
    });

    it("a log cut back exactly to an older signed head verifies alone, and fails against a checkpoint kept elsewhere", async () => {
      const old = fs.readFileSync(headFile(), "utf8");
      const oldSeq = JSON.parse(old).seq as number;
      for (let i = 0; i < 3; i++) await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: `kept-${i}` } });
      const printed = (await verify(false)).out;
      const kept = /Keep "#(\d+) ([0-9a-f]{64})"/.exec(printed);
      assert.ok(kept, printed);
      const run = (args: string[]) => new Promise<{ code: number; out: string }>((resolve) => {
        execFile(bin, ["audit", "verify", "--data", t.dataDir, ...args], { env: { ...process.env, SLIPWAY_DATABASE_URL: t.databaseUrl ?? "" } },
          (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, out: stdout + stderr }));
      });
      assert.equal((await run(["--expect", `${kept[1]}:${kept[2]}`])).code, 0, "the kept checkpoint is found on the intact log");
      const all = (await t.site.db.all<Row>(`SELECT * FROM audit_log ORDER BY seq`)).map((r) => ({ ...r, seq: Number(r.seq) }));
      const head = fs.readFileSync(headFile(), "utf8");
      await t.site.db.run(`DELETE FROM audit_log WHERE seq > ?`, [oldSeq]);
      fs.writeFileSync(headFile(), old);
      try {
        // What the head alone cannot show (docs/security-model.md): a consistent rollback.
        assert.equal((await verify()).code, 0);
        const r = await run(["--expect", `#${kept[1]} ${kept[2]}`]);
        assert.equal(r.code, 9, r.out);
        assert.match(r.out, new RegExp(`TAMPERED at entry #${kept[1]}: the entry kept elsewhere is missing`));
        assert.equal((await run(["--expect", "12:nothex"])).code, 2, "a malformed checkpoint is a usage error");
      } finally {
        await t.site.db.run(`DELETE FROM audit_log`);
        for (const r of all) await insert(r);
        fs.writeFileSync(headFile(), head);
      }
      await expectGood();
    });

    it("a transaction that appended and then failed leaves the log verifying", async () => {
      await assert.rejects(t.site.db.transaction(async (tx) => {
        await t.site.audit.append({ actor: "test", action: "device.delete", object: "device:x" }, tx);
        throw new Error("the change after the audit entry failed");
      }), /failed/);
      await expectGood();
      const r = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "after-rollback" } });
      assert.equal(r.status, 201);
      await expectGood();
    });
  });
}
