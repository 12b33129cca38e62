/**
 * The PXE responder's memory of who is who: a machine's boot identity (device id, name,
 * state) by MAC, else by SMBIOS UUID, including "no such device". The responder asks for one
 * on every DISCOVER; answering from memory keeps a database round trip off that path.
 *
 * Staleness is bounded two ways. Every device write in this process (approve, block, delete,
 * new MACs — see deviceIdentityGeneration) makes every entry read before it stale at once, so
 * a blocked machine gets no further answer. A write by another process sharing a PostgreSQL
 * database is not seen that way; entries also expire after `ttlMs` (default one second).
 */
import { performance } from "node:perf_hooks";
import { deviceIdentityGeneration } from "../../storage/device-store.ts";
import type { Device } from "../../domain/device.ts";

export type BootIdentity = Pick<Device, "id" | "name" | "state">;

type Entry = { identity: BootIdentity | null; generation: number; expires: number };

export type BootIdentityCacheOptions = {
  /** The database lookups (DeviceStore.bootIdentityByMac, bootIdentityByUuid). */
  byMac(mac: string): Promise<BootIdentity | undefined>;
  byUuid(uuid: string): Promise<BootIdentity | undefined>;
  ttlMs?: number;
  /** Entries kept per index; the oldest go first, so a flood of random MACs stays bounded. */
  maxEntries?: number;
};

export class BootIdentityCache {
  readonly #o: Required<BootIdentityCacheOptions>;
  readonly #byMac = new Map<string, Entry>();
  readonly #byUuid = new Map<string, Entry>();

  constructor(o: BootIdentityCacheOptions) {
    this.#o = { ttlMs: 1000, maxEntries: 65_536, ...o };
  }

  /**
   * The identity if memory holds a fresh answer: a device, null for "no such device", or
   * undefined when the database must be asked (`get`).
   */
  peek(mac: string, uuid: string | undefined): BootIdentity | null | undefined {
    const m = this.#fresh(this.#byMac, mac);
    if (m === undefined || m.identity || !uuid) return m === undefined ? undefined : m.identity;
    const u = this.#fresh(this.#byUuid, uuid);
    return u === undefined ? undefined : u.identity;
  }

  /** The identity from memory, or from the database (and then remembered). */
  async get(mac: string, uuid: string | undefined): Promise<BootIdentity | undefined> {
    const known = this.peek(mac, uuid);
    if (known !== undefined) return known ?? undefined;
    // Tagged with the generation from before the read: a write that lands meanwhile makes it stale.
    const generation = deviceIdentityGeneration();
    const identity = (await this.#o.byMac(mac)) ?? null;
    this.#put(this.#byMac, mac, identity, generation);
    if (identity || !uuid) return identity ?? undefined;
    const byUuid = (await this.#o.byUuid(uuid)) ?? null;
    this.#put(this.#byUuid, uuid, byUuid, generation);
    return byUuid ?? undefined;
  }

  #fresh(map: Map<string, Entry>, key: string): Entry | undefined {
    const e = map.get(key);
    if (e === undefined) return undefined;
    if (e.generation !== deviceIdentityGeneration() || e.expires < performance.now()) {
      map.delete(key);
      return undefined;
    }
    return e;
  }

  #put(map: Map<string, Entry>, key: string, identity: BootIdentity | null, generation: number): void {
    map.delete(key);
    map.set(key, { identity, generation, expires: performance.now() + this.#o.ttlMs });
    while (map.size > this.#o.maxEntries) map.delete(map.keys().next().value!);
  }
}
