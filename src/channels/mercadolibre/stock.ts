/**
 * MercadoLibre's side of a resync. Through `/items` (MELI_TIENDA_ID): read a listing's
 * `available_quantity` and set it with an absolute PUT (no compare-and-set there), under
 * the same per-listing lock the live channel uses, checking the answer.
 *
 * With MELI_LOCATIONS each mapped store is a stock location of the SKU's user product:
 * the read is `GET /user-products/{id}/stock` (the store's location's quantity and the
 * `x-version`), the write a `PUT /user-products/{id}/stock/type/…` listing that one
 * location with the version read — MeLi changes only the locations a write lists, so the
 * other stores' stock stays as it is — and a 409 (the stock moved since the read) is
 * `stale`: resync reads and computes the line again.
 */
import type { MeliLocation } from "../../config.ts";
import {
  type ChannelCatalog,
  type ChannelStock,
  type StockRead,
  type StockWrite,
  unresolvedRead,
} from "../../sync/channel.ts";
import { type ListingLocks, LockUnavailableError } from "../../sync/listing_lock.ts";
import type { MeliClient } from "./client.ts";
import type { MeliItem, MeliListing, MeliListings } from "./listings.ts";
import {
  describeLocation,
  type MeliLocationRef,
  onlyInFull,
  quantityAt,
  readUserProductStock,
  writeUserProductStock,
} from "./user_products.ts";

/** Reads and sets MercadoLibre stock for resync. */
export class MeliStock implements ChannelStock {
  readonly name = "mercadolibre" as const;
  /**
   * MELI_LOCATIONS: every store is its own place (its location), so a whole-catalog resync
   * pairs each store's POS stock with that store's location. Without it, undefined: MeLi's
   * one quantity is the mirrored store's.
   */
  readonly place?: (tiendaId: string) => string | undefined;

  constructor(
    private readonly client: MeliClient,
    private readonly listings: MeliListings,
    private readonly locks: ListingLocks,
    /** The store MeLi mirrors; undefined in delta mode without MELI_TIENDA_ID, and with MELI_LOCATIONS. */
    private readonly tiendaId: string | undefined,
    /** Delta mode: live sales are read-subtract-write, so changes not applied yet count. */
    readonly deltas = false,
    /** The seller's whole catalog, for a resync of `all`. */
    readonly catalog?: ChannelCatalog,
    /** MELI_LOCATIONS: the mapped stores' stock locations (then `tiendaId` is unset). */
    private readonly locations?: Readonly<Record<string, MeliLocation>>,
  ) {
    if (locations) this.place = (tiendaId) => locations[tiendaId] ? tiendaId : undefined;
  }

  mappedStores(): string[] {
    if (this.locations) return Object.keys(this.locations);
    return this.tiendaId ? [this.tiendaId] : [];
  }

  shows(tiendaId: string): boolean {
    return this.locations ? this.locations[tiendaId] !== undefined : tiendaId === this.tiendaId;
  }

  async read(sku: string, tiendaId: string, signal?: AbortSignal): Promise<StockRead> {
    if (!this.shows(tiendaId)) {
      const shown = this.locations
        ? `the stores of MELI_LOCATIONS (${Object.keys(this.locations).join(", ")})`
        : this.tiendaId ?? "no single store (delta mode)";
      return {
        ok: false,
        reason: "store_not_on_meli",
        error: `MercadoLibre shows ${shown}, not ${tiendaId}`,
      };
    }
    const resolution = await this.listings.resolve(sku, signal);
    if (!resolution.ok) {
      return unresolvedRead(resolution);
    }
    const listing = resolution.listing;
    if (this.locations) return await this.#readLocation(sku, listing, tiendaId, signal);
    if (listing.logisticType === "fulfillment") {
      return {
        ok: false,
        reason: "fulfillment_listing",
        error: "MercadoLibre Full manages this listing's stock",
      };
    }
    const got = await this.client.request<MeliItem>("GET", `/items/${encodeURIComponent(listing.itemId)}`, {
      operation: "get_item",
      signal,
    });
    if (got.kind !== "ok") {
      return { ok: false, reason: "meli_read_failed", error: got.error, transient: got.kind !== "rejected" };
    }
    const quantity = listing.variationId === null
      ? got.data.available_quantity
      : got.data.variations?.find((v) => v.id === listing.variationId)?.available_quantity;
    if (quantity === undefined) {
      await this.listings.forget(sku);
      return {
        ok: false,
        reason: "listing_gone",
        error: `variation ${listing.variationId} no longer exists`,
      };
    }
    return { ok: true, quantity, ref: listing };
  }

