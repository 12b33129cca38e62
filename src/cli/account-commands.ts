/** Your own account: sign in and out, who you are, your password and your API tokens. */
import { CliError, ExitCode, type Command } from "./command.ts";
import { ApiError, apiPath, apiRequest, CONNECTION_HELP, type Connection } from "./client.ts";
import { commandGroup, singleCommand, type Invocation } from "./command-group.ts";
import { writeProfile } from "./profile.ts";
import { canPrompt, promptHidden, promptNewSecret, stdinLine } from "./secret-input.ts";
import { integer } from "./arguments.ts";

type Session = { token: string; expiresAt: string; mustChangePassword: boolean };
type Me = { id: string; username: string; displayName: string; roles: string[]; scopes: string[] | null; permissions: string[]; via: string; mustChangePassword: boolean };
type ApiToken = { id: string; name: string; role: string; createdAt: string; expiresAt: string; lastUsedAt: string | null; token?: string };

const noTerminal = (what: string, flag: string, env: string) =>
  new CliError(`Cannot ask for ${what}: standard input is not a terminal; use ${flag} or set ${env}`, ExitCode.USAGE);

/** The current password: stdin line 1, $SLIPWAY_PASSWORD, or a hidden prompt. */
async function currentPassword(inv: Invocation, prompt: string): Promise<string> {
  if (inv.values["password-stdin"]) return stdinLine(0, "the password");
  if (process.env.SLIPWAY_PASSWORD) return process.env.SLIPWAY_PASSWORD;
  if (!canPrompt()) throw noTerminal("the password", "--password-stdin", "SLIPWAY_PASSWORD");
  return promptHidden(prompt);
}

/** A new password: stdin line 2, $SLIPWAY_NEW_PASSWORD, or a hidden prompt asked twice. */
async function newPassword(inv: Invocation): Promise<string> {
  if (inv.values["password-stdin"]) return stdinLine(1, "the new password");
  if (process.env.SLIPWAY_NEW_PASSWORD) return process.env.SLIPWAY_NEW_PASSWORD;
  if (!canPrompt()) throw noTerminal("a new password", "--password-stdin", "SLIPWAY_NEW_PASSWORD");
  return promptNewSecret("New password: ");
}

async function changePassword(conn: Connection, token: string | null, current: string, next: string): Promise<void> {
  await apiRequest(conn, "POST", "/api/v1/me/password", { body: { currentPassword: current, newPassword: next }, token });
}

const PASSWORD_STDIN = { type: "boolean", description: "Read the password from the first line of standard input (a new one from the second)" } as const;

const login = singleCommand("login", {
  summary: "Sign in and save the session in your profile",
  options: {
    username: { type: "string", value: "NAME", description: "Administrator to sign in as (default admin)" },
    "password-stdin": PASSWORD_STDIN,
  },
  notes: [
    "The password comes from the first line of standard input with --password-stdin, else",
    "from $SLIPWAY_PASSWORD, else from a hidden prompt. After a one-time password you must",
    "choose a new one: the second line of standard input, $SLIPWAY_NEW_PASSWORD, or a prompt",
    "(asked twice). The session token is saved with the server and its CA in the profile and",
    "is never printed, not even with --json.",
    "",
    CONNECTION_HELP,
  ].join("\n"),
  async run(inv) {
    const conn = inv.connection({ withToken: false });
    const username = inv.str("username") ?? "admin";
    const password = await currentPassword(inv, `Password for ${username} at ${conn.server}: `);
    const session = (await apiRequest(conn, "POST", "/api/v1/sessions", { body: { username, password }, token: null })) as Session;
    // Saved before any password change, so a refused new password can be retried with `passwd`.
    writeProfile(conn.profileFile, { server: conn.server, token: session.token, ...(conn.ca ? { ca: conn.ca } : {}) });
    let changed = false;
    if (session.mustChangePassword) {
      if (!inv.values["password-stdin"] && !process.env.SLIPWAY_NEW_PASSWORD) process.stderr.write("This is a one-time password: choose a new one now.\n");
      try {
        await changePassword(conn, session.token, password, await newPassword(inv));
        changed = true;
      } catch (err) {
        const hint = 'You are signed in, but nothing else works until you change the password with "slipway passwd"';
        if (err instanceof ApiError) err.hints.push(hint);
        else if (err instanceof CliError) throw new CliError(`${err.message}\n  ${hint}`, err.exitCode);
        throw err;
      }
    }
    inv.out.result({ server: conn.server, username, expiresAt: session.expiresAt, passwordChanged: changed, profile: conn.profileFile }, () => {
      inv.out.line(`Signed in to ${conn.server} as ${username}${changed ? " and changed the one-time password" : ""}; the session lasts until ${session.expiresAt}.`);
      inv.out.line(`Saved in ${conn.profileFile}`);
    });
  },
});

