/**
 * Hardware inventory, read from sysfs and procfs the way the kernel reports it: SMBIOS
 * identity, firmware kind, NICs, disks, memory and CPUs. Sent with enrollment so the site
 * can match the machine and administrators can target collections by model.
 */
import { isUnsetSmbiosUuid } from "../domain/device.ts";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import os from "node:os";

export type Inventory = {
  macs: string[];
  smbiosUuid: string | null;
  serial: string | null;
  vendor?: string;
  model?: string;
  firmware: "bios" | "uefi";
  memoryMiB?: number;
  cpus: number;
  disks: { name: string; sizeBytes: number }[];
};

function read(file: string): string | null {
  try {
    const v = readFileSync(file, "utf8").trim();
    return v === "" ? null : v;
  } catch {
    return null;
  }
}

/** Names SMBIOS uses when a field was never filled in. */
const PLACEHOLDER = /^(?:|none|not specified|to be filled by o\.e\.m\.|default string|system serial number|0+)$/i;
const clean = (v: string | null) => (v === null || PLACEHOLDER.test(v) ? null : v.slice(0, 200));

/** Disks the agent may write to: whole block devices, not loop, RAM, optical or device-mapper. */
export function listDisks(sys = "/sys"): { name: string; sizeBytes: number }[] {
  const out: { name: string; sizeBytes: number }[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(`${sys}/block`);
  } catch {
    return out;
  }
  for (const name of names.sort()) {
    if (/^(loop|ram|sr|zram|dm-|md|fd|nbd)/.test(name)) continue;
    if (read(`${sys}/block/${name}/removable`) === "1" && !/^(sd|vd|nvme)/.test(name)) continue;
    const sectors = Number(read(`${sys}/block/${name}/size`) ?? "0");
    if (sectors > 0) out.push({ name, sizeBytes: sectors * 512 });
  }
  return out;
}

export function collectInventory(sys = "/sys", proc = "/proc"): Inventory {
  const macs: string[] = [];
  try {
    for (const nic of readdirSync(`${sys}/class/net`).sort()) {
      if (nic === "lo") continue;
      const mac = read(`${sys}/class/net/${nic}/address`);
      if (mac && mac !== "00:00:00:00:00:00" && !macs.includes(mac)) macs.push(mac.toLowerCase());
    }
  } catch {
    // no sysfs: no NICs to report
  }
  const mem = /MemTotal:\s+(\d+) kB/.exec(read(`${proc}/meminfo`) ?? "");
  const dmi = (f: string) => clean(read(`${sys}/class/dmi/id/${f}`));
  const uuid = dmi("product_uuid");
  return {
    macs,
    // SMBIOS's "not set" (all zeros) and "not present" (all ones) identify no machine: absent, as the site counts them.
    smbiosUuid: uuid && /^[0-9a-f-]{36}$/i.test(uuid) && !isUnsetSmbiosUuid(uuid.toLowerCase()) ? uuid.toLowerCase() : null,
    serial: dmi("product_serial"),
    vendor: dmi("sys_vendor") ?? undefined,
    model: dmi("product_name") ?? undefined,
    firmware: existsSync(`${sys}/firmware/efi`) ? "uefi" : "bios",
    memoryMiB: mem ? Math.floor(Number(mem[1]) / 1024) : undefined,
    cpus: os.cpus().length,
    disks: listDisks(sys),
  };
}
