/** Administrators, roles, sessions and API tokens. */
import { randomUUID } from "node:crypto";
import type { Db, Sql } from "./db.ts";
import { defined, parseJson } from "./json-column.ts";
import { builtinRoles } from "../domain/rbac.ts";

export type RoleRecord = {
  id: string; name: string; description: string; builtin: boolean; permissions: string[];
  createdAt: string; updatedAt: string;
};
export type AdminRecord = {
  id: string; username: string; displayName: string; passwordHash: string; mustChangePassword: boolean;
  roles: string[]; scopes: string[] | null; disabled: boolean; failedLogins: number;
  lockedUntil: string | null; lastLoginAt: string | null; createdAt: string; updatedAt: string;
};
export type SessionRecord = { id: string; adminId: string; createdAt: string; expiresAt: string; lastUsedAt: string };
export type TokenRecord = {
  id: string; tokenHash: string; adminId: string; name: string; roleId: string;
  createdAt: string; expiresAt: string; lastUsedAt: string | null;
};

/** The advisory lock behind every change to administrators and roles (checks and change in one unit). */
export const ADMIN_LOCK = 0x5119_0a01;

// Sign-in failures share the password_failures table with the PXE password, under subjects
// of their own: one per account name, one per (account name, client address), and a row per
// account-wide throttle that started. A client address never contains "|".
const accountSubject = (username: string) => `signin-account:${username}`;
const pairPrefix = (username: string) => `signin-pair:${username}|`;
const throttleSubject = (username: string) => `signin-throttle:${username}`;

type R = Record<string, unknown>;
const role = (r: R): RoleRecord => ({
  id: String(r.id), name: String(r.name), description: String(r.description), builtin: Number(r.builtin) === 1,
  permissions: parseJson<string[]>(r.permissions, []), createdAt: String(r.created_at), updatedAt: String(r.updated_at),
});
const admin = (r: R): AdminRecord => ({
  id: String(r.id), username: String(r.username), displayName: String(r.display_name),
  passwordHash: String(r.password_hash), mustChangePassword: Number(r.must_change_password) === 1,
  roles: parseJson<string[]>(r.roles, []), scopes: r.scopes === null ? null : parseJson<string[] | null>(r.scopes, []),
  disabled: Number(r.disabled) === 1, failedLogins: Number(r.failed_logins),
  lockedUntil: (r.locked_until as string | null) ?? null, lastLoginAt: (r.last_login_at as string | null) ?? null,
  createdAt: String(r.created_at), updatedAt: String(r.updated_at),
});
const session = (r: R): SessionRecord => ({
  id: String(r.id), adminId: String(r.admin_id), createdAt: String(r.created_at),
  expiresAt: String(r.expires_at), lastUsedAt: String(r.last_used_at),
});
const token = (r: R): TokenRecord => ({
  id: String(r.id), tokenHash: String(r.token_hash), adminId: String(r.admin_id), name: String(r.name),
  roleId: String(r.role_id), createdAt: String(r.created_at), expiresAt: String(r.expires_at),
  lastUsedAt: (r.last_used_at as string | null) ?? null,
});

