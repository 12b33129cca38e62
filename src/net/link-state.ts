/**
 * What a network interface looks like now, as `up --pxe-interface` must know it: whether it
 * exists, its IPv4 address, and whether it has carrier. Read from the kernel, not from
 * os.networkInterfaces(): libuv lists only interfaces that are up *and* running, so a bridge
 * with its address but no port up yet (no carrier) would look as if it had no address at all.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export type LinkState = {
  exists: boolean;
  ipv4?: { address: string; netmask: string; cidr: string };
  /** True with carrier, false without, null when the kernel cannot say (the interface is down). */
  carrier: boolean | null;
  /** The kernel's operstate: up, down, dormant, unknown (loopback, some virtual links)… */
  operstate: string;
};

const SYS = "/sys/class/net";

function netmaskOf(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join(".");
}

function read(file: string): string | null {
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    return null;
  }
}

/** The first IPv4 address of `name` from iproute2 (any state); os.networkInterfaces() if `ip` is missing. */
function ipv4Of(name: string): LinkState["ipv4"] {
  try {
    const out = JSON.parse(execFileSync("ip", ["-j", "-4", "addr", "show", "dev", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })) as
      { addr_info?: { family: string; local: string; prefixlen: number }[] }[];
    const a = out[0]?.addr_info?.find((x) => x.family === "inet");
    if (a) return { address: a.local, netmask: netmaskOf(a.prefixlen), cidr: `${a.local}/${a.prefixlen}` };
    return undefined;
  } catch {
    const entry = os.networkInterfaces()[name]?.find((a) => a.family === "IPv4");
    return entry && entry.cidr ? { address: entry.address, netmask: entry.netmask, cidr: entry.cidr } : undefined;
  }
}

/** The interface names `name` is checked against (network interface names only: no paths). */
const NAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

export function linkState(name: string): LinkState {
  if (!NAME.test(name) || name === "." || name === ".." || !existsSync(path.join(SYS, name))) return { exists: false, carrier: null, operstate: "absent" };
  const carrier = read(path.join(SYS, name, "carrier"));
  return {
    exists: true,
    ipv4: ipv4Of(name),
    carrier: carrier === "1" ? true : carrier === "0" ? false : null,
    operstate: read(path.join(SYS, name, "operstate")) ?? "unknown",
  };
}

/** The network interfaces of this host (for an error that names what could have been meant). */
export function interfaceNames(): string[] {
  try {
    return readdirSync(SYS).sort();
  } catch {
    return Object.keys(os.networkInterfaces()).sort();
  }
}
