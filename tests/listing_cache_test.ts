/** The in-memory SKU → listing cache: expired permanent failures are forgotten, not kept forever. */
import assert from "node:assert/strict";
import { ListingCache } from "../src/sync/listing_cache.ts";
import type { ChangeOutcome } from "../src/model/batch.ts";

const NOT_FOUND: ChangeOutcome = { kind: "failed", reason: "sku_not_found", error: "no variant" };

Deno.test("a miss is served until it expires, then looked up again", () => {
  let now = 1_000;
  const cache = new ListingCache<string>({ negativeTtlMs: 60_000, now: () => now });
  cache.miss("GONE-1", NOT_FOUND);
  assert.deepEqual(cache.get("GONE-1"), { ok: false, outcome: NOT_FOUND });
  now += 60_000;
  assert.equal(cache.get("GONE-1"), undefined, "expired: must be looked up again");
  assert.equal(cache.size, 0, "and the expired entry is gone, not just hidden");
});

Deno.test("a stream of distinct failing SKUs keeps the cache bounded by one TTL's worth", () => {
  let now = 0;
  const ttl = 60_000;
  const cache = new ListingCache<string>({ negativeTtlMs: ttl, now: () => now });
  cache.remember("GOOD", "listing-1");
  // 100 distinct unknown SKUs a second for an hour: 360,000 misses.
  let largest = 0;
  for (let second = 0; second < 3_600; second++) {
    now = second * 1_000;
    for (let i = 0; i < 100; i++) cache.miss(`TYPO-${second}-${i}`, NOT_FOUND);
    largest = Math.max(largest, cache.size);
  }
  // At most the misses of two TTLs (the live window plus one not yet swept) and the listing.
  assert.ok(largest <= 2 * (ttl / 1_000) * 100 + 1, `cache grew to ${largest} entries`);
  assert.deepEqual(cache.get("GOOD"), { ok: true, listing: "listing-1" }, "resolved listings are kept");
});
