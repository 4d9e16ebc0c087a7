/**
 * The in-memory side of SKU → listing resolution, shared by the channels: resolved
 * listings kept for the process's life (bounded by the catalog), and permanent
 * failures (not found, ambiguous) kept a minute so a bad SKU does not cost a
 * marketplace call per sale. Expired failures are swept, not merely hidden: a POS
 * sending a stream of distinct unknown SKUs must not grow the process without bound.
 */
import type { ChangeOutcome } from "../model/batch.ts";

const NEGATIVE_TTL_MS = 60_000;

/** What the cache knows of a SKU. */
export type CachedResolution<L> = { ok: true; listing: L } | { ok: false; outcome: ChangeOutcome };

/** Tuning, for tests: how long a permanent failure is remembered, and the clock. */
export interface ListingCacheOptions {
  negativeTtlMs?: number;
  now?: () => number;
}

/** Resolved listings and recent permanent failures, by SKU. */
export class ListingCache<L> {
  #listings = new Map<string, L>();
  #misses = new Map<string, { outcome: ChangeOutcome; until: number }>();
  readonly #ttl: number;
  readonly #now: () => number;
  /** When the misses are next swept: at most once a TTL, so a sweep costs O(1) per miss amortized. */
  #nextSweep = 0;

  constructor(options: ListingCacheOptions = {}) {
    this.#ttl = options.negativeTtlMs ?? NEGATIVE_TTL_MS;
    this.#now = options.now ?? Date.now;
  }

  /** Entries held (listings and misses, expired or not): what the process pays for. */
  get size(): number {
    return this.#listings.size + this.#misses.size;
  }

  /** What is known of `sku`, or undefined when it must be looked up. */
  get(sku: string): CachedResolution<L> | undefined {
    const listing = this.#listings.get(sku);
    if (listing) return { ok: true, listing };
    const miss = this.#misses.get(sku);
    if (!miss) return undefined;
    if (miss.until > this.#now()) return { ok: false, outcome: miss.outcome };
    this.#misses.delete(sku);
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

  /**
   * Remembers a permanent failure for a minute. Misses of SKUs never asked about
   * again would otherwise stay forever, so expired ones are swept once per TTL:
   * the map holds at most two TTLs' worth of distinct failing SKUs.
   */
  miss(sku: string, outcome: ChangeOutcome): void {
    const now = this.#now();
    if (now >= this.#nextSweep) {
      for (const [key, entry] of this.#misses) {
        if (entry.until > now) break; // insertion order is expiry order: the rest are live
        this.#misses.delete(key);
      }
      this.#nextSweep = now + this.#ttl;
    }
    this.#misses.delete(sku); // re-inserted last, so insertion order stays expiry order
    this.#misses.set(sku, { outcome, until: now + this.#ttl });
  }

  forget(sku: string): void {
    this.#listings.delete(sku);
  }

  forgetMisses(): void {
    this.#misses.clear();
  }
}
