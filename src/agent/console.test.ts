/**
 * The agent's console on real pseudo-terminals: `script` holds each one open (as a screen or a
 * serial line would be), the agent's console module is told about both the way /init tells it
 * in the deploy environment, and the test reads and types on each terminal.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

const driver = path.resolve(import.meta.dirname, "../../test/support/console-driver.ts");

/** A pseudo-terminal kept open by `script`: its name under /dev, what was written to it, and a way to type. */
type Terminal = { name: string; output(): string; type(text: string): void; close(): void };

function openTerminal(): Promise<Terminal> {
  return new Promise((resolve, reject) => {
    const child: ChildProcessWithoutNullStreams = spawn("script", ["-qfec", "tty; exec sleep 600", "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let named = false;
    child.on("error", reject);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("utf8");
      const m = /\/dev\/(pts\/\d+)\r?\n/.exec(out);
      if (!named && m) {
        named = true;
        const start = out.length;
        resolve({ name: m[1], output: () => out.slice(start), type: (t) => child.stdin.write(t), close: () => child.kill() });
      }
    });
    setTimeout(() => named || reject(new Error(`script printed no terminal name: ${out}`)), 10_000).unref();
  });
}

function runDriver(mode: "hidden" | "line", consoles: string): { exit: Promise<{ code: number | null; stdout: string }> } {
  const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", driver, mode], { env: { ...process.env, SLIPWAY_CONSOLES: consoles }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
  child.stderr.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
  return { exit: new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout }))) };
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`waited 15 s for ${what}`);
}

describe("agent console", () => {
  const terminals: Terminal[] = [];
  after(() => terminals.forEach((t) => t.close()));

  it("shows its lines and the PXE password prompt on every console and takes the password from the one it is typed on, without echo", async () => {
    const screen = await openTerminal();
    const serial = await openTerminal();
    terminals.push(screen, serial);
    // "ttyNOPE" stands for a console the kernel names but that cannot be opened.
    const run = runDriver("hidden", `${screen.name} ttyNOPE ${serial.name}`);
    for (const t of [screen, serial]) await until(`the prompt on ${t.name}`, () => t.output().includes("requires the PXE password: "));
    assert.match(screen.output(), /SLIPWAY-AGENT console test ready/);
    assert.match(serial.output(), /SLIPWAY-AGENT console test ready/);
    // Typed on the screen — not on /dev/console, not on the process's stdin.
    screen.type("Sw0rdf1sh-x");
    await new Promise((r) => setTimeout(r, 200));
    screen.type("\u007fZ\r");
    const { code, stdout } = await run.exit;
    assert.equal(code, 0, stdout);
    assert.match(stdout, /ANSWER="Sw0rdf1sh-Z"/);
    for (const t of [screen, serial]) {
      await until(`the last line on ${t.name}`, () => t.output().includes("console test done"));
      assert.doesNotMatch(t.output(), /Sw0rdf1sh/, `no echo of the password on ${t.name}`);
    }
  });

  it("echoes a menu answer typed on the serial line to every console", async () => {
    const screen = await openTerminal();
    const serial = await openTerminal();
    terminals.push(screen, serial);
    const run = runDriver("line", `${screen.name} ${serial.name}`);
    await until("the menu prompt", () => serial.output().includes("Choose one: ") && screen.output().includes("Choose one: "));
    serial.type(" 2\r");
    const { stdout } = await run.exit;
    assert.match(stdout, /ANSWER="2"/);
    await until("the echo on the screen", () => screen.output().includes("Choose one:  2"));
  });

  it("without consoles or a terminal there is no one to ask", async () => {
    const { code, stdout } = await runDriver("hidden", "").exit;
    assert.equal(code, 0);
    assert.match(stdout, /SLIPWAY-AGENT console test ready/);
    assert.match(stdout, /ANSWER=null/);
  });
});
