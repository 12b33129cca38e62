/** Devices: identifiers, normalization, and the attributes collection rules see. */

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
