/**
 * Certificates the site CA issued: device client certificates, and a distribution point's
 * client (`dp`) and server (`dp-server`) certificates.
 */
import type { Sql } from "./db.ts";
import { bumpTrustGeneration } from "./trust-generation.ts";
import type { Assurance } from "../domain/assurance.ts";

export type CertificateStatus = "active" | "blocked" | "revoked";
export type CertificateKind = "device" | "dp" | "dp-server";
export type CertificateRecord = {
  serial: string; fingerprint: string; kind: CertificateKind; deviceId: string | null; dpId: string | null; subject: string;
  notBefore: string; notAfter: string; status: CertificateStatus; statusChangedAt: string | null;
  statusReason: string | null; issuedVia: string; lastUsedAt: string | null; createdAt: string;
  /** How the enrollment behind it was proven; a renewal keeps its enrollment's. */
  assurance: Assurance;
  /** The serial of the certificate its enrollment issued (itself, unless it is a renewal). */
  enrollmentSerial: string;
};

type R = Record<string, unknown>;
const cert = (r: R): CertificateRecord => ({
  serial: String(r.serial), fingerprint: String(r.fingerprint), kind: String(r.kind) as CertificateKind,
  deviceId: (r.device_id as string | null) ?? null, dpId: (r.dp_id as string | null) ?? null, subject: String(r.subject), notBefore: String(r.not_before),
  notAfter: String(r.not_after), status: String(r.status) as CertificateStatus,
  statusChangedAt: (r.status_changed_at as string | null) ?? null, statusReason: (r.status_reason as string | null) ?? null,
  issuedVia: String(r.issued_via), lastUsedAt: (r.last_used_at as string | null) ?? null, createdAt: String(r.created_at),
  assurance: String(r.assurance ?? "sniffable") as Assurance, enrollmentSerial: String(r.enrollment_serial ?? r.serial),
});

export class CertificateStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  /**
   * Records an issued certificate. `assurance` defaults to sniffable (distribution points'
   * certificates carry none); `enrollmentSerial` to its own serial (an enrollment, not a renewal).
   */
  async add(c: Omit<CertificateRecord, "status" | "statusChangedAt" | "statusReason" | "lastUsedAt" | "dpId" | "assurance" | "enrollmentSerial">
    & { dpId?: string | null; assurance?: Assurance; enrollmentSerial?: string }): Promise<void> {
    await this.#db.run(
      `INSERT INTO certificates (serial, fingerprint, kind, device_id, dp_id, subject, not_before, not_after, status,
         status_changed_at, status_reason, issued_via, last_used_at, created_at, assurance, enrollment_serial)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', NULL, NULL, ?, NULL, ?, ?, ?)`,
      [c.serial, c.fingerprint, c.kind, c.deviceId, c.dpId ?? null, c.subject, c.notBefore, c.notAfter, c.issuedVia, c.createdAt,
        c.assurance ?? "sniffable", c.enrollmentSerial ?? c.serial]);
  }
  async byFingerprint(fp: string): Promise<CertificateRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM certificates WHERE fingerprint = ?`, [fp]);
    return r && cert(r);
  }
  async bySerial(serial: string): Promise<CertificateRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM certificates WHERE serial = ?`, [serial.toLowerCase()]);
    return r && cert(r);
  }
  async list(filter: { deviceId?: string; dpId?: string; status?: CertificateStatus } = {}): Promise<CertificateRecord[]> {
    const where: string[] = [];
    const p: unknown[] = [];
    if (filter.deviceId) (where.push("device_id = ?"), p.push(filter.deviceId));
    if (filter.dpId) (where.push("dp_id = ?"), p.push(filter.dpId));
    if (filter.status) (where.push("status = ?"), p.push(filter.status));
    return (await this.#db.all<R>(
      `SELECT * FROM certificates ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY created_at`, p)).map(cert);
  }
  /** Changes the status unless it is already revoked (revocation is final). */
  async setStatus(serial: string, status: CertificateStatus, reason: string | null, at: string): Promise<number> {
    const changes = (await this.#db.run(
      `UPDATE certificates SET status = ?, status_reason = ?, status_changed_at = ? WHERE serial = ? AND status <> 'revoked'`,
      [status, reason, at, serial.toLowerCase()])).changes;
    if (changes) await bumpTrustGeneration(this.#db);
    return changes;
  }
  /**
   * Retires an active certificate that a newer one replaces (revoked, reason superseded, so
   * it is listed in the CRL). Only from active: false if it was already blocked, revoked or
   * superseded — of two renewals racing with one certificate, only one supersedes it.
   */
  async supersede(serial: string, at: string): Promise<boolean> {
    const done = (await this.#db.run(
      `UPDATE certificates SET status = 'revoked', status_reason = 'superseded', status_changed_at = ? WHERE serial = ? AND status = 'active'`,
      [at, serial.toLowerCase()])).changes === 1;
    if (done) await bumpTrustGeneration(this.#db);
    return done;
  }
  /** Supersedes every active certificate of a device (a new enrollment replaces them); their serials. */
  async supersedeDevice(deviceId: string, at: string): Promise<string[]> {
    const serials = (await this.#db.all<{ serial: string }>(
      `SELECT serial FROM certificates WHERE device_id = ? AND kind = 'device' AND status = 'active' ORDER BY serial`, [deviceId])).map((r) => r.serial);
    for (const s of serials) await this.supersede(s, at);
    return serials;
  }
  async touch(serial: string, at: string): Promise<void> {
    await this.#db.run(`UPDATE certificates SET last_used_at = ? WHERE serial = ?`, [at, serial]);
  }
  async revoked(): Promise<CertificateRecord[]> {
    return (await this.#db.all<R>(`SELECT * FROM certificates WHERE status = 'revoked' ORDER BY serial`)).map(cert);
  }
}
