/**
 * UDP sockets that send and receive on one network interface only.
 *
 * Node's dgram cannot bind a socket to a device (SO_BINDTODEVICE) nor say which interface a
 * datagram arrived on (IP_PKTINFO), so a socket bound to 0.0.0.0 answers every link. Guessing
 * the link from addresses is wrong: relayed requests, unnumbered links and an attacker on
 * another link who writes our address all break it. Instead the socket is made with libc
 * through FFI (koffi), bound to the device by the kernel — which then delivers only datagrams
 * that arrived on that device and routes everything sent out through it — and handed to dgram
 * as a file descriptor (`socket.bind({ fd })`, which wraps an existing socket). The rest of the
 * program sees an ordinary `dgram.Socket`. This is how dnsmasq's `bind-interfaces` works.
 */

import dgram from "node:dgram";
import { lookup as dnsLookup } from "node:dns";
import { isIPv4 } from "node:net";
import os from "node:os";
import { getSystemErrorMessage } from "node:util";

export type BoundUdpOptions = {
  /** Device name (e.g. "eth1"); null for a plain socket that hears every interface. */
  interface: string | null;
  /** 0 picks an ephemeral port. */
  port: number;
  /** Local address to bind; 0.0.0.0 (the default) also receives broadcasts. */
  address?: string;
  /** Allow sending to broadcast addresses (SO_BROADCAST). */
  broadcast?: boolean;
  /**
   * SO_REUSEADDR (default off). Sockets bound to different devices share a port without it;
   * it is needed only to share a port with a socket of no device (or two on the same device,
   * which then split the traffic — off by default so a second server on a link fails loudly).
   */
  reuseAddr?: boolean;
};

/** Opens a UDP/IPv4 socket bound to `port` and, when `interface` is given, to that device only. */
export async function openBoundUdpSocket(opts: BoundUdpOptions): Promise<dgram.Socket> {
  const address = opts.address ?? "0.0.0.0";
  if (!(Number.isInteger(opts.port) && opts.port >= 0 && opts.port <= 65535)) {
    throw new RangeError(`Cannot open a UDP socket on port ${opts.port}: not a port number`);
  }
  const ip = parseIPv4(address);
  if (!ip) throw new RangeError(`Cannot open a UDP socket on address ${JSON.stringify(address)}: not an IPv4 address`);

  if (opts.interface === null) {
    const socket = dgram.createSocket({ type: "udp4", reuseAddr: opts.reuseAddr ?? false, lookup: literalLookup });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ port: opts.port, address }, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    if (opts.broadcast) socket.setBroadcast(true);
    return socket;
  }

  const c = await libc();
  const fd = deviceSocket(c, opts.interface, opts.port, ip, opts.broadcast ?? false, opts.reuseAddr ?? false);
  const socket = dgram.createSocket({ type: "udp4", lookup: literalLookup });
  try {
    // With an fd, bind wraps the socket as it is (port and address are ignored) and starts
    // receiving at once; libuv owns the descriptor from here on and closes it with the socket.
    socket.bind({ fd });
  } catch (err) {
    c.close(fd);
    throw err;
  }
  return socket;
}

/**
 * dgram resolves the destination of every send, even an IP address, and answers a literal a
 * tick later; servers sending thousands of packets a second to addresses they already have
 * skip that round. Names still go to dns.lookup.
 */
const literalLookup = ((hostname: string, options: unknown, callback: (err: Error | null, address: string, family: number) => void): void => {
  if (isIPv4(hostname)) callback(null, hostname, 4);
  else (dnsLookup as (h: string, o: unknown, cb: typeof callback) => void)(hostname, options, callback);
}) as unknown as typeof dnsLookup;

/** The first IPv4 address of an interface, from os.networkInterfaces(). */
export function interfaceIPv4(ifname: string): { address: string; netmask: string; cidr: string } | undefined {
  const entry = os.networkInterfaces()[ifname]?.find((a) => a.family === "IPv4");
  if (!entry || entry.cidr === null) return undefined;
  return { address: entry.address, netmask: entry.netmask, cidr: entry.cidr };
}

// ---------------------------------------------------------------------------------------
// The libc side. Only Linux has SO_BINDTODEVICE with these semantics.

