/**
 * The Shopify sandbox's shop: product variants, inventory items, locations and the
 * `available` quantity of every item at every location, seeded from a catalog, plus
 * the business rules of `inventoryAdjustQuantities` / `inventorySetQuantities`
 * (reasons, quantity names, compare-and-set, limits) with Shopify's user-error codes.
 *
 * Model: an open order's units are `committed` (taken off `available` when the order
 * is placed, put back by a restocking cancellation or refund; fulfillment is not
 * modeled), nothing is reserved or incoming, so `on_hand` is `available` plus
 * `committed` and the other quantity names read 0. Every item is stocked at every
 * location (a store missing from the catalog stock starts at 0).
 */
import { INVENTORY_REASONS as SHOPIFY_INVENTORY_REASONS } from "../../model/shopify_reasons.ts";
import type { Catalog } from "../catalog.ts";
import { enumValueDescription } from "./schema.ts";

/**
 * Reasons Shopify accepts for inventory changes. The schema types `reason` as a bare
 * String; this list is the documented one ("possible reasons", shopify.dev
 * inventory-management-apps quantities-states), as also listed by CData's Shopify
 * connector docs. There is no `sale`.
 */
export const INVENTORY_REASONS: readonly string[] = SHOPIFY_INVENTORY_REASONS;

/** Quantity names `inventoryAdjustQuantities` accepts (on_hand and committed are derived). */
export const ADJUSTABLE_QUANTITY_NAMES: readonly string[] = [
  "available",
  "damaged",
  "incoming",
  "quality_control",
  "reserved",
  "safety_stock",
];

/** Quantity names `inventorySetQuantities` accepts (schema: "available or on_hand"). */
export const SETTABLE_QUANTITY_NAMES: readonly string[] = ["available", "on_hand"];

/** Every quantity name an inventory level reports. */
export const QUANTITY_NAMES: readonly string[] = [
  "available",
  "committed",
  "damaged",
  "incoming",
  "on_hand",
  "quality_control",
  "reserved",
  "safety_stock",
];

/** Shopify's limits on a resulting quantity (from the user-error code descriptions). */
const ADJUST_LIMIT = 2_000_000_000;
const SET_LIMIT = 1_000_000_000;

/** A location, one per catalog store. */
export interface SandboxLocation {
  id: string;
  legacyId: number;
  name: string;
  tiendaId: string;
  isActive: boolean;
}

/** A product variant (one per catalog product) and its inventory item. */
export interface SandboxVariant {
  id: string;
  legacyId: number;
  sku: string;
  /** Catalog product title; the variant itself is Shopify's "Default Title". */
  productTitle: string;
  productoId: string;
  inventoryItemId: string;
  inventoryItemLegacyId: number;
}

/** A user error as the payloads carry it. */
export interface UserErrorRecord {
  field: string[] | null;
  message: string;
  code: string;
}

/** One change of an adjustment group. */
export interface ChangeRecord {
  name: string;
  delta: number;
  quantityAfterChange: number;
  inventoryItemId: string;
  locationId: string;
  ledgerDocumentUri: string | null;
}

/** An applied adjustment group. */
export interface AdjustmentGroupRecord {
  id: string;
  createdAt: string;
  reason: string;
  referenceDocumentUri: string | null;
  changes: ChangeRecord[];
}

/** What a mutation produced: a group, or user errors and nothing applied. */
export interface MutationRecord {
  group: AdjustmentGroupRecord | null;
  userErrors: UserErrorRecord[];
}

/** Coerced `InventoryAdjustQuantitiesInput`. */
export interface AdjustInput {
  reason: string;
  name: string;
  referenceDocumentUri?: string | null;
  changes: {
    inventoryItemId: string;
    locationId: string;
    delta: number;
    changeFromQuantity?: number | null;
    ledgerDocumentUri?: string | null;
  }[];
}

