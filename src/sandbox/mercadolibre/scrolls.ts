/**
 * The scrolls behind `GET /users/{id}/items/search?search_type=scan` of the
 * MercadoLibre sandbox, as MeLi documents them ("Search mode above 1000 records:
 * Scan + Hash"): the first call opens a scroll over the matching item ids as they are
 * at that moment and answers a `scroll_id`; each call with it returns the next
 * `limit` ids; the call after the last id answers no results and `scroll_id: ""` and
 * closes the scroll. A scroll id expires 5 minutes after it was last used (MeLi:
 * "a scroll_id field that expires after 5 minutes"); a closed, expired or made-up
 * one is MeLi's 400 `invalid.scroll.id`, and the caller starts a new scan.
 */
import { randomHex } from "./auth.ts";

/** How long a scroll id stays valid after each use (MeLi: 5 minutes). */
export const SCROLL_TTL_MS = 5 * 60_000;
const SPENT_CAP = 10_000;

interface Scroll {
  userId: number;
  ids: readonly string[];
  position: number;
  expiresAt: number;
}

/** One page of a scroll: its ids and the scroll id to send next ("" once it is exhausted). */
export interface ScrollPage {
  scrollId: string;
  results: string[];
  total: number;
}

/** Why a scroll id was refused: `expired` (or closed) is time passing; `unknown` was never issued. */
export type ScrollRefusal = "expired" | "unknown";

/** Open scrolls, keyed by scroll id. */
export class Scrolls {
  #open = new Map<string, Scroll>();
  /** Ids issued once and now closed or expired (the latest 10,000): refused alike, but not a client bug. */
  #spent = new Set<string>();

  constructor(private readonly now: () => number) {}

  /** Opens a scroll over `ids` (a snapshot) and returns its first page. */
  open(userId: number, ids: readonly string[], limit: number): ScrollPage {
    this.#sweep();
    // MeLi's scroll ids are opaque base64; this one only has to be unguessable and URL-safe once encoded.
    const scrollId = btoa(`sandbox-scan:${userId}:${randomHex(16)}`);
    this.#open.set(scrollId, { userId, ids: [...ids], position: 0, expiresAt: 0 });
    return this.#next(scrollId, limit);
  }

  /** The next page of an open scroll of `userId`, or why the scroll id is refused. */
  next(scrollId: string, userId: number, limit: number): ScrollPage | ScrollRefusal {
    this.#sweep();
    const scroll = this.#open.get(scrollId);
    if (!scroll || scroll.userId !== userId) return this.#spent.has(scrollId) ? "expired" : "unknown";
    return this.#next(scrollId, limit);
  }

  /** Every open scroll expires now (as five idle minutes would). */
  expireAll(): void {
    for (const id of this.#open.keys()) this.#spend(id);
    this.#open.clear();
  }

  #spend(scrollId: string): void {
    this.#open.delete(scrollId);
    this.#spent.add(scrollId);
    if (this.#spent.size > SPENT_CAP) this.#spent.delete(this.#spent.values().next().value!);
  }

  #next(scrollId: string, limit: number): ScrollPage {
    const scroll = this.#open.get(scrollId)!;
    const results = scroll.ids.slice(scroll.position, scroll.position + limit);
    scroll.position += results.length;
    if (results.length === 0) {
      // The end: MeLi answers an empty scroll_id, and the old one is no longer valid.
      this.#spend(scrollId);
      return { scrollId: "", results, total: scroll.ids.length };
    }
    scroll.expiresAt = this.now() + SCROLL_TTL_MS;
    return { scrollId, results, total: scroll.ids.length };
  }

  #sweep(): void {
    const t = this.now();
    for (const [id, scroll] of this.#open) {
      if (scroll.expiresAt <= t) this.#spend(id);
    }
  }
}
