/**
 * Rules for registering a distribution point: its name, the https URL devices reach it at,
 * and the host names its server certificate may carry. Pure.
 */
import { canonicalHost } from "./host-name.ts";

/**
 * A distribution point not heard from for this long (it polls every --poll-seconds, at most
 * DP_MAX_POLL_SECONDS, so this is at least three missed polls) is left out of policies'
 * content sources until it is heard from again.
 */
export const DP_SILENT_AFTER_MS = 15 * 60_000;
export const DP_MAX_POLL_SECONDS = 300;

const DP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Whether `name` may name a distribution point (letters, digits, ".", "_", "-"; at most 64). */
export function isDistributionPointName(name: string): boolean {
  return DP_NAME.test(name);
}

/**
 * A DNS host name or an IP address in its one canonical spelling (see host-name.ts: lower
 * case, no trailing dot, IPv4 dotted, IPv6 compressed); null when it is neither.
 */
export function normalizeHostName(text: string): string | null {
  return canonicalHost(text);
}

/**
 * The origin (`https://host:port`) and host of a distribution point's URL; throws a
 * TypeError saying what is wrong. Only https: devices send their certificates to it.
 */
export function parseDistributionPointUrl(text: string): { origin: string; host: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`"${text}" is not a URL`);
  }
  if (url.protocol !== "https:") throw new TypeError(`the URL must use https, not ${url.protocol.replace(":", "")}`);
  if (url.username || url.password) throw new TypeError("the URL must not hold a user name or password");
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) throw new TypeError("the URL must be an origin only (https://host:port), without a path");
  const host = normalizeHostName(url.hostname);
  if (!host) throw new TypeError(`"${url.hostname}" is not a host name or IP address`);
  return { origin: url.origin, host };
}
