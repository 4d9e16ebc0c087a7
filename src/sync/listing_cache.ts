/**
 * The in-memory side of SKU → listing resolution, shared by the channels: resolved
 * listings kept for the process's life, and permanent failures (not found,
 * ambiguous) kept a minute so a bad SKU does not cost a marketplace call per sale.
 */
import type { ChangeOutcome } from "../ledger/dispatch_store.ts";

const NEGATIVE_TTL_MS = 60_000;

/** What the cache knows of a SKU. */
export type CachedResolution<L> = { ok: true; listing: L } | { ok: false; outcome: ChangeOutcome };

/** Resolved listings and recent permanent failures, by SKU. */
export class ListingCache<L> {
  #listings = new Map<string, L>();
  #misses = new Map<string, { outcome: ChangeOutcome; until: number }>();

  /** What is known of `sku`, or undefined when it must be looked up. */
  get(sku: string): CachedResolution<L> | undefined {
    const listing = this.#listings.get(sku);
    if (listing) return { ok: true, listing };
    const miss = this.#misses.get(sku);
    if (miss && miss.until > Date.now()) return { ok: false, outcome: miss.outcome };
    return undefined;
  }

  /** Splits SKUs (deduplicated) into what is known and what must be looked up. */
  split(skus: string[]): { known: Map<string, CachedResolution<L>>; unknown: string[] } {
    const known = new Map<string, CachedResolution<L>>();
    const unknown: string[] = [];
    for (const sku of new Set(skus)) {
      const hit = this.get(sku);
      if (hit) known.set(sku, hit);
      else unknown.push(sku);
    }
    return { known, unknown };
  }

  remember(sku: string, listing: L): void {
    this.#listings.set(sku, listing);
  }

  /** Remembers a permanent failure for a minute. */
  miss(sku: string, outcome: ChangeOutcome): void {
    this.#misses.set(sku, { outcome, until: Date.now() + NEGATIVE_TTL_MS });
  }

  forget(sku: string): void {
    this.#listings.delete(sku);
  }

  forgetMisses(): void {
    this.#misses.clear();
  }
}
