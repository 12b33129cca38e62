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
