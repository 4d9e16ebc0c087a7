/**
 * Seeded catalogs for the marketplace sandboxes: stores (tiendas) and products with
 * per-store stock, in the service's own vocabulary (`tienda_id`, `producto_id`,
 * `sku`). Each sandbox maps it onto its marketplace's ids; the same catalog is meant
 * to seed the Shopify and the MercadoLibre simulators alike.
 */
import { z } from "zod";
import defaultCatalogJson from "./catalog.default.json" with { type: "json" };
import { randomInt, randomUuid, seededRandom } from "./prng.ts";

const storeSchema = z.object({
  tienda_id: z.uuid(),
  name: z.string().min(1),
});

const productSchema = z.object({
  producto_id: z.uuid(),
  // SKUs are kept verbatim: odd characters and duplicates are part of the test data.
  sku: z.string().min(1),
  title: z.string().min(1),
  /**
   * MercadoLibre item this product belongs to: products sharing a `meli_item` are the
   * variations of one item; a product without it is an item of its own (no variations).
   */
  meli_item: z.string().min(1).optional(),
  /**
   * Status of the product's MercadoLibre item at start (an item's, so products sharing a
   * `meli_item` must agree): e.g. `under_review`; by default active, or paused at 0 stock.
   */
  meli_status: z.enum(["active", "paused", "closed", "under_review", "inactive"]).optional(),
  /** `shipping.logistic_type` of the product's item (default `cross_docking`; `fulfillment` is MeLi Full). */
  meli_logistic_type: z.string().min(1).optional(),
  /**
   * How many MercadoLibre items list this product (default 1): more make one user product
   * (`user_product_id`) sold through several items, which share its stock. Only for a
   * product without `meli_item` (a variation is one user product of one item).
   */
  meli_items: z.number().int().min(1).max(10).optional(),
  /** tienda_id → available quantity; a store left out stocks the product at 0. */
  stock: z.record(z.string(), z.number().int()),
});

const catalogSchema = z.object({
  description: z.string().optional(),
  stores: z.array(storeSchema).min(1),
  products: z.array(productSchema),
}).superRefine((catalog, ctx) => {
  const stores = new Set(catalog.stores.map((s) => s.tienda_id));
  if (stores.size !== catalog.stores.length) ctx.addIssue({ code: "custom", message: "duplicate tienda_id" });
  const seen = new Set<string>();
  const itemFields = new Map<string, { meli_status?: string; meli_logistic_type?: string }>();
  catalog.products.forEach((p, i) => {
    if (p.meli_item !== undefined) {
      const item = itemFields.get(p.meli_item) ?? {};
      itemFields.set(p.meli_item, item);
      for (const field of ["meli_status", "meli_logistic_type"] as const) {
        if (p[field] === undefined) continue;
        if (item[field] === undefined) item[field] = p[field];
        else if (item[field] !== p[field]) {
          ctx.addIssue({
            code: "custom",
            message: `${field} differs within meli_item ${p.meli_item} (it is the item's)`,
            path: ["products", i, field],
          });
        }
      }
    }
    if (p.meli_items !== undefined && p.meli_item !== undefined) {
      ctx.addIssue({
        code: "custom",
        message: "meli_items is for a product without meli_item (a variation is one item's)",
        path: ["products", i, "meli_items"],
      });
    }
    if (seen.has(p.producto_id)) {
      ctx.addIssue({
        code: "custom",
        message: `duplicate producto_id ${p.producto_id}`,
        path: ["products", i],
      });
    }
    seen.add(p.producto_id);
    for (const tienda of Object.keys(p.stock)) {
      if (!stores.has(tienda)) {
        ctx.addIssue({ code: "custom", message: `unknown store ${tienda}`, path: ["products", i, "stock"] });
      }
    }
  });
});

/** A store (tienda) of the catalog. */
export type CatalogStore = z.infer<typeof storeSchema>;
/** A product of the catalog with its stock per store. */
export type CatalogProduct = z.infer<typeof productSchema>;
/** Stores and products a sandbox starts from. */
export type Catalog = z.infer<typeof catalogSchema>;

/** Validates catalog JSON (throws a ZodError naming what is wrong). */
export function parseCatalog(json: unknown): Catalog {
  return catalogSchema.parse(json);
}

/** Reads and validates a catalog JSON file. */
export async function loadCatalog(path: string | URL): Promise<Catalog> {
  return parseCatalog(JSON.parse(await Deno.readTextFile(path)));
}

/**
 * The committed default catalog: 5 stores, 40 SKUs, including an ambiguous SKU
 * (`MATE-IMP-01` on two variants), one full of search-syntax characters, a prefix
 * pair and a case-only pair; three `meli_item` groups (JEAN-RECTO, ZAPA-URB,
 * CINTURON-CUERO) make MercadoLibre items with variations. A fresh copy each call,
 * so callers may mutate it.
 */
export function defaultCatalog(): Catalog {
  return parseCatalog(structuredClone(defaultCatalogJson));
}

/** Options for {@link buildCatalog}. */
export interface BuildCatalogOptions {
  /** Number of products (one SKU each). */
  skus: number;
  /** Number of stores. */
  stores: number;
  /** Seed for ids and quantities; the same seed gives the same catalog. */
  seed?: number;
  /** Highest initial quantity per store (default 100). */
  maxQuantity?: number;
}

/** Generates an N SKUs × M stores catalog for benchmarks and load tests. */
export function buildCatalog(options: BuildCatalogOptions): Catalog {
  const random = seededRandom(options.seed ?? 1);
  const maxQuantity = options.maxQuantity ?? 100;
  const stores = Array.from({ length: options.stores }, (_, i) => ({
    tienda_id: randomUuid(random),
    name: `Tienda ${i + 1}`,
  }));
  const width = String(options.skus).length;
  const products = Array.from({ length: options.skus }, (_, i) => ({
    producto_id: randomUuid(random),
    sku: `BENCH-${String(i + 1).padStart(width, "0")}`,
    title: `Producto ${i + 1}`,
    stock: Object.fromEntries(stores.map((s) => [s.tienda_id, randomInt(random, 0, maxQuantity)])),
  }));
  return parseCatalog({ stores, products });
}
