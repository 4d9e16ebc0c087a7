/**
 * SKU → Shopify InventoryItem resolution, cached in memory and in the ledger's
 * `listing` table. Exactly one variant whose SKU equals ours (Shopify's search
 * is not exact) or the change fails `sku_not_found` / `sku_ambiguous`.
 */
import type { Sql } from "postgres";
import type { ChangeOutcome } from "../../model/batch.ts";
import type { ShopifyClient } from "./client.ts";
import { VARIANTS_BY_SKU, VARIANTS_BY_SKUS } from "./documents.ts";
import { skuSearchQuery } from "./search.ts";
import { ListingCache } from "../../sync/listing_cache.ts";

/** A resolved listing: the inventory item the SKU's stock lives on. */
export interface ShopifyListing {
  inventoryItemId: string;
  variantId: string;
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

interface VariantsBySku {
  productVariants: { nodes: { id: string; sku: string | null; inventoryItem: { id: string } }[] };
}

/** SKUs per batched lookup, and the page that should hold all their variants (ambiguous ones have two). */
const SKUS_PER_LOOKUP = 25;
const VARIANTS_PER_LOOKUP = 60;

/** Resolves and caches SKU → InventoryItem for one shop. */
export class ShopifyListings {
  #cache = new ListingCache<ShopifyListing>();

  constructor(private readonly sql: Sql, private readonly client: ShopifyClient) {}

  /** Resolves one SKU (memory, then ledger, then Shopify). */
  async resolve(sku: string, signal?: AbortSignal): Promise<Resolution> {
    const cached = this.#cache.get(sku);
    if (cached) return cached;

    const [row] = await this.sql<{ external_id: string; variant_id: string }[]>`
      select external_id, variant_id from listing where channel = 'shopify' and sku = ${sku}`;
    if (row) {
      const listing = { inventoryItemId: row.external_id, variantId: row.variant_id };
      this.#cache.remember(sku, listing);
      return { ok: true, listing };
    }

    const result = await this.client.call<VariantsBySku>(
      "VariantsBySku",
      VARIANTS_BY_SKU,
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
    return await this.#settle(sku, result.data.productVariants.nodes.filter((n) => n.sku === sku));
  }

  /** Exactly one variant with exactly this SKU, cached; else the permanent outcome (cached a minute). */
  async #settle(sku: string, exact: VariantsBySku["productVariants"]["nodes"]): Promise<Resolution> {
    if (exact.length !== 1) {
      const outcome: ChangeOutcome = exact.length === 0
        ? { kind: "failed", reason: "sku_not_found", error: `no Shopify variant has SKU "${sku}"` }
        : {
          kind: "failed",
          reason: "sku_ambiguous",
          error: `several Shopify variants have SKU "${sku}" (${
            exact.map((n) => n.id).join(", ")
          }); make it unique`,
        };
      this.#cache.miss(sku, outcome);
      return { ok: false, outcome };
    }
    const listing = { inventoryItemId: exact[0].inventoryItem.id, variantId: exact[0].id };
    await this.sql`
      insert into listing (channel, sku, external_id, variant_id)
      values ('shopify', ${sku}, ${listing.inventoryItemId}, ${listing.variantId})
      on conflict (channel, sku) do update
        set external_id = excluded.external_id, variant_id = excluded.variant_id, resolved_at = now()`;
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
    const rows = await this.sql<{ sku: string; external_id: string; variant_id: string }[]>`
      select sku, external_id, variant_id from listing where channel = 'shopify' and sku = any(${unknown})`;
    for (const row of rows) {
      const listing = { inventoryItemId: row.external_id, variantId: row.variant_id };
      this.#cache.remember(row.sku, listing);
      out.set(row.sku, { ok: true, listing });
    }
    const left = unknown.filter((sku) => !out.has(sku));
    for (let i = 0; i < left.length && left.length > 1; i += SKUS_PER_LOOKUP) {
      const chunk = left.slice(i, i + SKUS_PER_LOOKUP);
      const result = await this.client.call<
        VariantsBySku & { productVariants: { pageInfo: { hasNextPage: boolean } } }
      >(
        "VariantsBySkus",
        VARIANTS_BY_SKUS,
        // Room for two variants a SKU (an ambiguous one has two) and a few more: the page's size is its cost.
        {
          query: chunk.map(skuSearchQuery).join(" OR "),
          first: Math.min(VARIANTS_PER_LOOKUP, chunk.length * 2 + 4),
        },
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
      if (result.kind !== "ok" || result.data.productVariants.pageInfo.hasNextPage) continue;
      for (const sku of chunk) {
        out.set(sku, await this.#settle(sku, result.data.productVariants.nodes.filter((n) => n.sku === sku)));
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
