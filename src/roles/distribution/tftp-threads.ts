/**
 * Where TFTP transfers run: each on a socket of its own (a new TID, RFC 1350 §4) bound to the
 * interface its request arrived on, on one of a few transfer threads or on the main thread.
 *
 * Why threads: a transfer costs the server a receive and a send per block, most of it in the
 * kernel's UDP path, which runs in the sending thread. One thread serving a hundred machines
 * at once is the bottleneck while the CPUs idle; tftpd-hpa forks a process per transfer and
 * atftpd starts a thread for the same reason. The main thread keeps the listeners, the limits,
 * the logs and the statistics; a transfer thread gets only what crosses to it as data: where to
 * bind, the client's address and the negotiated options, and the file's DATA packets, which
 * live in shared memory (DataPacketCache). A thread runs an epoll loop of its own with libc doing
 * the I/O (tftp-thread-loop.ts). A file whose packets are not prebuilt — read from disk as it
 * goes, or converted to netascii for one transfer — runs on the main thread, through dgram.
 */

import type dgram from "node:dgram";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import { TftpOpcode } from "../../protocol/tftp.ts";
import { openBoundUdpSocket } from "../../net/bound-udp.ts";
import type { PacketSet, TftpFile } from "./tftp-files.ts";
import { Transfer, UNKNOWN_TID_ERROR, type TransferEnd } from "./tftp-transfer.ts";
import { wakeThread } from "./tftp-thread-loop.ts";
import type { Fault, FromThread, Supersede, ThreadData, ToThread, TransferSpec } from "./tftp-thread-messages.ts";

/** What runTransfer and TransferThreads.start take (tftp-server.ts builds it). */
export type { TransferSpec };

export type TransferHooks = {
  /**
   * The transfer ended; called once. `fault` is set when it could not run: "unstarted" when no
   * socket could be opened, so the client has heard nothing and the server answers it from the
   * listening socket; "failed" when it broke later (a thread died, the transfer did not start).
   */
  onEnd(end: TransferEnd, fault?: Fault): void;
  /** Its socket is closed: whatever it had to send went out. Comes after onEnd. */
  onClosed(): void;
  /** A datagram the transfer refused, counted in the server's statistics. */
  onRefused(reason: "unknownTid" | "malformed"): void;
};

export type RunningTransfer = {
  /**
   * Ends the transfer for a new request from the same client TID, unless the client answered
   * it: one that sent anything to the transfer's TID holds that TID, so its new request is a
   * stale duplicate and the transfer must go on. "ended": it had ended already (on a transfer
   * thread, not yet reported), so the new request is a new transfer.
   *
   * Decided on the thread that runs the transfer once its event loop has read the datagrams
   * that were waiting for it: those reached its socket before the new request reached the
   * listener, like the ERROR 8 a firmware sends to end a tsize probe just before it asks again.
   */
  supersede(reason: string): Promise<Supersede>;
  /** Ends the transfer; `tell` is the message of an ERROR 0 for the client (no local detail). */
  abort(reason: string, tell?: string): void;
};

