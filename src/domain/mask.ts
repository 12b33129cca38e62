/**
 * Masking secret values in text a person or a log will read (step messages, status events).
 * Shared by the agent, which masks before a message leaves the machine, and the management
 * point, which masks again whatever the agent did.
 *
 * A command that fails with a secret in its output rarely prints it plain: it shows an HTTP
 * Basic header (base64), a URL with the password in its query (percent-encoded), a hex dump.
 * So each secret is masked in every form below, all found in the original text and replaced
 * together, so that masking one form or one secret never breaks up another's occurrence:
 *
 * - as is;
 * - base64 of its UTF-8 bytes, standard and URL-safe alphabets, with and without `=` padding,
 *   and the part of it that stays the same wherever the secret sits in a longer base64 stream
 *   (`user:secret` in a Basic header), when that part is at least 8 characters;
 * - hex of its UTF-8 bytes, in any letter case;
 * - percent-encoded: encodeURIComponent, encodeURI and form encoding (space as `+`), with the
 *   hex digits of each escape in any case.
 *
 * Secrets shorter than 4 characters are not masked: masking "a" everywhere would destroy every
 * message and, by where the stars fall, tell the secret anyway. Such a secret is too weak to
 * protect by masking.
 */

/** Secrets shorter than this (in UTF-16 code units) are left alone; see the module comment. */
export const MIN_MASKED_LENGTH = 4;
/** A base64 fragment of a secret inside a longer stream is masked only from this length on. */
const MIN_FRAGMENT_LENGTH = 8;
const MASK = "********";

/** Replaces every occurrence of each secret value, in each form it may be printed in, with ********. */
export function maskSecrets(text: string, secrets: Iterable<string>): string {
  const forms: Form[] = [];
  for (const s of secrets) if (s.length >= MIN_MASKED_LENGTH) forms.push(...secretForms(s));
  if (forms.length === 0 || text.length === 0) return text;
  // Views of the text with the same length, so an index in one is an index in the original.
  const views: Record<Form["view"], string> = {
    exact: text,
    asciiLower: text.replace(/[A-Z]+/g, (c) => c.toLowerCase()),
  };
  // Every occurrence of every form, overlapping ones included, then merged into runs.
  const spans: [number, number][] = [];
  for (const { view, needle } of forms) {
    const hay = views[view];
    for (let i = hay.indexOf(needle); i !== -1; i = hay.indexOf(needle, i + 1)) spans.push([i, i + needle.length]);
  }
  if (spans.length === 0) return text;
  spans.sort((a, b) => a[0] - b[0]);
  let out = "";
  let at = 0;
  let [start, end] = spans[0];
  for (const [s, e] of spans.slice(1)) {
    if (s <= end) {
      end = Math.max(end, e);
      continue;
    }
    out += text.slice(at, start) + MASK;
    at = end;
    [start, end] = [s, e];
  }
  return out + text.slice(at, start) + MASK + text.slice(end);
}

/**
 * A string to look for and the view of the text to look in: `asciiLower` (ASCII letters in any
 * case) for hex and percent-encoding, whose escapes may be written in either case.
 */
type Form = { view: "exact" | "asciiLower"; needle: string };

/** The forms one secret may appear in. */
function secretForms(secret: string): Form[] {
  const exact = new Set<string>([secret]);
  const bytes = Buffer.from(secret, "utf8");
  const std = bytes.toString("base64");
  const url = std.replace(/[+/]/g, (c) => (c === "+" ? "-" : "_"));
  for (const b64 of [std, url]) exact.add(b64).add(b64.replace(/=+$/, ""));
  for (const f of base64Fragments(bytes)) exact.add(f);
  // As a JSON string literal's inside, as a program that logs JSON would print it ("/" escaped or not).
  const json = JSON.stringify(secret).slice(1, -1);
  exact.add(json).add(json.replace(/\//g, "\\/"));
  const percent = new Set<string>();
  if (secret.isWellFormed()) { // encodeURI* throws on a lone surrogate; such text is never percent-encoded
    const component = encodeURIComponent(secret);
    percent.add(component).add(component.replace(/%20/g, "+")).add(encodeURI(secret));
    percent.add(new URLSearchParams([["", secret]]).toString().slice(1));
  }
  return [
    ...[...exact].map((needle): Form => ({ view: "exact", needle })),
    { view: "asciiLower", needle: bytes.toString("hex") },
    // Escapes may come in either case. Folding only the escapes misreads a "%" just before the
    // form ("%" + "0a%20…" folds to "%0A%20…"), so percent forms are matched ignoring ASCII case
    // altogether: at worst a case variant of the secret is masked too.
    ...[...percent].filter((p) => !exact.has(p)).map((needle): Form => ({ view: "asciiLower", needle: needle.toLowerCase() })),
  ];
}

/**
 * The base64 characters that depend only on the secret's bytes when it starts 0, 1 or 2 bytes
 * into a 3-byte group of a longer stream (both alphabets). Characters at either end that mix
 * in neighbouring bytes are left out.
 */
function base64Fragments(bytes: Buffer): string[] {
  const out: string[] = [];
  for (let k = 0; k < 3; k++) {
    const shifted = Buffer.concat([Buffer.alloc(k), bytes]);
    const first = Math.ceil((8 * k) / 6);
    const end = Math.floor((8 * (k + bytes.length)) / 6);
    if (end - first < MIN_FRAGMENT_LENGTH) continue;
    const std = shifted.toString("base64").slice(first, end);
    out.push(std, shifted.toString("base64url").slice(first, end));
  }
  return out;
}
