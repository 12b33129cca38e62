/**
 * The README's own commands, run as written (issue #13): the quick start's `scripts/start.sh`,
 * every line of "Using it", then every line of "Deploying a machine, end to end" — the lab, the
 * deploy environment, `slipway image build debian`, Slipway in the lab, and a blank BIOS QEMU
 * machine with no SMBIOS UUID that PXE-boots, waits for approval, deploys the built Debian and
 * boots it to its login prompt. The lines come from README.md itself, so the docs cannot drift.
 *
 * Each line runs with `bash -c` in a fresh folder that holds links to the repository's bin,
 * scripts, src, examples and packages (so `./var` is this test's, not yours), as root. What a
 * person at a terminal does differently, and only that, is done here by rule:
 *   - a line ending in `&`, and `scripts/start.sh`, run in the background (start.sh is stopped
 *     with SIGINT after "Using it", as its reader presses Ctrl-C);
 *   - `export NAME=VALUE…` sets the environment of the lines after it;
 *   - `scripts/lab.sh vm …` runs in the background with `--log FILE` added (the console in a file);
 *   - `SERIAL` and `RUN-ID` are what the line before printed (read from its `--json` twin);
 *   - passwords and `--value-stdin` values arrive as a reader would type them: SLIPWAY_PASSWORD /
 *     SLIPWAY_NEW_PASSWORD for `login` (no terminal), standard input for `--value-stdin`;
 *   - the lab is named by SLIPWAY_LAB (and `slipway-lab` in the lines is that name) so it never
 *     meets an evaluator's own lab;
 *   - where a reader waits (for the machine to enroll, for the run to end, for the login prompt)
 *     the test waits on the machine's console or the run (failure detection only, no time limit
 *     asserted).
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { tempDir } from "./support/site.ts";

if (process.getuid?.() !== 0) throw new Error("the README deployment test needs root (network namespaces): run scripts/test.sh as root");

const root = path.resolve(import.meta.dirname, "..");
const readme = fs.readFileSync(path.join(root, "README.md"), "utf8");

/** The lines of the first ```sh block after a heading (comment-only lines dropped). */
export function shBlock(markdown: string, heading: string): string[] {
  const at = markdown.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README.md has no "${heading}" section`);
  const m = /```sh\n([\s\S]*?)```/.exec(markdown.slice(at));
  assert.ok(m, `"${heading}" has no sh block`);
  return m[1].split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
}
/** A line without its trailing comment (the README's comments follow two spaces and a #). */
const code = (line: string) => line.replace(/\s+#\s.*$/, "").trim();

const NS = `srd-${randomBytes(3).toString("hex")}`;
const work = tempDir("slipway-readme-");
for (const entry of ["bin", "scripts", "src", "examples", "node_modules", "package.json", "package-lock.json", "tsconfig.json", ".tools"]) {
  if (fs.existsSync(path.join(root, entry))) fs.symlinkSync(path.join(root, entry), path.join(work, entry));
}
const newPassword = `Readme-Test-${randomBytes(6).toString("hex")}`;
const env: NodeJS.ProcessEnv = {
  PATH: process.env.PATH, HOME: work, LANG: "C.UTF-8", SLIPWAY_LAB: NS, SLIPWAY_CONFIG: path.join(work, "profile.json"),
  // Downloads (the Debian kernel, Debian's packages for the image) kept between runs of the suite.
  SLIPWAY_CACHE_DIR: path.join(root, ".cache/readme"), SLIPWAY_LOG_LEVEL: "info",
};
const children: ChildProcess[] = [];

interface Ran { code: number; out: string }
function sh(line: string, opts: { stdin?: string; extraEnv?: NodeJS.ProcessEnv } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = execFile("bash", ["-c", line], { env: { ...env, ...opts.extraEnv }, cwd: work, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, out: stdout + stderr }));
    // A line that does not read its standard input may exit before it is written: EPIPE then is
    // no failure of the line (its exit code says how it went), so it must not fail the test.
    child.stdin!.on("error", () => {});
    child.stdin!.end(opts.stdin ?? "");
  });
}
function background(line: string): { child: ChildProcess; output: () => string } {
  const child = spawn("bash", ["-c", `exec ${line}`], { env, cwd: work, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  return { child, output: () => out };
}
/** Waits (failure detection only: 20 minutes) until `done()` is true; `what` and `detail()` explain a failure. */
async function until(done: () => boolean | Promise<boolean>, what: string, detail: () => string, alive?: ChildProcess): Promise<void> {
  for (let i = 0; i < 2400; i++) {
    if (await done()) return;
    if (alive && alive.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.fail(`${what}:\n${detail().slice(-4000)}`);
}
async function ok(line: string, opts: { stdin?: string; extraEnv?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await sh(line, opts);
  assert.equal(r.code, 0, `README line failed (exit ${r.code}): ${line}\n${r.out.slice(-4000)}`);
  return r.out;
}
const json = async <T>(line: string): Promise<T> => JSON.parse(await ok(`${line} --json`)) as T;

describe("the README, followed word for word", () => {
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await sh("scripts/lab.sh down");
    fs.rmSync(work, { recursive: true, force: true });
  });

  // First, while no lab exists (with one, "vm" would start a machine).
  it("lab usage errors change nothing", async () => {
    assert.equal((await sh("scripts/lab.sh vm")).code, 2, "no lab");
    assert.equal((await sh("scripts/lab.sh sideways")).code, 2);
  });

  it("quick start, Using it, then the deployment in the lab: a blank machine without an SMBIOS UUID installs Debian and boots it", { timeout: 3_600_000 }, async () => {
    // Quick start: the first line starts Slipway; its reader stops it after "Using it".
    const quick = shBlock(readme, "## Quick start");
    assert.match(code(quick[0]), /^scripts\/start\.sh$/);
    const start = background(code(quick[0]));
    await until(() => /listening on https:\/\/127\.0\.0\.1:8443/.test(start.output()), "scripts/start.sh did not start", start.output, start.child);
    const oneTime = /One-time password:\s+(\S+)/.exec(start.output())?.[1];
    assert.ok(oneTime, `start.sh printed no one-time password:\n${start.output()}`);

    for (const line of shBlock(readme, "## Using it")) {
      const c = code(line);
      if (/ login /.test(c)) await ok(line, { extraEnv: { SLIPWAY_PASSWORD: oneTime, SLIPWAY_NEW_PASSWORD: newPassword } });
      else if (/--value-stdin/.test(c)) await ok(line, { stdin: "readme-join-secret\n" });
      else await ok(line);
    }
    start.child.kill("SIGINT");
    await until(() => start.child.exitCode !== null, "start.sh did not stop on Ctrl-C (SIGINT)", start.output);

    const lines = shBlock(readme, "## Deploying a machine, end to end");
    const vmLine = lines.find((l) => /^scripts\/lab\.sh vm /.test(code(l)));
    assert.ok(vmLine && !/--uuid/.test(vmLine), "the README's machine has no SMBIOS UUID (QEMU without -uuid)");
    assert.ok(lines.some((l) => /bin\/slipway image build debian /.test(l)), "the README builds its OS image");
    const consoleLog = path.join(work, "lab-pc-02.console");
    const consoleText = () => (fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, "latin1") : "");
    let up: ReturnType<typeof background> | undefined;
    let vm: ReturnType<typeof background> | undefined;
    let serial = "";
    let runId = "";
    for (const line of lines) {
      const c = code(line).replaceAll("slipway-lab", NS);
      if (c.startsWith("export ")) {
        for (const [, k, v] of c.slice(7).matchAll(/([A-Z_]+)=(\S+)/g)) env[k] = v;
      } else if (c.endsWith("&")) {
        up = background(c.slice(0, -1).trim());
        await until(() => /PXE \(dhcp[^\n]*br0 10\.99\.0\.1/.test(up!.output()) && /listening on https:\/\/10\.99\.255\.2:8443/.test(up!.output()),
          "slipway up in the lab did not start serving", up.output, up.child);
      } else if (/^scripts\/lab\.sh vm /.test(c)) {
        assert.equal((await sh(c.replace("52:54:00:12:34:57", "52:54:00:12:ZZ:57"))).code, 2, "a malformed MAC is refused");
        vm = background(`${c} --log ${consoleLog}`);
      } else if (/ enrollment pending$/.test(c)) {
        await until(() => /is waiting for an administrator|waiting for an administrator to approve/.test(consoleText()), "the machine did not reach the approval wait", consoleText, vm!.child);
        assert.match(consoleText(), /10\.99\.0\.1\d\d/, "it got a lease from Slipway's lab DHCP");
        const pending = await json<{ serial: string; deviceName: string; smbiosUuid: string | null }[]>(c);
        const mine = pending.filter((p) => p.deviceName === "lab-pc-02");
        assert.equal(mine.length, 1, JSON.stringify(pending));
        assert.equal(mine[0].smbiosUuid, null, "no SMBIOS UUID: counted as absent");
        assert.ok(consoleText().includes(mine[0].serial), "the console shows the serial to approve");
        serial = mine[0].serial;
        assert.ok((await ok(c)).includes(serial), "the table shows the whole serial, to copy");
      } else if (c.includes("SERIAL")) {
        await ok(c.replace("SERIAL", serial));
      } else if (/ run list$/.test(c)) {
        await until(async () => (runId = (await json<{ id: string }[]>(c))[0]?.id ?? "") !== "", "no run started after approval", consoleText, vm!.child);
        await ok(c);
      } else if (c.includes("RUN-ID")) {
        const show = c.replace("RUN-ID", runId);
        type Run = { state: string; events?: { step: string; state: string; message?: string | null }[] };
        let run: Run = { state: "" };
        await until(async () => ["succeeded", "failed", "cancelled"].includes((run = await json<Run>(show)).state), "the run did not end", consoleText, vm!.child);
        assert.equal(run.state, "succeeded", JSON.stringify(run, null, 2));
        // Each step's last event is its outcome.
        const outcome = new Map<string, string>();
        for (const e of run.events ?? []) outcome.set(e.step.replace(/^[\d/]+ /, ""), e.state);
        const bad = [...outcome].filter(([, st]) => st !== "succeeded" && st !== "skipped");
        assert.deepEqual(bad, [], "every step of the README's example task sequence succeeds");
        assert.equal(outcome.get("Join directory"), "succeeded", JSON.stringify(run.events));
        assert.equal(outcome.get("Apply image"), "succeeded");
        assert.match(await ok(show), /Apply image/);
      } else if (/^scripts\/lab\.sh down$/.test(c)) {
        await until(() => /pc-lab-02 login:/.test(consoleText()), "the installed Debian did not reach its login prompt", consoleText, vm!.child);
        assert.match(consoleText(), /Debian GNU\/Linux/);
        await ok(c);
        assert.ok(!(await sh("ip netns list")).out.includes(NS), "the lab's namespace is gone");
        const hostEnd = `sl${createHash("sha256").update(NS).digest("hex").slice(0, 8)}-h`;
        assert.notEqual((await sh(`ip link show ${hostEnd}`)).code, 0, "the host end of the admin link is gone");
        assert.equal(up?.child.exitCode !== null || up?.child.signalCode !== null, true, "Slipway in the lab stopped with it");
      } else if (/ login /.test(c)) {
        await ok(c, { extraEnv: { SLIPWAY_PASSWORD: newPassword } });
      } else if (/--value-stdin/.test(c)) {
        await ok(c, { stdin: "readme-join-secret\n" });
      } else {
        const out = await ok(c);
        if (/^scripts\/lab\.sh up$/.test(c)) {
          assert.match(out, new RegExp(`ip netns exec ${NS} bin/slipway up`));
          assert.equal((await sh(c)).code, 2, "a second lab up refuses");
          assert.match(out, /10\.99\.255\.2/);
          assert.equal((await sh(c, { extraEnv: { SLIPWAY_LAB: `${NS}x` } })).code, 2, "a second lab beside it refuses: the addresses are taken");
          assert.equal((await sh("ip netns list")).out.includes(`${NS}x`), false, "and made nothing");
        }
        if (/ image build debian /.test(c)) assert.match(out, /Imported "debian-base" \(tar\.zst/);
      }
    }
    assert.ok(serial && runId, "the README approved the machine and showed its run");
  });

});
