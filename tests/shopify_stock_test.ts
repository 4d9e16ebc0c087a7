/**
 * Shopify's batched resync reads and writes (src/channels/shopify/stock.ts) against the
 * loopback sandbox configured as the real API, through the real client and a rate budget
 * shared in Redis: 250 listings read in one query and set in one `inventorySetQuantities`
 * call, a stale compare-and-set refusing the whole call, and the idempotency key answering a
 * re-send from Shopify's record.
 */
import assert from "node:assert/strict";
import { getOperationAST, getVariableValues, parse, validate } from "graphql";
import { createClient } from "redis";
import { locationMap } from "../src/channels/shopify/channel.ts";
import type { ShopifyClient } from "../src/channels/shopify/client.ts";
import { availableAtLocations, SET_AVAILABLE } from "../src/channels/shopify/documents.ts";
import type { ShopifyListings } from "../src/channels/shopify/listings.ts";
import {
  type ItemAtLocation,
  MAX_LISTINGS_PER_CALL,
  ShopifyStock,
  type StockSet,
} from "../src/channels/shopify/stock.ts";
import { buildCatalog } from "../src/sandbox/catalog.ts";
import { requestedQueryCost } from "../src/sandbox/cost.ts";
import { seededRandom } from "../src/sandbox/prng.ts";
import {
  type ShopifySandbox,
  type ShopifySandboxOptions,
  startShopifySandbox,
} from "../src/sandbox/shopify/sandbox.ts";
import { shopifySchema } from "../src/sandbox/shopify/schema.ts";
import { type BucketShape, RedisBucket } from "../src/sync/cost_bucket.ts";
import {
  integration,
  RecordingBudget,
  REDIS_URL,
  sandboxShopifyClient,
  setShopifyAvailable,
  uniqueName,
} from "./helpers.ts";

/** 60 SKUs × 5 stores: 300 listings, more than one batch holds. */
const catalog = buildCatalog({ skus: 60, stores: 5, seed: 13 });
const REFERENCE = "gid://marketplace-sync/Resync/batch-test";

interface Shop {
  shop: ShopifySandbox;
  stock: ShopifyStock;
  budget: RecordingBudget;
  /** The first 250 listings: every SKU at every location, SKU by SKU. */
  refs: ItemAtLocation[];
}

async function withShop(
  fn: (shop: Shop) => Promise<void>,
  options: { sandbox?: ShopifySandboxOptions; bucket?: BucketShape } = {},
): Promise<void> {
  const shop = await startShopifySandbox({ catalog, ...options.sandbox });
  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const key = `marketplace-sync:budget:${uniqueName("shopify_stock")}`;
  const budget = new RecordingBudget(
    new RedisBucket(redis, key, options.bucket ?? { max: 2000, restoreRate: 100 }),
  );
  const client = sandboxShopifyClient(shop, { budget });
  const locations = locationMap(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id])));
  // The batch methods address listings by inventory item: SKU resolution takes no part.
  const stock = new ShopifyStock(client, {} as ShopifyListings, locations, "correction");
  const refs = shop.variants
    .flatMap((v) => shop.locations.map((l) => ({ item: v.inventoryItemId, location: l.id })))
    .slice(0, MAX_LISTINGS_PER_CALL);
  try {
    await fn({ shop, stock, budget, refs });
  } finally {
    await redis.del(key);
    await redis.quit();
    await shop.close();
  }
}

function quantitiesOf(shop: ShopifySandbox, refs: ItemAtLocation[]): number[] {
  return refs.map((r) => shop.available(r.item, r.location)!);
}

/** Targets that differ from every current quantity. */
function setsFor(shop: ShopifySandbox, refs: ItemAtLocation[]): StockSet[] {
  return refs.map((ref, i) => {
    const from = shop.available(ref.item, ref.location)!;
    return { ref, from, to: from + 1 + (i % 7) };
  });
}

/** What the sandbox (Shopify's published rules) charges for a document before running it. */
function priced(query: string, variables: Record<string, unknown>): number {
  const schema = shopifySchema();
  const document = parse(query);
  assert.deepEqual(validate(schema, document).map((e) => e.message), []);
  const operation = getOperationAST(document)!;
  const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], variables);
  assert.equal(coerced.errors, undefined);
  return requestedQueryCost({ schema, operation, fragments: {}, variables: coerced.coerced! });
}

