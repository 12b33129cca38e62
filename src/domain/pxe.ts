/**
 * Network boot decisions, pure: whom to answer, with which loader, and what the boot
 * script says. The responder and the boot script server do the I/O around these.
 */
import type { Device } from "./device.ts";

export type UnknownPolicy = "deny" | "approve" | "allow";
export const unknownPolicies: readonly UnknownPolicy[] = ["deny", "approve", "allow"];

/**
 * What to do for a machine asking to boot:
 * - `boot`: known and approved, boot it;
 * - `wait`: pending approval, hand it the script that polls until an administrator decides;
 * - `record-pending` / `record-approved`: unknown, record it (approve / allow policy) then wait / boot;
 * - `ignore`: say nothing (denied unknown machine, blocked device).
 */
export type BootDecision = "boot" | "wait" | "record-pending" | "record-approved" | "ignore";

export function decideBoot(device: Pick<Device, "state"> | undefined, unknown: UnknownPolicy): BootDecision {
  if (device) {
    if (device.state === "approved") return "boot";
    if (device.state === "pending") return unknown === "deny" ? "ignore" : "wait";
    return "ignore";
  }
  if (unknown === "approve") return "record-pending";
  if (unknown === "allow") return "record-approved";
  return "ignore";
}

/** The loaders a Debian `ipxe` package provides, by what the firmware is. */
export const LOADERS = { bios: "undionly.kpxe", uefi: "ipxe.efi", uefiSnp: "snponly.efi" } as const;

export type FirmwareKind = "bios" | "uefi" | "uefi-http" | "unsupported";

/** RFC 4578 option 93: 0 is BIOS; 7 and 9 are x64 UEFI (see ClientArch); 16 is x64 UEFI HTTP boot. */
export function firmwareOf(arch: number[] | undefined, httpClient: boolean): FirmwareKind {
  const a = arch?.[0] ?? 0;
  if (httpClient || a === 16) return a === 16 || a === 7 || a === 9 ? "uefi-http" : "unsupported";
  if (a === 0) return "bios";
  if (a === 7 || a === 9) return "uefi";
  return "unsupported";
}

/** A MAC in the form iPXE prints `${net0/mac}` (aa:bb:…), and the file-name-safe hex used in URLs. */
export function macHex(mac: string): string {
  return mac.replace(/:/g, "");
}

export type BootImageRef = { kernelUrl: string; initrdUrl: string; cmdline: string };

/** iPXE script that boots the deploy environment with a one-time token on the command line. */
export function bootScript(opts: { image: BootImageRef; token: string; mac: string; managementPoint: string; deviceName: string }): string {
  // Only public material goes in here: stock iPXE fetches it over plain HTTP (DESIGN.md).
  const args = [`slipway.token=${opts.token}`, `slipway.mac=${opts.mac}`, `slipway.mp=${opts.managementPoint}`, opts.image.cmdline].filter(Boolean).join(" ");
  return [
    "#!ipxe",
    `echo Slipway: booting ${safeEcho(opts.deviceName)}`,
    `kernel ${opts.image.kernelUrl} initrd=initrd ${args}`,
    `initrd --name initrd ${opts.image.initrdUrl}`,
    "boot",
    "",
  ].join("\n");
}

/**
 * Script for a machine with nothing to deploy: iPXE exits, and the firmware goes on to its
 * next boot device (the local disk). The exit status must be an error: UEFI's boot manager
 * (EDK2, OVMF) treats a boot option that returns success as "booted" and opens its setup
 * menu instead of trying the next option; BIOS firmware moves on either way.
 */
export function localBootScript(deviceName: string): string {
  return ["#!ipxe", `echo Slipway: nothing to deploy to ${safeEcho(deviceName)}; booting from the local disk`, "exit 1", ""].join("\n");
}

/** Script for a machine waiting for an administrator: polls, then boots as soon as it is approved. */
export function waitScript(opts: { pollUrl: string; mac: string; seconds?: number }): string {
  return [
    "#!ipxe",
    `echo Slipway: this machine (${opts.mac}) is waiting for an administrator's approval.`,
    `sleep ${opts.seconds ?? 10}`,
    `chain --replace ${opts.pollUrl}`,
    "",
  ].join("\n");
}

/** The first script every iPXE gets: it asks for its own, naming itself by iPXE's settings. */
export function startScript(baseUrl: string): string {
  return [
    "#!ipxe",
    `chain --replace ${baseUrl}/ipxe/machine?mac=\${net0/mac}&uuid=\${uuid}&arch=\${buildarch}&platform=\${platform}`,
    "",
  ].join("\n");
}

function safeEcho(text: string): string {
  return text.replace(/[^A-Za-z0-9 ._-]/g, "?");
}
