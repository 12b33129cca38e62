/**
 * The audit log's head checkpoint on SQLite and PostgreSQL: signed, written only after the
 * append commits (so a rolled-back append never raises a false alarm), never moved back by
 * another process, and kept as evidence once the log no longer matches it. A fast-check
 * property: any sequence of appends, committed and rolled-back transactions and batches
 * verifies after every step, and any single change to the stored rows or the head is caught.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import fc from "fast-check";
import { openDb, type Db } from "../../src/storage/db.ts";
import { migrate } from "../../src/storage/migrations.ts";
import { AuditStore, readHead, verifyAuditLog } from "../../src/storage/audit-store.ts";
import { createSchema, dropSchema, databasesUnderTest } from "../support/postgres.ts";

const tempDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix));

type Log = { db: Db; dir: string; target: string; audit: AuditStore; publicKey: KeyObject; privateKey: KeyObject; close(): Promise<void> };

async function freshLog(kind: "sqlite" | "postgres"): Promise<Log> {
  const dir = tempDir("slipway-audit-head-");
  let target = path.join(dir, "slipway.db");
  let schema = "";
  if (kind === "postgres") {
    schema = `h_${randomBytes(6).toString("hex")}`;
    target = await createSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
  }
  const db = await openDb(kind === "postgres" ? { url: target, sqlitePath: "" } : { sqlitePath: target });
  await migrate(db);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const audit = new AuditStore({ db, signingKey: privateKey, dataDir: dir });
  return {
    db, dir, target, audit, publicKey, privateKey,
    async close() {
      await db.close();
      if (schema) await dropSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const verify = (l: Log) => verifyAuditLog(l.db, l.publicKey, { head: readHead(l.dir) });
const headSeq = (l: Log) => (readHead(l.dir) as { seq?: number } | null)?.seq;

type Row = { seq: number; at: string; actor: string; action: string; object: string | null; outcome: string; details: string | null; prev_hash: string; hash: string; signature: string };
const rowsOf = async (db: Db) => (await db.all<Row>(`SELECT * FROM audit_log ORDER BY seq`)).map((r) => ({ ...r, seq: Number(r.seq) }));
const insertRow = (db: Db, r: Row) => db.run(
  `INSERT INTO audit_log (seq, at, actor, action, object, outcome, details, prev_hash, hash, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  [r.seq, r.at, r.actor, r.action, r.object, r.outcome, r.details, r.prev_hash, r.hash, r.signature]);

function runAppender(l: Log, count: number): Promise<void> {
  const script = path.resolve(import.meta.dirname, "../support/audit-appender.ts");
  const env = { ...process.env, SLIPWAY_TEST_SIGNING_KEY: l.privateKey.export({ type: "pkcs8", format: "pem" }) as string };
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["--disable-warning=ExperimentalWarning", script, l.target, l.dir, String(count)], { env }, (err, _out, stderr) =>
      err ? reject(new Error(`appender failed: ${stderr}`)) : resolve());
  });
}

/** One change an attacker might make to the stored log or its head. */
type Mutation =
  | { kind: "edit"; column: "at" | "actor" | "action" | "object" | "outcome" | "details" | "prev_hash" | "hash" | "signature"; pick: number }
  | { kind: "delete" | "insert" | "swap" | "truncate" | "truncate+unsigned-head" | "truncate+own-head"; pick: number }
  | { kind: "empty" | "head-delete" | "head-garbage" }
  | { kind: "head-edit"; field: "seq" | "hash" | "writtenAt" | "signature" };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("edit" as const), column: fc.constantFrom("at", "actor", "action", "object", "outcome", "details", "prev_hash", "hash", "signature" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constantFrom("delete", "insert", "swap", "truncate", "truncate+unsigned-head", "truncate+own-head" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constantFrom("empty", "head-delete", "head-garbage" as const) }),
  fc.record({ kind: fc.constant("head-edit" as const), field: fc.constantFrom("seq", "hash", "writtenAt", "signature" as const) }),
);

const flip = (hex: string) => (hex[0] === "0" ? "1" : "0") + hex.slice(1);

