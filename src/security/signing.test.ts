import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { canonicalJson } from "./canonical-json.ts";
import { generateSigningKeyPair, publicKeyFingerprint, signValue, verifyValue } from "./signing.ts";

const pair = generateSigningKeyPair();
const privateKey = crypto.createPrivateKey(pair.privateKeyPem);
const publicKey = crypto.createPublicKey(pair.publicKeyPem);

const manifest = {
  kind: "content-manifest",
  name: "base-2026",
  blobs: [
    { sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", size: 1048576 },
    { sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", size: 42 },
  ],
  note: "Ünïcödé — 日本語",
  flags: { compressed: true, sparse: false, parent: null },
};

test("a signed document verifies, also after a JSON round trip in another key order", () => {
  const sig = signValue(privateKey, manifest);
  assert.equal(verifyValue(publicKey, manifest, sig), true);
  const { note, ...rest } = manifest;
  const reordered = JSON.parse(JSON.stringify({ note, ...rest }));
  assert.notEqual(JSON.stringify(reordered), JSON.stringify(manifest));
  assert.equal(verifyValue(publicKey, reordered, sig), true);
});

test("1,000 random single-bit flips of the signed canonical bytes are all refused", () => {
  const sig = signValue(privateKey, manifest);
  const bytes = Buffer.from(canonicalJson(manifest), "utf8");
  const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
  let stillJson = 0;
  for (let i = 0; i < 1000; i++) {
    const flipped = Buffer.from(bytes);
    const bit = crypto.randomInt(bytes.length * 8);
    flipped[bit >> 3] ^= 1 << (bit & 7);
    let parsed: unknown;
    try {
      parsed = JSON.parse(strictUtf8.decode(flipped));
    } catch {
      continue; // no longer UTF-8 JSON: a receiver refuses it before verifying
    }
    stillJson++;
    // A flip that yields a different spelling of the same value (e.g. 1e+21 vs 1E+21) is not a
    // change to the document; there are none in this manifest, so every flip must be refused.
    assert.notEqual(canonicalJson(parsed), bytes.toString("utf8"), `bit ${bit}`);
    assert.equal(verifyValue(publicKey, parsed, sig), false, `bit ${bit} was accepted`);
  }
  assert.ok(stillJson > 100, `only ${stillJson} flips left valid JSON; the test lost its teeth`);
  assert.equal(verifyValue(publicKey, JSON.parse(bytes.toString("utf8")), sig), true);
});

test("a garbage or altered signature is refused without throwing", () => {
  const sig = signValue(privateKey, manifest);
  const flippedLast = sig.slice(0, 85) + (sig[85] === "A" ? "Q" : "A") + "==";
  const garbage: unknown[] = [
    "",
    "not base64 at all!",
    sig.slice(0, -4),
    `${sig}AAAA`,
    ` ${sig}`,
    Buffer.alloc(64).toString("base64"),
    flippedLast,
    null,
    42,
  ];
  for (const g of garbage) assert.equal(verifyValue(publicKey, manifest, g as string), false, String(g));
});

test("a non-canonical base64 spelling of a valid signature is refused", () => {
  const sig = signValue(privateKey, manifest);
  // The last character before "==" carries 4 unused bits; Buffer ignores them when decoding.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const last = alphabet.indexOf(sig[85]);
  const variant = sig.slice(0, 85) + alphabet[last ^ 1] + "==";
  assert.deepEqual(Buffer.from(variant, "base64"), Buffer.from(sig, "base64"));
  assert.equal(verifyValue(publicKey, manifest, variant), false);
});

test("another key's signature is refused", () => {
  const other = crypto.createPrivateKey(generateSigningKeyPair().privateKeyPem);
  assert.equal(verifyValue(publicKey, manifest, signValue(other, manifest)), false);
});

test("the fingerprint is the SHA-256 of the SPKI DER and the same from either half", () => {
  const der = publicKey.export({ type: "spki", format: "der" });
  const expected = crypto.createHash("sha256").update(der).digest("hex");
  assert.equal(publicKeyFingerprint(publicKey), expected);
  assert.equal(publicKeyFingerprint(privateKey), expected);
  assert.match(expected, /^[0-9a-f]{64}$/);
});

test("keys that are not Ed25519 are refused", () => {
  const { privateKey: ec } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  assert.throws(() => signValue(ec, manifest), TypeError);
  assert.throws(() => signValue(publicKey, manifest), TypeError);
});
