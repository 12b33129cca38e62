/**
 * What the TFTP server serves: files the caller hands it by name, never paths from a client.
 * A `TftpFile` is a size and a positional read, so a boot loader can live in memory or on
 * disk behind the same interface — and the DATA packets cut from those bytes.
 */

import { closeSync, fstatSync, openSync, read, readSync } from "node:fs";
import { TftpOpcode } from "../../protocol/tftp.ts";

/** A file the TFTP server may send. `read` returns exactly `length` bytes from `offset`. */
export type TftpFile = {
  size: number;
  read(offset: number, length: number): Uint8Array | Promise<Uint8Array>;
  /**
   * The whole content, when the file is held in memory. The server then builds its DATA
   * packets once per block size and shares them among transfers (see DataPacketCache), so
   * these bytes must not change for as long as this object is served.
   */
  bytes?: Uint8Array;
};

/** Serves a buffer without copying it: keep it unchanged for as long as the file is served. */
export function fileFromBuffer(buf: Uint8Array): TftpFile {
  return { size: buf.length, read: (offset, length) => buf.subarray(offset, offset + length), bytes: buf };
}

/** Files up to this size are read into memory when opened (boot loaders are a few MB at most). */
export const TFTP_MEMORY_LIMIT = 64 * 1024 * 1024;

/**
 * Opens a file once (synchronously: this is start-up configuration). A file up to
 * `memoryLimit` bytes is read into memory there and then, so every transfer of it is served
 * from one copy with no read per chunk (and from DATA packets built once); a larger one is
 * served with positional reads that never block the event loop. Either way the content is the
 * file as it was at open: its size is fixed then, and a file cut short later ends its
 * transfers with an error. A file replaced on disk is served anew once it is opened again:
 * boot loaders change with a package upgrade, and a loader that changed half-way through a
 * machine's download would boot neither version. Call `close()` when it is no longer served.
 */
export function fileFromPath(path: string, opts: { memoryLimit?: number } = {}): TftpFile & { close(): void } {
  const fd = openSync(path, "r");
  let open = true;
  const close = (): void => {
    if (open) closeSync(fd);
    open = false;
  };
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new Error(`Cannot serve ${path} over TFTP: it is not a regular file`);
    const size = info.size;
    if (size <= (opts.memoryLimit ?? TFTP_MEMORY_LIMIT)) {
      const buf = Buffer.allocUnsafe(size);
      let done = 0;
      while (done < size) {
        const n = readSync(fd, buf, done, size - done, done);
        if (n === 0) throw new Error(`Cannot read ${path}: it ended at byte ${done} of ${size}`);
        done += n;
      }
      close();
      return { ...fileFromBuffer(buf), close };
    }
    return {
      size,
      async read(offset, length) {
        const buf = Buffer.allocUnsafe(length);
        let done = 0;
        while (done < length) {
          const bytesRead = await readAt(fd, buf, done, length - done, offset + done);
          // The size was fixed at open; a file cut short since then must not be sent as if whole.
          if (bytesRead === 0) throw new Error(`Cannot read ${path} at byte ${offset + done}: the file is shorter than its ${size} bytes at open`);
          done += bytesRead;
        }
        return buf;
      },
      close,
    };
  } catch (err) {
    close();
    throw err;
  }
}

