import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { buildAgentBundle, findImports } from "./agent-bundle.ts";

test("imports, re-exports, side-effect and literal dynamic imports are found; type-only ones and look-alikes are not", () => {
  const src = `
import a from "./a.ts";
import type { B } from "./b.ts";
import { type C, d } from "./c.ts";
import * as e from 'e-pkg';
import "./side.ts";
export * from "./f.ts";
export * as g from "./g.ts";
export { h } from "@scope/h/sub";
export type { I } from "./i.ts";
export { j };
const k = \`import x from "./no1.ts" \${ "\${1}" + \`nested \${2}\` } import "./no2.ts"\`;
// import "./no3.ts"
/* import "./no4.ts" */
const re = /import "\\.\\/no5.ts"/g; const q = "import './no6.ts'";
const m = await import("./dyn.ts");
const n = import.meta.dirname;
import def, { x as y } from "./mixed.ts";
const r = a / 2 / 3; import z from "./after-division.ts";
`;
  assert.deepEqual(findImports(src), [
    "./a.ts", "./c.ts", "e-pkg", "./side.ts", "./f.ts", "./g.ts", "@scope/h/sub", "./dyn.ts", "./mixed.ts", "./after-division.ts",
  ]);
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
