import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { formatFields, formatTable, printable, truncate } from "./table.ts";

describe("table output", () => {
  const rows = [{ name: "pc-1", state: "approved", n: 3 }, { name: "a-much-longer-device-name", state: "pending", n: 12 }];
  const columns = [
    { header: "NAME", value: (r: (typeof rows)[0]) => r.name },
    { header: "STATE", value: (r: (typeof rows)[0]) => r.state },
    { header: "N", value: (r: (typeof rows)[0]) => r.n, align: "right" as const },
  ];

  it("aligns columns under their headers with no trailing spaces", () => {
    assert.equal(formatTable(rows, columns), [
      "NAME                       STATE      N",
      "pc-1                       approved   3",
      "a-much-longer-device-name  pending   12",
    ].join("\n"));
  });

  it("cuts cells longer than the column's limit, marking the cut", () => {
    const out = formatTable(rows, [{ header: "NAME", value: (r) => r.name, max: 10 }]);
    assert.deepEqual(out.split("\n"), ["NAME", "pc-1", "a-much-lo…"]);
  });

  it("shrinks the widest column to fit a terminal", () => {
    const out = formatTable(rows, columns, { width: 30 });
    for (const line of out.split("\n")) assert.ok(line.length <= 30, line);
    assert.match(out, /…/);
  });

  it("bolds the header only when asked to use colour", () => {
    assert.ok(!formatTable(rows, columns).includes("\x1b"));
    assert.ok(formatTable(rows, columns, { color: true }).startsWith("\x1b[1m"));
  });

  it("shows control characters and bidi overrides escaped, so stored text cannot drive the terminal", () => {
    assert.equal(printable("evil\x1b[2Jname\nnext\u202e"), "evil\\u001b[2Jname ⏎ next\\u202e");
    assert.equal(printable("line 1\r\nline 2\tcol\rback"), "line 1 ⏎ line 2 col\\u000dback", "a lone CR is still escaped: it would overwrite the line");
    const out = formatTable([{ d: "x\x1b]0;pwned\x07" }], [{ header: "D", value: (r) => r.d }]);
    assert.ok(!/[\x00-\x08\x0b-\x1f]/.test(out), JSON.stringify(out));
  });

  it("joins lists and key=value objects", () => {
    assert.equal(printable(["a", "b"]), "a, b");
    assert.equal(printable({ ram: 16, site: "berlin" }), "ram=16, site=berlin");
    assert.equal(printable(null), "");
  });

  it("truncates by code points, never splitting a surrogate pair", () => {
    assert.equal(truncate("😀😀😀😀", 3), "😀😀…");
    assert.equal(truncate("short", 10), "short");
  });

  it("lines up label: value pairs and shows empty values as -", () => {
    assert.equal(formatFields([["Name", "pc-1"], ["Serial number", null]]), "Name:           pc-1\nSerial number:  -");
  });
});
