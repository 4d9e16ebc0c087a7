/**
 * Publishes realistic `sales.created` events to `blend_events`, as the POS does.
 *
 *   deno task publish-sample --count 100 --stores 3 --skus 20 [--rate 50] [--seed 7]
 *
 * Options: --count N events (default 10), --stores N (default 3), --skus N
 * (default 20), --max-items N per sale (default 3), --rate N events per second
 * (default: as fast as confirms allow), --seed N for a repeatable run,
 * --no-message-id to exercise the body-hash identity, --catalog FILE for stores
 * and SKUs (default: the sandbox's default catalog, so sales hit its listings). Uses RABBITMQ_URL,
 * EXCHANGE and ROUTING_KEY like the service.
 *
 * Like the POS, it first reserves the sold stock in Redis (POS_REDIS_URL or
 * REDIS_URL, key POS_STOCK_KEY, seeded from the catalog when missing), which is
 * what MercadoLibre's mirror mode reads; --no-pos-stock skips that.
 */
import { parseArgs } from "node:util";
import { Connection } from "rabbitmq-client";
import { createClient } from "redis";
import { type Catalog, defaultCatalog, loadCatalog } from "../src/sandbox/catalog.ts";

/** One sale as the POS publishes it (docs/DESIGN.md §3). */
export interface SampleSale {
  event_id: string;
  tienda_id: string;
  total: number;
  metodo_pago: string;
  items: {
    producto_id: string;
    producto_nombre: string;
    producto_sku: string;
    cantidad: number;
    precio_unitario: number;
    subtotal: number;
  }[];
  timestamp: string;
}

const PAYMENTS = ["EFECTIVO", "DEBITO", "CREDITO", "MERCADOPAGO"];

/** Options for {@link sampleSales}. */
export interface SampleOptions {
  count: number;
  /** Use the catalog's first N stores. */
  stores: number;
  /** Use the catalog's first N SKUs (ambiguous SKUs are skipped unless `includeTricky`). */
  skus: number;
  maxItems: number;
  seed: number;
  /** Where stores and SKUs come from; the sandbox's default catalog if omitted. */
  catalog?: Catalog;
  /** Keep SKUs the sandbox catalog makes deliberately ambiguous. */
  includeTricky?: boolean;
}

/**
 * Builds `count` sales over the catalog's stores and SKUs with a seeded PRNG,
 * so sample sales land on listings the sandbox marketplaces know.
 */
export function sampleSales(options: SampleOptions): SampleSale[] {
  const catalog = options.catalog ?? defaultCatalog();
  const bySku = new Map<string, number>();
  for (const p of catalog.products) bySku.set(p.sku, (bySku.get(p.sku) ?? 0) + 1);
  const products = catalog.products
    .filter((p) => options.includeTricky || bySku.get(p.sku) === 1)
    .slice(0, options.skus);
  const stores = catalog.stores.slice(0, options.stores);
  if (products.length === 0 || stores.length === 0) {
    throw new Error("the catalog has no usable stores or SKUs");
  }
  let state = options.seed >>> 0 || 1;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x100000000;
  };
  const pick = (n: number) => Math.floor(random() * n);
  const sales: SampleSale[] = [];
  for (let i = 0; i < options.count; i++) {
    const items = Array.from({ length: 1 + pick(options.maxItems) }, () => {
      const n = pick(products.length);
      const product = products[n];
      const cantidad = 1 + pick(3);
      const precio = 500 + 250 * (n % 8);
      return {
        producto_id: product.producto_id,
        producto_nombre: product.title,
        producto_sku: product.sku,
        cantidad,
        precio_unitario: precio,
        subtotal: precio * cantidad,
      };
    });
    sales.push({
      event_id: crypto.randomUUID(),
      tienda_id: stores[pick(stores.length)].tienda_id,
      total: items.reduce((sum, item) => sum + item.subtotal, 0),
      metodo_pago: PAYMENTS[pick(PAYMENTS.length)],
      items,
      timestamp: new Date().toISOString(),
    });
  }
  return sales;
}

/**
 * Publishes sales as the POS does (persistent JSON, message_id = event_id),
 * with publisher confirms, optionally paced at `perSecond`.
 */
