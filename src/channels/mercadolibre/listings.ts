/**
 * SKU → MercadoLibre listing (item, or item variation) resolution, cached in
 * memory and in the ledger's `listing` table: the seller's items searched by
 * `seller_sku`, then each item read with `include_attributes=all` so the
 * variations' SELLER_SKU attribute is visible. Exactly one item or variation
 * must carry the SKU, or the change fails `sku_not_found` / `sku_ambiguous` — except
 * that several items selling one user product (`user_product_id`: one physical
 * product, shared stock) are one listing, which the first of them stands for.
 */
import type { Sql } from "postgres";
import type { ChangeOutcome } from "../../model/batch.ts";
import { logger } from "../../log.ts";
import { ListingCache } from "../../sync/listing_cache.ts";
import type { MeliClient, MeliResult } from "./client.ts";

const log = logger("mercadolibre");

/** A resolved listing. */
export interface MeliListing {
  itemId: string;
  /** Set when the SKU is one variation of the item. */
  variationId: number | null;
  /** `shipping.logistic_type` when resolved ("fulfillment" = MeLi Full). */
  logisticType: string | null;
  /**
   * The user product the item (or variation) sells; its items share its stock. Null when
   * MeLi did not say (or the ledger row predates it).
   */
  userProductId: string | null;
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

/** An attribute of an item or variation, as far as the service reads it. */
export interface Attribute {
  id: string;
  value_name: string | null;
}

/** The fields of `GET /items/{id}` the service reads. */
export interface MeliItem {
  id: string;
  /** Present when asked for; the owner of the item. */
  seller_id?: number;
  status: string;
  sub_status?: string[];
  available_quantity: number;
  seller_custom_field?: string | null;
  shipping?: { logistic_type?: string | null };
  attributes?: Attribute[];
  /** The user product of an item without variations. */
  user_product_id?: string | null;
  variations?: {
    id: number;
    available_quantity: number;
    seller_custom_field?: string | null;
    attributes?: Attribute[];
    /** Each variation is a user product of its own. */
    user_product_id?: string | null;
  }[];
}

const SELLER_TTL_MS = 600_000;
/** After reading the whole account, SKUs are searched one by one for this long (new listings). */
const ACCOUNT_READ_INTERVAL_MS = 600_000;
/** After a read of the account that failed, how long before one is tried again. */
const ACCOUNT_READ_RETRY_MS = 60_000;
/** How long the account's size (what reading it would cost) is taken as known. */
const ACCOUNT_SIZE_TTL_MS = 600_000;

/** The SKU MeLi shows for an item or variation: its SELLER_SKU attribute, else `seller_custom_field`. */
export function sellerSku(
  attributes: Attribute[] | undefined,
  customField: string | null | undefined,
): string | null {
  return attributes?.find((a) => a.id === "SELLER_SKU")?.value_name ?? customField ?? null;
}

/** One listing of an item as MeLi shows it: the item itself, or one of its variations. */
export interface ItemListing {
  /** Null when neither the SELLER_SKU attribute nor `seller_custom_field` is set. */
  sku: string | null;
  listing: MeliListing;
  quantity: number;
}

/**
 * The listings of an item: its variations when it has any (the item's own SKU is
 * then not a listing), else the item itself. With `customField` false a listing's SKU is
 * its SELLER_SKU attribute only — the one MeLi's `seller_sku` search and its orders go by.
 */
export function itemListings(item: MeliItem, customField = true): ItemListing[] {
  const logisticType = item.shipping?.logistic_type ?? null;
  const skuOf = (attributes: Attribute[] | undefined, field: string | null | undefined) =>
    sellerSku(attributes, customField ? field : null);
  if (item.variations && item.variations.length > 0) {
    return item.variations.map((v) => ({
      sku: skuOf(v.attributes, v.seller_custom_field),
      listing: { itemId: item.id, variationId: v.id, logisticType, userProductId: v.user_product_id ?? null },
      quantity: v.available_quantity,
    }));
  }
  return [{
    sku: skuOf(item.attributes, item.seller_custom_field),
    listing: {
      itemId: item.id,
      variationId: null,
      logisticType,
      userProductId: item.user_product_id ?? null,
    },
    quantity: item.available_quantity,
  }];
}

/**
 * The one item or variation carrying `sku` among `candidates` (items of one user product are one
 * listing, the first by id standing for it), or why there is none: `sku_not_found`, `sku_ambiguous`.
 */
export function pickListing(
  sku: string,
  candidates: MeliItem[],
): { listing: MeliListing } | { outcome: ChangeOutcome } {
  return pickFrom(
    sku,
    candidates.flatMap((item) => itemListings(item).filter((l) => l.sku === sku).map((l) => l.listing)),
  );
}

/** {@link pickListing} over the listings already known to carry `sku`. */
export function pickFrom(
  sku: string,
  all: MeliListing[],
): { listing: MeliListing } | { outcome: ChangeOutcome } {
  // Items of one user product are one listing (MeLi copies stock among them): the first stands for it.
  const family = all.length > 1 && all[0].userProductId !== null &&
    all.every((l) => l.userProductId === all[0].userProductId);
  const matches = family ? [[...all].sort((a, b) => a.itemId < b.itemId ? -1 : 1)[0]] : all;
  if (matches.length === 1) return { listing: matches[0] };
  return {
    outcome: matches.length === 0
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
      },
  };
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

/** Reads the seller's whole account (catalog.ts: a scan, then multi-gets of 20). */
export interface AccountReader {
  /**
   * The seller's listings by the SELLER_SKU attribute they carry (not `seller_custom_field`);
   * undefined when `afford(requests, items)`, asked once the account's size is known, answers false.
   */
  listingsBySku(
    sellerId: string,
    afford: (requests: number, items: number) => boolean,
    signal?: AbortSignal,
  ): Promise<Map<string, MeliListing[]> | undefined>;
}

/**
 * Resolving SKUs by reading the whole account instead of one search per SKU. It runs while a
 * batch is planned, so it must fit well within the batch's lease: `maxRequests` caps what one
 * read may cost (at the request budget's rate), `deadlineMs` how long it may take before it is
 * given up for the search (half the lease).
 */
export interface AccountReading {
  reader: AccountReader;
  maxRequests: number;
  deadlineMs: number;
}

/** Resolves and caches SKU → listing for one seller. */
export class MeliListings {
  #cache = new ListingCache<MeliListing>();
  #seller: { value: MeliSeller; until: number } | undefined;
  /** SKUs resolved by a search of their own since the account was last read: what a read would have saved. */
  #searchesSinceRead = 0;
  /** When the account may be read (again). */
  #nextReadAt = 0;
  /** What reading the account costs, from the size its last scan page told. */
  #readCost: { requests: number; until: number } | undefined;
  /**
   * Requests of a read that ran out of time: a read that large is not tried again by this
   * process (requests go one after another, so at MeLi's real response times it never fits).
   */
  #tooSlowFrom = Infinity;
  /** A read under way: a concurrent lookup waits for it rather than start another. */
  #reading: Promise<boolean> | undefined;
  /**
   * The last read's listings by SELLER_SKU, in memory only, until it is ten minutes old; a SKU
   * leaves it once asked (kept in the cache and `listing` if confirmed, else searched).
   */
  #accountRead: { bySku: Map<string, MeliListing[]>; until: number } | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly client: MeliClient,
    private readonly configuredUserId?: string,
    private readonly accountReading?: AccountReading,
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
    return (await this.resolveMany([sku], signal)).get(sku)!;
  }

