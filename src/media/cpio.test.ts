import assert from "node:assert/strict";
import { test } from "node:test";
import { buildCpio, readCpio, type CpioEntry } from "./cpio.ts";

const entries: CpioEntry[] = [
  { path: "/usr/bin/tool", type: "file", data: Buffer.from("#!/bin/sh\n"), mode: 0o755 },
  { path: "init", type: "file", data: Buffer.from("x"), mode: 0o755 },
  { path: "dev/console", type: "char", major: 5, minor: 1 },
  { path: "bin/sh", type: "symlink", target: "busybox" },
  { path: "tmp", type: "dir", mode: 0o1777 },
];

test("the same entries in any order give the same archive bytes", () => {
  const a = buildCpio(entries);
  const b = buildCpio([...entries].reverse());
  assert.ok(a.equals(b));
});

test("entries come out sorted, parents first, with owners and times zeroed", () => {
  const archive = buildCpio(entries);
  const read = readCpio(archive);
  assert.deepEqual(read.map((e) => e.path), ["bin", "bin/sh", "dev", "dev/console", "init", "tmp", "usr", "usr/bin", "usr/bin/tool"]);
  assert.deepEqual(read.find((e) => e.path === "tmp"), { path: "tmp", type: "dir", mode: 0o1777 });
  assert.deepEqual(read.find((e) => e.path === "dev/console"), { path: "dev/console", type: "char", major: 5, minor: 1, mode: 0o600 });
  const tool = read.find((e) => e.path === "usr/bin/tool");
  assert.ok(tool?.type === "file" && tool.data.toString() === "#!/bin/sh\n" && tool.mode === 0o755);
  // Every header: uid, gid and mtime are 0 (fields 2, 3 and 5 of the newc header).
  for (let off = archive.indexOf("070701"); off >= 0; off = archive.indexOf("070701", off + 110)) {
    const field = (i: number) => archive.toString("latin1", off + 6 + i * 8, off + 14 + i * 8);
    assert.equal(field(2) + field(3) + field(5), "0".repeat(24));
  }
});

test("a path added twice, or a file used as a directory, is refused", () => {
  assert.throws(() => buildCpio([{ path: "a", type: "file", data: Buffer.alloc(0) }, { path: "/a/", type: "file", data: Buffer.alloc(0) }]), /added twice/);
  assert.throws(() => buildCpio([{ path: "a", type: "file", data: Buffer.alloc(0) }, { path: "a/b", type: "file", data: Buffer.alloc(0) }]), /not a directory/);
  assert.throws(() => buildCpio([{ path: "a/../b", type: "dir" }]), /bad archive path/);
});
