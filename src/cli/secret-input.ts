/**
 * Reading passwords and secret values without showing them: a hidden prompt on the
 * terminal, or standard input for scripts. Secrets are never taken from the command line
 * by choice, because arguments show in `ps` and shell history.
 */
import { CliError, ExitCode } from "./command.ts";

/** Largest standard input accepted; the API refuses variables over 64 KiB anyway. */
const MAX_STDIN_BYTES = 1024 * 1024;

/** Whether a hidden prompt is possible (standard input is a terminal). */
export function canPrompt(): boolean {
  return process.stdin.isTTY === true;
}

/** Asks on the terminal with echo off; the prompt goes to stderr so stdout stays clean. */
export function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.reject(new CliError("Cannot ask for a secret: standard input is not a terminal", ExitCode.USAGE));
  // Echo goes off before the prompt appears, so nothing typed after seeing it is shown.
  stdin.setRawMode(true);
  process.stderr.write(question);
  return new Promise((resolve, reject) => {
    let value = "";
    const finish = (err: Error | null) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") return finish(null);
        if (ch === "\u0003" || (ch === "\u0004" && value === "")) return finish(new CliError("Cancelled"));
        if (ch === "\u007f" || ch === "\b") value = Array.from(value).slice(0, -1).join("");
        else if (ch === "\u0015") value = "";
        else if (ch >= " ") value += ch;
      }
    };
    stdin.setEncoding("utf8");
    stdin.on("data", onData);
    stdin.resume();
  });
}

/** Asks twice and insists the answers match: a typo in a new password would lock you out. */
export async function promptNewSecret(question: string): Promise<string> {
  const first = await promptHidden(question);
  const again = await promptHidden("Again: ");
  if (first !== again) throw new CliError("The two entries differ; nothing was changed", ExitCode.USAGE);
  return first;
}

let stdinText: Promise<string> | null = null;

/** All of standard input (read once and shared, so several values can come from its lines). */
export function readStdin(): Promise<string> {
  stdinText ??= (async () => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin) {
      size += (chunk as Buffer).length;
      if (size > MAX_STDIN_BYTES) throw new CliError(`Standard input is larger than ${MAX_STDIN_BYTES} bytes`, ExitCode.INVALID);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  })();
  return stdinText;
}

/** Line `index` (0-based) of standard input, without its line ending. */
export async function stdinLine(index: number, what: string): Promise<string> {
  const lines = (await readStdin()).split(/\r?\n/);
  const line = lines[index];
  if (line === undefined || line === "") throw new CliError(`Expected ${what} on line ${index + 1} of standard input`, ExitCode.USAGE);
  return line;
}

/** Standard input as one value: everything, less a single final line break. */
export async function stdinValue(): Promise<string> {
  return (await readStdin()).replace(/\r?\n$/, "");
}
