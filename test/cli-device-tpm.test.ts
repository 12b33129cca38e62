/** `slipway device tpm`: show, import (PEM public key or certificate, TPM public area) and clear a device's endorsement key. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startTestSite, tempDir, type TestSite } from "./support/site.ts";
import { startSwtpm, type Swtpm } from "./support/swtpm.ts";
import { openTpmSocket, TpmSession } from "../src/agent/tpm.ts";
import { parseEkPublic } from "../src/security/tpm-credential.ts";
import { ExitCode } from "../src/cli/command.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

describe("slipway device tpm", () => {
  let t: TestSite;
  let dir: string;
  let sw: Swtpm;
  let ekPublic = "";
  const cli = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, SLIPWAY_SERVER: t.url, SLIPWAY_CA: path.join(dir, "ca.pem"),
      SLIPWAY_CONFIG: path.join(dir, "profile.json"), SLIPWAY_TOKEN: t.adminToken };
    execFile(bin, args, { env, cwd: dir, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }));
  });
  before(async () => {
    t = await startTestSite();
    dir = tempDir("slipway-cli-tpm-");
    fs.writeFileSync(path.join(dir, "ca.pem"), t.ca);
    sw = await startSwtpm(path.join(dir, "tpm"));
    const tpm = await TpmSession.open(await openTpmSocket(sw.socket));
    ekPublic = tpm.identity().ekPublic;
    await tpm.close();
    const r = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "lab-pc-07", macs: ["52:54:00:07:00:07"], state: "approved" } });
    assert.equal(r.status, 201, r.text);
  });
  after(async () => {
    await t.close();
    await sw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("imports a PEM public key, shows its fingerprint, refuses a non-EK file unchanged, clears it", async () => {
    assert.match((await cli(["device", "tpm", "lab-pc-07"])).stdout, /no TPM endorsement key on record/);
    const pemFile = path.join(dir, "ek.pem");
    fs.writeFileSync(pemFile, parseEkPublic(ekPublic).key.export({ type: "spki", format: "pem" }));
    const fp = parseEkPublic(ekPublic).fingerprint;
    const imported = await cli(["device", "tpm", "lab-pc-07", "--import", pemFile]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.ok(imported.stdout.includes(fp), imported.stdout);
    assert.match(imported.stdout, /import/);
    const notEk = path.join(dir, "not-ek.pem");
    fs.writeFileSync(notEk, "this is not an endorsement key, nor PEM, nor base64 at all!");
    const refused = await cli(["device", "tpm", "lab-pc-07", "--import", notEk]);
    assert.equal(refused.code, ExitCode.INVALID, refused.stderr);
    assert.match(refused.stderr, /Cannot import the endorsement key/);
    const shown = JSON.parse((await cli(["device", "tpm", "lab-pc-07", "--json"])).stdout);
    assert.equal(shown.ekFingerprint, fp, "the refused import changed nothing");
    assert.equal((await cli(["device", "tpm", "lab-pc-07", "--clear"])).code, 0);
    assert.match((await cli(["device", "tpm", "lab-pc-07"])).stdout, /no TPM endorsement key on record/);
    assert.equal((await cli(["device", "tpm", "lab-pc-07", "--clear"])).code, ExitCode.NOT_FOUND);
    assert.equal((await cli(["device", "tpm", "lab-pc-07", "--clear", "--import", pemFile])).code, ExitCode.USAGE);
  });

  it("sets, shows and clears the TPM manufacturer roots; a file that is not PEM is refused", async () => {
    const { manufactureTpm } = await import("./support/swtpm.ts");
    const { rootsPem } = manufactureTpm(path.join(dir, "made"), path.join(dir, "vendor"));
    const file = path.join(dir, "roots.pem");
    fs.writeFileSync(file, rootsPem);
    const set = await cli(["tpm", "roots", "--set", file]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /swtpm-localca-rootca/);
    assert.match((await cli(["tpm", "roots"])).stdout, /swtpm-localca/);
    const bad = path.join(dir, "bad.pem");
    fs.writeFileSync(bad, "not a certificate, not at all, not even close to PEM text.");
    assert.equal((await cli(["tpm", "roots", "--set", bad])).code, ExitCode.INVALID);
    assert.equal(JSON.parse((await cli(["tpm", "roots", "--json"])).stdout).certificates.length, 2, "unchanged");
    assert.equal((await cli(["tpm", "roots", "--clear"])).code, 0);
    assert.match((await cli(["tpm", "roots"])).stdout, /No TPM manufacturer roots/);
  });
});
