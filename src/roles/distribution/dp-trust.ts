/**
 * What a distribution point knows of its site's trust decisions, and how long it may rely on
 * them. The site keeps a trust generation that goes up with every block, revocation, device
 * deletion and distribution point removal (src/storage/trust-generation.ts); the distribution
 * point asks for it every second and, when it has changed, drops every answer it kept. Answers
 * are kept for 4 s at most in any case — grants and refusals alike — so a change that bumps no
 * generation (a deployment withdrawn, a device added to a collection) also arrives within the
 * bound of 5 s, and so does everything when the trust poll cannot reach the site.
 *
 * When the site refuses this distribution point's own certificate as revoked (removed, or
 * superseded by an enrollment elsewhere — revocation is final), it has been removed: from then
 * on it serves nothing, and it does not come back by itself (the caller records that in its
 * data folder). Other refusals (a blocked certificate, one the site thinks expired) stop it
 * serving too, since every kept answer expires and no new one comes, but not for good.
 */
import { SlipwayError } from "../../errors.ts";
import { HttpsError } from "../../security/pinned-https.ts";
import type { SiteLink } from "./dp-site-link.ts";

/** The promise: a site's trust decision is followed at its distribution points within this. */
export const TRUST_BOUND_MS = 5_000;
/** How often the trust generation is asked for. */
export const TRUST_POLL_MS = 1_000;
/** How long one of the site's answers is used: under the bound, with a second left for the round trip. */
export const ANSWER_TTL_MS = 4_000;

/** Whether an error is the site refusing this distribution point's own certificate as revoked. */
export function refusesOurIdentity(err: unknown): err is HttpsError {
  return err instanceof HttpsError && err.sameIdentity && err.status === 403 && err.code === "SLIPWAY_DEVICE_BLOCKED"
    && (err.details as { certificate?: unknown } | null)?.certificate === "revoked";
}

export class SiteTrust {
  readonly #link: SiteLink;
  readonly #onRemoved: (reason: string) => void;
  readonly #onChange: (() => void)[] = [];
  #generation: number | null = null;
  #removed: string | null = null;

  constructor(opts: { link: SiteLink; onRemoved(reason: string): void }) {
    this.#link = opts.link;
    this.#onRemoved = opts.onRemoved;
  }

  /** The newest generation seen, null before the first. */
  get generation(): number | null {
    return this.#generation;
  }

  /** Why the site no longer has this distribution point serve, once it said so. */
  get removed(): string | null {
    return this.#removed;
  }

  /** Calls fn whenever the generation changes. */
  onChange(fn: () => void): void {
    this.#onChange.push(fn);
  }

  /** Throws DP_REMOVED once the site has removed this distribution point. */
  assertServing(): void {
    if (this.#removed !== null) throw new SlipwayError("DP_REMOVED");
  }

  /** Asks the site for its generation now; a refusal of our certificate means we were removed. */
  async check(): Promise<void> {
    if (this.#removed !== null) return;
    let answer: { generation?: unknown };
    try {
      answer = await this.#link.json<{ generation?: unknown }>("GET", "/mp/v1/dp/trust");
    } catch (err) {
      if (this.noteFailure(err)) return;
      throw err;
    }
    this.observe(answer.generation);
  }

  /**
   * Takes a generation the site reported (with its trust answer or a content answer); true when
   * it is the newest seen, so that an answer decided under it may be kept. A newer one drops
   * what was kept; an older one (read before a change that another answer already showed) is
   * not kept at all.
   */
  observe(generation: unknown): boolean {
    if (typeof generation !== "number" || !Number.isSafeInteger(generation) || this.#removed !== null) return false;
    if (this.#generation === null || generation > this.#generation) {
      const changed = this.#generation !== null;
      this.#generation = generation;
      if (changed) for (const fn of this.#onChange) fn();
    }
    return generation === this.#generation;
  }

  /** Looks at a failed request to the site; true when it was the site refusing us (now removed). */
  noteFailure(err: unknown): boolean {
    if (!refusesOurIdentity(err)) return false;
    if (this.#removed === null) {
      this.#removed = `${err.message} (${err.code})`;
      for (const fn of this.#onChange) fn();
      this.#onRemoved(this.#removed);
    }
    return true;
  }
}
