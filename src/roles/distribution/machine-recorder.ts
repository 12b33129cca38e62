/**
 * Recording the unknown machines the PXE responder sees, under the unknown-computer policy
 * `approve` (recorded pending, an administrator decides) or `allow` (recorded approved).
 * Limits keep a flood of made-up MACs from filling the device list: so many a minute, so many
 * pending in all, so many approved automatically in all. Each recording is audited in the
 * transaction that makes it.
 */
import type { Db } from "../../storage/db.ts";
import type { AuditStore } from "../../storage/audit-store.ts";
import { stores } from "../../storage/stores.ts";
import type { BootIdentity } from "./boot-identity-cache.ts";

export type MachineRecorderOptions = {
  db: Db;
  audit: Pick<AuditStore, "append">;
  now(): Date;
  /** At most this many unknown machines recorded per minute, and pending in all. */
  perMinute?: number;
  maxPending?: number;
  /** `--unknown allow`: at most this many machines recorded as approved automatically, in all. */
  maxRecordedApproved?: number;
};

/** A machine as first seen: its MAC, SMBIOS UUID (when it sent a usable one), firmware and the link it asked on. */
export type SeenMachine = { mac: string; uuid: string | undefined; firmware: string; link: string };

export class MachineRecorder {
  readonly #o: MachineRecorderOptions;
  #window = { start: 0, count: 0 };

  constructor(o: MachineRecorderOptions) {
    this.#o = o;
  }

  /**
   * Records `m` as a device in `state`, named pxe-<mac>, or says which limit refused it. A
   * machine recorded meanwhile under its MAC is returned as it is. Its SMBIOS UUID is kept
   * only when no other device has it (a UUID is no proof of anything).
   */
  async record(m: SeenMachine, state: "pending" | "approved"): Promise<BootIdentity | { refused: string }> {
    const now = this.#o.now();
    const perMinute = this.#o.perMinute ?? 30;
    if (now.getTime() - this.#window.start > 60_000) this.#window = { start: now.getTime(), count: 0 };
    if (this.#window.count >= perMinute) return { refused: `more than ${perMinute} unknown machines this minute; not recording more for now` };
    const devices = stores(this.#o.db).devices;
    if (state === "pending") {
      const max = this.#o.maxPending ?? 1000;
      if ((await devices.countInState("pending")) >= max) return { refused: `${max} machines already wait for approval; not recording more` };
    } else {
      // Marked at creation (attributes.recorded), so the cap counts only what this policy let in.
      const max = this.#o.maxRecordedApproved ?? 100;
      if ((await devices.countRecordedBy("allow")) >= max) return { refused: `${max} machines were already approved automatically (--unknown allow); not recording more until an administrator deletes some` };
    }
    this.#window.count++;
    const nowIso = now.toISOString();
    return this.#o.db.transaction(async (tx) => {
      const t = stores(tx);
      const known = await t.devices.byMac(m.mac);
      if (known) return known;
      const d = await t.devices.create({
        name: `pxe-${m.mac.replace(/:/g, "")}`, macs: [m.mac], smbiosUuid: m.uuid && !(await t.devices.bySmbiosUuid(m.uuid)) ? m.uuid : null,
        serial: null, state, attributes: { firmware: m.firmware, firstSeenLink: m.link, ...(state === "approved" ? { recorded: "allow" } : {}) },
      }, nowIso);
      await this.#o.audit.append({ actor: "pxe", action: "device.recorded", object: `device:${d.id}`,
        details: { mac: m.mac, smbiosUuid: d.smbiosUuid, firmware: m.firmware, link: m.link, state } }, tx);
      return d;
    });
  }
}
