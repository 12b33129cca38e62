import { it } from "node:test";
import assert from "node:assert/strict";
import { nameProblem } from "./name.ts";

it("nameProblem names the class of a hidden or direction-changing character, and passes ordinary names", () => {
  assert.match(nameProblem("pc-1\u202egpj.exe") ?? "", /bidirectional control characters/);
  assert.match(nameProblem("pc\u2066-1") ?? "", /bidirectional control characters/);
  assert.match(nameProblem("pc\u200b-1") ?? "", /zero-width characters/);
  assert.match(nameProblem("\ufeffpc-1") ?? "", /zero-width characters/);
  assert.match(nameProblem("pc-1\ud800") ?? "", /unpaired surrogates/);
  assert.match(nameProblem("pc\u0085-1") ?? "", /control characters/);
  assert.match(nameProblem("pc\u2028-1") ?? "", /line or paragraph separators/);
  for (const ok of ["pc-1", "Ünïcødé-Lab", "مختبر-١", "ラボ 3", "lab 🚀"]) assert.equal(nameProblem(ok), null, ok);
});
