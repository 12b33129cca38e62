/**
 * Route handlers are typed from their routes' declarations (pipeline.ts `routeOf`, the site's
 * `route`): TypeScript refuses a handler that reads a body field, query parameter or path
 * parameter its route does not declare, or reads one as the wrong type. Checked two ways:
 *  - typed-routes-examples.ts compiles with every misuse marked `@ts-expect-error` removed,
 *    and exactly the marked lines are errors (node runs tests without type checking, so this
 *    runs the compiler itself);
 *  - the route modules hold no `any` and no cast of `ctx.body`, `ctx.query` or `ctx.params`
 *    (a cast would restate a schema by hand, and could lie about it).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import ts from "typescript";

const ROOT = path.resolve(import.meta.dirname, "../..");
const EXAMPLES = path.join(import.meta.dirname, "typed-routes-examples.ts");

function compilerOptions(): ts.CompilerOptions {
  const file = ts.readConfigFile(path.join(ROOT, "tsconfig.json"), (f) => ts.sys.readFile(f));
  return ts.parseJsonConfigFileContent(file.config, ts.sys, ROOT).options;
}

/** The semantic and syntactic errors of `file` compiled with `text` as its content, as 1-based line numbers and messages. */
function errorsOf(file: string, text: string): { line: number; message: string }[] {
  const options = compilerOptions();
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile.bind(host);
  host.getSourceFile = (name, version, onError, create) =>
    path.resolve(name) === file ? ts.createSourceFile(name, text, version, true) : read(name, version, onError, create);
  const program = ts.createProgram({ rootNames: [file], options, host });
  const source = program.getSourceFile(file);
  assert.ok(source, "the examples file compiles");
  return [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)].map((d) => ({
    line: source.getLineAndCharacterOfPosition(d.start ?? 0).line + 1,
    message: ts.flattenDiagnosticMessageText(d.messageText, "\n"),
  }));
}

test("a handler that reads what its route does not declare does not compile", () => {
  const text = fs.readFileSync(EXAMPLES, "utf8");
  const lines = text.split("\n");
  // Each directive marks the line after it; removing it keeps the line numbers.
  const marked = lines.flatMap((l, i) => (/^\s*\/\/ @ts-expect-error\b/.test(l) ? [i + 2] : []));
  assert.ok(marked.length >= 10, `the examples mark ${marked.length} misuses`);
  const stripped = lines.map((l) => l.replace(/\/\/ @ts-expect-error\b/, "// (expected error)")).join("\n");
  const errors = errorsOf(EXAMPLES, stripped);
  const lineOf = (n: number) => `${n}: ${lines[n - 1].trim()}`;
  // Every misuse is refused by the compiler...
  for (const n of marked) {
    assert.ok(errors.some((e) => e.line === n), `line ${lineOf(n)} compiled, but its route does not allow it`);
  }
  // ...and nothing else: the correct reads beside them compile.
  const unexpected = errors.filter((e) => !marked.includes(e.line));
  assert.deepEqual(unexpected, [], "only the marked lines are errors");
  // The body-field misuse is refused for the reason we mean, not by accident.
  const body = errors.find((e) => e.line === marked[0]);
  assert.match(body?.message ?? "", /Property 'nonexistent' does not exist/);
});

test("the examples compile as they are (the directives are all needed)", () => {
  assert.deepEqual(errorsOf(EXAMPLES, fs.readFileSync(EXAMPLES, "utf8")), []);
});

/** The files that define routes: every module under src/roles that calls a route definition helper. */
function routeModules(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith(".ts") && /\b(route|mpRoute)\(\{/.test(fs.readFileSync(p, "utf8"))) out.push(p);
    }
  };
  walk(path.join(ROOT, "src/roles"));
  return out.sort();
}

test("route modules hold no any and no cast of the request's body, query or params", () => {
  const files = routeModules();
  assert.ok(files.length >= 18, `found ${files.length} route modules`);
  const problems: string[] = [];
  for (const file of files) {
    const source = ts.createSourceFile(file, fs.readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    const where = (n: ts.Node) => `${path.relative(ROOT, file)}:${source.getLineAndCharacterOfPosition(n.getStart()).line + 1}`;
    const visit = (n: ts.Node) => {
      if (n.kind === ts.SyntaxKind.AnyKeyword) problems.push(`${where(n)}: any`);
      if ((ts.isAsExpression(n) || ts.isTypeAssertionExpression(n)) && /\bctx\.(body|query|params)\b/.test(n.expression.getText(source))) {
        problems.push(`${where(n)}: ${n.getText(source)}`);
      }
      ts.forEachChild(n, visit);
    };
    visit(source);
  }
  assert.deepEqual(problems, []);
});
