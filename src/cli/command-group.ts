/**
 * The shape every API command shares: `slipway <group> <subcommand> [args] [options]`,
 * generated --help, the connection options, --json, table output, and the one place
 * where failures become a message on stderr and an exit code.
 */
import { parse } from "./arguments.ts";
import { CliError, ExitCode, type Command } from "./command.ts";
import { ApiError, CONNECTION_HELP, createApi, detailLines, resolveConnection, type Api, type Connection } from "./client.ts";
import { formatFields, formatTable, printable, type Column } from "./table.ts";

export type OptionSpec = {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
  /** Placeholder shown in help, e.g. "MAC". */
  value?: string;
  description: string;
};

export type Values = Record<string, string | boolean | string[] | undefined>;

export type Output = {
  /** True with --json: print the API's answer as JSON and nothing else on stdout. */
  readonly json: boolean;
  line(text: string): void;
  /** Prints the raw answer under --json, otherwise calls `human`. */
  result(value: unknown, human: () => void): void;
  table<R>(rows: readonly R[], columns: readonly Column<R>[], empty: string): void;
  fields(pairs: readonly (readonly [string, unknown])[]): void;
};

export type Invocation = {
  values: Values;
  positionals: string[];
  out: Output;
  /** Resolves the connection on first use (so --help and usage errors need no server). */
  api(): Api;
  connection(opts?: { withToken?: boolean }): Connection;
  /** Reads a string option. */
  str(name: string): string | undefined;
  /** Reads a repeatable string option ([] when absent). */
  list(name: string): string[];
};

export type Subcommand = {
  summary: string;
  /** Positional arguments for help and counting: `DEVICE`, `[NAME]`, `COLLECTION DEVICE...`. */
  args?: string;
  options?: Record<string, OptionSpec>;
  /** Extra help paragraphs. */
  notes?: string;
  /** False for commands that talk to no server. */
  connects?: boolean;
  run(inv: Invocation): Promise<number | void>;
};

const CONNECTION_OPTIONS: Record<string, OptionSpec> = {
  server: { type: "string", value: "URL", description: "The site server (https)" },
  ca: { type: "string", value: "FILE", description: "PEM file of the CA the server's certificate chains to" },
  data: { type: "string", value: "DIR", description: "Data folder to find server.json and keys/ca.crt in (default ./var)" },
};
const JSON_OPTION: Record<string, OptionSpec> = { json: { type: "boolean", description: "Print the API's JSON answer, for scripts" } };

function argCounts(args: string | undefined): { min: number; max: number } {
  const words = (args ?? "").split(/\s+/).filter(Boolean);
  return {
    min: words.filter((w) => !w.startsWith("[")).length,
    max: words.some((w) => w.endsWith("...") || w.endsWith("...]")) ? Infinity : words.length,
  };
}

function optionHelp(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : ""}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    return [flag, o.description + (o.multiple ? " (repeatable)" : "")] as const;
  });
  const w = Math.max(...rows.map(([f]) => f.length));
  return rows.map(([f, d]) => `  ${f.padEnd(w)}  ${d}`);
}

function allOptions(sub: Subcommand): Record<string, OptionSpec> {
  return { ...sub.options, ...JSON_OPTION, ...(sub.connects === false ? {} : CONNECTION_OPTIONS) };
}

function subHelp(command: string, sub: Subcommand): string {
  const usage = `Usage: slipway ${command}${sub.args ? ` ${sub.args}` : ""} [options]`;
  const parts = [usage, "", sub.summary];
  if (sub.notes) parts.push("", sub.notes);
  parts.push("", "Options:", ...optionHelp({ ...allOptions(sub), help: { type: "boolean", short: "h", description: "Show this help" } }));
  if (sub.connects !== false && !sub.notes?.includes(CONNECTION_HELP)) parts.push("", 'Connection: see "slipway login --help".');
  return parts.join("\n") + "\n";
}

function createOutput(json: boolean): Output {
  const stdout = process.stdout;
  const tty = stdout.isTTY === true;
  const color = tty && !process.env.NO_COLOR && process.env.TERM !== "dumb";
  const write = (s: string) => stdout.write(s.endsWith("\n") ? s : s + "\n");
  return {
    json,
    line: write,
    result(value, human) {
      if (json) {
        if (value !== undefined) write(JSON.stringify(value, null, 2));
      } else human();
    },
    table(rows, columns, empty) {
      if (rows.length === 0) write(empty);
      else write(formatTable(rows, columns, { color, width: tty ? stdout.columns : undefined }));
    },
    fields: (pairs) => write(formatFields(pairs)),
  };
}

