/** Devices: identifiers, normalization, and the attributes collection rules see. */
import { z } from "zod";

export type DeviceState = "pending" | "approved" | "blocked";
export const deviceStates: readonly DeviceState[] = ["pending", "approved", "blocked"];

export type Device = {
  id: string;
  name: string;
  macs: string[];
  smbiosUuid: string | null;
  serial: string | null;
  state: DeviceState;
  attributes: Record<string, string | number | boolean>;
  lastSeenAt: string | null;
  createdAt: string;
  updatedAt: string;
};

const MAC = /^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$/i;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `AA-BB-CC-DD-EE-FF`, `aabb.ccdd.eeff`-less forms → `aa:bb:cc:dd:ee:ff`; null if not a MAC. */
export function normalizeMac(text: string): string | null {
  const m = MAC.exec(text.trim());
  return m ? m.slice(1, 7).join(":").toLowerCase() : null;
}

/**
 * A MAC that can name one network card, or null with why not: the all-zero and broadcast
 * addresses and group (multicast) addresses name no machine, so they identify nothing.
 */
export function deviceMacProblem(mac: string): string | null {
  if (mac === "00:00:00:00:00:00") return "the all-zero MAC names no network card";
  if (mac === "ff:ff:ff:ff:ff:ff") return "the broadcast MAC names no network card";
  if (parseInt(mac.slice(0, 2), 16) & 1) return "a group (multicast) MAC names no network card";
  return null;
}

/** SMBIOS's "not set" (all zeros) and "not present" (all ones) UUIDs identify no machine. */
export function isUnsetSmbiosUuid(uuid: string): boolean {
  return /^[0-]+$/.test(uuid) || /^[f-]+$/.test(uuid);
}

/** A MAC in a request: normalized, and one that can name a network card (one schema for every route). */
export const DeviceMac = z.string().max(32).transform((s, c) => {
  const mac = normalizeMac(s);
  const problem = mac ? deviceMacProblem(mac) : "not a MAC address";
  return problem ? (c.addIssue({ code: "custom", message: problem }), z.NEVER) : mac!;
});

export function normalizeUuid(text: string): string | null {
  const t = text.trim();
  return UUID.test(t) ? t.toLowerCase() : null;
}

/** What a collection rule or a condition can name about a device. */
export function deviceLookup(d: Device): (name: string) => string | number | boolean | undefined {
  return (name) => {
    switch (name) {
      case "name": return d.name;
      case "serial": return d.serial ?? undefined;
      case "smbiosUuid": return d.smbiosUuid ?? undefined;
      case "state": return d.state;
      case "mac": return d.macs[0];
      default:
        if (name.startsWith("attributes.")) {
          const k = name.slice("attributes.".length);
          return Object.hasOwn(d.attributes, k) ? d.attributes[k] : undefined;
        }
        return undefined;
    }
  };
}

/**
 * A device's pre-approval: an administrator's approval admits exactly one enrollment by a
 * machine that only claims the device's identifiers. `armed` until that enrollment (of any
 * kind) spends it; armed again only by an administrator approving the device while it holds
 * no live certificate.
 */
export type PreApproval = "armed" | "spent" | "none";

/** What a device's enrollment history says: whether pre-approval is armed, and how often it enrolled. */
export type DeviceEnrollment = { preApproved: boolean; enrollments: number; enrolledAt: string | null };

/** The pre-approval state an administrator sees. */
export function preApprovalOf(e: DeviceEnrollment): PreApproval {
  return e.preApproved ? "armed" : e.enrollments > 0 ? "spent" : "none";
}

/**
 * Whether a machine presenting `macs` and `smbiosUuid` carries every identifier the device
 * has on record: the UUID on record equals the presented one, and every MAC on record is
 * among the presented ones. A device with no identifier on record matches nothing.
 */
export function presentsEveryIdentifier(d: Pick<Device, "macs" | "smbiosUuid">, macs: readonly string[], smbiosUuid: string | null): boolean {
  if (d.macs.length === 0 && !d.smbiosUuid) return false;
  if (d.smbiosUuid && d.smbiosUuid !== smbiosUuid) return false;
  return d.macs.every((m) => macs.includes(m));
}
