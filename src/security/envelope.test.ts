import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { EnvelopeError, Keyring, type Sealed } from "./envelope.ts";

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-envelope-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, "master");
}

const AAD = "variable:site::DomainPassword";
const SECRET = "Tr0ub4dor&3 — the domain join password ✓";

function modeOf(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

test("a sealed secret opens with the same aad", (t) => {
  const ring = Keyring.create(tempDir(t));
  const sealed = ring.seal(SECRET, AAD);
  assert.equal(sealed.v, 1);
  assert.equal(sealed.kid, ring.currentKid);
  assert.equal(ring.open(sealed, AAD), SECRET);
  assert.equal(ring.open(JSON.parse(JSON.stringify(sealed)), AAD), SECRET);
  assert.equal(ring.open(ring.seal("", AAD), AAD), "");
});

test("sealing the same secret twice gives unrelated ciphertexts", (t) => {
  const ring = Keyring.create(tempDir(t));
  const a = ring.seal(SECRET, AAD);
  const b = ring.seal(SECRET, AAD);
  assert.notEqual(a.wrappedKey, b.wrappedKey);
  assert.notEqual(a.nonce, b.nonce);
  assert.notEqual(a.ciphertext, b.ciphertext);
});

test("a ciphertext moved to another row (different aad) does not open", (t) => {
  const ring = Keyring.create(tempDir(t));
  const sealed = ring.seal(SECRET, AAD);
  for (const aad of ["variable:site::OtherPassword", "", `${AAD} `, AAD.toUpperCase()]) {
    assert.throws(() => ring.open(sealed, aad), (e) => e instanceof EnvelopeError && e.reason === "tampered");
  }
});

test("every single-bit flip of the stored JSON is refused with an EnvelopeError", (t) => {
  const ring = Keyring.create(tempDir(t));
  const sealed = ring.seal(SECRET, AAD);
  const json = Buffer.from(JSON.stringify(sealed), "utf8");
  let opened = 0;
  for (let bit = 0; bit < json.length * 8; bit++) {
    const flipped = Buffer.from(json);
    flipped[bit >> 3] ^= 1 << (bit & 7);
    let candidate: Sealed;
    try {
      candidate = JSON.parse(flipped.toString("utf8"));
    } catch {
      continue; // not JSON any more: the row cannot even be read
    }
    try {
      ring.open(candidate, AAD);
      opened++;
    } catch (e) {
      assert.ok(e instanceof EnvelopeError, `bit ${bit}: ${e}`);
    }
  }
  assert.equal(opened, 0);
});

test("a bit flip in the decoded bytes of any field is refused", (t) => {
  const ring = Keyring.create(tempDir(t));
  const sealed = ring.seal(SECRET, AAD);
  for (const field of ["wrappedKey", "nonce", "ciphertext", "tag"] as const) {
    const bytes = Buffer.from(sealed[field], "base64");
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const flipped = Buffer.from(bytes);
      flipped[bit >> 3] ^= 1 << (bit & 7);
      const altered = { ...sealed, [field]: flipped.toString("base64") };
      assert.throws(() => ring.open(altered, AAD), EnvelopeError, `${field} bit ${bit}`);
    }
  }
  assert.throws(() => ring.open({ ...sealed, kid: "0123456789abcdef" }, AAD), (e) => e instanceof EnvelopeError && e.reason === "unknown-key");
  assert.throws(() => ring.open({ ...sealed, v: 2 as 1 }, AAD), (e) => e instanceof EnvelopeError && e.reason === "malformed");
});

test("a non-canonical base64 spelling of a field is refused", (t) => {
  const ring = Keyring.create(tempDir(t));
  const sealed = ring.seal(SECRET, AAD);
  // A 16-byte tag ends in "==" and its last data character carries 4 ignored bits.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const i = sealed.tag.length - 3;
  const variant = sealed.tag.slice(0, i) + alphabet[alphabet.indexOf(sealed.tag[i]) ^ 1] + "==";
  assert.deepEqual(Buffer.from(variant, "base64"), Buffer.from(sealed.tag, "base64"));
  assert.throws(() => ring.open({ ...sealed, tag: variant }, AAD), (e) => e instanceof EnvelopeError && e.reason === "malformed");
});

