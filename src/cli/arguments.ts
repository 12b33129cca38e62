/** Turning command-line text into the values the API takes; bad input is a usage error (exit 2). */
import path from "node:path";
import { parseArgs } from "node:util";
import { CliError, ExitCode } from "./command.ts";

const usage = (message: string) => new CliError(message, ExitCode.USAGE);

export type ArgumentOptions = Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>;
export type ParsedArgs = { values: Record<string, string | boolean | string[] | boolean[] | undefined>; positionals: string[] };

/** A command's arguments against its options (and -h/--help); an unknown option is a usage error. */
export function parse(args: string[], options: ArgumentOptions): ParsedArgs {
  try {
    return parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true }) as ParsedArgs;
  } catch (err) {
    throw new CliError((err as Error).message, ExitCode.USAGE);
  }
}

/** The data folder: --data, else SLIPWAY_DATA, else ./var. */
export function dataOption(v: string | undefined): string {
  return path.resolve(v ?? process.env.SLIPWAY_DATA ?? "./var");
}

/** `HOST:PORT`, `[v6]:PORT` or `:PORT`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new CliError(`--listen must be HOST:PORT, not "${text}"`, ExitCode.USAGE);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** A whole number within bounds, for options like --limit. */
export function integer(text: string, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw usage(`${option} must be a whole number ${max === Number.MAX_SAFE_INTEGER ? `from ${min} up` : `from ${min} to ${max}`}, not "${text}"`);
  }
  return Number(text);
}

/** A task sequence version: a number from 1, or "latest". */
export function version(text: string, option = "--version"): number | "latest" {
  if (text === "latest") return "latest";
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) throw usage(`${option} must be a version number (1, 2, …) or "latest", not "${text}"`);
  return Number(text);
}

/** Any date and time Date understands, as ISO 8601 UTC; "" means "none" (null). */
export function isoTime(text: string, option: string): string | null {
  if (text === "") return null;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw usage(`${option} must be a date and time such as 2026-03-01T18:00:00Z, not "${text}"`);
  return new Date(ms).toISOString();
}

/**
 * `key=value` pairs into device attributes. `true`/`false` become booleans and plain
 * decimal numbers become numbers; anything else (including "007") stays text. Collection
 * rules compare numeric text numerically anyway, so the choice only shows in the JSON.
 */
export function attributes(pairs: string[]): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw usage(`--attr takes KEY=VALUE, not "${pair}"`);
    const key = pair.slice(0, eq);
    const text = pair.slice(eq + 1);
    out[key] = text === "true" ? true : text === "false" ? false : /^-?(0|[1-9]\d{0,14})(\.\d+)?$/.test(text) ? Number(text) : text;
  }
  return out;
}

/** One of a fixed set of words. */
export function oneOf<T extends string>(text: string, allowed: readonly T[], option: string): T {
  if (!(allowed as readonly string[]).includes(text)) throw usage(`${option} must be one of ${allowed.join(", ")}, not "${text}"`);
  return text as T;
}

/** Refuses an empty change: "update" without any option is almost always a mistake. */
export function requireChanges(body: Record<string, unknown>, what: string): void {
  if (Object.values(body).every((v) => v === undefined)) throw usage(`Nothing to change: give at least one option for ${what} (see --help)`);
}
