import { test } from "node:test";
import assert from "node:assert/strict";
import { runSequence, expandVariables, type AnyStep, type StepEvent, type ContentSource } from "./engine.ts";
import { stepModules } from "./steps/index.ts";

const noContent: ContentSource = {
  resolve: () => null,
  manifest: () => Promise.reject(new Error("no content in this test")),
  chunks: () => { throw new Error("no content in this test"); },
};

async function run(steps: AnyStep[], vars: Record<string, string> = {}, secrets: Record<string, string> = {}) {
  const events: StepEvent[] = [];
  const asked: string[] = [];
  const outcome = await runSequence({
    steps, modules: stepModules, vars: new Map(Object.entries(vars)), masks: new Set(), state: { firmware: "bios" }, content: noContent,
    report: async (e) => void events.push(e),
    secret: async (path, name) => {
      asked.push(`${path}:${name}`);
      if (!(name in secrets)) throw new Error("not released");
      return secrets[name];
    },
  });
  const ends = events.filter((e) => e.state !== "started" && e.state !== "progress").map((e) => `${e.step} ${e.state}`);
  return { outcome, events, ends, asked };
}

const cmd = (name: string, command: string, extra: Partial<AnyStep> = {}): AnyStep => ({ name, type: "run-command", with: { command }, ...extra });

test("steps run in order; conditions see variables set by earlier steps; disabled steps are skipped", async () => {
  const r = await run([
    { name: "set", type: "set-variable", with: { name: "Role", value: "lab-${Site}" } },
    cmd("only lab", "test \"$Role\" = lab-north", { condition: "Role like 'lab-*'" }),
    cmd("never", "exit 9", { condition: "Role == 'office'" }),
    cmd("off", "exit 9", { disabled: true }),
  ], { Site: "north" });
  assert.equal(r.outcome.status, "succeeded");
  assert.deepEqual(r.ends, ["0 succeeded", "1 succeeded", "2 skipped", "3 skipped"]);
});

test("a failed step stops the sequence unless it continues on error; groups fail as a whole", async () => {
  const r = await run([
    cmd("tolerated", "exit 3", { continueOnError: true }),
    { name: "group", type: "group", steps: [cmd("ok", "true"), cmd("bad", "echo disk full >&2; exit 5"), cmd("not reached", "true")] },
    cmd("after", "true"),
  ]);
  assert.equal(r.outcome.status, "failed");
  assert.equal(r.outcome.failedStep, "1/1");
  assert.deepEqual(r.ends, ["0 failed", "1/0 succeeded", "1/1 failed", "1 failed"]);
  const bad = r.events.find((e) => e.step === "1/1" && e.state === "failed")!;
  assert.equal(bad.exitCode, 5);
  assert.match(bad.message!, /exited 5[\s\S]*disk full/);
});

test("success codes, timeouts and unknown variables fail with a message that says why", async () => {
  const r = await run([
    cmd("3 means done here", "exit 3", { with: { command: "exit 3", successCodes: [0, 3] } }),
    cmd("slow", "sleep 30", { timeoutSeconds: 1, continueOnError: true }),
    { name: "bad var", type: "set-variable", with: { name: "X", value: "${Nope}" } },
  ]);
  assert.deepEqual(r.ends, ["0 succeeded", "1 failed", "2 failed"]);
  assert.match(r.events.find((e) => e.step === "1" && e.state === "failed")!.message!, /timed out/);
  assert.match(r.events.find((e) => e.step === "2" && e.state === "failed")!.message!, /Cannot expand \$\{Nope\}/);
});

test("Run As fetches the secret just in time for that step, and its value never reaches a report", async () => {
  const canary = "S3cret-canary-value-42";
  const r = await run([
    cmd("join", "echo joining with $JoinCred; echo \"$JoinCred\" | wc -c", { runAs: { secret: "JoinCred" } } as Partial<AnyStep>),
    cmd("later", "echo again $JoinCred"),
  ], {}, { JoinCred: canary });
  assert.equal(r.outcome.status, "succeeded");
  assert.deepEqual(r.asked, ["0:JoinCred"]);
  const all = JSON.stringify(r.events);
  assert.ok(!all.includes(canary), all);
  assert.match(all, /joining with \*\*\*\*\*\*\*\*/);
});

test("a reboot ends the run; the steps after it are reported skipped; unknown step types fail clearly", async () => {
  const r = await run([cmd("a", "true"), { name: "restart", type: "reboot", with: {} }, cmd("b", "true")]);
  assert.equal(r.outcome.status, "reboot");
  assert.deepEqual(r.ends, ["0 succeeded", "1 succeeded", "2 skipped"]);
  const u = await run([{ name: "encrypt", type: "enable-encryption", with: {} }]);
  assert.equal(u.outcome.status, "failed");
  assert.match(u.events.at(-1)!.message!, /does not support it yet/);
});

test("expandVariables replaces ${Name} and refuses unknown names", () => {
  assert.equal(expandVariables("pc-${Serial}-${Site}", new Map([["Serial", "A1"], ["Site", "n"]])), "pc-A1-n");
  assert.throws(() => expandVariables("${Missing}", new Map()), /Missing/);
});
