/**
 * SKU → Shopify InventoryItem resolution, cached in memory and in the ledger's
 * `listing` table. Exactly one inventory item whose SKU equals ours (Shopify's
 * search is not exact) or the change fails `sku_not_found` / `sku_ambiguous`.
 * Every variant has an item of its own, so two variants with one SKU are two items.
 */
import type { Sql } from "postgres";
import type { ChangeOutcome } from "../../model/batch.ts";
import type { ShopifyClient } from "./client.ts";
import { ITEMS_BY_SKU, ITEMS_BY_SKUS } from "./documents.ts";
import { skuSearchQuery } from "./search.ts";
import { ListingCache } from "../../sync/listing_cache.ts";

/** A resolved listing: the inventory item the SKU's stock lives on. */
export interface ShopifyListing {
  inventoryItemId: string;
}

/**
 * A listing; or the permanent outcome to give the change; or a transient
 * problem talking to Shopify (the batch should wait, not burn attempts).
 */
export type Resolution =
  /** `fresh`: just looked up in Shopify (not from the memory or ledger cache). */
  | { ok: true; listing: ShopifyListing; fresh?: boolean }
  | { ok: false; outcome: ChangeOutcome }
  | { ok: false; transient: { reason: string; error: string; waitMs?: number } };

interface ItemsBySku {
  inventoryItems: { nodes: { id: string; sku: string | null }[] };
}

/** SKUs per batched lookup. */
const SKUS_PER_LOOKUP = 25;

/**
 * The page a batched lookup asks for: room for every SKU to be ambiguous (two items each) and a few loose
 * matches (Shopify's search is not exact), so a full page, which sends its SKUs one per call, stays rare.
 * Shopify holds the requested cost (a point an item, 2 + 54 for 25 SKUs) until it answers and keeps a point
 * per item returned.
 */
function lookupPageSize(skus: number): number {
  return 2 * skus + 4;
}

/** Resolves and caches SKU → InventoryItem for one shop. */
export class ShopifyListings {
  #cache = new ListingCache<ShopifyListing>();

  constructor(private readonly sql: Sql, private readonly client: ShopifyClient) {}

  /** Resolves one SKU (memory, then ledger, then Shopify). */
  async resolve(sku: string, signal?: AbortSignal): Promise<Resolution> {
    const cached = this.#cache.get(sku);
    if (cached) return cached;

    const [row] = await this.sql<{ external_id: string }[]>`
      select external_id from listing where channel = 'shopify' and sku = ${sku}`;
    if (row) {
      const listing = { inventoryItemId: row.external_id };
      this.#cache.remember(sku, listing);
      return { ok: true, listing };
    }

    const result = await this.client.call<ItemsBySku>(
      "ItemsBySku",
      ITEMS_BY_SKU,
      { query: skuSearchQuery(sku) },
      signal,
    );
    if (result.kind === "rejected") {
      return {
        ok: false,
        outcome: { kind: "failed", reason: result.reason, error: `resolving SKU: ${result.error}` },
      };
    }
    if (result.kind !== "ok") {
      const waitMs = result.kind === "retry" ? result.waitMs : undefined;
      const reason = result.kind === "unauthorized" ? "unauthorized" : result.reason;
      return { ok: false, transient: { reason, error: `resolving SKU ${sku}: ${result.error}`, waitMs } };
    }
    return await this.#settle(sku, result.data.inventoryItems.nodes.filter((n) => n.sku === sku));
  }

