/**
 * `slipway up --pxe-interface` and the state of the link (issue #13): a name that is no network
 * interface stops `up` with a message naming the interfaces there are (or, with --pxe-optional,
 * is skipped with a warning); a link without carrier — a bridge with no port up — is served at
 * once and said so; a link with no IPv4 address yet is waited for and served once it has one.
 * Real processes in a network namespace this test makes.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import type { ChildProcess } from "node:child_process";
import { createLab, waitForOutput, type Lab } from "./lab/netns.ts";
import { tempDir } from "./support/site.ts";

if (process.getuid?.() !== 0) throw new Error("the PXE link tests need root (a network namespace): run scripts/test.sh as root");

const bin = path.resolve(import.meta.dirname, "../bin/slipway");
const env = { ...process.env, SLIPWAY_DATABASE_URL: "", SLIPWAY_LOG_LEVEL: "warn", SLIPWAY_ADMIN_PASSWORD: "Pxe-Links-Test-Passphrase-1" };

describe("up --pxe-interface and the state of the link", () => {
  let lab: Lab;
  let dataDir = "";
  const up = (extra: string[]): { child: ChildProcess; output: () => string } => {
    const child = lab.spawn(bin, ["up", "--data", dataDir, "--listen", "127.0.0.1:0", "--mp-listen", "127.0.0.1:0", "--pxe-http-port", "0", "--ipxe-dir", lab.dir, ...extra], { env });
    let output = "";
    child.stdout!.on("data", (c) => (output += c));
    child.stderr!.on("data", (c) => (output += c));
    return { child, output: () => output };
  };
  const stop = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
  };
  const exited = (child: ChildProcess) => new Promise<number>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once("exit", (code) => resolve(code ?? -1))));

  before(async () => {
    lab = await createLab({ name: "pxelinks" });
    await lab.addLink("br0", { cidr: "10.78.61.1/24" });
    dataDir = tempDir("slipway-pxe-links-");
  });
  after(async () => {
    await lab?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("a misspelled interface stops up with a message naming the interfaces there are; --pxe-optional starts without it", async () => {
    const bad = up(["--pxe-interface", "br9"]);
    assert.equal(await exited(bad.child), 2, bad.output());
    assert.match(bad.output(), /Cannot serve PXE on br9: there is no such network interface \(this host has: [^)]*br0/);
    assert.match(bad.output(), /--pxe-optional/);
    // A name holding a terminal escape is shown quoted and escaped, not sent to the terminal.
    const escape = up(["--pxe-interface", "\u001b]0;PWNED\u0007"]);
    assert.equal(await exited(escape.child), 2, escape.output());
    assert.match(escape.output(), /Cannot serve PXE on "\\u001b\]0;PWNED\\u0007": there is no such network interface/);
    assert.ok(!escape.output().includes("\u001b"), "no raw escape in the output");
    const optional = up(["--pxe-interface", "br9", "--pxe-optional"]);
    try {
      await waitForOutput(optional.child, /listening on https/, 60_000, "slipway up --pxe-optional");
      assert.match(optional.output(), /no such network interface .*not serving PXE there/);
      assert.doesNotMatch(optional.output(), /PXE \(proxy/);
    } finally {
      await stop(optional.child);
    }
  });

  it("a bridge with its address but no port up is served at once, and up says it has no carrier yet", async () => {
    // A port whose other end is down: the bridge has no carrier (NO-CARRIER), which libuv's interface list leaves out.
    await lab.exec("ip", ["link", "add", "pl0", "type", "veth", "peer", "name", "pl1"]);
    await lab.exec("ip", ["link", "set", "pl0", "master", "br0"]);
    await lab.exec("ip", ["link", "set", "pl0", "up"]);
    const u = up(["--pxe-interface", "br0"]);
    try {
      await waitForOutput(u.child, /PXE \(proxy[^\n]*br0 10\.78\.61\.1/, 60_000, "slipway up --pxe-interface br0");
      assert.match(u.output(), /br0 has no carrier yet/);
    } finally {
      await stop(u.child);
    }
  });

  it("a link with no IPv4 address yet is waited for, then served with the address it got", async () => {
    await lab.exec("ip", ["link", "add", "br1", "type", "bridge"]);
    await lab.exec("ip", ["link", "set", "br1", "up"]);
    const u = up(["--pxe-interface", "br1"]);
    try {
      await waitForOutput(u.child, /Waiting for br1: it has no IPv4 address yet/, 60_000, "slipway up waiting for br1");
      assert.doesNotMatch(u.output(), /listening on/, "nothing served before the link is ready");
      await lab.exec("ip", ["addr", "add", "10.78.62.1/24", "dev", "br1"]);
      await waitForOutput(u.child, /PXE \(proxy[^\n]*br1 10\.78\.62\.1/, 60_000, "slipway up serving br1");
    } finally {
      await stop(u.child);
    }
  });
});
