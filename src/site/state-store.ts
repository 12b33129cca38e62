/**
 * The site's built-in state migration point: the chunk store (src/state/chunk-store.ts) under
 * DATA/state, opened once per site, with each association's own quota checked on top of the
 * store's capacity and free-space reserve. Services reach it through the StateStore interface,
 * which a separate state migration point's client can implement too.
 */
import path from "node:path";
import type { Site } from "./site.ts";
import { ChunkStore } from "../state/chunk-store.ts";
import { parseChunkHeader, StateCipherError, MAX_SEALED_CHUNK_BYTES } from "../security/state-cipher.ts";
import { MAX_QUOTA_BYTES } from "../domain/association.ts";
import { SlipwayError } from "../errors.ts";
import type { StateChunks } from "./services/associations.ts";

export { MAX_SEALED_CHUNK_BYTES };

/** Every association's chunks together may not exceed this on the built-in store. */
export const DEFAULT_STATE_CAPACITY_BYTES = 4 * 1024 ** 4;

export interface StateStore extends StateChunks {
  /** Starts capture attempt `streamId` (discarding an unfinished earlier one). */
  beginStream(associationId: string, streamId: string, opts: { expectedBytes?: number }): Promise<void>;
  /** Stores one sealed chunk (its header names stream, index and whether it is final); durable when it resolves. */
  put(associationId: string, streamId: string, index: number, bytes: Buffer, quotaBytes: number): Promise<void>;
  /** The finished capture's chunk count and bytes; CONFLICT when a chunk up to the final one is missing. */
  complete(associationId: string, streamId: string): Promise<{ chunks: number; storedBytes: number }>;
  read(associationId: string, index: number): Promise<Buffer>;
}

class BuiltinStateStore implements StateStore {
  readonly #store: Promise<ChunkStore>;
  constructor(dir: string) {
    this.#store = ChunkStore.open(dir, { capacityBytes: DEFAULT_STATE_CAPACITY_BYTES, associationQuotaBytes: MAX_QUOTA_BYTES });
    // A store that cannot open fails each request that needs it; nothing else waits on it.
    this.#store.catch(() => undefined);
  }
  async beginStream(associationId: string, streamId: string, opts: { expectedBytes?: number }): Promise<void> {
    await (await this.#store).beginStream(associationId, streamId, opts);
  }
  async put(associationId: string, streamId: string, index: number, bytes: Buffer, quotaBytes: number): Promise<void> {
    const store = await this.#store;
    let final: boolean;
    try {
      final = parseChunkHeader(bytes, index).final;
    } catch (err) {
      if (err instanceof StateCipherError) throw new SlipwayError("VALIDATION", `Cannot store chunk ${index} of association ${associationId}: ${err.message}`);
      throw err;
    }
    // The association's own quota is checked by the store, inside its lock (parallel puts cannot all pass).
    await store.put(associationId, streamId, index, bytes, final, { quotaBytes });
  }
  async complete(associationId: string, streamId: string): Promise<{ chunks: number; storedBytes: number }> {
    const s = (await this.#store).status(associationId);
    if (!s || s.streamId !== streamId || !s.complete) {
      const missing = !s ? "nothing is stored" : s.streamId !== streamId ? "the store holds another capture attempt" : s.finalIndex === null ? "the final chunk is not stored" : `chunk ${s.firstMissing} is missing`;
      throw new SlipwayError("CONFLICT", `Cannot complete the capture of association ${associationId}: ${missing}`);
    }
    return { chunks: s.chunkCount, storedBytes: s.bytes };
  }
  async read(associationId: string, index: number): Promise<Buffer> {
    return (await this.#store).read(associationId, index);
  }
  async destroy(associationId: string): Promise<void> {
    await (await this.#store).destroy(associationId);
  }
}

const opened = new WeakMap<Site, BuiltinStateStore>();

/** The site's own state store under DATA/state (opened on first use, once per site). */
export function stateStoreOf(site: Site): StateStore {
  let s = opened.get(site);
  if (!s) {
    s = new BuiltinStateStore(path.join(site.dataDir, "state"));
    opened.set(site, s);
  }
  return s;
}

export const stateChunksOf = (site: Site): StateChunks => stateStoreOf(site);
