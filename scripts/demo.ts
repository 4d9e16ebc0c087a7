/**
 * `deno task demo`: the whole path in one command. Starts the service on the
 * built-in Shopify and MercadoLibre sandboxes (RabbitMQ, Postgres and Redis on
 * loopback), publishes sample sales as the POS would (lowering its Redis stock
 * keys first), waits until both marketplaces reflect them, and prints a
 * before/after stock table for every SKU and store it touched, and for the
 * listings MercadoLibre mirrors. Then each marketplace sells (a Shopify order at the store MercadoLibre
 * mirrors, a MercadoLibre order): each order leaves the other marketplace, and the POS's
 * `marketplace.sales.created` messages are printed as a queue bound to them receives them.
 *
 *   deno task demo [--count 40] [--stores 3] [--skus 8] [--seed 7]
 *
 * It uses its own exchange, queue and ledger schema (removed at the end), so it
 * never touches a running instance's data.
 */
import { parseArgs } from "node:util";
import { Connection } from "rabbitmq-client";
import { createClient } from "redis";
import postgres from "postgres";
import { loadConfig } from "../src/config.ts";
import { setupLogging } from "../src/log.ts";
import { startService } from "../src/main.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { publishSales, reservePosStock, sampleSales } from "./publish_sample.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    count: { type: "string", default: "40" },
    stores: { type: "string", default: "3" },
    skus: { type: "string", default: "8" },
    seed: { type: "string", default: "7" },
  },
});
const num = (name: string, v: string | undefined) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive whole number (got "${v}")`);
    Deno.exit(2);
  }
  return n;
};

const config = loadConfig({
  ...Deno.env.toObject(),
  EXCHANGE: "blend_events.demo",
  QUEUE: "marketplace-sync.demo",
  LEDGER_SCHEMA: "marketplace_sync_demo",
  CHANNELS: "shopify,mercadolibre",
  SHOPIFY_URL: "",
  SHOPIFY_TOKEN: "",
  MELI_TOKEN: "",
  MELI_CLIENT_ID: "",
  MELI_CLIENT_SECRET: "",
  MELI_REFRESH_TOKEN: "",
  MELI_URL: "",
  MELI_TIENDA_ID: "",
  MELI_MODE: "mirror",
  // The demo's own POS stock keys, removed at the end.
  POS_STOCK_KEY: "marketplace-sync-demo:stock:{tienda_id}:{producto_id}",
  HTTP_HOST: "127.0.0.1",
  HTTP_PORT: Deno.env.get("HTTP_PORT") ?? "0",
  LOG_LEVEL: Deno.env.get("LOG_LEVEL") ?? "warning",
});
await setupLogging({ level: config.LOG_LEVEL, format: config.LOG_FORMAT });

// A demo that stopped half-way (Ctrl-C) leaves its schema behind: start from a clean one.
const cleanup = postgres(config.DATABASE_URL, { max: 1, onnotice: () => {} });
await cleanup.unsafe(`drop schema if exists ${config.LEDGER_SCHEMA} cascade`);
await cleanup.end();
const service = startService(config);
await service.started;
const sandbox = service.shopifySandbox()!;
const meli = service.meliSandbox()!;
const sales = sampleSales({
  count: num("count", values.count),
  stores: num("stores", values.stores),
  skus: num("skus", values.skus),
  maxItems: 3,
  seed: num("seed", values.seed),
  catalog: defaultCatalog(),
});
const catalog = defaultCatalog();
const storeName = new Map(catalog.stores.map((s) => [s.tienda_id, s.name]));
const sold = new Map<string, { sku: string; productoId: string; tiendaId: string; qty: number }>();
for (const sale of sales) {
  for (const item of sale.items) {
    const key = `${item.producto_sku}|${sale.tienda_id}`;
    const row = sold.get(key) ??
      { sku: item.producto_sku, productoId: item.producto_id, tiendaId: sale.tienda_id, qty: 0 };
    row.qty += item.cantidad;
    sold.set(key, row);
  }
}
const meliBefore = new Map(
  [...sold].filter(([, r]) => r.tiendaId === meli.tiendaId).map((
    [key, r],
  ) => [key, meli.quantityOf(r.productoId)]),
);
const before = new Map(
  [...sold].map(([key, r]) => [key, sandbox.availableFor(r.productoId, r.tiendaId) ?? 0]),
);

console.log(
  `\nService on ${service.url}, Shopify sandbox on ${sandbox.url}, MercadoLibre sandbox on ${meli.url}`,
);
const redis = createClient({ url: config.POS_REDIS_URL ?? config.REDIS_URL });
await redis.connect();
await reservePosStock(redis, config.POS_STOCK_KEY, catalog, sales);
console.log(`Publishing ${sales.length} sales to ${config.EXCHANGE} …`);
const rabbit = new Connection(config.RABBITMQ_URL);
const started = performance.now();
await publishSales(rabbit, config.EXCHANGE, config.ROUTING_KEY, sales);

const sql = postgres(config.DATABASE_URL, {
  max: 1,
  onnotice: () => {},
  connection: { search_path: config.LEDGER_SCHEMA },
});
const expectedChanges = sales.reduce(
  (n, s) => n + new Set(s.items.map((i) => i.producto_sku)).size * (s.tienda_id === meli.tiendaId ? 2 : 1),
  0,
);
for (let i = 0;; i++) {
  const [{ done, total }] = await sql<{ done: number; total: number }[]>`
    select count(*) filter (where status in ('applied', 'failed'))::int as done, count(*)::int as total
      from stock_change where event_id = any(${sales.map((s) => s.event_id)})`;
  if (total === expectedChanges && done === total) break;
  if (i > 600) throw new Error(`timed out: ${done}/${expectedChanges} changes settled`);
  await new Promise((r) => setTimeout(r, 100));
}
const seconds = (performance.now() - started) / 1000;
const calls = sandbox.stats().mutationsApplied;

const rows = [...sold.values()].sort((a, b) =>
  a.sku.localeCompare(b.sku) || a.tiendaId.localeCompare(b.tiendaId)
);
const table = rows.map((r) => {
  const b = before.get(`${r.sku}|${r.tiendaId}`)!;
  const after = sandbox.availableFor(r.productoId, r.tiendaId) ?? 0;
  return {
    SKU: r.sku,
    store: storeName.get(r.tiendaId) ?? r.tiendaId,
    before: b,
    sold: r.qty,
    after,
    ok: after === b - r.qty ? "✅" : "❌",
  };
});
console.table(table);
const posKey = (r: { tiendaId: string; productoId: string }) =>
  config.POS_STOCK_KEY.replace("{tienda_id}", r.tiendaId).replace("{producto_id}", r.productoId);
const meliTable = [];
for (const r of rows.filter((r) => r.tiendaId === meli.tiendaId)) {
  const pos = Number(await redis.get(posKey(r)));
  const after = meli.quantityOf(r.productoId);
  meliTable.push({
    SKU: r.sku,
    "MeLi before": meliBefore.get(`${r.sku}|${r.tiendaId}`),
    sold: r.qty,
    "POS stock": pos,
    "MeLi after": after,
    ok: after === Math.max(0, pos) ? "✅" : "❌",
  });
}
console.log(`MercadoLibre mirrors ${storeName.get(meli.tiendaId)}'s POS stock:`);
console.table(meliTable);