async function mutate(l: Log, m: Mutation): Promise<void> {
  const rows = await rowsOf(l.db);
  const headFile = path.join(l.dir, "audit.head");
  const at = (pick: number) => rows[pick % rows.length];
  switch (m.kind) {
    case "edit": {
      const r = at(m.pick);
      const other = rows.find((x) => x.seq !== r.seq);
      const value = {
        at: new Date(Date.parse(r.at) + 1000).toISOString(), actor: r.actor + "-x", action: r.action + ".undo", object: r.object === null ? "device:1" : null,
        outcome: r.outcome === "success" ? "denied" : "success", details: r.details === null ? "{}" : JSON.stringify({ ...JSON.parse(r.details), forged: 1 }),
        prev_hash: flip(r.prev_hash), hash: flip(r.hash), signature: other ? other.signature : "A".repeat(86) + "==",
      }[m.column];
      await l.db.run(`UPDATE audit_log SET ${m.column} = ? WHERE seq = ?`, [value, r.seq]);
      return;
    }
    case "delete":
      await l.db.run(`DELETE FROM audit_log WHERE seq = ?`, [at(m.pick).seq]);
      return;
    case "insert": {
      // A forger copies a real entry onto a new row chained to the last one.
      const last = rows[rows.length - 1];
      await insertRow(l.db, { ...at(m.pick), seq: last.seq + 1, prev_hash: last.hash });
      return;
    }
    case "swap": {
      if (rows.length < 2) return mutate(l, { kind: "delete", pick: 0 });
      const i = m.pick % (rows.length - 1);
      const [a, b] = [rows[i], rows[i + 1]];
      await l.db.run(`DELETE FROM audit_log WHERE seq IN (?, ?)`, [a.seq, b.seq]);
      await insertRow(l.db, { ...a, seq: b.seq });
      await insertRow(l.db, { ...b, seq: a.seq });
      return;
    }
    case "truncate":
    case "truncate+unsigned-head":
    case "truncate+own-head": {
      const keep = rows.length < 2 ? 0 : m.pick % (rows.length - 1) + 1;
      await l.db.run(`DELETE FROM audit_log WHERE seq > ?`, [keep]);
      if (m.kind === "truncate" || keep === 0) return;
      const last = rows[keep - 1];
      const head = JSON.parse(fs.readFileSync(headFile, "utf8"));
      // Without the key: the old format, or the real head's signature over new fields.
      fs.writeFileSync(headFile, JSON.stringify(m.kind === "truncate+unsigned-head"
        ? { seq: last.seq, hash: last.hash }
        : { ...head, seq: last.seq, hash: last.hash }));
      return;
    }
    case "empty":
      await l.db.run(`DELETE FROM audit_log`);
      fs.rmSync(headFile, { force: true });
      return;
    case "head-delete":
      fs.rmSync(headFile);
      return;
    case "head-garbage":
      fs.writeFileSync(headFile, "{\"seq\":");
      return;
    case "head-edit": {
      const head = JSON.parse(fs.readFileSync(headFile, "utf8"));
      head[m.field] = { seq: head.seq - 1, hash: flip(head.hash), writtenAt: new Date(Date.parse(head.writtenAt) + 1).toISOString(), signature: rows[0].signature }[m.field];
      fs.writeFileSync(headFile, JSON.stringify(head));
      return;
    }
  }
}

type Step = { op: "append" } | { op: "commit" | "rollback" | "batch"; n: number };
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.constant({ op: "append" as const }),
  fc.record({ op: fc.constantFrom("commit", "rollback", "batch" as const), n: fc.integer({ min: 1, max: 3 }) }),
);

async function apply(l: Log, s: Step): Promise<number> {
  const event = { actor: "test", action: `test.${s.op}`, details: { at: Date.now() } };
  switch (s.op) {
    case "append":
      await l.audit.append(event);
      return 1;
    case "commit":
      await l.db.transaction(async (tx) => {
        for (let i = 0; i < s.n; i++) await l.audit.append(event, tx);
      });
      return s.n;
    case "rollback":
      await assert.rejects(l.db.transaction(async (tx) => {
        for (let i = 0; i < s.n; i++) await l.audit.append({ ...event, outcome: "denied" }, tx);
        throw new Error("the change after the audit entry failed");
      }), /failed/);
      return 0;
    case "batch":
      for (let i = 0; i < s.n; i++) l.audit.appendSoon(event);
      await l.audit.flush();
      return s.n;
  }
}

