/**
 * MercadoLibre's whole catalog, as a whole-catalog resync reads it: every listing
 * of the seller's account (an item, or each variation of an item) with its SKU,
 * quantity and whether MeLi would take a write for it, in pages.
 *
 * How it reads (docs/DESIGN.md §6; MeLi's "Items & Searches"):
 * - the seller's item ids with `GET /users/{id}/items/search?search_type=scan`, 100
 *   per page, following `scroll_id` until MeLi answers it empty. The ids are all
 *   collected before any page is handed out: a scroll id expires 5 minutes after
 *   its last use, and a consumer that writes between pages could outlast it. If it
 *   expires anyway (MeLi's 400 `invalid.scroll.id`), the scan starts over, as MeLi
 *   says to, and keeps the ids it already has;
 * - the items with `GET /items?ids=`, 20 per call (MeLi's maximum), only the fields
 *   read here (`attributes=`) and the variations' SKUs (`include_attributes=all`).
 *   They are read twice: once to count where each SKU is, so that a SKU on several
 *   listings is flagged on every one of them (the first page cannot know about the
 *   last), and once to hand out pages with quantities read moments before. That
 *   costs one call per 20 items more than a single pass, and never holds more than
 *   the ids and the SKU places.
 *
 * SKUs follow the live channel's rules (listings.ts): a variation's SELLER_SKU
 * attribute or `seller_custom_field`; an item's own only when it has no variations.
 * A listing without a SKU is skipped and counted. Nothing is dropped for being
 * unwritable: Full, under review, closed and ambiguous listings come out flagged.
 * Items selling one user product share its stock: they are one listing (the first
 * item read stands for it), not an ambiguous SKU.
 *
 * With MELI_LOCATIONS a listing is a user product's stock at one mapped store's
 * location: in the second pass each user product's stock is read
 * (`GET /user-products/{id}/stock`, one call per user product, retried as the other
 * GETs) and handed out once per mapped store, its place the store's tienda_id, so a
 * resync pairs it with that store's POS stock. Full is told by the locations (stock
 * only in `meli_facility`), as the live channel tells it; stores MELI_LOCATIONS does not
 * map are not listed. A multi-origin seller without MELI_LOCATIONS has no listing MeLi
 * would take an `/items` stock write for: all are flagged `multi_origin_unmapped`.
 */
import { logger } from "../../log.ts";
import { exponential } from "../../resilience/backoff.ts";
import { sleep } from "../../sync/cost_bucket.ts";
import {
  type CatalogListing,
  type ChannelCatalog,
  type StockRead,
  unresolvedRead,
} from "../../sync/channel.ts";
import type { MeliLocation } from "../../config.ts";
import type { MeliClient, MeliError, MeliResult } from "./client.ts";
import {
  itemListings,
  type MeliItem,
  type MeliListing,
  type MeliListings,
  type MeliSeller,
} from "./listings.ts";
import { type MeliLocationRef, onlyInFull, quantityAt, readUserProductStock } from "./user_products.ts";

const log = logger("mercadolibre");

/** Ids per scan page: MeLi's maximum. */
const SCAN_LIMIT = 100;
/** Items per multi-get: MeLi's maximum. */
const MULTIGET_LIMIT = 20;
/** The item fields a listing is built from. */
const ITEM_FIELDS = [
  "id",
  "seller_id",
  "status",
  "sub_status",
  "available_quantity",
  "seller_custom_field",
  "shipping",
  "attributes",
  "variations",
  "user_product_id",
].join(",");

/** What the latest read came to. */
export interface MeliCatalogCounts {
  /** Items the scan listed. */
  items: number;
  /** Listings handed out (flagged ones included). */
  listings: number;
  /** Listings skipped because they carry no SKU. */
  withoutSku: number;
  /** Items the scan listed that were gone (or not the seller's) when read. */
  gone: number;
  /** Scans started over because their scroll id expired. */
  scanRestarts: number;
  /** MELI_LOCATIONS: user products whose stock locations were read (one GET each). */
  stockReads: number;
}

/** A whole-catalog read that could not finish. */
export class MeliCatalogError extends Error {
  override name = "MeliCatalogError";
  constructor(
    message: string,
    /** `unauthorized`, `rate_limited`, `meli_unavailable`, `meli_rejected`, `scroll_expired`, … */
    readonly reason: string,
    /** Whether the same read may work later without anyone changing anything. */
    readonly transient: boolean,
  ) {
    super(message);
  }
}

