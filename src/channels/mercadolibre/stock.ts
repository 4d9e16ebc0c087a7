/**
 * MercadoLibre's side of a resync: read a listing's `available_quantity` and
 * set it with an absolute PUT (MeLi has no compare-and-set), under the same
 * per-listing lock the live channel uses, checking the answer.
 */
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

/** Reads and sets MercadoLibre stock for resync. */
export class MeliStock implements ChannelStock {
  readonly name = "mercadolibre" as const;

  constructor(
    private readonly client: MeliClient,
    private readonly listings: MeliListings,
    private readonly locks: ListingLocks,
    /** The store MeLi mirrors; undefined in delta mode without MELI_TIENDA_ID. */
    private readonly tiendaId: string | undefined,
    /** Delta mode: live sales are read-subtract-write, so changes not applied yet count. */
    readonly deltas = false,
    /** The seller's whole catalog, for a resync of `all`. */
    readonly catalog?: ChannelCatalog,
  ) {}

  mappedStores(): string[] {
    return this.tiendaId ? [this.tiendaId] : [];
  }

  shows(tiendaId: string): boolean {
    return tiendaId === this.tiendaId;
  }

  async read(sku: string, tiendaId: string, signal?: AbortSignal): Promise<StockRead> {
    if (tiendaId !== this.tiendaId) {
      return {
        ok: false,
        reason: "store_not_on_meli",
        error: `MercadoLibre shows ${this.tiendaId ?? "no single store (delta mode)"}, not ${tiendaId}`,
      };
    }
    const resolution = await this.listings.resolve(sku, signal);
    if (!resolution.ok) {
      return unresolvedRead(resolution);
    }
    const listing = resolution.listing;
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

  async write(
    read: Extract<StockRead, { ok: true }>,
    to: number,
    _reference: string,
    signal?: AbortSignal,
    retarget?: () => Promise<number | undefined>,
  ): Promise<StockWrite> {
    const listing = read.ref as MeliListing;
    // The live channel's lock key: the user product when known (its items share one stock).
    const key = listing.userProductId ??
      (listing.variationId === null ? listing.itemId : `${listing.itemId}/${listing.variationId}`);
    const path = listing.variationId === null
      ? `/items/${encodeURIComponent(listing.itemId)}`
      : `/items/${encodeURIComponent(listing.itemId)}/variations/${listing.variationId}`;
    try {
      return await this.#locked(key, path, listing, to, signal, retarget);
    } catch (error) {
      // A live batch holds the listing: look again later rather than fail the job.
      if (error instanceof LockUnavailableError) return { kind: "stale" };
      throw error;
    }
  }

  #locked(
    key: string,
    path: string,
    listing: MeliListing,
    to: number,
    signal: AbortSignal | undefined,
    retarget: (() => Promise<number | undefined>) | undefined,
  ): Promise<StockWrite> {
    return this.locks.with(key, async (): Promise<StockWrite> => {
      // The live channel reads the POS under this lock too: asked here, a sale that moved
      // the POS after the resync's read cannot be overwritten by the older value.
      const value = retarget ? await retarget() : to;
      if (value === undefined) return { kind: "stale" };
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
    });
  }
}
