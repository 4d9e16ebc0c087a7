/**
 * A ruled Shopify listing is set absolutely from the POS, compared-and-set against the quantity
 * just read. Compare-and-set is by value, so it cannot tell "not moved" from "moved and back": a
 * sale that lands after this writer's last POS read, handled meanwhile by another writer that
 * found Shopify already at the new target (nothing to send), leaves this writer's older value
 * free to land. The writer must look at the POS once more after its write and set the listing
 * again if a sale moved it. Driven deterministically: the sale lands between the writer's reads
 * and its write (real sandbox, real Redis POS keys).
 */
import assert from "node:assert/strict";
import { createClient } from "redis";
import { locationMap } from "../src/channels/shopify/channel.ts";
import type { ShopifyListings } from "../src/channels/shopify/listings.ts";
import { RuledSets } from "../src/channels/shopify/ruled.ts";
import { ShopifyStock } from "../src/channels/shopify/stock.ts";
import { applyRule, resolveRule, type StockRules } from "../src/model/stock_rule.ts";
import { PosStockReader } from "../src/pos/stock.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { integration, REDIS_URL, sandboxShopifyClient, setShopifyAvailable, uniqueName } from "./helpers.ts";

const catalog = defaultCatalog();

integration(
  "a ruled Shopify write whose POS reading a sale made stale after the last read is set again, not left standing",
  async () => {
    const shop = await startShopifySandbox({ catalog });
    const redis = createClient({ url: REDIS_URL });
    await redis.connect();
    const prefix = uniqueName("ruled_race");
    try {
      const rules: StockRules = { shopify: { buffer: 1 } };
      const product = catalog.products.find((p) => p.sku === "REMERA-003")!;
      const location = shop.locations[0];
      const item = shop.variants.find((v) => v.sku === product.sku)!.inventoryItemId;
      const posKey = `${prefix}:${location.tiendaId}:${product.sku}`;
      // The POS holds 8 (the rule shows 7); Shopify shows 5. A sale then takes the POS to 6: Shopify
      // should end at 5 — which another writer, handling that sale, finds it already at.
      await redis.set(posKey, "8");
      await setShopifyAvailable(shop, { item, location: location.id }, 5);
      const client = sandboxShopifyClient(shop);
      const stock = new ShopifyStock(client, {} as ShopifyListings, locationMap({}), "correction");
      let saleLanded = false;
      const ruled = new RuledSets({
        rules,
        pos: () =>
          new PosStockReader({
            redis,
            sql: undefined as never,
            keyTemplate: `${prefix}:{tienda_id}:{sku}`,
            query: "",
          }),
        listings: {} as ShopifyListings,
        levels: {
          readMany: (refs, signal) => stock.readMany(refs, signal),
          async writeMany(sets, reference, signal) {
            if (!saleLanded) {
              // After this writer's last POS read, before its write: the sale, whose own batch finds
              // Shopify at 5 = its target and sends nothing.
              saleLanded = true;
              await redis.set(posKey, "6");
            }
            return await stock.writeMany(sets, reference, signal);
          },
        },
      });
      const outcomes = await ruled.settle(
        [{
          inventoryItemId: item,
          locationId: location.id,
          sku: product.sku,
          productoId: product.producto_id,
          stores: [location.tiendaId],
          indexes: [0],
        }],
        "gid://test/Batch/1",
        new AbortController().signal,
      );
      assert.equal(outcomes[0]?.kind, "applied", JSON.stringify(outcomes));
      const want = applyRule(resolveRule(rules, "shopify", location.tiendaId, product.sku)!, 6);
      assert.equal(shop.available(item, location.id), want, "Shopify shows the rule's value of the POS now");
    } finally {
      await redis.del((await redis.keys(`${prefix}:*`)).length ? await redis.keys(`${prefix}:*`) : ["-"]);
      await redis.quit();
      await shop.close();
    }
  },
);
