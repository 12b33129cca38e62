/** IPv4 address arithmetic and the lab DHCP pool: pure, no sockets. */

export function ipToInt(ip: string): number {
  const parts = ip.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new TypeError(`Not an IPv4 address: "${ip}"`);
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

export type IpRange = { first: number; last: number };

/** `FIRST-LAST`, both IPv4, first ≤ last, at most 65536 addresses. */
export function parseRange(text: string): IpRange {
  const m = /^\s*([\d.]+)\s*-\s*([\d.]+)\s*$/.exec(text);
  if (!m) throw new TypeError(`A DHCP range is FIRST-LAST, e.g. 10.0.0.100-10.0.0.199, not "${text}"`);
  const first = ipToInt(m[1]);
  const last = ipToInt(m[2]);
  if (first > last) throw new TypeError(`The DHCP range ${text} ends before it starts`);
  if (last - first >= 65536) throw new TypeError(`The DHCP range ${text} is larger than 65536 addresses`);
  return { first, last };
}

export function inRange(range: IpRange, ip: string): boolean {
  try {
    const n = ipToInt(ip);
    return n >= range.first && n <= range.last;
  } catch {
    return false;
  }
}

/**
 * The addresses a server must not hand out from a pool (RFC 2131 §4.3.1, §4.3.3): `taken` are
 * held by another client's unexpired lease or offer, by a DECLINE, or by the server itself;
 * `remembered` were released or left by another client, whose binding the server keeps so that
 * client gets its address back (§4.3.4) — they go to someone else only when nothing else is free.
 */
export type PoolState = { taken: ReadonlySet<string>; remembered?: ReadonlySet<string> };

/**
 * The address to offer a client: its current binding, else the address it asked for when free
 * (never one remembered for another client), else the lowest free one, else the lowest
 * remembered one; undefined when the pool is exhausted.
 */
export function chooseAddress(range: IpRange, pool: PoolState, current?: string, requested?: string): string | undefined {
  const { taken } = pool;
  const remembered = pool.remembered ?? new Set<string>();
  if (current && inRange(range, current) && !taken.has(current)) return current;
  if (requested && inRange(range, requested) && !taken.has(requested) && !remembered.has(requested)) return requested;
  let fallback: string | undefined;
  for (let n = range.first; n <= range.last; n++) {
    const ip = intToIp(n);
    if (taken.has(ip)) continue;
    if (!remembered.has(ip)) return ip;
    fallback ??= ip;
  }
  return fallback;
}

/** How many addresses the range holds. */
export function rangeSize(range: IpRange): number {
  return range.last - range.first + 1;
}

/** The pool among `ranges` that serves the link `address/netmask`: the first lying wholly in its subnet. */
export function rangeForSubnet(ranges: readonly IpRange[], address: string, netmask: string): IpRange | undefined {
  const mask = ipToInt(netmask);
  const net = (ipToInt(address) & mask) >>> 0;
  return ranges.find((r) => ((r.first & mask) >>> 0) === net && ((r.last & mask) >>> 0) === net);
}

/** A lease as the pool sees it (one per MAC): offered, bound, or released and remembered for its client. */
export type PoolLease = { mac: string; ip: string; state: "offered" | "bound" | "released" };

/**
 * The pool as `mac` finds it: every other client's live lease or offer, every declined
 * address still resting and the server's own addresses are taken; other clients' released
 * addresses are remembered for them. `mac`'s own lease is neither.
 */
export function poolStateFor(mac: string, leases: Iterable<PoolLease>, declined: Iterable<string>, serverAddresses: Iterable<string>): Required<PoolState> {
  const taken = new Set<string>(serverAddresses);
  const remembered = new Set<string>();
  for (const l of leases) if (l.mac !== mac) (l.state === "released" ? remembered : taken).add(l.ip);
  for (const ip of declined) taken.add(ip);
  return { taken, remembered };
}

/** Devices not yet approved hold at most this share of a pool, so approved machines always find one. */
export const UNAPPROVED_SHARE = 0.5;

/** Whether the live addresses held by unapproved devices (`held`, from any pool) already fill their share of `range`. */
export function unapprovedShareFull(range: IpRange, held: Iterable<string>): boolean {
  let n = 0;
  for (const ip of held) if (inRange(range, ip)) n++;
  return n >= Math.floor(rangeSize(range) * UNAPPROVED_SHARE);
}
