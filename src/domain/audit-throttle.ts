/**
 * At most one audit entry per key (a machine and a decision, a link and a refusal) in each
 * window, so a flood of requests cannot fill the audit log, in bounded memory. Pure: the
 * caller passes the time, and decides what a suppressed entry costs (the PXE responder counts it).
 */
export type AuditThrottleOptions = {
  /** A key is due again this long after the entry it last let through. */
  everyMs: number;
  /** Keys remembered at most; beyond that the key let through longest ago is forgotten (and due again). */
  maxKeys: number;
};

export class AuditThrottle {
  readonly #o: AuditThrottleOptions;
  /** When each key was last let through; a Map keeps insertion order, so the oldest comes first. */
  readonly #last = new Map<string, number>();

  constructor(o: AuditThrottleOptions) {
    this.#o = o;
  }

  /** Whether `key`'s entry is due at `nowMs`; if so, the key's window starts again from `nowMs`. */
  due(key: string, nowMs: number): boolean {
    const prev = this.#last.get(key);
    if (prev !== undefined && nowMs - prev < this.#o.everyMs) return false;
    // Deleted first so the key moves to the back: eviction from the front goes oldest first.
    this.#last.delete(key);
    this.#last.set(key, nowMs);
    while (this.#last.size > this.#o.maxKeys) this.#last.delete(this.#last.keys().next().value!);
    return true;
  }

  /** How many keys are remembered (at most `maxKeys`). */
  get size(): number {
    return this.#last.size;
  }
}
