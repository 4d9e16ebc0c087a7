/**
 * The MercadoLibre sandbox's seller account: items (publicaciones) and their
 * variations, seeded from a catalog, rendered in MeLi's item JSON, and MeLi's stock
 * and status rules.
 *
 * Mapping: catalog products sharing a `meli_item` are the variations of one item
 * (SKU in each variation's SELLER_SKU attribute); any other product is an item
 * without variations (SKU in the item's SELLER_SKU attribute). Ids are stable for a
 * catalog. Quantities come from one catalog store (MeLi has one stock per item for a
 * single-origin seller). A catalog may start an item in another status (`meli_status`,
 * e.g. under_review) or as MeLi Full (`meli_logistic_type: fulfillment`). Status rules:
 * an active item whose total stock reaches 0 is paused with sub_status out_of_stock;
 * more stock does not reactivate it, a `status: active` update does (only with stock);
 * closed is final. Other sellers' items (seeded from their own catalogs) can be read
 * through `/items` like any item, but never appear in our seller's search.
 *
 * Every item without variations, and every variation, sells a user product
 * (user_products.ts) whose stock locations it shows the total of; a product with
 * `meli_items: n` is sold by n items of one user product, which share its stock.
 */
import type { Catalog } from "../catalog.ts";
import {
  changeTotal,
  type SellerWarehouse,
  type StockLocation,
  totalOf,
  type UserProductMember,
  type UserProductState,
} from "./user_products.ts";

/** Item statuses MeLi reports. */
export const ITEM_STATUSES = ["active", "paused", "closed", "under_review", "inactive"] as const;
/** An item status. */
export type ItemStatus = typeof ITEM_STATUSES[number];

/** A catalog product as a MeLi listing: an item, or one variation of it. */
export interface MeliListing {
  sku: string;
  productoId: string;
  itemId: string;
  /** null when the item has no variations. */
  variationId: number | null;
  /** The user product; every item of `itemIds` sells it. */
  userProductId: string;
  /** Every item selling the product (`itemId` is the first). */
  itemIds: string[];
}

/** A MeLi attribute as items carry it. */
export interface MeliAttribute {
  id: string;
  name: string;
  value_id: string | null;
  value_name: string | null;
}

/** A variation in the store. */
export interface VariationState {
  id: number;
  productoId: string;
  price: number;
  availableQuantity: number;
  soldQuantity: number;
  sellerCustomField: string | null;
  attributeCombinations: MeliAttribute[];
  /** Includes SELLER_SKU; shown only with `include_attributes=all`. */
  attributes: MeliAttribute[];
  /** Removed by a `PUT /items/{id}` whose `variations` left it out (MeLi deletes those). */
  deleted: boolean;
  userProductId: string;
}

/** An item in the store. */
export interface ItemState {
  id: string;
  /** The seller who owns the item. */
  sellerId: number;
  title: string;
  price: number;
  status: ItemStatus;
  subStatus: string[];
  logisticType: string;
  /** Item-level stock; for items with variations the sum of theirs is used instead. */
  availableQuantity: number;
  soldQuantity: number;
  initialQuantity: number;
  /** Item-level attributes (SELLER_SKU only on items without variations). */
  attributes: MeliAttribute[];
  /** Empty for an item without variations. */
  variations: VariationState[];
  hasVariations: boolean;
  /** The item's user product; null for an item with variations (each variation has its own). */
  userProductId: string | null;
  dateCreated: string;
  lastUpdated: string;
}

// Ids look like MeLi's (MLA + 10 digits, 12-digit variation ids) and are stable for a catalog.
const ITEM_BASE = 1_420_000_000;
const VARIATION_BASE = 180_000_000_000;
const USER_PRODUCT_BASE = 2_000_000_000;

/** An attribute with a free-text value. */
export function textAttribute(id: string, name: string, value: string): MeliAttribute {
  return { id, name, value_id: null, value_name: value };
}

/** The SELLER_SKU attribute of an item or variation. */
export function sellerSkuAttribute(sku: string): MeliAttribute {
  return textAttribute("SELLER_SKU", "SKU", sku);
}

/** The SELLER_SKU value in a list of attributes, if any. */
export function skuOf(attributes: readonly MeliAttribute[]): string | undefined {
  return attributes.find((a) => a.id === "SELLER_SKU")?.value_name ?? undefined;
}

