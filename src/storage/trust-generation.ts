/**
 * The site's trust generation: one counter that goes up, in the same transaction, with every
 * change that can take away (or give back) what a certificate was allowed — a certificate
 * blocked, unblocked, revoked or superseded, a device's state changed or the device deleted, a
 * distribution point removed. Distribution points read it every second and drop every answer
 * they kept when it has changed, so such a change reaches them without waiting for a cache to
 * expire. Being in the database, it is shared by every site process on one PostgreSQL.
 *
 * The stores bump it themselves, right after the write, so no route can forget to.
 */
import type { Sql } from "./db.ts";

/** Counts one trust change; call inside the transaction that makes it. */
export async function bumpTrustGeneration(sql: Sql): Promise<void> {
  await sql.run(`UPDATE trust_generation SET generation = generation + 1 WHERE id = 1`);
}

/** The current generation (0 before the first change). */
export async function trustGeneration(sql: Sql): Promise<number> {
  const r = await sql.get<{ generation: unknown }>(`SELECT generation FROM trust_generation WHERE id = 1`);
  return Number(r?.generation ?? 0);
}