/** Coerced `InventorySetQuantitiesInput`. */
export interface SetInput {
  reason: string;
  name: string;
  referenceDocumentUri?: string | null;
  quantities: {
    inventoryItemId: string;
    locationId: string;
    quantity: number;
    changeFromQuantity?: number | null;
  }[];
}

/** A request the sandbox cannot answer truthfully (not a Shopify error). */
export class SandboxUnsupportedError extends Error {
  override name = "SandboxUnsupportedError";
}

// Legacy ids look like Shopify's (large integers) and stay stable for a catalog.
const LOCATION_BASE = 71_000_000_000;
const VARIANT_BASE = 42_000_000_000;
const ITEM_BASE = 44_000_000_000;

function adjustError(code: string, field: (string | number)[]): UserErrorRecord {
  return {
    code,
    field: field.map(String),
    message: enumValueDescription("InventoryAdjustQuantitiesUserErrorCode", code),
  };
}

function setError(code: string, field: (string | number)[]): UserErrorRecord {
  return {
    code,
    field: field.map(String),
    message: enumValueDescription("InventorySetQuantitiesUserErrorCode", code),
  };
}

/**
 * "Valid URI with scheme and content. For GID format, all components (app, entity,
 * id) must be present." (InventoryAdjustQuantitiesInput.referenceDocumentUri)
 */
function validDocumentUri(uri: string): boolean {
  if (uri.startsWith("gid://")) return /^gid:\/\/[^/\s]+\/[^/\s]+\/\S+$/.test(uri);
  return /^[a-z][a-z0-9+.-]*:\S+$/i.test(uri);
}

/** The shop's inventory state. */
export class ShopifyInventory {
  readonly locations: readonly SandboxLocation[];
  #variants: SandboxVariant[];
  /** Variants created so far (catalog and later), so a re-created variant gets new gids as in Shopify. */
  #created: number;
  #locationById = new Map<string, SandboxLocation>();
  #variantById = new Map<string, SandboxVariant>();
  #variantByItem = new Map<string, SandboxVariant>();
  /** inventoryItemId → locationId → available. */
  #available = new Map<string, Map<string, { quantity: number; updatedAt: string }>>();
  /** `${inventoryItemId}|${locationId}` → units of open orders (committed). */
  #committed = new Map<string, number>();
  #groupSeq = 0;

