/**
 * Devices and the MAC addresses that identify them. Every write that can change collection
 * membership (what a rule can read: name, serial, SMBIOS UUID, state, MACs, attributes; a device
 * created or deleted) counts in the membership generation (membership-generation.ts); last
 * seen, enrollment and TPM columns do not.
 */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";
import { bumpTrustGeneration } from "./trust-generation.ts";
import { countingMembership } from "./membership-generation.ts";
import { defined, parseJson } from "./json-column.ts";
import type { Device, DeviceEnrollment, DeviceState } from "../domain/device.ts";
import type { Assurance } from "../domain/assurance.ts";

type R = Record<string, unknown>;

/**
 * Counts writes that can change whom the PXE responder answers: a device created, deleted, or
 * its state, MACs or SMBIOS UUID changed. Bumped before and after each such statement, so a
 * reader that cached boot identities (see BootIdentityCache) can tell its entries may be stale.
 * It is per process: another process sharing a PostgreSQL database is seen through the
 * cache's expiry instead.
 */
let identityGeneration = 0;

/** The current identity generation (see above). */
export function deviceIdentityGeneration(): number {
  return identityGeneration;
}

export class DeviceStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }

  /** `rows` with their MACs; `every`: the rows are every device, so read every MAC in one statement. */
  async #withMacs(rows: R[], every = false): Promise<Device[]> {
    if (rows.length === 0) return [];
    const macs = new Map<string, string[]>();
    const add = (ms: { mac: string; device_id: string }[]) => {
      for (const m of ms) {
        const list = macs.get(m.device_id);
        if (list) list.push(m.mac);
        else macs.set(m.device_id, [m.mac]);
      }
    };
    if (every) add(await this.#db.all<{ mac: string; device_id: string }>(`SELECT mac, device_id FROM device_macs ORDER BY mac`));
    const ids = every ? [] : rows.map((r) => String(r.id));
    // Chunk so no statement exceeds SQLite's parameter limit.
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500);
      add(await this.#db.all<{ mac: string; device_id: string }>(
        `SELECT mac, device_id FROM device_macs WHERE device_id IN (${part.map(() => "?").join(",")}) ORDER BY mac`, part));
    }
    return rows.map((r) => ({
      id: String(r.id), name: String(r.name), macs: macs.get(String(r.id)) ?? [],
      smbiosUuid: (r.smbios_uuid as string | null) ?? null, serial: (r.serial as string | null) ?? null,
      state: String(r.state) as DeviceState, attributes: parseJson(r.attributes, {}),
      lastSeenAt: (r.last_seen_at as string | null) ?? null, createdAt: String(r.created_at), updatedAt: String(r.updated_at),
    }));
  }

  /**
   * Records a device. `preApproved` arms its pre-approval (an administrator created it
   * approved): one enrollment by a machine claiming its identifiers.
   */
  async create(d: Omit<Device, "id" | "createdAt" | "updatedAt" | "lastSeenAt">, now: string, opts: { preApproved?: boolean } = {}): Promise<Device> {
    const id = randomUUID();
    identityGeneration++;
    await countingMembership(this.#db, async () => {
      await this.#db.run(
        `INSERT INTO devices (id, name, smbios_uuid, serial, state, attributes, last_seen_at, created_at, updated_at, preapproval_armed, enrollments, enrolled_at)
         VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, 0, NULL)`,
        [id, d.name, d.smbiosUuid, d.serial, d.state, JSON.stringify(d.attributes), now, now, opts.preApproved && d.state === "approved" ? 1 : 0],
      );
      for (const mac of d.macs) await this.#db.run(`INSERT INTO device_macs (mac, device_id) VALUES (?, ?)`, [mac, id]);
    });
    identityGeneration++;
    return (await this.byId(id))!;
  }

  async byId(id: string): Promise<Device | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM devices WHERE id = ?`, [id]);
    return r ? (await this.#withMacs([r]))[0] : undefined;
  }
  async byName(name: string): Promise<Device | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM devices WHERE name = ?`, [name]);
    return r ? (await this.#withMacs([r]))[0] : undefined;
  }
  async byMac(mac: string): Promise<Device | undefined> {
    const r = await this.#db.get<R>(`SELECT d.* FROM devices d JOIN device_macs m ON m.device_id = d.id WHERE m.mac = ?`, [mac]);
    return r ? (await this.#withMacs([r]))[0] : undefined;
  }
  async bySmbiosUuid(uuid: string): Promise<Device | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM devices WHERE smbios_uuid = ?`, [uuid]);
    return r ? (await this.#withMacs([r]))[0] : undefined;
  }
  /**
   * Just what a boot decision needs (id, name, state) for a MAC: one indexed query, no full
   * record. The PXE responder asks this (through BootIdentityCache) for DISCOVERs.
   */
  async bootIdentityByMac(mac: string): Promise<Pick<Device, "id" | "name" | "state"> | undefined> {
    return this.#db.get<{ id: string; name: string; state: DeviceState }>(
      `SELECT d.id, d.name, d.state FROM devices d JOIN device_macs m ON m.device_id = d.id WHERE m.mac = ?`, [mac]);
  }
  /** The same by SMBIOS UUID, for a machine whose MAC is not on record. */
  async bootIdentityByUuid(uuid: string): Promise<Pick<Device, "id" | "name" | "state"> | undefined> {
    // A UUID names a device only when it records no MAC of its own: one with MACs and this UUID
    // means two machines share it (a firmware plague), and the UUID then names nobody.
    return this.#db.get<{ id: string; name: string; state: DeviceState }>(
      `SELECT id, name, state FROM devices d WHERE smbios_uuid = ? AND NOT EXISTS (SELECT 1 FROM device_macs m WHERE m.device_id = d.id)`, [uuid]);
  }

  /** How many devices are in a state (the PXE responder's cap on machines awaiting approval). */
  async countInState(state: DeviceState): Promise<number> {
    return Number((await this.#db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE state = ?`, [state]))?.n ?? 0);
  }
  /** How many devices an unknown-machine policy recorded (`attributes.recorded`, e.g. "allow"). */
  async countRecordedBy(policy: string): Promise<number> {
    return Number((await this.#db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE attributes LIKE ?`, [`%"recorded":${JSON.stringify(policy)}%`]))?.n ?? 0);
  }

  async list(): Promise<Device[]> {
    return this.#withMacs(await this.#db.all<R>(`SELECT * FROM devices ORDER BY name`), true);
  }
  async update(id: string, patch: Partial<Pick<Device, "name" | "macs" | "smbiosUuid" | "serial" | "state" | "attributes" | "lastSeenAt">>, now: string): Promise<Device | undefined> {
    const cur = await this.byId(id);
    if (!cur) return undefined;
    const n = { ...cur, ...defined(patch) };
    // lastSeenAt changes on every authenticated agent request; only identity changes count.
    const identity = patch.macs !== undefined || n.state !== cur.state || n.smbiosUuid !== cur.smbiosUuid || n.name !== cur.name;
    // Only the columns given are written: a last-seen touch must not write back attributes an
    // administrator changed since this request read the device.
    const given = defined(patch);
    const columns = ([["name", "name"], ["smbiosUuid", "smbios_uuid"], ["serial", "serial"], ["state", "state"], ["attributes", "attributes"],
      ["lastSeenAt", "last_seen_at"]] as const).filter(([k]) => Object.hasOwn(given, k));
    // Whatever a collection rule can read (domain/device.ts deviceLookup), when given at all
    // (equal to `cur` is no proof: `cur` may already be stale); not last seen.
    const membership = columns.some(([k]) => k !== "lastSeenAt") || patch.macs !== undefined;
    if (identity) identityGeneration++;
    const write = async () => {
      await this.#db.run(`UPDATE devices SET ${columns.map(([, c]) => `${c} = ?, `).join("")}updated_at = ? WHERE id = ?`,
        [...columns.map(([k]) => (k === "attributes" ? JSON.stringify(n.attributes) : n[k])), now, id]);
      if (n.state !== cur.state) await bumpTrustGeneration(this.#db);
      if (patch.macs) {
        await this.#db.run(`DELETE FROM device_macs WHERE device_id = ?`, [id]);
        for (const mac of patch.macs) await this.#db.run(`INSERT INTO device_macs (mac, device_id) VALUES (?, ?)`, [mac, id]);
      }
    };
    await (membership ? countingMembership(this.#db, write) : write());
    if (identity) identityGeneration++;
    return this.byId(id);
  }

  /**
   * Moves a device from state `from` to `to`, only if it is still in `from`: of two decisions
   * racing for one device (two bulk approvals, an approval and a block), only one applies.
   */
  async changeStateIf(id: string, from: DeviceState, to: DeviceState, now: string): Promise<boolean> {
    identityGeneration++;
    const changed = await countingMembership(this.#db, async () =>
      (await this.#db.run(`UPDATE devices SET state = ?, updated_at = ? WHERE id = ? AND state = ?`, [to, now, id, from])).changes === 1);
    identityGeneration++;
    return changed;
  }

  /** Whether pre-approval is armed, and how often the device enrolled. */
  async enrollmentOf(id: string): Promise<(DeviceEnrollment & { assurance: Assurance | null }) | undefined> {
    const r = await this.#db.get<R>(`SELECT preapproval_armed, enrollments, enrolled_at, enrolled_assurance FROM devices WHERE id = ?`, [id]);
    return r && { preApproved: Number(r.preapproval_armed) === 1, enrollments: Number(r.enrollments), enrolledAt: (r.enrolled_at as string | null) ?? null,
      assurance: (r.enrolled_assurance as Assurance | null) ?? null };
  }

  /** Arms (an administrator's new approval) or disarms the device's pre-approval. */
  async setPreApproval(id: string, armed: boolean): Promise<void> {
    await this.#db.run(`UPDATE devices SET preapproval_armed = ? WHERE id = ?`, [armed ? 1 : 0, id]);
  }

  /**
   * Claims the device for one enrollment, atomically: succeeds only if it enrolled exactly
   * `seen` times so far (and, with `preApproval`, its pre-approval is still armed), so of two
   * enrollments racing for one device only one wins. Spends the pre-approval either way:
   * whatever the credential, the first enrollment is the one pre-approval admitted.
   */
  async claimEnrollment(id: string, q: { seen: number; preApproval: boolean; now: string; assurance: Assurance }): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE devices SET enrollments = enrollments + 1, enrolled_at = ?, enrolled_assurance = ?, preapproval_armed = 0, last_seen_at = ?, updated_at = ?
       WHERE id = ? AND enrollments = ?${q.preApproval ? " AND preapproval_armed = 1" : ""}`,
      [q.now, q.assurance, q.now, q.now, id, q.seen])).changes === 1;
  }

  /**
   * Raises the device's last enrollment from `sniffable` to `approved` (an administrator approved
   * it); answers whether it was sniffable. Any other assurance is left as it is.
   */
  async approveSniffableEnrollment(id: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE devices SET enrolled_assurance = 'approved', updated_at = ? WHERE id = ? AND enrolled_assurance = 'sniffable'`, [now, id])).changes === 1;
  }

  async delete(id: string): Promise<number> {
    identityGeneration++;
    const changes = await countingMembership(this.#db, async () => (await this.#db.run(`DELETE FROM devices WHERE id = ?`, [id])).changes);
    if (changes) await bumpTrustGeneration(this.#db);
    identityGeneration++;
    return changes;
  }
}
