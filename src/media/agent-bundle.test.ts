import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { buildAgentBundle } from "./agent-bundle.ts";

/** A project in a temporary folder: write(path, text) places files, root is its folder. */
function tempProject() {
  const root = mkdtempSync(path.join(tmpdir(), "slipway-bundle-"));
  const write = (p: string, text: string) => {
    mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    writeFileSync(path.join(root, p), text);
  };
  return { root, write, [Symbol.dispose]: () => rmSync(root, { recursive: true, force: true }) };
}

test("imports, re-exports, side-effect and literal dynamic imports are followed; type-only ones and look-alikes are not", () => {
  using p = tempProject();
  const reached = ["a", "c", "c2", "side", "f", "g", "h", "dyn", "mixed", "after-division", "data"];
  const decoys = ["b", "i", "no1", "no2", "no3", "no4", "no5", "no6"];
  for (const name of [...reached, ...decoys]) p.write(`src/lib/${name}.ts`, `export const ${name.replace(/-/g, "_")} = 1; export type T = number; export default 1;\n`);
  p.write("src/lib/data.json", `{"ok": true}\n`);
  p.write("src/agent/main.ts", `
import a from "../lib/a.ts";
import type { B } from "../lib/b.ts";
import { type C, c } from "../lib/c.ts";
import { type T } from "../lib/c2.ts";
import "../lib/side.ts";
export * from "../lib/f.ts";
export * as g from "../lib/g.ts";
export { h } from "../lib/h.ts";
export type { T as I } from "../lib/i.ts";
import data from "../lib/data.json" with { type: "json" };
const k = \`import x from "../lib/no1.ts" \${ "\${1}" + \`nested \${2}\` } import "../lib/no2.ts"\`;
// import "../lib/no3.ts"
/* import "../lib/no4.ts" */
const re = /import "\\.\\.\\/lib\\/no5.ts"/g; const q = "import '../lib/no6.ts'";
const m = await import("../lib/dyn.ts");
const n = import.meta.dirname;
import def, { mixed as y } from "../lib/mixed.ts";
const r = a / 2 / 3; import { after_division } from "../lib/after-division.ts";
export { k, re, q, m, n, def, y, r, after_division, c, data };
`);
  const b = buildAgentBundle({ entry: path.join(p.root, "src/agent/main.ts"), projectRoot: p.root });
  assert.deepEqual(b.sources, ["src/agent/main.ts", ...reached.map((n) => `src/lib/${n}.${n === "data" ? "json" : "ts"}`)].sort());
});

test("an import Node would not load as written is refused when the bundle is built, not at boot", () => {
  using p = tempProject();
  p.write("src/lib/x.ts", "export const x = 1;\n");
  p.write("src/lib/dir/index.ts", "export const d = 1;\n");
  const entry = path.join(p.root, "src/agent/main.ts");
  for (const [spec, why] of [["../lib/x", /imports "\.\.\/lib\/x", which does not exist/], ["../lib/x.js", /imports "\.\.\/lib\/x\.js", which does not exist/], ["../lib/dir", /imports "\.\.\/lib\/dir", which does not exist/]] as const) {
    p.write("src/agent/main.ts", `import "${spec}";\n`);
    assert.throws(() => buildAgentBundle({ entry, projectRoot: p.root }), why, spec);
  }
  p.write("src/agent/main.ts", `import "#internal";\n`);
  p.write("package.json", JSON.stringify({ imports: { "#internal": "./src/lib/x.ts" } }));
  assert.throws(() => buildAgentBundle({ entry, projectRoot: p.root }), /imports "#internal"; only relative paths and npm packages are supported/);
});

test("the bundle holds the sources reached from the entry and the packages they use, with their dependencies", () => {
  const root = mkdtempSync(path.join(tmpdir(), "slipway-bundle-"));
  try {
    const write = (p: string, text: string) => {
      mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
      writeFileSync(path.join(root, p), text);
    };
    write("src/agent/main.ts", `import { x } from "../lib/x.ts";\nimport type { T } from "../lib/types.ts";\nimport "pkg-a";\nimport fs from "node:fs";\n`);
    write("src/lib/x.ts", `export const x = 1;\n`);
    write("src/lib/types.ts", `export type T = number;\n`);
    write("src/lib/unused.ts", `export const u = 1;\n`);
    write("node_modules/pkg-a/package.json", JSON.stringify({ name: "pkg-a", dependencies: { "pkg-b": "1" } }));
    write("node_modules/pkg-a/index.js", "export {};\n");
    write("node_modules/pkg-a/index.d.ts", "export {};\n");
    write("node_modules/pkg-a/node_modules/pkg-b/package.json", JSON.stringify({ name: "pkg-b", dependencies: { "pkg-c": "1" } }));
    write("node_modules/pkg-a/node_modules/pkg-b/index.js", "\n");
    write("node_modules/pkg-c/package.json", JSON.stringify({ name: "pkg-c" }));
    write("node_modules/pkg-d/package.json", JSON.stringify({ name: "pkg-d" }));

    const b = buildAgentBundle({ entry: path.join(root, "src/agent/main.ts"), projectRoot: root });
    assert.deepEqual(b.sources, ["src/agent/main.ts", "src/lib/x.ts"]);
    assert.deepEqual(b.packages, ["node_modules/pkg-a", "node_modules/pkg-a/node_modules/pkg-b", "node_modules/pkg-c"]);
    assert.deepEqual(b.entries.map((e) => e.path), [
      "/opt/slipway/node_modules/pkg-a/index.js",
      "/opt/slipway/node_modules/pkg-a/node_modules/pkg-b/index.js",
      "/opt/slipway/node_modules/pkg-a/node_modules/pkg-b/package.json",
      "/opt/slipway/node_modules/pkg-a/package.json",
      "/opt/slipway/node_modules/pkg-c/package.json",
      "/opt/slipway/package.json",
      "/opt/slipway/src/agent/main.ts",
      "/opt/slipway/src/lib/x.ts",
    ]);
    const pkg = b.entries.find((e) => e.path === "/opt/slipway/package.json");
    assert.ok(pkg?.type === "file" && JSON.parse(pkg.data.toString()).type === "module");
    assert.equal(buildAgentBundle({ entry: path.join(root, "src/agent/main.ts"), projectRoot: root }).sha256, b.sha256);

    write("src/lib/x.ts", `import "./gone.ts";\n`);
    assert.throws(() => buildAgentBundle({ entry: path.join(root, "src/agent/main.ts"), projectRoot: root }), /src\/lib\/x\.ts imports "\.\/gone\.ts", which does not exist/);
    write("src/lib/x.ts", `import "not-installed";\n`);
    assert.throws(() => buildAgentBundle({ entry: path.join(root, "src/agent/main.ts"), projectRoot: root }), /package not-installed .* is not installed/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
