/**
 * User products (UP) of the MercadoLibre sandbox and their stock locations, as MeLi's
 * "User Products", "Stock distribuido" and "Stock multi origen" pages describe them:
 *
 * - a user product is one physical product; one or more items (or one variation of an
 *   item) sell it, and they share its stock: a stock write to one item is copied to its
 *   siblings (MeLi does it asynchronously, the sandbox at once);
 * - its stock lives in locations: `selling_address` (the seller's one origin),
 *   `meli_facility` (MercadoLibre's Full warehouses: never writable through the API)
 *   or, for a multi-origin seller (`warehouse_management` tag), one `seller_warehouse`
 *   per store (`store_id`, `network_node_id`). Items show the locations' total;
 * - `GET /user-products/{id}/stock` answers the locations with an `x-version` header;
 *   `PUT /user-products/{id}/stock/type/{selling_address|seller_warehouse}` must send it
 *   back: missing is 400, stale is 409 ("Version mismatch"), success bumps it.
 */
import { cause, invalidBody, invalidFields, type MeliCause, meliError, type MeliFailure } from "./errors.ts";
import type { ItemState, VariationState } from "./items.ts";

/** MeLi's stock location types. */
export const LOCATION_TYPES = ["selling_address", "meli_facility", "seller_warehouse"] as const;
/** A stock location type. */
export type LocationType = typeof LOCATION_TYPES[number];

/** One stock location of a user product. */
export interface StockLocation {
  type: LocationType;
  quantity: number;
  /** seller_warehouse only. */
  storeId?: string;
  networkNodeId?: string;
}

/** A multi-origin seller's store (depósito) configured as a stock location. */
export interface SellerWarehouse {
  storeId: string;
  networkNodeId: string;
  /** The catalog store whose stock seeds this warehouse. */
  tiendaId: string;
}

/** An item (or one variation of it) that sells a user product. */
export interface UserProductMember {
  item: ItemState;
  variation: VariationState | null;
}

/** A user product in the store. */
export interface UserProductState {
  id: string;
  sellerId: number;
  /** `x-version`: bumped by every change to the locations. */
  version: number;
  locations: StockLocation[];
  members: UserProductMember[];
}

/** The total the items of a user product show. */
export function totalOf(up: UserProductState): number {
  return up.locations.reduce((s, l) => s + l.quantity, 0);
}

/** The body of `GET /user-products/{id}/stock` (and of a successful PUT). */
export function renderStock(up: UserProductState): Record<string, unknown> {
  return {
    locations: up.locations.map((l) =>
      l.type === "seller_warehouse"
        ? { type: l.type, network_node_id: l.networkNodeId, store_id: l.storeId, quantity: l.quantity }
        : { type: l.type, quantity: l.quantity }
    ),
    user_id: up.sellerId,
    id: up.id,
  };
}

/**
 * Applies a MeLi-side change of the total (a sale, a seller edit on the site): a
 * decrease is taken from the fullest locations first (what MeLi does for an order), an
 * increase goes to the first location.
 */
export function changeTotal(up: UserProductState, total: number): void {
  let delta = total - totalOf(up);
  if (delta > 0) up.locations[0].quantity += delta;
  while (delta < 0) {
    const fullest = up.locations.reduce((a, b) => b.quantity > a.quantity ? b : a);
    if (fullest.quantity === 0) break;
    const take = Math.min(fullest.quantity, -delta);
    fullest.quantity -= take;
    delta += take;
  }
  up.version++;
}

