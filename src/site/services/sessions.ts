/**
 * Sign-in, sign-out, and the signed-in administrator's own account and API tokens. Sign-in is
 * limited per client address (on top of the per-account throttles in auth.ts); a password
 * change is checked and throttled like a sign-in and ends every API token and every other
 * session of the account; an API token is limited to one of the holder's roles, made only from
 * a session, and shown once. Each change is audited in its transaction; refusals are
 * SlipwayErrors.
 */
import { randomUUID } from "node:crypto";
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import { hashPassword, hashToken, newToken, passwordProblems } from "../../security/password.ts";
import { SlipwayError } from "../../errors.ts";
import { checkPassword, login, type LoginResult, type RateLimiter } from "../auth.ts";
import { adminActor } from "./common.ts";
import { deleteToken, listAdminTokens, tokenSummary, type TokenSummary } from "./admins.ts";

/** Signs in from `ip`, within the address's budget in `limiter`; a refusal for the budget is audited. */
export async function signIn(site: Site, limiter: RateLimiter, b: { username: string; password: string; ip: string }): Promise<LoginResult> {
  if (!limiter.hit(b.ip)) {
    await site.audit.append({ actor: `admin:${b.username}`, action: "session.login", outcome: "denied", details: { reason: "rate limited", ip: b.ip } });
    throw new SlipwayError("RATE_LIMITED", "Cannot sign in: too many attempts from this address; wait a minute");
  }
  return login(site, b.username, b.password, b.ip);
}

/** Ends the session the caller signed in with (an API token is deleted instead). Audited session.logout. */
export async function signOut(site: Site, p: Principal): Promise<void> {
  if (p.via !== "session") throw new SlipwayError("BAD_REQUEST", "Cannot sign out an API token; delete the token instead");
  await stores(site.db).admins.deleteSession(p.credentialId);
  await site.audit.append({ actor: adminActor(p), action: "session.logout", object: `admin:${p.adminId}` });
}

/** The signed-in administrator, their roles, permissions and scopes. */
export async function me(site: Site, p: Principal) {
  const a = await stores(site.db).admins.adminById(p.adminId);
  if (!a) throw new SlipwayError("UNAUTHENTICATED");
  return { id: a.id, username: a.username, displayName: a.displayName, roles: a.roles, scopes: a.scopes,
    permissions: [...p.permissions].sort(), via: p.via, mustChangePassword: a.mustChangePassword };
}

/**
 * Changes the caller's own password after checking the current one (throttled like a sign-in;
 * a wrong one is audited as a failure). Every API token and every other session of the account
 * ends; the session that made the change stays. Audited admin.password.change.
 */
export async function changeOwnPassword(site: Site, p: Principal, b: { currentPassword: string; newPassword: string; ip: string }): Promise<void> {
  const a = (await stores(site.db).admins.adminById(p.adminId))!;
  const check = await checkPassword(site, a.username, b.currentPassword, b.ip);
  if (check.refused !== null) {
    await site.audit.append({ actor: adminActor(p), action: "admin.password.change", object: `admin:${a.id}`, outcome: "failure", details: { reason: check.refused, ip: b.ip } });
    throw new SlipwayError("LOGIN_FAILED", "Cannot change the password: the current password is wrong");
  }
  const problems = passwordProblems(b.newPassword, { username: a.username });
  if (b.newPassword === b.currentPassword) problems.push("must differ from the current password");
  if (problems.length) throw new SlipwayError("WEAK_PASSWORD", `Cannot use that password: ${problems.join("; ")}`, { problems });
  const hash = await hashPassword(b.newPassword, site.passwordCost);
  await site.db.transaction(async (tx) => {
    const t = stores(tx);
    await t.admins.updateAdmin(a.id, { passwordHash: hash, mustChangePassword: false }, site.now().toISOString());
    // Every API token and every other session of this account ends; the session that
    // proved the current password and made the change stays (a token making it ends too).
    const ended = await t.admins.endCredentialsOf(a.id, p.via === "session" ? { keepSession: p.credentialId } : {});
    await site.audit.append({ actor: adminActor(p), action: "admin.password.change", object: `admin:${a.id}`, details: { ended } }, tx);
  });
}

/** The caller's own API tokens. */
export async function ownTokens(site: Site, p: Principal): Promise<TokenSummary[]> {
  return listAdminTokens(site, p.adminId);
}

/** Makes an API token limited to one of the caller's roles; the token is answered once. Audited token.create. */
export async function createOwnToken(site: Site, p: Principal, b: { name: string; role: string; expiresInDays: number }): Promise<TokenSummary & { token: string }> {
  if (p.via !== "session") throw new SlipwayError("FORBIDDEN", "Not allowed: API tokens cannot create API tokens");
  const a = (await stores(site.db).admins.adminById(p.adminId))!;
  if (!a.roles.includes(b.role)) {
    throw new SlipwayError("VALIDATION", `Cannot limit a token to role "${b.role}": you do not hold it`, [{ path: "role", message: "not one of your roles" }]);
  }
  const token = newToken("swt");
  const now = site.now();
  const rec = { id: randomUUID(), tokenHash: hashToken(token), adminId: a.id, name: b.name, roleId: b.role,
    createdAt: now.toISOString(), expiresAt: new Date(now.getTime() + b.expiresInDays * 86_400_000).toISOString(), lastUsedAt: null };
  await site.db.transaction(async (tx) => {
    await stores(tx).admins.createToken(rec);
    await site.audit.append({ actor: adminActor(p), action: "token.create", object: `token:${rec.id}`, details: { name: rec.name, role: rec.roleId, expiresAt: rec.expiresAt } }, tx);
  });
  return { ...tokenSummary(rec), token };
}

/** Deletes one of the caller's own API tokens. Audited token.delete. */
export async function deleteOwnToken(site: Site, p: Principal, tokenId: string): Promise<void> {
  await deleteToken(site, p, p.adminId, tokenId, "token.delete");
}
