/**
 * The installed system's /etc/fstab: an image cannot know its root file system's UUID, so
 * install-bootloader adds the line — once, and never over the image's own.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureRootInFstab } from "./install-bootloader.ts";

describe("install-bootloader's fstab line", () => {
  it("adds the root by UUID when there is none, keeps what was there, and does it once", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-fstab-"));
    try {
      const fstab = path.join(root, "etc/fstab");
      assert.equal(ensureRootInFstab(root, "1234-abcd", "ext4"), true, "no /etc at all");
      assert.equal(fs.readFileSync(fstab, "utf8"), "UUID=1234-abcd\t/\text4\tdefaults,errors=remount-ro\t0\t1\n");
      assert.equal(ensureRootInFstab(root, "other", "ext4"), false, "already there");
      fs.writeFileSync(fstab, "# UNCONFIGURED FSTAB\n# UUID=x / ext4 defaults 0 1\n/dev/sdb1 /data ext4 defaults 0 2");
      assert.equal(ensureRootInFstab(root, "5678", "ext4"), true, "comments and other mounts are not a root line");
      assert.equal(fs.readFileSync(fstab, "utf8"), "# UNCONFIGURED FSTAB\n# UUID=x / ext4 defaults 0 1\n/dev/sdb1 /data ext4 defaults 0 2\nUUID=5678\t/\text4\tdefaults,errors=remount-ro\t0\t1\n");
      fs.writeFileSync(fstab, "LABEL=root / xfs defaults 0 1\n");
      assert.equal(ensureRootInFstab(root, "5678", "ext4"), false, "the image's own root line stays");
      assert.equal(fs.readFileSync(fstab, "utf8"), "LABEL=root / xfs defaults 0 1\n");
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
