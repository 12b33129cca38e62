/**
 * Which host names a distribution point may hold (DESIGN.md, Lifecycles): a certificate only
 * for names no other role holds — never the site's or the management point's, never loopback,
 * never another distribution point's. The site's names are what its servers' certificates
 * carry, recorded by every site and management point process when it starts (so processes on
 * other hosts see them), plus the server certificate in this data folder and this host's name.
 * Checked when a distribution point is registered and again before any certificate is issued.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import type { Site } from "./site.ts";
import type { Sql } from "../storage/db.ts";
import { stores } from "../storage/stores.ts";
import type { DistributionPoint } from "../storage/distribution-point-store.ts";
import { canonicalHost, hostKey, isLoopbackHost } from "../domain/host-name.ts";
import { SlipwayError } from "../errors.ts";

const SETTING = "site.host-name:";

/** The DNS names and IP addresses a certificate's subjectAltName carries, canonical. */
export function certificateHostNames(certPem: string): string[] {
  let san: string | undefined;
  try {
    san = new X509Certificate(certPem).subjectAltName;
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const m of (san ?? "").matchAll(/(?:DNS|IP Address):([^,\s]+)/g)) {
    const n = canonicalHost(m[1]);
    if (n && !out.includes(n)) out.push(n);
  }
  return out;
}

/**
 * Records names as the site's own (its servers' certificates, --public-name, PXE link
 * addresses): one row each, so processes starting at once never lose each other's. Names are
 * never forgotten: a name the site once served under stays out of distribution points' reach.
 */
export async function recordSiteHostNames(site: Site, names: Iterable<string>): Promise<void> {
  const at = site.now().toISOString();
  names = [...names];
  const held = await heldByDistributionPoint(site, names);
  if (held) {
    throw new SlipwayError("CONFLICT", `Cannot serve the site as "${held.name}": distribution point "${held.dp}" holds that name and a certificate for it; ` +
      `remove it first (slipway dp remove ${held.dp})`, { hostName: held.name, distributionPoint: held.dp });
  }
  for (const text of names) {
    const n = canonicalHost(text);
    if (!n) continue;
    await stores(site.db).settings.setIfAbsent(SETTING + n, at);
  }
}

/**
 * The first of `names` a registered distribution point holds: the site must not take a name
 * after a distribution point got a certificate for it, or both could pose as each other.
 */
export async function heldByDistributionPoint(site: Site, names: Iterable<string>): Promise<{ name: string; dp: string } | null> {
  const held = new Map<string, string>();
  for (const d of await stores(site.db).distributionPoints.list()) {
    for (const h of d.hostNames) {
      const c = canonicalHost(h);
      if (c) held.set(hostKey(c), d.name);
    }
  }
  for (const text of names) {
    const n = canonicalHost(text);
    const dp = n ? held.get(hostKey(n)) : undefined;
    if (n && dp) return { name: n, dp };
  }
  return null;
}

/** Every name the site and its management points hold, canonical. */
export async function siteHostNames(site: Site, db: Sql = site.db): Promise<Set<string>> {
  const out = new Set<string>();
  const rows = await stores(db).settings.withPrefix(SETTING);
  for (const r of rows) out.add(String(r.key).slice(SETTING.length));
  try {
    for (const n of certificateHostNames(fs.readFileSync(path.join(site.keys.dir, "server.crt"), "utf8"))) out.add(n);
  } catch {
    // No server certificate in this data folder (--tls-cert): the recorded names stand.
  }
  const self = canonicalHost(os.hostname());
  if (self) out.add(self);
  return out;
}

export type NameRefusal = { name: string; code: "VALIDATION" | "CONFLICT"; why: string };

/**
 * The first of `names` that `dp` may not hold, and why; null when it may hold them all.
 * Another distribution point's name is refused only when that one registered first, so
 * of two registrations racing for one name (or made before this rule) exactly one keeps it.
 */
export async function refusedHostName(site: Site, names: readonly string[], dp?: Pick<DistributionPoint, "id" | "createdAt">, db: Sql = site.db): Promise<NameRefusal | null> {
  const siteNames = new Map([...(await siteHostNames(site, db))].map((n) => [hostKey(n), n]));
  const others = new Map<string, DistributionPoint>();
  for (const d of await stores(db).distributionPoints.list()) {
    if (dp && (d.id === dp.id || d.createdAt > dp.createdAt || (d.createdAt === dp.createdAt && d.id > dp.id))) continue;
    for (const h of d.hostNames) {
      const c = canonicalHost(h);
      if (c && !others.has(hostKey(c))) others.set(hostKey(c), d);
    }
  }
  for (const text of names) {
    const n = canonicalHost(text);
    if (!n) return { name: text, code: "VALIDATION", why: "it is not a host name or IP address" };
    const key = hostKey(n);
    if (isLoopbackHost(n)) return { name: n, code: "VALIDATION", why: "it is a loopback or unspecified address: it names whichever machine uses it" };
    const s = siteNames.get(key);
    if (s !== undefined) return { name: n, code: "CONFLICT", why: `it is the site's own name (${s}): a distribution point must never be able to pose as the site or its management point` };
    const other = others.get(key);
    if (other) return { name: n, code: "CONFLICT", why: `distribution point "${other.name}" holds it` };
  }
  return null;
}

/** Throws the refusal as a SlipwayError saying what could not be done, after auditing it. */
export async function refuseHostName(site: Site, refusal: NameRefusal, what: string, audit: { actor: string; action: string; object: string | null; details: Record<string, unknown> }): Promise<never> {
  await site.audit.append({ ...audit, outcome: "denied", details: { ...audit.details, hostName: refusal.name, reason: refusal.why } });
  throw new SlipwayError(refusal.code, `${what}: host name "${refusal.name}" is refused, because ${refusal.why}`, { hostName: refusal.name });
}
