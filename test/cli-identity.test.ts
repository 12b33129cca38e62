/** The identity commands as an administrator runs them: pxe password, credential, certificate, run, device policy. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, tempDir, type TestSite } from "./support/site.ts";
import { newMachine } from "./support/device.ts";
import { ExitCode } from "../src/cli/command.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

describe("slipway identity commands", () => {
  let t: TestSite;
  let dir: string;
  const cli = (args: string[], input = ""): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
      SLIPWAY_CONFIG: path.join(dir, "profile.json"), SLIPWAY_TOKEN: t.adminToken };
    const child = execFile(bin, args, { env, cwd: dir, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
    child.stdin!.end(input);
  });
  before(async () => {
    t = await startTestSite();
    dir = tempDir("slipway-cli-id-");
    fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
  });
  after(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("sets the PXE password from stdin without echoing it, and reports only that it is set", async () => {
    const pw = "Stdin-Pxe-Passphrase-42";
    const set = await cli(["pxe", "password", "set"], pw + "\n");
    assert.equal(set.code, 0, set.stderr);
    assert.ok(!set.stdout.includes(pw) && !set.stderr.includes(pw));
    assert.match((await cli(["pxe", "password", "status"])).stdout, /is set/);
    assert.equal((await cli(["pxe", "password", "set"], "short\n")).code, ExitCode.INVALID);
    assert.equal((await cli(["pxe", "password", "clear"])).code, 0);
  });

  it("creates a media credential, enrolls with it, then lists, revokes and prints the CRL", async () => {
    const made = await cli(["credential", "create", "USB lab", "--uses", "1", "--json"]);
    assert.equal(made.code, 0, made.stderr);
    const secret = JSON.parse(made.stdout).secret as string;
    const m = await newMachine(t, { macs: ["52:54:00:77:00:01"], smbiosUuid: null });
    assert.equal((await m.enroll({ kind: "media", secret })).status, 201);
    m.close();
    const list = await cli(["credential", "list"]);
    assert.match(list.stdout, /USB lab\s+0/);
    assert.ok(!list.stdout.includes(secret));
    const certs = JSON.parse((await cli(["certificate", "list", "--status", "active", "--json"])).stdout);
    const device = certs.find((c: { kind: string }) => c.kind === "device");
    assert.ok(device, JSON.stringify(certs));
    const revoked = await cli(["certificate", "revoke", device.serial, "--reason", "keyCompromise"]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /revoked/);
    assert.equal((await cli(["certificate", "unblock", device.serial])).code, ExitCode.CONFLICT);
    assert.equal((await cli(["certificate", "revoke", "00"])).code, ExitCode.NOT_FOUND);
    assert.match((await cli(["certificate", "crl"])).stdout, /BEGIN X509 CRL/);
    assert.equal((await cli(["run", "list"])).code, 0);
    assert.equal((await cli(["device", "policy", "serial-none"])).code, ExitCode.NOT_FOUND);
  });
});
