import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { maskSecrets, MIN_MASKED_LENGTH } from "./mask.ts";

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const b64url = (s: string) => b64(s).replace(/\+/g, "-").replace(/\//g, "_");
const hex = (s: string) => Buffer.from(s, "utf8").toString("hex");
const form = (s: string) => new URLSearchParams([["", s]]).toString().slice(1);

/** Every form a secret may be printed in, by name. */
function forms(s: string): Record<string, string> {
  const out: Record<string, string> = {
    plain: s,
    base64: b64(s), base64Unpadded: b64(s).replace(/=+$/, ""),
    base64url: b64url(s), base64urlUnpadded: b64url(s).replace(/=+$/, ""),
    hexLower: hex(s), hexUpper: hex(s).toUpperCase(),
  };
  if (s.isWellFormed()) {
    out.uriComponent = encodeURIComponent(s);
    out.uriComponentLowerHex = encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase());
    out.formPlus = encodeURIComponent(s).replace(/%20/g, "+");
    out.form = form(s);
  }
  return out;
}

describe("maskSecrets", () => {
  const secret = "P@ss word/+?é€";
  for (const [name, f] of Object.entries(forms(secret))) {
    it(`masks the secret written as ${name}`, () => {
      const out = maskSecrets(`before ${f} after`, [secret]);
      assert.equal(out, "before ******** after");
    });
  }

  it("masks the secret inside an HTTP Basic header at any offset in the base64 stream", () => {
    const secret = "correct-horse-battery";
    for (const user of ["a", "ab", "abc", "svc-join"]) {
      const header = `Authorization: Basic ${b64(`${user}:${secret}`)}`;
      const out = maskSecrets(header, [secret]);
      assert.ok(out.includes("********"), out);
      // What is left is the user name's characters and at most two characters (plus padding)
      // that mix the secret's last bits with the end of the stream.
      const left = out.slice("Authorization: Basic ".length).split("********");
      assert.equal(left.length, 2, out);
      assert.ok(left[0].length <= Math.ceil((4 * (user.length + 1)) / 3), `${user}: ${out}`);
      assert.ok(left[1].replace(/=+$/, "").length <= 2, `${user}: ${out}`);
    }
  });

  it("leaves secrets shorter than the minimum alone, and text without secrets unchanged", () => {
    assert.equal(MIN_MASKED_LENGTH, 4);
    assert.equal(maskSecrets("a b c abc", ["a", "abc"]), "a b c abc");
    assert.equal(maskSecrets("nothing here", ["hunter22"]), "nothing here");
    assert.equal(maskSecrets("", ["hunter22"]), "");
  });

  it("masks overlapping occurrences and two secrets that share characters", () => {
    assert.equal(maskSecrets("xaaaaay", ["aaaa"]), "x********y");
    assert.equal(maskSecrets("abcd1234wxyz!", ["abcd1234", "1234wxyz"]), "********!");
  });

  it("masks a secret of the largest size a variable holds (64 KiB) in every form, quickly", () => {
    const big = "k3y-".repeat(16 * 1024);
    const text = `head ${b64(big)} mid ${hex(big).toUpperCase()} tail ${encodeURIComponent(big)} end`;
    const started = performance.now();
    assert.equal(maskSecrets(text, [big]), "head ******** mid ******** tail ******** end");
    assert.ok(performance.now() - started < 2000, "took too long");
  });

  it("does not choke on a secret with a lone surrogate", () => {
    const s = "ab\ud800cd";
    assert.equal(maskSecrets(`<${s}>`, [s]), "<********>");
    assert.equal(maskSecrets(`<${hex(s)}>`, [s]), "<********>");
  });

  it("property: a secret embedded in random text, in any form, never comes out in any form", () => {
    // The mask is made of "*"; a secret containing "*" could re-form at its edges.
    const secretArb = fc.oneof(
      fc.string({ unit: "grapheme", minLength: MIN_MASKED_LENGTH, maxLength: 24 }),
      fc.string({ unit: "binary", minLength: MIN_MASKED_LENGTH, maxLength: 24 }),
      fc.string({ minLength: MIN_MASKED_LENGTH, maxLength: 24 }),
    ).filter((s) => s.length >= MIN_MASKED_LENGTH && !s.includes("*"));
    const textArb = fc.string({ unit: "grapheme-ascii", maxLength: 30 });
    fc.assert(fc.property(secretArb, fc.array(fc.tuple(textArb, fc.nat()), { minLength: 1, maxLength: 4 }), textArb, (secret, parts, tail) => {
      const all = forms(secret);
      const names = Object.keys(all);
      const text = parts.map(([t, k]) => t + all[names[k % names.length]]).join("") + tail;
      const out = maskSecrets(text, [secret]);
      for (const [name, f] of Object.entries(all)) {
        if (name.startsWith("hex")) assert.ok(!out.toLowerCase().includes(f.toLowerCase()), `${name} of ${JSON.stringify(secret)} in ${JSON.stringify(out)}`);
        else assert.ok(!out.includes(f), `${name} of ${JSON.stringify(secret)} in ${JSON.stringify(out)}`);
      }
    }), { numRuns: 1000 });
  });
});