function describeFailure(prefix: string, err: unknown): { text: string; code: number } {
  if (err instanceof ApiError) {
    // The server's words may quote what was stored; printable() keeps escapes off the terminal.
    const lines = [`${prefix}: ${printable(err.message)}`, ...detailLines(err.details, err.message).map((l) => `  ${printable(l)}`)];
    if (err.code === "SLIPWAY_UNAUTHENTICATED") lines.push('  Sign in with "slipway login", or set SLIPWAY_TOKEN');
    if (err.code === "SLIPWAY_PASSWORD_CHANGE_REQUIRED") lines.push('  Change it with "slipway passwd"');
    lines.push(...err.hints.map((h) => `  ${h}`));
    return { text: lines.join("\n"), code: err.exitCode };
  }
  if (err instanceof CliError) return { text: `${prefix}: ${err.message}`, code: err.exitCode };
  return { text: `${prefix}: ${(err as Error)?.message ?? String(err)}`, code: ExitCode.FAILURE };
}

/** Runs one subcommand: parses, shows help, checks argument counts, reports failures. */
async function runSubcommand(command: string, sub: Subcommand, args: string[]): Promise<number> {
  // `slipway audit list | head` closes the pipe early; that is not an error worth a stack trace.
  process.stdout.once("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(ExitCode.OK);
    throw e;
  });
  try {
    const specs = allOptions(sub);
    const parseSpecs = Object.fromEntries(Object.entries(specs).map(([k, o]) =>
      [k, { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) }]));
    const { values, positionals } = parse(args, parseSpecs);
    if (values.help) {
      process.stdout.write(subHelp(command, sub));
      return ExitCode.OK;
    }
    const { min, max } = argCounts(sub.args);
    if (positionals.length < min || positionals.length > max) {
      const what = positionals.length < min ? "missing arguments" : `unexpected argument "${positionals[max]}"`;
      throw new CliError(`${what}\nUsage: slipway ${command}${sub.args ? ` ${sub.args}` : ""} [options]  (see --help)`, ExitCode.USAGE);
    }
    const v = values as Values;
    const str = (name: string) => (typeof v[name] === "string" ? (v[name] as string) : undefined);
    let conn: Connection | undefined;
    let api: Api | undefined;
    const connection = (o: { withToken?: boolean } = {}) =>
      (conn ??= resolveConnection({ server: str("server"), ca: str("ca"), data: str("data") }, process.env, o.withToken ?? true));
    const inv: Invocation = {
      values: v,
      positionals,
      out: createOutput(v.json === true),
      connection,
      api: () => (api ??= createApi(connection())),
      str,
      list: (name) => (Array.isArray(v[name]) ? (v[name] as string[]) : []),
    };
    return (await sub.run(inv)) ?? ExitCode.OK;
  } catch (err) {
    const { text, code } = describeFailure(`slipway ${command}`, err);
    process.stderr.write(text + "\n");
    return code;
  }
}

/** `slipway NAME SUB ...`: a group of subcommands with generated help. */
export function commandGroup(name: string, summary: string, subs: Record<string, Subcommand>, opts: { defaultSubcommand?: string } = {}): Command {
  const help = (full = true) => {
    const w = Math.max(...Object.keys(subs).map((s) => s.length));
    return [
      `Usage: slipway ${name} <subcommand> [arguments] [options]`, "", summary, "", "Subcommands:",
      ...Object.entries(subs).map(([s, c]) => `  ${s.padEnd(w)}  ${c.summary}`),
      "", `Run "slipway ${name} <subcommand> --help" for its options. Every subcommand takes --json.`,
      ...(full ? ["", CONNECTION_HELP] : []), "",
    ].join("\n");
  };
  return {
    summary,
    async run(args) {
      const [first, ...rest] = args;
      if (first === "--help" || first === "-h" || first === "help") {
        process.stdout.write(help());
        return ExitCode.OK;
      }
      let subName = first;
      let subArgs = rest;
      if ((first === undefined || first.startsWith("-")) && opts.defaultSubcommand) [subName, subArgs] = [opts.defaultSubcommand, args];
      const sub = subName === undefined ? undefined : Object.hasOwn(subs, subName) ? subs[subName] : undefined;
      if (!sub) {
        process.stderr.write(`slipway ${name}: ${subName === undefined ? "missing subcommand" : `unknown subcommand "${subName}"`}\n\n${help(false)}`);
        return ExitCode.USAGE;
      }
      return runSubcommand(`${name} ${subName}`, sub, subArgs);
    },
  };
}

/** `slipway NAME [args]`: a command without subcommands. */
export function singleCommand(name: string, sub: Subcommand): Command {
  return { summary: sub.summary, run: (args) => runSubcommand(name, sub, args) };
}
