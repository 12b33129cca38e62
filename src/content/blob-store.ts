/**
 * Content stored by SHA-256 in the data folder (`DIR/content/sha256/<hex>`). A blob is
 * written to a temporary name while hashing and renamed into place only when complete, so
 * a reader never sees a half-written file and a name always matches its bytes.
 */
import fs from "node:fs";
import path from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { pipeline } from "node:stream/promises";

export class BlobStore {
  readonly dir: string;
  constructor(dataDir: string) {
    this.dir = path.join(dataDir, "content", "sha256");
  }

  pathOf(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new TypeError(`Not a SHA-256 digest: ${sha256}`);
    return path.join(this.dir, sha256);
  }

  has(sha256: string): boolean {
    return fs.existsSync(this.pathOf(sha256));
  }

  /**
   * Stores bytes already in memory (an image chunk); returns their digest, and whether they
   * were new. Bytes already present are not rewritten: the name proves the content.
   */
  async putBuffer(data: Buffer): Promise<{ sha256: string; size: number; written: boolean }> {
    const sha256 = createHash("sha256").update(data).digest("hex");
    const target = this.pathOf(sha256);
    if (fs.existsSync(target)) return { sha256, size: data.length, written: false };
    await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.tmp-${randomBytes(8).toString("hex")}`);
    try {
      const fh = await fs.promises.open(tmp, "wx", 0o600);
      try {
        await fh.writeFile(data);
        // On disk before the rename makes it visible, so a crash never leaves a named blob short.
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.promises.rename(tmp, target);
      return { sha256, size: data.length, written: true };
    } finally {
      await fs.promises.rm(tmp, { force: true });
    }
  }

  /**
   * Stores streamed bytes only if they are exactly the blob named `sha256` (of `size` bytes),
   * as a distribution point does with each chunk it replicates. Anything else — a different
   * hash, too few or too many bytes — throws BlobMismatchError and leaves nothing behind, so
   * a name here always proves its content, whoever sent the bytes.
   */
  async putVerified(source: AsyncIterable<Buffer>, expected: { sha256: string; size: number }): Promise<{ written: boolean }> {
    const target = this.pathOf(expected.sha256);
    if (fs.existsSync(target)) return { written: false };
    await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.tmp-${randomBytes(8).toString("hex")}`);
    const hash = createHash("sha256");
    let size = 0;
    try {
      const fh = await fs.promises.open(tmp, "wx", 0o600);
      try {
        for await (const data of source) {
          size += data.length;
          if (size > expected.size) throw new BlobMismatchError(expected.sha256, null, `more than the ${expected.size} bytes expected`);
          hash.update(data);
          await fh.write(data);
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (size !== expected.size) throw new BlobMismatchError(expected.sha256, null, `${size} bytes, not ${expected.size}`);
      const got = hash.digest("hex");
      if (got !== expected.sha256) throw new BlobMismatchError(expected.sha256, got, `its SHA-256 is ${got}`);
      await fs.promises.rename(tmp, target);
      return { written: true };
    } finally {
      await fs.promises.rm(tmp, { force: true });
    }
  }

  /** The SHA-256 names of every stored blob (not the temporary files of writes in progress). */
  async list(): Promise<string[]> {
    try {
      return (await fs.promises.readdir(this.dir)).filter((n) => /^[0-9a-f]{64}$/.test(n));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  }

  /** Removes a blob; true when it existed. */
  async delete(sha256: string): Promise<boolean> {
    try {
      await fs.promises.unlink(this.pathOf(sha256));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  /** Copies a file in; returns its digest and size. */
  async importFile(source: string): Promise<{ sha256: string; size: number }> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.tmp-${randomBytes(8).toString("hex")}`);
    const hash = createHash("sha256");
    let size = 0;
    try {
      await pipeline(fs.createReadStream(source), async function* (chunks: AsyncIterable<Buffer>) {
        for await (const c of chunks) {
          hash.update(c);
          size += c.length;
          yield c;
        }
      }, fs.createWriteStream(tmp, { mode: 0o600 }));
      const sha256 = hash.digest("hex");
      fs.renameSync(tmp, this.pathOf(sha256));
      return { sha256, size };
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }
}

/** Bytes that are not the blob they were meant to be; nothing was stored. */
export class BlobMismatchError extends Error {
  readonly expected: string;
  readonly actual: string | null;
  constructor(expected: string, actual: string | null, why: string) {
    super(`The bytes are not blob ${expected}: ${why}`);
    this.name = "BlobMismatchError";
    this.expected = expected;
    this.actual = actual;
  }
}
