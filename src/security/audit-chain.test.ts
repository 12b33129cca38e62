import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { GENESIS_HASH, chainHash, checkHead, sealEntry, signHead, verifyChain, type AuditBody, type AuditEntry } from "./audit-chain.ts";

const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
const outcomes = ["success", "denied", "failure"] as const;

function body(i: number): AuditBody {
  return {
    at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    actor: i % 7 === 0 ? "system" : `admin${i % 3}`,
    action: ["device.block", "login", "variable.update", "pxe.password"][i % 4],
    object: i % 5 === 0 ? null : `device:${1000 + i}`,
    outcome: outcomes[i % 3],
    details: i % 4 === 0 ? null : { ip: "192.0.2.7", attempt: i, tags: ["a", "b"], nested: { ok: i % 2 === 0 } },
  };
}

function build(n: number, key: crypto.KeyObject = privateKey): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (let i = 1; i <= n; i++) out.push(sealEntry(out.at(-1) ?? null, body(i), key));
  return out;
}

const chain = build(50);
const writtenAt = new Date(Date.now()).toISOString();
const head = { head: signHead({ seq: 50, hash: chain[49].hash, writtenAt }, privateKey) };
const clone = (): AuditEntry[] => structuredClone(chain);

test("an untouched chain verifies, with and without its head checkpoint", () => {
  assert.deepEqual(verifyChain(chain, publicKey), { ok: true, count: 50, lastSeq: 50, lastHash: chain[49].hash, head: null, uncovered: 0 });
  assert.deepEqual(verifyChain(chain, publicKey, head), { ok: true, count: 50, lastSeq: 50, lastHash: chain[49].hash, head: { seq: 50, writtenAt }, uncovered: 0 });
  assert.equal(verifyChain(JSON.parse(JSON.stringify(chain)), publicKey, { head: JSON.parse(JSON.stringify(head.head)) }).ok, true);
  assert.deepEqual(verifyChain([], publicKey), { ok: true, count: 0, lastSeq: 0, lastHash: GENESIS_HASH, head: null, uncovered: 0 });
});

test("sealing numbers from 1, links to the previous hash and hashes the canonical body", () => {
  assert.equal(chain[0].seq, 1);
  assert.equal(chain[0].prevHash, GENESIS_HASH);
  for (let i = 1; i < chain.length; i++) {
    assert.equal(chain[i].seq, i + 1);
    assert.equal(chain[i].prevHash, chain[i - 1].hash);
  }
  const { hash, signature, prevHash, ...rest } = chain[7];
  assert.equal(hash, chainHash(prevHash, rest));
  const sorted = JSON.stringify({ action: rest.action, actor: rest.actor, at: rest.at, details: rest.details === null ? null : { attempt: 8, ip: "192.0.2.7", nested: { ok: true }, tags: ["a", "b"] }, object: rest.object, outcome: rest.outcome, prevHash, seq: 8 });
  assert.equal(hash, crypto.createHash("sha256").update(sorted).digest("hex"));
  assert.equal(typeof signature, "string");
});

test("editing any field of any one entry is caught at that entry", () => {
  const edits: Array<[keyof AuditEntry, (e: AuditEntry) => void]> = [
    ["seq", (e) => (e.seq += 100)],
    ["at", (e) => (e.at = "2020-01-01T00:00:00.000Z")],
    ["actor", (e) => (e.actor = "someone-else")],
    ["action", (e) => (e.action += ".undo")],
    ["object", (e) => (e.object = e.object === null ? "device:1" : null)],
    ["outcome", (e) => (e.outcome = e.outcome === "success" ? "denied" : "success")],
    ["details", (e) => (e.details = e.details === null ? {} : { ...e.details, ip: "198.51.100.1" })],
    ["prevHash", (e) => (e.prevHash = "f".repeat(64))],
    ["hash", (e) => (e.hash = e.hash.replace(/^./, (c) => (c === "0" ? "1" : "0")))],
    ["signature", (e) => (e.signature = chain[(e.seq % 50)].signature)],
  ];
  for (const [field, edit] of edits) {
    for (const index of [0, 17, 49]) {
      const entries = clone();
      edit(entries[index]);
      const verdict = verifyChain(entries, publicKey, head);
      assert.equal(verdict.ok, false, `${field} at ${index + 1}`);
      assert.equal(verdict.ok === false && verdict.seq, index + 1, `${field} at ${index + 1}: ${JSON.stringify(verdict)}`);
    }
  }
});

