/**
 * Administrator authentication: password sign-in with lockout and per-address rate
 * limiting, expiring sessions, and API tokens limited to a role. Tokens and sessions are
 * random 256-bit values stored only as SHA-256 hashes.
 */
import type { IncomingMessage } from "node:http";
import { hashPassword, hashToken, newToken, verifyPassword } from "../../security/password.ts";
import { stores } from "../../storage/stores.ts";
import { permissionsOf, type Permission } from "../../domain/rbac.ts";
import { SlipwayError } from "../../errors.ts";
import type { Principal } from "./http.ts";
import type { Site } from "./site.ts";

export const SESSION_LIFETIME_MS = 8 * 3600_000;
export const SESSION_IDLE_MS = 60 * 60_000;
export const LOCKOUT_THRESHOLD = 5;
export const LOCKOUT_MS = 15 * 60_000;
const TOUCH_EVERY_MS = 60_000;

/** A sliding-window counter per key (client address), held in memory. */
export class RateLimiter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #hits = new Map<string, number[]>();
  readonly #now: () => number;
  constructor(limit: number, windowMs: number, now: () => number = Date.now) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
  }
  /** Records a hit; false when the key is over its limit. */
  hit(key: string): boolean {
    const t = this.#now();
    const recent = (this.#hits.get(key) ?? []).filter((x) => x > t - this.#windowMs);
    if (recent.length >= this.#limit) {
      this.#hits.set(key, recent);
      return false;
    }
    recent.push(t);
    this.#hits.set(key, recent);
    if (this.#hits.size > 100_000) this.#hits.delete(this.#hits.keys().next().value!);
    return true;
  }
}

let dummyHash: Promise<string> | null = null;

export type LoginResult = { token: string; expiresAt: string; mustChangePassword: boolean; adminId: string };

export async function login(site: Site, username: string, password: string, ip: string): Promise<LoginResult> {
  const now = site.now();
  const s = stores(site.db);
  const admin = await s.admins.adminByUsername(username);
  const fail = async (reason: string, code: "LOGIN_FAILED" | "ACCOUNT_LOCKED") => {
    await site.audit.append({ actor: `admin:${username}`, action: "session.login", outcome: "failure",
      object: admin ? `admin:${admin.id}` : null, details: { reason, ip } });
    throw new SlipwayError(code);
  };
  if (!admin) {
    // Spend the same effort as a real check so timing does not reveal which names exist.
    dummyHash ??= hashPassword("not-a-real-password-0000", site.passwordCost);
    await verifyPassword(password, await dummyHash);
    return fail("unknown user", "LOGIN_FAILED");
  }
  if (admin.lockedUntil && admin.lockedUntil > now.toISOString()) return fail("account locked", "ACCOUNT_LOCKED");
  const ok = await verifyPassword(password, admin.passwordHash);
  if (!ok || admin.disabled) {
    const failures = admin.failedLogins + 1;
    const lock = failures >= LOCKOUT_THRESHOLD;
    await s.admins.updateAdmin(admin.id, {
      failedLogins: lock ? 0 : failures,
      lockedUntil: lock ? new Date(now.getTime() + LOCKOUT_MS).toISOString() : admin.lockedUntil,
    }, now.toISOString());
    if (lock) {
      await site.audit.append({ actor: "system", action: "admin.locked", object: `admin:${admin.id}`, outcome: "success",
        details: { minutes: LOCKOUT_MS / 60_000 } });
    }
    return fail(admin.disabled ? "account disabled" : "wrong password", "LOGIN_FAILED");
  }
  const token = newToken("sws");
  const expiresAt = new Date(now.getTime() + SESSION_LIFETIME_MS).toISOString();
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    await t.admins.updateAdmin(admin.id, { failedLogins: 0, lockedUntil: null, lastLoginAt: now.toISOString() }, now.toISOString());
    await t.admins.createSession({ id: hashToken(token), adminId: admin.id, createdAt: now.toISOString(), expiresAt, lastUsedAt: now.toISOString() });
    await site.audit.append({ actor: `admin:${admin.username}`, action: "session.login", object: `admin:${admin.id}`, details: { ip } }, tx);
  });
  return { token, expiresAt, mustChangePassword: admin.mustChangePassword, adminId: admin.id };
}

function bearer(req: IncomingMessage): string | null {
  const h = req.headers.authorization;
  if (typeof h !== "string") return null;
  const m = /^Bearer ([A-Za-z0-9_-]{10,200})$/.exec(h.trim());
  return m ? m[1] : null;
}

/** Resolves the caller from its bearer token; null when absent, unknown, expired or disabled. */
export async function authenticate(site: Site, req: IncomingMessage): Promise<Principal | null> {
  const token = bearer(req);
  if (!token) return null;
  const now = site.now();
  const nowIso = now.toISOString();
  const s = stores(site.db);
  const id = hashToken(token);
  if (token.startsWith("sws_")) {
    const session = await s.admins.sessionById(id);
    if (!session) return null;
    const idle = now.getTime() - Date.parse(session.lastUsedAt) > SESSION_IDLE_MS;
    if (session.expiresAt <= nowIso || idle) {
      await s.admins.deleteSession(id);
      return null;
    }
    const admin = await s.admins.adminById(session.adminId);
    if (!admin || admin.disabled) return null;
    if (now.getTime() - Date.parse(session.lastUsedAt) > TOUCH_EVERY_MS) await s.admins.touchSession(id, nowIso);
    const roles = await s.admins.rolesByIds(admin.roles);
    return { adminId: admin.id, username: admin.username, permissions: permissionsOf(roles), scopes: admin.scopes,
      via: "session", credentialId: id, mustChangePassword: admin.mustChangePassword };
  }
  if (token.startsWith("swt_")) {
    const t = await s.admins.tokenByHash(id);
    if (!t || t.expiresAt <= nowIso) return null;
    const admin = await s.admins.adminById(t.adminId);
    if (!admin || admin.disabled || admin.mustChangePassword) return null;
    const [own, limit] = [await s.admins.rolesByIds(admin.roles), await s.admins.rolesByIds([t.roleId])];
    // A token never grants more than its owner has, nor more than its role.
    const ownSet = permissionsOf(own);
    const perms = new Set<Permission>([...permissionsOf(limit)].filter((p) => ownSet.has(p)));
    if (!t.lastUsedAt || now.getTime() - Date.parse(t.lastUsedAt) > TOUCH_EVERY_MS) await s.admins.touchToken(t.id, nowIso);
    return { adminId: admin.id, username: admin.username, permissions: perms, scopes: admin.scopes,
      via: "token", credentialId: t.id, mustChangePassword: false };
  }
  return null;
}
