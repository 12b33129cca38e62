/**
 * The TPM proof against real TPMs (swtpm) and an independent implementation (tpm2-tools):
 * the site's MakeCredential is recovered by a TPM holding the EK and by no other; the agent's
 * ActivateCredential recovers what tpm2_makecredential made; the site accepts only the
 * credential made for the EK on record, unexpired and unchanged.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { startSwtpm, type Swtpm } from "../support/swtpm.ts";
import { openTpmSocket, TpmSession } from "../../src/agent/tpm.ts";
import { activationObjectTemplate, decodePublic, ekProblem, encodePublic, ekTemplate, objectName, TpmError, TPMA } from "../../src/protocol/tpm2.ts";
import { DecodeError } from "../../src/protocol/reader.ts";
import { checkAnswer, makeChallenge, makeCredential, parseEkPublic, tpmChallengeKey, TpmProofError, TPM_CHALLENGE_TTL_MS } from "../../src/security/tpm-credential.ts";

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");

describe("TPM credential protection", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "slipway-tpm-"));
  let tpmA: Swtpm, tpmB: Swtpm;
  let a: TpmSession, b: TpmSession;
  const key = tpmChallengeKey(generateKeyPairSync("ed25519").privateKey);

  before(async () => {
    tpmA = await startSwtpm(path.join(dir, "a"));
    tpmB = await startSwtpm(path.join(dir, "b"));
    a = await TpmSession.open(await openTpmSocket(tpmA.socket));
    b = await TpmSession.open(await openTpmSocket(tpmB.socket));
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await tpmA?.stop();
    await tpmB?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the EK a TPM yields is a TCG-template endorsement key, the same every time, and differs between TPMs", async () => {
    const ek = decodePublic(Buffer.from(a.identity().ekPublic, "base64"));
    assert.equal(ekProblem(ek), null);
    // swtpm serves one connection at a time: the same TPM asked again, on a new connection.
    const first = a.identity().ekPublic;
    await a.close();
    a = await TpmSession.open(await openTpmSocket(tpmA.socket));
    assert.equal(a.identity().ekPublic, first);
    assert.notEqual(a.identity().ekPublic, b.identity().ekPublic);
    assert.notEqual(parseEkPublic(a.identity().ekPublic).fingerprint, parseEkPublic(b.identity().ekPublic).fingerprint);
  });

  it("the site's credential is recovered by the TPM holding the EK, and the site accepts the answer", async () => {
    const id = a.identity();
    const now = new Date();
    const ch = makeChallenge(key, "device-1", id.ekPublic, id.objectPublic, now);
    const got = await a.activate(Buffer.from(ch.credentialBlob, "base64"), Buffer.from(ch.secret, "base64"));
    const proven = checkAnswer(key, "device-1", { ...id, nonce: ch.nonce, expiresAt: ch.expiresAt, credential: b64(got) }, now);
    assert.equal(proven.fingerprint, parseEkPublic(id.ekPublic).fingerprint);
  });

  it("another TPM cannot recover it, even naming the same object and EK", async () => {
    const id = a.identity();
    // Made for A's EK and B's object (loaded in B): B's TPM still lacks A's EK private key.
    const ch = makeChallenge(key, "device-1", id.ekPublic, b.identity().objectPublic, new Date());
    await assert.rejects(b.activate(Buffer.from(ch.credentialBlob, "base64"), Buffer.from(ch.secret, "base64")), TpmError);
  });

  it("the TPM refuses a credential made for an object it has not loaded", async () => {
    const id = a.identity();
    const other = encodePublic({ ...activationObjectTemplate(), attributes: activationObjectTemplate().attributes | TPMA.stClear });
    const ch = makeChallenge(key, "device-1", id.ekPublic, b64(other), new Date());
    await assert.rejects(a.activate(Buffer.from(ch.credentialBlob, "base64"), Buffer.from(ch.secret, "base64")), TpmError);
  });

  it("the agent recovers what tpm2-tools' tpm2_makecredential made (an independent implementation)", async () => {
    const id = a.identity();
    const ek = Buffer.from(id.ekPublic, "base64");
    const work = mkdtempSync(path.join(dir, "mk-"));
    writeFileSync(path.join(work, "ek.pub"), Buffer.concat([Buffer.from([ek.length >> 8, ek.length & 0xff]), ek]));
    writeFileSync(path.join(work, "secret.bin"), "made by tpm2-tools");
    const name = Buffer.from(objectName(decodePublic(Buffer.from(id.objectPublic, "base64")))).toString("hex");
    execFileSync("tpm2_makecredential", ["--tcti", "none", "-u", "ek.pub", "-s", "secret.bin", "-n", name, "-o", "cred.out"], { cwd: work, stdio: "pipe" });
    const f = readFileSync(path.join(work, "cred.out"));
    assert.equal(f.subarray(0, 4).toString("hex"), "badcc0de", "tpm2-tools' credential file header");
    const n1 = f.readUInt16BE(8);
    const blob = f.subarray(10, 10 + n1);
    const n2 = f.readUInt16BE(10 + n1);
    const secret = f.subarray(12 + n1, 12 + n1 + n2);
    assert.equal(Buffer.from(await a.activate(blob, secret)).toString(), "made by tpm2-tools");
  });

  it("the TPM recovers the site's MakeCredential output for any credential value (property, against swtpm)", async () => {
    const id = a.identity();
    const ek = decodePublic(Buffer.from(id.ekPublic, "base64"));
    const name = objectName(decodePublic(Buffer.from(id.objectPublic, "base64")));
    await fc.assert(fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 32 }), async (cred) => {
      const { credentialBlob, secret } = makeCredential(ek, name, cred);
      assert.deepEqual(Buffer.from(await a.activate(credentialBlob, secret)), Buffer.from(cred));
    }), { numRuns: 25 });
  });

  it("the site refuses an answer naming another EK, an expired challenge, a changed nonce or a wrong credential", async () => {
    const id = a.identity();
    const now = new Date();
    const ch = makeChallenge(key, "device-1", id.ekPublic, id.objectPublic, now);
    const credential = b64(await a.activate(Buffer.from(ch.credentialBlob, "base64"), Buffer.from(ch.secret, "base64")));
    const answer = { ...id, nonce: ch.nonce, expiresAt: ch.expiresAt, credential };
    assert.throws(() => checkAnswer(key, "device-1", { ...answer, ekPublic: b.identity().ekPublic }, now), /did not recover/, "another EK named");
    assert.throws(() => checkAnswer(key, "device-1", answer, new Date(now.getTime() + TPM_CHALLENGE_TTL_MS + 1)), /expired/);
    assert.throws(() => checkAnswer(key, "device-1", { ...answer, nonce: "x" + answer.nonce.slice(1) }, now), /did not recover/);
    assert.throws(() => checkAnswer(key, "device-1", { ...answer, expiresAt: new Date(now.getTime() + 86_400_000).toISOString() }, now), /did not recover/);
    assert.throws(() => checkAnswer(key, "device-2", answer, now), /did not recover/, "a challenge made for another device");
    assert.throws(() => checkAnswer(key, "device-1", { ...answer, credential: b64(Buffer.alloc(32)) }, now), /did not recover/);
    const otherSite = tpmChallengeKey(generateKeyPairSync("ed25519").privateKey);
    assert.throws(() => checkAnswer(otherSite, "device-1", answer, now), /did not recover/, "another site's challenge");
    checkAnswer(key, "device-1", answer, now);
  });

  it("only a TCG-template endorsement key is taken as an EK", () => {
    const ek = decodePublic(Buffer.from(a.identity().ekPublic, "base64"));
    assert.throws(() => parseEkPublic(a.identity().objectPublic), /not an RSA key/);
    const signing = encodePublic({ ...ek, attributes: (ek.attributes & ~TPMA.decrypt) | TPMA.sign });
    assert.throws(() => parseEkPublic(b64(signing)), /attributes/);
    const openPolicy = encodePublic({ ...ek, authPolicy: new Uint8Array(32) });
    assert.throws(() => parseEkPublic(b64(openPolicy)), /policy/);
    assert.throws(() => parseEkPublic(b64(encodePublic(ekTemplate()).subarray(0, 40))), /not a TPM public area/);
    assert.throws(() => parseEkPublic("!!!"), TpmProofError);
  });

  it("decoding a public area from the network fails only with DecodeError, and what decodes re-encodes to the same bytes", () => {
    const valid = [Buffer.from(a.identity().ekPublic, "base64"), Buffer.from(a.identity().objectPublic, "base64")];
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.constantFrom(...valid).chain((v) => fc.tuple(fc.nat(v.length - 1), fc.nat(255)).map(([i, x]) => {
      const c = Buffer.from(v);
      c[i] = x;
      return c;
    }))), (bytes) => {
      try {
        const p = decodePublic(bytes);
        assert.deepEqual(Buffer.from(encodePublic(p)), Buffer.from(bytes));
      } catch (err) {
        assert.ok(err instanceof DecodeError, String(err));
      }
    }), { numRuns: 3000 });
  });
});