  /**
   * MELI_LOCATIONS: the quantity at the store's location of the SKU's user product, with the
   * version a write must carry. Full (stock only in `meli_facility`) is MercadoLibre's, as the
   * live channel says; a listing in Full that also holds the seller's stock is compared there.
   */
  async #readLocation(
    sku: string,
    listing: MeliListing,
    tiendaId: string,
    signal: AbortSignal | undefined,
  ): Promise<StockRead> {
    const upId = listing.userProductId;
    if (!upId) {
      return {
        ok: false,
        reason: "user_product_unknown",
        error:
          `MercadoLibre names no user_product_id for ${listing.itemId}: its stock locations cannot be read`,
      };
    }
    const got = await readUserProductStock(this.client, upId, signal);
    if (got.kind !== "ok") {
      if (got.kind === "rejected" && got.status === 404) {
        // The cached listing names a user product MeLi no longer has: resolve the SKU afresh next time.
        await this.listings.forget(sku);
        return { ok: false, reason: "listing_gone", error: got.error };
      }
      return { ok: false, reason: "meli_read_failed", error: got.error, transient: got.kind !== "rejected" };
    }
    if (onlyInFull(got.data)) {
      return {
        ok: false,
        reason: "fulfillment_listing",
        error: `user product ${upId} is stocked in MercadoLibre Full (meli_facility) only: MercadoLibre ` +
          "manages its stock",
      };
    }
    const location = this.locations![tiendaId];
    const ref: MeliLocationRef = {
      itemId: listing.itemId,
      variationId: listing.variationId,
      userProductId: upId,
      tiendaId,
      location,
      version: got.data.version,
    };
    return { ok: true, quantity: quantityAt(got.data, location), ref };
  }

  async write(
    read: Extract<StockRead, { ok: true }>,
    to: number,
    _reference: string,
    signal?: AbortSignal,
    retarget?: () => Promise<number | undefined>,
  ): Promise<StockWrite> {
    const ref = read.ref as MeliListing | MeliLocationRef;
    // The live channel's lock key: the user product when known (its items share one stock).
    const key = ref.userProductId ??
      (ref.variationId === null ? ref.itemId : `${ref.itemId}/${ref.variationId}`);
    try {
      return await this.locks.with(
        key,
        () =>
          "location" in ref
            ? this.#writeLocation(ref, to, signal, retarget)
            : this.#writeItem(ref, to, signal, retarget),
      );
    } catch (error) {
      // A live batch holds the listing: look again later rather than fail the job.
      if (error instanceof LockUnavailableError) return { kind: "stale" };
      throw error;
    }
  }

  /** Through `/items`, under the listing's lock: absolute, so the POS is asked again first. */
  async #writeItem(
    listing: MeliListing,
    to: number,
    signal: AbortSignal | undefined,
    retarget: (() => Promise<number | undefined>) | undefined,
  ): Promise<StockWrite> {
    // The live channel reads the POS under this lock too: asked here, a sale that moved
    // the POS after the resync's read cannot be overwritten by the older value.
    const value = retarget ? await retarget() : to;
    if (value === undefined) return { kind: "stale" };
    const path = listing.variationId === null
      ? `/items/${encodeURIComponent(listing.itemId)}`
      : `/items/${encodeURIComponent(listing.itemId)}/variations/${listing.variationId}`;
    const put = await this.client.request<MeliItem>("PUT", path, {
      operation: listing.variationId === null ? "put_item" : "put_variation",
      body: { available_quantity: value },
      signal,
    });
    if (put.kind !== "ok") return { kind: "error", reason: `meli_${put.kind}`, error: put.error };
    const after = listing.variationId !== null && put.data.variations
      ? put.data.variations.find((v) => v.id === listing.variationId)?.available_quantity
      : put.data.available_quantity;
    if (after !== value) {
      return {
        kind: "error",
        reason: "not_applied",
        error: `MercadoLibre answered ${put.status} but shows ${after ?? "(missing)"}, not ${value}`,
      };
    }
    return { kind: "written", quantityAfter: value };
  }

  /**
   * MELI_LOCATIONS, under the user product's lock: the one location, with the version read.
   * The POS is asked again here as for `/items` (a sale after the resync's read is not
   * undone); the version makes anything that moved MeLi's stock since the read a 409.
   */
  async #writeLocation(
    ref: MeliLocationRef,
    to: number,
    signal: AbortSignal | undefined,
    retarget: (() => Promise<number | undefined>) | undefined,
  ): Promise<StockWrite> {
    const value = retarget ? await retarget() : to;
    if (value === undefined) return { kind: "stale" };
    const put = await writeUserProductStock(
      this.client,
      ref.userProductId,
      ref.version,
      [{ location: ref.location, quantity: value }],
      signal,
    );
    // Nothing was applied: resync reads the location (and its new version) and computes again.
    if (put.kind === "conflict") return { kind: "stale" };
    if (put.kind !== "ok") return { kind: "error", reason: `meli_${put.kind}`, error: put.error };
    const after = quantityAt({ locations: put.data.locations ?? [] }, ref.location);
    if (after !== value) {
      return {
        kind: "error",
        reason: "not_applied",
        error:
          `MercadoLibre answered ${put.status} but user product ${ref.userProductId} shows ${after} at ` +
          `${describeLocation(ref.location)}, not ${value}`,
      };
    }
    return { kind: "written", quantityAfter: value };
  }
}
