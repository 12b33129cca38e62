/**
 * Host names as a TLS client compares them: one canonical spelling per host (the WHATWG URL
 * parser's, which every browser and Node use), so "LOCALHOST.", "127.1", "0x7f000001",
 * "[0:0:0:0:0:0:0:1]" and "::ffff:127.0.0.1" are each seen as the host they reach. Pure.
 */
import net from "node:net";

// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 octets max.
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * The canonical form of a DNS name or IP address: lower case, no trailing dot, IPv4 in
 * dotted decimal (whatever spelling the URL parser accepts: "127.1", "2130706433", hex,
 * octal), IPv6 compressed without brackets. Null when `text` is neither (a path, a port, a
 * zone index, a wildcard, "%" escapes, spaces).
 */
export function canonicalHost(text: string): string | null {
  const t = text.trim();
  if (t === "" || t.length > 300 || /[\s/?#@\\%*,;]/.test(t)) return null;
  const bare = t.replace(/^\[(.*)\]$/, "$1");
  const v6 = bare.includes(":");
  let host: string;
  try {
    host = new URL(v6 ? `https://[${bare}]/` : `https://${bare}/`).hostname;
  } catch {
    return null;
  }
  if (v6) return host.startsWith("[") && net.isIPv6(host.slice(1, -1)) ? host.slice(1, -1) : null;
  const name = host.replace(/\.$/, "");
  if (net.isIPv4(name)) return name;
  return DNS_NAME.test(name) ? name : null;
}

/** The 16 bytes of an IPv6 address (any spelling `net.isIPv6` accepts, no zone). */
function ipv6Bytes(addr: string): number[] {
  let text = addr;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const o = dotted[1].split(".").map(Number);
    text = text.slice(0, -dotted[1].length) + `${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, null];
  const h = head ? head.split(":") : [];
  const tl = tail === null ? [] : tail ? tail.split(":") : [];
  const groups = tail === null ? h : [...h, ...Array(8 - h.length - tl.length).fill("0"), ...tl];
  return groups.flatMap((g) => {
    const v = parseInt(g, 16);
    return [v >> 8, v & 0xff];
  });
}

/**
 * The key two spellings of one host share: the canonical form, with an IPv4 address
 * embedded in IPv6 (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, SIIT
 * `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) taken as that IPv4 address — stricter than a
 * TLS library, which may or may not treat them alike.
 */
export function hostKey(canonical: string): string {
  if (!net.isIPv6(canonical)) return canonical;
  const b = ipv6Bytes(canonical);
  const zero = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  const v4 = b.slice(12).join(".");
  if (zero(0, 10) && b[10] === 0xff && b[11] === 0xff) return v4; // ::ffff:a.b.c.d
  if (zero(0, 8) && b[8] === 0xff && b[9] === 0xff && zero(10, 12)) return v4; // ::ffff:0:a.b.c.d
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(4, 12)) return v4; // 64:ff9b::/96
  if (zero(0, 12) && !(zero(12, 15) && b[15] <= 1)) return v4; // ::a.b.c.d (but :: and ::1 stay)
  return canonical;
}

// Names that /etc/hosts or RFC 6761 point at this very machine.
const LOOPBACK_NAMES = new Set(["localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback"]);

/**
 * Whether a canonical host is this machine or "any address": localhost and *.localhost
 * (RFC 6761 §6.3), 127.0.0.0/8, 0.0.0.0/8, ::1, :: and their IPv4-in-IPv6 forms.
 */
export function isLoopbackHost(canonical: string): boolean {
  const key = hostKey(canonical);
  if (net.isIPv4(key)) {
    const first = Number(key.split(".")[0]);
    return first === 127 || first === 0;
  }
  if (net.isIPv6(key)) {
    const b = ipv6Bytes(key);
    return b.slice(0, 15).every((x) => x === 0) && (b[15] === 0 || b[15] === 1);
  }
  return LOOPBACK_NAMES.has(key) || key.endsWith(".localhost");
}