function renderAttribute(a: MeliAttribute) {
  return {
    id: a.id,
    name: a.name,
    value_id: a.value_id,
    value_name: a.value_name,
    values: [{ id: a.value_id, name: a.value_name, struct: null }],
    value_type: "string",
  };
}

/** Longest common leading words of some titles ("Jean Recto 38", "Jean Recto 40" → "Jean Recto"). */
function commonWords(titles: string[]): string {
  const split = titles.map((t) => t.split(/\s+/));
  const out: string[] = [];
  for (let i = 0; i < split[0].length; i++) {
    if (split.every((w) => w.length > i + 1 && w[i] === split[0][i])) out.push(split[0][i]);
    else break;
  }
  return out.join(" ");
}

function slug(text: string): string {
  return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase().replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");
}

/** Another seller's items in the same sandbox: in `/items` like any item, never in our seller's search. */
export interface OtherSeller {
  userId: number;
  catalog: Catalog;
}

/** The seller's items (and other sellers', which the seller can read but neither search nor change). */
export class MeliItems {
  readonly listings: readonly MeliListing[];
  #items = new Map<string, ItemState>();
  #byProduct = new Map<string, { item: ItemState; variation: VariationState | null }>();
  #userProducts = new Map<string, UserProductState>();
  /** Products seeded so far, across sellers: variation ids stay unique. */
  #seeded = 0;

  constructor(
    catalog: Catalog,
    tiendaId: string,
    readonly sellerId: number,
    readonly now: () => number,
    others: readonly OtherSeller[] = [],
    /** Our seller's stores when it is multi-origin (`warehouse_management`); null: single origin. */
    readonly warehouses: readonly SellerWarehouse[] | null = null,
  ) {
    this.listings = this.#seed(catalog, tiendaId, sellerId);
    for (const other of others) {
      const store = other.catalog.stores.some((s) => s.tienda_id === tiendaId)
        ? tiendaId
        : other.catalog.stores[0].tienda_id;
      this.#seed(other.catalog, store, other.userId);
    }
  }

  /** Creates a seller's items from a catalog; the listings are recorded as ours only for our seller. */
  #seed(catalog: Catalog, tiendaId: string, sellerId: number): MeliListing[] {
    const created = new Date(this.now()).toISOString();
    const groups = new Map<string, Catalog["products"]>();
    const order: Catalog["products"][] = [];
    for (const p of catalog.products) {
      const key = p.meli_item;
      if (key === undefined) order.push([p]);
      else if (groups.has(key)) groups.get(key)!.push(p);
      else {
        const group = [p];
        groups.set(key, group);
        order.push(group);
      }
    }
    const ours = sellerId === this.sellerId;
    const listings: MeliListing[] = [];
    const productIndex = new Map(catalog.products.map((p, i) => [p.producto_id, this.#seeded + i]));
    order.forEach((group) => {
      const hasVariations = group[0].meli_item !== undefined;
      const copies = hasVariations ? 1 : group[0].meli_items ?? 1;
      const logisticType = group.find((p) => p.meli_logistic_type)?.meli_logistic_type ?? "cross_docking";
      const locationsOf = (p: Catalog["products"][number]) =>
        this.#seedLocations(p, tiendaId, logisticType === "fulfillment", ours);
      const items = Array.from(
        { length: copies },
        () => this.#seedItem(group, locationsOf, logisticType, productIndex, sellerId, created),
      );
      const item = items[0];
      if (!ours) return;
      group.forEach((p, j) => {
        const variation = hasVariations ? item.variations[j] : null;
        this.#byProduct.set(p.producto_id, { item, variation });
        listings.push({
          sku: p.sku,
          productoId: p.producto_id,
          itemId: item.id,
          variationId: variation?.id ?? null,
          userProductId: variation?.userProductId ?? item.userProductId!,
          itemIds: items.map((i) => i.id),
        });
      });
    });
    this.#seeded += catalog.products.length;
    return listings;
  }

  /** Where a product's stock is at start: Full's warehouse, the seller's stores, or its one origin. */
  #seedLocations(
    p: Catalog["products"][number],
    tiendaId: string,
    full: boolean,
    ours: boolean,
  ): StockLocation[] {
    const at = (tienda: string) => Math.max(0, p.stock[tienda] ?? 0);
    if (full) return [{ type: "meli_facility", quantity: at(tiendaId) }];
    if (ours && this.warehouses) {
      return this.warehouses.map((w) => ({
        type: "seller_warehouse",
        quantity: at(w.tiendaId),
        storeId: w.storeId,
        networkNodeId: w.networkNodeId,
      }));
    }
    return [{ type: "selling_address", quantity: at(tiendaId) }];
  }

  /** A user product for a listing, or the one an earlier copy of the listing made. */
  #userProduct(key: string, sellerId: number, locations: () => StockLocation[], member: UserProductMember) {
    let up = this.#userProducts.get(key);
    if (!up) {
      up = {
        id: `MLAU${USER_PRODUCT_BASE + this.#userProducts.size + 1}`,
        sellerId,
        version: 1,
        locations: locations(),
        members: [],
      };
      this.#userProducts.set(key, up);
      this.#userProducts.set(up.id, up);
    }
    up.members.push(member);
    return up;
  }

