/**
 * SKU → MercadoLibre listing (item, or item variation) resolution, cached in
 * memory and in the ledger's `listing` table: the seller's items searched by
 * `seller_sku`, then each item read with `include_attributes=all` so the
 * variations' SELLER_SKU attribute is visible. Exactly one item or variation
 * must carry the SKU, or the change fails `sku_not_found` / `sku_ambiguous`.
 */
import type { Sql } from "postgres";
import type { ChangeOutcome } from "../../ledger/dispatch_store.ts";
import type { MeliClient, MeliResult } from "./client.ts";

/** A resolved listing. */
export interface MeliListing {
  itemId: string;
  /** Set when the SKU is one variation of the item. */
  variationId: number | null;
  /** `shipping.logistic_type` when resolved ("fulfillment" = MeLi Full). */
  logisticType: string | null;
}

/** The seller behind the token. */
export interface MeliSeller {
  id: string;
  tags: string[];
}

/** A listing, a permanent outcome for the change, or a transient problem (wait). */
export type MeliResolution =
  | { ok: true; listing: MeliListing }
  | { ok: false; outcome: ChangeOutcome }
  | { ok: false; transient: { reason: string; error: string; waitMs?: number } };

interface Attribute {
  id: string;
  value_name: string | null;
}

/** The fields of `GET /items/{id}` the service reads. */
export interface MeliItem {
  id: string;
  status: string;
  sub_status?: string[];
  available_quantity: number;
  seller_custom_field?: string | null;
  shipping?: { logistic_type?: string | null };
  attributes?: Attribute[];
  variations?: {
    id: number;
    available_quantity: number;
    seller_custom_field?: string | null;
    attributes?: Attribute[];
  }[];
}

const NEGATIVE_TTL_MS = 60_000;
const SELLER_TTL_MS = 600_000;

function sellerSku(attributes: Attribute[] | undefined, customField: string | null | undefined) {
  return attributes?.find((a) => a.id === "SELLER_SKU")?.value_name ?? customField ?? null;
}

/** Maps a non-ok result of a lookup to a transient or permanent outcome. */
export function lookupProblem(
  result: Exclude<MeliResult<unknown>, { kind: "ok" }>,
  what: string,
): MeliResolution {
  switch (result.kind) {
    case "rejected":
      return {
        ok: false,
        outcome: { kind: "failed", reason: "meli_rejected", error: `${what}: ${result.error}` },
      };
    case "rate_limited":
      return {
        ok: false,
        transient: { reason: "rate_limited", error: `${what}: ${result.error}`, waitMs: result.waitMs },
      };
    case "auth":
      return { ok: false, transient: { reason: "unauthorized", error: result.error, waitMs: 10_000 } };
    default:
      return { ok: false, transient: { reason: result.kind, error: `${what}: ${result.error}` } };
  }
}

/** Resolves and caches SKU → listing for one seller. */
export class MeliListings {
  #memory = new Map<string, MeliListing>();
  #misses = new Map<string, { outcome: ChangeOutcome; until: number }>();
  #seller: { value: MeliSeller; until: number } | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly client: MeliClient,
    private readonly configuredUserId?: string,
  ) {}

  /** The seller (id and tags), from MELI_USER_ID or `GET /users/me`; cached 10 min. */
  async seller(signal?: AbortSignal): Promise<MeliSeller | MeliResolution & { ok: false }> {
    if (this.#seller && this.#seller.until > Date.now()) return this.#seller.value;
    const path = this.configuredUserId ? `/users/${this.configuredUserId}` : "/users/me";
    const result = await this.client.request<{ id: number | string; tags?: string[] }>("GET", path, {
      operation: "get_user",
      signal,
    });
    if (result.kind !== "ok") return lookupProblem(result, `GET ${path}`) as MeliResolution & { ok: false };
    const value = { id: String(result.data.id), tags: result.data.tags ?? [] };
    this.#seller = { value, until: Date.now() + SELLER_TTL_MS };
    return value;
  }

  /** Resolves one SKU (memory, then ledger, then MeLi). */
  async resolve(sku: string, signal?: AbortSignal): Promise<MeliResolution> {
    const cached = this.#memory.get(sku);
    if (cached) return { ok: true, listing: cached };
    const miss = this.#misses.get(sku);
    if (miss && miss.until > Date.now()) return { ok: false, outcome: miss.outcome };

    const [row] = await this.sql<
      { external_id: string; variant_id: string | null; data: { logistic_type?: string } }[]
    >`
      select external_id, variant_id, data from listing where channel = 'mercadolibre' and sku = ${sku}`;
    if (row) {
      const listing = {
        itemId: row.external_id,
        variationId: row.variant_id === null ? null : Number(row.variant_id),
        logisticType: row.data?.logistic_type ?? null,
      };
      this.#memory.set(sku, listing);
      return { ok: true, listing };
    }

    const seller = await this.seller(signal);
    if ("ok" in seller) return seller;
    const search = await this.client.request<{ results: string[] }>(
      "GET",
      `/users/${seller.id}/items/search`,
      { operation: "search_items", query: { seller_sku: sku }, signal },
    );
    if (search.kind !== "ok") return lookupProblem(search, `searching SKU ${sku}`);
    const matches: MeliListing[] = [];
    for (const itemId of search.data.results ?? []) {
      const got = await this.client.request<MeliItem>("GET", `/items/${encodeURIComponent(itemId)}`, {
        operation: "get_item",
        query: { include_attributes: "all" },
        signal,
      });
      if (got.kind !== "ok") return lookupProblem(got, `reading item ${itemId}`);
      const item = got.data;
      const logisticType = item.shipping?.logistic_type ?? null;
      if (item.variations && item.variations.length > 0) {
        for (const v of item.variations) {
          if (sellerSku(v.attributes, v.seller_custom_field) === sku) {
            matches.push({ itemId: item.id, variationId: v.id, logisticType });
          }
        }
      } else if (sellerSku(item.attributes, item.seller_custom_field) === sku) {
        matches.push({ itemId: item.id, variationId: null, logisticType });
      }
    }
    if (matches.length !== 1) {
      const outcome: ChangeOutcome = matches.length === 0
        ? {
          kind: "failed",
          reason: "sku_not_found",
          error: `no MercadoLibre listing has SELLER_SKU "${sku}"`,
        }
        : {
          kind: "failed",
          reason: "sku_ambiguous",
          error: `several MercadoLibre listings have SELLER_SKU "${sku}" (${
            matches.map((m) => m.variationId === null ? m.itemId : `${m.itemId}/${m.variationId}`).join(", ")
          }); make it unique`,
        };
      this.#misses.set(sku, { outcome, until: Date.now() + NEGATIVE_TTL_MS });
      return { ok: false, outcome };
    }
    const listing = matches[0];
    await this.sql`
      insert into listing (channel, sku, external_id, variant_id, data)
      values ('mercadolibre', ${sku}, ${listing.itemId},
              ${listing.variationId === null ? null : String(listing.variationId)},
              ${this.sql.json({ logistic_type: listing.logisticType })})
      on conflict (channel, sku) do update
        set external_id = excluded.external_id, variant_id = excluded.variant_id, data = excluded.data,
            resolved_at = now()`;
    this.#memory.set(sku, listing);
    return { ok: true, listing };
  }

  /** Drops a cached listing (MeLi said it no longer exists). */
  async forget(sku: string): Promise<void> {
    this.#memory.delete(sku);
    await this.sql`delete from listing where channel = 'mercadolibre' and sku = ${sku}`;
  }
}
