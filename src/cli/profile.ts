/**
 * The saved sign-in: which server, the session token and the CA that server's certificate
 * chains to. It holds a bearer token, so the file is created owner-only (0600, folder 0700)
 * and replaced atomically, never rewritten in place with looser permissions.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CliError, ExitCode } from "./command.ts";

export type Profile = {
  /** `https://host:port`, as an origin. */
  server?: string;
  token?: string;
  /** PEM of the CA the server's certificate must chain to. */
  ca?: string;
};

/** `$SLIPWAY_CONFIG`, else `$XDG_CONFIG_HOME/slipway/profile.json`, else `~/.config/slipway/profile.json`. */
export function profilePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SLIPWAY_CONFIG) return path.resolve(env.SLIPWAY_CONFIG);
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "slipway", "profile.json");
}

/** The saved profile, or an empty one when there is none. */
export function readProfile(file: string): Profile {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new CliError(`Cannot read the profile ${file}: ${(err as Error).message}`);
  }
  try {
    const stat = fs.statSync(file);
    if (process.platform !== "win32" && (stat.mode & 0o077) !== 0) {
      process.stderr.write(`slipway: warning: ${file} holds a token but others can read it; run chmod 600 ${file}\n`);
    }
  } catch {
    // The mode check is advice only.
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CliError(`Cannot read the profile ${file}: it is not JSON; sign in again with slipway login`);
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) return {};
  const v = value as Record<string, unknown>;
  const str = (x: unknown) => (typeof x === "string" && x ? x : undefined);
  return { server: str(v.server), token: str(v.token), ca: str(v.ca) };
}

/** Writes the profile owner-only, through a temporary file and a rename. */
export function writeProfile(file: string, profile: Profile): void {
  const dir = path.dirname(file);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
    fs.rmSync(tmp, { force: true });
    // "wx" refuses to follow a planted file or symlink; mode 0600 applies from creation on.
    fs.writeFileSync(tmp, JSON.stringify(profile, null, 2) + "\n", { mode: 0o600, flag: "wx" });
    fs.renameSync(tmp, file);
    fs.chmodSync(file, 0o600);
  } catch (err) {
    throw new CliError(`Cannot save the profile ${file}: ${(err as Error).message}`, ExitCode.FAILURE);
  }
}
