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
 * The address to offer a client: its current lease, else the address it asked for when free,
 * else the lowest free one; undefined when the pool is exhausted.
 */
export function chooseAddress(range: IpRange, taken: ReadonlySet<string>, current?: string, requested?: string): string | undefined {
  if (current && inRange(range, current)) return current;
  if (requested && inRange(range, requested) && !taken.has(requested)) return requested;
  for (let n = range.first; n <= range.last; n++) {
    const ip = intToIp(n);
    if (!taken.has(ip)) return ip;
  }
  return undefined;
}
