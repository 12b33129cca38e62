/**
 * The site: its database, keys, audit log and clock, opened from a data folder. Every
 * route and command works through this one object.
 */
import fs from "node:fs";
import path from "node:path";
import { openDb, type Db } from "../storage/db.ts";
import { migrate } from "../storage/migrations.ts";
import { AuditStore } from "../storage/audit-store.ts";
import { stores } from "../storage/stores.ts";
import { initSiteKeys, loadSiteKeys, type SiteKeys } from "../security/site-keys.ts";
import { generatePassword, hashPassword, passwordProblems } from "../security/password.ts";
import { createLogger, type Logger } from "../log.ts";

export type Site = {
  dataDir: string;
  db: Db;
  keys: SiteKeys;
  audit: AuditStore;
  log: Logger;
  now: () => Date;
  /** argon2 cost; tests may lower it, production keeps the default. */
  passwordCost?: { memoryKiB: number; passes: number };
  close(): Promise<void>;
};

export type OpenSiteOptions = {
  dataDir: string;
  /** `postgres://…`; otherwise SQLite at DIR/slipway.db. */
  databaseUrl?: string;
  log?: Logger;
  now?: () => Date;
  passwordCost?: { memoryKiB: number; passes: number };
  /** false: change nothing in the database (no migrations, no role refresh) — for offline checks. */
  maintain?: boolean;
};

export function siteExists(dataDir: string): boolean {
  return fs.existsSync(path.join(dataDir, "keys", "signing.key"));
}

function databaseTarget(opts: OpenSiteOptions) {
  return { url: opts.databaseUrl, sqlitePath: path.join(opts.dataDir, "slipway.db") };
}

/** Opens an initialized site: loads keys, runs migrations, refreshes built-in roles. */
export async function openSite(opts: OpenSiteOptions): Promise<Site> {
  const log = opts.log ?? createLogger();
  const now = opts.now ?? (() => new Date());
  const keys = await loadSiteKeys(opts.dataDir);
  const db = await openDb(databaseTarget(opts));
  try {
    if (opts.maintain !== false) {
      const applied = await migrate(db);
      if (applied.length) log.info("database migrated", { versions: applied, database: db.description });
      await stores(db).admins.syncBuiltinRoles(now().toISOString());
    }
  } catch (err) {
    await db.close();
    throw err;
  }
  const audit = new AuditStore({ db, signingKey: keys.signingKey, dataDir: opts.dataDir, now });
  return { dataDir: opts.dataDir, db, keys, audit, log, now, passwordCost: opts.passwordCost, close: () => db.close() };
}

export type InitResult = { site: Site; adminPassword: string; generated: boolean };

/**
 * Creates a site in an empty data folder: keys, database, built-in roles and the first
 * administrator `admin`, whose one-time password must be changed at first sign-in.
 */
export async function initSite(opts: OpenSiteOptions & { siteName?: string; adminPassword?: string }): Promise<InitResult> {
  if (siteExists(opts.dataDir)) throw new Error(`Cannot initialize ${opts.dataDir}: a site already exists there`);
  fs.mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(opts.dataDir, 0o700);
  const given = opts.adminPassword;
  if (given !== undefined) {
    const problems = passwordProblems(given, { username: "admin" });
    if (problems.length) throw new Error(`Cannot use SLIPWAY_ADMIN_PASSWORD: ${problems.join("; ")}`);
  }
  await initSiteKeys(opts.dataDir, { siteName: opts.siteName ?? "Slipway site" });
  const site = await openSite(opts);
  const password = given ?? generatePassword();
  const now = site.now().toISOString();
  const s = stores(site.db);
  if (!(await s.admins.adminByUsername("admin"))) {
    const hash = await hashPassword(password, site.passwordCost);
    await site.db.transaction(async (tx) => {
      const admin = await stores(tx).admins.createAdmin(
        { username: "admin", displayName: "First administrator", passwordHash: hash, mustChangePassword: true,
          roles: ["full-administrator"], scopes: null }, now);
      await site.audit.append({ actor: "system", action: "site.initialized", object: `admin:${admin.id}` }, tx);
    });
  }
  return { site, adminPassword: password, generated: given === undefined };
}
