/**
 * Lab DHCP leases (`up --pxe-mode dhcp`), RFC 2131 §4.3 against a client that lies: which
 * address a machine gets, for how long, and what its RELEASE and DECLINE may change. Every
 * choice reads and writes the lease store in one transaction, so two machines asking at once
 * never get one address. The pool rules themselves are pure (domain/ip-pool.ts); what a
 * request's fields allow is decided before (protocol/dhcp-server.ts).
 */
import type { Db } from "../../storage/db.ts";
import { stores, type Stores } from "../../storage/stores.ts";
import { chooseAddress, poolStateFor, unapprovedShareFull, type IpRange } from "../../domain/ip-pool.ts";
import type { BootIdentity } from "./boot-identity-cache.ts";

export type LabLeasesOptions = {
  db: Db;
  now(): Date;
  /** How long an OFFER reserves its address, and a DECLINEd address rests (seconds). */
  offerSeconds?: number;
  declineSeconds?: number;
};

/** The address to answer with; `nak` when a REQUEST asked for another; `refused` says why none may be had. */
export type LeaseResult = { ip?: string; nak?: boolean; refused?: string };

export type LeaseQuery = {
  /** The pool of the link asked on, and the server's own addresses there (never handed out). */
  range: IpRange;
  serverAddresses: readonly string[];
  mac: string;
  device: BootIdentity;
  /** The address the client asks for (option 50, or ciaddr when renewing). */
  requested?: string;
  /** A REQUEST binds for `leaseSeconds`; a DISCOVER only reserves for the offer time. */
  request: boolean;
  leaseSeconds: number;
};

/** Addresses one device may have declined and still resting: more is a client burning the pool. */
export const MAX_DECLINED_PER_DEVICE = 3;

export type DeclineOutcome = "declined" | "refused" | "too-many";

export class LabLeases {
  readonly #db: Db;
  readonly #now: () => Date;
  readonly offerSeconds: number;
  readonly declineSeconds: number;

  constructor(o: LabLeasesOptions) {
    this.#db = o.db;
    this.#now = o.now;
    this.offerSeconds = o.offerSeconds ?? 60;
    this.declineSeconds = o.declineSeconds ?? 600;
  }

  /**
   * The address for `q.mac` — for a DISCOVER reserved for the offer time, for a REQUEST bound
   * for the lease time — in one transaction, so two machines asking for the same address at
   * once cannot both get it (the second is NAKed and starts over, as RFC 2131 §3.1 expects).
   * Nothing held by another client's unexpired lease or offer, nothing declined and none of
   * the server's own addresses is offered (§4.3.1); a new address is refused beyond the
   * device's share of the pool. `{}` when the pool is exhausted.
   */
  lease(q: LeaseQuery): Promise<LeaseResult> {
    return this.#db.transaction(async (tx): Promise<LeaseResult> => {
      const t = stores(tx);
      const now = this.#now();
      const nowIso = now.toISOString();
      await t.leases.deleteExpired(nowIso);
      const rows = await t.leases.all();
      const own = rows.find((l) => l.mac === q.mac);
      if (!own || own.state === "released") {
        const refused = await newAddressRefused(t, q.range, q.device, q.mac);
        if (refused) return { refused };
      }
      const ip = chooseAddress(q.range, poolStateFor(q.mac, rows, await t.leases.declined(), q.serverAddresses), own?.ip, q.requested);
      if (!ip) return {};
      if (q.request && q.requested && q.requested !== ip) return { ip, nak: true };
      if (q.request) {
        await t.leases.put({ mac: q.mac, ip, state: "bound", deviceId: q.device.id, expiresAt: new Date(now.getTime() + q.leaseSeconds * 1000).toISOString() }, nowIso);
      } else if (!(own?.state === "bound" && own.ip === ip)) {
        await t.leases.put({ mac: q.mac, ip, state: "offered", deviceId: q.device.id, expiresAt: new Date(now.getTime() + this.offerSeconds * 1000).toISOString() }, nowIso);
      }
      return { ip };
    });
  }

  /**
   * DHCPRELEASE (§4.3.4) of `ip`, already checked to name this server and come from that
   * address: ends the binding only when `mac` holds `ip` (kept as released for it). False when not.
   */
  release(mac: string, ip: string): Promise<boolean> {
    return stores(this.#db).leases.release(mac, ip, this.#now().toISOString());
  }

  /**
   * DHCPDECLINE (§4.3.3) of `ip`, already checked to name this server: counts only when `mac`
   * holds a binding of `ip`, and then the address rests for the decline time; a device with
   * MAX_DECLINED_PER_DEVICE addresses resting is refused (it would burn the pool).
   */
  decline(mac: string, ip: string): Promise<DeclineOutcome> {
    return this.#db.transaction(async (tx): Promise<DeclineOutcome> => {
      const t = stores(tx);
      const held = await t.leases.byMac(mac);
      if (held?.state !== "bound" || held.ip !== ip) return "refused";
      if (held.deviceId && (await t.leases.declinedBy(held.deviceId)) >= MAX_DECLINED_PER_DEVICE) return "too-many";
      await t.leases.decline(mac, ip, held.deviceId, new Date(this.#now().getTime() + this.declineSeconds * 1000).toISOString());
      return "declined";
    });
  }

  /** The client chose another server's offer: ours is free again (§4.3.2); a binding stays. */
  dropOffer(mac: string): Promise<void> {
    return stores(this.#db).leases.dropOffer(mac);
  }
}

/**
 * Why `mac` may not take a new address, or undefined. Each MAC on a device's record may hold
 * one; a device recognised only by its SMBIOS UUID (which any machine can send) gets one
 * address for all its unrecorded MACs; devices awaiting approval share half the pool.
 */
async function newAddressRefused(t: Stores, range: IpRange, device: BootIdentity, mac: string): Promise<string | undefined> {
  if (!(await t.leases.macOnRecord(device.id, mac)) && (await t.leases.heldForUnrecordedMacs(device.id, mac)) >= 1) {
    return "the device already holds an address for a MAC not on its record";
  }
  if (device.state !== "approved" && unapprovedShareFull(range, await t.leases.heldByUnapproved())) {
    return "devices awaiting approval already hold half of the pool";
  }
  return undefined;
}
