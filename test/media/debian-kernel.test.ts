/**
 * The Debian kernel package as the boot image builders use it (fetched once into the lab
 * cache with apt-get download): modules come with their dependencies first, built-in names
 * are skipped, unknown names are refused, and modules come out uncompressed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ensureDebianKernel, modinfo } from "../../src/media/debian-kernel.ts";
import { LAB_CACHE_DIR } from "../lab/artifacts.ts";

test("modules come after their dependencies, built-in ones are skipped and unknown ones refused", { timeout: 300_000 }, async () => {
  const kernel = await ensureDebianKernel({ cacheDir: LAB_CACHE_DIR });
  assert.match(kernel.version, /^\d+\.\d+\.\d+-\d+-amd64$/);
  assert.match(kernel.debSha256, /^[0-9a-f]{64}$/);
  assert.ok(["y", "m"].includes(kernel.config.get("CONFIG_VIRTIO_NET") ?? ""));

  const mods = await kernel.modules(["virtio_net", "unix", "ext4"]);
  const names = mods.map((m) => m.name);
  assert.ok(!names.includes("unix"), "unix is built in");
  for (const m of mods) {
    for (const d of m.depends) assert.ok(names.indexOf(d) < names.indexOf(m.name), `${d} before ${m.name}`);
    const info = modinfo(readFileSync(m.file));
    assert.equal(info.get("name"), m.name, `${m.file} is the uncompressed ${m.name} module`);
    assert.match(m.relPath, /^kernel\/.+\.ko$/);
  }
  assert.ok(names.includes("virtio_ring") && names.includes("jbd2"));
  await assert.rejects(kernel.modules(["no_such_module"]), /Cannot find kernel module no_such_module/);
});