Deno.test("the batched read costs 3 points a listing and the batched write 10 whatever it holds", () => {
  const refs = (n: number) =>
    Array.from({ length: n }, (_, i) => ({
      item: `gid://shopify/InventoryItem/${i + 1}`,
      location: `gid://shopify/Location/${(i % 5) + 1}`,
    }));
  for (const n of [1, 2, 250]) {
    const { query, variables } = availableAtLocations(refs(n));
    assert.equal(priced(query, variables), 3 * n, `${n} listings`);
  }
  // Each location is declared once, however many listings it holds.
  assert.equal(Object.keys(availableAtLocations(refs(250)).variables).length, 250 + 5);
  const quantities = refs(250).map((r) => ({
    inventoryItemId: r.item,
    locationId: r.location,
    quantity: 1,
    changeFromQuantity: 0,
  }));
  const input = { name: "available", reason: "correction", referenceDocumentUri: REFERENCE, quantities };
  assert.equal(priced(SET_AVAILABLE, { input, key: "k" }), 10);
});

Deno.test("more than 250 listings is the caller's mistake, said before anything is sent", async () => {
  const stock = new ShopifyStock({} as ShopifyClient, {} as ShopifyListings, locationMap({}), "correction");
  const ref = { item: "gid://shopify/InventoryItem/1", location: "gid://shopify/Location/1" };
  await assert.rejects(() => stock.readMany(Array(251).fill(ref)), RangeError);
  await assert.rejects(
    () => stock.writeMany(Array(251).fill({ ref, from: 0, to: 1 }), REFERENCE),
    RangeError,
  );
  assert.deepEqual(await stock.readMany([]), []);
  assert.deepEqual((await stock.writeMany([], REFERENCE)).outcomes, []);
});

integration("250 listings at five locations are read in one call, within the budget", async () => {
  await withShop(async ({ shop, stock, budget, refs }) => {
    // A merchant deletes one SKU: its five listings are gone.
    const gone = shop.variants[3];
    shop.deleteVariant(gone.sku);
    const before = shop.stats();
    const reads = await stock.readMany(refs);
    const after = shop.stats();
    assert.equal(after.requests - before.requests, 1);
    assert.equal(after.throttled, 0);
    assert.deepEqual(budget.takes, [750], "the client took what Shopify charges");
    assert.equal(reads.length, 250);
    reads.forEach((read, i) => {
      const ref = refs[i];
      if (ref.item === gone.inventoryItemId) {
        assert.deepEqual(read, {
          ok: false,
          reason: "listing_gone",
          error: `Shopify has no inventory item ${ref.item}`,
        });
      } else {
        assert.deepEqual(read, { ok: true, quantity: shop.available(ref.item, ref.location), ref });
      }
    });
    assert.equal(reads.filter((r) => !r.ok).length, 5);
    // Learned from the answer: the next read of another size is estimated per listing.
    await stock.readMany(refs.slice(0, 10));
    assert.deepEqual(budget.takes, [750, 30]);
  });
});

integration("250 listings are set in one call, each compared with its own value read", async () => {
  await withShop(async ({ shop, stock, budget, refs }) => {
    const sets = setsFor(shop, refs);
    const before = shop.stats();
    const { key, outcomes } = await stock.writeMany(sets, REFERENCE);
    const after = shop.stats();
    assert.equal(after.requests - before.requests, 1);
    assert.equal(after.mutationsApplied - before.mutationsApplied, 1);
    assert.equal(after.throttled, 0);
    assert.deepEqual(budget.takes, [10]);
    assert.match(key, /^[0-9a-f-]{36}$/);
    assert.deepEqual(outcomes, sets.map((s) => ({ kind: "written", quantityAfter: s.to })));
    assert.deepEqual(quantitiesOf(shop, refs), sets.map((s) => s.to));
  });
});