export class AdminStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }

  /** Inserts or refreshes the built-in roles (their permissions follow the code). */
  async syncBuiltinRoles(now: string): Promise<void> {
    for (const r of builtinRoles) {
      await this.#db.run(
        `INSERT INTO roles (id, name, description, builtin, permissions, created_at, updated_at)
         VALUES (?, ?, ?, 1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
           permissions = excluded.permissions, builtin = 1`,
        [r.id, r.name, r.description, JSON.stringify(r.permissions), now, now],
      );
    }
  }

  async listRoles(): Promise<RoleRecord[]> {
    return (await this.#db.all<R>(`SELECT * FROM roles ORDER BY builtin DESC, name`)).map(role);
  }
  async roleById(id: string): Promise<RoleRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM roles WHERE id = ?`, [id]);
    return r && role(r);
  }
  async rolesByIds(ids: readonly string[]): Promise<RoleRecord[]> {
    if (ids.length === 0) return [];
    const rows = await this.#db.all<R>(`SELECT * FROM roles WHERE id IN (${ids.map(() => "?").join(",")})`, ids);
    return rows.map(role);
  }
  async createRole(r: { id: string; name: string; description: string; permissions: string[] }, now: string): Promise<RoleRecord> {
    await this.#db.run(
      `INSERT INTO roles (id, name, description, builtin, permissions, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, ?)`,
      [r.id, r.name, r.description, JSON.stringify(r.permissions), now, now],
    );
    return (await this.roleById(r.id))!;
  }
  async updateRole(id: string, patch: { name?: string; description?: string; permissions?: string[] }, now: string): Promise<void> {
    const cur = await this.roleById(id);
    if (!cur) return;
    await this.#db.run(`UPDATE roles SET name = ?, description = ?, permissions = ?, updated_at = ? WHERE id = ?`, [
      patch.name ?? cur.name, patch.description ?? cur.description, JSON.stringify(patch.permissions ?? cur.permissions), now, id,
    ]);
  }
  async deleteRole(id: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM roles WHERE id = ? AND builtin = 0`, [id])).changes;
  }
  async roleInUse(id: string): Promise<boolean> {
    const admins = await this.#db.all<R>(`SELECT roles FROM admins`);
    if (admins.some((a) => parseJson<string[]>(a.roles, []).includes(id))) return true;
    return !!(await this.#db.get(`SELECT 1 AS x FROM api_tokens WHERE role_id = ?`, [id]));
  }

  async createAdmin(a: {
    username: string; displayName: string; passwordHash: string; mustChangePassword: boolean;
    roles: string[]; scopes: string[] | null;
  }, now: string): Promise<AdminRecord> {
    const id = randomUUID();
    await this.#db.run(
      `INSERT INTO admins (id, username, display_name, password_hash, must_change_password, roles, scopes, disabled,
         failed_logins, locked_until, last_login_at, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, NULL, NULL, ?, ?)`,
      [id, a.username, a.displayName, a.passwordHash, a.mustChangePassword, JSON.stringify(a.roles),
        a.scopes === null ? null : JSON.stringify(a.scopes), now, now],
    );
    return (await this.adminById(id))!;
  }
  async adminById(id: string): Promise<AdminRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM admins WHERE id = ?`, [id]);
    return r && admin(r);
  }
  async adminByUsername(username: string): Promise<AdminRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM admins WHERE username = ?`, [username]);
    return r && admin(r);
  }
  async listAdmins(): Promise<AdminRecord[]> {
    return (await this.#db.all<R>(`SELECT * FROM admins ORDER BY username`)).map(admin);
  }
  async updateAdmin(id: string, patch: Partial<Pick<AdminRecord,
    "displayName" | "passwordHash" | "mustChangePassword" | "roles" | "scopes" | "disabled" | "failedLogins" | "lockedUntil" | "lastLoginAt">>, now: string): Promise<void> {
    const cur = await this.adminById(id);
    if (!cur) return;
    const n = { ...cur, ...defined(patch) };
    await this.#db.run(
      `UPDATE admins SET display_name = ?, password_hash = ?, must_change_password = ?, roles = ?, scopes = ?,
         disabled = ?, failed_logins = ?, locked_until = ?, last_login_at = ?, updated_at = ? WHERE id = ?`,
      [n.displayName, n.passwordHash, n.mustChangePassword, JSON.stringify(n.roles),
        n.scopes === null ? null : JSON.stringify(n.scopes), n.disabled, n.failedLogins, n.lockedUntil, n.lastLoginAt, now, id],
    );
  }
  async deleteAdmin(id: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM admins WHERE id = ?`, [id])).changes;
  }
  async countActiveFullAdmins(): Promise<number> {
    const all = await this.listAdmins();
    return all.filter((a) => !a.disabled && a.roles.includes("full-administrator")).length;
  }

  async createSession(s: SessionRecord): Promise<void> {
    await this.#db.run(`INSERT INTO sessions (id, admin_id, created_at, expires_at, last_used_at) VALUES (?, ?, ?, ?, ?)`, [
      s.id, s.adminId, s.createdAt, s.expiresAt, s.lastUsedAt,
    ]);
  }
  async sessionById(id: string): Promise<SessionRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM sessions WHERE id = ?`, [id]);
    return r && session(r);
  }
  async touchSession(id: string, at: string): Promise<void> {
    await this.#db.run(`UPDATE sessions SET last_used_at = ? WHERE id = ?`, [at, id]);
  }
  async deleteSession(id: string): Promise<void> {
    await this.#db.run(`DELETE FROM sessions WHERE id = ?`, [id]);
  }
  async deleteExpiredSessions(now: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM sessions WHERE expires_at <= ?`, [now])).changes;
  }

  /**
   * Ends every session and API token of an administrator (but `keepSession`, the one making
   * a change of its own password); returns how many of each ended.
   */
  async endCredentialsOf(adminId: string, opts: { keepSession?: string } = {}): Promise<{ sessions: number; tokens: number }> {
    const sessions = opts.keepSession === undefined
      ? await this.#db.run(`DELETE FROM sessions WHERE admin_id = ?`, [adminId])
      : await this.#db.run(`DELETE FROM sessions WHERE admin_id = ? AND id <> ?`, [adminId, opts.keepSession]);
    const tokens = await this.#db.run(`DELETE FROM api_tokens WHERE admin_id = ?`, [adminId]);
    return { sessions: sessions.changes, tokens: tokens.changes };
  }

  /** Records a failed sign-in for an account name (known or not) from a client address. */
  async recordSignInFailure(username: string, ip: string, at: string): Promise<void> {
    await this.#db.run(`INSERT INTO password_failures (subject, at) VALUES (?, ?), (?, ?)`, [accountSubject(username), at, pairPrefix(username) + ip, at]);
  }
  /** Failed sign-ins for an account name after `since`: from one address, or from any. */
  async signInFailuresSince(username: string, since: string, ip?: string): Promise<number> {
    const subject = ip === undefined ? accountSubject(username) : pairPrefix(username) + ip;
    const r = await this.#db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM password_failures WHERE subject = ? AND at > ?`, [subject, since]);
    return Number(r?.n ?? 0);
  }
  /** Forgets the failures of one account name from one address (after it signs in there). */
  async clearSignInFailuresFrom(username: string, ip: string): Promise<void> {
    await this.#db.run(`DELETE FROM password_failures WHERE subject = ?`, [pairPrefix(username) + ip]);
  }
  /** When the latest account-wide sign-in throttle of an account name started, if ever (recently). */
  async lastSignInThrottle(username: string): Promise<string | null> {
    const r = await this.#db.get<{ at: string | null }>(`SELECT MAX(at) AS at FROM password_failures WHERE subject = ?`, [throttleSubject(username)]);
    return r?.at ?? null;
  }
  async recordSignInThrottle(username: string, at: string): Promise<void> {
    await this.#db.run(`INSERT INTO password_failures (subject, at) VALUES (?, ?)`, [throttleSubject(username), at]);
  }
  /** Forgets every sign-in failure and throttle of an account name (unlock, password reset). */
  async clearSignInFailures(username: string): Promise<void> {
    const pairs = pairPrefix(username);
    await this.#db.run(`DELETE FROM password_failures WHERE subject = ? OR subject = ? OR substr(subject, 1, ?) = ?`,
      [accountSubject(username), throttleSubject(username), pairs.length, pairs]);
  }
  /** Drops sign-in failures and throttles older than `before`. */
  async pruneSignInFailures(before: string): Promise<void> {
    await this.#db.run(`DELETE FROM password_failures WHERE at < ? AND substr(subject, 1, 7) = 'signin-'`, [before]);
  }

  async createToken(t: TokenRecord): Promise<void> {
    await this.#db.run(
      `INSERT INTO api_tokens (id, token_hash, admin_id, name, role_id, created_at, expires_at, last_used_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, NULL)`,
      [t.id, t.tokenHash, t.adminId, t.name, t.roleId, t.createdAt, t.expiresAt],
    );
  }
  async tokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM api_tokens WHERE token_hash = ?`, [hash]);
    return r && token(r);
  }
  async tokenById(id: string): Promise<TokenRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM api_tokens WHERE id = ?`, [id]);
    return r && token(r);
  }
  async listTokens(adminId?: string): Promise<TokenRecord[]> {
    const rows = adminId
      ? await this.#db.all<R>(`SELECT * FROM api_tokens WHERE admin_id = ? ORDER BY created_at`, [adminId])
      : await this.#db.all<R>(`SELECT * FROM api_tokens ORDER BY created_at`);
    return rows.map(token);
  }
  async touchToken(id: string, at: string): Promise<void> {
    await this.#db.run(`UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, [at, id]);
  }
  async deleteToken(id: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM api_tokens WHERE id = ?`, [id])).changes;
  }
}