// <sys/socket.h>, <netinet/in.h> and asm-generic/socket.h: the same on x86-64, arm64 and the
// other architectures Node ships for Linux (MIPS, SPARC, PA-RISC and Alpha differ: refused below).
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000; // never leak the socket into child processes
const SOCK_NONBLOCK = 0o4000;
const SOL_UDP = 17;
const UDP_SEGMENT = 103; // <linux/udp.h>, Linux >= 4.18
const EAGAIN = os.constants.errno.EAGAIN;
const EINTR = os.constants.errno.EINTR;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_BROADCAST = 6;
const SO_BINDTODEVICE = 25;
const IFNAMSIZ = 16; // <net/if.h>: names are at most 15 bytes plus NUL

type Libc = {
  /** libc.so.6 as koffi loaded it, for more functions. */
  lib: { func(signature: string): (...args: unknown[]) => unknown };
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Uint8Array, length: number): number;
  bind(fd: number, addr: Uint8Array, length: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  errno(): number;
};

let loaded: Libc | undefined;

async function libc(): Promise<Libc> {
  if (loaded) return loaded;
  if (process.platform !== "linux" || !["x64", "arm64", "arm", "ia32", "riscv64", "loong64", "ppc64", "s390x"].includes(process.arch)) {
    throw new Error(`Cannot bind a socket to a network interface on ${process.platform}/${process.arch}: only Linux supports SO_BINDTODEVICE here`);
  }
  // koffi is a native module: load it only when a device-bound socket is asked for, so the
  // rest of the program (and every plain socket) works without it.
  const { default: koffi } = await import("koffi");
  const lib = koffi.load("libc.so.6");
  const fns = {
    socket: lib.func("int socket(int domain, int type, int protocol)"),
    setsockopt: lib.func("int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t length)"),
    bind: lib.func("int bind(int fd, const uint8_t *addr, uint32_t length)"),
    listen: lib.func("int listen(int fd, int backlog)"),
    close: lib.func("int close(int fd)"),
  };
  loaded = {
    lib,
    socket: (d, t, p) => fns.socket(d, t, p) as number,
    setsockopt: (fd, level, name, value, length) => fns.setsockopt(fd, level, name, value, length) as number,
    bind: (fd, addr, length) => fns.bind(fd, addr, length) as number,
    listen: (fd, backlog) => fns.listen(fd, backlog) as number,
    close: (fd) => fns.close(fd) as number,
    errno: () => koffi.errno(),
  };
  return loaded;
}

/**
 * UDP through libc directly, without libuv: for a thread that runs its own poll loop (the TFTP
 * transfer threads), where each datagram must cost as little as a C server pays — one system
 * call to receive, one to send, no buffer allocated, no address formatted. Every call is
 * synchronous and every socket non-blocking; receive and send return -1 when the kernel had
 * nothing or no room (EAGAIN), and throw on any other error.
 */
export type UdpSyscalls = {
  /** A non-blocking UDP/IPv4 socket bound to `address`:0 and, unless `ifname` is null, to that device. */
  open(ifname: string | null, address: string): number;
  /** Receives one datagram into `buf`; its sender goes into `from` (a sockaddr_in, 16 bytes). */
  receive(fd: number, buf: Uint8Array, from: Uint8Array): number;
  /** Sends `buf` (`length` bytes of it) to `to` (a sockaddr_in); with segmentation on, as several datagrams. */
  send(fd: number, buf: Uint8Array, length: number, to: Uint8Array): number;
  /**
   * Makes the kernel cut every send into datagrams of `size` bytes (UDP GSO): a window of
   * packets laid back to back goes out in one call. False where the kernel has no UDP_SEGMENT.
   */
  segment(fd: number, size: number): boolean;
  /** A new epoll instance (level-triggered use only). */
  epoll(): number;
  /** Watches `fd` for input; events for it carry `fd` back. */
  watch(epoll: number, fd: number): void;
  /** Stops watching `fd` (before closing it: a copy held elsewhere would keep it in the set). */
  unwatch(epoll: number, fd: number): void;
  /**
   * Waits up to `timeoutMs` for input; fills `events` (EPOLL_EVENT_BYTES each) and returns how
   * many, 0 on timeout or interruption. `readyFd(events, i)` names the i-th ready descriptor.
   */
  wait(epoll: number, events: Uint8Array, max: number, timeoutMs: number): number;
  close(fd: number): void;
  /** An eventfd another thread wakes this one with by writing 8 bytes to it (fs.writeSync). */
  eventfd(): number;
  /** Empties an eventfd after it woke poll. */
  drainEventfd(fd: number): void;
  /** The errno of the last call that failed. */
  errno(): number;
};

