/**
 * Importing an image into the content library: the file is read once, front to back, cut into
 * fixed-size chunks that are stored by SHA-256 in the blob store (so the same bytes imported
 * twice are stored once), and described by a manifest signed with the site key. Recording the
 * manifest in the database is the caller's step, so it can commit with its audit entry.
 */
import fs from "node:fs";
import { createHash, type KeyObject } from "node:crypto";
import { BlobStore } from "./blob-store.ts";
import {
  DEFAULT_CHUNK_SIZE, MANIFEST_KIND, MAX_CHUNKS, imageFormats, isManifestName, manifestDigest, signManifest,
  type Chunk, type ImageFormat, type Manifest, type SignedManifest,
} from "./manifest.ts";

export type ImportOptions = {
  dataDir: string;
  file: string;
  name: string;
  /** The image's format; detected from its first bytes when absent, and checked against them when given. */
  format?: ImageFormat;
  signingKey: KeyObject;
  now: Date;
  /** Called with the bytes read so far and the file's size, at the start and after every chunk. */
  onProgress?: (done: number, total: number) => void;
  /** Tests only: production always uses DEFAULT_CHUNK_SIZE. */
  chunkSize?: number;
};

export type ImportResult = {
  digest: string;
  signed: SignedManifest;
  /** Chunks written now, and chunks the blob store already held (the same bytes imported before). */
  chunksWritten: number;
  chunksReused: number;
};

/** Why an import was refused; `reason` lets the CLI choose its exit code. */
export class ImportError extends Error {
  readonly reason: "not-found" | "invalid";
  constructor(message: string, reason: "not-found" | "invalid" = "invalid") {
    super(message);
    this.name = "ImportError";
    this.reason = reason;
  }
}

const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]); // RFC 8878 §3.1.1 magic number, little-endian on disk
const USTAR_OFFSET = 257; // POSIX.1-1988 ustar header: "magic" field

/** The format an image's first bytes announce; "raw" when they announce none. */
export function detectFormat(head: Uint8Array): ImageFormat {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return "tar.gz"; // RFC 1952 §2.3.1 ID1 ID2
  if (b.length >= 4 && b.subarray(0, 4).equals(ZSTD)) return "tar.zst";
  if (b.length >= USTAR_OFFSET + 5 && b.toString("latin1", USTAR_OFFSET, USTAR_OFFSET + 5) === "ustar") return "tar";
  return "raw";
}

const DESCRIBE: Record<ImageFormat, string> = { "tar.gz": "a gzip stream", "tar.zst": "a zstd stream", tar: "a tar archive", raw: "no known archive" };

/**
 * Whether a stated format contradicts what the bytes announce. A plain tar without the ustar
 * magic (pre-POSIX archives) still passes as "tar"; compressed formats need their magic.
 */
function contradiction(given: ImageFormat, detected: ImageFormat): string | null {
  if (given === detected) return null;
  if (given === "tar" && detected === "raw") return null;
  return `it is said to be ${given}, but its first bytes are ${DESCRIBE[detected]}` + (detected === "raw" ? "" : ` (${detected})`);
}

/** Reads into `buf` from `position` until it is full or the file ends; returns the bytes read. */
async function fill(fh: fs.promises.FileHandle, buf: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** Imports a file as an image: stores its chunks and returns its signed manifest and digest. */
export async function importImage(opts: ImportOptions): Promise<ImportResult> {
  const cannot = (why: string, reason?: "not-found" | "invalid") => new ImportError(`Cannot import ${opts.file}: ${why}`, reason);
  if (!isManifestName(opts.name)) throw new ImportError(`Cannot import as "${opts.name}": a name is 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  if (opts.format !== undefined && !imageFormats.includes(opts.format)) throw cannot(`the format "${String(opts.format)}" is not one of ${imageFormats.join(", ")}`);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(opts.file, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw cannot(code === "ENOENT" ? "no such file" : `it cannot be opened (${code ?? "error"})`, code === "ENOENT" ? "not-found" : "invalid");
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw cannot("not a regular file");
    if (st.size === 0) throw cannot("the file is empty");
    const total = st.size;
    const blobs = new BlobStore(opts.dataDir);
    const whole = createHash("sha256");
    const buf = Buffer.allocUnsafe(chunkSize);
    const chunks: Chunk[] = [];
    let format: ImageFormat | undefined;
    let done = 0;
    let written = 0;
    opts.onProgress?.(0, total);
    for (;;) {
      const n = await fill(fh, buf, done);
      if (n === 0) break;
      const data = buf.subarray(0, n);
      if (format === undefined) {
        const detected = detectFormat(data.subarray(0, 512));
        const why = opts.format === undefined ? null : contradiction(opts.format, detected);
        if (why) throw cannot(why);
        format = opts.format ?? detected;
      }
      if (chunks.length >= MAX_CHUNKS) throw cannot(`it has more than ${MAX_CHUNKS} chunks`);
      whole.update(data);
      const stored = await blobs.putBuffer(data);
      if (stored.written) written++;
      chunks.push({ sha256: stored.sha256, size: n });
      done += n;
      opts.onProgress?.(done, Math.max(total, done));
      if (n < chunkSize) break;
    }
    if (done === 0 || format === undefined) throw cannot("the file is empty");
    const manifest: Manifest = {
      kind: MANIFEST_KIND, name: opts.name, format, size: done, sha256: whole.digest("hex"), chunkSize, chunks,
      createdAt: opts.now.toISOString(),
    };
    const signed = signManifest(manifest, opts.signingKey);
    return { digest: manifestDigest(manifest), signed, chunksWritten: written, chunksReused: chunks.length - written };
  } finally {
    await fh.close();
  }
}

/**
 * Stores again, from the source file, any chunk of `manifest` missing from the blob store —
 * one a concurrent delete removed after this import found it already there. Run it under the
 * content lock just before recording the manifest. Returns how many chunks it restored.
 */
export async function restoreMissingChunks(dataDir: string, file: string, manifest: Manifest): Promise<number> {
  const blobs = new BlobStore(dataDir);
  const missing = manifest.chunks.map((c, i) => ({ c, i })).filter(({ c }) => !blobs.has(c.sha256));
  if (!missing.length) return 0;
  const fh = await fs.promises.open(file, "r");
  try {
    for (const { c, i } of missing) {
      const buf = Buffer.allocUnsafe(c.size);
      const n = await fill(fh, buf, i * manifest.chunkSize);
      const stored = await blobs.putBuffer(buf.subarray(0, n));
      if (stored.sha256 !== c.sha256) {
        if (stored.written) await blobs.delete(stored.sha256).catch(() => {});
        throw new ImportError(`Cannot import ${file}: it changed while it was being imported (chunk ${i}); import it again`);
      }
    }
    return missing.length;
  } finally {
    await fh.close();
  }
}