/** Runs one transfer on this thread: opens its socket, wires it to a Transfer, closes it once the last packet went out. */
export function runTransfer(spec: TransferSpec, source: PacketSet | TftpFile, hooks: TransferHooks): RunningTransfer {
  const { client } = spec;
  let transfer: Transfer | undefined;
  let socket: dgram.Socket | undefined;
  let stopped: { reason: string } | undefined;
  let ended = false;
  let answered = false;
  const end = (e: TransferEnd, fault?: Fault): void => {
    if (ended) return;
    ended = true;
    hooks.onEnd(e, fault);
  };
  // A transfer's last packet is often an ERROR or OACK sent just before it ends: the socket
  // closes only once those went out (closing cancels sends still queued). DATA needs no such
  // care, and skipping the callback keeps the hot path lean.
  let unsent = 0;
  let closeAfterSends = false;
  const close = (): void => {
    if (socket) socket.close(() => hooks.onClosed());
    else hooks.onClosed();
  };
  const closeWhenSent = (): void => {
    if (unsent === 0) close();
    else closeAfterSends = true;
  };

  (async () => {
    socket = await openBoundUdpSocket({ interface: spec.iface, port: 0, address: spec.address });
    const s = socket;
    if (stopped) {
      end({ ok: false, bytes: 0, reason: stopped.reason });
      close();
      return;
    }
    const send = (packet: Uint8Array): void => {
      if (packet[1] === TftpOpcode.DATA) {
        s.send(packet, client.port, client.address);
        return;
      }
      unsent++;
      s.send(packet, client.port, client.address, () => {
        if (--unsent === 0 && closeAfterSends) close();
      });
    };
    const t = new Transfer({
      source,
      blksize: spec.blksize,
      windowsize: spec.windowsize,
      oack: spec.oack,
      timeoutMs: spec.timeoutMs,
      retries: spec.retries,
      send,
      onEnd: (e) => {
        end(e);
        closeWhenSent();
      },
    });
    transfer = t;
    s.on("error", (err) => t.abort(`socket error: ${err.message}`));
    s.on("message", (msg, from) => {
      if (from.port !== client.port || from.address !== client.address) {
        // RFC 1350 §4: a packet from another TID gets ERROR 5 and leaves the transfer alone.
        hooks.onRefused("unknownTid");
        s.send(UNKNOWN_TID_ERROR, from.port, from.address);
        return;
      }
      answered = true;
      if (t.onDatagram(msg) === "malformed") hooks.onRefused("malformed");
    });
    t.start();
  })().catch((err: unknown) => {
    end({ ok: false, bytes: 0, reason: `could not start: ${err instanceof Error ? err.message : String(err)}` }, socket ? "failed" : "unstarted");
    close();
  });

  const abort = (reason: string, tell?: string): void => {
    if (transfer) transfer.abort(reason, tell);
    else stopped ??= { reason }; // the socket is still opening: nothing was sent, nothing to tell
  };
  const supersedeNow = (reason: string): Supersede => {
    if (ended) return "ended";
    if (answered) return "answered";
    abort(reason);
    return "superseded";
  };
  return { supersede: (reason) => afterWaitingDatagrams(() => supersedeNow(reason)), abort };
}

/**
 * Runs `f` once the datagrams already waiting for this thread's sockets have been read. A
 * thread handles every message that arrives while it handles messages, without polling its
 * sockets in between, so a message can come before a datagram that was there first; the next
 * turn of the event loop polls every socket, and the second setImmediate runs after it.
 */
function afterWaitingDatagrams<T>(f: () => T): Promise<T> {
  return new Promise((resolve) => setImmediate(() => setImmediate(() => resolve(f()))));
}

/** A transfer on a thread, as the main thread follows it. */
type Remote = { hooks: TransferHooks; superseding?: (outcome: Supersede) => void };
type Thread = {
  worker: Worker;
  /** Where messages to the thread go; it reads them when woken. */
  port: MessagePort;
  /** The thread's eventfd, once it said it is ready; written only while the thread lives. */
  wake: number | undefined;
  runs: Map<number, Remote>;
  failed: boolean;
  /** Told to exit: it closes its eventfd, so nothing may be written to that number any more. */
  exiting: boolean;
  exited: Promise<void>;
};

/**
 * Up to `max` transfer threads, started as transfers need them; each new transfer goes to the
 * thread running the fewest. A thread that fails ends its transfers (the clients retry) and
 * turns the threads off: transfers run on the main thread from then on.
 */
export class TransferThreads {
  readonly #max: number;
  readonly #threads: Thread[] = [];
  #nextId = 0;
  #usable: boolean;

  constructor(max: number) {
    this.#max = max;
    this.#usable = max > 0;
  }

  /** Whether start() may be called. */
  get usable(): boolean {
    return this.#usable;
  }

