/**
 * Canonical JSON: one byte sequence per value, so a signature or an audit hash computed on one
 * machine can be recomputed on another. Object keys are sorted by UTF-16 code unit (what
 * `Array.prototype.sort` does), there is no whitespace, and numbers and strings use
 * `JSON.stringify`'s ECMAScript forms — the same rules as RFC 8785 (JCS) for the values Slipway
 * signs. Anything JSON cannot carry faithfully is refused rather than silently dropped.
 */

/** Serialize `value` canonically; throws a TypeError on undefined, functions, symbols, bigints,
 *  non-finite numbers, sparse arrays, Maps/Sets and other non-plain objects, and cycles. */
export function canonicalJson(value: unknown): string {
  return write(value, new Set(), "$");
}

function write(value: unknown, ancestors: Set<object>, path: string): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`Cannot canonicalize ${path}: ${value} is not a finite number`);
      return JSON.stringify(value); // -0 becomes "0", as in JSON.stringify and JCS
    case "object":
      break;
    default:
      throw new TypeError(`Cannot canonicalize ${path}: ${typeof value} has no JSON form`);
  }

  const obj = value as object;
  if (ancestors.has(obj)) throw new TypeError(`Cannot canonicalize ${path}: the value contains a cycle`);
  ancestors.add(obj);
  try {
    // Honour toJSON as JSON.stringify does, so a Date signs as its ISO string.
    if (typeof (obj as { toJSON?: unknown }).toJSON === "function") {
      return write((obj as { toJSON: () => unknown }).toJSON(), ancestors, path);
    }
    if (Array.isArray(obj)) {
      const parts: string[] = [];
      for (let i = 0; i < obj.length; i++) {
        if (!(i in obj)) throw new TypeError(`Cannot canonicalize ${path}[${i}]: sparse arrays have no JSON form`);
        parts.push(write(obj[i], ancestors, `${path}[${i}]`));
      }
      return `[${parts.join(",")}]`;
    }
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const name = (obj as { constructor?: { name?: string } }).constructor?.name ?? "object";
      throw new TypeError(`Cannot canonicalize ${path}: ${name} is not a plain object`);
    }
    const keys = Object.keys(obj).sort();
    const parts = keys.map(
      (k) => `${JSON.stringify(k)}:${write((obj as Record<string, unknown>)[k], ancestors, `${path}.${k}`)}`,
    );
    return `{${parts.join(",")}}`;
  } finally {
    ancestors.delete(obj);
  }
}
