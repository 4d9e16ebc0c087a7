/**
 * Publishes realistic `sales.created` events to `blend_events`, as the POS does.
 *
 *   deno task publish-sample --count 100 --stores 3 --skus 20 [--rate 50] [--seed 7]
 *
 * Options: --count N events (default 10), --stores N (default 3), --skus N
 * (default 20), --max-items N per sale (default 3), --rate N events per second
 * (default: as fast as confirms allow), --seed N for a repeatable run,
 * --no-message-id to exercise the body-hash identity. Uses RABBITMQ_URL,
 * EXCHANGE and ROUTING_KEY like the service.
 */
import { parseArgs } from "node:util";
import { Connection } from "rabbitmq-client";

/** One sale as the POS publishes it (DESIGN.md §3). */
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

const PRODUCTS = ["Remera", "Buzo", "Jean", "Campera", "Gorra", "Medias", "Short", "Camisa"];
const PAYMENTS = ["EFECTIVO", "DEBITO", "CREDITO", "MERCADOPAGO"];

/** Deterministic uuid-shaped id from a label, so store/product ids are stable across runs. */
export function stableUuid(label: string): string {
  let h1 = 0x811c9dc5, h2 = 0x01000193;
  for (const ch of label) {
    h1 = Math.imul(h1 ^ ch.charCodeAt(0), 16777619) >>> 0;
    h2 = Math.imul(h2 ^ ch.charCodeAt(0), 2246822519) >>> 0;
  }
  const hex = (h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0")).repeat(2);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${
    hex.slice(20, 32)
  }`;
}

/** The SKU used for product number `n` (REMERA-001, BUZO-002, …). */
export function sampleSku(n: number): string {
  return `${PRODUCTS[n % PRODUCTS.length].toUpperCase()}-${String(n + 1).padStart(3, "0")}`;
}

/** The tienda_id of store number `n`. */
export function sampleStore(n: number): string {
  return stableUuid(`tienda-${n + 1}`);
}

/** Builds `count` sales over `stores` stores and `skus` SKUs with a seeded PRNG. */
export function sampleSales(
  options: { count: number; stores: number; skus: number; maxItems: number; seed: number },
): SampleSale[] {
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
      const n = pick(options.skus);
      const cantidad = 1 + pick(3);
      const precio = 500 + 250 * (n % 8);
      return {
        producto_id: stableUuid(`producto-${n}`),
        producto_nombre: `${PRODUCTS[n % PRODUCTS.length]} Blend ${n + 1}`,
        producto_sku: sampleSku(n),
        cantidad,
        precio_unitario: precio,
        subtotal: precio * cantidad,
      };
    });
    sales.push({
      event_id: crypto.randomUUID(),
      tienda_id: sampleStore(pick(options.stores)),
      total: items.reduce((sum, item) => sum + item.subtotal, 0),
      metodo_pago: PAYMENTS[pick(PAYMENTS.length)],
      items,
      timestamp: new Date().toISOString(),
    });
  }
  return sales;
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
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task publish-sample [--count N] [--stores N] [--skus N] [--max-items N] [--rate N/s] [--seed N] [--no-message-id]",
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
  const sales = sampleSales({
    count,
    stores: number("stores", values.stores),
    skus: number("skus", values.skus),
    maxItems: number("max-items", values["max-items"]),
    seed: number("seed", values.seed),
  });
  const exchange = Deno.env.get("EXCHANGE") || "blend_events";
  const routingKey = Deno.env.get("ROUTING_KEY") || "sales.created";
  const rabbit = new Connection(Deno.env.get("RABBITMQ_URL") || "amqp://guest:guest@127.0.0.1:5672");
  const publisher = rabbit.createPublisher({
    confirm: true,
    exchanges: [{ exchange, type: "topic", durable: true }],
  });
  const started = performance.now();
  let sent = 0;
  const window: Promise<void>[] = [];
  for (const sale of sales) {
    if (rate) {
      const due = started + (sent / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    window.push(publisher.send({
      exchange,
      routingKey,
      contentType: "application/json",
      durable: true,
      messageId: values["no-message-id"] ? undefined : sale.event_id,
    }, JSON.stringify(sale)));
    sent++;
    if (window.length >= 500) await Promise.all(window.splice(0));
    if (sent % 1000 === 0) console.error(`published ${sent}/${count}`);
  }
  await Promise.all(window);
  const seconds = (performance.now() - started) / 1000;
  console.log(`published ${sent} sale events to ${exchange} (${routingKey}) in ${seconds.toFixed(2)} s`);
  await publisher.close();
  await rabbit.close();
}
