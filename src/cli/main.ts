/**
 * The slipway command. Server-side commands (init, up, audit verify, bootimage, image) work
 * on the data folder directly; every other command talks to the site API over HTTPS.
 */
import { serverCommands } from "./server-commands.ts";
import { imageCommands } from "./image-commands.ts";
import { CliError, ExitCode, type Command } from "./command.ts";

async function loadClientCommands(): Promise<Record<string, Command>> {
  try {
    const m = await import("./client-commands.ts");
    return m.clientCommands as Record<string, Command>;
  } catch (err) {
    if ((err as { code?: string }).code === "ERR_MODULE_NOT_FOUND") return {};
    throw err;
  }
}

function usage(commands: Record<string, Command>): string {
  const lines = Object.entries(commands).filter(([name]) => name !== "audit-verify").map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return `Usage: slipway <command> [options]\n\nCommands:\n${lines.join("\n")}\n\nRun "slipway <command> --help" for a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const commands: Record<string, Command> = { ...serverCommands, ...imageCommands, ...(await loadClientCommands()) };
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage(commands) + "\n");
    return name ? ExitCode.OK : ExitCode.USAGE;
  }
  if (name === "--version") {
    process.stdout.write("slipway 0.1.0\n");
    return ExitCode.OK;
  }
  // `audit verify` runs offline against the data folder; other audit subcommands use the API.
  const cmd = name === "audit" && rest[0] === "verify" ? commands["audit-verify"] : commands[name];
  if (!cmd) {
    process.stderr.write(`slipway: unknown command "${name}"\n\n${usage(commands)}\n`);
    return ExitCode.USAGE;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`slipway ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`slipway ${name}: ${(err as Error).message ?? String(err)}\n`);
    return ExitCode.FAILURE;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => {
      // `up` keeps the process alive through its server; others end here.
      if (code !== ExitCode.RUNNING) process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`slipway: ${String(err)}\n`);
      process.exitCode = ExitCode.FAILURE;
    },
  );
}
