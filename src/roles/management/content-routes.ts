/**
 * Image content on the management point (`/mp/v1/content`), over mutual TLS: a device gets a
 * signed manifest and the image's bytes only while its own current policy — on either boot
 * path — names that manifest's digest. The serving itself (Range, ETag, streaming) is shared
 * with distribution points (../distribution/content-serving.ts).
 */
import type { MpRoute } from "./routes.ts";
import { me } from "./routes.ts";
import type { Site } from "../../site/site.ts";
import type { Device } from "../../domain/device.ts";
import type { Assurance } from "../../domain/assurance.ts";
import { compilePolicy } from "../../domain/policy.ts";
import { BlobStore } from "../../content/blob-store.ts";
import { stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import { policyInput } from "../../site/policy.ts";
import { contentServingRoutes } from "../content-serving.ts";
import type { MpAccess } from "./routes.ts";
import type { MpPrincipal } from "./device-auth.ts";

/**
 * Whether the policy a certificate of `assurance` gets, on either boot path, lists this
 * manifest: an enrollment not sure enough for a deployment gets none of its content either.
 */
export async function policyNamesContent(site: Site, device: Device, digest: string, assurance: Assurance): Promise<boolean> {
  const input = await policyInput(site, device, "pxe", assurance);
  for (const bootPath of ["pxe", "media"] as const) {
    const policy = compilePolicy({ ...input, bootPath });
    if (policy.deployments.some((d) => d.content.some((c) => c.manifest === digest))) return true;
  }
  return false;
}

export function contentRoutes(site: Site): MpRoute[] {
  return contentServingRoutes<MpAccess, MpPrincipal>({
    access: "device",
    blobs: new BlobStore(site.dataDir),
    async find(ctx, digest) {
      const { device, certificate } = me(ctx);
      const record = await stores(site.db).content.byDigest(digest);
      if (!record) throw new SlipwayError("NOT_FOUND", `Cannot find content ${digest}`);
      if (!(await policyNamesContent(site, device, digest, certificate.assurance))) {
        await site.audit.append({ actor: `device:${device.id}`, action: "content.denied", outcome: "denied", object: `content:${digest}`, details: { path: ctx.path, name: record.name } });
        throw new SlipwayError("NOT_YOUR_RESOURCE", "Not allowed: this device's policy does not name that content");
      }
      return record;
    },
  });
}
