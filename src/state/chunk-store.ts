/**
 * User state at rest on a state migration point (issue #14; trust model §5): the encrypted
 * chunks of each computer association as files, ciphertext only, never more than the quotas
 * allow and never filling the disk.
 *
 * Layout (the folder is the site's DATA/state/ or a separate SMP's data folder; all 0700/0600):
 *   <association id>/stream              the current capture attempt's stream id and a newline
 *   <association id>/0000000000.chunk    chunk 0 exactly as sealed (docs/user-state-format.md)
 *   <association id>/.tmp-<random>       a put in progress (removed on open)
 *   .destroy-<association id>-<random>   an association being destroyed (removed on open)
 *
 * There is no separate index file that could disagree with the chunks: every chunk's header
 * names its stream, index and final flag, so the index is rebuilt from the files on open by
 * reading 30 bytes of each. A put is durable before it resolves: temporary file, fsync,
 * rename, fsync of the folder.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { SlipwayError, type ErrorCode } from "../errors.ts";
import {
  CHUNK_HEADER_BYTES, MAX_CHUNK_INDEX, MAX_SEALED_CHUNK_BYTES, MIN_SEALED_CHUNK_BYTES, StateCipherError,
  isAssociationId, isStreamId, parseChunkHeader, readChunkHeader, sealedLengthOf,
} from "../security/state-cipher.ts";

export type ChunkStoreOptions = {
  /** Bytes the whole store may hold (every association's chunks). */
  capacityBytes: number;
  /** Bytes one association may hold. */
  associationQuotaBytes: number;
  /** Free bytes to leave on the file system whatever the quotas say; default 1 GiB. */
  reserveBytes?: number;
};

export type StoredChunk = { index: number; size: number; final: boolean };

export type AssociationStatus = {
  associationId: string;
  streamId: string;
  chunkCount: number;
  bytes: number;
  /** The index of the final chunk, once it is stored. */
  finalIndex: number | null;
  /** The final chunk and every index below it are stored. */
  complete: boolean;
  /** The lowest index not yet stored (where a resumed upload starts); null when complete. */
  firstMissing: number | null;
};

/** What opening the store cleaned up after a crash. */
export type RecoveryReport = {
  /** Temporary files of puts and stream starts that never finished. */
  removedTempFiles: number;
  /** Chunks of an earlier stream whose discard a crash interrupted. */
  discardedChunks: number;
  /** Association folders of destroys (or stream starts) a crash interrupted. */
  removedFolders: number;
  /** Chunk files whose header disagrees with their name or size, or an association folder whose
   *  stream file is unreadable (disk damage): renamed to *.corrupt, never served. */
  corrupt: string[];
};

export type StateStoreReason =
  | "invalid" | "not-found" | "no-stream" | "other-stream" | "different-chunk" | "after-final" | "already-complete"
  | "quota" | "capacity" | "disk-reserve";

// A store that is full answers QUOTA_EXCEEDED (HTTP 507): the request is fine, the store cannot take it.
const CODES: Record<StateStoreReason, ErrorCode> = {
  "invalid": "VALIDATION",
  "not-found": "NOT_FOUND",
  "no-stream": "CONFLICT",
  "other-stream": "CONFLICT",
  "different-chunk": "CONFLICT",
  "after-final": "CONFLICT",
  "already-complete": "CONFLICT",
  "quota": "QUOTA_EXCEEDED",
  "capacity": "QUOTA_EXCEEDED",
  "disk-reserve": "QUOTA_EXCEEDED",
};

/** A refused store operation; nothing was written. `details.reason` says which rule refused it. */
export class StateStoreError extends SlipwayError {
  readonly reason: StateStoreReason;
  constructor(reason: StateStoreReason, message: string, details: Record<string, unknown> = {}) {
    super(CODES[reason], message, { reason, ...details });
    this.name = "StateStoreError";
    this.reason = reason;
  }
}

const GiB = 1024 ** 3;
const STREAM_FILE = "stream";
const TMP_PREFIX = ".tmp-";
const DESTROY_PREFIX = ".destroy-";
const CHUNK_FILE = /^(\d{10})\.chunk$/;