// struct epoll_event { uint32_t events; epoll_data_t data; }: packed on x86 (12 bytes, data at
// 4), naturally aligned elsewhere (16 bytes, data at 8).
const EPOLL_PACKED = process.arch === "x64" || process.arch === "ia32";
export const EPOLL_EVENT_BYTES = EPOLL_PACKED ? 12 : 16;
const EPOLL_DATA_AT = EPOLL_PACKED ? 4 : 8;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const LITTLE_ENDIAN = os.endianness() === "LE";
const EPOLLIN = 0x1;

/** The descriptor of the i-th event epoll_wait returned (its data field holds the fd). */
export function readyFd(events: Uint8Array, i: number): number {
  const at = i * EPOLL_EVENT_BYTES + EPOLL_DATA_AT;
  return LITTLE_ENDIAN
    ? events[at] | (events[at + 1] << 8) | (events[at + 2] << 16) | (events[at + 3] << 24)
    : (events[at] << 24) | (events[at + 1] << 16) | (events[at + 2] << 8) | events[at + 3];
}

export async function udpSyscalls(): Promise<UdpSyscalls> {
  const c = await libc();
  const { lib } = c;
  const recvfrom = lib.func("intptr_t recvfrom(int fd, uint8_t *buf, uintptr_t length, int flags, uint8_t *from, uint32_t *fromLength)");
  const sendto = lib.func("intptr_t sendto(int fd, const uint8_t *buf, uintptr_t length, int flags, const uint8_t *to, uint32_t toLength)");
  const epollCreate = lib.func("int epoll_create1(int flags)");
  const epollCtl = lib.func("int epoll_ctl(int epfd, int op, int fd, uint8_t *event)");
  const epollWait = lib.func("int epoll_wait(int epfd, uint8_t *events, int max, int timeout)");
  const event = new Uint8Array(EPOLL_EVENT_BYTES);
  const le = LITTLE_ENDIAN;
  const eventfd = lib.func("int eventfd(unsigned int initval, int flags)");
  const read = lib.func("intptr_t read(int fd, uint8_t *buf, uintptr_t length)");
  const fromLength = new Uint32Array(1);
  const counter = new Uint8Array(8);
  const fail = (syscall: string, what: string): never => {
    throw sysError(syscall, c.errno(), `Cannot ${what}`);
  };
  return {
    open(ifname, address) {
      const ip = parseIPv4(address);
      if (!ip) throw new RangeError(`Cannot open a UDP socket on address ${JSON.stringify(address)}: not an IPv4 address`);
      return deviceSocket(c, ifname, 0, ip, false, false, SOCK_DGRAM | SOCK_NONBLOCK);
    },
    receive(fd, buf, from) {
      fromLength[0] = from.length;
      const n = Number(recvfrom(fd, buf, buf.length, 0, from, fromLength));
      if (n >= 0) return n;
      const e = c.errno();
      return e === EAGAIN || e === EINTR ? -1 : fail("recvfrom", "receive a datagram");
    },
    send(fd, buf, length, to) {
      const n = Number(sendto(fd, buf, length, 0, to, to.length));
      if (n >= 0) return n;
      const e = c.errno();
      return e === EAGAIN || e === EINTR ? -1 : fail("sendto", "send a datagram");
    },
    segment(fd, size) {
      const v = intValue(size);
      return c.setsockopt(fd, SOL_UDP, UDP_SEGMENT, v, v.length) === 0;
    },
    epoll() {
      const fd = epollCreate(SOCK_CLOEXEC) as number; // EPOLL_CLOEXEC has this value
      return fd >= 0 ? fd : fail("epoll_create1", "make an epoll instance");
    },
    watch(epoll, fd) {
      const v = new DataView(event.buffer);
      v.setUint32(0, EPOLLIN, le);
      v.setUint32(EPOLL_DATA_AT, fd, le);
      v.setUint32(EPOLL_DATA_AT + 4, 0, le);
      if ((epollCtl(epoll, EPOLL_CTL_ADD, fd, event) as number) !== 0) fail("epoll_ctl", `watch descriptor ${fd}`);
    },
    unwatch(epoll, fd) {
      epollCtl(epoll, EPOLL_CTL_DEL, fd, event); // fails only if it was not watched: nothing to undo
    },
    wait(epoll, events, max, timeoutMs) {
      const n = epollWait(epoll, events, max, timeoutMs) as number;
      if (n >= 0) return n;
      return c.errno() === EINTR ? 0 : fail("epoll_wait", "wait for datagrams");
    },
    close(fd) {
      c.close(fd);
    },
    eventfd() {
      const fd = eventfd(0, SOCK_NONBLOCK | SOCK_CLOEXEC) as number; // EFD_NONBLOCK and EFD_CLOEXEC have these values
      return fd >= 0 ? fd : fail("eventfd", "make an eventfd");
    },
    drainEventfd(fd) {
      read(fd, counter, 8);
    },
    errno: () => c.errno(),
  };
}

