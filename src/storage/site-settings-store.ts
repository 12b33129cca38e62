/**
 * Site settings: one text value per key in `site_settings`, shared by every process on the
 * database (the PXE password's verifier, the TPM manufacturer roots, the names the site serves
 * under, where PXE is served). Keys are namespaced by a prefix ending in "." or ":".
 */
import type { Sql } from "./db.ts";

/** `prefix` as a LIKE pattern that matches only keys starting with it (its own % and _ escaped). */
const prefixPattern = (prefix: string) => prefix.replace(/[\\%_]/g, (c) => `\\${c}`) + "%";

export class SiteSettingsStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }

  async get(key: string): Promise<string | null> {
    return (await this.#db.get<{ value: string }>(`SELECT value FROM site_settings WHERE key = ?`, [key]))?.value ?? null;
  }

  /** Sets a value, replacing any. */
  async set(key: string, value: string): Promise<void> {
    await this.#db.run(`INSERT INTO site_settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [key, value]);
  }

  /** Sets a value unless the key has one; answers whether it was set. */
  async setIfAbsent(key: string, value: string): Promise<boolean> {
    return (await this.#db.run(`INSERT INTO site_settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, [key, value])).changes === 1;
  }

  /** Removes a key; answers whether it was there. */
  async delete(key: string): Promise<boolean> {
    return (await this.#db.run(`DELETE FROM site_settings WHERE key = ?`, [key])).changes === 1;
  }

  /** Every key starting with `prefix` (exactly: SQLite's LIKE ignores ASCII case), with its value, in key order. */
  async withPrefix(prefix: string): Promise<{ key: string; value: string }[]> {
    const rows = await this.#db.all<{ key: string; value: string }>(`SELECT key, value FROM site_settings WHERE key LIKE ? ESCAPE '\\' ORDER BY key`, [prefixPattern(prefix)]);
    return rows.filter((r) => r.key.startsWith(prefix)).map((r) => ({ key: r.key, value: r.value }));
  }
}
