/**
 * The layer map of Slipway's source, enforced: every `.ts` file under src/ belongs to one
 * layer, a file imports only its own layer and the layers listed for it (always inward), and
 * no files import each other in a circle. Read LAYERS below as the map of the code base; when
 * this test fails, its message says which import broke the map and where the code should go.
 *
 * Imports are read with the TypeScript parser (not regular expressions): `import`, `import
 * type`, `export … from`, `import("…")`, `typeof import("…")`, and a worker's entry module
 * named by `new URL("./x.ts", import.meta.url)` — a type-only import is a dependency too.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import ts from "typescript";

const SRC = path.resolve(import.meta.dirname, "../../src");

type Layer = {
  /** What a failure message calls it, and what `mayImport` lists. */
  name: string;
  /** A folder (ending in "/") or a file, relative to src/; the longest match decides a file's layer. */
  path: string;
  /** What lives there, for a newcomer reading a failure. */
  what: string;
  /** The other layers its files may import. Its own layer is always allowed. */
  mayImport: string[];
};

// Inner layers first. Everything a layer may import is further up this list, so the map
// itself has no circle.
const FOUNDATION = ["protocol", "domain", "errors", "log"];
const BELOW_STORAGE = [...FOUNDATION, "security", "manifest", "content", "state store", "net"];
const BELOW_ROLES = [...BELOW_STORAGE, "storage", "site core", "pipeline", "content serving"];
const ROLES = ["roles/site", "roles/management", "roles/distribution"];

const LAYERS: Layer[] = [
  { name: "protocol", path: "protocol/", mayImport: [],
    what: "wire codecs, pure functions over bytes (DHCP, TFTP, TPM 2.0, HTTP Range); no sockets, no files" },
  { name: "domain", path: "domain/", mayImport: [],
    what: "the rules of devices, policies, collections, task sequences, IP pools, RBAC; pure" },
  { name: "errors", path: "errors.ts", mayImport: [],
    what: "the error catalogue (stable codes, HTTP status, message templates); imports nothing" },
  { name: "log", path: "log.ts", mayImport: [],
    what: "the structured logger; imports nothing" },
  { name: "security", path: "security/", mayImport: ["protocol", "domain"],
    what: "keys, CA, signing, envelope encryption, passwords, audit chain, signed policies" },
  { name: "manifest", path: "content/manifest.ts", mayImport: ["protocol", "domain", "security"],
    what: "the signed content manifest format: pure, so the agent bundle carries it" },
  { name: "content", path: "content/", mayImport: ["protocol", "domain", "errors", "log", "security", "manifest"],
    what: "content addressed by SHA-256: the blob store (files under DATA/content), image import, reading an image's byte ranges" },
  { name: "state store", path: "state/", mayImport: ["protocol", "domain", "errors", "log", "security", "manifest"],
    what: "user state at rest on a state migration point: encrypted chunks per computer association (files under DATA/state), quotas, crash-safe writes" },
  { name: "net", path: "net/", mayImport: FOUNDATION,
    what: "sockets the Node.js API lacks: UDP/TCP bound to an interface, epoll, link state (koffi)" },
  { name: "storage", path: "storage/", mayImport: BELOW_STORAGE,
    what: "the database: the Sql port, SQLite and PostgreSQL, migrations, one store per table family" },
  { name: "site core", path: "site/", mayImport: [...BELOW_STORAGE, "storage"],
    what: "what every server shares: the Site context, principals, admin authentication and rate limits, device policy, membership, credentials (boot tokens, PXE password, media), CRL, DP enrollment and names, the content library, secret binding" },
  { name: "pipeline", path: "roles/pipeline.ts", mayImport: [...BELOW_STORAGE, "storage", "site core"],
    what: "the HTTPS request pipeline every server shares: routes, body limits, validation, access, errors" },
  { name: "content serving", path: "roles/content-serving.ts", mayImport: [...BELOW_STORAGE, "storage", "site core", "pipeline"],
    what: "the content routes (signed manifests, image bytes with Range) that the management point and distribution points both serve" },
  { name: "roles/site", path: "roles/site/", mayImport: BELOW_ROLES,
    what: "the site server: admin API, RBAC, audit, posture" },
  { name: "roles/management", path: "roles/management/", mayImport: BELOW_ROLES,
    what: "the management point: enrollment, device identity, policy, status, secret release (mutual TLS)" },
  { name: "roles/distribution", path: "roles/distribution/", mayImport: BELOW_ROLES,
    what: "the distribution point and network boot: content over HTTPS, DHCP/ProxyDHCP, TFTP, boot scripts" },
  { name: "media", path: "media/", mayImport: BELOW_ROLES,
    what: "the media builder: boot images (kernel, initrd with the agent) and OS images (image build debian); a role of its own, not a server" },
  { name: "agent", path: "agent/", mayImport: ["protocol", "domain", "security", "manifest"],
    what: "runs on the machine being deployed and is bundled into the boot image: it may not carry server code" },
  { name: "cli", path: "cli/", mayImport: [...BELOW_ROLES, ...ROLES, "media"],
    what: "the slipway command, the outer edge: composes everything (but never imports the agent)" },
];

