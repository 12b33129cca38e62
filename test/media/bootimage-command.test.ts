/**
 * `slipway bootimage build` as an administrator runs it: on a site's data folder it builds the
 * deploy environment with that site's CA certificate and public signing key pinned, stores
 * kernel and initrd in the content store and registers the image like `bootimage add` does.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { zstdDecompressSync } from "node:zlib";
import { readCpio } from "../../src/media/cpio.ts";
import { LAB_CACHE_DIR } from "../lab/artifacts.ts";
import { tempDir } from "../support/site.ts";

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...process.env, SLIPWAY_DATABASE_URL: "", SLIPWAY_ADMIN_PASSWORD: "Boot-Image-Command-Test-1" }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("slipway bootimage build", () => {
  const top = tempDir();
  after(() => fs.rmSync(top, { recursive: true, force: true }));

  it("builds the deploy environment with the site's trust, stores and registers it, and audits the build", { timeout: 600_000 }, async () => {
    const data = path.join(top, "site");
    assert.equal((await run(["init", "--data", data])).code, 0);
    const bad = await run(["bootimage", "build", "--data", data, "--name", "no spaces allowed", "--cache", LAB_CACHE_DIR]);
    assert.equal(bad.code, 2, bad.stderr);

    const r = await run(["bootimage", "build", "--data", data, "--cache", LAB_CACHE_DIR, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /\[bootimage\] compressing/);
    const built = JSON.parse(r.stdout);
    assert.equal(built.name, "deploy");
    assert.equal(built.isDefault, true, "the first image becomes the default");
    assert.equal(built.cmdline, "console=tty0 console=ttyS0,115200n8 quiet");

    const list = JSON.parse((await run(["bootimage", "list", "--data", data, "--json"])).stdout);
    assert.deepEqual(list.map((i: { name: string; initrdSha256: string }) => [i.name, i.initrdSha256]), [["deploy", built.initrdSha256]]);

    const blob = (sha: string) => path.join(data, "content", "sha256", sha);
    const files = new Map(readCpio(zstdDecompressSync(fs.readFileSync(blob(built.initrdSha256)))).map((e) => [e.path, e]));
    const text = (p: string) => {
      const e = files.get(p);
      return e?.type === "file" ? e.data.toString("utf8") : undefined;
    };
    assert.equal(text("etc/slipway/ca.pem"), fs.readFileSync(path.join(data, "keys/ca.crt"), "utf8").trim() + "\n");
    assert.equal(text("etc/slipway/signing-key.pub.pem"), fs.readFileSync(path.join(data, "keys/signing.pub"), "utf8").trim() + "\n");
    assert.ok(fs.existsSync(blob(built.kernelSha256)));
    const buildDir = /initrd (\S+)\/initrd-[0-9a-f]+\.cpio\.zst:/.exec(r.stderr)?.[1];
    assert.ok(buildDir?.startsWith(LAB_CACHE_DIR), r.stderr);
    assert.ok(!fs.existsSync(buildDir!), "the build folder is removed once the initrd is stored");

    const verify = await run(["audit", "verify", "--data", data]);
    assert.equal(verify.code, 0, verify.stdout);
  });
});
