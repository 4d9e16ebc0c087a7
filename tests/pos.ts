/**
 * The POS side of the tests: stock keys in Redis under a per-test prefix (what
 * MercadoLibre's mirror mode and resync read), lowered before a sale is
 * published, as the real POS does.
 */
import { createClient } from "redis";
import { type Catalog, defaultCatalog } from "../src/sandbox/catalog.ts";
import type { SampleSale } from "../scripts/publish_sample.ts";
import { type Harness, REDIS_URL, uniqueName } from "./helpers.ts";

type Redis = ReturnType<typeof createClient>;

/** A sale event as the POS publishes it. */
export type CatalogSale = SampleSale;

/** A sale event at a store, over catalog products (an unknown SKU gets a random producto_id). */
export function catalogSale(
  catalog: Catalog,
  tiendaId: string,
  lines: { sku: string; qty: number }[],
  id: string = crypto.randomUUID(),
): CatalogSale {
  return {
    event_id: id,
    tienda_id: tiendaId,
    total: 100,
    metodo_pago: "EFECTIVO",
    items: lines.map((l) => ({
      producto_id: catalog.products.find((p) => p.sku === l.sku)?.producto_id ?? crypto.randomUUID(),
      producto_nombre: l.sku,
      producto_sku: l.sku,
      cantidad: l.qty,
      precio_unitario: 10,
      subtotal: 10 * l.qty,
    })),
    timestamp: new Date().toISOString(),
  };
}

/** The POS's stock keys and its sales. */
export class Pos {
  readonly keyTemplate: string;

  private constructor(private readonly redis: Redis, readonly prefix: string, readonly catalog: Catalog) {
    this.keyTemplate = `${prefix}:stock:{tienda_id}:{producto_id}`;
  }

  /** Connects and seeds every product × store from the catalog. */
  static async open(catalog: Catalog = defaultCatalog()): Promise<Pos> {
    const redis: Redis = createClient({ url: REDIS_URL });
    await redis.connect();
    const pos = new Pos(redis, uniqueName("pos"), catalog);
    for (const p of catalog.products) {
      for (const s of catalog.stores) await pos.set(s.tienda_id, p.sku, p.stock[s.tienda_id] ?? 0);
    }
    return pos;
  }

  /** The catalog product of a SKU (the first, for the deliberately ambiguous one). */
  product(sku: string) {
    const p = this.catalog.products.find((p) => p.sku === sku);
    if (!p) throw new Error(`no catalog product ${sku}`);
    return p;
  }

  key(tiendaId: string, sku: string): string {
    return `${this.prefix}:stock:${tiendaId}:${this.product(sku).producto_id}`;
  }

  async set(tiendaId: string, sku: string, quantity: number): Promise<void> {
    await this.redis.set(this.key(tiendaId, sku), String(quantity));
  }

  /** Removes a stock key (the reader then falls back to the POS's Postgres). */
  async delete(tiendaId: string, sku: string): Promise<void> {
    await this.redis.del(this.key(tiendaId, sku));
  }

  async get(tiendaId: string, sku: string): Promise<number> {
    return Number(await this.redis.get(this.key(tiendaId, sku)));
  }

  /** A sale event at a store. */
  saleOf(tiendaId: string, lines: { sku: string; qty: number }[]): CatalogSale {
    return catalogSale(this.catalog, tiendaId, lines);
  }

  /** What the POS does on a sale: reserve the stock, then publish the event. */
  async sell(h: Harness, tiendaId: string, lines: { sku: string; qty: number }[]): Promise<void> {
    for (const l of lines) {
      if (this.catalog.products.some((p) => p.sku === l.sku)) {
        await this.redis.decrBy(this.key(tiendaId, l.sku), l.qty);
      }
    }
    const event = this.saleOf(tiendaId, lines);
    await h.publish(event, { messageId: event.event_id as string });
  }

  async close(): Promise<void> {
    const keys = await this.redis.keys(`${this.prefix}:*`);
    if (keys.length) await this.redis.del(keys);
    await this.redis.close();
  }
}
