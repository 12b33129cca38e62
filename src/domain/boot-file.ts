/**
 * What a PXE answer tells a machine to boot, by what asked: iPXE gets the URL of its boot
 * script, UEFI HTTP boot the URL of the iPXE loader, firmware PXE the loader's name to fetch
 * by TFTP. Pure; the DHCP reply that carries it is built in protocol/pxe-reply.ts.
 */
import { LOADERS, type FirmwareKind } from "./pxe.ts";

export type BootFile = {
  /** The URL or TFTP file name. */
  path: string;
  /** `ipxe-script`: iPXE, which must not wait for ProxyDHCP; `http`: UEFI HTTP boot; `tftp`: firmware PXE. */
  via: "ipxe-script" | "http" | "tftp";
};

/**
 * The boot file for a machine of `firmware` (iPXE already running when `ipxe`), served from
 * `bootBaseUrl` (e.g. http://10.0.0.1:8080); undefined for an architecture we have no loader for.
 * `uefiLoader` replaces ipxe.efi for UEFI x64 (snponly.efi, say).
 */
export function bootFileFor(firmware: FirmwareKind, ipxe: boolean, bootBaseUrl: string, uefiLoader?: string): BootFile | undefined {
  if (firmware === "unsupported") return undefined;
  if (ipxe) return { path: `${bootBaseUrl}/ipxe/start`, via: "ipxe-script" };
  if (firmware === "uefi-http") return { path: `${bootBaseUrl}/ipxe/loaders/${uefiLoader ?? LOADERS.uefi}`, via: "http" };
  return { path: firmware === "bios" ? LOADERS.bios : (uefiLoader ?? LOADERS.uefi), via: "tftp" };
}
