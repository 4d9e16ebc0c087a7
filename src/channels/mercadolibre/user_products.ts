/**
 * A MercadoLibre user product's stock by location (MeLi's "Stock distribuido" and
 * "Stock multi origen"): `GET /user-products/{id}/stock` answers the locations and an
 * `x-version`; `PUT /user-products/{id}/stock/type/selling_address` (`{quantity}`) or
 * `…/seller_warehouse` (`{locations: [{store_id, network_node_id, quantity}]}`) must
 * send that version back, so a write computed from a read lands only if nothing moved
 * the stock in between (else 409: read again, compute again). `meli_facility` (Full)
 * is MercadoLibre's and is never written.
 */
import type { MeliLocation } from "../../config.ts";
import type { MeliClient, MeliResult } from "./client.ts";

/** One location as MeLi shows it. */
export interface UserProductLocation {
  type: string;
  quantity: number;
  store_id?: string;
  network_node_id?: string;
}

/** A user product's stock, with the version a write must send back. */
export interface UserProductStock {
  version: string;
  locations: UserProductLocation[];
}

/**
 * One mapped store's location of a user product as a resync read it: what its write
 * addresses (the user product, the location) and the `x-version` it must carry.
 */
export interface MeliLocationRef {
  itemId: string;
  variationId: number | null;
  userProductId: string;
  tiendaId: string;
  location: MeliLocation;
  version: string;
}

/** A quantity to set at one mapped location. */
export interface LocationTarget {
  location: MeliLocation;
  quantity: number;
}

function same(l: UserProductLocation, location: MeliLocation): boolean {
  return location.type === "selling_address"
    ? l.type === "selling_address"
    : l.type === "seller_warehouse" && l.store_id === location.storeId;
}

/** The quantity at a mapped location; 0 for a store the user product has none at yet (MeLi: set on write). */
export function quantityAt(stock: Pick<UserProductStock, "locations">, location: MeliLocation): number {
  return stock.locations.find((l) => same(l, location))?.quantity ?? 0;
}

/** Whether all of the stock is in MercadoLibre's Full warehouses: nothing the seller may write. */
export function onlyInFull(stock: Pick<UserProductStock, "locations">): boolean {
  return stock.locations.length > 0 && stock.locations.every((l) => l.type === "meli_facility");
}

/** Where a location lives in MeLi's words, for messages (`selling_address`, `store 1001`). */
export function describeLocation(location: MeliLocation): string {
  return location.type === "selling_address" ? "selling_address" : `store ${location.storeId}`;
}

/** Reads a user product's stock; an ok answer without `x-version` is not usable (MeLi always sends it). */
export async function readUserProductStock(
  client: Pick<MeliClient, "request">,
  userProductId: string,
  signal?: AbortSignal,
): Promise<MeliResult<UserProductStock>> {
  const got = await client.request<{ locations?: UserProductLocation[] }>(
    "GET",
    `/user-products/${encodeURIComponent(userProductId)}/stock`,
    { operation: "get_user_product_stock", signal },
  );
  if (got.kind !== "ok") return got;
  const version = got.headers.get("x-version");
  if (version === null) {
    return { kind: "unavailable", error: `GET /user-products/${userProductId}/stock answered no x-version` };
  }
  return { ...got, data: { version, locations: got.data.locations ?? [] } };
}

/**
 * Writes quantities at mapped locations with the version read: one PUT (all targets are
 * of one type, MELI_LOCATIONS does not mix them). Answers MeLi's stock after the write.
 */
export async function writeUserProductStock(
  client: Pick<MeliClient, "request">,
  userProductId: string,
  version: string,
  targets: LocationTarget[],
  signal?: AbortSignal,
): Promise<MeliResult<{ locations?: UserProductLocation[] }>> {
  const type = targets[0].location.type;
  const body = type === "selling_address" ? { quantity: targets[0].quantity } : {
    locations: targets.map(({ location, quantity }) => {
      const w = location as Extract<MeliLocation, { type: "seller_warehouse" }>;
      return { store_id: w.storeId, network_node_id: w.networkNodeId, quantity };
    }),
  };
  return await client.request<{ locations?: UserProductLocation[] }>(
    "PUT",
    `/user-products/${encodeURIComponent(userProductId)}/stock/type/${type}`,
    { operation: "put_user_product_stock", body, headers: { "x-version": version }, signal },
  );
}
