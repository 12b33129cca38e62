import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { builtInCorpus, fuzzDecoders } from "./fuzz.ts";
import { readFixtures } from "./fixtures/load.ts";

test("the fuzzer finds no failure and reaches both decoders' success paths", () => {
  const corpus = { dhcp: [...readFixtures("dhcp-").values()], tftp: builtInCorpus().tftp };
  const report = fuzzDecoders(20_000, 42, corpus);
  assert.deepEqual(report.failures, []);
  assert.ok(report.decoded.dhcp > 1000, `only ${report.decoded.dhcp} DHCP inputs decoded`);
  assert.ok(report.decoded.tftp > 1000, `only ${report.decoded.tftp} TFTP inputs decoded`);
});

test("the same seed gives the same run", () => {
  const a = fuzzDecoders(2_000, 7);
  const b = fuzzDecoders(2_000, 7);
  assert.deepEqual(a.decoded, b.decoded);
  assert.notDeepEqual(fuzzDecoders(2_000, 8).decoded, a.decoded);
});

test("the fuzz script exits 0 and reports its rate", () => {
  const script = fileURLToPath(new URL("./fuzz.ts", import.meta.url));
  const out = execFileSync(process.execPath, ["--disable-warning=ExperimentalWarning", script, "3000", "1"], { encoding: "utf8" });
  assert.match(out, /fuzz seed 1: 3000 inputs per decoder .* inputs\/s\); decoded dhcp \d+, tftp \d+; failures 0/);
});