/** Options of {@link MeliCatalog}. */
export interface MeliCatalogOptions {
  /** The channel's client: tokens, the shared budget and its 429 handling. */
  client: Pick<MeliClient, "request">;
  /** Who the seller is (MELI_USER_ID, else the token's user), as the live channel finds out. */
  listings: Pick<MeliListings, "seller">;
  /** Times a scan starts over after its scroll id expired (default 3). */
  scanRestarts?: number;
  /**
   * Tries of one call MeLi did not answer (5xx, timeout, still 429 after the client's own
   * retries) before the read fails (default 3); GETs, so asking again is harmless.
   */
  tries?: number;
  /** First wait between those tries (default 1 s, doubling, ±50 %). */
  retryBaseMs?: number;
  /** MELI_LOCATIONS: the mapped stores' stock locations; a listing per user product × store. */
  locations?: Readonly<Record<string, MeliLocation>>;
}

/** A listing before it is flagged. */
interface Found {
  sku: string;
  place: string;
  /** The user product when known, else the place: listings with one stock are one listing. */
  stock: string;
  quantity: number;
  item: MeliItem;
  ref: CatalogListing["ref"];
}

interface ScanPage {
  scroll_id?: string | null;
  results?: string[];
  paging?: { total?: number };
}

/** Requests a read of a whole account of `items` items costs: scan pages (and the empty last one), multi-gets. */
export function accountReadCost(items: number): number {
  return Math.ceil(items / SCAN_LIMIT) + 1 + Math.ceil(items / MULTIGET_LIMIT);
}

/** The seller's whole MercadoLibre catalog, in pages. */
export class MeliCatalog implements ChannelCatalog {
  #last: MeliCatalogCounts = emptyCounts();
  readonly #retryWait;