for (const kind of databasesUnderTest()) {
  describe(`audit head checkpoint on ${kind}`, () => {
    it("a transaction that appends and then fails leaves the head and the log as they were, and verify intact", async () => {
      const l = await freshLog(kind);
      try {
        for (let i = 0; i < 3; i++) await l.audit.append({ actor: "test", action: "before" });
        assert.equal(headSeq(l), 3);
        await assert.rejects(l.db.transaction(async (tx) => {
          await l.audit.append({ actor: "test", action: "doomed" }, tx);
          await l.audit.append({ actor: "test", action: "doomed" }, tx);
          throw new Error("boom");
        }), /boom/);
        assert.equal(headSeq(l), 3, "the head names no entry that never committed");
        const v = await verify(l);
        assert.deepEqual(v.ok && [v.count, v.lastSeq, v.uncovered], [3, 3, 0], JSON.stringify(v));
        await l.audit.append({ actor: "test", action: "after" });
        assert.equal(headSeq(l), 4);
        assert.equal((await verify(l)).ok, true);
      } finally {
        await l.close();
      }
    });

    it("appends from several processes at once keep one chain, and the head ends at the newest entry", async () => {
      const l = await freshLog(kind);
      try {
        await l.audit.append({ actor: "test", action: "site.initialized" });
        const mine = (async () => {
          for (let i = 0; i < 10; i++) await l.audit.append({ actor: "parent", action: "test.append" });
        })();
        await Promise.all([runAppender(l, 12), runAppender(l, 12), runAppender(l, 12), mine]);
        const v = await verify(l);
        assert.ok(v.ok, JSON.stringify(v));
        assert.equal(v.count, 1 + 10 + 3 * 12, "every committed append, none of the rolled-back ones");
        assert.equal(headSeq(l), v.lastSeq, "the head is the newest entry, not an older one written last");
        assert.equal(v.uncovered, 0);
        assert.equal(fs.statSync(path.join(l.dir, "audit.head")).mode & 0o777, 0o600);
      } finally {
        await l.close();
      }
    });

    it("a head that no longer matches the log is kept as evidence, not overwritten by later appends", async () => {
      const l = await freshLog(kind);
      try {
        for (let i = 0; i < 5; i++) await l.audit.append({ actor: "test", action: "real" });
        await l.db.run(`DELETE FROM audit_log WHERE seq > 2`);
        for (let i = 0; i < 6; i++) await l.audit.append({ actor: "test", action: "after the cut" });
        const v = await verify(l);
        assert.ok(!v.ok && v.seq === 5 && /checkpoint/.test(v.reason), JSON.stringify(v));
        // The head file deleted too: this process puts back the newest head it wrote.
        const l2 = l;
        await l2.db.run(`DELETE FROM audit_log WHERE seq > 2`);
        fs.rmSync(path.join(l2.dir, "audit.head"));
        await l2.audit.append({ actor: "test", action: "after the second cut" });
        const w = await verify(l2);
        assert.ok(!w.ok, JSON.stringify(w));
      } finally {
        await l.close();
      }
    });

    it("property: any sequence of appends and transactions verifies after every step; any one change to the rows or the head is caught", async () => {
      await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), mutation, async (steps, m) => {
        const l = await freshLog(kind);
        try {
          await l.audit.append({ actor: "system", action: "site.initialized" });
          let expected = 1;
          for (const s of steps) {
            expected += await apply(l, s);
            const v = await verify(l);
            assert.ok(v.ok && v.count === expected && v.uncovered === 0, `after ${JSON.stringify(s)}: ${JSON.stringify(v)}`);
          }
          await mutate(l, m);
          const v = await verify(l);
          assert.equal(v.ok, false, `${JSON.stringify(m)} was not caught after ${JSON.stringify(steps)}`);
        } finally {
          await l.close();
        }
      }), { numRuns: kind === "sqlite" ? 60 : 25 });
    });
  });
}