// Marketplace orders close the loop: an order on one marketplace leaves the other one, and the POS is
// told on marketplace.sales.created (as the POS would see it, from a queue bound here).
const posEvents: { routingKey: string; messageId?: string; body: unknown }[] = [];
const posListener = rabbit.createConsumer({
  queue: `${config.QUEUE}.demo-pos`,
  queueOptions: { exclusive: true },
  queueBindings: [{ exchange: config.EXCHANGE, routingKey: "marketplace.sales.*" }],
}, (msg) => {
  const raw = msg.body;
  const body = raw instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(raw)) : raw;
  posEvents.push({ routingKey: msg.routingKey, messageId: msg.messageId, body });
});
await new Promise((resolve) => posListener.once("ready", resolve));
const until = async (what: string, ok: () => boolean | Promise<boolean>) => {
  for (let i = 0; !(await ok()); i++) {
    if (i > 300) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};
const store = meli.tiendaId!;
const stocked = catalog.products.filter((p) =>
  (meli.quantityOf(p.producto_id) ?? 0) > 1 && (sandbox.availableFor(p.producto_id, store) ?? 0) > 1 &&
  meli.listingFor(p.producto_id) !== undefined
);
const [viaShopify, viaMeli] = [stocked[0], stocked[1]];
const ordersTable = [];
// A Shopify order (sold at the store's Shopify POS location): MercadoLibre loses the unit.
{
  const meliBeforeOrder = meli.quantityOf(viaShopify.producto_id)!;
  const shopBeforeOrder = sandbox.availableFor(viaShopify.producto_id, store)!;
  const order = sandbox.placeOrder({
    tiendaId: store,
    lines: [{ sku: viaShopify.sku, quantity: 1 }],
    sourceName: "pos",
  });
  await until(
    "MercadoLibre to lose the Shopify order's unit",
    () =>
      meli.quantityOf(viaShopify.producto_id) === meliBeforeOrder - 1 &&
      posEvents.some((e) => JSON.stringify(e.body).includes(String(order.id))),
  );
  ordersTable.push({
    order: `Shopify #${order.id}`,
    SKU: viaShopify.sku,
    "Shopify before → after": `${shopBeforeOrder} → ${sandbox.availableFor(viaShopify.producto_id, store)}`,
    "MeLi before → after": `${meliBeforeOrder} → ${meli.quantityOf(viaShopify.producto_id)}`,
  });
}
// A MercadoLibre order: Shopify loses the unit at the store MercadoLibre draws from.
{
  const listing = meli.listingFor(viaMeli.producto_id)!;
  const meliBeforeOrder = meli.quantityOf(viaMeli.producto_id)!;
  const shopBeforeOrder = sandbox.availableFor(viaMeli.producto_id, store)!;
  const order = meli.sell({
    items: [{ item_id: listing.itemId, variation_id: listing.variationId, quantity: 1 }],
  });
  await until(
    "Shopify to lose the MercadoLibre order's unit",
    () =>
      sandbox.availableFor(viaMeli.producto_id, store) === shopBeforeOrder - 1 &&
      posEvents.some((e) => JSON.stringify(e.body).includes(String(order.id))),
  );
  ordersTable.push({
    order: `MercadoLibre #${order.id}`,
    SKU: viaMeli.sku,
    "Shopify before → after": `${shopBeforeOrder} → ${sandbox.availableFor(viaMeli.producto_id, store)}`,
    "MeLi before → after": `${meliBeforeOrder} → ${meli.quantityOf(viaMeli.producto_id)}`,
  });
}
console.log(`\nMarketplace orders at ${storeName.get(store)}: each one leaves the other marketplace`);
console.table(ordersTable);
console.log("What the POS receives (marketplace.sales.created):");
for (const e of posEvents) {
  console.log(`  ${e.routingKey} message_id=${e.messageId} ${JSON.stringify(e.body)}`);
}
await posListener.close();
const ordersOk = ordersTable.length === 2 && posEvents.length === 2;

const allOk = table.every((r) => r.ok === "✅") && meliTable.every((r) => r.ok === "✅") && ordersOk;
console.log(
  `${sales.length} sales → ${expectedChanges} stock changes → ${calls} Shopify calls in ${
    seconds.toFixed(2)
  } s; ` +
    `${meli.stats().puts} MercadoLibre PUTs; ` + (allOk ? "every quantity matches." : "MISMATCHES above."),
);
const demoKeys = await redis.keys("marketplace-sync-demo:*");
if (demoKeys.length) await redis.del(demoKeys);
await redis.close();

await sql.end();
await service.close();
for (
  const q of [
    config.QUEUE,
    `${config.QUEUE}.dlq`,
    ...config.RETRY_DELAYS.map((d) => `${config.QUEUE}.retry.${d}ms`),
  ]
) {
  await rabbit.queueDelete({ queue: q }).catch(() => {});
}
await rabbit.exchangeDelete({ exchange: config.EXCHANGE }).catch(() => {});
const admin = postgres(config.DATABASE_URL, { max: 1, onnotice: () => {} });
await admin.unsafe(`drop schema if exists ${config.LEDGER_SCHEMA} cascade`);
await admin.end();
await rabbit.close();
Deno.exit(allOk ? 0 : 1);
