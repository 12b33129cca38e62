/**
 * The agent as it ships in a boot image: its TypeScript sources, found by walking static
 * imports from the entry point (Node strips the types when it runs them, so nothing is
 * compiled), and the npm packages they use with those packages' own dependencies.
 *
 *   /opt/slipway/package.json          {"type":"module"}
 *   /opt/slipway/src/agent/main.ts     sources keep their layout relative to the project root
 *   /opt/slipway/node_modules/<pkg>/   whole packages (without type declarations and source
 *                                      maps), nested node_modules where npm put them
 *
 * Imports are found by a small tokenizer that knows comments, strings, template literals and
 * regular expressions, so an import-looking line inside any of them is never followed.
 * Type-only imports (`import type …`, `export type … from`) are erased at run time and are
 * not followed either.
 */
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, realpathSync, statSync } from "node:fs";
import { isBuiltin } from "node:module";
import path from "node:path";
import type { CpioEntry } from "./cpio.ts";

export interface AgentBundleOptions {
  /** The agent's entry point, e.g. <project>/src/agent/main.ts. */
  entry: string;
  /** The folder sources and node_modules are placed relative to (the repository root). */
  projectRoot: string;
  /** Where the bundle goes in the image (default /opt/slipway). */
  targetDir?: string;
}

export interface AgentBundle {
  entries: CpioEntry[];
  /** Source files, relative to the project root, sorted. */
  sources: string[];
  /** Package folders, relative to the project root (e.g. "node_modules/yaml"), sorted. */
  packages: string[];
  /** SHA-256 over every file's target path and bytes, in sorted order. */
  sha256: string;
}

