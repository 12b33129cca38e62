/**
 * Serving image content to devices — `GET /mp/v1/content/:digest/manifest` and
 * `GET|HEAD /mp/v1/content/:digest/data` — with one contract wherever it is served, the
 * management point or a distribution point: the signed manifest as JSON; the bytes streamed
 * from the chunk files with Range (RFC 9110 §14: 206 for one range, 416 past the end, a range
 * we do not understand means the whole content), a strong ETag of the manifest digest, and
 * never the whole image in memory. Who may have what is the caller's `find`; the agent
 * verifies every chunk against the signed manifest, so nothing here has to be trusted.
 */
import { routeOf, type Route, type RequestContext } from "./pipeline.ts";
import { isManifestDigest, type SignedManifest } from "../content/manifest.ts";
import { writeImageRange } from "../content/chunk-reader.ts";
import { parseRange, contentRange } from "../protocol/http-range.ts";
import type { BlobStore } from "../content/blob-store.ts";
import { SlipwayError } from "../errors.ts";

/** What a server found for a digest: the signed manifest, whose chunks are in its blob store. */
export type ServedContent = { digest: string; signed: SignedManifest };

export type ContentServingOptions<A extends string, P> = {
  /** The access every content route declares (the role's device access). */
  access: A;
  blobs: BlobStore;
  /**
   * The content a well-formed digest names, if the caller may have it; throws a SlipwayError
   * otherwise (NOT_FOUND, NOT_YOUR_RESOURCE, …).
   */
  find(ctx: RequestContext<unknown, unknown, P>, digest: string): Promise<ServedContent>;
};

export function contentServingRoutes<A extends string, P>(opts: ContentServingOptions<A, P>): Route<A, P>[] {
  const route = routeOf<A, P>();
  const lookup = (ctx: RequestContext<unknown, unknown, P, { digest: string }>): Promise<ServedContent> => {
    const digest = ctx.params.digest;
    if (!isManifestDigest(digest)) throw new SlipwayError("BAD_REQUEST", 'Cannot find content: a content digest is "sha256:" and 64 lowercase hex digits');
    return opts.find(ctx, digest);
  };
  return [
    route({
      method: "GET", path: "/mp/v1/content/:digest/manifest", access: opts.access, tag: "content",
      summary: "The signed manifest of an image the device's policy names",
      handler: async (ctx) => ({ body: (await lookup(ctx)).signed }),
    }),
    route({
      method: "GET", path: "/mp/v1/content/:digest/data", access: opts.access, tag: "content", head: true,
      summary: "An image's bytes (Range: bytes=N- or bytes=N-M for a part), for a device whose policy names it",
      handler: async (ctx) => {
        const { digest, signed } = await lookup(ctx);
        const size = signed.manifest.size;
        const range = parseRange(ctx.headers.range, size);
        const common = { "accept-ranges": "bytes", etag: `"${digest}"` };
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
          send: size === 0 ? async () => {} : (out) => writeImageRange(opts.blobs, signed.manifest, start, end, out),
        };
      },
    }),
  ];
}