type Association = {
  streamId: string;
  chunks: Map<number, { size: number; final: boolean }>;
  bytes: number;
  finalIndex: number | null;
};

export class ChunkStore {
  readonly dir: string;
  readonly options: Readonly<Required<ChunkStoreOptions>>;
  /** What `open` cleaned up. */
  readonly recovery: RecoveryReport;
  #associations: Map<string, Association>;
  #total: number;
  /** Bytes of puts in progress, counted against the capacity before they are written. */
  #reserved = 0;
  #locks = new Map<string, Promise<void>>();

  private constructor(dir: string, options: Required<ChunkStoreOptions>, associations: Map<string, Association>, recovery: RecoveryReport) {
    this.dir = dir;
    this.options = Object.freeze({ ...options });
    this.#associations = associations;
    this.#total = [...associations.values()].reduce((n, a) => n + a.bytes, 0);
    this.recovery = recovery;
  }

  /**
   * Opens (creating if needed) the store in `dir`: removes what a crash left half-done and
   * rebuilds the index from the chunks that are durable.
   */
  static async open(dir: string, options: ChunkStoreOptions): Promise<ChunkStore> {
    const o = { reserveBytes: GiB, ...options };
    for (const [name, value, min] of [["capacityBytes", o.capacityBytes, 1], ["associationQuotaBytes", o.associationQuotaBytes, 1], ["reserveBytes", o.reserveBytes, 0]] as const) {
      if (!Number.isSafeInteger(value) || value < min) throw new TypeError(`Cannot open the state store: ${name} must be an integer of at least ${min}, not ${value}`);
    }
    const root = path.resolve(dir);
    await fs.promises.mkdir(root, { recursive: true, mode: 0o700 });
    await fs.promises.chmod(root, 0o700);
    const recovery: RecoveryReport = { removedTempFiles: 0, discardedChunks: 0, removedFolders: 0, corrupt: [] };
    const associations = new Map<string, Association>();
    for (const entry of await fs.promises.readdir(root, { withFileTypes: true })) {
      const full = path.join(root, entry.name);
      if (entry.name.startsWith(DESTROY_PREFIX)) {
        await fs.promises.rm(full, { recursive: true, force: true });
        recovery.removedFolders++;
      } else if (entry.name.startsWith(TMP_PREFIX)) {
        await fs.promises.rm(full, { force: true });
        recovery.removedTempFiles++;
      } else if (entry.isDirectory() && isAssociationId(entry.name)) {
        const a = await recoverAssociation(root, entry.name, recovery);
        if (a) associations.set(entry.name, a);
      }
      // Anything else is not ours: left alone, never served.
    }
    await fsyncDir(root);
    return new ChunkStore(root, o, associations, recovery);
  }

