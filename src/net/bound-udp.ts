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
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_BROADCAST = 6;
const SO_BINDTODEVICE = 25;
const IFNAMSIZ = 16; // <net/if.h>: names are at most 15 bytes plus NUL

type Libc = {
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

function deviceSocket(c: Libc, ifname: string, port: number, ip: Uint8Array, broadcast: boolean, reuseAddr: boolean, type = SOCK_DGRAM): number {
  const name = Buffer.from(ifname, "utf8");
  if (name.length === 0 || name.length >= IFNAMSIZ || name.includes(0) || ifname.includes("/")) {
    throw new RangeError(`Cannot bind a socket to interface ${JSON.stringify(ifname)}: not an interface name`);
  }
  const fd = c.socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sysError("socket", c.errno(), `Cannot open a socket for interface ${ifname}`);
  try {
    const one = intValue(1);
    if (reuseAddr) check(c, c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, one.length), "setsockopt", `set SO_REUSEADDR for ${ifname}`);
    if (broadcast) check(c, c.setsockopt(fd, SOL_SOCKET, SO_BROADCAST, one, one.length), "setsockopt", `set SO_BROADCAST for ${ifname}`);
    const device = Buffer.concat([name, Buffer.of(0)]);
    check(c, c.setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, device.length), "setsockopt", `bind the socket to interface ${ifname}`);
    const addr = sockaddrIn(ip, port);
    check(c, c.bind(fd, addr, addr.length), "bind", `bind ${[...ip].join(".")}:${port} on interface ${ifname}`);
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
