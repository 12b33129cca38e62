/**
 * What the TFTP server serves: files the caller hands it by name, never paths from a client.
 * A `TftpFile` is a size and a positional read, so a boot loader can live in memory or on
 * disk behind the same interface.
 */

import { closeSync, fstatSync, openSync, read, readSync } from "node:fs";

/** A file the TFTP server may send. `read` returns exactly `length` bytes from `offset`. */
export type TftpFile = {
  size: number;
  read(offset: number, length: number): Uint8Array | Promise<Uint8Array>;
};

/** Serves a buffer (without copying it: keep it unchanged while transfers run). */
export function fileFromBuffer(buf: Uint8Array): TftpFile {
  return { size: buf.length, read: (offset, length) => buf.subarray(offset, offset + length) };
}

/** Files up to this size are read into memory when opened (boot loaders are a few MB at most). */
export const TFTP_MEMORY_LIMIT = 64 * 1024 * 1024;

/**
 * Opens a file once (synchronously: this is start-up configuration). A file up to
 * `memoryLimit` bytes is read into memory there and then, so every transfer of it is served
 * from one copy with no read per chunk; a larger one is served with positional reads that
 * never block the event loop. Either way the content is the file as it was at open: its size
 * is fixed then, and a file cut short later ends its transfers with an error.
 * Call `close()` when it is no longer served.
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