  /**
   * Starts capture attempt `streamId` for an association, discarding the chunks of an
   * unfinished earlier attempt. Starting the current stream again changes nothing (a retry);
   * an association whose capture is complete is refused (destroy it first). `expectedBytes`,
   * when the caller can estimate the capture, is checked against the quotas and free space now
   * rather than part-way through.
   */
  async beginStream(associationId: string, streamId: string, o: { expectedBytes?: number } = {}): Promise<{ discardedChunks: number }> {
    checkAssociation(associationId, "start a capture");
    if (!isStreamId(streamId)) throw new StateStoreError("invalid", `Cannot start a capture for association ${associationId}: the stream id must be 32 lowercase hex digits`);
    if (o.expectedBytes !== undefined && (!Number.isSafeInteger(o.expectedBytes) || o.expectedBytes < 0)) {
      throw new StateStoreError("invalid", `Cannot start a capture for association ${associationId}: expectedBytes must be a non-negative integer`);
    }
    return this.#exclusive(associationId, async () => {
      const existing = this.#associations.get(associationId);
      if (existing?.streamId === streamId) return { discardedChunks: 0 };
      if (existing && isComplete(existing)) {
        throw new StateStoreError("already-complete", `Cannot start a capture for association ${associationId}: it already holds a complete capture (stream ${existing.streamId}); destroy it first`);
      }
      if (o.expectedBytes !== undefined) {
        const what = `start a capture for association ${associationId}`;
        this.#checkLimits(associationId, what, o.expectedBytes, existing?.bytes ?? 0);
        await this.#checkDisk(what, o.expectedBytes);
      }
      const folder = path.join(this.dir, associationId);
      if (!existing) {
        await fs.promises.mkdir(folder, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "EEXIST") throw err;
        });
        // Never write through something planted at the association's name (a symlink elsewhere).
        if (!(await fs.promises.lstat(folder)).isDirectory()) throw new Error(`Cannot start a capture for association ${associationId}: ${folder} is not a folder`);
        await fsyncDir(this.dir);
      }
      // The new stream id is durable before any old chunk goes: a crash in between leaves old
      // chunks that `open` recognises by their stream id and discards.
      await writeDurably(folder, STREAM_FILE, Buffer.from(`${streamId}\n`));
      let discardedChunks = 0;
      if (existing) {
        for (const index of existing.chunks.keys()) {
          await fs.promises.rm(path.join(folder, chunkFileName(index)), { force: true });
          discardedChunks++;
        }
        await fsyncDir(folder);
        this.#total -= existing.bytes;
      }
      this.#associations.set(associationId, { streamId, chunks: new Map(), bytes: 0, finalIndex: null });
      return { discardedChunks };
    });
  }

  /**
   * Stores chunk `index` of the association's current stream; resolves once it is durable.
   * `bytes` is the sealed chunk, whose header must agree with `streamId`, `index` and `final`.
   * The same chunk again is accepted without a write (`written: false`); a different chunk
   * for a stored index, a chunk of another stream, or one past the final chunk is refused.
   */
  async put(associationId: string, streamId: string, index: number, bytes: Uint8Array, final: boolean, o: { quotaBytes?: number } = {}): Promise<{ written: boolean }> {
    const what = `store chunk ${index} of association ${associationId}`;
    checkAssociation(associationId, what);
    if (!isStreamId(streamId)) throw new StateStoreError("invalid", `Cannot ${what}: the stream id must be 32 lowercase hex digits`);
    checkIndex(index, what);
    if (typeof final !== "boolean") throw new StateStoreError("invalid", `Cannot ${what}: final must be true or false`);
    if (!(bytes instanceof Uint8Array) || bytes.length < MIN_SEALED_CHUNK_BYTES || bytes.length > MAX_SEALED_CHUNK_BYTES) {
      throw new StateStoreError("invalid", `Cannot ${what}: a sealed chunk is ${MIN_SEALED_CHUNK_BYTES} to ${MAX_SEALED_CHUNK_BYTES} bytes`);
    }
    let header;
    try {
      header = parseChunkHeader(bytes);
    } catch (err) {
      if (err instanceof StateCipherError) throw new StateStoreError("invalid", `Cannot ${what}: ${err.message}`);
      throw err;
    }
    if (header.streamId !== streamId || header.index !== index || header.final !== final) {
      throw new StateStoreError("invalid", `Cannot ${what}: the chunk's header says stream ${header.streamId}, chunk ${header.index}${header.final ? " (final)" : ""}`);
    }
    const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    return this.#exclusive(associationId, async () => {
      const a = this.#associations.get(associationId);
      if (!a) throw new StateStoreError("no-stream", `Cannot ${what}: no capture has been started for it`);
      if (a.streamId !== streamId) {
        throw new StateStoreError("other-stream", `Cannot ${what}: it belongs to stream ${streamId}, but the association's current capture is stream ${a.streamId}`);
      }
      const stored = a.chunks.get(index);
      if (stored) {
        const same = stored.size === data.length && (await fs.promises.readFile(path.join(this.dir, associationId, chunkFileName(index)))).equals(data);
        if (same) return { written: false };
        throw new StateStoreError("different-chunk", `Cannot ${what}: a different chunk ${index} is already stored`);
      }
      if (a.finalIndex !== null && index > a.finalIndex) {
        throw new StateStoreError("after-final", `Cannot ${what}: chunk ${a.finalIndex} is the final chunk`);
      }
      if (final) {
        if (a.finalIndex !== null) throw new StateStoreError("after-final", `Cannot ${what}: chunk ${a.finalIndex} is already the final chunk`);
        const beyond = Math.max(-1, ...a.chunks.keys());
        if (beyond > index) throw new StateStoreError("after-final", `Cannot ${what} as the final chunk: chunk ${beyond} is already stored`);
      }
      // Counted against the capacity before the first await, so concurrent puts to other
      // associations cannot all pass the same check.
      this.#checkLimits(associationId, what, data.length, 0, o.quotaBytes);
      this.#reserved += data.length;
      try {
        await this.#checkDisk(what, 0); // this put's bytes are already in #reserved
        await writeDurably(path.join(this.dir, associationId), chunkFileName(index), data);
      } finally {
        this.#reserved -= data.length;
      }
      a.chunks.set(index, { size: data.length, final });
      a.bytes += data.length;
      this.#total += data.length;
      if (final) a.finalIndex = index;
      return { written: true };
    });
  }

  /** True when the association's final chunk and every index below it are stored. */
  complete(associationId: string): boolean {
    checkAssociation(associationId, "check a capture");
    const a = this.#associations.get(associationId);
    return a !== undefined && isComplete(a);
  }

  /** The association's current capture, or null when it has none. */
  status(associationId: string): AssociationStatus | null {
    checkAssociation(associationId, "read a capture's status");
    const a = this.#associations.get(associationId);
    if (!a) return null;
    let firstMissing: number | null = 0;
    while (a.chunks.has(firstMissing)) firstMissing++;
    if (isComplete(a)) firstMissing = null;
    return { associationId, streamId: a.streamId, chunkCount: a.chunks.size, bytes: a.bytes, finalIndex: a.finalIndex, complete: isComplete(a), firstMissing };
  }

  /** The stored chunks of the association's current stream, by index. */
  chunks(associationId: string): StoredChunk[] {
    checkAssociation(associationId, "list chunks");
    const a = this.#associations.get(associationId);
    if (!a) return [];
    return [...a.chunks].map(([index, c]) => ({ index, size: c.size, final: c.final })).sort((x, y) => x.index - y.index);
  }

  /** The sealed bytes of one stored chunk. */
  async read(associationId: string, index: number): Promise<Buffer> {
    const what = `read chunk ${index} of association ${associationId}`;
    checkAssociation(associationId, what);
    checkIndex(index, what);
    const notFound = () => new StateStoreError("not-found", `Cannot ${what}: it is not stored`);
    if (!this.#associations.get(associationId)?.chunks.has(index)) throw notFound();
    try {
      return await fs.promises.readFile(path.join(this.dir, associationId, chunkFileName(index)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw notFound(); // destroyed meanwhile
      throw err;
    }
  }

  /** Bytes the association's chunks take. */
  usage(associationId: string): number {
    checkAssociation(associationId, "read usage");
    return this.#associations.get(associationId)?.bytes ?? 0;
  }

  /** Bytes all chunks take. */
  total(): number {
    return this.#total;
  }

  /** The associations that hold a capture (complete or not). */
  associations(): string[] {
    return [...this.#associations.keys()].sort();
  }

  /** Bytes the association could still store now: the least of its quota, the store's capacity
   *  and the free space above the reserve. Without an id, what a new association could store. */
  async available(associationId?: string): Promise<number> {
    if (associationId !== undefined) checkAssociation(associationId, "read available space");
    const used = associationId === undefined ? 0 : this.usage(associationId);
    const free = await this.#freeBytes();
    return Math.max(0, Math.min(
      this.options.associationQuotaBytes - used,
      this.options.capacityBytes - this.#total - this.#reserved,
      free - this.options.reserveBytes - this.#reserved,
    ));
  }

  /** Removes the association's folder and every chunk in it; false when it held nothing. A crash
   *  part-way leaves a folder that `open` finishes removing. (Crypto-shredding is the key's owner's.) */
  async destroy(associationId: string): Promise<boolean> {
    checkAssociation(associationId, "destroy a capture");
    return this.#exclusive(associationId, async () => {
      const a = this.#associations.get(associationId);
      const folder = path.join(this.dir, associationId);
      const doomed = path.join(this.dir, `${DESTROY_PREFIX}${associationId}-${randomBytes(6).toString("hex")}`);
      try {
        await fs.promises.rename(folder, doomed);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw err;
      }
      await fsyncDir(this.dir);
      this.#associations.delete(associationId);
      if (a) this.#total -= a.bytes;
      await fs.promises.rm(doomed, { recursive: true, force: true });
      await fsyncDir(this.dir);
      return true;
    });
  }

  /** Refuses `needed` more bytes that would break the association's quota or the store's capacity. */
  /** Checked inside the association's lock, so puts racing each other cannot all pass; `own` is the association's own (lower) quota. */
  #checkLimits(associationId: string, what: string, needed: number, freedFirst: number, own?: number): void {
    const used = (this.#associations.get(associationId)?.bytes ?? 0) - freedFirst;
    const { capacityBytes: capacity } = this.options;
    const quota = own !== undefined && Number.isSafeInteger(own) && own >= 0 ? Math.min(own, this.options.associationQuotaBytes) : this.options.associationQuotaBytes;
    if (used + needed > quota) {
      throw new StateStoreError("quota", `Cannot ${what}: the association's quota of ${bytesText(quota)} would be exceeded (${bytesText(used)} stored, ${bytesText(needed)} more needed)`,
        { limit: quota, used, needed });
    }
    const storeUsed = this.#total - freedFirst + this.#reserved;
    if (storeUsed + needed > capacity) {
      throw new StateStoreError("capacity", `Cannot ${what}: the state store's capacity of ${bytesText(capacity)} would be exceeded (${bytesText(storeUsed)} stored, ${bytesText(needed)} more needed)`,
        { limit: capacity, used: storeUsed, needed });
    }
  }

  /** Refuses `needed` more bytes that would leave less than the reserve free on the disk; bytes of
   *  puts in progress (this one's included, when reserved) count as already gone. */
  async #checkDisk(what: string, needed: number): Promise<void> {
    const reserve = this.options.reserveBytes;
    const free = (await this.#freeBytes()) - this.#reserved;
    if (free - needed < reserve) {
      throw new StateStoreError("disk-reserve", `Cannot ${what}: the disk holding the state store has ${bytesText(Math.max(0, free))} free and ${bytesText(reserve)} must stay free (${bytesText(needed)} more needed)`,
        { limit: reserve, free, needed });
    }
  }

  async #freeBytes(): Promise<number> {
    const s = await fs.promises.statfs(this.dir);
    return s.bavail * s.bsize;
  }

  /** Runs `fn` after every earlier operation on the same association has finished. */
  async #exclusive<T>(associationId: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#locks.get(associationId) ?? Promise.resolve();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const mine = before.then(() => gate);
    this.#locks.set(associationId, mine);
    await before;
    try {
      return await fn();
    } finally {
      release();
      if (this.#locks.get(associationId) === mine) this.#locks.delete(associationId);
    }
  }
}

