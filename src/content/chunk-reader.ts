/**
 * An image's bytes, read back from its chunk files in order: a byte range of the image as one
 * stream, one chunk file open at a time, never the whole image in memory. Bytes are served as
 * they are on disk; the client verifies them against the signed manifest.
 */
import fs from "node:fs";
import { Readable } from "node:stream";
import type { BlobStore } from "../storage/blob-store.ts";
import type { Manifest } from "./manifest.ts";

/** Bytes `start`..`end` (inclusive) of the image `manifest` describes. */
export function readImageRange(blobs: BlobStore, manifest: Manifest, start: number, end: number): Readable {
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start <= end && end < manifest.size)) {
    throw new RangeError(`Cannot read bytes ${start}-${end} of a ${manifest.size}-byte image`);
  }
  async function* bytes(): AsyncGenerator<Buffer> {
    let index = Math.floor(start / manifest.chunkSize);
    let pos = start;
    while (pos <= end) {
      const chunk = manifest.chunks[index];
      const chunkStart = index * manifest.chunkSize;
      const file = blobs.pathOf(chunk.sha256);
      // A chunk file of the wrong length would shift every later byte: stop rather than send it.
      const { size } = await fs.promises.stat(file);
      if (size !== chunk.size) throw new Error(`Cannot serve image "${manifest.name}": chunk ${index} is ${size} bytes on disk, not ${chunk.size}`);
      const to = Math.min(chunk.size - 1, end - chunkStart);
      yield* fs.createReadStream(file, { start: pos - chunkStart, end: to, highWaterMark: 256 * 1024 });
      pos = chunkStart + to + 1;
      index++;
    }
  }
  return Readable.from(bytes(), { objectMode: false, highWaterMark: 1024 * 1024 });
}
