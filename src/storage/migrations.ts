/**
 * Versioned schema migrations, portable between SQLite and PostgreSQL. They run at
 * start-up inside one locked transaction, so two processes starting at once on the same
 * PostgreSQL database apply each migration exactly once. A migration is never edited
 * after it ships; changes come as a new version.
 */
import type { Db } from "./db.ts";

export type Migration = { version: number; name: string; statements: string[] };

const MIGRATION_LOCK = 0x5119_0001;

export const migrations: Migration[] = [
  {
    version: 1,
    name: "site control plane",
    statements: [
      `CREATE TABLE site_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
      `CREATE TABLE roles (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
        builtin INTEGER NOT NULL, permissions TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE admins (
        id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL, must_change_password INTEGER NOT NULL,
        roles TEXT NOT NULL, scopes TEXT, disabled INTEGER NOT NULL,
        failed_logins INTEGER NOT NULL, locked_until TEXT, last_login_at TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE sessions (
        id TEXT PRIMARY KEY, admin_id TEXT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL, last_used_at TEXT NOT NULL)`,
      `CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
        admin_id TEXT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
        name TEXT NOT NULL, role_id TEXT NOT NULL REFERENCES roles(id),
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL, last_used_at TEXT)`,
      `CREATE TABLE devices (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, smbios_uuid TEXT UNIQUE, serial TEXT,
        state TEXT NOT NULL, attributes TEXT NOT NULL, last_seen_at TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE device_macs (
        mac TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE)`,
      `CREATE INDEX device_macs_device ON device_macs(device_id)`,
      `CREATE TABLE collections (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL, rule TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE collection_members (
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        PRIMARY KEY (collection_id, device_id))`,
      `CREATE TABLE variables (
        id TEXT PRIMARY KEY, scope TEXT NOT NULL, scope_id TEXT NOT NULL, name TEXT NOT NULL,
        secret INTEGER NOT NULL, value TEXT, sealed TEXT, key_id TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (scope, scope_id, name))`,
      `CREATE INDEX variables_key ON variables(key_id)`,
      `CREATE TABLE task_sequences (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
        latest_version INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE task_sequence_versions (
        task_sequence_id TEXT NOT NULL REFERENCES task_sequences(id) ON DELETE CASCADE,
        version INTEGER NOT NULL, document TEXT NOT NULL, digest TEXT NOT NULL,
        signature TEXT NOT NULL, published_by TEXT NOT NULL, published_at TEXT NOT NULL,
        PRIMARY KEY (task_sequence_id, version))`,
      `CREATE TABLE deployments (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        task_sequence_id TEXT NOT NULL REFERENCES task_sequences(id),
        task_sequence_version INTEGER NOT NULL,
        collection_id TEXT NOT NULL REFERENCES collections(id),
        purpose TEXT NOT NULL, boot_paths TEXT NOT NULL,
        available_from TEXT, available_until TEXT, enabled INTEGER NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        object TEXT, outcome TEXT NOT NULL, details TEXT,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL)`,
    ],
  },
  {
    version: 2,
    name: "identity: certificates, enrollment credentials, deployment runs",
    statements: [
      `CREATE TABLE certificates (
        serial TEXT PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        device_id TEXT REFERENCES devices(id) ON DELETE SET NULL, subject TEXT NOT NULL,
        not_before TEXT NOT NULL, not_after TEXT NOT NULL, status TEXT NOT NULL,
        status_changed_at TEXT, status_reason TEXT, issued_via TEXT NOT NULL,
        last_used_at TEXT, created_at TEXT NOT NULL)`,
      `CREATE INDEX certificates_device ON certificates(device_id)`,
      `CREATE TABLE enrollment_credentials (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,
        device_id TEXT REFERENCES devices(id) ON DELETE CASCADE, mac TEXT, smbios_uuid TEXT,
        uses_left INTEGER NOT NULL, expires_at TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL,
        revoked_at TEXT, last_used_at TEXT)`,
      `CREATE TABLE password_failures (subject TEXT NOT NULL, at TEXT NOT NULL)`,
      `CREATE INDEX password_failures_subject ON password_failures(subject, at)`,
      `CREATE TABLE deployment_runs (
        id TEXT PRIMARY KEY, deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE, boot_path TEXT NOT NULL,
        task_sequence_id TEXT NOT NULL, task_sequence_version INTEGER NOT NULL,
        state TEXT NOT NULL, current_step TEXT, started_at TEXT NOT NULL, updated_at TEXT NOT NULL, ended_at TEXT)`,
      `CREATE INDEX deployment_runs_device ON deployment_runs(device_id)`,
      `CREATE TABLE run_events (
        run_id TEXT NOT NULL REFERENCES deployment_runs(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
        at TEXT NOT NULL, step TEXT NOT NULL, state TEXT NOT NULL, progress INTEGER, exit_code INTEGER,
        message TEXT, PRIMARY KEY (run_id, seq))`,
    ],
  },
  {
    version: 3,
    name: "network boot: boot images and DHCP leases",
    statements: [
      `CREATE TABLE boot_images (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, kernel_sha256 TEXT NOT NULL, kernel_size BIGINT NOT NULL,
        initrd_sha256 TEXT NOT NULL, initrd_size BIGINT NOT NULL, cmdline TEXT NOT NULL, is_default INTEGER NOT NULL,
        created_by TEXT NOT NULL, created_at TEXT NOT NULL)`,
      `CREATE TABLE dhcp_leases (
        mac TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE, expires_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
    ],
  },
  {
    version: 4,
    name: "content library: signed image manifests",
    statements: [
      `CREATE TABLE content_manifests (
        digest TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
        chunk_count INTEGER NOT NULL, document TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL)`,
      `CREATE INDEX content_manifests_name ON content_manifests(name, created_at)`,
    ],
  },
  {
    version: 5,
    name: "distribution points: registration, identity and content assignments",
    statements: [
      `CREATE TABLE distribution_points (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, url TEXT NOT NULL UNIQUE, host_names TEXT NOT NULL,
        secret_hash TEXT UNIQUE, secret_expires_at TEXT, enrolled_at TEXT, last_seen_at TEXT,
        created_by TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
      `CREATE TABLE distribution_point_content (
        dp_id TEXT NOT NULL REFERENCES distribution_points(id) ON DELETE CASCADE,
        digest TEXT NOT NULL REFERENCES content_manifests(digest) ON DELETE CASCADE,
        state TEXT NOT NULL, message TEXT, assigned_by TEXT NOT NULL, assigned_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (dp_id, digest))`,
      `CREATE INDEX distribution_point_content_digest ON distribution_point_content(digest)`,
      `ALTER TABLE certificates ADD COLUMN dp_id TEXT REFERENCES distribution_points(id) ON DELETE SET NULL`,
      `CREATE INDEX certificates_dp ON certificates(dp_id)`,
    ],
  },
  {
    version: 6,
    name: "devices: pre-approval spent by the first enrollment",
    statements: [
      // preapproval_armed: an administrator's approval not yet spent by an enrollment.
      // enrollments: how many times the device enrolled; also the claim two racing enrollments compare.
      `ALTER TABLE devices ADD COLUMN preapproval_armed INTEGER NOT NULL DEFAULT 0`,
      `ALTER TABLE devices ADD COLUMN enrollments INTEGER NOT NULL DEFAULT 0`,
      `ALTER TABLE devices ADD COLUMN enrolled_at TEXT`,
      `UPDATE devices SET
         enrollments = (SELECT COUNT(*) FROM certificates c WHERE c.device_id = devices.id AND c.kind = 'device' AND c.issued_via NOT LIKE 'renewal:%'),
         enrolled_at = (SELECT MAX(c.created_at) FROM certificates c WHERE c.device_id = devices.id AND c.kind = 'device')`,
      // A device that ever held a certificate has spent its pre-approval.
      `UPDATE devices SET preapproval_armed = 1 WHERE state = 'approved'
         AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.device_id = devices.id)`,
      // Revoking a device's certificate now blocks the device until an administrator approves
      // it again; a device whose newest certificate an administrator revoked is blocked.
      `UPDATE devices SET state = 'blocked' WHERE state <> 'blocked' AND EXISTS (
         SELECT 1 FROM certificates c WHERE c.device_id = devices.id AND c.kind = 'device' AND c.status = 'revoked'
           AND COALESCE(c.status_reason, '') <> 'superseded'
           AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.device_id = devices.id AND n.kind = 'device' AND n.created_at > c.created_at))`,
    ],
  },
  {
    version: 7,
    name: "enrollment assurance; runs belong to the enrollment that started them",
    statements: [
      // assurance: how the enrollment behind a certificate was proven (sniffable, password,
      // approved, media); a renewal keeps its enrollment's. Certificates issued before this
      // are recorded as what their credential proves at least: a boot token without knowing
      // whether the PXE password was typed counts as sniffable (stricter).
      `ALTER TABLE certificates ADD COLUMN assurance TEXT NOT NULL DEFAULT 'sniffable'`,
      `UPDATE certificates SET assurance = CASE issued_via WHEN 'media' THEN 'media' WHEN 'pre-approved' THEN 'approved' ELSE 'sniffable' END`,
      // enrollment_serial: the certificate issued at the enrollment a renewal chain started from.
      `ALTER TABLE certificates ADD COLUMN enrollment_serial TEXT`,
      `UPDATE certificates SET enrollment_serial = serial`,
      `ALTER TABLE devices ADD COLUMN enrolled_assurance TEXT`,
      `UPDATE devices SET enrolled_assurance = (SELECT c.assurance FROM certificates c WHERE c.device_id = devices.id AND c.kind = 'device'
         ORDER BY c.created_at DESC LIMIT 1)`,
      // minimum_assurance NULL: the default (password when the task sequence references a secret).
      `ALTER TABLE deployments ADD COLUMN minimum_assurance TEXT`,
      `ALTER TABLE deployments ADD COLUMN allow_sniffable_enrollment INTEGER NOT NULL DEFAULT 0`,
      // The enrollment a run belongs to (NULL for runs started before: any newer run replaces them),
      // the step reported started and not yet finished, whether its secret was released, and
      // when an administrator allowed a succeeded run's deployment to run again.
      `ALTER TABLE deployment_runs ADD COLUMN enrollment_serial TEXT`,
      `ALTER TABLE deployment_runs ADD COLUMN open_step TEXT`,
      `ALTER TABLE deployment_runs ADD COLUMN open_step_released INTEGER NOT NULL DEFAULT 0`,
      `ALTER TABLE deployment_runs ADD COLUMN rerun_allowed_at TEXT`,
    ],
  },
  {
    version: 8,
    name: "lab DHCP: offers, released bindings, the device a lease is for, declined addresses",
    statements: [
      // state: 'offered' (reserved briefly until the REQUEST), 'bound', or 'released' (not
      // allocated, remembered for its client until it would have expired: RFC 2131 §4.3.4).
      `ALTER TABLE dhcp_leases ADD COLUMN state TEXT NOT NULL DEFAULT 'bound'`,
      `ALTER TABLE dhcp_leases ADD COLUMN device_id TEXT`,
      // Addresses a client found in use (DHCPDECLINE): not available until `until` (§4.3.3).
      `CREATE TABLE dhcp_declined (ip TEXT PRIMARY KEY, mac TEXT NOT NULL, device_id TEXT, until TEXT NOT NULL)`,
    ],
  },
  {
    version: 9,
    name: "trust generation: one counter bumped with every block, revocation, deletion and distribution point removal",
    statements: [
      // One row; distribution points poll it and drop every kept answer when it changes
      // (src/storage/trust-generation.ts).
      `CREATE TABLE trust_generation (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)`,
      `INSERT INTO trust_generation (id, generation) VALUES (1, 0)`,
    ],
  },
  {
    version: 10,
    name: "devices: the TPM endorsement key a machine proves it holds",
    statements: [
      // tpm_ek: the EK's SubjectPublicKeyInfo (DER, base64); tpm_ek_fingerprint: SHA-256 over it;
      // tpm_ek_source: how it came to be trusted (an enrollment's assurance, or 'import');
      // tpm_ek_recorded_at / tpm_ek_recorded_by: when and by whom (machine or administrator).
      `ALTER TABLE devices ADD COLUMN tpm_ek TEXT`,
      `ALTER TABLE devices ADD COLUMN tpm_ek_fingerprint TEXT`,
      `ALTER TABLE devices ADD COLUMN tpm_ek_source TEXT`,
      `ALTER TABLE devices ADD COLUMN tpm_ek_recorded_at TEXT`,
      `ALTER TABLE devices ADD COLUMN tpm_ek_recorded_by TEXT`,
      // One TPM binds one device.
      `CREATE UNIQUE INDEX devices_tpm_ek ON devices(tpm_ek_fingerprint)`,
    ],
  },
  {
    version: 11,
    name: "certificates: the TPM endorsement key a sniffable enrollment proved, for an administrator to approve",
    statements: [
      // Kept on the enrollment's certificate (SPKI DER base64, fingerprint) until an administrator
      // approves that enrollment: then it is recorded on the device like one a password enrollment proved.
      `ALTER TABLE certificates ADD COLUMN tpm_ek TEXT`,
      `ALTER TABLE certificates ADD COLUMN tpm_ek_fingerprint TEXT`,
    ],
  },
  {
    version: 12,
    name: "certificates: the EK certificate a sniffable enrollment sent; how and when an enrollment was approved",
    statements: [
      // Checked against the TPM manufacturer roots configured when the enrollment is approved.
      `ALTER TABLE certificates ADD COLUMN tpm_ek_certificate TEXT`,
      // 'serial' (named by the administrator) or 'filter' (link/since/all); a device enrolling again
      // within the hour after a filter approval contests it (src/roles/site/routes/enrollments.ts).
      `ALTER TABLE certificates ADD COLUMN approved_via TEXT`,
      `ALTER TABLE certificates ADD COLUMN approved_at TEXT`,
    ],
  },
  {
    version: 13,
    name: "membership generation: one counter bumped with every write that can change collection membership",
    statements: [
      // One row; the membership cache keeps what it computed while it is unchanged
      // (src/storage/membership-generation.ts).
      `CREATE TABLE membership_generation (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)`,
      `INSERT INTO membership_generation (id, generation) VALUES (1, 0)`,
      // One device's static memberships without reading every collection's (a policy poll).
      `CREATE INDEX collection_members_device ON collection_members(device_id)`,
    ],
  },
  {
    version: 14,
    name: "computer associations: whose user state goes where, its sealed key, where its chunks are and when they are deleted",
    statements: [
      // kind: 'refresh' (source = destination) or 'replace'. state: pending → captured → restored
      // → deleting → gone (src/domain/association.ts). sealed_key: the per-association data key
      // sealed by the master key; NULL once shredded (deleting and gone). store: 'site' (the
      // built-in state store under DATA/state) or a state migration point's id.
      `CREATE TABLE associations (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, source_device_id TEXT NOT NULL, destination_device_id TEXT NOT NULL,
        state TEXT NOT NULL, store TEXT NOT NULL, sealed_key TEXT, stream_id TEXT,
        chunks INTEGER NOT NULL, stored_bytes BIGINT NOT NULL, state_bytes BIGINT NOT NULL, files BIGINT NOT NULL,
        quota_bytes BIGINT NOT NULL, delete_after_seconds INTEGER NOT NULL, expires_at TEXT NOT NULL, delete_at TEXT,
        expiry_warned_at TEXT, capture_run_id TEXT, restore_run_id TEXT, created_by TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, captured_at TEXT, restored_at TEXT, deleted_at TEXT,
        gone_reason TEXT)`,
      `CREATE INDEX associations_source ON associations(source_device_id)`,
      `CREATE INDEX associations_destination ON associations(destination_device_id)`,
    ],
  },
];

/** Applies every migration newer than the database's version; returns the versions applied. */
export async function migrate(db: Db, list: Migration[] = migrations): Promise<number[]> {
  return db.transaction(
    async (tx) => {
      await tx.run(
        `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`,
      );
      const done = new Set(
        (await tx.all<{ version: number }>(`SELECT version FROM schema_migrations`)).map((r) => Number(r.version)),
      );
      const applied: number[] = [];
      for (const m of [...list].sort((a, b) => a.version - b.version)) {
        if (done.has(m.version)) continue;
        for (const s of m.statements) await tx.run(s);
        await tx.run(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`, [
          m.version,
          m.name,
          new Date().toISOString(),
        ]);
        applied.push(m.version);
      }
      return applied;
    },
    { lockKey: MIGRATION_LOCK },
  );
}
