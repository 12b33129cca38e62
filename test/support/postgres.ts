/**
 * A fresh PostgreSQL schema per test site, so test files can run side by side on one
 * server; the connection URL pins search_path to it.
 */
import pg from "pg";

export async function createSchema(baseUrl: string, schema: string): Promise<string> {
  const c = new pg.Client({ connectionString: baseUrl });
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await c.end();
  }
  const u = new URL(baseUrl);
  u.searchParams.set("options", `-c search_path=${schema}`);
  return u.toString();
}

export async function dropSchema(baseUrl: string, schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: baseUrl });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await c.end();
  }
}

/** The databases every contract test runs against: SQLite always, PostgreSQL when configured. */
export function databasesUnderTest(): ("sqlite" | "postgres")[] {
  if (process.env.SLIPWAY_TEST_DATABASE_URL) return ["sqlite", "postgres"];
  // scripts/test.sh (and so CI) always provides PostgreSQL; never pass quietly without it.
  if (process.env.SLIPWAY_REQUIRE_POSTGRES || process.env.CI) throw new Error("SLIPWAY_TEST_DATABASE_URL must be set");
  return ["sqlite"];
}

/**
 * The PostgreSQL URL with sslmode=verify-full (and the test CA as sslrootcert) that
 * scripts/test.sh provides once it made the test cluster serve TLS; null when not set.
 */
export function postgresTlsUnderTest(): string | null {
  const url = process.env.SLIPWAY_TEST_DATABASE_TLS_URL;
  if (url) return url;
  if (process.env.SLIPWAY_REQUIRE_POSTGRES || process.env.CI) throw new Error("SLIPWAY_TEST_DATABASE_TLS_URL must be set");
  return null;
}
