/** The TPM endorsement key a device is bound to (columns of `devices`, migration 10). */
import type { Sql } from "./db.ts";
import { SiteSettingsStore } from "./site-settings-store.ts";

export type DeviceTpm = {
  /** The EK's SubjectPublicKeyInfo, DER, base64. */
  ek: string;
  fingerprint: string;
  /** How it came to be trusted: the assurance of the enrollment that recorded it, or "import". */
  source: string;
  recordedAt: string;
  recordedBy: string;
};

type R = { tpm_ek: string | null; tpm_ek_fingerprint: string | null; tpm_ek_source: string | null; tpm_ek_recorded_at: string | null; tpm_ek_recorded_by: string | null };

/** The site setting holding the TPM manufacturer roots (PEM bundle); none: EKs are recorded without a certificate check. */
const EK_ROOTS_SETTING = "tpm.ek-roots";

export class DeviceTpmStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }

  /** The TPM manufacturer roots (PEM), or null. Use the transaction's store inside one: SQLite has one writer. */
  async roots(): Promise<string | null> {
    return new SiteSettingsStore(this.#db).get(EK_ROOTS_SETTING);
  }

  async setRoots(pem: string | null): Promise<void> {
    const settings = new SiteSettingsStore(this.#db);
    if (pem === null) await settings.delete(EK_ROOTS_SETTING);
    else await settings.set(EK_ROOTS_SETTING, pem);
  }

  async of(deviceId: string): Promise<DeviceTpm | null> {
    const r = await this.#db.get<R>(`SELECT tpm_ek, tpm_ek_fingerprint, tpm_ek_source, tpm_ek_recorded_at, tpm_ek_recorded_by FROM devices WHERE id = ?`, [deviceId]);
    if (!r || !r.tpm_ek) return null;
    return { ek: r.tpm_ek, fingerprint: r.tpm_ek_fingerprint!, source: r.tpm_ek_source!, recordedAt: r.tpm_ek_recorded_at!, recordedBy: r.tpm_ek_recorded_by! };
  }

  /** The device holding this EK, if any: one TPM binds one device. */
  async deviceByFingerprint(fingerprint: string): Promise<string | null> {
    return (await this.#db.get<{ id: string }>(`SELECT id FROM devices WHERE tpm_ek_fingerprint = ?`, [fingerprint]))?.id ?? null;
  }

  /** Records the EK only while none is on record (an enrollment never replaces one); true if it did. */
  async recordIfNone(deviceId: string, t: DeviceTpm): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE devices SET tpm_ek = ?, tpm_ek_fingerprint = ?, tpm_ek_source = ?, tpm_ek_recorded_at = ?, tpm_ek_recorded_by = ? WHERE id = ? AND tpm_ek IS NULL`,
      [t.ek, t.fingerprint, t.source, t.recordedAt, t.recordedBy, deviceId])).changes === 1;
  }

  /** An administrator's import: replaces whatever is on record. */
  async set(deviceId: string, t: DeviceTpm): Promise<void> {
    await this.#db.run(
      `UPDATE devices SET tpm_ek = ?, tpm_ek_fingerprint = ?, tpm_ek_source = ?, tpm_ek_recorded_at = ?, tpm_ek_recorded_by = ? WHERE id = ?`,
      [t.ek, t.fingerprint, t.source, t.recordedAt, t.recordedBy, deviceId]);
  }

  async clear(deviceId: string): Promise<boolean> {
    return (await this.#db.run(
      `UPDATE devices SET tpm_ek = NULL, tpm_ek_fingerprint = NULL, tpm_ek_source = NULL, tpm_ek_recorded_at = NULL, tpm_ek_recorded_by = NULL WHERE id = ? AND tpm_ek IS NOT NULL`,
      [deviceId])).changes === 1;
  }

  /** Notes on an enrollment's certificate the EK it proved (a sniffable enrollment: recorded only when an administrator approves it). */
  async noteProven(serial: string, ek: { spki: string; fingerprint: string; certificate?: string }): Promise<void> {
    await this.#db.run(`UPDATE certificates SET tpm_ek = ?, tpm_ek_fingerprint = ?, tpm_ek_certificate = ? WHERE serial = ?`,
      [ek.spki, ek.fingerprint, ek.certificate ?? null, serial]);
  }

  /** The EK an enrollment's certificate proved, if any, with the EK certificate the machine sent. */
  async provenBy(serial: string): Promise<{ spki: string; fingerprint: string; certificate?: string } | null> {
    const r = await this.#db.get<{ tpm_ek: string | null; tpm_ek_fingerprint: string | null; tpm_ek_certificate: string | null }>(
      `SELECT tpm_ek, tpm_ek_fingerprint, tpm_ek_certificate FROM certificates WHERE serial = ?`, [serial]);
    return r?.tpm_ek ? { spki: r.tpm_ek, fingerprint: r.tpm_ek_fingerprint!, ...(r.tpm_ek_certificate ? { certificate: r.tpm_ek_certificate } : {}) } : null;
  }

  /** Marks an enrollment's certificate (and its renewals) approved, by serial or by filter. */
  async markApproved(serial: string, via: "serial" | "filter", at: string): Promise<void> {
    await this.#db.run(`UPDATE certificates SET assurance = 'approved', approved_via = ?, approved_at = ? WHERE (enrollment_serial = ? OR serial = ?) AND assurance = 'sniffable'`,
      [via, at, serial, serial]);
  }

  /** The device's live certificate approved by a filter since `since`, if any: what a new enrollment of it contests. */
  async filterApprovedSince(deviceId: string, since: string, now: string): Promise<string | null> {
    return (await this.#db.get<{ serial: string }>(
      `SELECT serial FROM certificates WHERE device_id = ? AND status = 'active' AND not_after > ? AND approved_via = 'filter' AND approved_at >= ?`,
      [deviceId, now, since]))?.serial ?? null;
  }
}
