/** Which characters a display name (device, collection, deployment, role...) may hold. */

/**
 * Characters a name may not hold, each class with the message that names it. Invisible and
 * direction-changing characters let two names look alike, or a name read differently on
 * screen than it is stored (a device "pc-1\u202Egpj.exe"), so they are refused, not stripped.
 * Checked before trimming, so a leading or trailing one is refused too.
 */
const forbiddenInNames: readonly { test: (s: string) => boolean; message: string }[] = [
  { test: (s) => /[\u0000-\u001f\u007f-\u009f]/.test(s), message: "must not contain control characters (U+0000–U+001F, U+007F–U+009F)" },
  { test: (s) => /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(s),
    message: "must not contain bidirectional control characters (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C)" },
  { test: (s) => /[\u200b-\u200d\u2060\ufeff]/.test(s), message: "must not contain zero-width characters (U+200B–U+200D, U+2060, U+FEFF)" },
  // Characters that draw nothing yet are not whitespace: fillers, invisible operators, tags.
  { test: (s) => /[\u034f\u115f\u1160\u180e\u2061-\u2064\u3164\uffa0\u{e0000}-\u{e007f}]/u.test(s),
    message: "must not contain invisible characters (U+034F, U+115F, U+1160, U+180E, U+2061–U+2064, U+3164, U+FFA0, tags U+E0000–U+E007F)" },
  { test: (s) => /[\u2028\u2029]/.test(s), message: "must not contain line or paragraph separators (U+2028, U+2029)" },
  { test: (s) => !s.isWellFormed(), message: "must not contain unpaired surrogates (malformed UTF-16)" },
];

/** The first rule a name breaks, as a message ("must not contain ..."), or null. */
export function nameProblem(s: string): string | null {
  return forbiddenInNames.find((f) => f.test(s))?.message ?? null;
}
