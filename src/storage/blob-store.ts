/**
 * The blob store moved to src/content/blob-store.ts: content addressed by SHA-256 sits below
 * storage (the database), beside the manifests that list it. Callers still naming this path
 * move to the new one with the site core (issue #12, item 1); then this file goes.
 */
export { BlobMismatchError, BlobStore } from "../content/blob-store.ts";
