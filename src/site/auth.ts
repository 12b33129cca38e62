/**
 * Administrator authentication: password sign-in with throttling and per-address rate
 * limiting, expiring sessions, and API tokens limited to a role. Tokens and sessions are
 * random 256-bit values stored only as SHA-256 hashes.
 *
 * Sign-in never tells an attacker more than "no": an unknown name, a wrong password, a
 * disabled account and a throttled attempt get the same 401 after the same Argon2 work; only
 * the audit log says which. Failures are counted per (account name, client address) and per
 * account name; neither ever locks an account: a correct password from an address that has
 * not failed gets in after at most ACCOUNT_THROTTLE_MS, whatever an attacker does elsewhere.
 */
import type { IncomingMessage } from "node:http";
import { hashPassword, hashToken, newToken, verifyPassword } from "../security/password.ts";
import { stores } from "../storage/stores.ts";
import type { AdminRecord } from "../storage/admin-store.ts";
import { permissionsOf, type Permission } from "../domain/rbac.ts";
import { SlipwayError } from "../errors.ts";
import type { Principal } from "./principal.ts";
import type { Site } from "./site.ts";

export const SESSION_LIFETIME_MS = 8 * 3600_000;
export const SESSION_IDLE_MS = 60 * 60_000;
/** Failures of one account name from one address before that address is throttled for it. */
export const ADDRESS_FAILURES = 5;
export const ADDRESS_WINDOW_MS = 15 * 60_000;
/** Failures of one account name from all addresses before every attempt on it is throttled… */
export const ACCOUNT_FAILURES = 20;
export const ACCOUNT_WINDOW_MS = 5 * 60_000;
/** …for this long, after which it stays open at least as long again before throttling anew. */
export const ACCOUNT_THROTTLE_MS = 2 * 60_000;
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

const dummyHashes = new Map<string, Promise<string>>();
/** A hash of a password no one knows, made with the site's cost, to verify against when there is nothing real to check. */
function dummyHash(cost: { memoryKiB?: number; passes?: number } = {}): Promise<string> {
  const key = JSON.stringify(cost);
  let h = dummyHashes.get(key);
  if (!h) dummyHashes.set(key, (h = hashPassword(`no-such-account-${newToken("x")}`, cost)));
  return h;
}

export type Throttle = { by: "address" | "account"; reason: string } | null;

/**
 * Whether attempts on an account name from an address are throttled now. The same queries
 * run whether or not the account exists. An account-wide throttle lasts ACCOUNT_THROTTLE_MS
 * and is followed by as long a time in which only per-address throttles apply, so that
 * someone spraying guesses from many addresses cannot keep the rightful owner out.
 */
async function throttleOf(site: Site, username: string, ip: string, now: Date): Promise<Throttle> {
  const s = stores(site.db).admins;
  const t = now.getTime();
  const iso = (ms: number) => new Date(ms).toISOString();
  const last = await s.lastSignInThrottle(username);
  const lastStart = last === null ? null : Date.parse(last);
  if (lastStart !== null && t < lastStart + ACCOUNT_THROTTLE_MS) {
    return { by: "account", reason: `account throttled until ${iso(lastStart + ACCOUNT_THROTTLE_MS)}` };
  }
  const open = lastStart !== null && t < lastStart + 2 * ACCOUNT_THROTTLE_MS;
  if (!open) {
    const since = Math.max(t - ACCOUNT_WINDOW_MS, lastStart === null ? 0 : lastStart + ACCOUNT_THROTTLE_MS);
    const n = await s.signInFailuresSince(username, iso(since));
    if (n >= ACCOUNT_FAILURES) {
      await s.recordSignInThrottle(username, now.toISOString());
      await site.audit.append({ actor: "system", action: "session.throttle", object: null, outcome: "success",
        details: { username, failures: n, minutes: ACCOUNT_THROTTLE_MS / 60_000 } });
      return { by: "account", reason: `account throttled until ${iso(t + ACCOUNT_THROTTLE_MS)} after ${n} failures` };
    }
  }
  const fromHere = await s.signInFailuresSince(username, iso(t - ADDRESS_WINDOW_MS), ip);
  if (fromHere >= ADDRESS_FAILURES) return { by: "address", reason: `${fromHere} failures from this address in ${ADDRESS_WINDOW_MS / 60_000} minutes` };
  return null;
}

/** When an account's account-wide sign-in throttle ends, if one is in force now. */
export async function signInThrottledUntil(site: Site, username: string): Promise<string | null> {
  const last = await stores(site.db).admins.lastSignInThrottle(username);
  if (last === null) return null;
  const until = Date.parse(last) + ACCOUNT_THROTTLE_MS;
  return until > site.now().getTime() ? new Date(until).toISOString() : null;
}

/**
 * Checks a password for an account name, throttled as sign-in is. Every refusal (unknown
 * name, wrong password, disabled account, throttled) costs one Argon2 verification and
 * records nothing the caller sees; `refused` is the reason to audit, null when the password
 * is right and the account usable.
 */
export async function checkPassword(site: Site, username: string, password: string, ip: string): Promise<{ admin: AdminRecord | undefined; refused: string | null }> {
  const now = site.now();
  const s = stores(site.db).admins;
  const admin = await s.adminByUsername(username);
  const throttle = await throttleOf(site, username, ip, now);
  // One verification on every path: against the account's hash when there is one to check,
  // otherwise against a hash no password matches, made with the same cost.
  const hash = admin && !throttle ? admin.passwordHash : await dummyHash(site.passwordCost);
  const ok = await verifyPassword(password, hash);
  if (admin && !throttle && ok && !admin.disabled) return { admin, refused: null };
  const refused = throttle ? `throttled: ${throttle.reason}` : !admin ? "unknown user"
    : admin.disabled ? (ok ? "account disabled" : "account disabled, wrong password") : "wrong password";
  // A throttled attempt checked nothing, so it is not counted (a throttle cannot feed itself).
  if (!throttle) await s.recordSignInFailure(username, ip, now.toISOString());
  if (now.getTime() - lastPrune > 60_000 || now.getTime() < lastPrune) {
    lastPrune = now.getTime();
    await s.pruneSignInFailures(new Date(now.getTime() - 3600_000).toISOString());
  }
  return { admin, refused };
}
let lastPrune = 0;

export type LoginResult = { token: string; expiresAt: string; mustChangePassword: boolean; adminId: string };

export async function login(site: Site, username: string, password: string, ip: string): Promise<LoginResult> {
  const { admin, refused } = await checkPassword(site, username, password, ip);
  if (refused !== null || !admin) {
    await site.audit.append({ actor: `admin:${username}`, action: "session.login", outcome: "failure",
      object: admin ? `admin:${admin.id}` : null, details: { reason: refused, ip } });
    throw new SlipwayError("LOGIN_FAILED");
  }
  const now = site.now();
  const token = newToken("sws");
  const expiresAt = new Date(now.getTime() + SESSION_LIFETIME_MS).toISOString();
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    await t.admins.updateAdmin(admin.id, { lastLoginAt: now.toISOString() }, now.toISOString());
    await t.admins.clearSignInFailuresFrom(username, ip);
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
