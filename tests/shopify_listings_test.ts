/**
 * SKU → inventory item resolution (src/channels/shopify/listings.ts) against the Shopify sandbox, which
 * prices every query as Shopify does, and a real ledger: what a fresh catalog's lookups cost the shared
 * budget, both what Shopify keeps and what a lookup holds while it runs (the stock writes wait behind
 * both), and that what was resolved once is never asked again.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { type Resolution, ShopifyListings } from "../src/channels/shopify/listings.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { LocalBucket } from "../src/sync/cost_bucket.ts";
import { DATABASE_URL, integration, RecordingBudget, sandboxShopifyClient, uniqueName } from "./helpers.ts";

/** The reason a resolution failed for good, or null. */
function failedFor(r: Resolution | undefined): string | null {
  return r && !r.ok && "outcome" in r && r.outcome.kind === "failed" ? r.outcome.reason : null;
}

integration("a fresh catalog's SKUs cost a point each to resolve, and are resolved once", async () => {
  const catalog = defaultCatalog();
  const shop = await startShopifySandbox({ catalog });
  const schema = uniqueName("msync_listings");
  const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {}, connection: { search_path: schema } });
  try {
    await migrate(admin, schema);
    const budget = new RecordingBudget(new LocalBucket({ max: 2000, restoreRate: 100 }));
    const client = sandboxShopifyClient(shop, { budget });
    const skus = [...new Set(catalog.products.map((p) => p.sku))];
    const ambiguous = skus.filter((sku) => shop.variants.filter((v) => v.sku === sku).length > 1);
    assert.ok(ambiguous.length > 0, "the default catalog has an ambiguous SKU");
    const asked = [...skus, "NO-SUCH-SKU"];

    const resolved = await new ShopifyListings(sql, client).resolveMany(asked);

    for (const sku of skus) {
      const got = resolved.get(sku);
      if (ambiguous.includes(sku)) {
        assert.equal(failedFor(got), "sku_ambiguous", sku);
      } else {
        const item = shop.variants.find((v) => v.sku === sku)!.inventoryItemId;
        assert.equal(got?.ok && got.listing.inventoryItemId, item, sku);
      }
    }
    assert.equal(failedFor(resolved.get("NO-SUCH-SKU")), "sku_not_found");

    // What Shopify kept: a point per item it returned (the ambiguous SKUs' two each) and 2 per call.
    const calls = Math.ceil(asked.length / 25);
    const items = skus.length + ambiguous.length;
    assert.equal(budget.takes.length, calls, "25 SKUs per call, none alone");
    assert.ok(
      shop.stats().pointsSpent <= items + 2 * calls,
      `${shop.stats().pointsSpent} points kept for ${asked.length} SKUs in ${calls} calls`,
    );
    // What a lookup holds while it runs, once the client has seen one priced: a point an item of its page (2 +
    // 54 for 25 SKUs), where a variant and its item were two (110).
    assert.ok(calls >= 2, "more than one lookup, so one is priced from the first");
    for (const held of budget.takes.slice(1)) assert.ok(held <= 56, `a lookup held ${held} points`);

    // Another replica (or a restart) reads them from the ledger: Shopify is not asked again.
    const known = skus.filter((s) => !ambiguous.includes(s));
    const again = await new ShopifyListings(sql, client).resolveMany(known);
    assert.equal(budget.takes.length, calls, "no call for what the ledger knows");
    for (const sku of known) {
      const got = again.get(sku);
      assert.equal(
        got?.ok && got.listing.inventoryItemId,
        shop.variants.find((v) => v.sku === sku)!.inventoryItemId,
      );
    }
  } finally {
    await sql.end();
    await admin.unsafe(`drop schema if exists ${schema} cascade`);
    await admin.end();
    await shop.close();
  }
});
