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
 */
import type { Catalog } from "../catalog.ts";

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
  dateCreated: string;
  lastUpdated: string;
}

// Ids look like MeLi's (MLA + 10 digits, 12-digit variation ids) and are stable for a catalog.
const ITEM_BASE = 1_420_000_000;
const VARIATION_BASE = 180_000_000_000;

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
  /** Products seeded so far, across sellers: variation ids stay unique. */
  #seeded = 0;

  constructor(
    catalog: Catalog,
    tiendaId: string,
    readonly sellerId: number,
    readonly now: () => number,
    others: readonly OtherSeller[] = [],
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
    const firstItem = this.#items.size;
    order.forEach((group, g) => {
      const i = firstItem + g;
      const id = `MLA${ITEM_BASE + i + 1}`;
      const price = 5000 + ((i * 7919) % 40) * 500;
      const quantity = (p: Catalog["products"][number]) => Math.max(0, p.stock[tiendaId] ?? 0);
      const hasVariations = group[0].meli_item !== undefined;
      const prefix = hasVariations ? commonWords(group.map((p) => p.title)) : "";
      const variations: VariationState[] = hasVariations
        ? group.map((p) => ({
          id: VARIATION_BASE + productIndex.get(p.producto_id)! + 1,
          productoId: p.producto_id,
          price,
          availableQuantity: quantity(p),
          soldQuantity: 0,
          sellerCustomField: null,
          attributeCombinations: [
            textAttribute("SIZE", "Talle", p.title.slice(prefix.length).trim() || p.sku),
          ],
          attributes: [sellerSkuAttribute(p.sku)],
          deleted: false,
        }))
        : [];
      const total = hasVariations
        ? variations.reduce((s, v) => s + v.availableQuantity, 0)
        : quantity(group[0]);
      // Item-level fields a catalog may set on any of the item's products (they agree).
      const status = group.find((p) => p.meli_status)?.meli_status ?? (total > 0 ? "active" : "paused");
      const item: ItemState = {
        id,
        sellerId,
        title: hasVariations ? prefix || group[0].meli_item! : group[0].title,
        price,
        status,
        subStatus: status === "paused" && total === 0 ? ["out_of_stock"] : [],
        logisticType: group.find((p) => p.meli_logistic_type)?.meli_logistic_type ?? "cross_docking",
        availableQuantity: hasVariations ? 0 : total,
        soldQuantity: 0,
        initialQuantity: total,
        attributes: [
          textAttribute("BRAND", "Marca", "Blend"),
          ...(hasVariations ? [] : [sellerSkuAttribute(group[0].sku)]),
        ],
        variations,
        hasVariations,
        dateCreated: created,
        lastUpdated: created,
      };
      this.#items.set(id, item);
      if (!ours) return;
      group.forEach((p, j) => {
        const variation = hasVariations ? variations[j] : null;
        this.#byProduct.set(p.producto_id, { item, variation });
        listings.push({
          sku: p.sku,
          productoId: p.producto_id,
          itemId: id,
          variationId: variation?.id ?? null,
        });
      });
    });
    this.#seeded += catalog.products.length;
    return listings;
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
    target.availableQuantity = quantity;
    target.soldQuantity += sold;
    if (found.variation) found.item.soldQuantity += sold;
    found.item.lastUpdated = new Date(this.now()).toISOString();
    this.applyStockRules(found.item);
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
    if (patch.logistic_type !== undefined) item.logisticType = patch.logistic_type;
    item.lastUpdated = new Date(this.now()).toISOString();
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