test("rotate, rewrap every row, retire the old key: the secret still opens", (t) => {
  const dir = tempDir(t);
  const ring = Keyring.create(dir);
  const oldKid = ring.currentKid;
  const sealed = ring.seal(SECRET, AAD);
  const newKid = ring.rotate();
  assert.notEqual(newKid, oldKid);
  assert.equal(ring.currentKid, newKid);
  assert.equal(ring.open(sealed, AAD), SECRET, "old rows open before rewrap");

  const rewrapped = ring.rewrap(sealed);
  assert.equal(rewrapped.kid, newKid);
  assert.notEqual(rewrapped.wrappedKey, sealed.wrappedKey);
  assert.equal(rewrapped.ciphertext, sealed.ciphertext);
  assert.equal(rewrapped.nonce, sealed.nonce);
  assert.equal(rewrapped.tag, sealed.tag);

  assert.deepEqual(ring.kids(), [oldKid, newKid].sort());
  ring.retire(oldKid);
  assert.deepEqual(ring.kids(), [newKid]);
  assert.equal(fs.existsSync(path.join(dir, `master-${oldKid}.key`)), false);
  assert.equal(ring.open(rewrapped, AAD), SECRET);
  assert.equal(Keyring.open(dir).open(rewrapped, AAD), SECRET);
  assert.throws(() => ring.open(sealed, AAD), (e) => e instanceof EnvelopeError && e.reason === "unknown-key");
});

test("the current key cannot be retired", (t) => {
  const ring = Keyring.create(tempDir(t));
  assert.throws(() => ring.retire(ring.currentKid), /current key/);
});

test("a second instance opens a secret sealed after the first one rotated", (t) => {
  const dir = tempDir(t);
  const first = Keyring.create(dir);
  const second = Keyring.open(dir);
  first.rotate();
  const sealed = first.seal(SECRET, AAD);
  assert.notEqual(second.currentKid, sealed.kid);
  assert.equal(second.open(sealed, AAD), SECRET);
  assert.equal(second.currentKid, sealed.kid, "the reload also picked up the new current key");
});

test("a second instance seals under the key another instance rotated to", (t) => {
  const dir = tempDir(t);
  const first = Keyring.create(dir);
  const second = Keyring.open(dir);
  const oldKid = first.currentKid;
  const newKid = first.rotate();
  first.retire(oldKid); // the rotating process finished its rewrap pass
  const sealed = second.seal(SECRET, AAD);
  assert.equal(sealed.kid, newKid);
  assert.equal(Keyring.open(dir).open(sealed, AAD), SECRET);
  assert.equal(second.rewrap(first.seal(SECRET, AAD)).kid, newKid);
});

test("key files are 0600 and the directory 0700; create refuses an existing keyring", (t) => {
  const dir = tempDir(t);
  const ring = Keyring.create(dir);
  ring.rotate();
  assert.equal(modeOf(dir), 0o700);
  const files = fs.readdirSync(dir);
  assert.equal(files.filter((f) => /^master-[0-9a-f]{16}\.key$/.test(f)).length, 2);
  assert.deepEqual(files.filter((f) => f.endsWith(".tmp")), [], "no temporary files left behind");
  for (const f of files) assert.equal(modeOf(path.join(dir, f)), 0o600, f);
  for (const f of files.filter((f) => f.startsWith("master-"))) assert.equal(fs.statSync(path.join(dir, f)).size, 32);
  assert.equal(fs.readFileSync(path.join(dir, "current"), "utf8"), `${ring.currentKid}\n`);
  assert.throws(() => Keyring.create(dir), /already holds/);
});

test("a keyring whose key file others can read is refused", (t) => {
  const dir = tempDir(t);
  const ring = Keyring.create(dir);
  fs.chmodSync(path.join(dir, `master-${ring.currentKid}.key`), 0o644);
  assert.throws(() => Keyring.open(dir), /mode 0644/);
});

test("neither the master key nor the plaintext appears in the sealed JSON", (t) => {
  const dir = tempDir(t);
  const ring = Keyring.create(dir);
  const master = fs.readFileSync(path.join(dir, `master-${ring.currentKid}.key`));
  const sealed = ring.seal(SECRET, AAD);
  const json = JSON.stringify(sealed);
  const allBytes = Buffer.concat(
    (["wrappedKey", "nonce", "ciphertext", "tag"] as const).map((f) => Buffer.from(sealed[f], "base64")),
  );
  for (const needle of [master, Buffer.from(SECRET, "utf8")]) {
    for (const enc of ["hex", "base64", "base64url", "latin1"] as const) {
      assert.equal(json.includes(needle.toString(enc)), false, enc);
    }
    assert.equal(allBytes.includes(needle), false);
  }
  assert.equal(json.includes("Tr0ub4dor"), false);
  assert.deepEqual(Object.keys(sealed).sort(), ["ciphertext", "kid", "nonce", "tag", "v", "wrappedKey"]);
});

test("errors say what failed without echoing secrets", (t) => {
  const ring = Keyring.create(tempDir(t));
  const sealed = ring.seal(SECRET, AAD);
  try {
    ring.open(sealed, "wrong");
    assert.fail("opened with the wrong aad");
  } catch (e) {
    assert.ok(e instanceof EnvelopeError);
    assert.match(e.message, /^Cannot open sealed secret: /);
    assert.equal(e.message.includes("Tr0ub4dor"), false);
  }
});
