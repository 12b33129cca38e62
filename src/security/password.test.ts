import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import {
  generatePassword,
  hashPassword,
  hashToken,
  newToken,
  passwordProblems,
  verifyPassword,
} from "./password.ts";

// Cheap parameters keep the suite fast; one test below exercises the production defaults.
const cheap = { memoryKiB: 64, passes: 1 };

test("production hashes use argon2id at the OWASP minimum and verify", async () => {
  const encoded = await hashPassword("correct horse battery staple");
  assert.match(encoded, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  assert.equal(await verifyPassword("correct horse battery staple", encoded), true);
  assert.equal(await verifyPassword("correct horse battery stapl", encoded), false);
});

test("the stored hash is argon2id of the password under the encoded salt and cost", async () => {
  const encoded = await hashPassword("tr0ub4dor&3-extended", cheap);
  const [, , , params, salt, tag] = encoded.split("$");
  assert.equal(params, "m=64,t=1,p=1");
  const expected = crypto.argon2Sync("argon2id", {
    message: "tr0ub4dor&3-extended",
    nonce: Buffer.from(salt, "base64"),
    memory: 64,
    passes: 1,
    parallelism: 1,
    tagLength: 32,
  });
  assert.equal(Buffer.from(tag, "base64").toString("hex"), expected.toString("hex"));
});

test("each hash has a fresh salt", async () => {
  const a = await hashPassword("same password here", cheap);
  const b = await hashPassword("same password here", cheap);
  assert.notEqual(a, b);
  assert.equal(await verifyPassword("same password here", a), true);
  assert.equal(await verifyPassword("same password here", b), true);
});

test("composed and decomposed accents are the same password", async () => {
  const composed = "caf\u00e9 au lait noir";
  const decomposed = "cafe\u0301 au lait noir";
  const encoded = await hashPassword(composed, cheap);
  assert.equal(await verifyPassword(decomposed, encoded), true);
});

test("malformed or altered stored hashes are refused without throwing", async () => {
  const good = await hashPassword("a fine long password", cheap);
  const parts = good.split("$");
  const variants = [
    "",
    "plaintext",
    "$argon2i$v=19$m=64,t=1,p=1$" + parts.slice(4).join("$"),
    "$argon2id$v=16$m=64,t=1,p=1$" + parts.slice(4).join("$"),
    "$argon2id$v=19$m=4,t=1,p=1$" + parts.slice(4).join("$"), // below argon2's minimum memory
    "$argon2id$v=19$m=9999999,t=1,p=1$" + parts.slice(4).join("$"), // unbounded cost
    "$argon2id$v=19$m=64,t=0,p=1$" + parts.slice(4).join("$"),
    "$argon2id$v=19$m=64,t=1,p=0$" + parts.slice(4).join("$"),
    "$argon2id$v=19$m=128,t=1,p=1$" + parts.slice(4).join("$"), // different cost
    good + "A",
    good.slice(0, -1),
    good.replace(/\$[^$]+$/, "$" + "A".repeat(43)),
    good.replace(/\$([^$]+)\$([^$]+)$/, "$$$1$$$2=="), // padded base64
    good + "\n",
    parts.slice(0, 5).join("$") + "$",
  ];
  for (const v of variants) assert.equal(await verifyPassword("a fine long password", v), false, v);
  assert.equal(await verifyPassword(undefined as unknown as string, good), false);
  assert.equal(await verifyPassword("a fine long password", null as unknown as string), false);
  assert.equal(await verifyPassword("a fine long password", good), true);
});

test("cost parameters outside argon2's or our bounds are refused when hashing", async () => {
  await assert.rejects(hashPassword("whatever whatever", { memoryKiB: 4 }), RangeError);
  await assert.rejects(hashPassword("whatever whatever", { passes: 0 }), RangeError);
  await assert.rejects(hashPassword("whatever whatever", { memoryKiB: 1.5 }), RangeError);
});

test("generated passwords are 20 unambiguous characters and pass the policy", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 500; i++) {
    const p = generatePassword();
    assert.match(p, /^[A-HJ-NP-Za-km-np-z2-9]{20}$/);
    assert.deepEqual(passwordProblems(p, { username: "admin" }), []);
    seen.add(p);
  }
  assert.equal(seen.size, 500);
});

test("the password policy explains each problem and accepts a long passphrase", () => {
  assert.deepEqual(passwordProblems("correct horse battery staple", { username: "alice" }), []);
  assert.deepEqual(passwordProblems("short"), ["must be at least 12 characters long"]);
  assert.deepEqual(passwordProblems("x".repeat(1025) + "y"), ["must be at most 1024 characters long"]);
  assert.deepEqual(passwordProblems("aaaaaaaaaaaaaaaa"), ["must not repeat a single character"]);
  assert.deepEqual(passwordProblems("my name is Alice-Smith!", { username: "alice-smith" }), [
    "must not contain the username",
  ]);
  for (const obvious of ["password1234", "Password2024!", "123456789012", "slipway-admin-1", "P@ssw0rd2024", "qwertyqwerty", "administrator1", "!!!!!!!!!!!!"]) {
    assert.ok(
      passwordProblems(obvious).includes("must not be made only of common words, digits and punctuation"),
      obvious,
    );
  }
  // Ambiguous look-alikes ("7357" is "test" or four digits) are checked in linear time.
  const started = performance.now();
  assert.equal(passwordProblems("7357".repeat(255) + "x").length, 0);
  assert.ok(performance.now() - started < 500);
  // Length counts characters, not UTF-16 units.
  assert.deepEqual(passwordProblems("🔑🔑🔑🔑🔑🔒"), ["must be at least 12 characters long"]);
});

test("tokens carry their prefix and 256 random bits; the hash is SHA-256 hex", () => {
  const t = newToken("swt");
  assert.match(t, /^swt_[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(t.slice(4), "base64url").length, 32);
  assert.notEqual(newToken("swt"), t);
  assert.equal(hashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert.throws(() => newToken("Bad_Prefix"), TypeError);
  assert.throws(() => newToken(""), TypeError);
});
