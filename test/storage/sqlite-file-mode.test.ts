/**
 * The SQLite database holds password hashes, sealed secrets and the audit log: its file and
 * the -wal and -shm files beside it are readable by the owner only, whatever the umask.
 */
import { it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openDb } from "../../src/storage/db.ts";
import { migrate } from "../../src/storage/migrations.ts";

const modeOf = (f: string) => (fs.statSync(f).mode & 0o777).toString(8);

it("a new SQLite database and its WAL and shared-memory files are created 0600, even under umask 022", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-mode-"));
  const before = process.umask(0o022);
  try {
    const file = path.join(dir, "slipway.db");
    const db = await openDb({ sqlitePath: file });
    await migrate(db);
    await db.run(`INSERT INTO audit_log (seq, at, actor, action, object, outcome, details, prev_hash, hash, signature) VALUES (1, 'now', 'a', 'b', NULL, 'success', NULL, 'p', 'h', 's')`);
    try {
      for (const f of [file, `${file}-wal`, `${file}-shm`]) {
        assert.ok(fs.existsSync(f), `${f} exists while the database is open`);
        assert.equal(modeOf(f), "600", `${path.basename(f)} is readable by others`);
      }
    } finally {
      await db.close();
    }
  } finally {
    process.umask(before);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it("an existing database created 0644 by an older version is narrowed to 0600 when opened", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-mode-"));
  try {
    const file = path.join(dir, "slipway.db");
    const first = await openDb({ sqlitePath: file });
    await migrate(first);
    await first.close();
    fs.chmodSync(file, 0o644);
    const db = await openDb({ sqlitePath: file });
    try {
      await db.get(`SELECT 1`);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) if (fs.existsSync(f)) assert.equal(modeOf(f), "600", path.basename(f));
    } finally {
      await db.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
