/**
 * One TFTP read transfer, as a state machine: which DATA to send for which ACK, when to
 * retransmit and when to give up. It owns no socket: the server hands it the packets the
 * client sent (already checked to come from the client's TID) and gives it a `send` function.
 *
 * Blocks are counted from 1 without limit here; on the wire the number is the low 16 bits, so
 * after block 65535 comes block 0 — what tftpd-hpa, atftpd, dnsmasq, curl and iPXE do for files
 * of more than 65535 blocks (RFC 1350 leaves it open; RFC 2348 only grows the block).
 */

import { TftpErrorCode, TftpOpcode, encodeTftp, type TftpOption, type TftpPacket } from "../../protocol/tftp.ts";
import type { TftpFile } from "./tftp-files.ts";

export type TransferEnd = { ok: boolean; bytes: number; reason?: string };

export type TransferOptions = {
  file: TftpFile;
  blksize: number;
  windowsize: number;
  /** Options to acknowledge in an OACK first; empty sends DATA 1 straight away (RFC 2347). */
  oack: TftpOption[];
  timeoutMs: number;
  /** Retransmissions of the same window before the client is given up on. */
  retries: number;
  send(packet: Uint8Array): void;
  onEnd(end: TransferEnd): void;
};

/**
 * The file is read in chunks of whole blocks, at least this many bytes and at least one window,
 * and the chunk after the one being sent is read ahead, so a file on disk costs one read per
 * chunk and the transfer never waits for it. A window spans at most two chunks.
 */
const MIN_CHUNK = 64 * 1024;
const EMPTY = new Uint8Array(0);

export class Transfer {
  readonly #o: TransferOptions;
  /** Blocks in the file: the last one is short, empty when the size is a multiple of blksize. */
  readonly #blocks: number;
  /** Highest block the client acknowledged; 0 before any DATA was acknowledged. */
  #acked = 0;
  /** Highest block sent. */
  #sent = 0;
  #awaitingOackAck: boolean;
  #tries = 0;
  #timer: NodeJS.Timeout | undefined;
  #reading = false;
  #ended = false;
  readonly #blocksPerChunk: number;
  /** Chunks read or being read, by index; those behind the window are dropped. */
  readonly #chunks = new Map<number, Uint8Array | Promise<Uint8Array>>();