  constructor(private readonly options: MeliCatalogOptions) {
    this.#retryWait = exponential({
      baseMs: options.retryBaseMs ?? 1_000,
      maxMs: 30_000,
      firstAttempt: 1,
      jitter: 0.5,
    });
  }

  /** The counts of the latest read (of the one under way, while it runs). */
  get lastRead(): Readonly<MeliCatalogCounts> {
    return this.#last;
  }

  /**
   * Every listing of the seller's account, one page per 20 items read.
   * @throws MeliCatalogError when MeLi cannot be read (after the retries described above).
   */
  async *listings(signal?: AbortSignal): AsyncGenerator<CatalogListing[]> {
    const counts = emptyCounts();
    this.#last = counts;
    const seller = await this.#seller(signal);
    const ids = (await this.#scan(seller.id, counts, signal))!;
    counts.items = ids.length;
    const multiOrigin = seller.tags.includes("warehouse_management");

    // First pass: where each SKU is, so a SKU on several listings is flagged on all of them.
    // Per SKU, its distinct stocks (user products, else listings), each with the first place seen.
    const places = new Map<string, Map<string, string>>();
    for (let i = 0; i < ids.length; i += MULTIGET_LIMIT) {
      for (const found of await this.#read(ids.slice(i, i + MULTIGET_LIMIT), seller, undefined, signal)) {
        const at = places.get(found.sku) ?? new Map<string, string>();
        places.set(found.sku, at);
        if (!at.has(found.stock)) at.set(found.stock, found.place);
      }
    }

    // Second pass: the pages, with quantities as they are now.
    const locations = this.options.locations;
    const handedOut = new Set<string>();
    for (let i = 0; i < ids.length; i += MULTIGET_LIMIT) {
      const page: CatalogListing[] = [];
      for (const found of await this.#read(ids.slice(i, i + MULTIGET_LIMIT), seller, counts, signal)) {
        if (handedOut.has(found.stock)) continue;
        handedOut.add(found.stock);
        // A SKU set on a listing since the first pass: later listings with it still see the clash.
        const at = places.get(found.sku) ?? new Map<string, string>();
        places.set(found.sku, at);
        if (!at.has(found.stock)) at.set(found.stock, found.place);
        const skuPlaces = [...at.values()];
        if (locations) page.push(...await this.#atLocations(found, skuPlaces, locations, counts, signal));
        else page.push(flagged(found, skuPlaces, multiOrigin));
      }
      counts.listings += page.length;
      if (page.length > 0) yield page;
    }
    log.info(
      "read MercadoLibre's catalog: {listings} listings on {items} items; {without_sku} without a SKU " +
        "skipped, {gone} items gone while reading, {restarts} scans started over, {stock_reads} user " +
        "products' stock locations read",
      {
        listings: counts.listings,
        items: counts.items,
        without_sku: counts.withoutSku,
        gone: counts.gone,
        restarts: counts.scanRestarts,
        stock_reads: counts.stockReads,
      },
    );
  }

  /**
   * The seller's listings grouped by the SELLER_SKU attribute they carry, read in one pass — a
   * scan, then multi-gets of 20 — for resolving SKUs in bulk (listings.ts). Only the listings are
   * kept, never the items' bodies. A SKU set only as `seller_custom_field` is left out: MeLi's
   * `seller_sku` search and its orders do not go by it, so it must not resolve here either. Once
   * the first scan page says how many items the account has, `afford(requests, items)` is asked
   * whether the whole read is worth its {@link accountReadCost}; false ends it there (undefined).
   * @throws MeliCatalogError when MeLi cannot be read (after the retries of {@link listings}).
   */
  async listingsBySku(
    sellerId: string,
    afford: (requests: number, items: number) => boolean,
    signal?: AbortSignal,
  ): Promise<Map<string, MeliListing[]> | undefined> {
    const ids = await this.#scan(sellerId, emptyCounts(), signal, afford);
    if (!ids) return undefined;
    const seller: MeliSeller = { id: sellerId, tags: [] };
    const bySku = new Map<string, MeliListing[]>();
    for (let i = 0; i < ids.length; i += MULTIGET_LIMIT) {
      const items = new Set<MeliItem>();
      for (const { item } of await this.#read(ids.slice(i, i + MULTIGET_LIMIT), seller, undefined, signal)) {
        items.add(item);
      }
      for (const item of items) {
        for (const { sku, listing } of itemListings(item, false)) {
          if (sku === null) continue;
          const listings = bySku.get(sku) ?? [];
          bySku.set(sku, listings);
          listings.push(listing);
        }
      }
    }
    return bySku;
  }

  /**
   * MELI_LOCATIONS: a listing's user product at each mapped store's location, its quantity
   * there and the ref a resync write addresses it by. One stock read per user product; a
   * listing flagged for what its item says (ambiguous, under review, closed) is flagged at
   * every store, and Full is what the locations say.
   */
  async #atLocations(
    found: Found,
    skuPlaces: string[],
    locations: Readonly<Record<string, MeliLocation>>,
    counts: MeliCatalogCounts,
    signal: AbortSignal | undefined,
  ): Promise<CatalogListing[]> {
    const { sku, ref } = found;
    const listing = ref as { itemId: string; variationId: number | null; userProductId: string | null };
    const flag = unwritableReason(found, skuPlaces, { multiOrigin: false, locations: true });
    const stores = Object.entries(locations);
    const everywhere = (unwritable: NonNullable<CatalogListing["unwritable"]>) =>
      // Never compared: the quantity stands for nothing read.
      stores.map(([tiendaId]) => ({ sku, place: tiendaId, quantity: 0, ref: null, unwritable }));
    const upId = listing.userProductId;
    if (!upId) {
      return everywhere(
        flag ?? {
          reason: "user_product_unknown",
          error:
            `MercadoLibre names no user_product_id for ${found.place}: its stock locations cannot be read`,
        },
      );
    }
    const got = await this.#retry(
      () => readUserProductStock(this.options.client, upId, signal),
      `reading user product ${upId}'s stock`,
      signal,
    );
    counts.stockReads++;
    if (got.kind === "rejected") {
      return everywhere(flag ?? { reason: "meli_read_failed", error: `user product ${upId}: ${got.error}` });
    }
    const stock = got.data;
    const unwritable = flag ?? (onlyInFull(stock)
      ? {
        reason: "managed_by_mercadolibre",
        error:
          `user product ${upId} (${found.place}) is stocked in MercadoLibre Full (meli_facility) only: ` +
          "MeLi's warehouse manages its stock",
      }
      : undefined);
    return stores.map(([tiendaId, location]) => {
      const at: MeliLocationRef = {
        itemId: listing.itemId,
        variationId: listing.variationId,
        userProductId: upId,
        tiendaId,
        location,
        version: stock.version,
      };
      const out: CatalogListing = { sku, place: tiendaId, quantity: quantityAt(stock, location), ref: at };
      return unwritable ? { ...out, unwritable } : out;
    });
  }

  async #seller(signal: AbortSignal | undefined): Promise<MeliSeller> {
    const seller = await this.options.listings.seller(signal);
    signal?.throwIfAborted();
    if (!("ok" in seller)) return seller;
    const problem = unresolvedRead(seller) as Extract<StockRead, { ok: false }>;
    throw new MeliCatalogError(
      `finding the MercadoLibre seller: ${problem.error}`,
      problem.reason,
      problem.transient === true,
    );
  }

  /**
   * The seller's item ids, each once, from a scan (started over if its scroll id expires). With
   * `afford`, undefined when it answers false for the account's size the first page tells.
   */
  async #scan(
    sellerId: string,
    counts: MeliCatalogCounts,
    signal: AbortSignal | undefined,
    afford?: (requests: number, items: number) => boolean,
  ): Promise<string[] | undefined> {
    const maxRestarts = this.options.scanRestarts ?? 3;
    const path = `/users/${encodeURIComponent(sellerId)}/items/search`;
    const seen = new Set<string>();
    let scrollId: string | undefined;
    for (;;) {
      const query: Record<string, string> = { search_type: "scan", limit: String(SCAN_LIMIT) };
      if (scrollId !== undefined) query.scroll_id = scrollId;
      const got = await this.#get<ScanPage>(path, query, "scan_items", "scanning the seller's items", signal);
      if (got.kind === "rejected") {
        const expired = got.meli.error === "invalid.scroll.id";
        // MeLi: an expired scroll id is answered invalid.scroll.id; ask for a new one without it.
        if (expired && scrollId !== undefined && counts.scanRestarts < maxRestarts) {
          counts.scanRestarts++;
          log.warning("MercadoLibre's scan scroll expired after {ids} item ids; starting the scan over", {
            ids: seen.size,
          });
          scrollId = undefined;
          continue;
        }
        const why = expired
          ? `the scroll id expired ${counts.scanRestarts + 1} times during one read (${got.error})`
          : got.error;
        throw new MeliCatalogError(
          `scanning the seller's items: ${why}`,
          expired ? "scroll_expired" : "meli_rejected",
          expired,
        );
      }
      const results = got.data.results ?? [];
      if (afford && scrollId === undefined && counts.scanRestarts === 0) {
        // No total, no estimate: not worth guessing.
        const total = got.data.paging?.total;
        if (typeof total !== "number" || !afford(accountReadCost(total), total)) return undefined;
      }
      for (const id of results) seen.add(id);
      // The end: MeLi answers an empty scroll_id (and no results).
      if (!got.data.scroll_id || results.length === 0) return [...seen];
      scrollId = got.data.scroll_id;
    }
  }

  /** Up to 20 items' listings that carry a SKU (`counts`: count what is skipped). */
  async #read(
    ids: string[],
    seller: MeliSeller,
    counts: MeliCatalogCounts | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Found[]> {
    const got = await this.#get<{ code: number; body: MeliItem }[]>(
      "/items",
      { ids: ids.join(","), attributes: ITEM_FIELDS, include_attributes: "all" },
      "get_items",
      `reading items ${ids[0]}…${ids[ids.length - 1]}`,
      signal,
    );
    if (got.kind === "rejected") {
      throw new MeliCatalogError(`reading items ${ids.join(", ")}: ${got.error}`, "meli_rejected", false);
    }
    const out: Found[] = [];
    for (const entry of got.data) {
      // Deleted since the scan (404), or, defensively, not the seller's: not part of the catalog.
      if (
        entry.code !== 200 ||
        (entry.body.seller_id !== undefined && String(entry.body.seller_id) !== seller.id)
      ) {
        if (counts) counts.gone++;
        continue;
      }
      for (const { sku, listing, quantity } of itemListings(entry.body)) {
        if (!sku) {
          if (counts) counts.withoutSku++;
          continue;
        }
        const place = listing.variationId === null
          ? listing.itemId
          : `${listing.itemId}:${listing.variationId}`;
        // The ref is what MeliStock.read answers for the listing, so a write can address it.
        // A user product is one stock however many items sell it.
        const stock = listing.userProductId ?? place;
        out.push({ sku, place, stock, quantity, item: entry.body, ref: listing });
      }
    }
    return out;
  }

  /** A GET through the client, asked again while MeLi cannot answer; a refusal is returned. */
  #get<T>(
    path: string,
    query: Record<string, string>,
    operation: string,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<{ kind: "ok"; data: T } | { kind: "rejected"; error: string; meli: MeliError }> {
    return this.#retry(
      () => this.options.client.request<T>("GET", path, { operation, query, signal }),
      what,
      signal,
    );
  }

  /** A read (a GET: asking again is harmless), asked again while MeLi cannot answer; a refusal is returned. */
  async #retry<T>(
    call: () => Promise<MeliResult<T>>,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<{ kind: "ok"; data: T } | { kind: "rejected"; error: string; meli: MeliError }> {
    const tries = this.options.tries ?? 3;
    for (let attempt = 1;; attempt++) {
      const result: MeliResult<T> = await call();
      signal?.throwIfAborted();
      switch (result.kind) {
        case "ok":
        case "rejected":
          return result;
        case "auth":
          throw new MeliCatalogError(`${what}: ${result.error}`, "unauthorized", !result.permanent);
      }
      // 5xx, timeout, 409, or still 429 after the client's own backoff through the shared budget.
      if (attempt >= tries) {
        throw new MeliCatalogError(
          `${what}: ${result.error}`,
          result.kind === "rate_limited" ? "rate_limited" : "meli_unavailable",
          true,
        );
      }
      await sleep(result.kind === "rate_limited" ? result.waitMs : this.#retryWait(attempt), signal);
      signal?.throwIfAborted();
    }
  }
}