integration("one stale listing refuses the whole call: it is named, the rest are not applied", async () => {
  await withShop(async ({ shop, stock, refs }) => {
    const first = setsFor(shop, refs);
    const untouched = quantitiesOf(shop, refs);
    // Between our read and our write, someone else sets listing 137.
    const moved = 137;
    await setShopifyAvailable(shop, refs[moved], untouched[moved] + 40);
    const before = shop.stats();
    const refused = await stock.writeMany(first, REFERENCE);
    assert.equal(shop.stats().requests - before.requests, 1);
    assert.equal(shop.stats().mutationsApplied, before.mutationsApplied, "nothing of the call applied");
    assert.deepEqual(refused.outcomes[moved], {
      kind: "stale",
      error: `CHANGE_FROM_QUANTITY_STALE at input.quantities.${moved}.changeFromQuantity: ` +
        "The changeFromQuantity value does not match persisted value.",
    });
    const rest = refused.outcomes.filter((_, i) => i !== moved);
    assert.equal(rest.length, 249);
    for (const outcome of rest) {
      assert.equal(outcome.kind, "not_applied");
      assert.equal(outcome.kind === "not_applied" && outcome.reason, "stale_in_batch");
    }
    const expected = [...untouched];
    expected[moved] = untouched[moved] + 40;
    assert.deepEqual(quantitiesOf(shop, refs), expected);

    // The caller re-reads them all (one call), recomputes and writes again under a new key.
    const reread = await stock.readMany(refs);
    const second: StockSet[] = reread.map((read, i) => {
      assert.ok(read.ok);
      return { ref: refs[i], from: read.quantity, to: first[i].to };
    });
    assert.equal(second[moved].from, untouched[moved] + 40);
    const applied = shop.stats().mutationsApplied;
    const written = await stock.writeMany(second, REFERENCE);
    assert.notEqual(written.key, refused.key);
    assert.ok(written.outcomes.every((o) => o.kind === "written"));
    assert.equal(shop.stats().mutationsApplied, applied + 1);
    const targets = first.map((s) => s.to);
    assert.deepEqual(quantitiesOf(shop, refs), targets);

    // Either request sent again under its key is answered from Shopify's record, never applied again:
    // the refused one stays refused though its values now match nothing, the applied one reports
    // its write though every `from` is stale by now.
    const replays = shop.stats().idempotentReplays;
    const again = await stock.writeMany(first, REFERENCE, undefined, { key: refused.key });
    assert.deepEqual(again, refused);
    const twice = await stock.writeMany(second, REFERENCE, undefined, { key: written.key });
    assert.deepEqual(twice, written);
    assert.equal(shop.stats().idempotentReplays, replays + 2);
    assert.equal(shop.stats().mutationsApplied, applied + 1);
    assert.deepEqual(quantitiesOf(shop, refs), targets);
  });
});

integration("a lost answer is sent again under the same key and answered from Shopify's record", async () => {
  // A seed whose first draw loses the answer and whose second does not.
  const seed = [...Array(1000).keys()].find((s) => {
    const random = seededRandom(s);
    return random() < 0.5 && random() >= 0.5;
  })!;
  await withShop(async ({ shop, stock, refs }) => {
    const sets = setsFor(shop, refs);
    shop.setFaults({ lostResponseRate: 0.5, seed });
    const before = shop.stats();
    const { outcomes } = await stock.writeMany(sets, REFERENCE);
    const after = shop.stats();
    assert.equal(after.requests - before.requests, 2);
    assert.equal(after.lostResponses - before.lostResponses, 1);
    assert.equal(after.idempotentReplays - before.idempotentReplays, 1);
    assert.equal(after.mutationsApplied - before.mutationsApplied, 1, "applied once");
    assert.deepEqual(outcomes, sets.map((s) => ({ kind: "written", quantityAfter: s.to })));
    assert.deepEqual(quantitiesOf(shop, refs), sets.map((s) => s.to));
  });
});

integration("answers that never come leave the write uncertain; a re-read shows what happened", async () => {
  await withShop(async ({ shop, stock, refs }) => {
    const sets = setsFor(shop, refs.slice(0, 20));
    shop.setFaults({ lostResponseRate: 1 });
    const before = shop.stats();
    const { outcomes } = await stock.writeMany(sets, REFERENCE);
    const after = shop.stats();
    assert.equal(after.requests - before.requests, 3, "three sends, one key");
    assert.equal(after.mutationsApplied - before.mutationsApplied, 1);
    assert.equal(after.idempotentReplays - before.idempotentReplays, 2);
    for (const outcome of outcomes) {
      assert.deepEqual(outcome, { kind: "error", reason: "http_5xx", error: "HTTP 502", uncertain: true });
    }
    shop.setFaults({ lostResponseRate: 0 });
    const reads = await stock.readMany(sets.map((s) => s.ref));
    assert.deepEqual(reads.map((r) => r.ok && r.quantity), sets.map((s) => s.to), "applied once");
  });
});

integration("a read Shopify prices above one query's limit is read in halves", async () => {
  // A shop whose bucket holds 500 points: 250 listings (750) can never pass in one query.
  await withShop(async ({ shop, stock, budget, refs }) => {
    const reads = await stock.readMany(refs);
    assert.deepEqual(reads.map((r) => r.ok && r.quantity), quantitiesOf(shop, refs));
    const stats = shop.stats();
    assert.equal(stats.costExceeded, 1);
    assert.equal(stats.executed, 2);
    // The first estimate is more than the bucket holds: the shared bucket lets it go with all it has.
    assert.deepEqual(budget.takes, [750, 375, 375]);
  }, {
    sandbox: { bucket: { maximumAvailable: 500, restoreRate: 1000 } },
    bucket: { max: 500, restoreRate: 1000 },
  });
});
