/**
 * The sandbox's POS. In sandbox mode there is no POS database (no `producto` table): the sandbox catalog —
 * the same one the marketplace sandboxes start from — is the POS's catalog, and its stock lives where the
 * POS keeps it, in Redis under `POS_STOCK_KEY`, seeded here for every product at every store. Without the
 * seed, every store the sample sales never touched would have no stock to compare (resync: stock unknown).
 */
import type { PosProduct, PosProductSource } from "../../pos/catalog.ts";
import { stockKey } from "../../pos/stock.ts";
import type { Catalog } from "../catalog.ts";

/** The part of a node-redis client the seed uses. */
export interface SeedRedis {
  set(key: string, value: string, options: { NX: true }): Promise<unknown>;
}

/** SETs in flight at once while seeding. */
const SEED_WINDOW = 1_000;

/**
 * Sets the stock key of every catalog product at every catalog store to the catalog's quantity (0 when the
 * product has none there), unless the key exists: a key the POS (or a sample sale) already lowered keeps
 * its value, so seeding again — every start — changes nothing.
 * @returns how many keys were set (the rest were there).
 */
export async function seedPosStock(redis: SeedRedis, keyTemplate: string, catalog: Catalog): Promise<number> {
  let created = 0;
  const window: Promise<void>[] = [];
  for (const store of catalog.stores) {
    for (const product of catalog.products) {
      const key = stockKey(keyTemplate, {
        tiendaId: store.tienda_id,
        productoId: product.producto_id,
        sku: product.sku,
      })!;
      const quantity = String(product.stock[store.tienda_id] ?? 0);
      window.push(
        redis.set(key, quantity, { NX: true }).then((reply) => {
          if (reply === "OK") created++;
        }),
      );
      if (window.length >= SEED_WINDOW) await Promise.all(window.splice(0));
    }
  }
  await Promise.all(window);
  return created;
}

/** The sandbox catalog's products at the requested stores: every product at every store, as the POS sells them. */
export class SandboxProducts implements PosProductSource {
  constructor(private readonly catalog: Catalog) {}

  async *products(stores: string[], size: number, signal?: AbortSignal): AsyncIterable<PosProduct[]> {
    const wanted = new Set(stores);
    let page: PosProduct[] = [];
    for (const store of this.catalog.stores) {
      if (!wanted.has(store.tienda_id)) continue;
      for (const product of this.catalog.products) {
        page.push({ tiendaId: store.tienda_id, sku: product.sku, productoId: product.producto_id });
        if (page.length === size) {
          signal?.throwIfAborted();
          yield page;
          page = [];
        }
      }
    }
    if (page.length > 0) yield page;
  }
}
