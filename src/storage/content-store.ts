/**
 * The content library: signed image manifests, addressed by digest. The chunks they list
 * live in the blob store; a row here is what makes them an image a policy can name.
 */
import type { Sql } from "./db.ts";
import { parseJson } from "./json-column.ts";
import type { ImageFormat, SignedManifest } from "../content/manifest.ts";

/** A manifest as listed: everything but the chunk list. */
export type ContentSummary = {
  digest: string; name: string; format: ImageFormat; size: number; sha256: string; chunkCount: number;
  createdBy: string; createdAt: string;
};
export type ContentRecord = ContentSummary & { signed: SignedManifest };

/**
 * Held (in a transaction) while recording a manifest or deleting one with its chunks, so a
 * delete never removes a chunk that an import running at the same time is about to record.
 */
export const CONTENT_LOCK = 0x5119_0c01;

type R = Record<string, unknown>;
const SUMMARY_COLUMNS = `digest, name, format, size, sha256, chunk_count, created_by, created_at`;
const summary = (r: R): ContentSummary => ({
  digest: String(r.digest), name: String(r.name), format: String(r.format) as ImageFormat, size: Number(r.size),
  sha256: String(r.sha256), chunkCount: Number(r.chunk_count), createdBy: String(r.created_by), createdAt: String(r.created_at),
});
const record = (r: R): ContentRecord => ({ ...summary(r), signed: parseJson<SignedManifest>(r.document, null as never) });

export class ContentStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  /** Adds a manifest; the digest is its primary key, so adding the same manifest twice fails. */
  async add(c: { digest: string; signed: SignedManifest; createdBy: string }): Promise<ContentRecord> {
    const m = c.signed.manifest;
    await this.#db.run(
      `INSERT INTO content_manifests (digest, name, format, size, sha256, chunk_count, document, created_by, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [c.digest, m.name, m.format, m.size, m.sha256, m.chunks.length, JSON.stringify(c.signed), c.createdBy, m.createdAt]);
    return (await this.byDigest(c.digest))!;
  }
  async byDigest(digest: string): Promise<ContentRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM content_manifests WHERE digest = ?`, [digest]);
    return r && record(r);
  }
  /** The newest manifest with this name: what an image reference by name resolves to. */
  async latestByName(name: string): Promise<ContentRecord | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM content_manifests WHERE name = ? ORDER BY created_at DESC, digest DESC LIMIT 1`, [name]);
    return r && record(r);
  }
  /** Every manifest (or every one with this name), by name, newest first within a name. */
  async list(opts: { name?: string } = {}): Promise<ContentSummary[]> {
    const rows = opts.name === undefined
      ? await this.#db.all<R>(`SELECT ${SUMMARY_COLUMNS} FROM content_manifests ORDER BY name, created_at DESC, digest DESC`)
      : await this.#db.all<R>(`SELECT ${SUMMARY_COLUMNS} FROM content_manifests WHERE name = ? ORDER BY created_at DESC, digest DESC`, [opts.name]);
    return rows.map(summary);
  }
  /** The SHA-256 of every chunk some manifest lists (reads every manifest: for deletion, not per request). */
  async chunksInUse(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const r of await this.#db.all<R>(`SELECT document FROM content_manifests`)) {
      const signed = parseJson<SignedManifest | null>(r.document, null);
      for (const c of signed?.manifest?.chunks ?? []) out.add(c.sha256);
    }
    return out;
  }
  async delete(digest: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM content_manifests WHERE digest = ?`, [digest])).changes;
  }
}
