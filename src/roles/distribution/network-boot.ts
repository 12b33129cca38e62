/**
 * The distribution point's boot side, composed: on each chosen link the PXE responder
 * (DHCP/ProxyDHCP), a TFTP server holding only the iPXE loaders, and the boot script server.
 * Nothing listens on any other link.
 */
import path from "node:path";
import fs from "node:fs";
import type { Site } from "../../site/site.ts";
import { openBoundUdpSocket } from "../../net/bound-udp.ts";
import { interfaceNames, linkState } from "../../net/link-state.ts";
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
    const state = linkState(name);
    if (!state.exists) throw new Error(`Cannot serve PXE on ${name}: there is no such network interface`);
    if (!state.ipv4) throw new Error(`Cannot serve PXE on ${name}: it has no IPv4 address`);
    return { name, address: state.ipv4.address, netmask: state.ipv4.netmask };
  });
}

/** A PXE link asked for that does not exist: `up` stops, unless PXE is optional. */
export class NoSuchLinkError extends Error {}

/**
 * The PXE links, once each has an IPv4 address: a link that exists but has no address yet is
 * waited for (said once, with the reason); one without carrier (a bridge with no port up, a
 * cable out) is served at once — machines there are answered as soon as it comes up — and said
 * once too. A link that does not exist is an error (NoSuchLinkError), or with `optional` a
 * warning and no PXE on it.
 */
export async function waitForLinks(interfaces: string[], opts: { optional?: boolean; say: (line: string) => void; pollMs?: number }): Promise<PxeLink[]> {
  const links: PxeLink[] = [];
  for (const name of interfaces) {
    let state = linkState(name);
    if (!state.exists) {
      const known = interfaceNames().filter((n) => n !== "lo");
      // The name as typed, unless it holds what a terminal would act on (escapes, controls): then quoted and escaped.
      const shown = /^[\x21-\x7e]+$/.test(name) ? name : JSON.stringify(name);
      const why = `Cannot serve PXE on ${shown}: there is no such network interface (this host has: ${known.join(", ") || "none"})`;
      if (!opts.optional) throw new NoSuchLinkError(why);
      opts.say(`${why}; not serving PXE there (--pxe-optional)`);
      continue;
    }
    if (!state.ipv4) {
      opts.say(`Waiting for ${name}: it has no IPv4 address yet (give it the address machines there reach this server at)`);
      while (!state.ipv4) {
        await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
        state = linkState(name);
        if (!state.exists) throw new NoSuchLinkError(`Cannot serve PXE on ${name}: the network interface went away`);
      }
    }
    if (state.carrier === false || state.operstate === "down") {
      opts.say(`${name} has no carrier yet (${state.operstate}: no cable, or no bridge port up); serving it anyway: machines there are answered once it comes up`);
    }
    links.push({ name, address: state.ipv4.address, netmask: state.ipv4.netmask });
  }
  return links;
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
