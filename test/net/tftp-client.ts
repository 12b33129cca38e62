/**
 * A TFTP client driven by hand from tests, built on the project's codec: it sends exactly the
 * packets a test asks for and hands back every packet it receives, so tests can check what a
 * server sends and when (a duplicate DATA, an ERROR to a stray port, a wrapped block number).
 */

import dgram from "node:dgram";
import { decodeTftp, encodeTftp, optionMap, type TftpOption, type TftpPacket } from "../../src/protocol/tftp.ts";

export type Received = { packet: TftpPacket; port: number; address: string };

export class TftpTestClient {
  readonly socket: dgram.Socket;
  readonly #queue: Received[] = [];
  readonly #sending = new Set<Promise<void>>();
  #waiter: (() => void) | undefined;
  #closed = false;

  private constructor(socket: dgram.Socket) {
    this.socket = socket;
    socket.on("message", (msg, rinfo) => {
      this.#queue.push({ packet: decodeTftp(msg), port: rinfo.port, address: rinfo.address });
      this.#waiter?.();
    });
  }

  /** A client socket on `address` (any 127.x.y.z works on loopback: distinct client IPs). */
  static async open(address = "127.0.0.1"): Promise<TftpTestClient> {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, address, resolve));
    return new TftpTestClient(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(packet: TftpPacket, port: number, host = "127.0.0.1"): void {
    this.sendRaw(encodeTftp(packet), port, host);
  }

  sendRaw(bytes: Uint8Array, port: number, host = "127.0.0.1"): void {
    // Sends finish after an address lookup: close() waits for them, or the last ACK is lost.
    const sent = new Promise<void>((resolve) => this.socket.send(bytes, port, host, () => resolve()));
    this.#sending.add(sent);
    void sent.then(() => this.#sending.delete(sent));
  }

  /** The next packet received; rejects after `timeoutMs` without one. */
  async next(timeoutMs = 5000): Promise<Received> {
    const got = await this.maybeNext(timeoutMs);
    if (!got) throw new Error(`no TFTP packet within ${timeoutMs} ms`);
    return got;
  }

  /** The next packet, or undefined when none arrives within `ms`. */
  async maybeNext(ms: number): Promise<Received | undefined> {
    if (this.#queue.length === 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
    return this.#queue.shift();
  }

  /**
   * Downloads `name` as an RFC 7440 client: ACKs each window's last block, or the last block in
   * order when one is missing. Returns the bytes and the wire block number of every DATA seen.
   */
  async download(port: number, name: string, options: TftpOption[] = [], host = "127.0.0.1"): Promise<{ bytes: Buffer; blocks: number[]; oack?: Map<string, string> }> {
    this.send({ op: "RRQ", filename: name, mode: "octet", options }, port, host);
    const asked = optionMap(options);
    let blksize = 512;
    let windowsize = 1;
    let oack: Map<string, string> | undefined;
    let tid: number | undefined;
    const chunks: Uint8Array[] = [];
    const blocks: number[] = [];
    let expect = 1; // next absolute block
    let inWindow = 0;
    for (;;) {
      const r = await this.next();
      if (tid !== undefined && r.port !== tid) continue;
      const p = r.packet;
      if (p.op === "ERROR") throw new Error(`server sent ERROR ${p.code}: ${p.message}`);
      if (p.op === "OACK" && tid === undefined) {
        tid = r.port;
        oack = optionMap(p.options);
        blksize = Number(oack.get("blksize") ?? 512);
        windowsize = Number(oack.get("windowsize") ?? 1);
        for (const key of oack.keys()) if (!asked.has(key)) throw new Error(`OACK has option ${key} the client did not ask for`);
        this.send({ op: "ACK", block: 0 }, tid, host);
        continue;
      }
      if (p.op !== "DATA") throw new Error(`unexpected ${p.op}`);
      tid ??= r.port;
      blocks.push(p.block);
      if (p.block !== (expect & 0xffff)) {
        // Out of order: ACK the last block received in order (RFC 7440 §4).
        if (p.block !== ((expect - 1) & 0xffff)) this.send({ op: "ACK", block: (expect - 1) & 0xffff }, tid, host);
        inWindow = 0;
        continue;
      }
      chunks.push(p.data);
      expect++;
      inWindow++;
      const last = p.data.length < blksize;
      if (last || inWindow === windowsize) {
        this.send({ op: "ACK", block: p.block }, tid, host);
        inWindow = 0;
      }
      if (last) return { bytes: Buffer.concat(chunks), blocks, oack };
    }
  }

  /** Closes the socket once every packet handed to send() has gone out. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#sending);
    await new Promise<void>((resolve) => this.socket.close(resolve));
  }
}
