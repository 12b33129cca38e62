/**
 * PostgreSQL over TLS as libpq's sslmode means it, against the test cluster that
 * scripts/test.sh makes serve TLS with a certificate for "localhost" from a test CA:
 * verify-full checks the chain and the host name, verify-ca the chain only, a certificate
 * from another CA is refused, and a mistyped mode is an error rather than a quiet downgrade.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { openDb, type Db } from "../../src/storage/db.ts";
import { postgresTarget } from "../../src/storage/postgres.ts";
import { postgresTlsUnderTest } from "../support/postgres.ts";

const tlsUrl = postgresTlsUnderTest();

/** The TLS test URL with its query changed: `null` removes a parameter. */
function variant(changes: Record<string, string | null>, host?: string): string {
  const u = new URL(tlsUrl!);
  for (const [k, v] of Object.entries(changes)) v === null ? u.searchParams.delete(k) : u.searchParams.set(k, v);
  if (host) u.hostname = host;
  return u.toString();
}

async function sslOf(url: string): Promise<{ ssl: boolean; description: string }> {
  const db: Db = await openDb({ url, sqlitePath: "" });
  try {
    const r = await db.get<{ ssl: boolean }>(`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`);
    return { ssl: r!.ssl, description: db.description };
  } finally {
    await db.close();
  }
}

describe("PostgreSQL over TLS", () => {
  // Never skipped: without a TLS server to test against, this suite fails and says why.
  it("has a PostgreSQL server that serves TLS to test against", () => {
    assert.ok(tlsUrl, "SLIPWAY_TEST_DATABASE_TLS_URL is not set (scripts/test.sh sets it)");
  });
  let dir: string;
  let wrongCa: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-pg-tls-"));
    wrongCa = path.join(dir, "wrong-ca.crt");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
      "-subj", "/CN=Slipway test PostgreSQL CA", "-keyout", path.join(dir, "wrong-ca.key"), "-out", wrongCa], { stdio: "ignore" });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("verify-full with the right CA and host name connects encrypted", async () => {
    const r = await sslOf(tlsUrl!);
    assert.equal(r.ssl, true);
    assert.match(r.description, /TLS, sslmode=verify-full/);
    assert.doesNotMatch(r.description, /slipway_test:/, "no credentials in the description");
  });

  it("a server certificate from another CA (same name) is refused, under verify-full and verify-ca", async () => {
    for (const mode of ["verify-full", "verify-ca"]) {
      await assert.rejects(openDb({ url: variant({ sslmode: mode, sslrootcert: wrongCa }), sqlitePath: "" }),
        /self[- ]signed|unable to (verify|get)|certificate/i, mode);
    }
  });

  it("verify-full refuses a host name the certificate does not carry; verify-ca checks the chain only", async () => {
    await assert.rejects(openDb({ url: variant({}, "127.0.0.1"), sqlitePath: "" }), /does not match|altnames/i);
    assert.equal((await sslOf(variant({ sslmode: "verify-ca" }, "127.0.0.1"))).ssl, true);
  });

  it("require encrypts without verifying, prefer (the default) encrypts when offered, disable does not", async () => {
    assert.equal((await sslOf(variant({ sslmode: "require", sslrootcert: null }))).ssl, true);
    assert.equal((await sslOf(variant({ sslmode: null, sslrootcert: null }))).ssl, true);
    const plain = await sslOf(variant({ sslmode: "disable", sslrootcert: null }));
    assert.deepEqual([plain.ssl, /no TLS/.test(plain.description)], [false, true]);
  });

  it("require with a root certificate verifies the chain, as libpq does", async () => {
    await assert.rejects(openDb({ url: variant({ sslmode: "require", sslrootcert: wrongCa }), sqlitePath: "" }), /self[- ]signed|unable to|certificate/i);
  });

  it("a mistyped or unsafe TLS setting is an error before anything is sent", () => {
    assert.throws(() => postgresTarget(variant({ sslmode: "verify_full" })), /unknown sslmode "verify_full"/);
    assert.throws(() => postgresTarget(variant({ sslmode: "verify-ca", sslrootcert: null })), /verify-ca needs sslrootcert/);
    assert.throws(() => postgresTarget(variant({ sslmode: "verify-ca", sslrootcert: "system" })), /sslrootcert=system needs sslmode=verify-full/);
    assert.throws(() => postgresTarget(variant({ sslrootcert: path.join(dir, "missing.crt") })), /cannot read sslrootcert .*missing\.crt \(ENOENT\)/);
    const t = postgresTarget(tlsUrl!);
    assert.doesNotMatch(t.connectionString, /ssl/, "node-postgres never sees the TLS parameters, so it cannot read them another way");
    assert.deepEqual([t.mode, t.plainIfRefused, typeof t.ssl === "object" && t.ssl.rejectUnauthorized, typeof t.ssl === "object" && t.ssl.checkServerIdentity], ["verify-full", false, undefined, undefined]);
  });
});
