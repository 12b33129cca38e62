/**
 * The deploy environment: built twice from the same inputs it is the same initrd, byte for
 * byte; it holds the tools, loader files, modules and pinned trust where the agent expects
 * them; and it boots under QEMU (-kernel/-initrd, QEMU's user-mode network for DHCP) to
 * `SLIPWAY-DEPLOY-ENV ready`, starts the agent with Node, and — when the agent exits with an
 * error — leaves a shell on the console in which the disk tools run.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { zstdDecompressSync } from "node:zlib";
import { buildBootImage, DEFAULT_CMDLINE, type BootImage } from "../../src/media/boot-image.ts";
import { readCpio, type CpioEntry } from "../../src/media/cpio.ts";
import { createCertificateAuthority } from "../../src/security/ca.ts";
import { generateSigningKeyPair } from "../../src/security/signing.ts";
import { LAB_CACHE_DIR } from "../lab/artifacts.ts";
import { createLab, type Lab } from "../lab/netns.ts";
import { startVm, type Vm } from "../lab/qemu.ts";

if (process.getuid?.() !== 0) throw new Error("the boot image test needs root (network namespaces): run scripts/test.sh as root");

const BOOT_TIMEOUT_MS = 240_000;
const MAC = "52:54:00:77:00:51";

describe("deploy environment boot image", () => {
  let out: string;
  let image: BootImage;
  let files: Map<string, CpioEntry>;
  let caCertPem: string;
  let signingKeyPem: string;
  let lab: Lab | undefined;
  let vm: Vm | undefined;

  before(async () => {
    out = await mkdtemp(path.join(tmpdir(), "slipway-boot-image-"));
    caCertPem = (await createCertificateAuthority({ commonName: "Slipway CA (boot image test)" })).certPem;
    signingKeyPem = generateSigningKeyPair().publicKeyPem;
  });

  after(async () => {
    await vm?.kill();
    await lab?.close();
    await rm(out, { recursive: true, force: true });
  });

  test("the same inputs build the same initrd, byte for byte", { timeout: 600_000 }, async (t) => {
    const build = async (dir: string) => {
      const started = performance.now();
      const img = await buildBootImage({ cacheDir: LAB_CACHE_DIR, caCertPem, signingPublicKeyPem: signingKeyPem, outDir: path.join(out, dir) });
      t.diagnostic(`build into ${dir}: ${((performance.now() - started) / 1000).toFixed(1)} s, initrd ${(img.initrdSize / 1e6).toFixed(1)} MB`);
      return img;
    };
    const first = await build("a");
    const second = await build("b");
    assert.equal(second.initrdSha256, first.initrdSha256);
    assert.ok((await readFile(first.initrd)).equals(await readFile(second.initrd)));
    assert.equal(createHash("sha256").update(await readFile(first.initrd)).digest("hex"), first.initrdSha256);
    assert.equal(first.cmdline, DEFAULT_CMDLINE);
    image = first;
  });

  test("the initrd holds the agent, Node, the disk tools, loader files, modules and the pinned trust", async () => {
    assert.ok(image, "built by the previous test");
    assert.equal(image.manifest.compression, "zstd");
    const entries = readCpio(zstdDecompressSync(await readFile(image.initrd)));
    files = new Map(entries.map((e) => [e.path, e]));
    const text = (p: string) => {
      const e = files.get(p);
      assert.ok(e?.type === "file", `${p} is a file in the initrd`);
      return e.data.toString("utf8");
    };
    for (const p of [
      "init", "bin/busybox", "opt/slipway/bin/node", "opt/slipway/package.json", "opt/slipway/src/agent/main.ts",
      "usr/sbin/sfdisk", "usr/sbin/mkfs.ext4", "usr/sbin/e2fsck", "usr/sbin/resize2fs", "usr/sbin/mkfs.vfat", "usr/bin/extlinux", "usr/bin/zstd",
      "usr/lib/slipway/bootloader/mbr.bin", "usr/lib/slipway/bootloader/gptmbr.bin", "usr/lib/slipway/bootloader/systemd-bootx64.efi",
      "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libstdc++.so.6", "lib/x86_64-linux-gnu/libc.so.6", "etc/udhcpc.script",
    ]) {
      assert.ok(files.has(p), `${p} in the initrd`);
    }
    assert.equal(text("etc/slipway/ca.pem"), caCertPem.trim() + "\n");
    assert.equal(text("etc/slipway/signing-key.pub.pem"), signingKeyPem.trim() + "\n");
    const manifest = JSON.parse(text("etc/slipway/boot-image.json"));
    assert.deepEqual(manifest, image.manifest);
    assert.equal(manifest.kernel.vmlinuzSha256, image.kernelSha256);
    assert.equal(manifest.trust.caCertSha256, createHash("sha256").update(caCertPem.trim() + "\n").digest("hex"));
    const modDir = `lib/modules/${manifest.kernel.version}`;
    const order = text(`${modDir}/load-order`).trim().split("\n");
    for (const m of ["virtio_net", "e1000", "e1000e", "virtio_blk", "ahci", "sd_mod", "nvme", "ext4", "vfat", "nls_cp437"]) {
      assert.ok(order.some((p) => p.endsWith(`/${m}.ko`)), `${m} in the load order`);
    }
    for (const p of order) assert.ok(files.has(`${modDir}/${p}`), `${p} in the initrd`);
    // Each module after what it depends on.
    assert.ok(order.findIndex((p) => p.endsWith("/virtio_net.ko")) > order.findIndex((p) => p.endsWith("/virtio_ring.ko")));
    assert.ok(order.findIndex((p) => p.endsWith("/ext4.ko")) > order.findIndex((p) => p.endsWith("/jbd2.ko")));
    assert.match(text("init"), /SLIPWAY-DEPLOY-ENV ready/);
  });

  test("it boots to the ready marker with a DHCP lease, starts the agent, and leaves a working shell when the agent fails", { timeout: BOOT_TIMEOUT_MS }, async (t) => {
    assert.ok(image, "built by the first test");
    lab = await createLab({ name: "bootimg" });
    vm = await startVm(lab, {
      userNetwork: true,
      nic: "e1000",
      mac: MAC,
      uuid: "6f1f4a52-1c9b-4f7e-9d7e-000000000051",
      firmware: "bios",
      memoryMiB: 1536,
      kernel: { kernel: image.kernel, initrd: image.initrd, append: `${image.cmdline} slipway.mac=${MAC}` },
    });
    const ready = await vm.waitForSerial(/SLIPWAY-DEPLOY-ENV ready ip=(\S+)/, { timeoutMs: BOOT_TIMEOUT_MS });
    const readyS = vm.elapsedMs() / 1000;
    assert.equal(ready[1], "10.0.2.15", "QEMU's user-mode DHCP server leased the address");
    await vm.waitForSerial(/SLIPWAY-AGENT start/, { timeoutMs: BOOT_TIMEOUT_MS });
    const agentS = vm.elapsedMs() / 1000;
    t.diagnostic(`QEMU start -> SLIPWAY-DEPLOY-ENV ready in ${readyS.toFixed(1)} s, -> SLIPWAY-AGENT start in ${agentS.toFixed(1)} s`);
    assert.doesNotMatch(vm.serial(), /module-failed|dhcp-failed/);

    // Without slipway.mp= the agent stops with a configuration error; init then opens a shell.
    await vm.waitForSerial(/SLIPWAY-AGENT-EXIT code=(\d+)/, { timeoutMs: 60_000 });
    // The prompt, possibly followed by the shell's cursor-position query (ESC [6n).
    await vm.waitForSerial(/~ # /, { timeoutMs: 30_000, partialLines: true });
    const from = vm.serial().length;
    vm.write(
      "cd /tmp && dd if=/dev/zero of=disk bs=1M count=64 2>/dev/null && " +
        "printf 'label: gpt\\n,32M\\n,\\n' | sfdisk -q disk && sfdisk -d disk | grep -c '^disk' && " +
        "mkfs.ext4 -q -F -L root disk && e2fsck -fn disk >/dev/null && resize2fs -P disk 2>/dev/null | tail -1 && " +
        "mkfs.vfat -C vfat 8192 >/dev/null && blkid vfat && zstd -q -c /etc/hosts | zstd -dc && extlinux --version 2>&1 | head -1; " +
        "echo TOOLS-$((20 + 22))-DONE\n",
    );
    await vm.waitForSerial(/TOOLS-42-DONE/, { timeoutMs: 60_000, from });
    const output = vm.serial().slice(from);
    assert.match(output, /\r?\n2\r?\n/, "sfdisk made two partitions");
    assert.match(output, /Estimated minimum size of the filesystem: \d+/, "mkfs.ext4, e2fsck and resize2fs ran");
    assert.match(output, /vfat: .*TYPE="vfat"/, "mkfs.vfat and blkid ran");
    assert.match(output, /127\.0\.0\.1 localhost/, "zstd round-tripped a file");
    assert.match(output, /extlinux 6\./);
  });
});