test("an edit whose hash the attacker recomputed is caught by the signature", () => {
  const entries = clone();
  const e = entries[20];
  e.actor = "innocent";
  e.hash = chainHash(e.prevHash, e);
  const verdict = verifyChain(entries, publicKey);
  assert.deepEqual(verdict.ok === false && [verdict.seq, /signature/.test(verdict.reason)], [21, true]);
});

test("deleting the first or a middle entry names the missing seq", () => {
  for (const index of [0, 24]) {
    const entries = clone();
    entries.splice(index, 1);
    const verdict = verifyChain(entries, publicKey);
    assert.deepEqual(verdict.ok === false && verdict.seq, index + 1, JSON.stringify(verdict));
  }
});

test("deleting the last entry is caught only with the head checkpoint", () => {
  const entries = clone().slice(0, 49);
  assert.equal(verifyChain(entries, publicKey).ok, true, "without a checkpoint truncation is invisible");
  const verdict = verifyChain(entries, publicKey, head);
  assert.ok(verdict.ok === false && verdict.seq === 50 && /truncated/.test(verdict.reason), JSON.stringify(verdict));
  const gone = verifyChain(clone().slice(0, 10), publicKey, head);
  assert.ok(gone.ok === false && gone.seq === 11);
});

test("a rewritten tail that does not match the checkpoint is caught at the checkpoint", () => {
  // The attacker holds the key (e.g. stolen), drops entry 50 and reseals a different one.
  const entries = clone().slice(0, 49);
  entries.push(sealEntry(entries[48], { ...body(50), actor: "cover-up" }, privateKey));
  const verdict = verifyChain(entries, publicKey, head);
  assert.ok(verdict.ok === false && verdict.seq === 50 && /checkpoint/.test(verdict.reason), JSON.stringify(verdict));
});

test("an inserted entry is caught at its position", () => {
  // Renumbered so the seq sequence still looks consecutive.
  const entries = clone();
  const fake = sealEntry(entries[29], body(99), privateKey);
  const shifted = entries.slice(30).map((e) => ({ ...e, seq: e.seq + 1 }));
  const forged = [...entries.slice(0, 30), { ...fake, signature: "A".repeat(86) + "==" }, ...shifted];
  let v = verifyChain(forged, publicKey);
  assert.ok(v.ok === false && v.seq === 31, JSON.stringify(v));
  // Not renumbered: a duplicate seq.
  const dup = [...entries.slice(0, 31), { ...entries[30] }, ...entries.slice(31)];
  v = verifyChain(dup, publicKey);
  assert.ok(v.ok === false && v.seq === 32, JSON.stringify(v));
  // Even a correctly signed insertion breaks the link of the record after it.
  const signed = [...entries.slice(0, 30), fake, ...shifted];
  v = verifyChain(signed, publicKey);
  assert.ok(v.ok === false && v.seq === 32, JSON.stringify(v));
});

test("swapping two adjacent entries is caught at the first of them", () => {
  for (const index of [0, 10, 48]) {
    const entries = clone();
    [entries[index], entries[index + 1]] = [entries[index + 1], entries[index]];
    const v = verifyChain(entries, publicKey, head);
    assert.ok(v.ok === false && v.seq === index + 1, `rows swapped at ${index}: ${JSON.stringify(v)}`);
    // Swap the contents but keep the seq numbers in place.
    const bodies = clone();
    const a = { ...bodies[index], seq: index + 2 };
    const b = { ...bodies[index + 1], seq: index + 1 };
    bodies[index] = b;
    bodies[index + 1] = a;
    const w = verifyChain(bodies, publicKey, head);
    assert.ok(w.ok === false && w.seq === index + 1, `bodies swapped at ${index}: ${JSON.stringify(w)}`);
  }
});

test("a whole chain rebuilt with another key is refused at the first entry", () => {
  const { privateKey: other } = crypto.generateKeyPairSync("ed25519");
  const v = verifyChain(build(50, other), publicKey);
  assert.ok(v.ok === false && v.seq === 1 && /signature/.test(v.reason), JSON.stringify(v));
});

test("malformed records are refused, not thrown", () => {
  const entries = clone() as unknown as Array<Record<string, unknown>>;
  entries[3].details = { bad: undefined };
  const v = verifyChain(entries as unknown as AuditEntry[], publicKey);
  assert.ok(v.ok === false && v.seq === 4, JSON.stringify(v));
  const withNull = [chain[0], null as unknown as AuditEntry];
  assert.equal(verifyChain(withNull, publicKey).ok, false);
  const stringSeq = [{ ...chain[0], seq: "1" as unknown as number }];
  assert.equal(verifyChain(stringSeq, publicKey).ok, false);
});

