/** Talking to whoever is at the machine's console: status lines, and a password prompt that does not echo. */

export function say(line: string): void {
  process.stdout.write(`SLIPWAY-AGENT ${line}\n`);
}

/** Reads one line from the console without echoing it; null when there is no console to ask. */
export function askHidden(prompt: string): Promise<string | null> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.resolve(null);
  process.stdout.write(prompt);
  return new Promise((resolve) => {
    let value = "";
    stdin.setRawMode(true);
    stdin.resume();
    const done = (v: string | null) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stdout.write("\n");
      resolve(v);
    };
    const onData = (b: Buffer) => {
      for (const c of b.toString("utf8")) {
        if (c === "\r" || c === "\n") return done(value);
        if (c === "\u0003" || c === "\u0004") return done(null);
        if (c === "\u007f" || c === "\b") value = value.slice(0, -1);
        else if (c >= " ") value += c;
      }
    };
    stdin.on("data", onData);
  });
}

/** Reads one visible line (a menu choice); null without a console. */
export function askLine(prompt: string): Promise<string | null> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.resolve(null);
  process.stdout.write(prompt);
  return new Promise((resolve) => {
    stdin.resume();
    stdin.once("data", (b: Buffer) => {
      stdin.pause();
      resolve(b.toString("utf8").trim());
    });
  });
}
