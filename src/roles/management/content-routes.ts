/**
 * Image content on the management point (`/mp/v1/content`), over mutual TLS: a device gets a
 * signed manifest and the image's bytes only while its own current policy — on either boot
 * path — names that manifest's digest. Bytes come straight from the chunk files, streamed,
 * with Range so an interrupted download resumes; the agent verifies every chunk against the
 * signed manifest, so nothing here has to be trusted.
 */
import { Readable } from "node:stream";
import type { MpRoute } from "./routes.ts";
import type { RequestContext } from "../pipeline.ts";
import type { Site } from "../site/site.ts";
import type { DevicePrincipal } from "./device-auth.ts";
import type { Device } from "../../domain/device.ts";
import { compilePolicy } from "../../domain/policy.ts";
import { isManifestDigest } from "../../content/manifest.ts";
import { readImageRange } from "../../content/chunk-reader.ts";
import { parseRange, contentRange } from "../../protocol/http-range.ts";
import { BlobStore } from "../../storage/blob-store.ts";
import { stores } from "../../storage/stores.ts";
import type { ContentRecord } from "../../storage/content-store.ts";
import { SlipwayError } from "../../errors.ts";
import { policyInput } from "./policy.ts";

type Ctx = RequestContext<any, any, DevicePrincipal>;

export function contentRoutes(site: Site): MpRoute[] {
  const blobs = new BlobStore(site.dataDir);

  /** Whether the device's current policy, on either boot path, lists this manifest. */
  async function policyNames(device: Device, digest: string): Promise<boolean> {
    const input = await policyInput(site, device, "pxe");
    for (const bootPath of ["pxe", "media"] as const) {
      const policy = compilePolicy({ ...input, bootPath });
      if (policy.deployments.some((d) => d.content.some((c) => c.manifest === digest))) return true;
    }
    return false;
  }

  /** The manifest the URL names, if it exists and the calling device may have it. */
  async function permitted(ctx: Ctx): Promise<ContentRecord> {
    const { device } = ctx.principal!;
    const digest = ctx.params.digest;
    if (!isManifestDigest(digest)) throw new SlipwayError("BAD_REQUEST", 'Cannot find content: a content digest is "sha256:" and 64 lowercase hex digits');
    const record = await stores(site.db).content.byDigest(digest);
    if (!record) throw new SlipwayError("NOT_FOUND", `Cannot find content ${digest}`);
    if (!(await policyNames(device, digest))) {
      await site.audit.append({ actor: `device:${device.id}`, action: "content.denied", outcome: "denied", object: `content:${digest}`, details: { path: ctx.path, name: record.name } });
      throw new SlipwayError("NOT_YOUR_RESOURCE", "Not allowed: this device's policy does not name that content");
    }
    return record;
  }

  return [
    {
      method: "GET", path: "/mp/v1/content/:digest/manifest", access: "device", tag: "content",
      summary: "The signed manifest of an image the device's policy names",
      handler: async (ctx) => ({ body: (await permitted(ctx)).signed }),
    },
    {
      method: "GET", path: "/mp/v1/content/:digest/data", access: "device", tag: "content", head: true,
      summary: "An image's bytes (Range: bytes=N- or bytes=N-M for a part), for a device whose policy names it",
      handler: async (ctx) => {
        const record = await permitted(ctx);
        const size = record.size;
        const range = parseRange(ctx.headers.range, size);
        const common = { "accept-ranges": "bytes", etag: `"${record.digest}"` };
        if (range === "unsatisfiable") {
          const err = new SlipwayError("RANGE_NOT_SATISFIABLE", `The range is outside the content: it is ${size} bytes`);
          return { status: err.status, body: err.toJSON(), headers: { ...common, "content-range": contentRange(null, size) } };
        }
        const { start, end } = range ?? { start: 0, end: size - 1 };
        return {
          status: range ? 206 : 200,
          headers: {
            ...common, "content-type": "application/octet-stream", "content-length": String(end - start + 1),
            ...(range ? { "content-range": contentRange(range, size) } : {}),
          },
          // Import refuses empty files, but a manifest may list no chunks: then there is nothing to read.
          stream: size === 0 ? Readable.from([]) : readImageRange(blobs, record.signed.manifest, start, end),
        };
      },
    },
  ];
}