  /** One item of a group (a product, or the products of one item's variations). */
  #seedItem(
    group: Catalog["products"],
    locationsOf: (p: Catalog["products"][number]) => StockLocation[],
    logisticType: string,
    productIndex: Map<string, number>,
    sellerId: number,
    created: string,
  ): ItemState {
    const i = this.#items.size;
    const id = `MLA${ITEM_BASE + i + 1}`;
    const price = 5000 + ((i * 7919) % 40) * 500;
    const hasVariations = group[0].meli_item !== undefined;
    const prefix = hasVariations ? commonWords(group.map((p) => p.title)) : "";
    const variations: VariationState[] = hasVariations
      ? group.map((p) => ({
        id: VARIATION_BASE + productIndex.get(p.producto_id)! + 1,
        productoId: p.producto_id,
        price,
        availableQuantity: 0,
        soldQuantity: 0,
        sellerCustomField: null,
        attributeCombinations: [
          textAttribute("SIZE", "Talle", p.title.slice(prefix.length).trim() || p.sku),
        ],
        attributes: [sellerSkuAttribute(p.sku)],
        deleted: false,
        userProductId: "",
      }))
      : [];
    // User products are keyed by producto_id, so the copies of a product share one.
    const key = (p: Catalog["products"][number]) => `${sellerId}:${p.producto_id}`;
    const item = { variations } as ItemState;
    variations.forEach((v, j) => {
      const up = this.#userProduct(key(group[j]), sellerId, () => locationsOf(group[j]), {
        item,
        variation: v,
      });
      v.userProductId = up.id;
      v.availableQuantity = totalOf(up);
    });
    const own = hasVariations
      ? null
      : this.#userProduct(key(group[0]), sellerId, () => locationsOf(group[0]), { item, variation: null });
    const total = own ? totalOf(own) : variations.reduce((s, v) => s + v.availableQuantity, 0);
    // Item-level fields a catalog may set on any of the item's products (they agree).
    const status = group.find((p) => p.meli_status)?.meli_status ?? (total > 0 ? "active" : "paused");
    Object.assign(
      item,
      {
        id,
        sellerId,
        title: hasVariations ? prefix || group[0].meli_item! : group[0].title,
        price,
        status,
        subStatus: status === "paused" && total === 0 ? ["out_of_stock"] : [],
        logisticType,
        availableQuantity: hasVariations ? 0 : total,
        soldQuantity: 0,
        initialQuantity: total,
        attributes: [
          textAttribute("BRAND", "Marca", "Blend"),
          ...(hasVariations ? [] : [sellerSkuAttribute(group[0].sku)]),
        ],
        variations,
        hasVariations,
        userProductId: own?.id ?? null,
        dateCreated: created,
        lastUpdated: created,
      } satisfies ItemState,
    );
    this.#items.set(id, item);
    return item;
  }

  /** A user product by id. */
  userProduct(id: string): UserProductState | undefined {
    const up = this.#userProducts.get(id);
    return up?.id === id ? up : undefined;
  }

  /** Every user product, in id order. */
  userProducts(): UserProductState[] {
    return [...new Set(this.#userProducts.values())];
  }

  /** The user product an item (or one of its variations) sells. */
  userProductOf(item: ItemState, variation: VariationState | null): UserProductState {
    return this.userProduct(variation?.userProductId ?? item.userProductId!)!;
  }

  /** Every member shows the user product's total again; MeLi's status rules follow. */
  propagate(up: UserProductState): void {
    const total = totalOf(up);
    const stamp = new Date(this.now()).toISOString();
    for (const { item, variation } of up.members) {
      (variation ?? item).availableQuantity = total;
      item.lastUpdated = stamp;
      this.applyStockRules(item);
    }
  }

  /**
   * An `/items` stock write landed on one member (single-origin seller): the user
   * product's own location takes it and every sibling item shows it.
   */
  stockWritten(item: ItemState, variation: VariationState | null): void {
    const up = this.userProductOf(item, variation);
    const quantity = (variation ?? item).availableQuantity;
    const own = up.locations.find((l) => l.type !== "meli_facility") ?? up.locations[0];
    const others = totalOf(up) - own.quantity;
    own.quantity = Math.max(0, quantity - others);
    up.version++;
    this.propagate(up);
  }

  /** The item with this id, if any. */
  get(itemId: string): ItemState | undefined {
    return this.#items.get(itemId);
  }

  /** Every item, in id order. */
  all(): ItemState[] {
    return [...this.#items.values()];
  }

  /** Ids of one seller's items, in id order. */
  ofSeller(sellerId: number): string[] {
    return this.all().filter((item) => item.sellerId === sellerId).map((item) => item.id);
  }

  /** The item and variation (null for an item without variations) of a catalog product. */
  ofProduct(productoId: string): { item: ItemState; variation: VariationState | null } | undefined {
    return this.#byProduct.get(productoId);
  }

  /** Live (not deleted) variations of an item. */
  variationsOf(item: ItemState): VariationState[] {
    return item.variations.filter((v) => !v.deleted);
  }

  /** Available quantity of the item: its own, or the sum of its live variations. */
  total(item: ItemState): number {
    return item.hasVariations
      ? this.variationsOf(item).reduce((s, v) => s + v.availableQuantity, 0)
      : item.availableQuantity;
  }

  /** available_quantity of a catalog product's item or variation (undefined if gone). */
  quantityOf(productoId: string): number | undefined {
    const found = this.#byProduct.get(productoId);
    if (!found) return undefined;
    if (!found.variation) return found.item.availableQuantity;
    return found.variation.deleted ? undefined : found.variation.availableQuantity;
  }

  /** Ids of our seller's items whose item-level or (live) variation SELLER_SKU equals `sku` exactly. */
  search(sku: string | undefined): string[] {
    return this.all().filter((item) =>
      item.sellerId === this.sellerId &&
      (sku === undefined || skuOf(item.attributes) === sku ||
        this.variationsOf(item).some((v) => skuOf(v.attributes) === sku))
    ).map((item) => item.id);
  }

  /** Applies MeLi's automatic rule after a stock change: active at 0 → paused out_of_stock. */
  applyStockRules(item: ItemState): void {
    if (item.status === "active" && this.total(item) === 0) {
      item.status = "paused";
      item.subStatus = ["out_of_stock"];
    }
  }

  /** A change on MeLi's side (an online sale or a seller edit on the site). */
  setQuantity(productoId: string, quantity: number): void {
    if (!Number.isInteger(quantity) || quantity < 0) {
      throw new RangeError(`quantity must be an integer >= 0, got ${quantity}`);
    }
    const found = this.#byProduct.get(productoId);
    if (!found) throw new Error(`no MercadoLibre listing for producto_id ${productoId}`);
    const target = found.variation ?? found.item;
    if (found.variation?.deleted) throw new Error(`variation of ${productoId} was deleted`);
    const sold = Math.max(0, target.availableQuantity - quantity);
    target.soldQuantity += sold;
    if (found.variation) found.item.soldQuantity += sold;
    const up = this.userProductOf(found.item, found.variation);
    changeTotal(up, quantity);
    this.propagate(up);
  }

  /**
   * A MeLi-side change at one location of a user product (a sale shipped from it, an
   * edit on the site): the version moves, as it does on MeLi.
   */
  setLocationQuantity(
    userProductId: string,
    location: { type: string; storeId?: string },
    quantity: number,
  ): void {
    if (!Number.isInteger(quantity) || quantity < 0) {
      throw new RangeError(`quantity must be an integer >= 0, got ${quantity}`);
    }
    const up = this.userProduct(userProductId);
    if (!up) throw new Error(`no user product ${userProductId}`);
    const at = up.locations.find((l) => l.type === location.type && l.storeId === location.storeId);
    if (!at) throw new Error(`user product ${userProductId} has no location ${JSON.stringify(location)}`);
    at.quantity = quantity;
    up.version++;
    this.propagate(up);
  }

  /** Changes what MeLi decides (moderation, Full); for tests. */
  setItem(itemId: string, patch: { status?: string; sub_status?: string[]; logistic_type?: string }): void {
    const item = this.#items.get(itemId);
    if (!item) throw new Error(`no item ${itemId}`);
    if (patch.status !== undefined) {
      if (!(ITEM_STATUSES as readonly string[]).includes(patch.status)) {
        throw new RangeError(`status must be one of ${ITEM_STATUSES.join(", ")}`);
      }
      item.status = patch.status as ItemStatus;
    }
    if (patch.sub_status !== undefined) item.subStatus = [...patch.sub_status];
    if (patch.logistic_type !== undefined && patch.logistic_type !== item.logisticType) {
      const toFull = patch.logistic_type === "fulfillment";
      const fromFull = item.logisticType === "fulfillment";
      item.logisticType = patch.logistic_type;
      // The stock moves with the logistics: into Full's warehouse, or back to the seller.
      if (toFull || fromFull) { for (const up of this.#userProductsOfItem(item)) this.#relocate(up, toFull); }
    }
    item.lastUpdated = new Date(this.now()).toISOString();
  }

  #userProductsOfItem(item: ItemState): UserProductState[] {
    return item.hasVariations
      ? item.variations.map((v) => this.userProduct(v.userProductId)!)
      : [this.userProduct(item.userProductId!)!];
  }

  /** All of a user product's stock moved into Full (or out of it, to the seller's first location). */
  #relocate(up: UserProductState, toFull: boolean): void {
    const total = totalOf(up);
    if (toFull) up.locations = [{ type: "meli_facility", quantity: total }];
    else if (this.warehouses && up.sellerId === this.sellerId) {
      up.locations = this.warehouses.map((w, i) => ({
        type: "seller_warehouse",
        quantity: i === 0 ? total : 0,
        storeId: w.storeId,
        networkNodeId: w.networkNodeId,
      }));
    } else up.locations = [{ type: "selling_address", quantity: total }];
    up.version++;
  }

  /** A variation as `/items/{id}` lists it; its attributes only with `include_attributes=all`. */
  renderVariation(v: VariationState, includeAttributes: boolean): Record<string, unknown> {
    return {
      id: v.id,
      price: v.price,
      attribute_combinations: v.attributeCombinations.map(renderAttribute),
      available_quantity: v.availableQuantity,
      sold_quantity: v.soldQuantity,
      sale_terms: [],
      picture_ids: [],
      seller_custom_field: v.sellerCustomField,
      catalog_product_id: null,
      user_product_id: v.userProductId,
      ...(includeAttributes ? { attributes: v.attributes.map(renderAttribute) } : {}),
    };
  }

  /** The item JSON of `GET /items/{id}`. */
  render(item: ItemState, includeAttributes: boolean): Record<string, unknown> {
    const number = item.id.slice(3);
    return {
      id: item.id,
      site_id: "MLA",
      title: item.title,
      seller_id: item.sellerId,
      category_id: "MLA109027",
      user_product_id: item.userProductId,
      official_store_id: null,
      price: item.price,
      base_price: item.price,
      original_price: null,
      currency_id: "ARS",
      initial_quantity: item.initialQuantity,
      available_quantity: this.total(item),
      sold_quantity: item.soldQuantity,
      sale_terms: [],
      buying_mode: "buy_it_now",
      listing_type_id: "gold_special",
      condition: "new",
      permalink: `https://articulo.mercadolibre.com.ar/MLA-${number}-${slug(item.title)}-_JM`,
      pictures: [],
      status: item.status,
      sub_status: [...item.subStatus],
      tags: ["immediate_payment"],
      shipping: {
        mode: "me2",
        methods: [],
        tags: [],
        dimensions: null,
        local_pick_up: false,
        free_shipping: false,
        logistic_type: item.logisticType,
        store_pick_up: false,
      },
      seller_custom_field: null,
      attributes: item.attributes.map(renderAttribute),
      variations: this.variationsOf(item).map((v) => this.renderVariation(v, includeAttributes)),
      catalog_listing: false,
      channels: ["marketplace"],
      date_created: item.dateCreated,
      last_updated: item.lastUpdated,
    };
  }
}
