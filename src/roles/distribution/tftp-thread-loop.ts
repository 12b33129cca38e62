/**
 * The body of a TFTP transfer thread: an epoll loop of its own over the thread's transfer
 * sockets, with libc doing the I/O (src/net/bound-udp.ts, `udpSyscalls`).
 *
 * Why not Node's dgram here: in lock-step TFTP every block waits for the client's ACK, so the
 * server's cost per datagram is on the critical path, and dgram's is large — a buffer
 * allocated and the sender's address formatted per datagram received, a callback into JS
 * through libuv, the destination parsed again and a request object per send. Measured with
 * curl on loopback (16 MiB, blksize 1468, in the same minute): through dgram 19.7–25.4 MB/s,
 * a first prototype of this loop 30.8–33.0, tftpd-hpa 25.1–29.5 (bench/README.md has the full
 * runs). A window of packets (RFC 7440) goes out in one send when the kernel cuts it into
 * datagrams (UDP GSO).
 *
 * The thread blocks in epoll_wait; the main thread hands it work by message and wakes it
 * through an eventfd. Nothing here may wait on a promise, a timer of Node's or setImmediate: the event
 * loop of this thread does not turn while the loop runs. Transfers of prebuilt packets only
 * (their bytes are in shared memory), so no file is read here.
 */

import { writeSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";
import { EPOLL_EVENT_BYTES, readyFd, sockaddr, udpSyscalls, type UdpSyscalls } from "../../net/bound-udp.ts";
import type { FromThread, ThreadData, ToThread, TransferSpec } from "./tftp-thread-messages.ts";
import type { PacketSet } from "./tftp-files.ts";
import { Transfer, UNKNOWN_TID_ERROR, type TransferTimer } from "./tftp-transfer.ts";

/**
 * Datagrams read from one socket per turn of the loop. A client sends one ACK per block or
 * window, then waits: a second read would nearly always find nothing and cost a system call.
 * epoll (level-triggered) reports a socket again while it holds more.
 */
const READS_PER_TURN = 1;
/**
 * Longest sleep in epoll_wait. Node stops a worker (terminate(), process exit) only when it runs
 * JavaScript again, and joins its thread at exit: a thread asleep there for good would hold
 * the process forever.
 */
const MAX_POLL_MS = 1000;
/**
 * How long the loop keeps looking for datagrams without sleeping after the last one came. In
 * lock-step TFTP the client's ACK follows each DATA within tens of microseconds; a thread that
 * slept meanwhile is woken by the kernel, and on a virtual machine that wake-up (an IPI to an
 * idle vCPU, a VM exit) costs more than the whole round trip. Measured with curl on loopback,
 * 16 MiB: 17.5–30.2 MB/s sleeping, 44–66 with the spin, tftpd-hpa 20.7–28.0. Only after an ACK
 * of a lock-step transfer: with windowsize 16 the client takes longer per window and the spin
 * only took CPU from it (263 → 215 MB/s). A thread spins at most this long after that ACK, so
 * an idle server sleeps.
 */
const SPIN_MS = 0.05;
/**
 * Datagrams read from a transfer's socket before deciding whether a repeated request replaces
 * it: enough for what a client sent, bounded so that a stranger flooding the port cannot hold
 * the thread.
 */
const SUPERSEDE_READS = 64;
/** Ready descriptors taken from epoll per turn. */
const MAX_EVENTS = 128;
/** UDP GSO limits (Linux): at most 64 segments and one IP datagram's worth of payload per send. */
const GSO_MAX_SEGMENTS = 63; // 64 is the limit, but kernels before ~5.15 count the headers in it
const GSO_MAX_BYTES = 65507;
const MIN_GSO_STRIDE = 512;

type Run = {
  id: number;
  fd: number;
  /** The client's sockaddr_in: every send goes there, every datagram is checked against it. */
  client: Buffer;
  transfer: Transfer | undefined;
  /** The client sent something to this transfer's TID. */
  answered: boolean;
  ended: boolean;
  /**
   * Windows go out as one send each (UDP GSO) until the kernel refuses it. The socket then cuts
   * every send into datagrams of `stride` bytes, so nothing longer may be sent while it is on.
   */
  gso: boolean;
  stride: number;
  /** windowsize 1: one block per round trip, where the spin pays (SPIN_MS). */
  lockStep: boolean;
};

/**
 * Timers on the loop's own clock; the loop sleeps in epoll_wait until the earliest. A timer is
 * refreshed on every window sent, which moves it later, so the earliest deadline seen at the
 * last look stays a lower bound: the timers are looked through again only once it has passed,
 * not on every turn of the loop.
 */
class LoopTimers {
  readonly #all = new Set<{ deadline: number; fire(): void }>();
  /** No timer is due before this. */
  #bound = Infinity;

  start(onTimeout: () => void, ms: number): TransferTimer {
    const t = { deadline: performance.now() + ms, fire: onTimeout };
    this.#all.add(t);
    if (t.deadline < this.#bound) this.#bound = t.deadline;
    let cleared = false;
    return {
      refresh: () => {
        if (cleared) return;
        t.deadline = performance.now() + ms;
        // One that fired (deadline Infinity) and is started again may now be the earliest.
        if (t.deadline < this.#bound) this.#bound = t.deadline;
      },
      clear: () => {
        cleared = true;
        this.#all.delete(t);
      },
    };
  }

  /** Milliseconds until the earliest timer may be due, -1 with none. */
  wait(now: number): number {
    return this.#bound === Infinity ? -1 : Math.max(0, Math.ceil(this.#bound - now));
  }

  /** Fires every timer that is due (each once unless refreshed), and finds the next bound. */
  fireDue(now: number): void {
    if (now < this.#bound) return;
    const due: { deadline: number; fire(): void }[] = [];
    for (const t of this.#all) if (t.deadline <= now) due.push(t);
    for (const t of due) {
      if (t.deadline <= now && this.#all.has(t)) {
        t.deadline = Infinity;
        t.fire();
      }
    }
    let bound = Infinity;
    for (const t of this.#all) if (t.deadline < bound) bound = t.deadline;
    this.#bound = bound;
  }
}

/** Entry point of a transfer thread (see TransferThreads in tftp-threads.ts). */
export async function serveTransferThread(): Promise<void> {
  const out = parentPort;
  const { port } = workerData as ThreadData;
  if (!out || !port) throw new Error("Cannot serve TFTP transfers: this is not a transfer thread");
  const sys = await udpSyscalls();
  const wake = sys.eventfd();
  out.postMessage({ type: "ready", wake } satisfies FromThread);
  loop(sys, wake, port, (m) => out.postMessage(m));
  // Only after the main thread said "exit" and so writes the eventfd no more. A thread that
  // fails leaves it open: the main thread may write it once more before it learns of the
  // failure, and a closed number can already name another file.
  sys.close(wake);
}

function loop(sys: UdpSyscalls, wake: number, port: MessagePort, post: (m: FromThread) => void): void {
  const timers = new LoopTimers();
  const runs = new Map<number, Run>();
  const byFd = new Map<number, Run>();
  const datagram = Buffer.alloc(65536);
  const from = Buffer.alloc(16);
  // epoll, not poll: with a hundred transfers on a thread, poll(2) walks every socket per turn.
  const epoll = sys.epoll();
  sys.watch(epoll, wake);
  const events = Buffer.alloc(EPOLL_EVENT_BYTES * MAX_EVENTS);

  const closeRun = (run: Run): void => {
    sys.unwatch(epoll, run.fd);
    sys.close(run.fd);
  };
  const finish = (run: Run): void => {
    if (run.ended) return;
    run.ended = true;
    closeRun(run);
    runs.delete(run.id);
    byFd.delete(run.fd);
    post({ type: "closed", id: run.id });
  };

  const sendOne = (run: Run, packet: Uint8Array): void => {
    if (run.ended) return;
    if (run.gso && packet.length > run.stride) noGso(run); // an OACK or ERROR longer than a block must go out whole
    try {
      sys.send(run.fd, packet, packet.length, run.client); // -1 (no room): lost, as on the wire; the timer resends
      return;
    } catch (err) {
      if (!run.gso) {
        run.transfer?.abort(`socket error: ${(err as Error).message}`);
        return;
      }
    }
    // The kernel checks every send of a GSO socket against the device and the path MTU, even
    // one datagram (EIO, EINVAL, EMSGSIZE): without GSO, once more.
    noGso(run);
    sendOne(run, packet);
  };
  const noGso = (run: Run): void => {
    sys.segment(run.fd, 0);
    run.gso = false;
  };

  const sendRun = (run: Run, bytes: Uint8Array, stride: number, count: number): void => {
    let i = 0;
    if (run.gso) {
      const perSend = Math.max(1, Math.min(GSO_MAX_SEGMENTS, Math.floor(GSO_MAX_BYTES / stride)));
      try {
        for (; i < count && !run.ended; i += perSend) {
          const part = bytes.subarray(i * stride, Math.min((i + perSend) * stride, bytes.length));
          sys.send(run.fd, part, part.length, run.client);
        }
        return;
      } catch {
        // EIO where the device has no checksum offload, EINVAL past its MTU: the rest of this
        // window and every later one go out a datagram at a time.
        noGso(run);
      }
    }
    for (; i < count && !run.ended; i++) sendOne(run, bytes.subarray(i * stride, Math.min((i + 1) * stride, bytes.length)));
  };

  const start = (id: number, spec: TransferSpec, set: PacketSet): void => {
    let fd: number;
    let client: Buffer;
    try {
      client = sockaddr(spec.client.address, spec.client.port);
      fd = sys.open(spec.iface, spec.address);
    } catch (err) {
      post({ type: "end", id, end: { ok: false, bytes: 0, reason: `could not start: ${(err as Error).message}` }, fault: "unstarted" });
      post({ type: "closed", id });
      return;
    }
    const stride = 4 + spec.blksize;
    const run: Run = { id, fd, client, transfer: undefined, answered: false, ended: false, gso: false, stride, lockStep: spec.windowsize === 1 };
    // Only for blocks of 508 bytes and more: an OACK or ERROR is shorter than that.
    if (spec.windowsize > 1 && stride >= MIN_GSO_STRIDE) run.gso = sys.segment(fd, stride);
    runs.set(id, run);
    byFd.set(fd, run);
    try {
      sys.watch(epoll, fd);
    } catch (err) {
      runs.delete(id);
      byFd.delete(fd);
      sys.close(fd);
      post({ type: "end", id, end: { ok: false, bytes: 0, reason: `could not start: ${(err as Error).message}` }, fault: "unstarted" });
      post({ type: "closed", id });
      return;
    }
    const transfer = new Transfer({
      source: set,
      blksize: spec.blksize,
      windowsize: spec.windowsize,
      oack: spec.oack,
      timeoutMs: spec.timeoutMs,
      retries: spec.retries,
      send: (p) => sendOne(run, p),
      sendRun: run.gso ? (bytes, stride, count) => sendRun(run, bytes, stride, count) : undefined,
      timer: (f, ms) => timers.start(f, ms),
      onEnd: (end) => {
        post({ type: "end", id, end });
        finish(run); // a UDP send is in the kernel once it returned: closing loses nothing
      },
    });
    run.transfer = transfer;
    transfer.start();
  };

  /** Reads what waits on a run's socket (at most `max` datagrams) and hands it to the transfer. */
  const read = (run: Run, max: number): void => {
    for (let i = 0; i < max && !run.ended; i++) {
      let n: number;
      try {
        n = sys.receive(run.fd, datagram, from);
      } catch (err) {
        run.transfer?.abort(`socket error: ${(err as Error).message}`);
        return;
      }
      if (n < 0) return;
      const c = run.client;
      if (from[2] !== c[2] || from[3] !== c[3] || from[4] !== c[4] || from[5] !== c[5] || from[6] !== c[6] || from[7] !== c[7]) {
        // RFC 1350 §4: a packet from another TID gets ERROR 5 and leaves the transfer alone.
        post({ type: "refused", id: run.id, reason: "unknownTid" });
        try {
          sys.send(run.fd, UNKNOWN_TID_ERROR, UNKNOWN_TID_ERROR.length, from);
        } catch {
          // the stranger is unreachable: nothing to tell it
        }
        continue;
      }
      run.answered = true;
      const t = run.transfer;
      if (!t) continue;
      const got = t.onDatagram(datagram, n);
      if (got === "ack" && run.lockStep) lastLockStepAck = performance.now();
      else if (got === "malformed") post({ type: "refused", id: run.id, reason: "malformed" });
    }
  };

  /** Handles the main thread's messages; false once it said to stop. */
  const messages = (): boolean => {
    for (;;) {
      const got = receiveMessageOnPort(port);
      if (!got) return true;
      const m = got.message as ToThread;
      if (m.type === "exit") {
        for (const run of [...runs.values()]) run.transfer?.abort("server closing");
        return false;
      }
      if (m.type === "start") {
        start(m.id, m.spec, m.set);
        continue;
      }
      const run = runs.get(m.id);
      if (m.type === "abort") {
        run?.transfer?.abort(m.reason, m.tell);
        continue;
      }
      // supersede: first read what reached the transfer's socket before the new request reached
      // the listener — like the ERROR 8 a firmware sends to end a tsize probe just before it asks again.
      if (run) read(run, SUPERSEDE_READS);
      const outcome = !run || run.ended ? "ended" : run.answered ? "answered" : "superseded";
      post({ type: "superseded", id: m.id, outcome }); // before the abort's "end" and "closed"
      if (outcome === "superseded") run?.transfer?.abort(m.reason);
    }
  };

  let lastLockStepAck = -Infinity;
  try {
    for (;;) {
      const now = performance.now();
      const due = timers.wait(now);
      // Right after a lock-step ACK the next one is usually microseconds away: look again at
      // once rather than sleep, for a moment (see SPIN_MS).
      const spinning = now - lastLockStepAck < SPIN_MS;
      const n = sys.wait(epoll, events, MAX_EVENTS, spinning ? 0 : due < 0 || due > MAX_POLL_MS ? MAX_POLL_MS : due);
      // Datagrams first, then the main thread's messages, then the timers that came due.
      let woken = false;
      for (let i = 0; i < n; i++) {
        const fd = readyFd(events, i);
        if (fd === wake) woken = true;
        else {
          const run = byFd.get(fd);
          if (run && !run.ended) read(run, READS_PER_TURN);
        }
      }
      if (woken) {
        sys.drainEventfd(wake);
        if (!messages()) return;
      }
      timers.fireDue(performance.now());
    }
  } finally {
    // Also when the loop failed: the main thread reports these transfers ended and never
    // touches their sockets, which would otherwise stay bound for the life of the process.
    for (const run of runs.values()) closeRun(run);
    sys.close(epoll);
  }
}

/** Wakes a transfer thread asleep in epoll_wait: adds 1 to its eventfd. */
export function wakeThread(eventfd: number): void {
  writeSync(eventfd, ONE);
}
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
