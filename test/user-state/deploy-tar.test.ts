/**
 * The deploy environment carries GNU tar for user state, with the libraries it needs for ACLs
 * (libacl) and SELinux labels (libselinux): run exactly the files the boot image would copy,
 * in a chroot that holds nothing else, and carry an ACL and an xattr through it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { TOOLS } from "../../src/media/boot-image.ts";
import { hostProgramEntries, requireHostFile } from "../../src/media/host-files.ts";

test("the boot image's GNU tar runs alone with its libraries and keeps ACLs and xattrs", async () => {
  const tool = TOOLS.find((t) => t.target === "/usr/bin/tar");
  assert.ok(tool, "GNU tar is in the boot image's tools");
  const entries = hostProgramEntries([{ source: requireHostFile(tool.sources, tool.package), target: tool.target }]);
  const names = entries.map((e) => path.basename(e.path));
  assert.ok(names.includes("libacl.so.1"), names.join(" "));
  assert.ok(names.includes("libselinux.so.1"), names.join(" "));

  const dir = await mkdtemp(path.join(os.tmpdir(), "slipway-deploy-tar-"));
  try {
    for (const e of entries) {
      const at = path.join(dir, e.path);
      await mkdir(path.dirname(at), { recursive: true });
      if (e.type === "file") await writeFile(at, e.data, { mode: e.mode ?? 0o644 });
      else if (e.type === "symlink") await symlink(e.target, at);
    }
    await mkdir(path.join(dir, "work/src"), { recursive: true });
    await mkdir(path.join(dir, "work/dst"));
    await writeFile(path.join(dir, "work/src/f"), "data\n");
    execFileSync("setfacl", ["-m", "u:4321:rw-", path.join(dir, "work/src/f")]);
    execFileSync("setfattr", ["-n", "user.k", "-v", "v1", path.join(dir, "work/src/f")]);
    const inChroot = (...args: string[]) => execFileSync("chroot", [dir, "/usr/bin/tar", ...args], { encoding: "utf8" });
    assert.match(inChroot("--version"), /GNU tar/);
    inChroot("-c", "-f", "/work/a.tar", "--format=posix", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-C", "/work/src", "f");
    inChroot("-x", "-f", "/work/a.tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-C", "/work/dst");
    assert.match(execFileSync("getfacl", ["-n", "-c", "-p", path.join(dir, "work/dst/f")], { encoding: "utf8" }), /^user:4321:rw-$/m);
    assert.match(execFileSync("getfattr", ["--absolute-names", "-n", "user.k", "--only-values", path.join(dir, "work/dst/f")], { encoding: "utf8" }), /^v1$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
