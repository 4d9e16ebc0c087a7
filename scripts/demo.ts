/**
 * `deno task demo`: the whole path in one command. Starts the service on the
 * built-in Shopify and MercadoLibre sandboxes (RabbitMQ, Postgres and Redis on
 * loopback), publishes sample sales as the POS would (lowering its Redis stock
 * keys first), waits until both marketplaces reflect them, and prints a
 * before/after stock table for every SKU and store it touched, and for the
 * listings MercadoLibre mirrors.
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
const allOk = table.every((r) => r.ok === "✅") && meliTable.every((r) => r.ok === "✅");
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
