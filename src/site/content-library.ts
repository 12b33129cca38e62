/**
 * The site's content library: importing an image (chunks into the blob store, a signed
 * manifest into the database, one audit entry) and deleting one (its row, then each chunk no
 * other manifest or boot image still uses). Both record under the content lock, so an import
 * and a delete running at once never leave a manifest pointing at a removed chunk.
 */
import type { Site } from "./site.ts";
import { stores } from "../storage/stores.ts";
import { BlobStore } from "../content/blob-store.ts";
import { CONTENT_LOCK, type ContentRecord, type ContentSummary } from "../storage/content-store.ts";
import { importImage, restoreMissingChunks } from "../content/import.ts";
import { isManifestDigest, type ImageFormat } from "../content/manifest.ts";
import { imageReferences, type TaskSequenceLike } from "../domain/policy.ts";
import { SlipwayError } from "../errors.ts";

export type ImportedImage = { record: ContentRecord; chunksWritten: number; chunksReused: number };

/** Imports a file as an image and records its signed manifest; audited as `content.import`. */
export async function addImage(site: Site, opts: {
  file: string; name: string; format?: ImageFormat; actor: string; onProgress?: (done: number, total: number) => void;
  /** How the file was made (`image build`), recorded in the audit entry. */
  built?: Record<string, unknown>;
}): Promise<ImportedImage> {
  const r = await importImage({ dataDir: site.dataDir, file: opts.file, name: opts.name, format: opts.format, signingKey: site.keys.signingKey, now: site.now(), onProgress: opts.onProgress });
  const m = r.signed.manifest;
  const record = await site.db.transaction(async (tx) => {
    await restoreMissingChunks(site.dataDir, opts.file, m);
    const added = await stores(tx).content.add({ digest: r.digest, signed: r.signed, createdBy: opts.actor });
    await site.audit.append({ actor: opts.actor, action: "content.import", object: `content:${r.digest}`,
      details: { name: m.name, format: m.format, size: m.size, sha256: m.sha256, chunks: m.chunks.length, chunksWritten: r.chunksWritten, ...(opts.built ? { built: opts.built } : {}) } }, tx);
    return added;
  }, { lockKey: CONTENT_LOCK });
  return { record, chunksWritten: r.chunksWritten, chunksReused: r.chunksReused };
}

/** A manifest by digest, or the newest one with a name; undefined when there is none. */
export async function findImage(site: Site, ref: string): Promise<ContentRecord | undefined> {
  const content = stores(site.db).content;
  return isManifestDigest(ref) ? content.byDigest(ref) : content.latestByName(ref);
}

/**
 * The enabled deployments whose pinned task sequence version applies this manifest: by its
 * digest, or by its name while it is the newest with that name (deleting it would silently
 * hand those machines an older image, or none).
 */
export async function deploymentsUsing(site: Site, record: ContentSummary): Promise<{ id: string; name: string }[]> {
  const s = stores(site.db);
  const newest = await s.content.latestByName(record.name);
  const refs = newest?.digest === record.digest ? [record.digest, record.name] : [record.digest];
  const out: { id: string; name: string }[] = [];
  for (const d of await s.deployments.list()) {
    if (!d.enabled) continue;
    const v = await s.taskSequences.version(d.taskSequenceId, d.taskSequenceVersion);
    const doc = (v?.document as { document?: TaskSequenceLike } | null)?.document;
    if (doc && imageReferences(doc).some((ref) => refs.includes(ref))) out.push({ id: d.id, name: d.name });
  }
  return out;
}

/**
 * Deletes a manifest and the chunks nothing else uses; audited as `content.delete`. Refused
 * (IN_USE) while an enabled deployment applies it. Returns how many chunk files were removed.
 */
export async function deleteImage(site: Site, digest: string, actor: string): Promise<{ record: ContentSummary; chunksRemoved: number; chunksKept: number }> {
  if (!isManifestDigest(digest)) throw new SlipwayError("VALIDATION", `Cannot delete "${digest}": name a manifest by its digest ("sha256:" and 64 hex digits)`);
  const record = await stores(site.db).content.byDigest(digest);
  if (!record) throw new SlipwayError("NOT_FOUND", `Cannot delete ${digest}: there is no such manifest`);
  const users = await deploymentsUsing(site, record);
  if (users.length) {
    throw new SlipwayError("IN_USE", `Cannot delete ${digest} ("${record.name}"): enabled deployments apply it: ${users.map((u) => `"${u.name}"`).join(", ")}`, { deployments: users });
  }
  const blobs = new BlobStore(site.dataDir);
  return site.db.transaction(async (tx) => {
    const s = stores(tx);
    if (!(await s.content.delete(digest))) throw new SlipwayError("NOT_FOUND", `Cannot delete ${digest}: it was deleted meanwhile`);
    const inUse = await s.content.chunksInUse();
    let removed = 0;
    let kept = 0;
    for (const sha256 of new Set(record.signed.manifest.chunks.map((c) => c.sha256))) {
      // Boot images share the blob store; a chunk that happens to equal a kernel stays.
      if (inUse.has(sha256) || (await s.bootImages.servesBlob(sha256))) kept++;
      else if (await blobs.delete(sha256)) removed++;
    }
    await site.audit.append({ actor, action: "content.delete", object: `content:${digest}`,
      details: { name: record.name, size: record.size, chunksRemoved: removed, chunksKept: kept } }, tx);
    return { record, chunksRemoved: removed, chunksKept: kept };
  }, { lockKey: CONTENT_LOCK });
}
