/**
 * The agent as it ships in a boot image: its TypeScript sources, found by following static
 * and literal dynamic imports from the entry point (Node strips the types when it runs them,
 * so nothing is compiled), and the npm packages they use with those packages' own
 * dependencies.
 *
 *   /opt/slipway/package.json          {"type":"module"}
 *   /opt/slipway/src/agent/main.ts     sources keep their layout relative to the project root
 *   /opt/slipway/node_modules/<pkg>/   whole packages (without type declarations and source
 *                                      maps), nested node_modules where npm put them
 *
 * The module graph is esbuild's (the TypeScript parser and Node-style resolver of a maintained
 * bundler), read from its metafile; nothing is compiled or rewritten: the files ship as they
 * are and Node strips their types at run time. Type-only imports (`import type …`,
 * `export type … from`) are erased at run time and are not followed (verbatimModuleSyntax,
 * as Node's type stripping requires). An import Node would not resolve as written (no
 * extension, a directory, `.js` for a `.ts` file) is refused here rather than at boot.
 */
import { buildSync, type BuildFailure, type Metafile } from "esbuild";
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

  for (const [rel, input] of Object.entries(moduleGraph(root, path.resolve(opts.entry)))) {
    const file = path.resolve(root, rel);
    const relPath = relToRoot(file, "source");
    sources.add(relPath);
    files.set(`${targetDir}/${relPath}`, readFileSync(file));
    for (const imp of input.imports) {
      const spec = imp.original ?? imp.path;
      if (spec.startsWith("node:") || isBuiltin(spec)) continue;
      if (spec.startsWith("#") || /^[a-z][a-z0-9+.-]*:/i.test(spec)) {
        throw new Error(`Cannot bundle the agent: ${relPath} imports "${spec}"; only relative paths and npm packages are supported`);
      }
      if (!imp.external) {
        // Node resolves a relative specifier exactly as written: no added extension, no index file.
        if (path.resolve(path.dirname(file), spec) !== path.resolve(root, imp.path)) {
          throw new Error(`Cannot bundle the agent: ${relPath} imports "${spec}", which does not exist (Node loads files by their exact name)`);
        }
        continue;
      }
      const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
      const found = findPackage(name, path.dirname(file));
      if (!found) throw new Error(`Cannot bundle the agent: package ${name} (imported by ${relPath}) is not installed (run npm install)`);
      addPackage(found, relPath);
    }
  }
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

/**
 * The modules reached from `entry` (paths relative to `root`) and what each imports, as
 * esbuild resolves them; packages stay outside (their imports are listed as external).
 */
function moduleGraph(root: string, entry: string): Metafile["inputs"] {
  try {
    const result = buildSync({
      entryPoints: [entry], absWorkingDir: root, bundle: true, write: false, metafile: true,
      platform: "node", format: "esm", packages: "external", logLevel: "silent",
      // Keep every import not marked as a type, as Node's type stripping does.
      tsconfigRaw: { compilerOptions: { verbatimModuleSyntax: true } },
    });
    return result.metafile.inputs;
  } catch (err) {
    const first = (err as BuildFailure).errors?.[0];
    if (!first) throw err;
    const file = first.location?.file;
    const missing = /^Could not resolve "(.*)"$/.exec(first.text);
    if (missing && file) throw new Error(`Cannot bundle the agent: ${file} imports "${missing[1]}", which does not exist`);
    throw new Error(`Cannot bundle the agent: ${file ? `${file}:${first.location!.line}: ` : ""}${first.text}`);
  }
}
