/**
 * Content from a distribution point, as apply-image consumes it: the signed manifest the
 * policy names (checked against the pinned site key and the policy's digest), then the
 * image's bytes as one HTTPS stream, verified chunk by chunk. A broken connection resumes
 * with a Range request at the first chunk not yet verified. Sources are tried in the order
 * the policy lists them (distribution points holding a verified replica), then the management
 * point itself; a source that fails — unreachable, refusing, or serving a chunk that does not
 * match its digest — hands over to the next at the first chunk not yet verified. Only when
 * every source has failed does the step fail, with the last source's reason.
 */
import type { KeyObject } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { ChunkVerifier, ManifestError, verifyManifest, type Manifest } from "../content/manifest.ts";
import type { ContentSource } from "./engine.ts";
import { HttpsError } from "../security/pinned-https.ts";
import { MpClient, isRetryable } from "./mp-client.ts";

const MAX_RESUMES = 20;
/** Verified chunks held ahead of the writer (16 MiB), so the network need not wait for the disk. */
const READ_AHEAD_CHUNKS = 4;

/**
 * Pulls up to `depth` items ahead of the consumer. An async generator queues next() calls and
 * runs on to fulfil them, so the download and its verification go on while the consumer
 * writes; values and the first error still arrive in order.
 */
export async function* readAhead<T>(source: AsyncIterable<T>, depth: number): AsyncIterable<T> {
  const it = source[Symbol.asyncIterator]();
  const queue: Promise<IteratorResult<T>>[] = [];
  const pull = () => {
    const p = it.next();
    p.catch(() => {}); // observed when its turn comes; never an unhandled rejection meanwhile
    queue.push(p);
  };
  try {
    for (let i = 0; i < depth; i++) pull();
    for (;;) {
      const r = await queue.shift()!;
      if (r.done) return;
      pull();
      yield r.value;
    }
  } finally {
    await it.return?.(undefined as never).catch(() => {});
  }
}

export type PolicyContent = { image: string; manifest?: string | null; sources?: string[] };

export class DistributionPointContent implements ContentSource {
  readonly #client: MpClient;
  readonly #key: KeyObject;
  readonly #byImage: Map<string, string | null>;
  readonly #sources: Map<string, string[]>;
  readonly #log: (line: string) => void;
  constructor(client: MpClient, signingKey: KeyObject, content: PolicyContent[], log: (line: string) => void = () => {}) {
    this.#client = client;
    this.#key = signingKey;
    this.#byImage = new Map(content.map((c) => [c.image, c.manifest ?? null]));
    this.#sources = new Map(content.filter((c) => c.manifest).map((c) => [c.manifest!, (c.sources ?? []).filter((u) => /^https:\/\//.test(u))]));
    this.#log = log;
  }

  resolve(image: string): string | null {
    return this.#byImage.get(image) ?? null;
  }

  /** Distribution points first, in the policy's order, then the management point. */
  #clients(digest: string): MpClient[] {
    return [...(this.#sources.get(digest) ?? []).map((u) => this.#client.sibling(u)), this.#client];
  }

  async manifest(digest: string): Promise<Manifest> {
    let last: unknown;
    for (const c of this.#clients(digest)) {
      try {
        // Any server may hand it over: only the site's signature and the policy's digest count.
        return verifyManifest(await c.jsonRetry("GET", `/mp/v1/content/${encodeURIComponent(digest)}/manifest`, undefined, c === this.#client ? 8 : 2), this.#key, digest);
      } catch (err) {
        last = err;
        if (c !== this.#client) this.#log(`${c.baseUrl}: ${(err as Error).message}; trying the next source`);
      }
    }
    throw last;
  }

  async *chunks(m: Manifest, digest: string, opts: { signal: AbortSignal; onProgress(bytes: number): void }): AsyncIterable<Buffer> {
    const clients = this.#clients(digest);
    let next = 0;
    for (let i = 0; i < clients.length; i++) {
      const c = clients[i];
      try {
        for await (const chunk of readAhead(this.#from(c, m, digest, next, opts), READ_AHEAD_CHUNKS)) {
          next++;
          yield chunk;
        }
        return;
      } catch (err) {
        if (opts.signal.aborted || i === clients.length - 1) throw err;
        this.#log(`${c.baseUrl}: ${(err as Error).message}; continuing from chunk ${next} with the next source`);
      } finally {
        if (c !== this.#client) c.close();
      }
    }
  }

  async *#from(client: MpClient, m: Manifest, digest: string, startChunk: number, opts: { signal: AbortSignal; onProgress(bytes: number): void }): AsyncIterable<Buffer> {
    let verifier = new ChunkVerifier(m, startChunk);
    let failures = 0;
    while (verifier.nextChunk < m.chunks.length) {
      opts.signal.throwIfAborted();
      // Resume at a chunk boundary: bytes of a chunk cut off mid-way are fetched again.
      verifier = new ChunkVerifier(m, verifier.nextChunk);
      const start = verifier.offset;
      try {
        const res = await client.open("GET", `/mp/v1/content/${encodeURIComponent(digest)}/data`, {
          headers: start > 0 ? { range: `bytes=${start}-` } : {}, timeoutMs: 120_000,
        });
        const status = res.statusCode ?? 0;
        if (status !== (start > 0 ? 206 : 200)) {
          res.resume();
          throw new HttpsError(status, `HTTP_${status}`, `Cannot download image "${m.name}": the distribution point answered ${status}`);
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
        // A distribution point gets a few tries; the management point, the last resort, more.
        const limit = client === this.#client ? MAX_RESUMES : 3;
        if (!retry || ++failures > limit) throw new Error(`Cannot download image "${m.name}" from ${client.baseUrl}: ${(err as Error).message}`);
        await sleep(Math.min(10_000, 500 * 2 ** Math.min(failures, 5)));
      }
    }
    verifier.finish();
  }
}
