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
