/**
 * The PXE responder's sockets: ProxyDHCP beside the site's DHCP server (ports 67 and 4011),
 * or full DHCP for an isolated lab (port 67). It listens only on the chosen links — each
 * socket bound to its device — and sends what pxe-answerer.ts decides for each datagram.
 *
 * What it answers and why lives in the pieces, each testable without root or sockets:
 * pxe-answerer.ts (one datagram, end to end), machine-recorder.ts (unknown machines),
 * lab-leases.ts (lab DHCP addresses, RFC 2131 §4.3 against a client that lies),
 * domain/audit-throttle.ts, domain/boot-file.ts, domain/ip-pool.ts, protocol/dhcp-server.ts
 * (relays, RELEASE and DECLINE, where replies go) and protocol/pxe-reply.ts.
 */
import type dgram from "node:dgram";
import { createPxeAnswerer, type PxeAnswererOptions, type PxeLink, type PxeStats } from "./pxe-answerer.ts";

export type { PxeLink, PxeStats };
export type OpenUdp = (opts: { interface: string | null; port: number; address?: string; broadcast?: boolean; reuseAddr?: boolean }) => Promise<dgram.Socket>;

export type PxeResponderOptions = PxeAnswererOptions & { openSocket: OpenUdp };
export type PxeResponder = { stats: PxeStats; close(): Promise<void> };

export async function startPxeResponder(opts: PxeResponderOptions): Promise<PxeResponder> {
  const { site } = opts;
  const answerer = createPxeAnswerer(opts);
  const sockets: dgram.Socket[] = [];
  for (const link of opts.links) {
    for (const port of opts.mode === "proxy" ? [67, 4011] : [67]) {
      const socket = await opts.openSocket({ interface: link.name, port, broadcast: true, reuseAddr: true });
      socket.on("message", (msg, rinfo) => {
        answerer.answer(link, msg, rinfo, port === 4011)
          .then((out) => out && socket.send(out.bytes, out.to.port, out.to.address))
          .catch((err) => site.log.error("pxe request failed", { err, link: link.name }));
      });
      socket.on("error", (err) => site.log.error("pxe socket error", { err, link: link.name, port }));
      sockets.push(socket);
    }
    site.log.info("pxe responder listening", { link: link.name, address: link.address, mode: opts.mode, unknown: opts.unknown });
  }

  return {
    stats: answerer.stats,
    async close() {
      await Promise.all(sockets.map((x) => new Promise<void>((resolve) => x.close(() => resolve()))));
      await site.audit.flush();
    },
  };
}