/** A validated stock write, not applied yet. */
export interface StockWrite {
  /** Per location: the type and, for a warehouse, its store; the quantity to set. */
  sets: { type: LocationType; storeId?: string; quantity: number }[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function badQuantity(ref: string, q: unknown): MeliCause {
  return cause(
    "stock.quantity.invalid",
    `${ref}.quantity must be an integer greater than or equal to 0, got ${JSON.stringify(q)}`,
    [`${ref}.quantity`],
    "stock",
  );
}

function isQuantity(q: unknown): q is number {
  return typeof q === "number" && Number.isInteger(q) && q >= 0;
}

function invalid(status: number, error: string, message: string, causes: MeliCause[] = []): MeliFailure {
  return { status, body: meliError(status, error, message, causes), invalid: true };
}

/** The `x-version` header as MeLi reads it: required, an integer (long). */
export function parseVersion(header: string | null): number | MeliFailure {
  if (header === null || header.trim() === "") return invalid(400, "bad_request", "Missing X-Version header");
  if (!/^\d+$/.test(header.trim())) {
    return invalid(400, "bad_request", `Invalid X-Version header ${JSON.stringify(header)}: a number`);
  }
  return Number(header.trim());
}

/**
 * Validates `PUT /user-products/{id}/stock/type/{type}` against the user product and the
 * seller: the type (Full's `meli_facility` is never writable), the body, the stores.
 */
export function parseStockWrite(
  up: UserProductState,
  type: string,
  body: unknown,
  warehouses: readonly SellerWarehouse[] | null,
): StockWrite | MeliFailure {
  if (!(LOCATION_TYPES as readonly string[]).includes(type)) {
    return invalid(
      400,
      "bad_request",
      `Invalid stock location type ${JSON.stringify(type)}: one of selling_address, seller_warehouse`,
    );
  }
  if (type === "meli_facility") {
    return invalid(
      400,
      "field_not_updatable",
      `The stock of ${up.id} in meli_facility is managed by Mercado Libre (Full) and cannot be modified`,
    );
  }
  if (!isObject(body)) return invalidBody(`PUT /user-products/{id}/stock/type/${type}`);
  if (type === "selling_address") {
    if (warehouses) {
      return invalid(
        400,
        "bad_request",
        "The seller uses multi-origin stock (warehouse_management): update seller_warehouse locations",
      );
    }
    if (!up.locations.some((l) => l.type === "selling_address")) {
      return invalid(400, "bad_request", `User product ${up.id} has no selling_address stock location`);
    }
    const extra = Object.keys(body).filter((k) => k !== "quantity");
    if (extra.length > 0) return invalidFields(extra);
    if (!isQuantity(body.quantity)) {
      return invalid(400, "validation_error", "Validation error", [badQuantity("body", body.quantity)]);
    }
    return { sets: [{ type: "selling_address", quantity: body.quantity }] };
  }
  if (!warehouses) {
    return invalid(
      400,
      "bad_request",
      "The seller is not enabled for multi-origin stock (warehouse_management): no seller_warehouse",
    );
  }
  const extra = Object.keys(body).filter((k) => k !== "locations");
  if (extra.length > 0) return invalidFields(extra);
  if (!Array.isArray(body.locations) || body.locations.length === 0) {
    return invalid(400, "bad_request", "store cannot be null or empty");
  }
  const causes: MeliCause[] = [];
  const sets: StockWrite["sets"] = [];
  for (const [i, entry] of body.locations.entries()) {
    const ref = `locations[${i}]`;
    if (!isObject(entry)) {
      causes.push(cause("stock.location.invalid", `${ref} must be an object`, [ref], "stock"));
      continue;
    }
    const extraKeys = Object.keys(entry).filter((k) =>
      !["store_id", "network_node_id", "quantity"].includes(k)
    );
    if (extraKeys.length > 0) return invalidFields(extraKeys.map((k) => `${ref}.${k}`));
    const storeId = entry.store_id;
    if (typeof storeId !== "string" || storeId.trim() === "") {
      return invalid(400, "bad_request", "store cannot be null or empty");
    }
    if (!warehouses.some((w) => w.storeId === storeId)) {
      return invalid(400, "bad_request", `store not found: ${storeId}`);
    }
    if (sets.some((s) => s.storeId === storeId)) {
      causes.push(cause("stock.location.repeated", `${ref}.store_id ${storeId} is repeated`, [ref], "stock"));
    }
    // MeLi: network_node_id is optional and not validated.
    if (entry.network_node_id !== undefined && typeof entry.network_node_id !== "string") {
      causes.push(
        cause("stock.network_node_id.invalid", `${ref}.network_node_id must be a string`, [ref], "stock"),
      );
    }
    if (!isQuantity(entry.quantity)) causes.push(badQuantity(ref, entry.quantity));
    else sets.push({ type: "seller_warehouse", storeId, quantity: entry.quantity });
  }
  if (causes.length > 0) return invalid(400, "validation_error", "Validation error", causes);
  return { sets };
}

/** Applies a validated write: each named location set (a store without one gets it), the version bumped. */
export function applyStockWrite(
  up: UserProductState,
  write: StockWrite,
  warehouses: readonly SellerWarehouse[] | null,
): void {
  for (const set of write.sets) {
    const at = up.locations.find((l) => l.type === set.type && l.storeId === set.storeId);
    if (at) at.quantity = set.quantity;
    else {
      const w = warehouses?.find((w) => w.storeId === set.storeId);
      up.locations.push({
        type: set.type,
        quantity: set.quantity,
        ...(w ? { storeId: w.storeId, networkNodeId: w.networkNodeId } : {}),
      });
    }
  }
  up.version++;
}

/** 409 for a stale `x-version`: nothing applied; read the stock again. */
export const VERSION_MISMATCH_BODY = meliError(409, "conflict", "Version mismatch");
