/**
 * DHCP leases for the isolated-lab mode, persisted so a restart never hands an address out
 * twice. One row per MAC: an address `offered` (held briefly until the client's REQUEST),
 * `bound` (ACKed), or `released` (not allocated, remembered for that client until the lease
 * would have ended, RFC 2131 §4.3.4). Addresses clients DECLINEd are kept apart until a time.
 */
import type { Sql } from "./db.ts";

export type LeaseState = "offered" | "bound" | "released";
export type Lease = { mac: string; ip: string; expiresAt: string; state: LeaseState; deviceId: string | null };

type Row = { mac: string; ip: string; expires_at: string; state: string; device_id: string | null };
const lease = (r: Row): Lease => ({ mac: r.mac, ip: r.ip, expiresAt: r.expires_at, state: r.state as LeaseState, deviceId: r.device_id ?? null });

export class LeaseStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  async byMac(mac: string): Promise<Lease | undefined> {
    const r = await this.#db.get<Row>(`SELECT * FROM dhcp_leases WHERE mac = ?`, [mac]);
    return r && lease(r);
  }
  /** Forgets a MAC's lease (its device was deleted). */
  async forget(mac: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM dhcp_leases WHERE mac = ?`, [mac])).changes;
  }
  async byIp(ip: string): Promise<Lease | undefined> {
    const r = await this.#db.get<Row>(`SELECT * FROM dhcp_leases WHERE ip = ?`, [ip]);
    return r && lease(r);
  }
  async all(): Promise<Lease[]> {
    return (await this.#db.all<Row>(`SELECT * FROM dhcp_leases ORDER BY ip`)).map(lease);
  }
  /**
   * Records an offer or a binding for `l.mac`. A released binding another client kept for the
   * address gives way; the UNIQUE(ip) constraint refuses a second holder of a live one.
   */
  async put(l: Lease, now: string): Promise<void> {
    await this.#db.run(`DELETE FROM dhcp_leases WHERE ip = ? AND mac <> ? AND state = 'released'`, [l.ip, l.mac]);
    await this.#db.run(
      `INSERT INTO dhcp_leases (mac, ip, expires_at, updated_at, state, device_id) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, expires_at = excluded.expires_at, updated_at = excluded.updated_at,
         state = excluded.state, device_id = excluded.device_id`,
      [l.mac, l.ip, l.expiresAt, now, l.state, l.deviceId]);
  }
  /** Deletes leases, offers and declined marks whose time is up. */
  async deleteExpired(now: string): Promise<number> {
    const n = (await this.#db.run(`DELETE FROM dhcp_leases WHERE expires_at <= ?`, [now])).changes;
    await this.#db.run(`DELETE FROM dhcp_declined WHERE until <= ?`, [now]);
    return n;
  }
  /** Ends `mac`'s binding of `ip` (kept as released for it); false when it holds no such binding. */
  async release(mac: string, ip: string, now: string): Promise<boolean> {
    return (await this.#db.run(`UPDATE dhcp_leases SET state = 'released', updated_at = ? WHERE mac = ? AND ip = ? AND state = 'bound'`, [now, mac, ip])).changes === 1;
  }
  /** Withdraws an offer made to `mac` (it chose another server); never touches a binding. */
  async dropOffer(mac: string): Promise<void> {
    await this.#db.run(`DELETE FROM dhcp_leases WHERE mac = ? AND state = 'offered'`, [mac]);
  }
  /** `mac` found `ip` in use: its binding ends and nobody gets the address until `until`. */
  async decline(mac: string, ip: string, deviceId: string | null, until: string): Promise<boolean> {
    const ended = (await this.#db.run(`DELETE FROM dhcp_leases WHERE mac = ? AND ip = ? AND state = 'bound'`, [mac, ip])).changes === 1;
    if (!ended) return false;
    await this.#db.run(
      `INSERT INTO dhcp_declined (ip, mac, device_id, until) VALUES (?, ?, ?, ?)
       ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, device_id = excluded.device_id, until = excluded.until`,
      [ip, mac, deviceId, until]);
    return true;
  }
  /** The addresses declined and not yet available again. */
  async declined(): Promise<string[]> {
    return (await this.#db.all<{ ip: string }>(`SELECT ip FROM dhcp_declined`)).map((r) => r.ip);
  }
  /** How many addresses `deviceId` has declined that are not yet available again. */
  async declinedBy(deviceId: string): Promise<number> {
    return Number((await this.#db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM dhcp_declined WHERE device_id = ?`, [deviceId]))?.n ?? 0);
  }
  /** Whether `mac` is one of the device's recorded MACs (not just sent with its SMBIOS UUID). */
  async macOnRecord(deviceId: string, mac: string): Promise<boolean> {
    return (await this.#db.get(`SELECT 1 AS one FROM device_macs WHERE mac = ? AND device_id = ?`, [mac, deviceId])) !== undefined;
  }
  /**
   * Live addresses (offered or bound) held by `deviceId` for MACs not on its record (it was
   * recognised by its SMBIOS UUID), other than `mac`'s own.
   */
  async heldForUnrecordedMacs(deviceId: string, mac: string): Promise<number> {
    return Number((await this.#db.get<{ n: number }>(
      `SELECT COUNT(*) AS n FROM dhcp_leases l WHERE l.device_id = ? AND l.mac <> ? AND l.state <> 'released'
         AND NOT EXISTS (SELECT 1 FROM device_macs m WHERE m.mac = l.mac AND m.device_id = l.device_id)`, [deviceId, mac]))?.n ?? 0);
  }
  /** Live addresses (offered or bound) held by devices that are not approved (pending an administrator's decision). */
  async heldByUnapproved(): Promise<string[]> {
    return (await this.#db.all<{ ip: string }>(
      `SELECT l.ip FROM dhcp_leases l JOIN devices d ON d.id = l.device_id WHERE l.state <> 'released' AND d.state <> 'approved'`)).map((r) => r.ip);
  }
}
