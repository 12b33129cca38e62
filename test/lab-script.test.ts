/**
 * scripts/lab.sh, the evaluator's lab (issue #13): `up` makes a namespace with a PXE bridge and
 * an admin link, Slipway is started inside it with the command `up` prints, `vm bios` starts a
 * blank QEMU machine (no -uuid, as an evaluator would) whose console shows it PXE-booting into
 * Slipway and waiting for approval, and `down` removes everything. Real processes.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { tempDir } from "./support/site.ts";

if (process.getuid?.() !== 0) throw new Error("the lab script test needs root (network namespaces): run scripts/test.sh as root");

const root = path.resolve(import.meta.dirname, "..");
const lab = path.join(root, "scripts/lab.sh");
const NS = `slt-${randomBytes(3).toString("hex")}`;
// TCG, as the lab harness runs: nested KVM in CI machines is not to be relied on.
const env = { ...process.env, SLIPWAY_LAB: NS, SLIPWAY_LAB_ACCEL: "tcg", SLIPWAY_DATABASE_URL: "", SLIPWAY_LOG_LEVEL: "warn", SLIPWAY_ADMIN_PASSWORD: "Lab-Script-Test-Passphrase-1" };
const run = (cmd: string, args: string[]): Promise<{ code: number; out: string }> => new Promise((resolve) => {
  execFile(cmd, args, { env, cwd: root, timeout: 120_000 }, (err, stdout, stderr) =>
    resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, out: stdout + stderr }));
});
/** Resolves with the output once `pattern` appears in it (failure detection only: 10 minutes). */
function waitFor(child: ChildProcess, output: () => string, pattern: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no ${pattern} in:\n${output().slice(-3000)}`)), 600_000);
    const check = () => {
      if (pattern.test(output())) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", check);
    child.stderr?.on("data", check);
    child.once("exit", () => setTimeout(() => (pattern.test(output()) ? resolve() : reject(new Error(`${what} exited:\n${output().slice(-3000)}`))), 50));
  });
}

describe("scripts/lab.sh", () => {
  const dataDir = tempDir("slipway-lab-script-");
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await run(lab, ["down"]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("usage errors change nothing", async () => {
    assert.equal((await run(lab, ["vm"])).code, 2, "no lab yet");
    assert.equal((await run(lab, ["sideways"])).code, 2);
  });

  it("up, Slipway inside it as printed, a blank BIOS machine PXE-boots into it and waits for approval; down removes everything", { timeout: 900_000 }, async () => {
    const up = await run(lab, ["up"]);
    assert.equal(up.code, 0, up.out);
    const printed = /ip netns exec \S+ bin\/slipway (up .*)/.exec(up.out);
    assert.ok(printed, up.out);
    assert.equal((await run(lab, ["up"])).code, 2, "a second up refuses");
    // The printed command, with this test's own data folder.
    const args = printed[1].replace("--data ./var", `--data ${dataDir}`).split(" ");
    const site = spawn("ip", ["netns", "exec", NS, path.join(root, "bin/slipway"), ...args, "--unknown", "approve"], { env, cwd: root });
    children.push(site);
    let siteOut = "";
    site.stdout!.on("data", (d) => (siteOut += d));
    site.stderr!.on("data", (d) => (siteOut += d));
    await waitFor(site, () => siteOut, /PXE \(dhcp[^\n]*br0 10\.99\.0\.1/, "slipway up in the lab");
    assert.match(siteOut, /listening on https:\/\/10\.99\.255\.2:8443/);

    assert.equal((await run(lab, ["vm", "bios", "--mac", "52:54:00:99:ZZ:01"])).code, 2, "a bad MAC is refused");
    const log = path.join(dataDir, "vm.console");
    const vm = spawn(lab, ["vm", "bios", "--mac", "52:54:00:99:00:01", "--log", log], { env, cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    children.push(vm);
    const console = () => (fs.existsSync(log) ? fs.readFileSync(log, "latin1") : "");
    // Failure detection only: 10 minutes for a blank machine to reach Slipway's boot script under TCG.
    for (let i = 0; i < 1200 && !/is waiting for an administrator/.test(console()); i++) {
      assert.equal(vm.exitCode, null, `the lab machine exited:\n${console().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(console(), /is waiting for an administrator/, console().slice(-3000));
    assert.match(console(), /10\.99\.0\.1\d\d/, "it got a lab DHCP lease");
    vm.kill("SIGTERM");

    const down = await run(lab, ["down"]);
    assert.equal(down.code, 0, down.out);
    assert.ok(!(await run("ip", ["netns", "list"])).out.includes(NS), "the namespace is gone");
    assert.notEqual((await run("ip", ["link", "show", `${NS.slice(0, 10)}-h`])).code, 0, "the host end of the admin link is gone");
  });
});
