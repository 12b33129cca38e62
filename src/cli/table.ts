/**
 * Text output for people: aligned tables and "label: value" lists. Everything printed here
 * passes through `printable`, because names, descriptions and attributes come from the
 * server and a stored escape sequence must not be able to rewrite the administrator's
 * terminal. Scripts should use --json instead of parsing this.
 */

export type Column<R> = {
  header: string;
  value: (row: R) => unknown;
  /** Longest a cell may be before it is cut with "…"; default 60. */
  max?: number;
  align?: "left" | "right";
};

export type TableOptions = {
  /** Terminal width to fit into; columns shrink (widest first) until the table fits. */
  width?: number;
  /** Bold headers; only when writing to a terminal. */
  color?: boolean;
};

const DEFAULT_MAX = 60;
const MIN_WIDTH = 6;

// C0 and C1 controls, and the bidirectional overrides that can make text read backwards.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** A value as one line of safe text: line breaks as ⏎, other control characters escaped, lists joined. */
export function printable(value: unknown): string {
  let s: string;
  if (value === null || value === undefined) s = "";
  else if (Array.isArray(value)) s = value.map((v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))).join(", ");
  else if (typeof value === "object") {
    s = Object.entries(value as Record<string, unknown>).map(([k, v]) => `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)}`).join(", ");
  } else s = String(value);
  // Line breaks and tabs in a cell (a step's log excerpt) read as what they are; every other
  // control character is shown escaped, so nothing stored can drive the terminal.
  return s.replace(/\r?\n/g, " ⏎ ").replace(/\t/g, " ").replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

// Widths count code points; East Asian wide characters will misalign, which is acceptable
// for names that are almost always ASCII.
const width = (s: string) => Array.from(s).length;

/** Cuts text to `max` code points, marking the cut with "…". */
export function truncate(text: string, max: number): string {
  const chars = Array.from(text);
  if (chars.length <= max) return text;
  return max <= 1 ? "…".slice(0, max) : chars.slice(0, max - 1).join("") + "…";
}

const pad = (s: string, n: number, align: "left" | "right") => {
  const gap = " ".repeat(Math.max(0, n - width(s)));
  return align === "right" ? gap + s : s + gap;
};

/** Renders rows as an aligned table with a header line; no trailing spaces. */
export function formatTable<R>(rows: readonly R[], columns: readonly Column<R>[], opts: TableOptions = {}): string {
  const cells = rows.map((r) => columns.map((c) => printable(c.value(r))));
  const widths = columns.map((c, i) => Math.min(c.max ?? DEFAULT_MAX, Math.max(width(c.header), ...cells.map((row) => width(row[i])))));
  if (opts.width) {
    const gaps = 2 * (columns.length - 1);
    while (widths.reduce((a, b) => a + b, 0) + gaps > opts.width) {
      const widest = widths.indexOf(Math.max(...widths));
      if (widths[widest] <= MIN_WIDTH) break;
      widths[widest]--;
    }
  }
  const line = (values: string[]) =>
    values.map((v, i) => pad(truncate(v, widths[i]), widths[i], columns[i].align ?? "left")).join("  ").trimEnd();
  const header = line(columns.map((c) => c.header));
  return [opts.color ? `\x1b[1m${header}\x1b[0m` : header, ...cells.map(line)].join("\n");
}

/** Renders `label: value` pairs with the values aligned; empty values show as "-". */
export function formatFields(pairs: readonly (readonly [string, unknown])[]): string {
  const labelWidth = Math.max(0, ...pairs.map(([label]) => width(label) + 1));
  return pairs.map(([label, value]) => {
    const text = printable(value);
    return `${pad(label + ":", labelWidth, "left")}  ${text === "" ? "-" : text}`;
  }).join("\n");
}
