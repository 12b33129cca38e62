/**
 * One TFTP read transfer, as a state machine: which DATA to send for which ACK, when to
 * retransmit and when to give up. It owns no socket: the server hands it the packets the
 * client sent (already checked to come from the client's TID) and gives it a `send` function.
 *
 * Blocks are counted from 1 without limit here; on the wire the number is the low 16 bits, so
 * after block 65535 comes block 0 — what tftpd-hpa, atftpd, dnsmasq, curl and iPXE do for files
 * of more than 65535 blocks (RFC 1350 leaves it open; RFC 2348 only grows the block).
 */

import { TftpErrorCode, TftpOpcode, decodeTftp, encodeTftp, type TftpOption, type TftpPacket } from "../../protocol/tftp.ts";
import { blockCount, dataPackets, type PacketSet, type TftpFile } from "./tftp-files.ts";

export type TransferEnd = { ok: boolean; bytes: number; reason?: string };

/** RFC 1350 §4: the answer to a datagram from another TID, which leaves the transfer alone. */
export const UNKNOWN_TID_ERROR = encodeTftp({ op: "ERROR", code: TftpErrorCode.UnknownTransferId, message: "Unknown transfer ID" });

export type TransferOptions = {
  /**
   * What to send: every DATA packet of the file at this blksize, built already
   * (DataPacketCache), or a file to read and cut into packets chunk by chunk.
   */
  source: PacketSet | TftpFile;
  blksize: number;
  windowsize: number;
  /** Options to acknowledge in an OACK first; empty sends DATA 1 straight away (RFC 2347). */
  oack: TftpOption[];
  timeoutMs: number;
  /** Retransmissions of the same window before the client is given up on. */
  retries: number;
  send(packet: Uint8Array): void;
  /**
   * Sends `count` DATA packets laid back to back in `run`, each `stride` bytes but the last;
   * given when the socket sends such a run in one call (UDP GSO). Without it, `send` each.
   */
  sendRun?(run: Uint8Array, stride: number, count: number): void;
  /** Starts the retransmission timer; Node's timers by default (a thread with a loop of its own brings its own). */
  timer?(onTimeout: () => void, ms: number): TransferTimer;
  onEnd(end: TransferEnd): void;
};

/** The retransmission timer: `refresh` starts its full time again. */
export type TransferTimer = { refresh(): void; clear(): void };

function nodeTimer(onTimeout: () => void, ms: number): TransferTimer {
  const t = setTimeout(onTimeout, ms);
  return { refresh: () => t.refresh(), clear: () => clearTimeout(t) };
}

/**
 * Without prebuilt packets the file is read in chunks of whole blocks, at least this many bytes
 * and at least one window, and the chunk after the one being sent is read ahead, so a file on
 * disk costs one read per chunk and the transfer never waits for it. Each chunk read becomes
 * its DATA packets in one buffer. A window spans at most two chunks.
 */
