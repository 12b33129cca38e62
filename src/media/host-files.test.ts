import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { hostProgramEntries, readElf, requireHostFile } from "./host-files.ts";

test("Node's ELF header names the x86-64 interpreter and libc", () => {
  const info = readElf(readFileSync(process.execPath));
  assert.equal(info.interpreter, "/lib64/ld-linux-x86-64.so.2");
  assert.ok(info.needed.includes("libc.so.6"), info.needed.join(" "));
});

test("a program comes with its library closure and the interpreter, each file stored once", () => {
  const entries = hostProgramEntries([{ source: "/usr/sbin/sfdisk", target: "/usr/sbin/sfdisk" }]);
  const paths = entries.map((e) => e.path);
  assert.ok(paths.includes("/usr/sbin/sfdisk"));
  assert.ok(paths.includes("/lib64/ld-linux-x86-64.so.2"));
  for (const lib of ["libfdisk.so.1", "libsmartcols.so.1", "libc.so.6"]) assert.ok(paths.some((p) => p.endsWith(`/${lib}`)), `${lib} in ${paths.join(" ")}`);
  // libc names ld-linux-x86-64.so.2 too: that second name is a symlink to the stored copy.
  const ld = entries.filter((e) => e.path.endsWith("/ld-linux-x86-64.so.2"));
  assert.equal(ld.filter((e) => e.type === "file").length, 1);
});

test("a missing tool names the Debian package to install", () => {
  assert.throws(() => requireHostFile(["/nonexistent/sbin/mkfs.xyz"], "xyzprogs"), /install the Debian package xyzprogs/);
});

test("a non-ELF file is refused", () => {
  assert.throws(() => readElf(Buffer.from("#!/bin/sh\necho hi\n")), /not an ELF file/);
});
