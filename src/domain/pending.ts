/**
 * Pending devices as an administrator reviews them for approval: which ones a filter picks
 * (the PXE link a device was first seen on, how recently it was first recorded).
 *
 * The link is the `firstSeenLink` attribute the PXE responder records when it first sees an
 * unknown machine; the API refuses to set it, so a device created by hand never matches a link.
 */
import type { Device } from "./device.ts";

/** The attribute holding the PXE link a device was first seen on (written only by the PXE responder). */
export const FIRST_SEEN_LINK = "firstSeenLink";

/** Which pending devices: first seen on `link`, and first recorded at or after `since` (ISO time). */
export type PendingFilter = { link?: string; since?: string };

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d{1,6})([smhd])$/;

/**
 * The start of a time window: a duration back from `now` ("90s", "10m", "2h", "1d") or an ISO
 * time with an offset. Null if `text` is neither. Durations are counted on the site's clock, so
 * "the last 10 minutes" means the same to the server and to the administrator's request.
 */
export function sinceTime(text: string, now: Date): string | null {
  const m = DURATION.exec(text.trim());
  if (m) return new Date(now.getTime() - Number(m[1]) * UNIT_MS[m[2]]).toISOString();
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.test(text.trim())) return null;
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/** Whether a device was first seen on the filter's link and within its window (any state). */
export function matchesSeen(d: Pick<Device, "attributes" | "createdAt">, f: PendingFilter): boolean {
  if (f.link !== undefined && d.attributes[FIRST_SEEN_LINK] !== f.link) return false;
  if (f.since !== undefined && Date.parse(d.createdAt) < Date.parse(f.since)) return false;
  return true;
}

/** Whether a device is pending and matches the filter: what a bulk approval or block decides on. */
export function matchesPending(d: Pick<Device, "state" | "attributes" | "createdAt">, f: PendingFilter): boolean {
  return d.state === "pending" && matchesSeen(d, f);
}
