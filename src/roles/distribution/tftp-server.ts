/**
 * Read-only TFTP server for boot loaders: RFC 1350 with option negotiation (RFC 2347), blksize
 * (RFC 2348), tsize and timeout (RFC 2349) and windowsize (RFC 7440).
 *
 * It serves only what `files` maps a name to: a requested name is normalised and looked up,
 * never joined onto a directory, so there is no path to traverse. It listens on chosen
 * interfaces only, and each transfer runs from its own socket (a new TID, RFC 1350 §4) bound to
 * the interface the request arrived on, so no datagram of a transfer crosses to another link.
 * Transfers of in-memory files run on transfer threads (tftp-threads.ts); this module keeps the
 * listeners, the limits, the logs and the statistics.
 */

import type dgram from "node:dgram";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { DecodeError } from "../../protocol/reader.ts";
import { TFTP_MAX_BLKSIZE, TftpErrorCode, decodeTftp, encodeTftp, negotiateOptions, normalizeTftpPath, type TftpPacket } from "../../protocol/tftp.ts";
import { openBoundUdpSocket } from "../../net/bound-udp.ts";
import { silentLogger, type Logger } from "../../log.ts";
import { DataPacketCache, netasciiFile, type TftpFile } from "./tftp-files.ts";
import { TransferThreads, runTransfer, type RunningTransfer, type TransferHooks, type TransferSpec } from "./tftp-threads.ts";
import type { TransferEnd } from "./tftp-transfer.ts";

export type { TftpFile } from "./tftp-files.ts";
export { fileFromBuffer, fileFromPath } from "./tftp-files.ts";

export type TftpTransferEvent = { client: string; file: string; bytes: number; ok: boolean; ms: number; reason?: string };

export type TftpServerOptions = {
  /** Maps a normalised name (see normalizeTftpPath) to the file to send, or undefined. */
  files: (name: string) => TftpFile | undefined;
  /** Interfaces to serve on; null serves on every interface. */
  interfaces: string[] | null;
  /** Local address to bind (default 0.0.0.0). */
  address?: string;
  /** Default 69; 0 picks an ephemeral port (tests). */
  port?: number;
  /** Largest block offered (default 1468: a 1500-byte MTU less IP, UDP and TFTP headers). */
  maxBlksize?: number;
  /** Largest window offered (default 64). */
  maxWindowsize?: number;
  /** Retransmission timeout unless the client negotiates one (default 1000 ms). */
  timeoutMs?: number;
  /** Retransmissions before a silent client is dropped (default 5). */
  retries?: number;
  /** Transfers at once (default 256). */
  maxSessions?: number;
  /** Transfers at once from one IP address (default 8). */
  maxSessionsPerClient?: number;
  /**
   * Memory for DATA packets built once and shared by every transfer of an in-memory file
   * (default 64 MiB: a few boot loaders at a few block sizes each). A file whose packets do
   * not fit is cut into packets per transfer, as it is read.
   */
  packetCacheBytes?: number;
  /**
   * Transfer threads (default: one per CPU, at most 4). Transfers whose packets are prebuilt
   * run there; 0 runs every transfer on the calling thread.
   */
  threads?: number;
  log?: Logger;
  onTransfer?: (e: TftpTransferEvent) => void;
};

export type TftpServer = {
  /** The port the server listens on. */
  port: number;
  /** Stops listening and ends every transfer. */
  close(): Promise<void>;
  /** Transfers running now, requests refused by reason, and transfers completed. */
  stats(): { sessions: number; refused: Record<string, number>; transfers: number };
};

/** Files sent in netascii mode are converted in memory; larger ones must be asked for in octet. */
const NETASCII_LIMIT = 1024 * 1024;

type Session = {
  /** The transfer, once the file is ready and it was started. */
  run: RunningTransfer | undefined;
  /** A new request from the same client TID is being weighed against this transfer. */
  superseding: boolean;
  /** Ends the session's accounting (once), logs it and reports it. */
  finish(end: TransferEnd): void;
  finished: boolean;
  /** Settles once the transfer ended and its socket is closed. */
  done: Promise<void>;
};