  /** Exactly one item with exactly this SKU, cached; else the permanent outcome (cached a minute). */
  async #settle(sku: string, exact: ItemsBySku["inventoryItems"]["nodes"]): Promise<Resolution> {
    if (exact.length !== 1) {
      const outcome: ChangeOutcome = exact.length === 0
        ? { kind: "failed", reason: "sku_not_found", error: `no Shopify variant has SKU "${sku}"` }
        : {
          kind: "failed",
          reason: "sku_ambiguous",
          error: `several Shopify inventory items have SKU "${sku}" (${
            exact.map((n) => n.id).join(", ")
          }); make it unique`,
        };
      this.#cache.miss(sku, outcome);
      return { ok: false, outcome };
    }
    const listing = { inventoryItemId: exact[0].id };
    // The variant's id is not asked for (a point per SKU, and no write needs it): a row resolved
    // before kept it, and it goes with the item it belonged to.
    await this.sql`
      insert into listing (channel, sku, external_id)
      values ('shopify', ${sku}, ${listing.inventoryItemId})
      on conflict (channel, sku) do update
        set external_id = excluded.external_id, resolved_at = now(),
            variant_id = case when listing.external_id = excluded.external_id then listing.variant_id end`;
    this.#cache.remember(sku, listing);
    return { ok: true, listing, fresh: true };
  }

  /**
   * Drops a cached resolution Shopify says is gone (its inventory item no longer
   * exists: the variant was deleted, maybe re-created under new gids), so the next
   * resolution asks Shopify again. The ledger row goes only while it still names
   * that item: another replica may already have resolved the SKU anew.
   */
  async invalidate(sku: string, inventoryItemId: string): Promise<void> {
    this.#cache.forget(sku);
    await this.sql`
      delete from listing where channel = 'shopify' and sku = ${sku} and external_id = ${inventoryItemId}`;
  }

  /**
   * Resolves a batch's SKUs with as few calls as Shopify allows: the ones not cached are looked up
   * 25 per call (their search terms OR'ed); a SKU is then settled only by its exact matches, and a
   * page too full to be sure falls back to one call per SKU.
   */
  async resolveMany(skus: string[], signal?: AbortSignal): Promise<Map<string, Resolution>> {
    const { known, unknown } = this.#cache.split(skus);
    const out = new Map<string, Resolution>(known);
    if (unknown.length === 0) return out;
    const rows = await this.sql<{ sku: string; external_id: string }[]>`
      select sku, external_id from listing where channel = 'shopify' and sku = any(${unknown})`;
    for (const row of rows) {
      const listing = { inventoryItemId: row.external_id };
      this.#cache.remember(row.sku, listing);
      out.set(row.sku, { ok: true, listing });
    }
    const left = unknown.filter((sku) => !out.has(sku));
    for (let i = 0; i < left.length && left.length > 1; i += SKUS_PER_LOOKUP) {
      const chunk = left.slice(i, i + SKUS_PER_LOOKUP);
      const result = await this.client.call<
        ItemsBySku & { inventoryItems: { pageInfo: { hasNextPage: boolean } } }
      >(
        "ItemsBySkus",
        ITEMS_BY_SKUS,
        { query: chunk.map(skuSearchQuery).join(" OR "), first: lookupPageSize(chunk.length) },
        signal,
      );
      if (result.kind === "retry" || result.kind === "unauthorized") {
        // Shopify cannot answer now: the whole batch waits rather than asking SKU by SKU.
        const waitMs = result.kind === "retry" ? result.waitMs : undefined;
        const reason = result.kind === "unauthorized" ? "unauthorized" : result.reason;
        const transient: Resolution = {
          ok: false,
          transient: { reason, error: `resolving SKUs: ${result.error}`, waitMs },
        };
        for (const sku of left) if (!out.has(sku)) out.set(sku, transient);
        return out;
      }
      // A refused query or a page too full to be sure: these SKUs go one per call below.
      if (result.kind !== "ok" || result.data.inventoryItems.pageInfo.hasNextPage) continue;
      for (const sku of chunk) {
        out.set(sku, await this.#settle(sku, result.data.inventoryItems.nodes.filter((n) => n.sku === sku)));
      }
    }
    for (const sku of left) if (!out.has(sku)) out.set(sku, await this.resolve(sku, signal));
    return out;
  }

  /** Forgets negative results (after an operator fixed the catalog). */
  forgetMisses(): void {
    this.#cache.forgetMisses();
  }
}
