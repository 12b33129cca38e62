/**
 * One contract suite for the storage port, run unchanged against SQLite and a real
 * PostgreSQL server: migrations, every store, transactions, constraints and the audit chain.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import fs from "node:fs";
import { randomBytes, generateKeyPairSync } from "node:crypto";
import { openDb, type Db } from "../../src/storage/db.ts";
import { migrate, migrations } from "../../src/storage/migrations.ts";
import { stores } from "../../src/storage/stores.ts";
import { AuditStore, readHead, verifyAuditLog } from "../../src/storage/audit-store.ts";
import { createSchema, dropSchema, databasesUnderTest, postgresTlsUnderTest } from "../support/postgres.ts";
import { tempDir } from "../support/site.ts";
import { DEFAULT_CHUNK_SIZE, MANIFEST_KIND, manifestDigest, signManifest, type Manifest } from "../../src/content/manifest.ts";

// Times are relative to the real clock: nothing here may depend on the calendar date.
const base = Date.now();
const at = (hours: number) => new Date(base + hours * 3600_000).toISOString();
const now = at(0);

// Once more over TLS with sslmode=verify-full, when scripts/test.sh made the cluster serve it.
const tlsUrl = postgresTlsUnderTest();
const kinds: ("sqlite" | "postgres" | "postgres over TLS")[] = [...databasesUnderTest(), ...(tlsUrl ? ["postgres over TLS" as const] : [])];

/** The TLS URL with the schema's search_path (the same `options` createSchema puts on the plain one). */
function withOptionsOf(plainWithSchema: string, url: string): string {
  const u = new URL(url);
  u.searchParams.set("options", new URL(plainWithSchema).searchParams.get("options")!);
  return u.toString();
}

