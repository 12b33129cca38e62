import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import fc from "fast-check";
import { DecodeError, encodeTarHeader, END_OF_ARCHIVE, padBlock, parsePax, encodePax, TarRewriter, type TarEdit, type TarMember } from "./tar.ts";

interface Spec {
  path: string;
  type: "0" | "1" | "2" | "5";
  data: Buffer;
  uid: number;
  gid: number;
  linkpath: string;
  pax: [string, Buffer][];
}

const nameChar = fc.constantFrom(..."abcXYZ019 -_.\n\\:=é日ü\u00a0".split(""));
const component = fc.array(nameChar, { minLength: 1, maxLength: 40 }).map((a) => a.join("")).filter((s) => s !== "." && s !== "..");
const pathArb = fc.array(component, { minLength: 1, maxLength: 6 }).map((a) => a.join("/"));
const idArb = fc.oneof(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 2 ** 32 - 2 }));
const paxArb = fc.array(
  fc.tuple(
    fc.constantFrom("SCHILY.xattr.user.a", "SCHILY.xattr.user.b", "mtime", "SCHILY.acl.access", "comment"),
    fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
  ),
  { maxLength: 4 },
);
const specArb: fc.Arbitrary<Spec> = fc.record({
  path: pathArb,
  type: fc.constantFrom("0", "1", "2", "5"),
  data: fc.uint8Array({ maxLength: 3000 }).map((u) => Buffer.from(u)),
  uid: idArb,
  gid: idArb,
  linkpath: pathArb,
  pax: paxArb,
}).map((s) => ({ ...s, data: s.type === "0" ? s.data : Buffer.alloc(0), linkpath: s.type === "1" || s.type === "2" ? s.linkpath : "" }));

function encodeArchive(specs: Spec[], trailingZeros = 0): Buffer {
  const parts: Buffer[] = [];
  for (const s of specs) {
    parts.push(encodeTarHeader({ path: s.path, type: s.type, size: s.data.length, uid: s.uid, gid: s.gid, linkpath: s.linkpath, pax: s.pax, mode: 0o640, mtime: 1_700_000_000 }));
    parts.push(padBlock(s.data));
  }
  parts.push(END_OF_ARCHIVE, Buffer.alloc(trailingZeros * 512));
  return Buffer.concat(parts);
}

/** Runs `input` through a rewriter in chunks cut at `cuts` (fractions of the length). */
function rewrite(input: Buffer, cuts: number[], opts: ConstructorParameters<typeof TarRewriter>[0]): Buffer {
  const r = new TarRewriter(opts);
  const points = [...new Set(cuts.map((c) => Math.floor(c * input.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, input.length]) {
    out.push(...r.push(input.subarray(prev, p)));
    prev = p;
  }
  r.end();
  return Buffer.concat(out);
}

function readAll(archive: Buffer): { member: TarMember; data: Buffer }[] {
  const got: { member: TarMember; data: Buffer }[] = [];
  rewrite(archive, [], { onMember: () => ({ collect: true }), onData: (member, data) => got.push({ member, data }), maxCollect: 1 << 20 });
  return got;
}

const cutsArb = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 });

test("an archive passed through without edits comes out byte for byte, cut into chunks anywhere", () => {
  fc.assert(
    fc.property(fc.array(specArb, { maxLength: 6 }), cutsArb, fc.integer({ min: 0, max: 18 }), (specs, cuts, zeros) => {
      const input = encodeArchive(specs, zeros);
      const seen: TarMember[] = [];
      const output = rewrite(input, cuts, { onMember: (m) => void seen.push(m) });
      assert.ok(output.equals(input));
      assert.deepEqual(
        seen.map((m) => [m.path, m.type, m.size, m.uid, m.gid, m.linkpath]),
        specs.map((s) => [s.path, s.type, s.data.length, s.uid, s.gid, s.linkpath]),
      );
    }),
    { numRuns: 300 },
  );
});