export async function publishSales(
  rabbit: Connection,
  exchange: string,
  routingKey: string,
  sales: { event_id: string }[],
  options: { perSecond?: number; withMessageId?: boolean; onProgress?: (sent: number) => unknown } = {},
): Promise<void> {
  const publisher = rabbit.createPublisher({ confirm: true });
  const window: Promise<void>[] = [];
  const started = performance.now();
  try {
    for (const [n, sale] of sales.entries()) {
      if (options.perSecond) {
        const wait = started + n / options.perSecond * 1000 - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      window.push(publisher.send({
        exchange,
        routingKey,
        contentType: "application/json",
        durable: true,
        messageId: options.withMessageId === false ? undefined : sale.event_id,
      }, JSON.stringify(sale)));
      if (window.length >= 500) await Promise.all(window.splice(0));
      options.onProgress?.(n + 1);
    }
    await Promise.all(window);
  } finally {
    await publisher.close();
  }
}

/** The part of a node-redis client {@link reservePosStock} uses. */
export interface PosRedis {
  set(key: string, value: string, options: { NX: true }): Promise<unknown>;
  decrBy(key: string, by: number): Promise<number>;
}

/**
 * Does what the POS does before it publishes a sale: lowers the store's stock
 * key for every item (seeding missing keys from the catalog first).
 */
export async function reservePosStock(
  redis: PosRedis,
  keyTemplate: string,
  catalog: Catalog,
  sales: SampleSale[],
): Promise<void> {
  const keyOf = (tiendaId: string, productoId: string, sku: string) =>
    keyTemplate.replaceAll("{tienda_id}", tiendaId).replaceAll("{producto_id}", productoId)
      .replaceAll("{sku}", sku);
  const seeded = new Set<string>();
  for (const sale of sales) {
    for (const item of sale.items) {
      const key = keyOf(sale.tienda_id, item.producto_id, item.producto_sku);
      if (!seeded.has(key)) {
        const product = catalog.products.find((p) => p.producto_id === item.producto_id);
        await redis.set(key, String(product?.stock[sale.tienda_id] ?? 0), { NX: true });
        seeded.add(key);
      }
      await redis.decrBy(key, item.cantidad);
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      count: { type: "string", default: "10" },
      stores: { type: "string", default: "3" },
      skus: { type: "string", default: "20" },
      "max-items": { type: "string", default: "3" },
      rate: { type: "string" },
      seed: { type: "string", default: String(Date.now() % 100000) },
      "no-message-id": { type: "boolean", default: false },
      "no-pos-stock": { type: "boolean", default: false },
      catalog: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task publish-sample [--count N] [--stores N] [--skus N] [--max-items N] [--rate N/s] [--seed N] [--no-message-id] [--no-pos-stock] [--catalog FILE]",
    );
    Deno.exit(0);
  }
  const number = (name: string, value: string | undefined) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) {
      console.error(`--${name} must be a positive whole number (got "${value}")`);
      Deno.exit(2);
    }
    return n;
  };
  const count = number("count", values.count);
  const rate = values.rate === undefined ? undefined : number("rate", values.rate);
  const catalog = values.catalog ? await loadCatalog(values.catalog) : defaultCatalog();
  const sales = sampleSales({
    count,
    stores: number("stores", values.stores),
    skus: number("skus", values.skus),
    maxItems: number("max-items", values["max-items"]),
    seed: number("seed", values.seed),
    catalog,
  });
  if (!values["no-pos-stock"]) {
    const redis = createClient({
      url: Deno.env.get("POS_REDIS_URL") || Deno.env.get("REDIS_URL") || "redis://127.0.0.1:6379",
    });
    await redis.connect();
    await reservePosStock(
      redis,
      Deno.env.get("POS_STOCK_KEY") || "stock:{tienda_id}:{producto_id}",
      catalog,
      sales,
    );
    await redis.close();
  }
  const exchange = Deno.env.get("EXCHANGE") || "blend_events";
  const routingKey = Deno.env.get("ROUTING_KEY") || "sales.created";
  const rabbit = new Connection(Deno.env.get("RABBITMQ_URL") || "amqp://guest:guest@127.0.0.1:5672");
  await rabbit.exchangeDeclare({ exchange, type: "topic", durable: true });
  const started = performance.now();
  await publishSales(rabbit, exchange, routingKey, sales, {
    perSecond: rate,
    withMessageId: !values["no-message-id"],
    onProgress: (sent) => sent % 1000 === 0 && console.error(`published ${sent}/${count}`),
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `published ${sales.length} sale events to ${exchange} (${routingKey}) in ${seconds.toFixed(2)} s`,
  );
  await rabbit.close();
}