  /** Runs a transfer of prebuilt packets on a transfer thread. */
  start(spec: TransferSpec, set: PacketSet, hooks: TransferHooks): RunningTransfer {
    const thread = this.#pick();
    const id = this.#nextId++;
    const remote: Remote = { hooks };
    thread.runs.set(id, remote);
    const post = (m: ToThread): void => this.#post(thread, m);
    post({ type: "start", id, spec, set });
    return {
      supersede(reason) {
        if (!thread.runs.has(id)) return Promise.resolve("ended");
        return new Promise((resolve) => {
          remote.superseding = resolve;
          post({ type: "supersede", id, reason });
        });
      },
      abort: (reason, tell) => post({ type: "abort", id, reason, tell }),
    };
  }

  /** Stops every thread; call once no transfer runs. Each closes its own descriptors and exits. */
  async close(): Promise<void> {
    await Promise.all(
      this.#threads.splice(0).map(async (t) => {
        this.#post(t, { type: "exit" });
        t.exiting = true;
        const timer = setTimeout(() => void t.worker.terminate(), 5000); // one that does not answer
        await t.exited;
        clearTimeout(timer);
      }),
    );
  }

  #post(thread: Thread, m: ToThread): void {
    if (thread.failed || thread.exiting) return;
    thread.port.postMessage(m);
    // Before "ready" the thread is not waiting yet: it reads its messages when it starts.
    if (thread.wake === undefined) return;
    try {
      wakeThread(thread.wake);
    } catch (err) {
      thread.worker.emit("error", err);
    }
  }

  #pick(): Thread {
    let best: Thread | undefined;
    for (const t of this.#threads) if (!best || t.runs.size < best.runs.size) best = t;
    if (best && (best.runs.size === 0 || this.#threads.length >= this.#max)) return best;
    return this.#spawn();
  }

  #spawn(): Thread {
    // The thread imports its loop and serves; an eval'd entry keeps importing it free of effects.
    const loopUrl = new URL("./tftp-thread-loop.ts", import.meta.url).href;
    const channel = new MessageChannel();
    const data: ThreadData = { port: channel.port2 };
    const worker = new Worker(`import(${JSON.stringify(loopUrl)}).then((m) => m.serveTransferThread())`, {
      eval: true,
      workerData: data,
      transferList: [channel.port2],
    });
    worker.unref(); // the listening sockets keep the process alive, not idle threads
    let exited = (): void => {};
    const thread: Thread = { worker, port: channel.port1, wake: undefined, runs: new Map(), failed: false, exiting: false, exited: new Promise((r) => (exited = r)) };
    this.#threads.push(thread);
    worker.on("message", (m: FromThread) => {
      if (m.type === "ready") {
        thread.wake = m.wake;
        if (!thread.failed) wakeThread(m.wake); // for whatever was posted before it waited
        return;
      }
      const remote = thread.runs.get(m.id);
      if (!remote) return;
      if (m.type === "end") remote.hooks.onEnd(m.end, m.fault);
      else if (m.type === "refused") remote.hooks.onRefused(m.reason);
      else if (m.type === "superseded") {
        remote.superseding?.(m.outcome);
        remote.superseding = undefined;
      } else {
        thread.runs.delete(m.id);
        remote.superseding?.("ended");
        remote.hooks.onClosed();
      }
    });
    const fail = (why: string): void => {
      if (thread.failed) return;
      thread.failed = true;
      const i = this.#threads.indexOf(thread);
      if (i >= 0) this.#threads.splice(i, 1);
      // A thread that failed (no memory, no descriptors left, a bug) is not replaced: the next
      // would likely fail alike. Transfers run on the main thread from now on.
      if (!thread.exiting) this.#usable = false;
      void worker.terminate(); // if it still runs, it must not go on sending for sessions reported ended
      for (const remote of thread.runs.values()) {
        remote.superseding?.("ended");
        // A thread that never got going never opened a transfer socket: the client heard nothing.
        remote.hooks.onEnd({ ok: false, bytes: 0, reason: `transfer thread failed: ${why}` }, thread.wake !== undefined ? "failed" : "unstarted");
        remote.hooks.onClosed();
      }
      thread.runs.clear();
      channel.port1.close();
    };
    worker.on("error", (err) => fail(err.message));
    worker.on("exit", (code) => {
      fail(`it exited with code ${code}`);
      exited();
    });
    return thread;
  }
}