/**
 * Imports from one server role into another. The site core (src/site/, issue #12 item 1) took
 * what they shared, and this list is empty: it must match the code exactly, so a new edge
 * fails. Shared code goes in the site core (or, for HTTP pieces, beside roles/pipeline.ts).
 */
const ROLE_TO_ROLE_DEBT = new Set<string>([]);

// ---------------------------------------------------------------------------------------------
// Reading the imports

type Edge = { from: string; to: string; line: number; how: string };
type Problem = { file: string; line: number; message: string };

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(full);
    return e.isFile() && e.name.endsWith(".ts") ? [full] : [];
  });
}

/** Every module specifier in a file, with how it is used and its line. */
function moduleReferences(fileName: string, text: string): { spec: string | null; line: number; how: string }[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out: { spec: string | null; line: number; how: string }[] = [];
  const add = (node: ts.Node, spec: string | null, how: string) =>
    out.push({ spec, how, line: sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1 });
  const literal = (n: ts.Node | undefined) => (n && ts.isStringLiteralLike(n) ? n.text : null);
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      add(node, literal(node.moduleSpecifier), node.importClause?.isTypeOnly ? "import type" : "import");
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier) {
      add(node, literal(node.moduleSpecifier), node.isTypeOnly ? "export type … from" : "export … from");
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node, literal(node.moduleReference.expression), "import = require");
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      add(node, literal(node.arguments[0]), "import()");
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node, literal(node.argument.literal), "typeof import()");
    } else if (ts.isNewExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === "URL") {
      // new URL("./worker-loop.ts", import.meta.url): a module loaded by path, e.g. a worker's entry.
      const [first, base] = node.arguments ?? [];
      const spec = literal(first);
      if (spec?.endsWith(".ts") && base && ts.isPropertyAccessExpression(base) && base.getText(sf) === "import.meta.url") add(node, spec, "new URL(…, import.meta.url)");
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

const rel = (file: string) => path.relative(SRC, file).split(path.sep).join("/");

/** The graph of relative imports between files under src/, and what could not be placed in it. */
function importGraph(): { files: string[]; edges: Edge[]; problems: Problem[] } {
  const files = sourceFiles(SRC).map(rel).sort();
  const edges: Edge[] = [];
  const problems: Problem[] = [];
  for (const file of files) {
    for (const ref of moduleReferences(file, fs.readFileSync(path.join(SRC, file), "utf8"))) {
      if (ref.spec === null) {
        problems.push({ file, line: ref.line, message: `${ref.how} with a computed name: write the module as a string literal so this test (and readers) can follow it` });
        continue;
      }
      if (!ref.spec.startsWith(".")) continue; // node:…, packages
      const target = path.resolve(path.dirname(path.join(SRC, file)), ref.spec);
      const to = rel(target);
      if (to.startsWith("..")) problems.push({ file, line: ref.line, message: `imports ${ref.spec}, outside src/: source never imports tests, scripts or benches` });
      else if (!fs.existsSync(target) || !fs.statSync(target).isFile()) problems.push({ file, line: ref.line, message: `imports ${ref.spec}, which is not a file` });
      else edges.push({ from: file, to, line: ref.line, how: ref.how });
    }
  }
  return { files, edges, problems };
}

function layerOf(file: string): Layer | undefined {
  let best: Layer | undefined;
  for (const l of LAYERS) {
    const hit = l.path.endsWith("/") ? file.startsWith(l.path) : file === l.path;
    if (hit && (!best || l.path.length > best.path.length)) best = l;
  }
  return best;
}

const graph = importGraph();
const at = (file: string, line: number) => `src/${file}:${line}`;

function theMap(): string {
  const width = Math.max(...LAYERS.map((l) => l.name.length));
  const pathWidth = Math.max(...LAYERS.map((l) => l.path.length)) + 4;
  return [
    "The layers of src/, inner first (test/architecture/imports.test.ts, LAYERS):",
    ...LAYERS.map((l) => `  ${l.name.padEnd(width)}  ${("src/" + l.path).padEnd(pathWidth)}  ${l.what}\n  ${"".padEnd(width)}  ${"".padEnd(pathWidth)}  may import: ${l.mayImport.length ? l.mayImport.join(", ") : "nothing outside itself"}`),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// The rules

test("every import under src/ can be followed: a literal name, inside src/, naming a file", () => {
  assert.ok(graph.files.length > 100 && graph.edges.length > 300, `only ${graph.files.length} files and ${graph.edges.length} imports found under ${SRC}: is the test reading the right folder?`);
  assert.deepEqual(graph.problems.map((p) => `${at(p.file, p.line)} ${p.message}`), []);
});

test("every source file belongs to a layer of the map", () => {
  const homeless = graph.files.filter((f) => !layerOf(f));
  assert.equal(homeless.length, 0, `These files are in no layer:\n${homeless.map((f) => `  src/${f}`).join("\n")}\n` +
    `A new folder needs a line in LAYERS (test/architecture/imports.test.ts): what it is for and what it may import.\n` +
    `Or does it belong in an existing folder?\n\n${theMap()}`);
});

test("no import circles: files that import each other cannot be read, tested or moved one at a time", () => {
  const circles = importCircles(graph.edges);
  const described = circles.map((c, i) => `Circle ${i + 1}, through ${c.files.length} files (${c.files.map((f) => `src/${f}`).join(", ")}):\n` +
    c.loop.map((e) => `    ${at(e.from, e.line)}  ${e.how}  src/${e.to}`).join("\n"));
  assert.equal(circles.length, 0, `${described.join("\n\n")}\n\n` +
    `To break a circle, move what both sides need (often a type or a small helper) into a file of its own that\n` +
    `both import, or into the inner of the two layers. Type-only imports count: they tie the files together all the same.`);
});

test("every import points inward, as the layer map says", () => {
  const wrong: string[] = [];
  for (const e of graph.edges) {
    const from = layerOf(e.from);
    const to = layerOf(e.to);
    if (!from || !to || from === to || from.mayImport.includes(to.name)) continue;
    if (ROLES.includes(from.name) && ROLES.includes(to.name)) continue; // the next test keeps that list
    wrong.push(`  ${at(e.from, e.line)}  ${e.how}  src/${e.to}\n` +
      `    "${from.name}" may import ${from.mayImport.length ? from.mayImport.join(", ") : "nothing outside itself"}; not "${to.name}" (${to.what}).`);
  }
  assert.equal(wrong.length, 0, `${wrong.length} import(s) point the wrong way:\n${wrong.join("\n")}\n\n` +
    `An inner layer must not know the outer ones: move the shared code inward (to the layer both sides may import),\n` +
    `or pass it in as a value or function from the outside. If the map itself is wrong, change LAYERS and say why.\n\n${theMap()}`);
});

test("imports between server roles: exactly the known debt, which only shrinks", () => {
  const found = new Map<string, Edge>();
  for (const e of graph.edges) {
    const from = layerOf(e.from)?.name ?? "";
    const to = layerOf(e.to)?.name ?? "";
    if (from !== to && ROLES.includes(from) && ROLES.includes(to)) found.set(`${e.from} -> ${e.to}`, e);
  }
  const added = [...found.keys()].filter((k) => !ROLE_TO_ROLE_DEBT.has(k)).sort();
  const gone = [...ROLE_TO_ROLE_DEBT].filter((k) => !found.has(k)).sort();
  const lines: string[] = [];
  if (added.length) {
    lines.push(`New imports from one server role into another (${ROLES.join(", ")}):`,
      ...added.map((k) => `  ${at(found.get(k)!.from, found.get(k)!.line)}  ${found.get(k)!.how}  src/${found.get(k)!.to}`),
      `Roles do not import each other: what two roles share belongs in the site core (src/site/) or a layer below it,`,
      `which both import. Do not add these to ROLE_TO_ROLE_DEBT.`);
  }
  if (gone.length) {
    lines.push(`${added.length ? "\n" : ""}Known role-to-role imports that are gone (well done): remove it from the allowlist,`,
      `ROLE_TO_ROLE_DEBT in test/architecture/imports.test.ts, so it cannot come back unnoticed:`, ...gone.map((k) => `  "${k}",`));
  }
  assert.equal(lines.length, 0, lines.join("\n"));
});

test("the map has no circle of its own: every layer imports only layers listed before it", () => {
  const seen = new Set<string>();
  const bad: string[] = [];
  for (const l of LAYERS) {
    for (const m of l.mayImport) if (!seen.has(m)) bad.push(`"${l.name}" may import "${m}", which ${LAYERS.some((x) => x.name === m) ? "is listed after it" : "is no layer"}`);
    seen.add(l.name);
  }
  assert.deepEqual(bad, []);
});

/** The strongly connected components of more than one file (Tarjan), each with one loop through it. */
function importCircles(edges: Edge[]): { files: string[]; loop: Edge[] }[] {
  const out = new Map<string, Edge[]>();
  for (const e of edges) {
    if (!out.has(e.from)) out.set(e.from, []);
    if (!out.get(e.from)!.some((x) => x.to === e.to)) out.get(e.from)!.push(e);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const strongConnect = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const { to: w } of out.get(v) ?? []) {
      if (!index.has(w)) {
        strongConnect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      const selfLoop = (out.get(v) ?? []).some((e) => e.to === v);
      if (component.length > 1 || selfLoop) components.push(component.sort());
    }
  };
  for (const v of [...out.keys()].sort()) if (!index.has(v)) strongConnect(v);
  return components.sort((a, b) => a[0].localeCompare(b[0])).map((files) => ({ files, loop: shortestLoop(files[0], new Set(files), out) }));
}

/** The shortest path from `start` back to itself inside one component (breadth first). */
function shortestLoop(start: string, inside: Set<string>, out: Map<string, Edge[]>): Edge[] {
  const via = new Map<string, Edge>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const e of out.get(v) ?? []) {
      if (!inside.has(e.to)) continue;
      if (e.to === start) {
        const loop = [e];
        for (let x = v; x !== start; x = via.get(x)!.from) loop.unshift(via.get(x)!);
        return loop;
      }
      if (!via.has(e.to)) {
        via.set(e.to, e);
        queue.push(e.to);
      }
    }
  }
  return [];
}

test("the reader finds every kind of import, and none inside strings or comments", () => {
  const text = [
    `import a from "./a.ts";`,
    `import type { B } from "./b.ts";`,
    `import "./c.ts";`,
    `export { d } from "./d.ts";`,
    `export type { E } from "./e.ts";`,
    `export * from "./f.ts";`,
    `const g = await import("./g.ts");`,
    `let h: typeof import("./h.ts");`,
    `new Worker(new URL("./i.ts", import.meta.url));`,
    `const j = await import(name);`,
    "const fixture = `import x from \"./not-k.ts\"`; // import l from \"./not-l.ts\"",
    `new URL("./not-m.css", import.meta.url);`,
  ].join("\n");
  assert.deepEqual(moduleReferences("x.ts", text).map((r) => `${r.line} ${r.how} ${r.spec}`), [
    "1 import ./a.ts", "2 import type ./b.ts", "3 import ./c.ts", "4 export … from ./d.ts", "5 export type … from ./e.ts",
    "6 export … from ./f.ts", "7 import() ./g.ts", "8 typeof import() ./h.ts", "9 new URL(…, import.meta.url) ./i.ts", "10 import() null",
  ]);
});
