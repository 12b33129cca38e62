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
import type { Site } from "./site.ts";
import { stores } from "../storage/stores.ts";
import { hashPassword, hashToken, newToken, verifyPassword } from "../security/password.ts";
import type { Sql } from "../storage/db.ts";
import { PXE_GUESS_LOCK } from "../storage/enrollment-store.ts";

export const BOOT_TOKEN_TTL_SECONDS = 10 * 60;
/** An unused token is handed out again only while this much of its life is left (time to boot and enroll). */
export const BOOT_TOKEN_REUSE_MIN_SECONDS = 5 * 60;
/** Expired boot tokens are kept this long (so a late enrollment is refused as "expired", not "unknown"), then deleted. */
export const BOOT_TOKEN_KEEP_EXPIRED_MS = 60 * 60_000;
export const PXE_PASSWORD_SETTING = "pxe.password";
/** Wrong PXE passwords one source address may make per window before it is refused unchecked. */
export const PXE_FAILURE_LIMIT = 5;
/** The sliding window over which wrong PXE passwords are counted. */
export const PXE_FAILURE_WINDOW_MS = 15 * 60_000;
/**
 * Wrong PXE passwords site-wide per window after which an address that already guessed wrong
 * in the window is refused unchecked, and a new address gets one guess (and an alert is raised).
 */
export const PXE_SITE_FAILURE_BUDGET = 50;
/**
 * Wrong PXE passwords site-wide per window after which none is checked, whoever asks: the
 * absolute bound on online guessing, whatever the number of addresses (IPv6 gives a link
 * plenty). Above BUDGET + 254, so an attacker using every free address of one IPv4 /24 cannot
 * reach it: it can at worst spend one guess from each address of its own link, never stop
 * machines on other links from enrolling.
 */
export const PXE_SITE_FAILURE_CEILING = 400;

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
  return stores(site.db).settings.get(PXE_PASSWORD_SETTING);
}

/** Sets (or with null, clears) the PXE password; only its Argon2id verifier is kept. */
export async function setPxePassword(site: Site, password: string | null, tx?: Sql): Promise<void> {
  const db = tx ?? site.db;
  if (password === null) {
    await stores(db).settings.delete(PXE_PASSWORD_SETTING);
    return;
  }
  const hash = await hashPassword(password, site.passwordCost);
  await stores(db).settings.set(PXE_PASSWORD_SETTING, hash);
}

/** What one enrollment's PXE password check decided; `reason` is for the audit log (never the password). */
export type PxeCheck =
  | { result: "ok" }
  | { result: "required"; reason: string }
  | { result: "wrong"; reason: string }
  | { result: "locked"; reason: string; message: string };

/** Who a PXE password guess comes from and with what: the client's address, the boot token's id, its MAC. */
export type PxeGuess = { source: string; tokenId: string; mac: string };

/**
 * Checks a PXE password inside TLS. Every guess is counted under its source address, its
 * boot token, its machine and the site, in the database (so every management point shares
 * the counts), over a sliding PXE_FAILURE_WINDOW_MS. Only the source address and the
 * site's total decide, because a MAC and a boot token are public — anyone on the link can
 * ask for a machine's boot script and gets the same unused token the machine got — so a
 * limit on either would let a stranger lock the real machine out (issue #11). A guess is
 * refused unchecked ("locked") when:
 *  - the site has PXE_SITE_FAILURE_CEILING wrong passwords in the window: nobody is checked;
 *  - its address has PXE_FAILURE_LIMIT wrong passwords in the window;
 *  - the site has PXE_SITE_FAILURE_BUDGET in the window and its address has any: from then
 *    on an address gets one guess per window, so the budget spent, the real machine (whose
 *    own address guessed nothing wrong) still enrolls with the right password.
 * So in any window at most min(CEILING, BUDGET + one per further address) wrong passwords are
 * checked, at most PXE_FAILURE_LIMIT per address. Crossing the budget (and the ceiling) is
 * alerted in the audit log once per window.
 */