test("changed owners and pax records are what a reader sees afterwards, data untouched", () => {
  fc.assert(
    fc.property(fc.array(specArb, { minLength: 1, maxLength: 6 }), cutsArb, idArb, idArb, (specs, cuts, uidShift, newGid) => {
      const input = encodeArchive(specs);
      const edit = (m: TarMember): TarEdit => ({
        uid: (m.uid + uidShift) % 2 ** 32,
        gid: newGid,
        pax: [...m.pax.filter(([k]) => k !== "comment"), ["SCHILY.acl.access", Buffer.from(`user:${m.uid}:rw-\n`)]],
      });
      const output = rewrite(input, cuts, { onMember: edit });
      const after = readAll(output);
      assert.equal(after.length, specs.length);
      after.forEach(({ member, data }, i) => {
        const s = specs[i]!;
        assert.equal(member.path, s.path);
        assert.equal(member.linkpath, s.linkpath);
        assert.equal(member.uid, (s.uid + uidShift) % 2 ** 32);
        assert.equal(member.gid, newGid);
        assert.ok(data.equals(s.data));
        const acl = member.pax.filter(([k]) => k === "SCHILY.acl.access").map(([, v]) => v.toString());
        assert.deepEqual(acl.at(-1), `user:${s.uid}:rw-\n`);
        assert.equal(member.pax.some(([k]) => k === "comment"), false);
      });
    }),
    { numRuns: 200 },
  );
});

test("a dropped member is gone and the rest are intact", () => {
  fc.assert(
    fc.property(fc.array(specArb, { minLength: 1, maxLength: 5 }), fc.nat(), (specs, pick) => {
      const drop = pick % specs.length;
      let i = 0;
      const output = rewrite(encodeArchive(specs), [], { onMember: () => ({ drop: i++ === drop }) });
      const after = readAll(output);
      assert.deepEqual(after.map((a) => a.member.path), specs.filter((_, j) => j !== drop).map((s) => s.path));
    }),
    { numRuns: 100 },
  );
});

test("a truncated archive is refused at its end with a DecodeError, never passed as whole", () => {
  fc.assert(
    fc.property(fc.array(specArb, { minLength: 1, maxLength: 4 }), fc.double({ min: 0, max: 1, noNaN: true }), (specs, f) => {
      const input = encodeArchive(specs);
      const cut = Math.min(input.length - 1, Math.floor(f * input.length));
      const r = new TarRewriter();
      r.push(input.subarray(0, cut));
      assert.throws(() => r.end(), DecodeError);
    }),
    { numRuns: 300 },
  );
});

test("any flipped byte is either read or refused with a DecodeError, nothing else", () => {
  fc.assert(
    fc.property(fc.array(specArb, { minLength: 1, maxLength: 3 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (specs, at, xor) => {
      const input = Buffer.from(encodeArchive(specs));
      input[at % input.length]! ^= xor;
      try {
        rewrite(input, [0.3, 0.7], { onMember: (m) => ({ uid: m.uid + 1 }) });
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
      }
    }),
    { numRuns: 2000 },
  );
});

test("pax records round-trip, including binary values and lengths that gain a digit", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 20 }).filter((k) => !k.includes("=") && !k.includes("\n")), fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u))), { maxLength: 5 }), (records) => {
      assert.deepEqual(parsePax(encodePax(records)), records);
    }),
  );
  // " k=" + 94 bytes + "\n" is 98 bytes: with two digits 100, which needs three: 101.
  assert.equal(encodePax([["k", "x".repeat(94)]]).toString().split(" ")[0], "101");
});

test("GNU tar reads the rewritten archive: mapped ids (also above the octal limit), names, data", () => {
  const specs: Spec[] = [
    { path: "home/alice/naïve\nname.txt", type: "0", data: Buffer.from("hello"), uid: 1000, gid: 1500, linkpath: "", pax: [] },
    { path: "home/alice/dir", type: "5", data: Buffer.alloc(0), uid: 1000, gid: 1000, linkpath: "", pax: [] },
    { path: "home/alice/link", type: "2", data: Buffer.alloc(0), uid: 1001, gid: 1001, linkpath: "dir", pax: [] },
  ];
  const out = rewrite(encodeArchive(specs), [0.5], { onMember: (m) => ({ uid: m.uid === 1000 ? 3_000_000 : 7, gid: 42 }) });
  const listing = execFileSync("tar", ["-tv", "--numeric-owner", "--quoting-style=escape", "-f", "-"], { input: out, encoding: "utf8" });
  assert.match(listing, /3000000\/42 +5 .* home\/alice\/naïve\\nname\.txt/);
  assert.match(listing, /3000000\/42 .* home\/alice\/dir/);
  assert.match(listing, /7\/42 .* home\/alice\/link -> dir/);
});
