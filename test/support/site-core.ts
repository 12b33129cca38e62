/**
 * A site with no servers — data folder, keys, database, audit log and a clock that starts at
 * the real time and only moves forward — for the pieces that need a store and nothing else
 * (no root, no sockets). SQLite, or PostgreSQL in a fresh schema of its own.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { initSite, type Site } from "../../src/site/site.ts";
import { createLogger } from "../../src/log.ts";
import { createSchema, dropSchema } from "./postgres.ts";
import { tempDir, TEST_PASSWORD_COST } from "./site.ts";

export type SiteCore = {
  site: Site;
  /** Moves the site's clock forward by `ms`. */
  advance(ms: number): void;
  close(): Promise<void>;
};

export async function openSiteCore(database: "sqlite" | "postgres"): Promise<SiteCore> {
  const dir = tempDir("slipway-core-");
  let offset = 0;
  let schema = "";
  let databaseUrl: string | undefined;
  if (database === "postgres") {
    schema = `k_${randomBytes(6).toString("hex")}`;
    databaseUrl = await createSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
  }
  const { site } = await initSite({
    dataDir: path.join(dir, "data"), databaseUrl, adminPassword: "Site-Core-Test-Passphrase-1", log: createLogger({ level: "error" }),
    passwordCost: TEST_PASSWORD_COST, now: () => new Date(Date.now() + offset),
  });
  return {
    site,
    advance(ms) {
      if (ms < 0) throw new RangeError("the test clock only moves forward");
      offset += ms;
    },
    async close() {
      await site.audit.flush();
      await site.close();
      if (schema) await dropSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
