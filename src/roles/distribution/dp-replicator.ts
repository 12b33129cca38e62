/**
 * Replication on a distribution point: each poll fetches the site's public signing key and
 * CRL, then the manifests assigned to this distribution point. Every manifest must verify
 * with the site key; every missing chunk is fetched and stored only if its bytes hash to what
 * the manifest says (a mismatch is logged, reported as failed naming the chunk, and tried
 * again next poll — never stored). A manifest is served only once all of its chunks are here.
 * Content no longer assigned is dropped, and chunks nothing assigned lists are deleted.
 */
import crypto, { type KeyObject } from "node:crypto";
import fs from "node:fs";
import * as x509 from "@peculiar/x509";
import { verifyManifest, type Manifest, type SignedManifest } from "../../content/manifest.ts";
import { BlobMismatchError, type BlobStore } from "../../content/blob-store.ts";
import type { Logger } from "../../log.ts";
import type { SiteLink } from "./dp-site-link.ts";

x509.cryptoProvider.set(globalThis.crypto);

type Assigned = { digest: string; name: string; state: string; message: string | null; signed: SignedManifest };
type SiteInfo = { signingKey: string; signingKeyFingerprint: string; crl: string };
type State = "replicating" | "ready" | "failed";

/** A serial as hex without leading zeros, lower case: how CRL entries and certificates are compared. */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, "");
}

export class Replicator {
  /** Fully replicated, verified manifests by digest: all this distribution point serves. */
  readonly ready = new Map<string, SignedManifest>();
  readonly #link: SiteLink;
  readonly #blobs: BlobStore;
  readonly #ca: x509.X509Certificate;
  readonly #log: Logger;
  #revoked = new Set<string>();
  #crlNextUpdate = 0;
  #siteKey: KeyObject | null = null;

  constructor(opts: { link: SiteLink; blobs: BlobStore; caPem: string; log: Logger }) {
    this.#link = opts.link;
    this.#blobs = opts.blobs;
    this.#ca = new x509.X509Certificate(opts.caPem);
    this.#log = opts.log;
  }

  /** Whether the CRL is loaded and not past its next update: without it no device is served. */
  crlCurrent(now = Date.now()): boolean {
    return now < this.#crlNextUpdate;
  }

  isRevoked(serial: string): boolean {
    return this.#revoked.has(normalizeSerial(serial));
  }

  /** One round: site key and CRL, assignments, missing chunks, status reports, clean-up. */
  async pollOnce(): Promise<void> {
    const info = await this.#link.json<SiteInfo>("GET", "/mp/v1/dp/site");
    await this.#loadCrl(info.crl);
    this.#siteKey = crypto.createPublicKey(info.signingKey);
    const assigned = await this.#link.json<Assigned[]>("GET", "/mp/v1/dp/assignments");
    const wanted = new Map<string, Manifest>();
    for (const a of assigned) {
      let m: Manifest;
      try {
        m = verifyManifest(a.signed, this.#siteKey, a.digest);
      } catch (err) {
        this.ready.delete(a.digest);
        this.#log.warn("assigned manifest refused", { digest: a.digest, reason: (err as Error).message });
        await this.#report(a, "failed", (err as Error).message);
        continue;
      }
      wanted.set(a.digest, m);
      if (this.ready.has(a.digest) || (await this.#complete(m))) {
        this.ready.set(a.digest, a.signed);
        await this.#report(a, "ready");
        continue;
      }
      this.ready.delete(a.digest);
      // A retry after a failure stays "failed" until it succeeds or fails differently: no churn in the audit log.
      if (a.state !== "failed") await this.#report(a, "replicating");
      try {
        const fetched = await this.#fetchMissing(a.digest, m);
        this.ready.set(a.digest, a.signed);
        this.#log.info("content replicated", { digest: a.digest, name: m.name, chunksFetched: fetched });
        await this.#report(a, "ready");
      } catch (err) {
        const message = (err as Error).message;
        this.#log.warn("replication failed", { digest: a.digest, name: m.name, reason: message });
        await this.#report(a, "failed", message);
      }
    }
    for (const digest of [...this.ready.keys()]) {
      if (!wanted.has(digest)) {
        this.ready.delete(digest);
        this.#log.info("content unassigned", { digest });
      }
    }
    await this.#collectGarbage(wanted);
  }

  /** Loads the CRL after checking the pinned CA signed it; a bad one keeps the last good one. */
  async #loadCrl(pem: string): Promise<void> {
    const crl = new x509.X509Crl(pem);
    if (!(await crl.verify({ publicKey: await this.#ca.publicKey.export() }))) throw new Error("The site's CRL is not signed by the pinned site CA");
    this.#revoked = new Set(crl.entries.map((e) => normalizeSerial(e.serialNumber)));
    this.#crlNextUpdate = crl.nextUpdate?.getTime() ?? Date.now() + 3600_000;
  }

  /** Whether every chunk is stored with its listed size (each was verified when stored). */
  async #complete(m: Manifest): Promise<boolean> {
    for (const c of m.chunks) {
      try {
        if ((await fs.promises.stat(this.#blobs.pathOf(c.sha256))).size !== c.size) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  /** Fetches and verifies every chunk not yet stored; returns how many it fetched. */
  async #fetchMissing(digest: string, m: Manifest): Promise<number> {
    let fetched = 0;
    const seen = new Set<string>();
    for (const [index, c] of m.chunks.entries()) {
      if (seen.has(c.sha256) || this.#blobs.has(c.sha256)) continue;
      seen.add(c.sha256);
      const res = await this.#link.stream(`/mp/v1/dp/content/${encodeURIComponent(digest)}/chunks/${c.sha256}`);
      try {
        await this.#blobs.putVerified(res, c);
      } catch (err) {
        res.destroy();
        if (err instanceof BlobMismatchError) {
          throw new Error(`chunk ${index} (sha256 ${c.sha256}) from the site does not match the manifest: ${err.message.replace(/^The bytes are not blob \w+: /, "")}; not stored, will try again`);
        }
        throw new Error(`chunk ${index} (sha256 ${c.sha256}) could not be fetched: ${(err as Error).message}`);
      }
      fetched++;
    }
    return fetched;
  }

  /**
   * Reports a state the site does not have yet (compared with what the assignment list said,
   * so a report lost on the way, a restart or a re-assignment is made good next poll).
   */
  async #report(a: Assigned, state: State, message?: string): Promise<void> {
    const text = message ? message.slice(0, 2000) : undefined;
    if (a.state === state && (a.message ?? undefined) === text) return;
    try {
      await this.#link.json("POST", "/mp/v1/dp/status", { digest: a.digest, state, ...(text ? { message: text } : {}) });
      a.state = state;
      a.message = text ?? null;
    } catch (err) {
      this.#log.warn("status report failed", { digest: a.digest, state, reason: (err as Error).message });
    }
  }

  /** Deletes chunks no assigned manifest lists (a download of just-unassigned content may break; it was unassigned). */
  async #collectGarbage(wanted: Map<string, Manifest>): Promise<void> {
    const keep = new Set<string>();
    for (const m of wanted.values()) for (const c of m.chunks) keep.add(c.sha256);
    let removed = 0;
    for (const sha256 of await this.#blobs.list()) {
      if (!keep.has(sha256) && (await this.#blobs.delete(sha256))) removed++;
    }
    if (removed) this.#log.info("unassigned chunks deleted", { removed });
  }
}
