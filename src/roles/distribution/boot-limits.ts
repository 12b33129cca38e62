/**
 * How often boot scripts are handed out: per MAC and source address, per source address and
 * per PXE link, in fixed windows. A MAC is only what a request claims: counting it per source
 * means someone else asking for a machine's MAC from another address never uses up that
 * machine's own requests; the per-source limit keeps one address from using up the link's. A
 * request over a limit is counted, not recorded one by one: the first refusal of a window says
 * so once (with how many went unrecorded since the last time), the rest are only counted.
 * Memory stays bounded whatever MACs a sender makes up.
 */

export type BootLimits = {
  /** Boot script requests for one MAC from one source address per window (a pending machine polls every 10 s). */
  perMac: number;
  /** Boot script requests from one source address per window, whatever the MACs. */
  perSource: number;
  /** Boot script requests one PXE link may carry per window, whatever the MACs. */
  perLink: number;
  windowMs: number;
};

export const DEFAULT_BOOT_LIMITS: BootLimits = { perMac: 10, perSource: 60, perLink: 600, windowMs: 60_000 };

const MAX_KEYS = 50_000;

type Window = { start: number; count: number; refused: number };

/** What a hit decided: allowed, or refused — and if so whether to record it now. */
export type Hit = { ok: true } | { ok: false; record: boolean; unrecorded: number; retryAfterSeconds: number };

/** Fixed-window counters by key ("mac:…", "link:…"). */
export class WindowCounter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  /** Refusals not yet recorded, by key, carried into the next recorded refusal. */
  readonly #unrecorded = new Map<string, number>();

  constructor(limit: number, windowMs: number, now: () => number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  hit(key: string): Hit {
    const t = this.#now();
    let w = this.#windows.get(key);
    if (!w || t - w.start >= this.#windowMs || t < w.start) {
      if (w && w.refused > 1) this.#unrecorded.set(key, (this.#unrecorded.get(key) ?? 0) + w.refused - 1);
      w = { start: t, count: 0, refused: 0 };
      this.#windows.delete(key);
      this.#windows.set(key, w);
      this.#trim(t);
    }
    if (w.count < this.#limit) {
      w.count++;
      return { ok: true };
    }
    w.refused++;
    const retryAfterSeconds = Math.max(1, Math.ceil((w.start + this.#windowMs - t) / 1000));
    if (w.refused > 1) return { ok: false, record: false, unrecorded: 0, retryAfterSeconds };
    const unrecorded = this.#unrecorded.get(key) ?? 0;
    this.#unrecorded.delete(key);
    return { ok: false, record: true, unrecorded, retryAfterSeconds };
  }

  /** Drops finished windows once there are many keys; the oldest go first if that is not enough. */
  #trim(t: number): void {
    if (this.#windows.size <= MAX_KEYS) return;
    for (const [k, w] of this.#windows) {
      if (t - w.start >= this.#windowMs) this.#windows.delete(k);
    }
    while (this.#windows.size > MAX_KEYS) this.#windows.delete(this.#windows.keys().next().value!);
    while (this.#unrecorded.size > MAX_KEYS) this.#unrecorded.delete(this.#unrecorded.keys().next().value!);
  }
}