/** Starts a TFTP server; resolves once it listens on every interface asked for. */
export async function createTftpServer(options: TftpServerOptions): Promise<TftpServer> {
  const o = Object.freeze({
    files: options.files,
    interfaces: options.interfaces === null ? null : [...options.interfaces],
    address: options.address ?? "0.0.0.0",
    port: options.port ?? 69,
    maxBlksize: options.maxBlksize ?? 1468,
    maxWindowsize: options.maxWindowsize ?? 64,
    timeoutMs: options.timeoutMs ?? 1000,
    retries: options.retries ?? 5,
    maxSessions: options.maxSessions ?? 256,
    maxSessionsPerClient: options.maxSessionsPerClient ?? 8,
    packetCacheBytes: options.packetCacheBytes ?? 64 * 1024 * 1024,
    threads: options.threads ?? Math.min(4, os.availableParallelism()),
    log: options.log ?? silentLogger,
    onTransfer: options.onTransfer,
  });
  validate(o);

  const packetCache = new DataPacketCache(o.packetCacheBytes);
  const threads = new TransferThreads(o.threads);
  const sessions = new Map<string, Session>(); // by client "address:port"
  const perClient = new Map<string, number>(); // by client address
  const refused: Record<string, number> = {};
  let transfers = 0;
  let closing = false;
  const refuse = (reason: string): void => {
    refused[reason] = (refused[reason] ?? 0) + 1;
  };

  const listeners: { socket: dgram.Socket; iface: string | null }[] = [];
  let port = o.port;
  try {
    for (const iface of o.interfaces ?? [null]) {
      const socket = await openBoundUdpSocket({ interface: iface, port, address: o.address });
      port = socket.address().port; // with port 0, every interface shares the first one's port
      listeners.push({ socket, iface });
      socket.on("message", (msg, rinfo) => onRequest(socket, iface, msg, rinfo));
      socket.on("error", (err) => o.log.warn("TFTP listener error", { interface: iface, err }));
    }
  } catch (err) {
    for (const l of listeners) l.socket.close();
    await threads.close();
    throw err;
  }
  o.log.info("TFTP server listening", { port, interfaces: o.interfaces ?? "all" });

  function onRequest(listener: dgram.Socket, iface: string | null, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (closing || rinfo.port === 0) return;
    const reply = (code: number, message: string): void => {
      listener.send(encodeTftp({ op: "ERROR", code, message }), rinfo.port, rinfo.address);
    };
    /** Counts a refused request, logs it (debug: clients can cause any number) and answers it. */
    const deny = (reason: string, code: number, message: string, file?: string): void => {
      refuse(reason);
      o.log.debug("TFTP request refused", { client: `${rinfo.address}:${rinfo.port}`, interface: iface, reason, file });
      reply(code, message);
    };
    let p: TftpPacket;
    try {
      p = decodeTftp(msg);
    } catch (err) {
      refuse("malformed");
      if (!(err instanceof DecodeError)) o.log.error("TFTP decoder failed unexpectedly", { err });
      else o.log.debug("TFTP request refused: malformed", { client: `${rinfo.address}:${rinfo.port}`, interface: iface, error: err.message });
      // Answer only what claims to be a request (RRQ or WRQ opcode), so the client stops
      // retrying; other garbage gets no reply to keep the server from being a reflector.
      if (msg.length >= 2 && msg[0] === 0 && (msg[1] === 1 || msg[1] === 2)) reply(TftpErrorCode.IllegalOperation, "Malformed request");
      return;
    }
    if (p.op === "WRQ") {
      deny("write", TftpErrorCode.AccessViolation, "This server is read-only", p.filename);
      return;
    }
    if (p.op !== "RRQ") {
      refuse("unexpected"); // DATA, ACK or ERROR to the listening port: no transfer of ours
      return;
    }
    const mode = p.mode.toLowerCase();
    if (mode === "mail") {
      deny("mode", TftpErrorCode.IllegalOperation, "Mail mode is not supported", p.filename);
      return;
    }
    const name = normalizeTftpPath(p.filename);
    if (name === null) {
      deny("name", TftpErrorCode.AccessViolation, "File name refused", p.filename);
      return;
    }
    const key = `${rinfo.address}:${rinfo.port}`;
    const admit = (): void => {
      if (sessions.size >= o.maxSessions) {
        deny("busy", TftpErrorCode.NotDefined, "Server busy, try again later", name);
        return;
      }
      if ((perClient.get(rinfo.address) ?? 0) >= o.maxSessionsPerClient) {
        deny("clientBusy", TftpErrorCode.NotDefined, "Too many transfers from this client, try again later", name);
        return;
      }
      let file: TftpFile | undefined;
      try {
        file = o.files(name);
      } catch (err) {
        o.log.error("TFTP file lookup failed", { file: name, err });
        reply(TftpErrorCode.NotDefined, "Cannot look the file up");
        return;
      }
      if (!file) {
        deny("notFound", TftpErrorCode.FileNotFound, "File not found", name);
        return;
      }
      startSession(key, iface, rinfo, name, mode, p.options, file);
    };
    // The same client TID asking again before it sent anything to our transfer means our answer
    // went missing, or it gave up on it (firmware after a tsize probe whose ERROR 8 was lost):
    // the new request replaces the old transfer. Once the client has sent to the transfer's TID
    // it holds that TID, so a request from it is a stale duplicate and must not kill the transfer.
    const previous = sessions.get(key);
    if (!previous) {
      admit();
      return;
    }
    if (!previous.run || previous.superseding) {
      refuse("duplicate"); // still being prepared, or already being replaced
      return;
    }
    previous.superseding = true;
    const reason = "superseded by a new request from the same client port";
    void previous.run.supersede(reason).then((outcome) => {
      if (outcome === "answered") {
        previous.superseding = false;
        refuse("duplicate");
        return;
      }
      // Unanswered, so nothing was acknowledged. One that ended on its own reports itself.
      if (outcome === "superseded") previous.finish({ ok: false, bytes: 0, reason });
      const now = sessions.get(key);
      if (closing || (now !== undefined && now !== previous)) {
        refuse("duplicate"); // another request from this TID was admitted meanwhile
        return;
      }
      admit();
    });
  }

  function startSession(
    key: string,
    iface: string | null,
    rinfo: dgram.RemoteInfo,
    name: string,
    mode: string,
    requested: [string, string][],
    source: TftpFile,
  ): void {
    const started = performance.now();
    const client = key;
    let closed = (): void => {};
    const done = new Promise<void>((resolve) => (closed = resolve));
    // The transfer itself may still be closing its socket when its session is finished.
    const finish = (end: TransferEnd): void => {
      if (session.finished) return;
      session.finished = true;
      if (sessions.get(key) === session) sessions.delete(key);
      const left = (perClient.get(rinfo.address) ?? 1) - 1;
      if (left > 0) perClient.set(rinfo.address, left);
      else perClient.delete(rinfo.address);
      if (end.ok) transfers++;
      const ms = Math.round(performance.now() - started);
      const event: TftpTransferEvent = { client, file: name, bytes: end.bytes, ok: end.ok, ms };
      if (end.reason !== undefined) event.reason = end.reason;
      o.log.info(end.ok ? "TFTP transfer finished" : "TFTP transfer ended", { ...event, interface: iface });
      try {
        o.onTransfer?.(event);
      } catch (err) {
        o.log.error("TFTP onTransfer callback failed", { err });
      }
    };
    const session: Session = { run: undefined, superseding: false, finish, finished: false, done };
    sessions.set(key, session);
    perClient.set(rinfo.address, (perClient.get(rinfo.address) ?? 0) + 1);
    /** Answers from the listening socket: the client has not heard from a transfer socket. */
    const answerFromListener = (message: string): void => {
      listeners.find((x) => x.iface === iface)?.socket.send(encodeTftp({ op: "ERROR", code: TftpErrorCode.NotDefined, message }), rinfo.port, rinfo.address);
    };
    const hooks: TransferHooks = {
      onEnd(end, fault) {
        if (fault) o.log.error("TFTP transfer could not run", { client, file: name, reason: end.reason });
        if (fault === "unstarted" && !session.finished) answerFromListener("Cannot start the transfer");
        finish(end);
      },
      onClosed: () => closed(),
      onRefused: refuse,
    };

    (async () => {
      const file = mode === "netascii" ? await netasciiFile(source, NETASCII_LIMIT) : source;
      if (closing) {
        finish({ ok: false, bytes: 0, reason: "server closing" });
        closed();
        return;
      }
      if (!file) {
        answerFromListener("File too large for netascii mode, ask for octet");
        finish({ ok: false, bytes: 0, reason: "file too large for netascii mode" });
        closed();
        return;
      }
      const n = negotiateOptions(requested, { maxBlksize: o.maxBlksize, maxWindowsize: o.maxWindowsize, fileSize: file.size });
      const spec: TransferSpec = {
        iface,
        address: o.address,
        client: { address: rinfo.address, port: rinfo.port },
        blksize: n.blksize,
        windowsize: n.windowsize,
        oack: n.accepted,
        timeoutMs: n.timeout !== undefined ? n.timeout * 1000 : o.timeoutMs,
        retries: o.retries,
      };
      // A netascii copy is made for this transfer alone: not worth keeping its packets.
      const set = file === source ? packetCache.packets(file, n.blksize) : undefined;
      if (set && threads.usable) session.run = threads.start(spec, set, hooks);
      else session.run = runTransfer(spec, set ?? file, hooks);
    })().catch((err: unknown) => {
      o.log.error("TFTP transfer could not start", { client, file: name, err });
      if (!session.finished) answerFromListener("Cannot start the transfer");
      finish({ ok: false, bytes: 0, reason: `could not start: ${err instanceof Error ? err.message : String(err)}` });
      closed();
    });
  }

  return {
    port,
    async close() {
      if (closing) return;
      closing = true;
      const all = [...sessions.values()];
      for (const s of all) s.run?.abort("server closing", "Server shutting down");
      await Promise.all(listeners.map((l) => new Promise<void>((resolve) => l.socket.close(() => resolve()))));
      await Promise.all(all.map((s) => s.done));
      await threads.close();
      o.log.info("TFTP server stopped", { port });
    },
    stats: () => ({ sessions: sessions.size, refused: { ...refused }, transfers }),
  };
}