/** A sockaddr_in for `address:port`. */
export function sockaddr(address: string, port: number): Buffer {
  const ip = parseIPv4(address);
  if (!ip) throw new RangeError(`Not an IPv4 address: ${JSON.stringify(address)}`);
  return sockaddrIn(ip, port);
}

/**
 * A listening TCP/IPv4 socket on `address:port` that accepts only connections arriving on
 * `ifname`, as a file descriptor for `net.Server.listen({ fd })`.
 */
export async function boundTcpListenerFd(ifname: string, address: string, port: number): Promise<number> {
  const ip = parseIPv4(address);
  if (!ip) throw new RangeError(`Cannot listen on address ${JSON.stringify(address)}: not an IPv4 address`);
  const c = await libc();
  const fd = deviceSocket(c, ifname, port, ip, false, true, SOCK_STREAM);
  if (c.listen(fd, 511) !== 0) {
    const err = sysError("listen", c.errno(), `Cannot listen on ${address}:${port} on interface ${ifname}`);
    c.close(fd);
    throw err;
  }
  return fd;
}

/** A socket bound to `ip:port` and, unless `ifname` is null, to that device. */
function deviceSocket(c: Libc, ifname: string | null, port: number, ip: Uint8Array, broadcast: boolean, reuseAddr: boolean, type = SOCK_DGRAM): number {
  const name = Buffer.from(ifname ?? "", "utf8");
  if (ifname !== null && (name.length === 0 || name.length >= IFNAMSIZ || name.includes(0) || ifname.includes("/"))) {
    throw new RangeError(`Cannot bind a socket to interface ${JSON.stringify(ifname)}: not an interface name`);
  }
  const where = ifname === null ? "any interface" : `interface ${ifname}`;
  const fd = c.socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sysError("socket", c.errno(), `Cannot open a socket for ${where}`);
  try {
    const one = intValue(1);
    if (reuseAddr) check(c, c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, one.length), "setsockopt", `set SO_REUSEADDR for ${where}`);
    if (broadcast) check(c, c.setsockopt(fd, SOL_SOCKET, SO_BROADCAST, one, one.length), "setsockopt", `set SO_BROADCAST for ${where}`);
    if (ifname !== null) {
      const device = Buffer.concat([name, Buffer.of(0)]);
      check(c, c.setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, device.length), "setsockopt", `bind the socket to interface ${ifname}`);
    }
    const addr = sockaddrIn(ip, port);
    check(c, c.bind(fd, addr, addr.length), "bind", `bind ${[...ip].join(".")}:${port} on ${where}`);
    return fd;
  } catch (err) {
    c.close(fd);
    throw err;
  }
}

function check(c: Libc, rc: number, syscall: string, what: string): void {
  if (rc !== 0) throw sysError(syscall, c.errno(), `Cannot ${what}`);
}

/** An Error shaped like Node's system errors (code, errno, syscall), so callers can test `code`. */
function sysError(syscall: string, errno: number, message: string): NodeJS.ErrnoException {
  const code = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ?? `E${errno}`;
  const err: NodeJS.ErrnoException = new Error(`${message}: ${getSystemErrorMessage(-errno)} (${code})`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  return err;
}

/** A C int in host byte order. */
function intValue(v: number): Buffer {
  const b = Buffer.alloc(4);
  if (os.endianness() === "LE") b.writeInt32LE(v);
  else b.writeInt32BE(v);
  return b;
}

/** struct sockaddr_in: family in host order, then port and address in network order. */
function sockaddrIn(ip: Uint8Array, port: number): Buffer {
  const b = Buffer.alloc(16);
  if (os.endianness() === "LE") b.writeUInt16LE(AF_INET, 0);
  else b.writeUInt16BE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.set(ip, 4);
  return b;
}

function parseIPv4(text: string): Uint8Array | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  const bytes = m.slice(1).map(Number);
  return bytes.every((n) => n <= 255) ? Uint8Array.from(bytes) : undefined;
}