function emptyCounts(): MeliCatalogCounts {
  return { items: 0, listings: 0, withoutSku: 0, gone: 0, scanRestarts: 0, stockReads: 0 };
}

/** A listing as handed out, flagged when MeLi would not take a write for it. */
function flagged(found: Found, skuPlaces: string[], multiOrigin: boolean): CatalogListing {
  const { sku, place, quantity, ref } = found;
  const unwritable = unwritableReason(found, skuPlaces, { multiOrigin, locations: false });
  return unwritable ? { sku, place, quantity, ref, unwritable } : { sku, place, quantity, ref };
}

/**
 * Why MeLi would not take a write for a listing, the most specific reason first; undefined: it
 * would. With `locations` Full is not the item's to tell (its stock locations do, see #atLocations).
 */
function unwritableReason(
  { sku, place, item }: Found,
  skuPlaces: string[],
  seller: { multiOrigin: boolean; locations: boolean },
): CatalogListing["unwritable"] {
  if (skuPlaces.length > 1) {
    // The live channel refuses such a SKU too (sku_ambiguous): which listing the POS product is, is unknown.
    return {
      reason: "ambiguous_sku",
      error: `several MercadoLibre listings have SELLER_SKU "${sku}" (${
        skuPlaces.join(", ")
      }); make it unique`,
    };
  }
  if (!seller.locations && item.shipping?.logistic_type === "fulfillment") {
    return {
      reason: "managed_by_mercadolibre",
      error: `${place} is a MercadoLibre Full (fulfillment) listing: MeLi's warehouse manages its stock`,
    };
  }
  if (item.status === "under_review") {
    const why = item.sub_status?.length ? ` (${item.sub_status.join(", ")})` : "";
    return {
      reason: "under_review",
      error: `MercadoLibre is reviewing ${item.id}${why}: it takes no changes until the review ends`,
    };
  }
  if (item.status === "closed") {
    return { reason: "closed", error: `${item.id} is closed, which is final: MercadoLibre takes no changes` };
  }
  if (seller.multiOrigin) {
    // The live channel's reason for the same seller: one name for one remedy.
    return {
      reason: "multi_origin_unmapped",
      error: "this seller uses multi-origin stock (warehouse_management): MercadoLibre ignores " +
        "available_quantity writes on /items for it; map the POS stores to its warehouses with MELI_LOCATIONS",
    };
  }
  return undefined;
}

/**
 * The MercadoLibre catalog reader over the channel's client and seller lookup (what the plug holds),
 * and MELI_LOCATIONS' stores when set.
 */
export function meliCatalog(
  client: Pick<MeliClient, "request">,
  listings: Pick<MeliListings, "seller">,
  locations?: Readonly<Record<string, MeliLocation>>,
): MeliCatalog {
  return new MeliCatalog({ client, listings, locations });
}