function validate(o: {
  maxBlksize: number;
  maxWindowsize: number;
  timeoutMs: number;
  retries: number;
  maxSessions: number;
  maxSessionsPerClient: number;
  packetCacheBytes: number;
  threads: number;
  port: number;
}): void {
  const check = (ok: boolean, what: string): void => {
    if (!ok) throw new RangeError(`Cannot start the TFTP server: ${what}`);
  };
  const int = (v: number, min: number, max: number): boolean => Number.isInteger(v) && v >= min && v <= max;
  check(int(o.port, 0, 65535), `port ${o.port} is not a port number`);
  check(int(o.maxBlksize, 8, TFTP_MAX_BLKSIZE), `maxBlksize ${o.maxBlksize} is not in 8..${TFTP_MAX_BLKSIZE}`);
  check(int(o.maxWindowsize, 1, 65535), `maxWindowsize ${o.maxWindowsize} is not in 1..65535`);
  check(int(o.timeoutMs, 10, 255_000), `timeoutMs ${o.timeoutMs} is not in 10..255000`);
  check(int(o.retries, 0, 100), `retries ${o.retries} is not in 0..100`);
  check(int(o.maxSessions, 1, 65536), `maxSessions ${o.maxSessions} is not in 1..65536`);
  check(int(o.maxSessionsPerClient, 1, 65536), `maxSessionsPerClient ${o.maxSessionsPerClient} is not in 1..65536`);
  check(int(o.packetCacheBytes, 0, Number.MAX_SAFE_INTEGER), `packetCacheBytes ${o.packetCacheBytes} is not a whole number of bytes`);
  check(int(o.threads, 0, 64), `threads ${o.threads} is not in 0..64`);
}