export async function checkPxePassword(site: Site, guess: PxeGuess, given: string | undefined): Promise<PxeCheck> {
  const hash = await pxePasswordHash(site);
  if (!hash) return { result: "ok" };
  const now = site.now();
  const since = new Date(now.getTime() - PXE_FAILURE_WINDOW_MS).toISOString();
  const g = { ...guess, source: sourceAddress(guess.source) };
  // Counting and reserving the guess is one step (under a lock across processes), so guesses
  // sent at once from one address or many cannot all slip under a limit before any is counted.
  const first = await site.db.transaction(async (tx) => {
    const s = stores(tx).enrollment;
    const n = await s.pxeFailures(g.source, since);
    const locked = lockedBy(n);
    if (locked) return locked;
    if (given === undefined || given === "") return { result: "required", reason: "PXE password missing" } as const;
    return { result: "reserved", guess: await s.reservePxeGuess(g, now.toISOString(), randomUUID()), n } as const;
  }, { lockKey: PXE_GUESS_LOCK });
  if (first.result !== "reserved") return first;
  const s = stores(site.db).enrollment;
  // A guess whose check fails midway stays counted as wrong.
  if (await verifyPassword(given!, hash)) {
    await s.releasePxeGuess(first.guess);
    return { result: "ok" };
  }
  const of = await s.pxeFailuresOf(g, since);
  await raisePxeAlerts(site, now, since);
  await s.pruneFailures(new Date(now.getTime() - 24 * 3600_000).toISOString());
  return { result: "wrong", reason: `wrong PXE password (in ${PXE_FAILURE_WINDOW_MS / 60_000} minutes: ${first.n.source + 1} of ${PXE_FAILURE_LIMIT} from this address, `
    + `${of.token} with this boot token, ${of.machine} against this machine, ${first.n.site + 1} site-wide of a budget of ${PXE_SITE_FAILURE_BUDGET})` };
}

/** Why a guess is refused without being checked, given the window's counts, or null. */
function lockedBy(n: { source: number; site: number }): PxeCheck | null {
  const minutes = PXE_FAILURE_WINDOW_MS / 60_000;
  if (n.site >= PXE_SITE_FAILURE_CEILING) {
    return { result: "locked", reason: `PXE password locked out: ${n.site} wrong PXE passwords site-wide in ${minutes} minutes reached the ceiling of ${PXE_SITE_FAILURE_CEILING}; no PXE password is checked until fewer`,
      message: "Cannot enroll: this site has had too many wrong PXE passwords and checks none for now; wait and try again" };
  }
  if (n.source >= PXE_FAILURE_LIMIT) {
    return { result: "locked", reason: `PXE password locked out: ${n.source} wrong PXE passwords from this address in ${minutes} minutes`,
      message: `Cannot enroll: too many wrong PXE passwords from this address; wait up to ${minutes} minutes and try again` };
  }
  if (n.site >= PXE_SITE_FAILURE_BUDGET && n.source > 0) {
    return { result: "locked", reason: `PXE password locked out: the site-wide budget is spent (${n.site} wrong PXE passwords in ${minutes} minutes) and this address made ${n.source} of them`,
      message: `Cannot enroll: too many wrong PXE passwords on this site, one of them from this address; wait up to ${minutes} minutes and try again` };
  }
  return null;
}

/** One audit alert per window and level when wrong PXE passwords reach the site's budget or its ceiling. */
async function raisePxeAlerts(site: Site, now: Date, since: string): Promise<void> {
  for (const [level, limit] of [["budget", PXE_SITE_FAILURE_BUDGET], ["ceiling", PXE_SITE_FAILURE_CEILING]] as const) {
    await site.db.transaction(async (tx) => {
      const s = stores(tx).enrollment;
      if ((await s.pxeSiteFailures(since)) < limit || (await s.pxeAlertSince(level, since))) return;
      const spread = await s.pxeSpread(since);
      await s.recordPxeAlert(level, now.toISOString());
      await site.audit.append({ actor: "system", action: "pxe-password.alert", object: null, outcome: "success",
        details: { reached: level, limit, windowMinutes: PXE_FAILURE_WINDOW_MS / 60_000, ...spread } }, tx);
    }, { lockKey: PXE_GUESS_LOCK });
  }
}

/** The address a guess came from, IPv4-mapped IPv6 written as IPv4 (one address, one count). */
function sourceAddress(ip: string): string {
  const a = ip.trim().toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  return mapped ? mapped[1] : a || "unknown";
}
