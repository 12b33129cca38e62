/**
 * Soak (not a test, not run by the suite): the state store's kill -9 trials of
 * test/state/chunk-store-crash.test.ts, 1,000 of them by default (issue #14, "Bad input and
 * faults"). Each trial starts a child that keeps three captures going, SIGKILLs it at a random
 * moment, reopens the store and checks that every acknowledged chunk is there byte for byte,
 * that nothing was stored that was never put, that no temporary file survived, and that the
 * capture takes further puts. Stops at the first failure with its trial number.
 *
 *   export PATH="$PWD/.tools/node/bin:$PATH"   # from the repository's root
 *   node --disable-warning=ExperimentalWarning bench/state-store-soak.ts [--trials 1000] [--max-delay-ms 150] [--dir DIR]
 *
 * About 6 minutes for 1,000 trials on 2 cores. --dir keeps the store in DIR (e.g. on the disk
 * an SMP would use) instead of a temporary folder, which is removed at the end.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { runCrashTrials } from "../test/fixtures/state-store-crash.ts";

const { values } = parseArgs({ options: { "trials": { type: "string", default: "1000" }, "max-delay-ms": { type: "string", default: "150" }, "dir": { type: "string" } } });
const trials = Number(values.trials);
const maxDelayMs = Number(values["max-delay-ms"]);
if (!Number.isSafeInteger(trials) || trials < 1 || !Number.isSafeInteger(maxDelayMs) || maxDelayMs < 0) {
  console.error("usage: bench/state-store-soak.ts [--trials N] [--max-delay-ms MS] [--dir DIR]");
  process.exit(2);
}
const base = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "slipway-state-soak-"));
const dir = path.join(base, `state-${process.pid}`);
const started = Date.now();
try {
  const stats = await runCrashTrials(dir, trials, {
    maxDelayMs,
    onTrial: (i, s) => {
      if ((i + 1) % 50 === 0) console.log(`${i + 1}/${trials} trials, ${s.acknowledgedPuts} acknowledged puts, ${Math.round((Date.now() - started) / 1000)} s`);
    },
  });
  console.log(`PASS: ${JSON.stringify(stats)} in ${Math.round((Date.now() - started) / 1000)} s`);
} catch (err) {
  console.error(`FAIL: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  fs.rmSync(values.dir ? dir : base, { recursive: true, force: true });
}
