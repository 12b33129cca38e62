import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCrashTrials } from "../fixtures/state-store-crash.ts";

test("kill -9 of the state store at random moments, 50 times: no acknowledged chunk lost, no temporary file left, the capture goes on", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-state-crash-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const stats = await runCrashTrials(path.join(dir, "state"), 50);
  t.diagnostic(JSON.stringify(stats));
  assert.equal(stats.trials, 50);
  // The trials did real work between kills, or they prove nothing.
  assert.ok(stats.acknowledgedPuts >= 50, `only ${stats.acknowledgedPuts} acknowledged puts`);
  assert.ok(stats.completedCaptures >= 1, "no capture ever completed");
});