  constructor(catalog: Catalog, readonly now: () => number = Date.now) {
    const seeded = new Date(now()).toISOString();
    this.locations = catalog.stores.map((s, i) => ({
      id: `gid://shopify/Location/${LOCATION_BASE + i + 1}`,
      legacyId: LOCATION_BASE + i + 1,
      name: s.name,
      tiendaId: s.tienda_id,
      isActive: true,
    }));
    this.#variants = catalog.products.map((p, i) => ({
      id: `gid://shopify/ProductVariant/${VARIANT_BASE + i + 1}`,
      legacyId: VARIANT_BASE + i + 1,
      sku: p.sku,
      productTitle: p.title,
      productoId: p.producto_id,
      inventoryItemId: `gid://shopify/InventoryItem/${ITEM_BASE + i + 1}`,
      inventoryItemLegacyId: ITEM_BASE + i + 1,
    }));
    this.#created = this.#variants.length;
    for (const l of this.locations) this.#locationById.set(l.id, l);
    catalog.products.forEach((p, i) => {
      const v = this.#variants[i];
      this.#variantById.set(v.id, v);
      this.#variantByItem.set(v.inventoryItemId, v);
      this.#available.set(
        v.inventoryItemId,
        new Map(this.locations.map((l) => [l.id, { quantity: p.stock[l.tiendaId] ?? 0, updatedAt: seeded }])),
      );
    });
  }

  /** The shop's variants now (one per catalog product, less deleted ones, plus created ones). */
  get variants(): readonly SandboxVariant[] {
    return this.#variants;
  }

  /**
   * A merchant deletes the variant with this SKU (the first, if several) in the admin:
   * its inventory item goes with it, so later writes to that item get
   * INVALID_INVENTORY_ITEM and searches no longer find the SKU. Undefined if none.
   */
  deleteVariant(sku: string): SandboxVariant | undefined {
    const index = this.#variants.findIndex((v) => v.sku === sku);
    if (index < 0) return undefined;
    const [v] = this.#variants.splice(index, 1);
    this.#variantById.delete(v.id);
    this.#variantByItem.delete(v.inventoryItemId);
    this.#available.delete(v.inventoryItemId);
    return v;
  }

  /**
   * A merchant creates a variant with this SKU: new variant and inventory item gids
   * (Shopify never reuses one), stocked at every location (`available` per tienda_id, else 0).
   */
  createVariant(input: {
    sku: string;
    productoId?: string;
    title?: string;
    available?: Record<string, number>;
  }): SandboxVariant {
    const n = ++this.#created;
    const v: SandboxVariant = {
      id: `gid://shopify/ProductVariant/${VARIANT_BASE + n}`,
      legacyId: VARIANT_BASE + n,
      sku: input.sku,
      productTitle: input.title ?? input.sku,
      productoId: input.productoId ?? crypto.randomUUID(),
      inventoryItemId: `gid://shopify/InventoryItem/${ITEM_BASE + n}`,
      inventoryItemLegacyId: ITEM_BASE + n,
    };
    const at = new Date(this.now()).toISOString();
    this.#variants.push(v);
    this.#variantById.set(v.id, v);
    this.#variantByItem.set(v.inventoryItemId, v);
    this.#available.set(
      v.inventoryItemId,
      new Map(
        this.locations.map((l) => [l.id, { quantity: input.available?.[l.tiendaId] ?? 0, updatedAt: at }]),
      ),
    );
    return v;
  }

  /** The location with this gid, if any. */
  location(id: string): SandboxLocation | undefined {
    return this.#locationById.get(id);
  }

  /** The location of a catalog store, if any. */
  locationOfStore(tiendaId: string): SandboxLocation | undefined {
    return this.locations.find((l) => l.tiendaId === tiendaId);
  }

  /** The variant with this gid, if any. */
  variant(id: string): SandboxVariant | undefined {
    return this.#variantById.get(id);
  }

  /** The variant owning this inventory item gid, if any. */
  variantOfItem(inventoryItemId: string): SandboxVariant | undefined {
    return this.#variantByItem.get(inventoryItemId);
  }

  /** Available quantity of an item at a location (undefined if either is unknown). */
  available(inventoryItemId: string, locationId: string): number | undefined {
    return this.#available.get(inventoryItemId)?.get(locationId)?.quantity;
  }

  /** When the level last changed (ISO), if it exists. */
  updatedAt(inventoryItemId: string, locationId: string): string | undefined {
    return this.#available.get(inventoryItemId)?.get(locationId)?.updatedAt;
  }

  /** Units of open orders at a level (`committed`). */
  committed(inventoryItemId: string, locationId: string): number {
    return this.#committed.get(`${inventoryItemId}|${locationId}`) ?? 0;
  }

  /** A quantity by name under the sandbox model (on_hand = available + committed, others 0). */
  quantity(inventoryItemId: string, locationId: string, name: string): number | undefined {
    const available = this.available(inventoryItemId, locationId);
    if (available === undefined) return undefined;
    const committed = this.committed(inventoryItemId, locationId);
    if (name === "available") return available;
    if (name === "committed") return committed;
    return name === "on_hand" ? available + committed : 0;
  }

  /**
   * Moves units between `available` and `committed`, as Shopify does when an order is placed
   * (`units` > 0: available − units, committed + units) or a restocking cancellation or refund
   * puts them back (`units` < 0). `on_hand` does not move. False if the item or location is gone.
   */
  commitToOrder(inventoryItemId: string, locationId: string, units: number): boolean {
    const level = this.#available.get(inventoryItemId)?.get(locationId);
    if (!level) return false;
    const key = `${inventoryItemId}|${locationId}`;
    const committed = (this.#committed.get(key) ?? 0) + units;
    if (committed === 0) this.#committed.delete(key);
    else this.#committed.set(key, committed);
    level.quantity -= units;
    level.updatedAt = new Date(this.now()).toISOString();
    return true;
  }

  /** Sum of available over all locations (ProductVariant.inventoryQuantity). */
  totalAvailable(inventoryItemId: string): number {
    let total = 0;
    for (const level of this.#available.get(inventoryItemId)?.values() ?? []) total += level.quantity;
    return total;
  }

  #commit(
    reason: string,
    referenceDocumentUri: string | null,
    deltas: ChangeRecord[],
  ): AdjustmentGroupRecord {
    const at = new Date(this.now()).toISOString();
    for (const c of deltas) {
      if (c.name === "available") {
        this.#available.get(c.inventoryItemId)!.set(c.locationId, {
          quantity: c.quantityAfterChange,
          updatedAt: at,
        });
      }
    }
    this.#groupSeq++;
    return {
      id: `gid://shopify/InventoryAdjustmentGroup/${90_000_000_000 + this.#groupSeq}`,
      createdAt: at,
      reason,
      referenceDocumentUri,
      changes: deltas,
    };
  }

  /** Each `available` change also moves `on_hand`, as Shopify reports both. */
  #withOnHand(changes: ChangeRecord[]): ChangeRecord[] {
    return changes.flatMap((c) => [c, {
      ...c,
      name: "on_hand",
      quantityAfterChange: c.quantityAfterChange + this.committed(c.inventoryItemId, c.locationId),
    }]);
  }

  /**
   * Applies `inventoryAdjustQuantities`: all changes or none. User errors name the
   * offending input (`["input","changes","3","inventoryItemId"]`).
   */
  adjust(input: AdjustInput): MutationRecord {
    const errors: UserErrorRecord[] = [];
    if (!INVENTORY_REASONS.includes(input.reason)) {
      errors.push(adjustError("INVALID_REASON", ["input", "reason"]));
    }
    if (!ADJUSTABLE_QUANTITY_NAMES.includes(input.name)) {
      errors.push(adjustError("INVALID_QUANTITY_NAME", ["input", "name"]));
    } else if (input.name !== "available") {
      throw new SandboxUnsupportedError(
        `the sandbox only models the "available" quantity, not "${input.name}"`,
      );
    }
    const ref = input.referenceDocumentUri ?? null;
    if (ref !== null && !validDocumentUri(ref)) {
      errors.push(adjustError("INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"]));
    }
    const running = new Map<string, number>();
    const changes: ChangeRecord[] = [];
    input.changes.forEach((change, i) => {
      const at = ["input", "changes", i];
      const item = this.variantOfItem(change.inventoryItemId);
      const location = this.location(change.locationId);
      if (!item) errors.push(adjustError("INVALID_INVENTORY_ITEM", [...at, "inventoryItemId"]));
      if (!location) errors.push(adjustError("INVALID_LOCATION", [...at, "locationId"]));
      if (change.ledgerDocumentUri != null && input.name === "available") {
        errors.push(adjustError("INVALID_AVAILABLE_DOCUMENT", [...at, "ledgerDocumentUri"]));
      }
      if (!item || !location) return;
      const key = `${change.inventoryItemId}|${change.locationId}`;
      const before = running.get(key) ?? this.available(change.inventoryItemId, change.locationId)!;
      if (change.changeFromQuantity != null && change.changeFromQuantity !== before) {
        errors.push(adjustError("CHANGE_FROM_QUANTITY_STALE", [...at, "changeFromQuantity"]));
      }
      const after = before + change.delta;
      if (after > ADJUST_LIMIT) errors.push(adjustError("INVALID_QUANTITY_TOO_HIGH", [...at, "delta"]));
      if (after < -ADJUST_LIMIT) errors.push(adjustError("INVALID_QUANTITY_TOO_LOW", [...at, "delta"]));
      running.set(key, after);
      if (change.delta !== 0) {
        changes.push({
          name: "available",
          delta: change.delta,
          quantityAfterChange: after,
          inventoryItemId: change.inventoryItemId,
          locationId: change.locationId,
          ledgerDocumentUri: null,
        });
      }
    });
    if (errors.length) return { group: null, userErrors: errors };
    if (!changes.length) return { group: null, userErrors: [] };
    return { group: this.#commit(input.reason, ref, this.#withOnHand(changes)), userErrors: [] };
  }

  /**
   * Applies `inventorySetQuantities` with compare-and-set: a `changeFromQuantity`
   * that is not the current quantity fails with CHANGE_FROM_QUANTITY_STALE.
   */
  set(input: SetInput): MutationRecord {
    const errors: UserErrorRecord[] = [];
    if (!INVENTORY_REASONS.includes(input.reason)) {
      errors.push(setError("INVALID_REASON", ["input", "reason"]));
    }
    if (!SETTABLE_QUANTITY_NAMES.includes(input.name)) {
      errors.push(setError("INVALID_NAME", ["input", "name"]));
    }
    const ref = input.referenceDocumentUri ?? null;
    if (ref !== null && !validDocumentUri(ref)) {
      errors.push(setError("INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"]));
    }
    const seen = new Set<string>();
    const changes: ChangeRecord[] = [];
    input.quantities.forEach((q, i) => {
      const at = ["input", "quantities", i];
      const item = this.variantOfItem(q.inventoryItemId);
      const location = this.location(q.locationId);
      if (!item) errors.push(setError("INVALID_INVENTORY_ITEM", [...at, "inventoryItemId"]));
      if (!location) errors.push(setError("INVALID_LOCATION", [...at, "locationId"]));
      if (q.quantity < 0) errors.push(setError("INVALID_QUANTITY_NEGATIVE", [...at, "quantity"]));
      if (q.quantity > SET_LIMIT) errors.push(setError("INVALID_QUANTITY_TOO_HIGH", [...at, "quantity"]));
      const key = `${q.inventoryItemId}|${q.locationId}`;
      if (seen.has(key)) errors.push(setError("NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR", [...at]));
      seen.add(key);
      if (!item || !location) return;
      // on_hand = available + committed: setting on_hand moves available by the same delta.
      const before = this.quantity(q.inventoryItemId, q.locationId, input.name)!;
      if (q.changeFromQuantity != null && q.changeFromQuantity !== before) {
        errors.push(setError("CHANGE_FROM_QUANTITY_STALE", [...at, "changeFromQuantity"]));
      }
      if (q.quantity !== before) {
        const available = this.available(q.inventoryItemId, q.locationId)!;
        changes.push({
          name: "available",
          delta: q.quantity - before,
          quantityAfterChange: available + q.quantity - before,
          inventoryItemId: q.inventoryItemId,
          locationId: q.locationId,
          ledgerDocumentUri: null,
        });
      }
    });
    if (errors.length) return { group: null, userErrors: errors };
    if (!changes.length) return { group: null, userErrors: [] };
    return { group: this.#commit(input.reason, ref, this.#withOnHand(changes)), userErrors: [] };
  }

  /** Everything, for `GET /__sandbox/state` and tests. */
  snapshot(): {
    locations: SandboxLocation[];
    variants: (SandboxVariant & { available: Record<string, number>; committed: Record<string, number> })[];
  } {
    return {
      locations: [...this.locations],
      variants: this.variants.map((v) => ({
        ...v,
        available: Object.fromEntries(
          this.locations.map((l) => [l.id, this.available(v.inventoryItemId, l.id)!]),
        ),
        committed: Object.fromEntries(
          this.locations.map((l) => [l.id, this.committed(v.inventoryItemId, l.id)]),
        ),
      })),
    };
  }
}