/** Collects the agent's sources and packages; throws naming the importer of anything missing. */
export function buildAgentBundle(opts: AgentBundleOptions): AgentBundle {
  const root = path.resolve(opts.projectRoot);
  const targetDir = opts.targetDir ?? "/opt/slipway";
  const files = new Map<string, Buffer>(); // target path → bytes
  const sources = new Set<string>();
  const packages = new Set<string>();

  const relToRoot = (p: string, what: string) => {
    const rel = path.relative(root, p);
    if (rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`Cannot bundle the agent: ${what} ${p} is outside ${root}`);
    return rel.split(path.sep).join("/");
  };

  const addPackage = (pkgDir: string, importer: string) => {
    const rel = relToRoot(pkgDir, "package");
    if (packages.has(rel)) return;
    packages.add(rel);
    const real = realpathSync(pkgDir);
    for (const f of packageFiles(real)) files.set(`${targetDir}/${rel}/${f}`, readFileSync(path.join(real, f)));
    const manifest = JSON.parse(readFileSync(path.join(real, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    const optional = new Set(Object.keys(manifest.optionalDependencies ?? {}));
    for (const dep of [...new Set([...Object.keys(manifest.dependencies ?? {}), ...optional])].sort()) {
      // Look where Node looks: the package's own node_modules first, then up the tree.
      const found = findPackage(dep, pkgDir);
      if (found) addPackage(found, rel);
      else if (!optional.has(dep)) throw new Error(`Cannot bundle the agent: package ${dep} (needed by ${rel}, from ${importer}) is not installed (run npm install)`);
    }
  };

  const visit = (file: string) => {
    const rel = relToRoot(file, "source");
    if (sources.has(rel)) return;
    sources.add(rel);
    const data = readFileSync(file);
    files.set(`${targetDir}/${rel}`, data);
    if (file.endsWith(".json")) return;
    for (const spec of findImports(data.toString("utf8"))) {
      if (spec.startsWith("node:") || isBuiltin(spec)) continue;
      if (spec.startsWith("./") || spec.startsWith("../") || spec.startsWith("/")) {
        const target = path.resolve(path.dirname(file), spec);
        if (!isFile(target)) throw new Error(`Cannot bundle the agent: ${rel} imports "${spec}", which does not exist`);
        visit(target);
      } else if (spec.startsWith("#") || /^[a-z][a-z0-9+.-]*:/i.test(spec)) {
        throw new Error(`Cannot bundle the agent: ${rel} imports "${spec}"; only relative paths and npm packages are supported`);
      } else {
        const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
        const found = findPackage(name, path.dirname(file));
        if (!found) throw new Error(`Cannot bundle the agent: package ${name} (imported by ${rel}) is not installed (run npm install)`);
        addPackage(found, rel);
      }
    }
  };

  visit(path.resolve(opts.entry));
  files.set(`${targetDir}/package.json`, Buffer.from(JSON.stringify({ type: "module" }) + "\n"));

  const names = [...files.keys()].sort();
  const h = createHash("sha256");
  for (const n of names) {
    const data = files.get(n)!;
    h.update(`${n}\0${data.length}\0`).update(data);
  }
  return {
    entries: names.map((n) => ({ path: n, type: "file" as const, data: files.get(n)!, mode: 0o644 })),
    sources: [...sources].sort(),
    packages: [...packages].sort(),
    sha256: h.digest("hex"),
  };
}

/** node_modules/<name> in `from` or the nearest folder above it that has one. */
function findPackage(name: string, from: string): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (path.basename(dir) !== "node_modules") {
      const candidate = path.join(dir, "node_modules", name);
      if (isFile(path.join(candidate, "package.json"))) return candidate;
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** A package's files (relative, sorted) minus nested node_modules, type declarations and maps. */
function packageFiles(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) {
      if (entry.name !== "node_modules") out.push(...packageFiles(dir, rel));
    } else if (!/\.d\.[cm]?ts$|\.map$/.test(entry.name) && isFile(path.join(dir, rel))) {
      out.push(rel);
    }
  }
  return out.sort();
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

type Token = { kind: "id" | "str" | "punct" | "other"; value: string };

/** Keywords after which a `/` starts a regular expression rather than a division. */
const REGEX_AFTER = new Set(["return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw", "case", "do", "else", "yield", "await"]);

/** Splits JavaScript/TypeScript into the tokens import scanning needs. */
function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  const braces: number[] = []; // for each open template `${`, the brace depth it started at
  let depth = 0;
  let i = 0;
  const n = src.length;
  const regexAllowed = () => {
    const last = tokens.at(-1);
    if (!last) return true;
    if (last.kind === "id") return REGEX_AFTER.has(last.value);
    if (last.kind === "punct") return !")]}".includes(last.value);
    return false;
  };
  const template = () => {
    // i is just after "`" or after the "}" closing a `${`; scan to the closing "`" or next "${".
    while (i < n) {
      const c = src[i];
      if (c === "\\") i += 2;
      else if (c === "`") {
        i++;
        tokens.push({ kind: "other", value: "`" });
        return;
      } else if (c === "$" && src[i + 1] === "{") {
        i += 2;
        braces.push(depth);
        depth++;
        tokens.push({ kind: "punct", value: "(" });
        return;
      } else i++;
    }
  };
  while (i < n) {
    const c = src[i];
    if (c === " " || c === "\t" || c === "\n" || c === "\r") i++;
    else if (c === "/" && src[i + 1] === "/") {
      while (i < n && src[i] !== "\n") i++;
    } else if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'" || c === '"') {
      let value = "";
      i++;
      while (i < n && src[i] !== c && src[i] !== "\n") {
        if (src[i] === "\\") {
          value += src[i + 1] ?? "";
          i += 2;
        } else value += src[i++];
      }
      i++;
      tokens.push({ kind: "str", value });
    } else if (c === "`") {
      i++;
      template();
    } else if (/[A-Za-z_$\u0080-\uffff]/.test(c)) {
      const start = i;
      while (i < n && /[\w$\u0080-\uffff]/.test(src[i])) i++;
      tokens.push({ kind: "id", value: src.slice(start, i) });
    } else if (/[0-9]/.test(c)) {
      while (i < n && /[\w.]/.test(src[i])) i++;
      tokens.push({ kind: "other", value: "0" });
    } else if (c === "/" && regexAllowed()) {
      i++;
      let inClass = false;
      while (i < n && src[i] !== "\n") {
        if (src[i] === "\\") i += 2;
        else if (src[i] === "[") inClass = true, i++;
        else if (src[i] === "]") inClass = false, i++;
        else if (src[i] === "/" && !inClass) break;
        else i++;
      }
      i++;
      while (i < n && /\w/.test(src[i])) i++;
      tokens.push({ kind: "other", value: "/re/" });
    } else if (c === "{") {
      depth++;
      i++;
      tokens.push({ kind: "punct", value: "{" });
    } else if (c === "}") {
      depth--;
      i++;
      if (braces.length && braces.at(-1) === depth) {
        braces.pop();
        tokens.push({ kind: "punct", value: ")" });
        template();
      } else tokens.push({ kind: "punct", value: "}" });
    } else {
      i++;
      tokens.push({ kind: "punct", value: c });
    }
  }
  return tokens;
}

/**
 * The module specifiers a module loads: `import … from "x"`, `import "x"`, `export … from "x"`
 * and `import("x")` with a literal; not `import type`/`export type`.
 */
export function findImports(src: string): string[] {
  const t = tokenize(src);
  const out: string[] = [];
  const is = (k: number, kind: Token["kind"], value?: string) => t[k]?.kind === kind && (value === undefined || t[k].value === value);
  /** The string after `from` within this statement, scanning from k. */
  const fromClause = (k: number): string | undefined => {
    let depth = 0;
    for (let j = k; j < t.length && j < k + 2000; j++) {
      if (is(j, "punct", "{")) depth++;
      else if (is(j, "punct", "}")) depth--;
      else if (depth === 0 && is(j, "punct", ";")) return undefined;
      else if (depth === 0 && is(j, "id", "from") && is(j + 1, "str")) return t[j + 1].value;
      else if (depth === 0 && j > k && is(j, "id") && ["import", "export", "const", "let", "var", "function", "class"].includes(t[j].value)) return undefined;
    }
    return undefined;
  };
  for (let k = 0; k < t.length; k++) {
    if (t[k].kind !== "id" || is(k - 1, "punct", ".")) continue;
    if (t[k].value === "import") {
      if (is(k + 1, "str")) out.push(t[k + 1].value);
      else if (is(k + 1, "punct", "(")) {
        if (is(k + 2, "str") && (is(k + 3, "punct", ")") || is(k + 3, "punct", ","))) out.push(t[k + 2].value);
      } else if (is(k + 1, "punct", ".")) continue;
      else {
        const typeOnly = is(k + 1, "id", "type") && !is(k + 2, "id", "from") && !is(k + 2, "punct", ",") && !is(k + 2, "punct", "=");
        const spec = fromClause(k + 1);
        if (spec !== undefined && !typeOnly) out.push(spec);
      }
    } else if (t[k].value === "export") {
      if (is(k + 1, "id", "type")) continue;
      let j = k + 1;
      if (is(j, "punct", "*")) {
        j++;
        if (is(j, "id", "as")) j += 2; // export * as ns from "x"
      } else if (is(j, "punct", "{")) {
        while (j < t.length && !is(j, "punct", "}")) j++;
        j++;
      } else continue;
      if (is(j, "id", "from") && is(j + 1, "str")) out.push(t[j + 1].value);
    }
  }
  return [...new Set(out)];
}
