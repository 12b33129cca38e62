/**
 * Talking to whoever is at the machine: status lines, and prompts (one that does not echo).
 *
 * A machine may have a screen, a serial line or both, and the administrator may be at either.
 * /dev/console is only the last `console=` of the kernel command line, so in the deploy
 * environment /init names every active console in SLIPWAY_CONSOLES (e.g. `tty0 ttyS0`): lines
 * go to all of them, a prompt is shown on all of them, and the first answer typed on any one
 * is taken. Without SLIPWAY_CONSOLES (the agent run by hand) stdin and stdout are the console.
 */
import fs from "node:fs";
import tty from "node:tty";

/** The console devices under /dev to use, or empty for stdin/stdout. */
function consoleNames(): string[] {
  const names = (process.env.SLIPWAY_CONSOLES ?? "").split(/\s+/).filter(Boolean);
  // Names only: "tty0", "ttyS0", "pts/3" — never a path that leaves /dev.
  return names.filter((n) => /^[A-Za-z0-9]+(\/[0-9]+)?$/.test(n));
}

let outputs: number[] | undefined;

/** Open file descriptors of the consoles to write to; empty means stdout. */
function consoleOutputs(): number[] {
  if (outputs) return outputs;
  outputs = [];
  for (const name of consoleNames()) {
    try {
      outputs.push(fs.openSync(`/dev/${name}`, fs.constants.O_WRONLY | fs.constants.O_NOCTTY));
    } catch {
      // A console named by the kernel but not openable (a serial port with no UART behind it).
    }
  }
  return outputs;
}

function write(text: string): void {
  const fds = consoleOutputs();
  if (fds.length === 0) {
    process.stdout.write(text);
    return;
  }
  for (const fd of fds) {
    try {
      fs.writeSync(fd, text);
    } catch {
      // One console failing (unplugged serial line) must not silence the others.
    }
  }
}

export function say(line: string): void {
  write(`SLIPWAY-AGENT ${line}\n`);
}

/** The terminals to read an answer from: every console that opens as one, else stdin. */
function inputs(): { streams: tty.ReadStream[]; close(): void } {
  const names = consoleNames();
  if (names.length === 0) return { streams: process.stdin.isTTY ? [process.stdin as tty.ReadStream] : [], close: () => process.stdin.pause() };
  const streams: tty.ReadStream[] = [];
  for (const name of names) {
    try {
      const fd = fs.openSync(`/dev/${name}`, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
      if (tty.isatty(fd)) streams.push(new tty.ReadStream(fd));
      else fs.closeSync(fd);
    } catch {
      // Not openable: not a console anyone can type on.
    }
  }
  return { streams, close: () => streams.forEach((s) => s.destroy()) };
}

/**
 * Shows `prompt` on every console and resolves with the first line completed on any of them;
 * null when there is no terminal to ask or the user ends input (Ctrl-C, Ctrl-D).
 */
function ask(prompt: string, hidden: boolean): Promise<string | null> {
  const { streams, close } = inputs();
  if (streams.length === 0) return Promise.resolve(null);
  // Echo goes off before the prompt is shown: someone who types as soon as the prompt appears
  // (or a program answering it) would otherwise see the password echoed by the terminal.
  for (const s of streams) s.setRawMode(true);
  write(prompt);
  return new Promise((resolve) => {
    const typed = new Map<tty.ReadStream, string>();
    let finished = false;
    const done = (v: string | null) => {
      if (finished) return;
      finished = true;
      for (const s of streams) {
        s.removeAllListeners("data");
        s.setRawMode(false);
      }
      close();
      write("\n");
      resolve(v);
    };
    for (const s of streams) {
      // Raw mode (set above) on each terminal: no echo, keys as they come; line editing is done here.
      s.on("error", () => {});
      s.on("data", (b: Buffer) => {
        let value = typed.get(s) ?? "";
        for (const c of b.toString("utf8")) {
          if (c === "\r" || c === "\n") return done(value);
          if (c === "\u0003" || c === "\u0004") return done(null);
          if (c === "\u007f" || c === "\b") {
            if (value && !hidden) write("\b \b");
            value = value.slice(0, -1);
          } else if (c >= " ") {
            value += c;
            if (!hidden) write(c);
          }
        }
        typed.set(s, value);
      });
      s.resume();
    }
  });
}

/** Reads one line without echoing it; null when there is no console to ask. */
export function askHidden(prompt: string): Promise<string | null> {
  return ask(prompt, true);
}

/** Reads one visible line (a menu choice), trimmed; null without a console. */
export async function askLine(prompt: string): Promise<string | null> {
  return (await ask(prompt, false))?.trim() ?? null;
}
