/**
 * A second process appending to a site's audit log, for tests of appends from several
 * processes: `node audit-appender.ts DB DATADIR COUNT`, the signing key (PKCS#8 PEM) in
 * SLIPWAY_TEST_SIGNING_KEY. DB is a postgres:// URL or a SQLite file. Every other append
 * goes in a transaction of its own with a second, rolled-back one beside it.
 */
import { createPrivateKey } from "node:crypto";
import { openDb } from "../../src/storage/db.ts";
import { AuditStore } from "../../src/storage/audit-store.ts";

const [target, dataDir, count] = process.argv.slice(2);
const db = await openDb(target.startsWith("postgres") ? { url: target, sqlitePath: "" } : { sqlitePath: target });
const audit = new AuditStore({ db, signingKey: createPrivateKey(process.env.SLIPWAY_TEST_SIGNING_KEY!), dataDir });
try {
  for (let i = 0; i < Number(count); i++) {
    if (i % 2 === 0) {
      await audit.append({ actor: `process:${process.pid}`, action: "test.append", object: `n:${i}` });
    } else {
      await db.transaction(async (tx) => {
        await audit.append({ actor: `process:${process.pid}`, action: "test.append", object: `n:${i}` }, tx);
      });
      await db.transaction(async (tx) => {
        await audit.append({ actor: `process:${process.pid}`, action: "test.rolled-back" }, tx);
        throw new Error("roll back");
      }).catch(() => {});
    }
  }
} finally {
  await db.close();
}