function readAt(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * The netascii form of a file (RFC 764, as RFC 1350 §5 requires): LF becomes CR LF and a bare
 * CR becomes CR NUL. Built in memory, so only for files up to `limit` bytes.
 */
export async function netasciiFile(file: TftpFile, limit: number): Promise<TftpFile | undefined> {
  if (file.size > limit) return undefined;
  const raw = file.size === 0 ? new Uint8Array(0) : await file.read(0, file.size);
  let extra = 0;
  for (const b of raw) if (b === 0x0a || b === 0x0d) extra++;
  const out = new Uint8Array(raw.length + extra);
  let o = 0;
  for (const b of raw) {
    if (b === 0x0a) {
      out[o++] = 0x0d;
      out[o++] = 0x0a;
    } else if (b === 0x0d) {
      out[o++] = 0x0d;
      out[o++] = 0x00;
    } else {
      out[o++] = b;
    }
  }
  return fileFromBuffer(out);
}

/**
 * `count` DATA packets (RFC 1350 §5: opcode 3, block number, data) cut from `bytes` in blocks of
 * `blksize`, the first numbered `firstBlock`, back to back at a stride of 4 + blksize: packet j
 * starts at j × (4 + blksize) and only the last may be shorter (down to 4 bytes, the empty block
 * that ends a file of whole blocks). On the wire a block number is its low 16 bits: after 65535
 * comes 0 (see tftp-transfer.ts). "shared" memory (a SharedArrayBuffer) crosses to transfer
 * threads without a copy.
 */
export function dataPackets(bytes: Uint8Array, blksize: number, firstBlock: number, count: number, memory: "own" | "shared" = "own"): Uint8Array {
  const stride = 4 + blksize;
  const lastLength = bytes.length - (count - 1) * blksize;
  if (count < 1 || lastLength < 0 || lastLength > blksize) {
    throw new RangeError(`Cannot cut ${bytes.length} bytes into ${count} blocks of ${blksize}`);
  }
  const length = (count - 1) * stride + 4 + lastLength;
  const out = memory === "shared" ? new Uint8Array(new SharedArrayBuffer(length)) : Buffer.allocUnsafe(length);
  for (let j = 0; j < count; j++) {
    const at = j * stride;
    const block = firstBlock + j;
    out[at] = 0;
    out[at + 1] = TftpOpcode.DATA;
    out[at + 2] = (block >>> 8) & 0xff;
    out[at + 3] = block & 0xff;
    out.set(bytes.subarray(j * blksize, Math.min((j + 1) * blksize, bytes.length)), at + 4);
  }
  return out;
}

/** Blocks in a file of `size` bytes: the last one is short, empty when the size is a multiple of blksize. */
export function blockCount(size: number, blksize: number): number {
  return Math.floor(size / blksize) + 1;
}

/** Every DATA packet of a file at one block size, laid out as dataPackets() does. */
export type PacketSet = { size: number; packets: Uint8Array };

/**
 * The DATA packets of in-memory files (`TftpFile.bytes`), built once per content and block
 * size and shared by every transfer: boot loaders are identical for every machine, so a
 * hundred machines booting at once cost one copy of each loader's packets, not a hundred
 * copies of every block. The packets live in shared memory, so transfer threads send them
 * without a copy of their own. Sets used least recently are dropped once they hold more than
 * `maxBytes`; a transfer keeps the set it started with. The key is the content buffer itself,
 * never a name, so a file opened anew gets packets of its new content.
 */
export class DataPacketCache {
  readonly #maxBytes: number;
  #bytes = 0;
  /** By content and block size, least recently used first. */
  readonly #sets = new Map<string, PacketSet>();
  /** A number for each content buffer, so a key can be a string; buffers are not kept alive. */
  readonly #ids = new WeakMap<Uint8Array, number>();
  #nextId = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Every DATA packet of `file` at `blksize`, or undefined if it is not in memory or too large to keep. */
  packets(file: TftpFile, blksize: number): PacketSet | undefined {
    const bytes = file.bytes;
    if (bytes === undefined || bytes.length !== file.size) return undefined;
    let id = this.#ids.get(bytes);
    if (id === undefined) this.#ids.set(bytes, (id = this.#nextId++));
    const key = `${id}/${blksize}`;
    const known = this.#sets.get(key);
    if (known) {
      this.#sets.delete(key); // to the most recently used end
      this.#sets.set(key, known);
      return known;
    }
    const count = blockCount(bytes.length, blksize);
    const length = bytes.length + 4 * count;
    if (length > this.#maxBytes) return undefined;
    for (const [k, old] of this.#sets) {
      if (this.#bytes + length <= this.#maxBytes) break;
      this.#sets.delete(k);
      this.#bytes -= old.packets.length;
    }
    const set = { size: bytes.length, packets: dataPackets(bytes, blksize, 1, count, "shared") };
    this.#sets.set(key, set);
    this.#bytes += length;
    return set;
  }
}
