/**
 * The distribution point's boot side, composed: on each chosen link the PXE responder
 * (DHCP/ProxyDHCP), a TFTP server holding only the iPXE loaders, and the boot script server.
 * Nothing listens on any other link.
 */
import path from "node:path";
import fs from "node:fs";
import type { Site } from "../site/site.ts";
import { openBoundUdpSocket, interfaceIPv4 } from "../../net/bound-udp.ts";
import { startPxeResponder, type PxeLink, type PxeResponder } from "./pxe-responder.ts";
import { startBootHttp, type BootHttp } from "./boot-http.ts";
import { createTftpServer, fileFromPath, type TftpServer } from "./tftp-server.ts";
import { LOADERS, type UnknownPolicy } from "../../domain/pxe.ts";
import type { IpRange } from "../../domain/ip-pool.ts";

export type NetworkBootOptions = {
  site: Site;
  interfaces: string[];
  mode: "proxy" | "dhcp";
  unknown: UnknownPolicy;
  ranges?: IpRange[];
  /** Relay agents whose relayed DHCP requests are answered (`--dhcp-relay`). */
  relays?: string[];
  httpPort: number;
  /** The management point's port; machines reach it at their link's server address. */
  managementPointPort: number;
  loaderDir?: string;
  tftpPort?: number;
};

export type NetworkBoot = { links: PxeLink[]; pxe: PxeResponder; tftp: TftpServer; http: BootHttp; close(): Promise<void> };

export function linksFor(interfaces: string[]): PxeLink[] {
  return interfaces.map((name) => {
    const v4 = interfaceIPv4(name);
    if (!v4) throw new Error(`Cannot serve PXE on ${name}: it does not exist or has no IPv4 address`);
    return { name, address: v4.address, netmask: v4.netmask };
  });
}

export async function startNetworkBoot(opts: NetworkBootOptions): Promise<NetworkBoot> {
  const { site } = opts;
  const links = linksFor(opts.interfaces);
  const loaderDir = opts.loaderDir ?? "/usr/lib/ipxe";
  const loaders = new Map<string, string>();
  for (const name of Object.values(LOADERS)) {
    const p = path.join(loaderDir, name);
    if (fs.existsSync(p)) loaders.set(name, p);
  }
  if (loaders.size === 0) site.log.warn("no iPXE loaders found; install Debian's ipxe package", { loaderDir });
  const tftpFiles = new Map([...loaders].map(([name, p]) => [name, fileFromPath(p)]));
  const tftp = await createTftpServer({ files: (name: string) => tftpFiles.get(name), interfaces: opts.interfaces, port: opts.tftpPort ?? 69, log: site.log });
  const http = await startBootHttp({
    site, links, port: opts.httpPort, unknown: opts.unknown, loaderDir,
    managementPointUrl: (link) => `https://${link.address}:${opts.managementPointPort}`,
  });
  const pxe = await startPxeResponder({
    site, links, mode: opts.mode, unknown: opts.unknown, ranges: opts.ranges, relays: opts.relays,
    bootBaseUrl: (link) => http.baseUrl(link), openSocket: openBoundUdpSocket,
  });
  return {
    links, pxe, tftp, http,
    async close() {
      await pxe.close();
      await tftp.close();
      await http.close();
    },
  };
}
