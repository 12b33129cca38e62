/**
 * Content from a distribution point, as apply-image consumes it: the signed manifest the
 * policy names (checked against the pinned site key and the policy's digest), then the
 * image's bytes as one HTTPS stream, verified chunk by chunk. A broken connection resumes
 * with a Range request at the first chunk not yet verified; a chunk that does not match its
 * digest ends the step — fetching it again from the same server would give the same bytes.
 */
import type { KeyObject } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { ChunkVerifier, ManifestError, verifyManifest, type Manifest } from "../content/manifest.ts";
import type { ContentSource } from "./engine.ts";
import { MpClient, MpError, isRetryable } from "./mp-client.ts";

const MAX_RESUMES = 20;

export class DistributionPointContent implements ContentSource {
  readonly #client: MpClient;
  readonly #key: KeyObject;
  readonly #byImage: Map<string, string | null>;
  constructor(client: MpClient, signingKey: KeyObject, content: { image: string; manifest?: string | null }[]) {
    this.#client = client;
    this.#key = signingKey;
    this.#byImage = new Map(content.map((c) => [c.image, c.manifest ?? null]));
  }

  resolve(image: string): string | null {
    return this.#byImage.get(image) ?? null;
  }

  async manifest(digest: string): Promise<Manifest> {
    const signed = await this.#client.jsonRetry("GET", `/mp/v1/content/${encodeURIComponent(digest)}/manifest`);
    return verifyManifest(signed, this.#key, digest);
  }

  async *chunks(m: Manifest, digest: string, opts: { signal: AbortSignal; onProgress(bytes: number): void }): AsyncIterable<Buffer> {
    let verifier = new ChunkVerifier(m);
    let failures = 0;
    while (verifier.nextChunk < m.chunks.length) {
      opts.signal.throwIfAborted();
      // Resume at a chunk boundary: bytes of a chunk cut off mid-way are fetched again.
      verifier = new ChunkVerifier(m, verifier.nextChunk);
      const start = verifier.offset;
      try {
        const res = await this.#client.open("GET", `/mp/v1/content/${encodeURIComponent(digest)}/data`, {
          headers: start > 0 ? { range: `bytes=${start}-` } : {}, timeoutMs: 120_000,
        });
        const status = res.statusCode ?? 0;
        if (status !== (start > 0 ? 206 : 200)) {
          res.resume();
          throw new MpError(status, `HTTP_${status}`, `Cannot download image "${m.name}": the distribution point answered ${status}`);
        }
        const onAbort = () => res.destroy(opts.signal.reason as Error);
        opts.signal.addEventListener("abort", onAbort, { once: true });
        try {
          for await (const data of res) {
            for (const chunk of verifier.push(data as Buffer)) {
              failures = 0;
              yield chunk;
              opts.onProgress(verifier.offset);
            }
          }
        } finally {
          opts.signal.removeEventListener("abort", onAbort);
        }
        if (verifier.nextChunk < m.chunks.length) throw Object.assign(new Error("the download ended early"), { code: "ECONNRESET" });
      } catch (err) {
        if (err instanceof ManifestError || opts.signal.aborted) throw err;
        const retry = isRetryable(err) || (err as { code?: string }).code === "ERR_STREAM_PREMATURE_CLOSE" || /aborted|socket hang up/i.test((err as Error).message);
        if (!retry || ++failures > MAX_RESUMES) throw new Error(`Cannot download image "${m.name}": ${(err as Error).message}`);
        await sleep(Math.min(10_000, 500 * 2 ** Math.min(failures, 5)));
      }
    }
    verifier.finish();
  }
}
