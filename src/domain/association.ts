/**
 * Computer associations: whose user state goes where. A refresh keeps the state of one machine
 * across its own re-imaging (source = destination); a replace carries it from an old machine to
 * a new one. The lifecycle only moves forward:
 *
 *   pending ──capture──▶ captured ──restore──▶ restored ──delete after──▶ deleting ──▶ gone
 *      │                    │                                                ▲
 *      └────────────── deleted by an administrator, or never restored ───────┘
 *
 * "deleting" means the key is destroyed (crypto-shred) and the chunks are being removed;
 * nothing can be read from then on. Pure: no I/O.
 */

export type AssociationKind = "refresh" | "replace";
export type AssociationState = "pending" | "captured" | "restored" | "deleting" | "gone";
export const associationStates: readonly AssociationState[] = ["pending", "captured", "restored", "deleting", "gone"];

/** Whether the association still holds (or will hold) user state: a device is in at most one of these. */
export function isLive(state: AssociationState): boolean {
  return state === "pending" || state === "captured" || state === "restored";
}

export const HOUR = 3600;
/** Kept after a verified restore unless the site or the association says otherwise. */
export const DEFAULT_DELETE_AFTER_SECONDS = 24 * HOUR;
/** "Delete after" may not be shorter: 0 (keep nothing to recover from a bad restore) is refused. */
export const MIN_DELETE_AFTER_SECONDS = 1 * HOUR;
/** Nor longer than the longest an unrestored association lives. */
export const MAX_DELETE_AFTER_SECONDS = 365 * 24 * HOUR;
/** An association never restored is shredded this long after it was made. */
export const DEFAULT_MAX_UNRESTORED_SECONDS = 30 * 24 * HOUR;
/** The audit log warns this long before an unrestored association expires. */
export const EXPIRY_WARNING_SECONDS = 24 * HOUR;
/** Default per-association quota of stored (compressed, encrypted) bytes. */
export const DEFAULT_QUOTA_BYTES = 64 * 1024 ** 3;
export const MAX_QUOTA_BYTES = 16 * 1024 ** 4;

/** Why a "delete after" is refused, or null. */
export function deleteAfterProblem(seconds: number): string | null {
  if (!Number.isSafeInteger(seconds)) return "must be a whole number of seconds";
  if (seconds < MIN_DELETE_AFTER_SECONDS) return `must be at least ${MIN_DELETE_AFTER_SECONDS / HOUR} hour: the state must outlive a restore long enough to recover from a bad one`;
  if (seconds > MAX_DELETE_AFTER_SECONDS) return `must be at most ${MAX_DELETE_AFTER_SECONDS / HOUR / 24} days`;
  return null;
}

/** What a device may do with an association now, from its state and which end the device is. */
export function captureRefusal(a: { state: AssociationState; sourceDeviceId: string }, deviceId: string): string | null {
  if (a.sourceDeviceId !== deviceId) return "the device is not the association's source";
  if (a.state === "pending") return null;
  if (a.state === "captured" || a.state === "restored") return "its user state was already captured (a second capture would replace state nobody has restored; delete the association and make a new one)";
  return `the association is ${a.state}`;
}

export function restoreRefusal(a: { state: AssociationState; destinationDeviceId: string }, deviceId: string): string | null {
  if (a.destinationDeviceId !== deviceId) return "the device is not the association's destination";
  if (a.state === "captured" || a.state === "restored") return null;
  if (a.state === "pending") return "nothing was captured yet (restore before capture)";
  return `the association is ${a.state}: its key was destroyed`;
}