const MIN_CHUNK = 64 * 1024;

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
  #timer: TransferTimer | undefined;
  #reading = false;
  #ended = false;
  readonly #blocksPerChunk: number;
  /** Bytes from one packet's start to the next's in a chunk of packets: 4 + blksize. */
  readonly #stride: number;
  /** DATA packets of each chunk, built or being read, by index; those behind the window are dropped. */
  readonly #chunks = new Map<number, Uint8Array | Promise<Uint8Array>>();

  constructor(o: TransferOptions) {
    this.#o = o;
    this.#blocks = blockCount(o.source.size, o.blksize);
    this.#awaitingOackAck = o.oack.length > 0;
    this.#stride = 4 + o.blksize;
    if ("packets" in o.source) {
      // The whole file is one chunk, built already.
      this.#blocksPerChunk = this.#blocks;
      this.#chunks.set(0, o.source.packets);
    } else {
      this.#blocksPerChunk = Math.max(o.windowsize, Math.ceil(MIN_CHUNK / o.blksize));
    }
  }

  /** Bytes the client has acknowledged. */
  get bytes(): number {
    return Math.min(this.#o.source.size, this.#acked * this.#o.blksize);
  }

  start(): void {
    this.#timer = (this.#o.timer ?? nodeTimer)(() => this.#onTimeout(), this.#o.timeoutMs);
    if (this.#awaitingOackAck) this.#sendOack();
    else this.#sendWindow(1);
  }

  /**
   * A datagram from the client's TID. An ACK (RFC 1350 §5: opcode 4, block number) comes for
   * every block or window and is read in place; anything else goes through the decoder.
   * "malformed" is ignored: the timeout recovers if it was meant as an ACK. `length`: the
   * datagram's bytes in `msg`, for a receive buffer reused without a view per datagram.
   */
  onDatagram(msg: Uint8Array, length = msg.length): "ack" | "packet" | "malformed" {
    if (length === 4 && msg[0] === 0 && msg[1] === TftpOpcode.ACK) {
      this.#onAck((msg[2] << 8) | msg[3]);
      return "ack";
    }
    let p: TftpPacket;
    try {
      p = decodeTftp(length === msg.length ? msg : msg.subarray(0, length));
    } catch {
      return "malformed";
    }
    this.#onPacket(p);
    return "packet";
  }

  #onPacket(p: TftpPacket): void {
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

  /** An ACK from the client's TID, with its block number as on the wire. */
  #onAck(wire: number): void {
    if (this.#ended) return;
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
    if (first > 0) for (const i of this.#chunks.keys()) if (i < first) this.#chunks.delete(i);
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
    // The server's hot path: each packet is a view of bytes built before, nothing is copied.
    const stride = this.#stride;
    const perChunk = this.#blocksPerChunk;
    if (this.#o.sendRun && first === last && to > from) {
      const at = ((from - 1) % perChunk) * stride;
      this.#o.sendRun(a.subarray(at, Math.min(at + (to - from + 1) * stride, a.length)), stride, to - from + 1);
    } else {
      for (let block = from; block <= to; block++) {
        const packets = block <= (first + 1) * perChunk ? a : b;
        const at = ((block - 1) % perChunk) * stride;
        this.#o.send(packets.subarray(at, Math.min(at + stride, packets.length)));
      }
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

  /** The DATA packets of chunk `i`, or a promise of them while the file is read. */
  #chunk(i: number): Uint8Array | Promise<Uint8Array> {
    const known = this.#chunks.get(i);
    if (known !== undefined) return known;
    const { blksize, source } = this.#o;
    if ("packets" in source) throw new Error(`chunk ${i} is past the end of the packets`); // cannot happen: one chunk holds them all
    const perChunk = this.#blocksPerChunk;
    const offset = i * perChunk * blksize;
    const length = Math.max(0, Math.min(perChunk * blksize, source.size - offset));
    const count = Math.min(perChunk, this.#blocks - i * perChunk);
    const build = (bytes: Uint8Array): Uint8Array => {
      if (bytes.length !== length) throw new Error(`the file gave ${bytes.length} bytes at offset ${offset}, not ${length}`);
      return dataPackets(bytes, blksize, i * perChunk + 1, count);
    };
    // A chunk of no bytes holds only the empty block after a file of whole chunks.
    const got = length === 0 ? new Uint8Array(0) : source.read(offset, length);
    if (!(got instanceof Promise)) {
      const packets = build(got);
      this.#chunks.set(i, packets);
      return packets;
    }
    const pending = got.then((bytes) => {
      const packets = build(bytes);
      if (this.#chunks.get(i) === pending) this.#chunks.set(i, packets);
      return packets;
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
    this.#timer?.clear();
    this.#o.onEnd({ ...e, bytes: e.ok ? this.#o.source.size : this.bytes });
  }
}

function readFailure(err: unknown): string {
  return `Cannot read the file: ${err instanceof Error ? err.message : String(err)}`;
}