  constructor(o: TransferOptions) {
    this.#o = o;
    this.#blocks = Math.floor(o.file.size / o.blksize) + 1;
    this.#awaitingOackAck = o.oack.length > 0;
    this.#blocksPerChunk = Math.max(o.windowsize, Math.ceil(MIN_CHUNK / o.blksize));
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Whether the client acknowledged anything yet (the OACK or a block): it has our TID. */
  get answered(): boolean {
    return this.#acked > 0 || (this.#o.oack.length > 0 && !this.#awaitingOackAck);
  }

  /** Bytes the client has acknowledged. */
  get bytes(): number {
    return Math.min(this.#o.file.size, this.#acked * this.#o.blksize);
  }

  start(): void {
    this.#timer = setTimeout(() => this.#onTimeout(), this.#o.timeoutMs);
    if (this.#awaitingOackAck) this.#sendOack();
    else this.#sendWindow(1);
  }

  /** A packet from the client's TID. */
  onPacket(p: TftpPacket): void {
    if (this.#ended) return;
    if (p.op === "ACK") this.#onAck(p.block);
    else if (p.op === "ERROR") {
      // RFC 2347: ERROR 8 right after the OACK is how a client declines the options; firmware
      // PXE clients do it on purpose after learning tsize, then ask again. Nothing to answer.
      const probe = this.#awaitingOackAck && p.code === TftpErrorCode.OptionsRefused;
      this.#end({ ok: false, reason: probe ? "client ended after the option acknowledgement (tsize probe)" : `client sent ERROR ${p.code}: ${p.message}` });
    }
    // Anything else (DATA, a new request on this TID) has no meaning in a read transfer: ignored.
  }

  /**
   * Ends the transfer from outside (server closing, socket error). `tell` is the message of an
   * ERROR 0 for the client, kept apart from `reason` (logged) so no local detail reaches it.
   */
  abort(reason: string, tell?: string): void {
    if (this.#ended) return;
    if (tell !== undefined) this.#sendError(TftpErrorCode.NotDefined, tell);
    this.#end({ ok: false, reason });
  }

  #onAck(wire: number): void {
    if (this.#awaitingOackAck) {
      if (wire !== 0) return; // RFC 2347: the OACK is acknowledged with block 0
      this.#awaitingOackAck = false;
      this.#tries = 0;
      this.#sendWindow(1);
      return;
    }
    // Map the 16-bit number onto the blocks in flight, (acked, sent]. An ACK equal to the last
    // acknowledged block is a duplicate: answering it with data is the Sorcerer's Apprentice bug
    // (RFC 1350 leaves it open; RFC 1123 §4.2.3.1 forbids it) — the timeout resends instead.
    // Anything older or beyond what was sent is stale and ignored too.
    const ahead = (wire - (this.#acked & 0xffff)) & 0xffff;
    if (ahead === 0 || this.#acked + ahead > this.#sent) return;
    this.#acked += ahead;
    this.#tries = 0;
    if (this.#acked === this.#blocks) {
      this.#end({ ok: true });
      return;
    }
    // RFC 7440 §4: an ACK inside the window says the blocks after it were lost; the next window
    // starts right after it. A whole window acknowledged starts the next the same way.
    this.#sendWindow(this.#acked + 1);
  }

  #onTimeout(): void {
    if (this.#ended) return;
    if (this.#reading) {
      this.#timer?.refresh(); // a slow file read is not the client's silence
      return;
    }
    if (++this.#tries > this.#o.retries) {
      const what = this.#awaitingOackAck ? "the option acknowledgement" : `block ${this.#acked + 1} of ${this.#blocks}`;
      this.#sendError(TftpErrorCode.NotDefined, "Timed out waiting for an ACK");
      this.#end({ ok: false, reason: `timed out after ${this.#o.retries} retransmissions of ${what}` });
      return;
    }
    if (this.#awaitingOackAck) this.#sendOack();
    else this.#sendWindow(this.#acked + 1);
  }

  #sendOack(): void {
    this.#o.send(encodeTftp({ op: "OACK", options: this.#o.oack }));
    this.#timer?.refresh();
  }

  /** Sends blocks `from`… up to the window size or the last block. */
  #sendWindow(from: number): void {
    const to = Math.min(from + this.#o.windowsize - 1, this.#blocks);
    const first = this.#chunkOf(from);
    const last = this.#chunkOf(to);
    for (const i of this.#chunks.keys()) if (i < first) this.#chunks.delete(i);
    let a: Uint8Array | Promise<Uint8Array>;
    let b: Uint8Array | Promise<Uint8Array>;
    try {
      a = this.#chunk(first);
      b = last === first ? a : this.#chunk(last);
    } catch (err) {
      this.abort(readFailure(err), "Cannot read the file");
      return;
    }
    if (a instanceof Promise || b instanceof Promise) {
      this.#reading = true;
      Promise.all([a, b]).then(
        () => {
          this.#reading = false;
          // Send unless an ACK or the timer moved on while the file was read.
          if (!this.#ended && this.#acked === from - 1) this.#sendWindow(from);
        },
        (err: unknown) => this.abort(readFailure(err), "Cannot read the file"),
      );
      return;
    }
    const { blksize } = this.#o;
    const perChunk = this.#blocksPerChunk;
    for (let block = from; block <= to; block++) {
      const data = block <= (first + 1) * perChunk ? a : b;
      const at = ((block - 1) % perChunk) * blksize;
      const payload = data.subarray(at, Math.min(at + blksize, data.length));
      // RFC 1350 §5: opcode 3, block number, data. Written here rather than through encodeTftp
      // to build each packet in one copy: this loop is the server's hot path.
      const packet = Buffer.allocUnsafe(4 + payload.length);
      packet[0] = 0;
      packet[1] = TftpOpcode.DATA;
      packet[2] = (block >>> 8) & 0xff;
      packet[3] = block & 0xff;
      packet.set(payload, 4);
      this.#o.send(packet);
    }
    if (to > this.#sent) this.#sent = to;
    this.#timer?.refresh();
    // Read ahead the chunk after this window's last one.
    if ((last + 1) * perChunk < this.#blocks && !this.#chunks.has(last + 1)) {
      try {
        this.#chunk(last + 1);
      } catch {
        // Reported when that chunk is needed.
        this.#chunks.delete(last + 1);
      }
    }
  }

  #chunkOf(block: number): number {
    return Math.floor((block - 1) / this.#blocksPerChunk);
  }

  /** Chunk `i` of the file: its bytes, or a promise of them while a read runs. */
  #chunk(i: number): Uint8Array | Promise<Uint8Array> {
    const known = this.#chunks.get(i);
    if (known !== undefined) return known;
    const chunkBytes = this.#blocksPerChunk * this.#o.blksize;
    const offset = i * chunkBytes;
    const length = Math.max(0, Math.min(chunkBytes, this.#o.file.size - offset));
    if (length === 0) return EMPTY; // the empty block after a file of whole chunks
    const check = (bytes: Uint8Array): Uint8Array => {
      if (bytes.length !== length) throw new Error(`the file gave ${bytes.length} bytes at offset ${offset}, not ${length}`);
      return bytes;
    };
    const got = this.#o.file.read(offset, length);
    if (!(got instanceof Promise)) {
      const bytes = check(got);
      this.#chunks.set(i, bytes);
      return bytes;
    }
    const pending = got.then((bytes) => {
      check(bytes);
      if (this.#chunks.get(i) === pending) this.#chunks.set(i, bytes);
      return bytes;
    });
    pending.catch(() => this.#chunks.delete(i)); // a read-ahead nobody awaits must not go unhandled
    this.#chunks.set(i, pending);
    return pending;
  }

  #sendError(code: number, message: string): void {
    this.#o.send(encodeTftp({ op: "ERROR", code, message }));
  }

  #end(e: { ok: boolean; reason?: string }): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#o.onEnd({ ...e, bytes: e.ok ? this.#o.file.size : this.bytes });
  }
}

function readFailure(err: unknown): string {
  return `Cannot read the file: ${err instanceof Error ? err.message : String(err)}`;
}
