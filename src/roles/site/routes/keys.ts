/**
 * Master key rotation while the site serves: a new master key is made, every secret's
 * data key is rewrapped under it (ciphertexts untouched), then the old key is destroyed.
 */
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import type { Sealed } from "../../../security/envelope.ts";
import { actor } from "./common.ts";

export async function rotateMasterKey(site: Site, who: string): Promise<{ from: string; to: string; rewrapped: number; retired: string[] }> {
  const kr = site.keys.keyring;
  const from = kr.currentKid;
  const to = kr.rotate();
  const s = stores(site.db);
  let rewrapped = 0;
  for (;;) {
    const batch = await s.variables.sealedNotUnder(to, 200);
    if (batch.length === 0) break;
    for (const v of batch) {
      const sealed = kr.rewrap(v.sealed as Sealed);
      rewrapped += await s.variables.replaceSealed(v.id, v.keyId ?? "", sealed, sealed.kid);
    }
  }
  const counts = await s.variables.countByKey();
  const retired: string[] = [];
  for (const kid of kr.kids()) {
    if (kid !== to && !counts[kid]) {
      kr.retire(kid);
      retired.push(kid);
    }
  }
  await site.audit.append({ actor: who, action: "keys.rotate", object: "master-key", details: { from, to, rewrapped, retired } });
  return { from, to, rewrapped, retired };
}

export function keyRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/keys", access: "keys.rotate", tag: "keys", summary: "Master keys in use and how many secrets each wraps",
      handler: async () => ({ body: { current: site.keys.keyring.currentKid, secretsByKey: await stores(site.db).variables.countByKey() } }),
    }),
    route({
      method: "POST", path: "/api/v1/keys/rotate", access: "keys.rotate", tag: "keys",
      summary: "Make a new master key, rewrap every data key under it, destroy the old one",
      handler: async (ctx) => ({ body: await rotateMasterKey(site, actor(ctx)) }),
    }),
  ];
}
