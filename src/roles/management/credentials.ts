/**
 * Enrollment credentials. A boot token is what the PXE responder puts on a machine's kernel
 * command line: unguessable (256 bits), bound to the machine's MAC and SMBIOS UUID, single use,
 * minutes long, and useless without the PXE password when one is set — because the password
 * is only ever checked here, inside TLS, never derivable from anything served before.
 * A media credential rides inside password-protected boot media and allows a bounded number
 * of enrollments.
 *
 * A boot token is HMAC-SHA256(boot-token key, credential id), the key derived (HKDF) from the
 * site's signing key: as unguessable as a random one without the site's keys, stored only as
 * its SHA-256 like every credential, and yet reproducible by any site process — so a machine
 * asking for its boot script again gets the same unused token back instead of a new one.
 */
import { createHmac, hkdfSync, randomUUID, type KeyObject } from "node:crypto";
import type { Site } from "../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { hashPassword, hashToken, newToken, verifyPassword } from "../../security/password.ts";
import type { Sql } from "../../storage/db.ts";

export const BOOT_TOKEN_TTL_SECONDS = 10 * 60;
/** An unused token is handed out again only while this much of its life is left (time to boot and enroll). */
export const BOOT_TOKEN_REUSE_MIN_SECONDS = 5 * 60;
/** Expired boot tokens are kept this long (so a late enrollment is refused as "expired", not "unknown"), then deleted. */
export const BOOT_TOKEN_KEEP_EXPIRED_MS = 60 * 60_000;
export const PXE_PASSWORD_SETTING = "pxe.password";
export const PXE_FAILURE_LIMIT = 5;
export const PXE_FAILURE_WINDOW_MS = 15 * 60_000;

const bootKeys = new WeakMap<KeyObject, Buffer>();

/** The boot-token key: its own key, derived from the signing key, used for nothing else. */
function bootTokenKey(site: Site): Buffer {
  let key = bootKeys.get(site.keys.signingKey);
  if (!key) {
    const ikm = site.keys.signingKey.export({ type: "pkcs8", format: "der" });
    key = Buffer.from(hkdfSync("sha256", ikm, "slipway", "slipway boot-token v1", 32));
    bootKeys.set(site.keys.signingKey, key);
  }
  return key;
}

/** The token of one boot-token credential (never stored: only its hash is). */
function bootTokenOf(site: Site, credentialId: string): string {
  return `swb_${createHmac("sha256", bootTokenKey(site)).update(`boot-token:${credentialId}`).digest("base64url")}`;
}

type BootTokenFor = { deviceId: string; mac: string; smbiosUuid: string | null; ttlSeconds?: number };

/** Mints a one-time boot token for a known device on the link it booted from. */
export async function issueBootToken(site: Site, opts: BootTokenFor): Promise<{ token: string; expiresAt: string; id: string }> {
  const id = randomUUID();
  const token = bootTokenOf(site, id);
  const now = site.now();
  const expiresAt = new Date(now.getTime() + (opts.ttlSeconds ?? BOOT_TOKEN_TTL_SECONDS) * 1000).toISOString();
  await stores(site.db).enrollment.deleteExpired(new Date(now.getTime() - BOOT_TOKEN_KEEP_EXPIRED_MS).toISOString()); // tokens expired over an hour ago
  await stores(site.db).enrollment.add({
    id, kind: "boot-token", name: `boot ${opts.mac}`, secretHash: hashToken(token), deviceId: opts.deviceId,
    mac: opts.mac, smbiosUuid: opts.smbiosUuid, usesLeft: 1, expiresAt, createdBy: "pxe", createdAt: now.toISOString(),
  });
  return { token, expiresAt, id };
}

/**
 * The boot token for a machine asking for its boot script: the unused, unrevoked one minted
 * for this very device, MAC and SMBIOS UUID while at least BOOT_TOKEN_REUSE_MIN_SECONDS of it
 * are left (`reused`), or else a new one. Reuse never extends a token's life or its uses.
 */
export async function bootTokenFor(site: Site, opts: BootTokenFor): Promise<{ token: string; expiresAt: string; id: string; reused: boolean }> {
  const now = site.now();
  const until = new Date(now.getTime() + BOOT_TOKEN_REUSE_MIN_SECONDS * 1000).toISOString();
  const found = await stores(site.db).enrollment.unusedBootToken({ deviceId: opts.deviceId, mac: opts.mac, smbiosUuid: opts.smbiosUuid, validUntil: until });
  if (found) {
    const token = bootTokenOf(site, found.id);
    // Only a token this scheme made can be reproduced; one minted at random before it cannot.
    if (hashToken(token) === found.secretHash) return { token, expiresAt: found.expiresAt, id: found.id, reused: true };
  }
  return { ...(await issueBootToken(site, opts)), reused: false };
}

/** Creates a media credential; the secret is returned once and stored only as a hash. */
export async function createMediaCredential(site: Site, opts: { name: string; uses: number; expiresInHours: number; createdBy: string }, tx?: Sql) {
  const secret = newToken("swm");
  const now = site.now();
  const rec = {
    id: randomUUID(), kind: "media" as const, name: opts.name, secretHash: hashToken(secret), deviceId: null, mac: null, smbiosUuid: null,
    usesLeft: opts.uses, expiresAt: new Date(now.getTime() + opts.expiresInHours * 3600_000).toISOString(), createdBy: opts.createdBy,
    createdAt: now.toISOString(),
  };
  await stores(tx ?? site.db).enrollment.add(rec);
  return { ...rec, secret };
}

export async function pxePasswordHash(site: Site): Promise<string | null> {
  const r = await site.db.get<{ value: string }>(`SELECT value FROM site_settings WHERE key = ?`, [PXE_PASSWORD_SETTING]);
  return r?.value ?? null;
}

/** Sets (or with null, clears) the PXE password; only its Argon2id verifier is kept. */
export async function setPxePassword(site: Site, password: string | null, tx?: Sql): Promise<void> {
  const db = tx ?? site.db;
  if (password === null) {
    await db.run(`DELETE FROM site_settings WHERE key = ?`, [PXE_PASSWORD_SETTING]);
    return;
  }
  const hash = await hashPassword(password, site.passwordCost);
  await db.run(`INSERT INTO site_settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [PXE_PASSWORD_SETTING, hash]);
}

export type PxeCheck = "ok" | "required" | "wrong" | "locked";

/**
 * Checks a PXE password for one machine: at most PXE_FAILURE_LIMIT wrong guesses per
 * machine per window, counted in the database (so every management point shares them).
 */
export async function checkPxePassword(site: Site, machine: string, given: string | undefined): Promise<PxeCheck> {
  const hash = await pxePasswordHash(site);
  if (!hash) return "ok";
  const s = stores(site.db).enrollment;
  const now = site.now();
  const since = new Date(now.getTime() - PXE_FAILURE_WINDOW_MS).toISOString();
  if ((await s.failuresSince(machine, since)) >= PXE_FAILURE_LIMIT) return "locked";
  if (given === undefined || given === "") return "required";
  if (await verifyPassword(given, hash)) return "ok";
  await s.recordFailure(machine, now.toISOString());
  await s.pruneFailures(new Date(now.getTime() - 24 * 3600_000).toISOString());
  return "wrong";
}
