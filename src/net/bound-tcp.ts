/**
 * TCP listeners bound to one network interface (SO_BINDTODEVICE), for the boot script
 * server: a connection that reaches the server's address through another link is refused
 * by the kernel, not filtered by guesswork. Made with libc through FFI (koffi) and handed to
 * Node as a listening file descriptor (`server.listen({ fd })`).
 */
import type net from "node:net";
import os from "node:os";
import { getSystemErrorMessage } from "node:util";

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_BINDTODEVICE = 25;

type Libc = {
  socket(d: number, t: number, p: number): number;
  setsockopt(fd: number, level: number, name: number, value: Uint8Array, length: number): number;
  bind(fd: number, addr: Uint8Array, length: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  errno(): number;
};
let loaded: Libc | undefined;

async function libc(): Promise<Libc> {
  if (loaded) return loaded;
  if (process.platform !== "linux") throw new Error(`Cannot bind a listener to a network interface on ${process.platform}: only Linux has SO_BINDTODEVICE`);
  const { default: koffi } = await import("koffi");
  const lib = koffi.load("libc.so.6");
  const f = {
    socket: lib.func("int socket(int domain, int type, int protocol)"),
    setsockopt: lib.func("int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t length)"),
    bind: lib.func("int bind(int fd, const uint8_t *addr, uint32_t length)"),
    listen: lib.func("int listen(int fd, int backlog)"),
    close: lib.func("int close(int fd)"),
  };
  loaded = {
    socket: (d, t, p) => f.socket(d, t, p) as number,
    setsockopt: (fd, l, n, v, len) => f.setsockopt(fd, l, n, v, len) as number,
    bind: (fd, a, len) => f.bind(fd, a, len) as number,
    listen: (fd, b) => f.listen(fd, b) as number,
    close: (fd) => f.close(fd) as number,
    errno: () => koffi.errno(),
  };
  return loaded;
}

function fail(c: Libc, what: string): never {
  const errno = c.errno();
  const code = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ?? `E${errno}`;
  const err: NodeJS.ErrnoException = new Error(`Cannot ${what}: ${getSystemErrorMessage(-errno)} (${code})`);
  err.code = code;
  throw err;
}

/** A listening TCP/IPv4 socket on `address:port` that accepts only connections arriving on `ifname`. */
export async function boundTcpListenerFd(ifname: string, address: string, port: number): Promise<number> {
  const name = Buffer.from(ifname, "utf8");
  if (name.length === 0 || name.length >= 16 || name.includes(0) || ifname.includes("/")) throw new RangeError(`Not an interface name: ${JSON.stringify(ifname)}`);
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (!m || m.slice(1).some((x) => Number(x) > 255)) throw new RangeError(`Not an IPv4 address: ${address}`);
  const c = await libc();
  const fd = c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(c, `open a TCP socket for ${ifname}`);
  try {
    const one = Buffer.alloc(4);
    if (os.endianness() === "LE") one.writeInt32LE(1);
    else one.writeInt32BE(1);
    if (c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4) !== 0) fail(c, "set SO_REUSEADDR");
    const dev = Buffer.concat([name, Buffer.of(0)]);
    if (c.setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, dev.length) !== 0) fail(c, `bind the listener to ${ifname}`);
    const sa = Buffer.alloc(16);
    if (os.endianness() === "LE") sa.writeUInt16LE(AF_INET, 0);
    else sa.writeUInt16BE(AF_INET, 0);
    sa.writeUInt16BE(port, 2);
    sa.set(m.slice(1).map(Number), 4);
    if (c.bind(fd, sa, sa.length) !== 0) fail(c, `bind ${address}:${port} on ${ifname}`);
    if (c.listen(fd, 511) !== 0) fail(c, `listen on ${address}:${port}`);
    return fd;
  } catch (err) {
    c.close(fd);
    throw err;
  }
}

/** Starts `server` listening on a device-bound socket. */
export async function listenOnDevice(server: net.Server, ifname: string, address: string, port: number): Promise<void> {
  const fd = await boundTcpListenerFd(ifname, address, port);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ fd }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
