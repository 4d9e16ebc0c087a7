/**
 * Shopify's side of a resync: read `available` of one SKU at one store's
 * location, and set it with compare-and-set (`inventorySetQuantities` with
 * `changeFromQuantity` = the value just read, under `@idempotent`).
 */
import {
  type ChannelCatalog,
  type ChannelStock,
  type StockRead,
  type StockWrite,
  unresolvedRead,
} from "../../sync/channel.ts";
import type { LocationMap } from "./channel.ts";
import type { ShopifyClient } from "./client.ts";
import { AVAILABLE_AT_LOCATION, SET_AVAILABLE } from "./documents.ts";
import type { ShopifyListings } from "./listings.ts";

interface AvailableAtLocation {
  inventoryItem: {
    inventoryLevel: { quantities: { name: string; quantity: number }[] } | null;
  } | null;
}

interface SetAvailable {
  inventorySetQuantities: {
    inventoryAdjustmentGroup:
      | { id: string; changes: { name: string; quantityAfterChange: number | null }[] }
      | null;
    userErrors: { field: string[] | null; message: string; code: string | null }[];
  } | null;
}

/** Reads and sets Shopify stock for resync. */
export class ShopifyStock implements ChannelStock {
  readonly name = "shopify" as const;
  readonly deltas = true;

  constructor(
    private readonly client: ShopifyClient,
    private readonly listings: ShopifyListings,
    private readonly locations: LocationMap,
    private readonly reason: string,
    /** Every inventory level at the mapped locations, for a resync of `all`. */
    readonly catalog?: ChannelCatalog,
  ) {}

  mappedStores(): string[] {
    return this.locations.stores();
  }

  get showsUnmapped(): boolean {
    return this.locations.hasDefault === true;
  }

  place(tiendaId: string): string | undefined {
    return this.locations.locationFor(tiendaId);
  }

  shows(tiendaId: string): boolean {
    return this.locations.locationFor(tiendaId) !== undefined;
  }

  async read(sku: string, tiendaId: string, signal?: AbortSignal): Promise<StockRead> {
    const locationId = this.locations.locationFor(tiendaId);
    if (!locationId) {
      return { ok: false, reason: "store_unmapped", error: `store ${tiendaId} has no Shopify location` };
    }
    const resolution = await this.listings.resolve(sku, signal);
    if (!resolution.ok) {
      return unresolvedRead(resolution);
    }
    const item = resolution.listing.inventoryItemId;
    const result = await this.client.call<AvailableAtLocation>(
      "AvailableAtLocation",
      AVAILABLE_AT_LOCATION,
      { item, location: locationId },
      signal,
    );
    if (result.kind !== "ok") {
      return {
        ok: false,
        reason: "shopify_read_failed",
        error: result.error,
        transient: result.kind === "retry",
      };
    }
    const level = result.data.inventoryItem?.inventoryLevel;
    if (!level) {
      return {
        ok: false,
        reason: "not_stocked_at_location",
        error: `SKU ${sku} is not stocked at ${locationId}`,
      };
    }
    const quantity = level.quantities.find((q) => q.name === "available")?.quantity ?? 0;
    return { ok: true, quantity, ref: { item, location: locationId } };
  }

  async write(
    read: Extract<StockRead, { ok: true }>,
    to: number,
    reference: string,
    signal?: AbortSignal,
  ): Promise<StockWrite> {
    const { item, location } = read.ref as { item: string; location: string };
    const result = await this.client.call<SetAvailable>("SetAvailable", SET_AVAILABLE, {
      input: {
        name: "available",
        reason: this.reason,
        referenceDocumentUri: reference,
        quantities: [{
          inventoryItemId: item,
          locationId: location,
          quantity: to,
          changeFromQuantity: read.quantity,
        }],
      },
      key: crypto.randomUUID(),
    }, signal);
    if (result.kind !== "ok") return { kind: "error", reason: "shopify_write_failed", error: result.error };
    const payload = result.data.inventorySetQuantities;
    const errors = payload?.userErrors ?? [];
    if (errors.some((e) => e.code === "CHANGE_FROM_QUANTITY_STALE")) return { kind: "stale" };
    if (errors.length > 0) {
      return {
        kind: "error",
        reason: (errors[0].code ?? "user_error").toLowerCase(),
        error: errors.map((e) => `${e.code}: ${e.message}`).join("; "),
      };
    }
    return { kind: "written", quantityAfter: to };
  }
}