function isComplete(a: Association): boolean {
  return a.finalIndex !== null && a.chunks.size === a.finalIndex + 1;
}

function checkAssociation(associationId: unknown, what: string): asserts associationId is string {
  if (!isAssociationId(associationId)) {
    throw new StateStoreError("invalid", `Cannot ${what}: the association id must be a lowercase UUID`);
  }
}

function checkIndex(index: unknown, what: string): asserts index is number {
  if (typeof index !== "number" || !Number.isSafeInteger(index) || index < 0 || index > MAX_CHUNK_INDEX) {
    throw new StateStoreError("invalid", `Cannot ${what}: the chunk index must be an integer from 0 to ${MAX_CHUNK_INDEX}`);
  }
}

/** The file of chunk `index`: ten digits, so names sort by index and no index makes a path. */
function chunkFileName(index: number): string {
  return `${String(index).padStart(10, "0")}.chunk`;
}

function bytesText(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/** Writes `name` in `folder` so that once this resolves it survives a crash or power loss, and
 *  no reader or reopen ever sees it half-written. */
async function writeDurably(folder: string, name: string, data: Buffer): Promise<void> {
  const tmp = path.join(folder, `${TMP_PREFIX}${randomBytes(8).toString("hex")}`);
  try {
    const fh = await fs.promises.open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, path.join(folder, name));
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(folder);
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Rebuilds one association's index from its folder, removing what a crash left half-done. */
async function recoverAssociation(root: string, associationId: string, recovery: RecoveryReport): Promise<Association | null> {
  const folder = path.join(root, associationId);
  let streamId: string | null = null;
  const files: { name: string; index: number }[] = [];
  let changed = false;
  for (const entry of await fs.promises.readdir(folder, { withFileTypes: true })) {
    const full = path.join(folder, entry.name);
    const m = CHUNK_FILE.exec(entry.name);
    if (entry.name.startsWith(TMP_PREFIX)) {
      await fs.promises.rm(full, { force: true });
      recovery.removedTempFiles++;
      changed = true;
    } else if (entry.name === STREAM_FILE && entry.isFile()) {
      const text = await fs.promises.readFile(full, "utf8");
      if (/^[0-9a-f]{32}\n$/.test(text)) streamId = text.slice(0, 32);
    } else if (m && entry.isFile() && Number(m[1]) <= MAX_CHUNK_INDEX) {
      files.push({ name: entry.name, index: Number(m[1]) });
    }
  }
  if (streamId === null && files.length > 0) {
    // Chunks without a stream id: no crash leaves this (the stream id is durable before any put),
    // so it is damage; set aside for a person to look at, never served, never deleted.
    await fs.promises.rename(folder, `${folder}.corrupt`);
    recovery.corrupt.push(`${associationId}.corrupt/`);
    return null;
  }
  if (streamId === null) {
    // A capture start that crashed before its stream id was durable: no put can have been
    // acknowledged into it, so the folder goes.
    const doomed = path.join(root, `${DESTROY_PREFIX}${associationId}-${randomBytes(6).toString("hex")}`);
    await fs.promises.rename(folder, doomed);
    await fs.promises.rm(doomed, { recursive: true, force: true });
    recovery.removedFolders++;
    return null;
  }
  const a: Association = { streamId, chunks: new Map(), bytes: 0, finalIndex: null };
  for (const { name, index } of files.sort((x, y) => x.index - y.index)) {
    const full = path.join(folder, name);
    const fh = await fs.promises.open(full, "r");
    let header;
    let size;
    try {
      size = (await fh.stat()).size;
      const head = Buffer.alloc(CHUNK_HEADER_BYTES);
      const { bytesRead } = await fh.read(head, 0, CHUNK_HEADER_BYTES, 0);
      try {
        header = readChunkHeader(head.subarray(0, bytesRead));
      } catch {
        header = null;
      }
    } finally {
      await fh.close();
    }
    if (header && header.streamId !== streamId && header.index === index && size === sealedLengthOf(header)) {
      // A chunk of the stream a crashed beginStream was discarding.
      await fs.promises.rm(full, { force: true });
      recovery.discardedChunks++;
      changed = true;
      continue;
    }
    // Files come in index order, so anything after a final chunk (which no put allows) is damage.
    if (!header || header.index !== index || size !== sealedLengthOf(header) || a.finalIndex !== null) {
      await fs.promises.rename(full, `${full}.corrupt`);
      recovery.corrupt.push(path.join(associationId, name));
      changed = true;
      continue;
    }
    a.chunks.set(index, { size, final: header.final });
    a.bytes += size;
    if (header.final) a.finalIndex = index;
  }
  if (changed) await fsyncDir(folder);
  return a;
}