const logout = singleCommand("logout", {
  summary: "End the saved session and remove its token from the profile",
  async run(inv) {
    const conn = inv.connection();
    const p = conn.profile;
    if (!p.token || p.server !== conn.server) {
      inv.out.result({ signedOut: false }, () => inv.out.line(`Not signed in to ${conn.server} (no saved session in ${conn.profileFile})`));
      return;
    }
    let serverTold = true;
    let failure: CliError | null = null;
    try {
      await apiRequest(conn, "DELETE", "/api/v1/sessions/current", { token: p.token });
    } catch (err) {
      // A session that already expired or was ended is as good as ended.
      if (!(err instanceof ApiError && err.status === 401)) {
        serverTold = false;
        failure = err instanceof CliError ? err : new CliError(String(err));
      }
    }
    writeProfile(conn.profileFile, { server: p.server, ...(p.ca ? { ca: p.ca } : {}) });
    if (failure) {
      throw new CliError(`${failure.message}\n  The token was removed from ${conn.profileFile}, but the session stays valid on the server until it expires`, failure.exitCode);
    }
    inv.out.result({ signedOut: true, serverTold }, () => inv.out.line(`Signed out of ${conn.server}`));
  },
});

const whoami = singleCommand("whoami", {
  summary: "Show who you are signed in as, with your roles, scopes and permissions",
  async run(inv) {
    const me = await inv.api().get<Me>("/api/v1/me");
    inv.out.result(me, () => inv.out.fields([
      ["Username", me.username], ["Display name", me.displayName], ["Roles", me.roles],
      ["Scopes", me.scopes === null ? "all collections" : me.scopes], ["Signed in with", me.via === "token" ? "an API token" : "a session"],
      ["Server", inv.connection().server], ["Must change password", me.mustChangePassword ? "yes" : "no"], ["Permissions", me.permissions],
    ]));
  },
});

const passwd = singleCommand("passwd", {
  summary: "Change your own password (your other sessions end)",
  options: { "password-stdin": { type: "boolean", description: "Read the current password from the first line of standard input, the new one from the second" } },
  notes: "Without --password-stdin: $SLIPWAY_PASSWORD and $SLIPWAY_NEW_PASSWORD, else hidden prompts (the new one asked twice).",
  async run(inv) {
    const conn = inv.connection();
    const current = await currentPassword(inv, "Current password: ");
    await changePassword(conn, conn.token, current, await newPassword(inv));
    inv.out.result({ changed: true }, () => inv.out.line("Password changed; your other sessions have ended."));
  },
});

const tokenColumns = [
  { header: "NAME", value: (t: ApiToken) => t.name },
  { header: "ROLE", value: (t: ApiToken) => t.role },
  { header: "CREATED", value: (t: ApiToken) => t.createdAt },
  { header: "EXPIRES", value: (t: ApiToken) => t.expiresAt },
  { header: "LAST USED", value: (t: ApiToken) => t.lastUsedAt ?? "never" },
  { header: "ID", value: (t: ApiToken) => t.id },
];

const token = commandGroup("token", "Your own API tokens, for scripts (each limited to one of your roles)", {
  list: {
    summary: "List your API tokens (never their secret part)",
    async run(inv) {
      const rows = await inv.api().get<ApiToken[]>("/api/v1/me/tokens");
      inv.out.result(rows, () => inv.out.table(rows, tokenColumns, "No API tokens."));
    },
  },
  create: {
    summary: "Create an API token; it is printed once and cannot be shown again",
    args: "NAME",
    options: {
      role: { type: "string", value: "ROLE", description: "The one role the token acts with (required; must be yours)" },
      days: { type: "string", value: "N", description: "Days until it expires, 1-365 (default 30)" },
    },
    notes: "Use the token by setting SLIPWAY_TOKEN; never put it on a command line.",
    async run(inv) {
      const role = inv.str("role");
      if (!role) throw new CliError("--role is required", ExitCode.USAGE);
      const days = inv.str("days");
      const t = await inv.api().post<ApiToken>("/api/v1/me/tokens", { name: inv.positionals[0], role, ...(days ? { expiresInDays: integer(days, "--days", 1, 365) } : {}) });
      inv.out.result(t, () => {
        inv.out.fields([["Name", t.name], ["Role", t.role], ["Expires", t.expiresAt], ["ID", t.id]]);
        process.stderr.write("The token is shown once; store it now:\n");
        inv.out.line(t.token ?? "");
      });
    },
  },
  delete: {
    summary: "Delete one of your API tokens (by id or name)",
    args: "TOKEN",
    async run(inv) {
      const api = inv.api();
      const ref = inv.positionals[0];
      const all = await api.get<ApiToken[]>("/api/v1/me/tokens");
      const byId = all.find((t) => t.id === ref);
      const byName = all.filter((t) => t.name === ref);
      if (!byId && byName.length > 1) throw new CliError(`Several tokens are named "${ref}"; give the id`, ExitCode.CONFLICT);
      const t = byId ?? byName[0];
      if (!t) throw new CliError(`Cannot find token "${ref}"`, ExitCode.NOT_FOUND);
      await api.delete(apiPath`/api/v1/me/tokens/${t.id}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted token "${t.name}"`));
    },
  },
});

export const accountCommands: Record<string, Command> = { login, logout, whoami, passwd, token };
