/**
 * TCP listeners bound to one network interface (SO_BINDTODEVICE), for the boot script
 * server: a connection that reaches the server's address through another link is refused by
 * the kernel, not filtered by guesswork. The socket is made like the UDP ones (bound-udp.ts)
 * and handed to Node as a listening file descriptor.
 */
import type net from "node:net";
import { boundTcpListenerFd } from "./bound-udp.ts";

/** Starts `server` listening on `address:port`, accepting only connections that arrive on `ifname`. */
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
