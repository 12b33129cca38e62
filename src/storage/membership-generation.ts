/**
 * The membership generation: one counter that goes up with every write that can change which
 * devices are in which collection — a device created or deleted, its name, serial, SMBIOS UUID,
 * state, MACs or attributes changed (what a collection rule can read), a collection created,
 * deleted or its rule changed, a static member added or removed. Whoever keeps membership in
 * memory (src/site/membership.ts) reads it first and trusts what it kept only while it is
 * unchanged. Being in the database, it is shared by every site and management point process on
 * one PostgreSQL, and by every process on one SQLite file.
 *
 * The stores count their writes themselves (DeviceStore, CollectionStore), so no route can
 * forget to. The count is in the same transaction as the write, so a reader never sees one
 * without the other:
 *  - in a transaction it comes first, once per transaction: on PostgreSQL the counter's row lock
 *    is then taken before any device row, so two writers of several devices (two bulk
 *    approvals) wait for each other instead of deadlocking;
 *  - outside one it comes after the write (also after a write that failed half-way), so a
 *    reader that saw the new value also sees the new data.
 * A reader must read the generation before the data: then what it kept is at least as new as
 * the generation it is filed under. Counts of a rolled-back transaction are undone with it, and
 * nothing computed inside a transaction is kept, so one value never stands for two states.
 */
import { isTx, type Sql } from "./db.ts";

const counted = new WeakSet<Sql>();

async function bump(sql: Sql): Promise<void> {
  await sql.run(`UPDATE membership_generation SET generation = generation + 1 WHERE id = 1`);
}

/** Runs `write`, a change that can change membership, and counts it (see above). */
export async function countingMembership<T>(sql: Sql, write: () => Promise<T>): Promise<T> {
  if (isTx(sql)) {
    if (!counted.has(sql)) {
      await bump(sql);
      counted.add(sql);
    }
    return write();
  }
  try {
    return await write();
  } finally {
    await bump(sql);
  }
}

/** The current generation (0 before the first change). */
export async function membershipGeneration(sql: Sql): Promise<number> {
  const r = await sql.get<{ generation: unknown }>(`SELECT generation FROM membership_generation WHERE id = 1`);
  return Number(r?.generation ?? 0);
}
