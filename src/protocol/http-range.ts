/**
 * The HTTP Range header for one byte range (RFC 9110 §14.2): `bytes=N-`, `bytes=N-M` and the
 * suffix form `bytes=-S`. Pure. A server may ignore Range (§14.2), so a header we do not
 * understand — malformed, another unit, several ranges — means "send everything", never an
 * error; only a well-formed range outside the content is unsatisfiable (§15.5.17, 416).
 */

/** Inclusive byte positions, as Content-Range writes them. */
export type ByteRange = { start: number; end: number };

const ONE_RANGE = /^bytes[ \t]*=[ \t]*(?:(\d+)[ \t]*-[ \t]*(\d*)|-[ \t]*(\d+))[ \t]*$/i;

/** The range to send from content of `size` bytes; null: the whole content; "unsatisfiable": 416. */
export function parseRange(header: string | undefined, size: number): ByteRange | "unsatisfiable" | null {
  if (header === undefined || header.length > 200) return null;
  const m = ONE_RANGE.exec(header);
  if (!m) return null;
  if (m[3] !== undefined) {
    // Suffix: the last S bytes (§14.1.2); S = 0 selects nothing.
    const suffix = Number(m[3]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const last = m[2] === "" ? Infinity : Number(m[2]);
  if (last < start) return null; // invalid per §14.1.2: ignore the header
  if (start >= size) return "unsatisfiable";
  return { start, end: Math.min(last, size - 1) };
}

/** `Content-Range` for a range of content of `size` bytes (§14.4). */
export function contentRange(r: ByteRange | null, size: number): string {
  return r ? `bytes ${r.start}-${r.end}/${size}` : `bytes */${size}`;
}
