/**
 * Review of issue #14 (marketplace orders): cases the first round of tests did not cover — an unsigned
 * MeLi notification larger than the limit sent without a Content-Length, a restock that reaches the
 * ledger before its order, and an order seen again with a line the first sight did not carry.
 */
import assert from "node:assert/strict";
import type { OrderEvent } from "../src/model/marketplace_order.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { integration, startHarness } from "./helpers.ts";

const catalog = defaultCatalog();
/** In sandbox mode MercadoLibre mirrors the catalog's first store: it shows that store only. */
const STORE = catalog.stores[0].tienda_id;

function created(
  orderId: string,
  lines: OrderEvent["lines"],
  via: OrderEvent["via"] = "webhook",
): OrderEvent {
  return {
    kind: "created",
    origin: "shopify",
    orderId,
    tiendaId: STORE,
    lines,
    occurredAt: new Date(Date.now() - 2_000).toISOString(),
    via,
  };
}

/**
 * POSTs `bytes` bytes as a chunked body (no Content-Length) over a raw socket and then keeps the body open,
 * as a client that never stops sending does; the answer's status, or "no answer" after `ms`.
 */
async function postEndless(url: string, bytes: number, ms: number): Promise<number | "no answer"> {
  const { hostname, port, pathname } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const encoder = new TextEncoder();
  try {
    await conn.write(encoder.encode(
      `POST ${pathname} HTTP/1.1\r\nHost: ${hostname}\r\ncontent-type: application/json\r\n` +
        "transfer-encoding: chunked\r\n\r\n",
    ));
    const chunk = encoder.encode(`400\r\n${" ".repeat(1024)}\r\n`);
    const answer = (async () => {
      const buffer = new Uint8Array(1024);
      const n = await conn.read(buffer).catch(() => null);
      const head = n ? new TextDecoder().decode(buffer.subarray(0, n)) : "";
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
      return status ? Number(status) : "no answer" as const;
    })();
    for (let sent = 0; sent < bytes; sent += 1024) await conn.write(chunk).catch(() => {});
    // The body never ends: only the server's answer (or our patience) ends the exchange.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      answer,
      new Promise<"no answer">((resolve) => timer = setTimeout(() => resolve("no answer"), ms)),
    ]);
    clearTimeout(timer);
    return result;
  } finally {
    conn.close();
  }
}

integration(
  "webhook routes refuse a body over WEBHOOK_MAX_BYTES without reading it to the end (no Content-Length)",
  async () => {
    const h = await startHarness({
      CHANNELS: "shopify,mercadolibre",
      WEBHOOK_MAX_BYTES: "4096",
      DISPATCH_ENABLED: "true",
    });
    try {
      // Shopify's route reads at most the limit and answers 413.
      assert.equal(await postEndless(`${h.service.url}/webhooks/shopify`, 16 * 1024, 3_000), 413);
      // MeLi's route is unauthenticated by design: it must stop reading at the limit just the same,
      // or anyone can make it buffer an unbounded body in memory.
      assert.equal(
        await postEndless(`${h.service.url}/webhooks/mercadolibre`, 16 * 1024, 3_000),
        413,
        "MeLi's route must answer 413 once the body passes the limit",
      );
    } finally {
      await h.close();
    }
  },
);

integration(
  "a refund applied before its order (webhooks out of order, or two replicas racing) still puts the units back",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify,mercadolibre" });
    try {
      const line = { lineId: "L1", sku: "REMERA-001", quantity: 2 };
      // refunds/create processed first (Shopify does not order its deliveries; or the orders/create
      // delivery is still in its transaction on another replica): the ledger has no order yet.
      const early = await h.service.orders.apply({
        kind: "restock",
        origin: "shopify",
        orderId: "3001",
        restockId: "900001",
        lines: [line],
        occurredAt: new Date().toISOString(),
        via: "webhook",
      });
      const order = await h.service.orders.apply(created("3001", [line]));
      assert.equal(order.outcome, "applied");
      const [{ net }] = await h.sql<{ net: number }[]>`
        select coalesce(sum(delta), 0)::int as net from stock_change
         where channel = 'mercadolibre' and event_id like 'order:shopify:3001%'`;
      const [held] = await h.service.orders.unrecorded([{ tiendaId: STORE, sku: "REMERA-001" }]);
      assert.deepEqual(
        { early: early.outcome, net, held },
        { early: early.outcome, net: 0, held: 0 },
        "Shopify put the 2 units back: MercadoLibre must end where it started and nothing stays held " +
          "(the refund's delivery was settled as done, so no retry brings it back)",
      );
    } finally {
      await h.close();
    }
  },
);

integration(
  "an order seen again with a line the first sight lacked (catch-up read capped at 50 lines, an order edit) " +
    "lowers the other channels by that line too",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify,mercadolibre" });
    try {
      // The catch-up reads lineItems(first: 50): an order of 51 lines comes in without its last line,
      // and the log says "the rest relies on its webhooks".
      const lines = Array.from({ length: 51 }, (_, i) => ({
        lineId: `L${i + 1}`,
        sku: i === 50 ? "BUZO-GRIS-L" : "REMERA-001",
        quantity: 1,
      }));
      assert.equal(
        (await h.service.orders.apply(created("3002", lines.slice(0, 50), "catch_up"))).outcome,
        "applied",
      );
      // The webhook with the whole order arrives after the catch-up applied the truncated one.
      await h.service.orders.apply(created("3002", lines, "webhook"));
      const rows = await h.sql<{ sku: string; delta: number }[]>`
        select sku, sum(delta)::int as delta from stock_change
         where channel = 'mercadolibre' and event_id like 'order:shopify:3002%' group by sku order by sku`;
      assert.deepEqual(
        rows.map((r) => ({ ...r })),
        [{ sku: "BUZO-GRIS-L", delta: -1 }, { sku: "REMERA-001", delta: -50 }],
        "the 51st line (BUZO-GRIS-L) was sold on Shopify: MercadoLibre must lose it too",
      );
    } finally {
      await h.close();
    }
  },
);