  /**
   * Resolves several SKUs with as few requests as MeLi allows: one search per
   * SKU, then their items read 20 at a time (`GET /items?ids=`), each item once
   * even when several of the SKUs are its variations.
   */
  async resolveMany(skus: string[], signal?: AbortSignal): Promise<Map<string, MeliResolution>> {
    const { known, unknown } = this.#cache.split(skus);
    const out = new Map<string, MeliResolution>(known);
    if (unknown.length === 0) return out;
    const rows = await this.sql<
      {
        sku: string;
        external_id: string;
        variant_id: string | null;
        data: { logistic_type?: string; user_product_id?: string };
      }[]
    >`
      select sku, external_id, variant_id, data from listing
       where channel = 'mercadolibre' and sku = any(${unknown})`;
    for (const row of rows) {
      const listing = {
        itemId: row.external_id,
        variationId: row.variant_id === null ? null : Number(row.variant_id),
        logisticType: row.data?.logistic_type ?? null,
        userProductId: row.data?.user_product_id ?? null,
      };
      this.#cache.remember(row.sku, listing);
      out.set(row.sku, { ok: true, listing });
    }
    const left = unknown.filter((sku) => !out.has(sku));
    if (left.length > 0) { for (const [sku, r] of await this.#lookup(left, signal)) out.set(sku, r); }
    return out;
  }

  /**
   * Asks MeLi for SKUs not cached anywhere. When the account has been read (see
   * {@link #readAccount}), a SKU it found on one listing is not searched: if the read was made
   * during this lookup its items are as fresh as a search's; otherwise the item is read again
   * (`GET /items?ids=`, 20 at a time) to confirm the SKU is still on that item or variation
   * before the mapping is kept. Every other SKU, and one whose mapping did not hold, is searched.
   * Only a mapping searched or confirmed goes into `listing` and the memory cache.
   */
  async #lookup(wanted: string[], signal?: AbortSignal): Promise<Map<string, MeliResolution>> {
    const out = new Map<string, MeliResolution>();
    const seller = await this.seller(signal);
    if ("ok" in seller) {
      for (const sku of wanted) out.set(sku, seller);
      return out;
    }
    const toConfirm = new Map<string, MeliListing>();
    if (this.accountReading) {
      const fresh = await this.#readAccount(seller.id, wanted.length, signal);
      const read = this.#accountRead && this.#accountRead.until > Date.now() ? this.#accountRead : undefined;
      if (!read) this.#accountRead = undefined;
      const confirmed: [string, MeliListing][] = [];
      for (const sku of wanted) {
        const listings = read?.bySku.get(sku);
        if (!listings) continue;
        const pick = pickFrom(sku, listings);
        // Ambiguous on the read: the search says so in its own words.
        if (!("listing" in pick)) continue;
        if (fresh) confirmed.push([sku, pick.listing]);
        else toConfirm.set(sku, pick.listing);
      }
      await this.#store(confirmed);
      for (const [sku, listing] of confirmed) {
        read!.bySku.delete(sku);
        out.set(sku, { ok: true, listing });
      }
    }
    // Items read in this lookup, by id: a confirmation's item is not read again for a search.
    const items = new Map<string, MeliItem>();
    const readItems = async (ids: string[], unresolved: () => string[]): Promise<boolean> => {
      for (let i = 0; i < ids.length; i += 20) {
        const chunk = ids.slice(i, i + 20);
        const got = await this.client.request<{ code: number; body: MeliItem }[]>("GET", "/items", {
          operation: "get_items",
          query: { ids: chunk.join(","), include_attributes: "all" },
          signal,
        });
        if (got.kind !== "ok") {
          const problem = lookupProblem(got, `reading items ${chunk.join(", ")}`);
          for (const s of unresolved()) out.set(s, problem);
          return false;
        }
        for (const entry of got.data) if (entry.code === 200) items.set(entry.body.id, entry.body);
      }
      return true;
    };
    if (toConfirm.size > 0) {
      const ids = [...new Set([...toConfirm.values()].map((l) => l.itemId))];
      if (!await readItems(ids, () => wanted.filter((s) => !out.has(s)))) return out;
      const confirmed: [string, MeliListing][] = [];
      for (const [sku, listing] of toConfirm) {
        this.#accountRead?.bySku.delete(sku);
        const item = items.get(listing.itemId);
        const now = item ? itemListings(item, false).filter((l) => l.sku === sku) : [];
        // Still on that item and variation, and only there within the item: else the search decides.
        if (now.length === 1 && now[0].listing.variationId === listing.variationId) {
          confirmed.push([sku, now[0].listing]);
        }
      }
      await this.#store(confirmed);
      for (const [sku, listing] of confirmed) out.set(sku, { ok: true, listing });
    }
    const skus = wanted.filter((sku) => !out.has(sku));
    if (skus.length === 0) return out;
    const found = new Map<string, string[]>();
    for (const sku of skus) {
      const search = await this.client.request<{ results: string[] }>(
        "GET",
        `/users/${seller.id}/items/search`,
        { operation: "search_items", query: { seller_sku: sku }, signal },
      );
      if (search.kind !== "ok") {
        // The rest wait for the next batch; what was found so far is not lost (it is not cached either).
        const problem = lookupProblem(search, `searching SKU ${sku}`);
        for (const s of skus) if (!out.has(s)) out.set(s, problem);
        return out;
      }
      found.set(sku, search.data.results ?? []);
    }
    const ids = [...new Set([...found.values()].flat())].filter((id) => !items.has(id));
    if (!await readItems(ids, () => skus)) return out;
    for (const [sku, itemIds] of found) {
      const missing = itemIds.filter((id) => !items.has(id));
      if (missing.length > 0) {
        out.set(sku, {
          ok: false,
          transient: {
            reason: "listing_gone",
            error: `items ${missing.join(", ")} vanished while resolving ${sku}`,
          },
        });
        continue;
      }
      const resolution = await this.#match(sku, itemIds.map((id) => items.get(id)!));
      if (resolution.ok) this.#searchesSinceRead++;
      out.set(sku, resolution);
    }
    return out;
  }

  /**
   * Reads the whole account when that costs less than the searches it replaces, and keeps what
   * it found in memory only — per SELLER_SKU the listings carrying it, no item bodies — for
   * {@link ACCOUNT_READ_INTERVAL_MS}; nothing goes into `listing` until a lookup asks for the
   * SKU (and, unless the read was made for that lookup, confirms it). A read costs about one
   * request per 17 items (`accountReadCost`) whatever the SKUs; a search costs one per SKU.
   * Which SKUs will still be asked is unknown, so the read is bought once the searches already
   * made since the last read plus the ones this lookup would make reach its cost (rent or buy:
   * never much more than twice what the cheaper way would have cost), and never above
   * `maxRequests`. The first scan page tells the account's size; when the read is not worth it,
   * that page is its only cost, and the size is kept for ten minutes. A read that takes longer
   * than `deadlineMs` is abandoned (and a read that large is not tried again by this process), and
   * the search resolves what was asked; after any read that did not complete, the searches have to
   * pay for the next one again. After a read, SKUs it did not find are searched one by one (listings created since).
   * SKUs found only as `seller_custom_field` are not kept: MeLi's `seller_sku` search and its
   * orders do not find them, so they stay `sku_not_found` whatever the account's size.
   * @returns true when a read was completed during this call (its items are fresh).
   */
  async #readAccount(sellerId: string, asking: number, signal?: AbortSignal): Promise<boolean> {
    if (this.#reading) return await this.#reading;
    const { reader, maxRequests, deadlineMs } = this.accountReading!;
    const now = Date.now();
    if (now < this.#nextReadAt) return false;
    const worth = (requests: number) =>
      requests <= maxRequests && requests < this.#tooSlowFrom && requests <= this.#searchesSinceRead + asking;
    if (this.#readCost && this.#readCost.until > now && !worth(this.#readCost.requests)) return false;
    const read = async (): Promise<boolean> => {
      const deadline = AbortSignal.timeout(deadlineMs);
      let bySku: Map<string, MeliListing[]> | undefined;
      try {
        bySku = await reader.listingsBySku(sellerId, (requests, items) => {
          this.#readCost = { requests, until: Date.now() + ACCOUNT_SIZE_TTL_MS };
          const go = worth(requests);
          if (go) {
            log.info(
              "resolving SKUs by reading MercadoLibre's whole account ({items} items, {requests} requests) " +
                "instead of one search per SKU",
              { items, requests },
            );
          }
          return go;
        }, signal ? AbortSignal.any([signal, deadline]) : deadline);
      } catch (error) {
        // The searches below still resolve what is asked (or report MeLi's trouble themselves).
        // A read that did not complete is bought again only once as many searches have paid for
        // it again, so a failing or slow read never costs more than twice the searches it replaces.
        this.#searchesSinceRead = 0;
        if (signal?.aborted) {
          this.#nextReadAt = Date.now() + ACCOUNT_READ_RETRY_MS;
        } else if (deadline.aborted) {
          log.warning(
            "reading MercadoLibre's whole account took longer than {deadlineMs} ms; searching SKU by SKU",
            { deadlineMs },
          );
          this.#tooSlowFrom = Math.min(this.#tooSlowFrom, this.#readCost?.requests ?? Infinity);
          this.#nextReadAt = Date.now() + ACCOUNT_READ_INTERVAL_MS;
        } else {
          log.warning("could not read MercadoLibre's whole account ({error}); searching SKU by SKU", {
            error: (error as Error).message,
          });
          this.#nextReadAt = Date.now() + ACCOUNT_READ_RETRY_MS;
        }
        return false;
      }
      if (!bySku) return false;
      this.#searchesSinceRead = 0;
      this.#nextReadAt = Date.now() + ACCOUNT_READ_INTERVAL_MS;
      this.#accountRead = { bySku, until: Date.now() + ACCOUNT_READ_INTERVAL_MS };
      return true;
    };
    this.#reading = read();
    try {
      return await this.#reading;
    } finally {
      this.#reading = undefined;
    }
  }

  /** Picks the one item or variation carrying `sku`, and caches the answer. */
  async #match(sku: string, candidates: MeliItem[]): Promise<MeliResolution> {
    const pick = pickListing(sku, candidates);
    if ("outcome" in pick) {
      this.#cache.miss(sku, pick.outcome);
      return { ok: false, outcome: pick.outcome };
    }
    await this.#store([[sku, pick.listing]]);
    return { ok: true, listing: pick.listing };
  }

  /** Records resolved listings in the ledger and in memory (one statement per 1 000). */
  async #store(resolved: [string, MeliListing][]): Promise<void> {
    if (resolved.length === 0) return;
    for (let i = 0; i < resolved.length; i += 1_000) {
      const chunk = resolved.slice(i, i + 1_000);
      const skus = chunk.map(([sku]) => sku);
      const items = chunk.map(([, l]) => l.itemId);
      const variations = chunk.map(([, l]) => l.variationId === null ? null : String(l.variationId));
      const data = chunk.map(([, l]) =>
        JSON.stringify({ logistic_type: l.logisticType, user_product_id: l.userProductId })
      );
      await this.sql`
        insert into listing (channel, sku, external_id, variant_id, data)
        select 'mercadolibre', t.sku, t.external_id, t.variant_id, t.data::jsonb
          from unnest(${skus}::text[], ${items}::text[], ${variations}::text[], ${data}::text[])
            as t(sku, external_id, variant_id, data)
        on conflict (channel, sku) do update
          set external_id = excluded.external_id, variant_id = excluded.variant_id, data = excluded.data,
              resolved_at = now()`;
      for (const [sku, listing] of chunk) this.#cache.remember(sku, listing);
    }
  }

  /** Drops a cached listing (MeLi said it no longer exists). */
  async forget(sku: string): Promise<void> {
    this.#cache.forget(sku);
    await this.sql`delete from listing where channel = 'mercadolibre' and sku = ${sku}`;
  }
}
