/**
 * User state on the wire, as both steps and the benchmark run it: a capture's tar stream is
 * compressed (zstd), sealed chunk by chunk with the association's key and uploaded with one
 * chunk in flight while the next is made; a restore fetches the next chunk while the current one
 * is opened, and yields the plain tar stream. Nothing is held but a few chunks.
 */
import { pipeline, Readable } from "node:stream";
import { constants as zstdConstants, createZstdCompress, createZstdDecompress } from "node:zlib";
import type { UserStateClient, UserStateGrant } from "../engine.ts";
import { openStream, sealStream } from "../../security/state-cipher.ts";

/** Level 1 in 1 MiB pieces: zstd in Node costs most of a capture's CPU; this more than halves it for ~3 % more bytes (bench/user-state.ts). */
export const ZSTD_CAPTURE = { chunkSize: 1 << 20, params: { [zstdConstants.ZSTD_c_compressionLevel]: 1 } };
/** zlib hands zstd 1 MiB at a time (its 16 KiB default costs a round trip per piece). */
export const ZSTD_RESTORE = { chunkSize: 1 << 20 };

/** Compresses, seals and uploads a capture's tar stream; resolves when every chunk is stored. */
export async function sendUserState(api: UserStateClient, grant: UserStateGrant, tar: AsyncIterable<Buffer>,
  onChunk: (stored: number, chunks: number) => unknown = () => undefined): Promise<{ stored: number; chunks: number }> {
  if (!grant.streamId) throw new Error("Cannot capture user state: the management point gave no stream id");
  // pipeline: a failure anywhere (tar, zstd) destroys the whole chain with it instead of leaving it waiting.
  const compressed = pipeline(Readable.from(tar), createZstdCompress(ZSTD_CAPTURE), () => {});
  const sealed = sealStream(compressed, { dataKey: Buffer.from(grant.dataKey, "base64"), associationId: grant.association, streamId: grant.streamId });
  let stored = 0;
  let chunks = 0;
  let inflight: Promise<void> | undefined;
  try {
    for await (const chunk of sealed) {
      await inflight;
      inflight = api.putChunk(grant.association, chunk.index, chunk.bytes);
      inflight.catch(() => undefined); // awaited above or below; never unhandled
      stored += chunk.bytes.length;
      chunks++;
      await onChunk(stored, chunks);
    }
    await inflight;
  } finally {
    await inflight?.catch(() => undefined);
  }
  return { stored, chunks };
}

/** The association's plain tar stream: every chunk fetched in order (the next one ahead), opened and decompressed. */
export function receiveUserState(api: UserStateClient, grant: UserStateGrant, onChunk: (fetched: number) => unknown = () => undefined): AsyncIterable<Buffer> {
  const fetch = (i: number) => {
    const p = api.chunk(grant.association, i);
    p.catch(() => undefined); // awaited below; a restore that stops early leaves it unhandled otherwise
    return p;
  };
  const chunks = async function* () {
    let next = grant.chunks > 0 ? fetch(0) : undefined;
    for (let i = 0; i < grant.chunks; i++) {
      const bytes = await next!;
      next = i + 1 < grant.chunks ? fetch(i + 1) : undefined;
      yield bytes;
      await onChunk(i + 1);
    }
  };
  const plain = openStream(chunks(), { dataKey: Buffer.from(grant.dataKey, "base64"), associationId: grant.association, streamId: grant.streamId ?? undefined });
  // pipeline: a refused chunk fails the whole chain (and so the restore, which then undoes its staging).
  return pipeline(Readable.from(plain), createZstdDecompress(ZSTD_RESTORE), () => {});
}
