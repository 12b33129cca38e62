/**
 * The test OS the deployment tests deploy: its tar.gz is deterministic and holds the expected
 * tree, and its raw ext4 image boots (with the tree's own kernel and initrd) to the
 * `SLIPWAY-DEPLOYED hostname=unset` marker, finding its root by file-system UUID.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createLab, type Lab } from "./netns.ts";
import { startVm, type Vm } from "./qemu.ts";
import { ensureTestOsImages, type TestOsImages } from "./test-os.ts";

const execFileP = promisify(execFile);

if (process.getuid?.() !== 0) throw new Error("the lab tests need root (network namespaces): run scripts/test.sh as root");

const BOOT_TIMEOUT_MS = 180_000;

describe("test OS image", () => {
  let images: TestOsImages;
  let lab: Lab;
  let vm: Vm | undefined;

  before(async () => {
    images = await ensureTestOsImages();
    lab = await createLab({ name: "testos" });
  });

  after(async () => {
    await vm?.kill();
    await lab?.close();
  });

  test("the tar.gz holds the root tree, owned by root, every time 0", async () => {
    const { stdout } = await execFileP("tar", ["--numeric-owner", "-tvzf", images.tarGz]);
    const lines = stdout.trim().split("\n");
    const names = lines.map((l) => l.split(/\s+/).slice(5).join(" "));
    for (const want of ["./boot/vmlinuz", "./boot/initrd.img", "./bin/busybox", "./bin/sh -> busybox", "./etc/hostname", "./etc/os-release"]) {
      assert.ok(names.includes(want), `${want} in ${names.join(", ")}`);
    }
    for (const l of lines) assert.match(l, /^\S+ 0\/0 +\d+ 1970-01-01 00:00 /, l);
    const { stdout: release } = await execFileP("tar", ["-xzOf", images.tarGz, "./etc/os-release"]);
    assert.match(release, /NAME="Slipway test OS"/);
    assert.match(images.kernelVersion, /^\d+\.\d+\.\d+-\d+-amd64$/);
  });

  test("the raw ext4 image boots to the deployed marker, found by its UUID", { timeout: BOOT_TIMEOUT_MS }, async (t) => {
    const { stdout } = await execFileP("dumpe2fs", ["-h", images.rawExt4]);
    assert.match(stdout, new RegExp(`Filesystem UUID:\\s+${images.rootUuid}`));
    assert.match(stdout, /Filesystem volume name:\s+root/);
    const disk = path.join(lab.dir, "root.ext4");
    await copyFile(images.rawExt4, disk);
    vm = await startVm(lab, {
      mac: "52:54:00:77:00:41",
      uuid: "6f1f4a52-1c9b-4f7e-9d7e-000000000041",
      firmware: "bios",
      disk,
      kernel: { kernel: images.kernel, initrd: images.initrd, append: `console=ttyS0 root=UUID=${images.rootUuid}` },
    });
    await vm.waitForSerial(/SLIPWAY-DEPLOYED hostname=unset\r?\n/, { timeoutMs: BOOT_TIMEOUT_MS });
    t.diagnostic(`QEMU start -> SLIPWAY-DEPLOYED in ${(vm.elapsedMs() / 1000).toFixed(1)} s`);
    assert.doesNotMatch(vm.serial(), /SLIPWAY-MODULE-FAILED|SLIPWAY-DEPLOYED-FAILED/);
    assert.equal((await vm.waitForExit({ timeoutMs: 60_000 })).code, 0, "the test OS powers the machine off");
    vm = undefined;
  });
});
