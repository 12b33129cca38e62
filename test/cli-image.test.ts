/**
 * `slipway image` as an administrator runs it on the server's data folder: a real process, a
 * real site, real files. Import shows progress and names the manifest; every refusal has its
 * exit code; list, show and delete work on what was imported; every change is audited.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { execFile } from "node:child_process";
import { createHash, createPublicKey, randomBytes } from "node:crypto";
import { tempDir } from "./support/site.ts";
import { DEFAULT_CHUNK_SIZE, verifyManifest } from "../src/content/manifest.ts";
import { openDb } from "../src/storage/db.ts";
import { stores } from "../src/storage/stores.ts";

const bin = path.resolve(import.meta.dirname, "../bin/slipway");

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...process.env, SLIPWAY_DATABASE_URL: "", SLIPWAY_ADMIN_PASSWORD: "Automation-Passphrase-2026" }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("slipway image", () => {
  let root = "";
  let data = "";
  let image: Buffer;
  let imageFile = "";
  const file = (name: string, bytes: Buffer) => {
    const f = path.join(root, name);
    fs.writeFileSync(f, bytes);
    return f;
  };

  before(async () => {
    root = tempDir();
    data = path.join(root, "site");
    const init = await run(["init", "--data", data]);
    assert.equal(init.code, 0, init.stderr);
    image = randomBytes(DEFAULT_CHUNK_SIZE * 2 + 1000);
    imageFile = file("base.img", image);
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it("import prints progress to stderr and names the manifest; the manifest verifies with the site key", async () => {
    const r = await run(["image", "import", imageFile, "--name", "debian-base", "--data", data]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stderr.trim().split("\n"), ["Importing debian-base: 0%", "Importing debian-base: 49%", "Importing debian-base: 99%", "Importing debian-base: 100%"]);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0], /^Imported "debian-base" \(raw, 8\.0 MiB, 3 chunks, 0 already stored\)$/);
    const digest = /^Manifest (sha256:[0-9a-f]{64})$/.exec(lines.at(-1)!)?.[1];
    assert.ok(digest, r.stdout);
    const show = await run(["image", "show", digest, "--data", data, "--json"]);
    assert.equal(show.code, 0, show.stderr);
    const record = JSON.parse(show.stdout);
    const pinned = createPublicKey(fs.readFileSync(path.join(data, "keys/signing.pub")));
    const m = verifyManifest(record.signed, pinned, digest);
    assert.equal(m.sha256, createHash("sha256").update(image).digest("hex"));
    assert.deepEqual(record.usedBy, []);
  });

  it("--json prints one JSON object; the same bytes again reuse every chunk", async () => {
    const r = await run(["image", "import", imageFile, "--name", "debian-base", "--data", data, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.name, "debian-base");
    assert.equal(out.format, "raw");
    assert.equal(out.size, image.length);
    assert.equal(out.chunkCount, 3);
    assert.equal(out.chunksReused, 3);
    assert.equal(out.chunksWritten, 0);
    assert.match(out.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(out.signed, undefined, "the chunk list stays out of the summary");
    const gz = await run(["image", "import", file("root.tar.gz", zlib.gzipSync(Buffer.alloc(10_240))), "--name", "rootfs", "--data", data, "--json"]);
    assert.equal(gz.code, 0, gz.stderr);
    assert.equal(JSON.parse(gz.stdout).format, "tar.gz", "detected from the gzip magic");
  });

  it("refusals have their exit codes and say why", async () => {
    const cases: [string[], number, RegExp][] = [
      [["image", "import", imageFile, "--data", data], 2, /--name NAME is required/],
      [["image", "import", "--name", "x", "--data", data], 2, /Usage: slipway image import/],
      [["image", "import", imageFile, "--name", "x", "--format", "zip", "--data", data], 2, /--format is one of tar, tar.gz, tar.zst, raw/],
      [["image", "frobnicate", "--data", data], 2, /Usage/],
      [["image", "list", "--name", "x", "--data", data], 2, /belong to "image import"/],
      [["image", "import", path.join(root, "missing.img"), "--name", "x", "--data", data], 5, /no such file/],
      [["image", "import", file("empty.img", Buffer.alloc(0)), "--name", "x", "--data", data], 7, /the file is empty/],
      [["image", "import", imageFile, "--name", "../etc", "--data", data], 7, /a name is 1-128 letters/],
      [["image", "import", imageFile, "--name", "x", "--format", "tar.gz", "--data", data], 7, /said to be tar.gz, but its first bytes are no known archive/],
      [["image", "import", imageFile, "--name", "x", "--data", path.join(root, "no-site")], 5, /No site in/],
      [["image", "show", "nothing-here", "--data", data], 5, /Cannot find image "nothing-here"/],
      [["image", "delete", "debian-base", "--data", data], 7, /name a manifest by its digest/],
      [["image", "delete", `sha256:${"0".repeat(64)}`, "--data", data], 5, /there is no such manifest/],
      // image build: every refusal comes before anything is downloaded, built or written.
      [["image", "build", "ubuntu", "--name", "x", "--data", data], 2, /Slipway builds "debian" images/],
      [["image", "build", "debian", "--data", data], 2, /--name NAME is required/],
      [["image", "build", "debian", "--name", "x", "--format", "raw", "--data", data], 2, /--format belongs to "image import"/],
      [["image", "build", "debian", "--name", "x", "--output", path.join(root, "out.tar"), "--data", data], 2, /--output names a \.tar\.zst file/],
      [["image", "build", "debian", "--name", "x", "--output", file("exists.tar.zst", Buffer.alloc(1)), "--data", data], 6, /it exists/],
      [["image", "list", "--suite", "bookworm", "--data", data], 2, /--suite belongs to "image build"/],
      [["image", "build", "debian", "--name", "../etc", "--data", data], 7, /a name is 1-128 letters/],
      [["image", "build", "debian", "--name", "x", "--suite", "Bookworm Backports", "--data", data], 7, /is not a Debian suite name/],
      [["image", "build", "debian", "--name", "x", "--packages", "vim,bad;rm", "--data", data], 7, /"bad;rm" is not a Debian package name/],
      [["image", "build", "debian", "--name", "x", "--mirror", "http://user:pw@mirror.example/debian", "--data", data], 7, /without credentials/],
      [["image", "build", "debian", "--name", "x", "--mirror", "ftp://mirror.example/debian", "--data", data], 7, /not an http, https or file URL/],
      [["image", "build", "debian", "--name", "x", "--data", path.join(root, "no-site")], 5, /No site in/],
    ];
    for (const [args, code, message] of cases) {
      const r = await run(args);
      assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
    }
    assert.ok(!fs.existsSync(path.join(data, "cache")), "a refused build made no cache folder");
    const help = await run(["image", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /slipway image import FILE --name NAME/);
  });

  it("delete refuses (exit 6) while an enabled deployment applies the image, and says which", async () => {
    const rootfs = JSON.parse((await run(["image", "show", "rootfs", "--data", data, "--json"])).stdout).digest as string;
    const db = await openDb({ sqlitePath: path.join(data, "slipway.db") });
    const now = new Date().toISOString();
    try {
      const s = stores(db);
      const ts = await s.taskSequences.create({ name: "Rootfs", description: "" }, now);
      const document = { name: "Rootfs", steps: [{ name: "Apply", type: "apply-image", with: { image: "rootfs" } }] };
      await s.taskSequences.addVersion({ taskSequenceId: ts.id, version: 1, document: { name: "Rootfs", document }, digest: "sha256:x", signature: "x", publishedBy: "test", publishedAt: now }, now);
      const c = await s.collections.create({ name: "Lab", description: "", rule: null }, now);
      await s.deployments.create({ name: "Lab rootfs", taskSequenceId: ts.id, taskSequenceVersion: 1, collectionId: c.id, purpose: "required", bootPaths: ["pxe"], availableFrom: null, availableUntil: null, enabled: true }, now);
    } finally {
      await db.close();
    }
    const refused = await run(["image", "delete", rootfs, "--data", data]);
    assert.equal(refused.code, 6, refused.stderr);
    assert.match(refused.stderr, /enabled deployments apply it: "Lab rootfs"/);
    const shown = await run(["image", "show", "rootfs", "--data", data]);
    assert.match(shown.stdout, /Used by:\s+Lab rootfs/);
  });

  it("list, show by name (the newest) and delete; deleted chunks go unless another image uses them", async () => {
    const list = JSON.parse((await run(["image", "list", "--data", data, "--json"])).stdout) as { digest: string; name: string; createdAt: string }[];
    const bases = list.filter((i) => i.name === "debian-base");
    assert.equal(bases.length, 2);
    assert.ok(bases[0].createdAt > bases[1].createdAt, "newest first");
    const table = await run(["image", "list", "--data", data]);
    assert.match(table.stdout, /^NAME\s+DIGEST\s+FORMAT\s+SIZE\s+CHUNKS\s+CREATED/);
    assert.ok(table.stdout.includes(bases[0].digest));
    const shown = await run(["image", "show", "debian-base", "--data", data]);
    assert.match(shown.stdout, new RegExp(`Digest:\\s+${bases[0].digest}`));
    const first = await run(["image", "delete", bases[1].digest, "--data", data]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /0 chunks removed, 3 kept for other images/);
    const second = await run(["image", "delete", bases[0].digest, "--data", data, "--json"]);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(JSON.parse(second.stdout), { digest: bases[0].digest, name: "debian-base", chunksRemoved: 3, chunksKept: 0 });
    assert.equal((await run(["image", "show", "debian-base", "--data", data])).code, 5);
    assert.equal((await run(["image", "delete", bases[0].digest, "--data", data])).code, 5);
  });

  it("every import and delete is in the audit log, which still verifies", async () => {
    const db = await openDb({ sqlitePath: path.join(data, "slipway.db") });
    try {
      const rows = await db.all<{ action: string; actor: string }>(`SELECT action, actor FROM audit_log WHERE action LIKE 'content.%' ORDER BY seq`);
      assert.deepEqual(rows.map((r) => r.action), ["content.import", "content.import", "content.import", "content.delete", "content.delete"]);
      assert.ok(rows.every((r) => r.actor.startsWith("local:")));
    } finally {
      await db.close();
    }
    const v = await run(["audit", "verify", "--data", data]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});
