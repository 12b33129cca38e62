/** The CRL, regenerated when a revocation changes it and otherwise cached until it nears its next update. */
import type { Site } from "./site.ts";
import { stores } from "../storage/stores.ts";
import { createCrl } from "../security/ca.ts";

const VALID_MS = 3600_000;
const cache = new WeakMap<Site, { key: string; pem: string; until: number }>();

export async function currentCrl(site: Site): Promise<string> {
  const revoked = await stores(site.db).certificates.revoked();
  const key = revoked.map((r) => r.serial).join(",");
  const now = site.now();
  const hit = cache.get(site);
  if (hit && hit.key === key && hit.until > now.getTime()) return hit.pem;
  const pem = await createCrl(site.keys.ca, {
    revoked: revoked.map((r) => ({ serial: r.serial, revokedAt: new Date(r.statusChangedAt ?? r.createdAt),
      reason: (["keyCompromise", "superseded", "cessationOfOperation"].includes(r.statusReason ?? "") ? r.statusReason : "unspecified") as "unspecified" })),
    thisUpdate: now, nextUpdate: new Date(now.getTime() + VALID_MS), crlNumber: Math.floor(now.getTime() / 1000),
  });
  cache.set(site, { key, pem, until: now.getTime() + VALID_MS / 2 });
  return pem;
}