test("details keep what was hashed: a Date becomes its ISO string", () => {
  const e = sealEntry(null, { ...body(1), details: { when: new Date(0) } }, privateKey);
  assert.deepEqual(e.details, { when: "1970-01-01T00:00:00.000Z" });
  assert.equal(verifyChain([JSON.parse(JSON.stringify(e))], publicKey).ok, true);
});

test("verification streams: a generator of 5,000 entries is walked without an array", () => {
  function* generate(): Generator<AuditEntry> {
    let prev: AuditEntry | null = null;
    for (let i = 1; i <= 5_000; i++) {
      prev = sealEntry(prev, body(i), privateKey);
      yield prev;
    }
  }
  const v = verifyChain(generate(), publicKey);
  assert.ok(v.ok && v.count === 5_000 && v.lastSeq === 5_000);
});

test("sealing refuses a key that is not Ed25519 and an unknown outcome", () => {
  const { privateKey: ec } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  assert.throws(() => sealEntry(null, body(1), ec), TypeError);
  assert.throws(() => sealEntry(null, body(1), publicKey), TypeError);
  assert.throws(() => sealEntry(null, { ...body(1), outcome: "maybe" as "success" }, privateKey), TypeError);
});

test("with head evidence, a missing head, an empty log or an unsigned head is tampering", () => {
  const missing = verifyChain(chain, publicKey, { head: null });
  assert.ok(missing.ok === false && /head checkpoint is missing/.test(missing.reason) && missing.checked === 50, JSON.stringify(missing));
  const empty = verifyChain([], publicKey, { head: null });
  assert.ok(empty.ok === false && /empty/.test(empty.reason) && empty.checked === 0, JSON.stringify(empty));
  const emptyWithHead = verifyChain([], publicKey, head);
  assert.ok(emptyWithHead.ok === false && /truncated/.test(emptyWithHead.reason), JSON.stringify(emptyWithHead));
  const h = head.head;
  const forgeries: unknown[] = [
    { seq: 50, hash: chain[49].hash }, // the old, unsigned format
    { ...h, seq: 49 }, // edited fields under the old signature
    { ...h, hash: chain[48].hash },
    { ...h, writtenAt: new Date(Date.now() + 3600_000).toISOString() },
    { ...h, signature: chain[49].signature }, // an entry's signature is not a head's
    signHead({ seq: 50, hash: chain[49].hash, writtenAt }, crypto.generateKeyPairSync("ed25519").privateKey),
    "not json", 50, [], {},
  ];
  for (const forged of forgeries) {
    const v = verifyChain(chain, publicKey, { head: forged });
    assert.ok(v.ok === false && /not signed/.test(v.reason) && v.checked === 50, `${JSON.stringify(forged)}: ${JSON.stringify(v)}`);
    assert.equal(checkHead(forged, publicKey), null);
  }
  assert.deepEqual(checkHead(h, publicKey), h);
});

test("a log cut back past a replayed older head is caught; cut back exactly to it, only an outside copy can tell", () => {
  const oldHead = { head: signHead({ seq: 40, hash: chain[39].hash, writtenAt }, privateKey) };
  const v = verifyChain(chain.slice(0, 35), publicKey, oldHead);
  assert.ok(v.ok === false && v.seq === 36 && /truncated/.test(v.reason), JSON.stringify(v));
  // Rows 41-50 deleted and the head of #40 put back: consistent, so it verifies. What can be
  // shown is that a later head was seen elsewhere (README: what the audit log cannot show).
  const rolledBack = verifyChain(chain.slice(0, 40), publicKey, oldHead);
  assert.deepEqual(rolledBack.ok && [rolledBack.count, rolledBack.uncovered], [40, 0]);
  // A head behind the log vouches for what it names; the rest is reported as not covered.
  const behind = verifyChain(chain.slice(0, 45), publicKey, oldHead);
  assert.deepEqual(behind.ok && [behind.count, behind.head?.seq, behind.uncovered], [45, 40, 5]);
});

test("a failure says how many entries were checked before it", () => {
  const entries = clone();
  entries[30].actor = "edited";
  const v = verifyChain(entries, publicKey, head);
  assert.ok(v.ok === false && v.seq === 31 && v.checked === 30, JSON.stringify(v));
});
