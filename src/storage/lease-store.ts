/** DHCP leases for the isolated-lab mode, persisted so a restart never hands an address out twice. */
import type { Sql } from "./db.ts";

export type Lease = { mac: string; ip: string; expiresAt: string };

export class LeaseStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  async byMac(mac: string): Promise<Lease | undefined> {
    const r = await this.#db.get<{ mac: string; ip: string; expires_at: string }>(`SELECT * FROM dhcp_leases WHERE mac = ?`, [mac]);
    return r && { mac: r.mac, ip: r.ip, expiresAt: r.expires_at };
  }
  async byIp(ip: string): Promise<Lease | undefined> {
    const r = await this.#db.get<{ mac: string; ip: string; expires_at: string }>(`SELECT * FROM dhcp_leases WHERE ip = ?`, [ip]);
    return r && { mac: r.mac, ip: r.ip, expiresAt: r.expires_at };
  }
  async all(): Promise<Lease[]> {
    return (await this.#db.all<{ mac: string; ip: string; expires_at: string }>(`SELECT * FROM dhcp_leases ORDER BY ip`))
      .map((r) => ({ mac: r.mac, ip: r.ip, expiresAt: r.expires_at }));
  }
  /** Records a lease; the UNIQUE(ip) constraint refuses a second holder of one address. */
  async put(l: Lease, now: string): Promise<void> {
    await this.#db.run(
      `INSERT INTO dhcp_leases (mac, ip, expires_at, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
      [l.mac, l.ip, l.expiresAt, now]);
  }
  async deleteExpired(now: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM dhcp_leases WHERE expires_at <= ?`, [now])).changes;
  }
  async release(mac: string): Promise<void> {
    await this.#db.run(`DELETE FROM dhcp_leases WHERE mac = ?`, [mac]);
  }
}