for (const kind of kinds) {
  describe(`storage contract on ${kind}`, () => {
    let db: Db;
    let dir: string;
    let schema = "";
    before(async () => {
      dir = tempDir();
      if (kind !== "sqlite") {
        schema = `c_${randomBytes(6).toString("hex")}`;
        const plain = await createSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
        db = await openDb({ url: kind === "postgres" ? plain : withOptionsOf(plain, tlsUrl!), sqlitePath: "" });
      } else {
        db = await openDb({ sqlitePath: path.join(dir, "test.db") });
      }
    });
    after(async () => {
      await db.close();
      if (schema) await dropSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    if (kind === "postgres over TLS") {
      it("talks to the server over TLS, having verified its certificate and host name", async () => {
        const r = await db.get<{ ssl: boolean; version: string }>(`SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()`);
        assert.equal(r?.ssl, true, "the session is not encrypted");
        assert.match(db.description, /TLS, sslmode=verify-full/);
      });
    }

    it("applies every migration once, and a second run applies none", async () => {
      assert.deepEqual(await migrate(db), migrations.map((m) => m.version));
      assert.deepEqual(await migrate(db), []);
    });

    it("stores devices with their MACs and finds them by MAC and UUID", async () => {
      const s = stores(db);
      const d = await s.devices.create({ name: "lab-01", macs: ["52:54:00:00:00:01", "52:54:00:00:00:02"], smbiosUuid: "0e5d3c4a-1111-4a2b-8c3d-000000000001", serial: "SN1", state: "pending", attributes: { vendor: "QEMU", cores: 2 } }, now);
      assert.equal((await s.devices.byMac("52:54:00:00:00:02"))?.id, d.id);
      assert.equal((await s.devices.bySmbiosUuid("0e5d3c4a-1111-4a2b-8c3d-000000000001"))?.name, "lab-01");
      assert.deepEqual(d.attributes, { vendor: "QEMU", cores: 2 });
      const u = await s.devices.update(d.id, { macs: ["52:54:00:00:00:03"], state: "approved" }, now);
      assert.deepEqual(u?.macs, ["52:54:00:00:00:03"]);
      assert.equal(await s.devices.byMac("52:54:00:00:00:01"), undefined);
    });

    it("refuses a MAC that already belongs to another device", async () => {
      const s = stores(db);
      await assert.rejects(s.devices.create({ name: "lab-02", macs: ["52:54:00:00:00:03"], smbiosUuid: null, serial: null, state: "pending", attributes: {} }, now));
    });

    it("rolls back a failed transaction completely", async () => {
      await assert.rejects(db.transaction(async (tx) => {
        await stores(tx).collections.create({ name: "will-vanish", description: "", rule: null }, now);
        throw new Error("boom");
      }));
      assert.equal(await stores(db).collections.byName("will-vanish"), undefined);
    });

    it("runs after-commit callbacks once the transaction committed, never after a rollback", async () => {
      const seen: string[] = [];
      const made = await db.transaction(async (tx) => {
        const c = await stores(tx).collections.create({ name: "after-commit", description: "", rule: null }, now);
        tx.afterCommit(async () => {
          // Runs when the change is visible to everyone, and may use the database itself.
          seen.push((await stores(db).collections.byName("after-commit"))?.id ?? "not visible");
          await db.transaction(async () => {});
        });
        tx.afterCommit(() => void seen.push("second"));
        assert.deepEqual(seen, [], "nothing runs before COMMIT");
        return c;
      });
      assert.deepEqual(seen, [made.id, "second"], "callbacks ran, in order, before transaction() resolved");
      await assert.rejects(db.transaction(async (tx) => {
        tx.afterCommit(() => void seen.push("after a rollback"));
        throw new Error("boom");
      }), /boom/);
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.message);
      process.on("warning", onWarning);
      try {
        const v = await db.transaction(async (tx) => {
          tx.afterCommit(() => {
            throw new Error("disk full");
          });
          return 7;
        });
        assert.equal(v, 7, "a failing callback does not undo or fail a committed transaction");
        await new Promise((r) => setImmediate(r));
      } finally {
        process.off("warning", onWarning);
      }
      assert.deepEqual(seen, [made.id, "second"]);
      assert.ok(warnings.some((w) => /disk full/.test(w)), "the failure is reported as a process warning");
    });

    it("keeps site settings by key: replace, set once, delete, and list by a prefix whose own % and _ match only themselves", async () => {
      const s = stores(db).settings;
      assert.equal(await s.get("t.a:1"), null);
      await s.set("t.a:1", "one");
      await s.set("t.a:1", "uno");
      assert.equal(await s.setIfAbsent("t.a:1", "ignored"), false);
      assert.equal(await s.setIfAbsent("t.a:2", "two"), true);
      await s.set("t_a:3", "not under t.a:");
      await s.set("t.a%:4", "under t.a%: only");
      await s.set("T.A:5", "another case");
      assert.equal(await s.get("t.a:1"), "uno");
      assert.deepEqual(await s.withPrefix("t.a:"), [{ key: "t.a:1", value: "uno" }, { key: "t.a:2", value: "two" }]);
      assert.deepEqual((await s.withPrefix("t.a%:")).map((r) => r.key), ["t.a%:4"]);
      assert.deepEqual((await s.withPrefix("t_a:")).map((r) => r.key), ["t_a:3"]);
      assert.equal(await s.delete("t.a:1"), true);
      assert.equal(await s.delete("t.a:1"), false);
      assert.deepEqual((await s.withPrefix("t.a:")).map((r) => r.key), ["t.a:2"]);
    });

    it("keeps static collection members and cascades device deletion", async () => {
      const s = stores(db);
      const c = await s.collections.create({ name: "Lab A", description: "", rule: "attributes.vendor == 'QEMU'" }, now);
      const d = await s.devices.create({ name: "lab-03", macs: [], smbiosUuid: null, serial: null, state: "pending", attributes: {} }, now);
      await s.collections.addMember(c.id, d.id);
      await s.collections.addMember(c.id, d.id); // idempotent
      assert.deepEqual(await s.collections.staticMembers(c.id), [d.id]);
      await s.devices.delete(d.id);
      assert.deepEqual(await s.collections.staticMembers(c.id), []);
    });

    it("upserts variables per scope and finds secrets by wrapping key", async () => {
      const s = stores(db);
      await s.variables.put({ scope: "site", scopeId: "", name: "TimeZone", secret: false, value: "UTC", sealed: null, keyId: null }, now);
      await s.variables.put({ scope: "site", scopeId: "", name: "TimeZone", secret: false, value: "Europe/Paris", sealed: null, keyId: null }, now);
      assert.equal((await s.variables.byName("site", "", "TimeZone"))?.value, "Europe/Paris");
      await s.variables.put({ scope: "site", scopeId: "", name: "Join", secret: true, value: null, sealed: { kid: "k1", c: "x" }, keyId: "k1" }, now);
      assert.deepEqual((await s.variables.sealedNotUnder("k2", 10)).map((v) => v.name), ["Join"]);
      const row = (await s.variables.byName("site", "", "Join"))!;
      assert.equal(await s.variables.replaceSealed(row.id, "k1", { kid: "k2", c: "x" }, "k2"), 1);
      assert.equal(await s.variables.replaceSealed(row.id, "k1", { kid: "k2", c: "x" }, "k2"), 0, "stale rewrap must not apply");
      assert.deepEqual(await s.variables.countByKey(), { k2: 1 });
    });

    it("keeps task sequence versions immutable by primary key", async () => {
      const s = stores(db);
      const t = await s.taskSequences.create({ name: "Base", description: "" }, now);
      const v = { taskSequenceId: t.id, version: 1, document: { a: 1 }, digest: "sha256:x", signature: "s", publishedBy: "admin:admin", publishedAt: now };
      await s.taskSequences.addVersion(v, now);
      await assert.rejects(s.taskSequences.addVersion({ ...v, document: { a: 2 } }, now));
      assert.deepEqual((await s.taskSequences.version(t.id, 1))?.document, { a: 1 });
      assert.equal((await s.taskSequences.byId(t.id))?.latestVersion, 1);
    });

    it("keeps content manifests by digest, finds the newest by name, and deletes one", async () => {
      const s = stores(db);
      const { privateKey } = generateKeyPairSync("ed25519");
      const manifest = (name: string, createdAt: string, chunk: string) => {
        const m: Manifest = { kind: MANIFEST_KIND, name, format: "tar.zst", size: 5_000_000_000, sha256: "ab".repeat(32), chunkSize: DEFAULT_CHUNK_SIZE,
          chunks: [...Array.from({ length: 1192 }, () => ({ sha256: chunk.repeat(64), size: DEFAULT_CHUNK_SIZE })), { sha256: "cd".repeat(32), size: 5_000_000_000 - 1192 * DEFAULT_CHUNK_SIZE }],
          createdAt };
        const signed = signManifest(m, privateKey);
        return { digest: manifestDigest(m), signed, createdBy: "local:test" };
      };
      const older = manifest("debian-base", at(-2), "1");
      const newer = manifest("debian-base", at(-1), "2");
      const other = manifest("alpine", at(0), "3");
      for (const m of [newer, older, other]) await s.content.add(m);
      const got = (await s.content.byDigest(older.digest))!;
      assert.equal(got.size, 5_000_000_000, "sizes past 2^32 survive (BIGINT)");
      assert.equal(got.chunkCount, 1193);
      assert.equal(got.format, "tar.zst");
      assert.deepEqual(got.signed, older.signed);
      assert.equal((await s.content.latestByName("debian-base"))?.digest, newer.digest);
      assert.equal(await s.content.latestByName("nothing"), undefined);
      assert.equal(await s.content.byDigest("sha256:" + "0".repeat(64)), undefined);
      assert.deepEqual((await s.content.list()).map((c) => c.digest), [other.digest, newer.digest, older.digest]);
      assert.deepEqual((await s.content.list({ name: "debian-base" })).map((c) => c.digest), [newer.digest, older.digest]);
      await assert.rejects(s.content.add(older), "a digest is recorded once");
      assert.deepEqual([...(await s.content.chunksInUse())].sort(), ["1".repeat(64), "2".repeat(64), "3".repeat(64), "cd".repeat(32)]);
      assert.equal(await s.content.delete(newer.digest), 1);
      assert.equal(await s.content.delete(newer.digest), 0);
      assert.equal((await s.content.latestByName("debian-base"))?.digest, older.digest);
      assert.ok(!(await s.content.chunksInUse()).has("2".repeat(64)));
    });

    it("keeps distribution points and their assignments, spends a secret once, and names only ready, certified ones as sources", async () => {
      const s = stores(db);
      const { privateKey } = generateKeyPairSync("ed25519");
      const m: Manifest = { kind: MANIFEST_KIND, name: "dp-image", format: "raw", size: 10, sha256: "ef".repeat(32), chunkSize: DEFAULT_CHUNK_SIZE,
        chunks: [{ sha256: "ef".repeat(32), size: 10 }], createdAt: now };
      const digest = manifestDigest(m);
      await s.content.add({ digest, signed: signManifest(m, privateKey), createdBy: "local:test" });
      const later = at(24);
      const a = await s.distributionPoints.create({ name: "branch-a", url: "https://dp-a.example:8445", hostNames: ["dp-a.example"], secretHash: "h-a", secretExpiresAt: later, createdBy: "admin:x" }, now);
      const b = await s.distributionPoints.create({ name: "branch-b", url: "https://10.0.0.5:8445", hostNames: ["10.0.0.5"], secretHash: "h-b", secretExpiresAt: now, createdBy: "admin:x" }, now);
      assert.deepEqual(a.hostNames, ["dp-a.example"]);
      await assert.rejects(s.distributionPoints.create({ name: "branch-a", url: "https://other:1", hostNames: [], secretHash: "h-c", secretExpiresAt: later, createdBy: "x" }, now), "names are unique");
      assert.equal((await s.distributionPoints.bySecretHash("h-a"))?.id, a.id);
      assert.equal(await s.distributionPoints.spendSecret(b.id, "h-b", now), false, "an expired secret is not spent");
      assert.equal(await s.distributionPoints.spendSecret(a.id, "h-a", now), true);
      assert.equal(await s.distributionPoints.spendSecret(a.id, "h-a", now), false, "a secret works once");
      assert.equal((await s.distributionPoints.byId(a.id))?.enrolledAt, now);
      assert.equal(await s.distributionPoints.bySecretHash("h-a"), undefined);

      assert.equal(await s.distributionPoints.assign(a.id, digest, "admin:x", now), true);
      assert.equal(await s.distributionPoints.assign(a.id, digest, "admin:x", now), false, "assigning twice keeps one row");
      assert.equal(await s.distributionPoints.assign(b.id, digest, "admin:x", now), true);
      await assert.rejects(s.distributionPoints.assign(a.id, "sha256:" + "0".repeat(64), "admin:x", now), "only recorded manifests");
      assert.equal((await s.distributionPoints.assignment(a.id, digest))?.state, "pending");
      assert.equal(await s.distributionPoints.setState(a.id, digest, "failed", "chunk 0 mismatch", now), 1);
      assert.deepEqual((await s.distributionPoints.assignments(a.id)).map((x) => [x.state, x.message]), [["failed", "chunk 0 mismatch"]]);
      await s.distributionPoints.setState(a.id, digest, "ready", null, now);
      await s.distributionPoints.setState(b.id, digest, "ready", null, now);
      await s.distributionPoints.touch(b.id, now); // a was heard from when it enrolled
      assert.equal((await s.distributionPoints.readySources([digest], now, now)).size, 0, "no active client certificate yet");
      for (const [dp, serial] of [[a, "aa01"], [b, "bb01"]] as const) {
        await s.certificates.add({ serial, fingerprint: serial.repeat(16), kind: "dp", deviceId: null, dpId: dp.id, subject: `dp:${dp.id}`,
          notBefore: now, notAfter: later, issuedVia: "dp-secret", createdAt: now });
      }
      assert.equal((await s.certificates.list({ dpId: a.id }))[0].dpId, a.id);
      assert.deepEqual((await s.distributionPoints.readySources([digest], now, now)).get(digest), ["https://dp-a.example:8445", "https://10.0.0.5:8445"]);
      await s.distributionPoints.touch(b.id, later);
      assert.deepEqual((await s.distributionPoints.readySources([digest], now, later)).get(digest), ["https://10.0.0.5:8445"], "one not heard from since is no source");
      await s.certificates.setStatus("bb01", "revoked", "keyCompromise", now);
      assert.deepEqual((await s.distributionPoints.readySources([digest], now, now)).get(digest), ["https://dp-a.example:8445"], "a revoked distribution point is no source");
      assert.equal((await s.distributionPoints.readySources([digest], later, now)).size, 0, "nor one whose certificate expired");

      await s.distributionPoints.delete(b.id);
      assert.equal((await s.certificates.bySerial("bb01"))?.dpId, null, "its certificates stay in the inventory");
      assert.equal(await s.content.delete(digest), 1);
      assert.deepEqual(await s.distributionPoints.assignments(a.id), [], "deleting the manifest drops its assignments");
    });

    it("appends a verifiable audit chain, also from concurrent writers", async () => {
      const { privateKey, publicKey } = generateKeyPairSync("ed25519");
      const audit = new AuditStore({ db, signingKey: privateKey, dataDir: null, now: () => new Date(now) });
      await Promise.all(Array.from({ length: 25 }, (_, i) => audit.append({ actor: "test", action: "thing.happened", object: `n:${i}` })));
      const r = await verifyAuditLog(db, publicKey);
      assert.equal(r.ok, true);
      assert.equal(r.ok && r.count, 25);
      await db.run(`UPDATE audit_log SET object = ? WHERE seq = ?`, ["n:edited", 7]);
      const bad = await verifyAuditLog(db, publicKey);
      assert.equal(bad.ok, false);
      assert.equal(!bad.ok && bad.seq, 7);
    });
  });
}

describe("batched audit appends", () => {
  it("keep their order and times, chain with direct appends, and verify", async () => {
    const dir = tempDir();
    const db = await openDb({ sqlitePath: path.join(dir, "batch.db") });
    try {
      await migrate(db);
      const { privateKey, publicKey } = generateKeyPairSync("ed25519");
      const start = Date.now();
      let clock = start;
      const audit = new AuditStore({ db, signingKey: privateKey, dataDir: dir, now: () => new Date(clock) });
      for (let i = 0; i < 100; i++) {
        audit.appendSoon({ actor: "pxe", action: "pxe.offer", object: `mac:${i}` });
        clock += 10;
      }
      await audit.append({ actor: "test", action: "direct" });
      await audit.flush();
      const rows = await db.all<{ object: string | null; action: string; at: string }>(`SELECT object, action, at FROM audit_log ORDER BY seq`);
      assert.equal(rows.length, 101);
      const batched = rows.filter((r) => r.action === "pxe.offer");
      assert.deepEqual(batched.map((r) => r.object), Array.from({ length: 100 }, (_, i) => `mac:${i}`));
      assert.equal(batched[99].at, new Date(start + 990).toISOString(), "each keeps the time it happened");
      const r = await verifyAuditLog(db, publicKey, { head: readHead(dir) });
      assert.equal(r.ok, true);
    } finally {
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
