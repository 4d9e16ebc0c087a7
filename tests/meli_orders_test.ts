/**
 * MercadoLibre's orders reaching the service: the `orders_v2` notifications route over real
 * HTTP, fed by the MeLi sandbox (which sells, cancels and notifies like MeLi), the fetch with our
 * token, the per-minute fetch cap in Redis, the deliveries sweep and the catch-up source.
 *
 * The first tests record what the route asks of the order book (a small in-test book); the
 * last ones use the real one (OrderLedger on Postgres) and assert the stock changes it records.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import { MeliClient } from "../src/channels/mercadolibre/client.ts";
import { FetchCap } from "../src/channels/mercadolibre/fetch_cap.ts";
import { orderEvents } from "../src/channels/mercadolibre/order_events.ts";
import { MeliOrders } from "../src/channels/mercadolibre/orders.ts";
import { StaticToken } from "../src/channels/mercadolibre/tokens.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { OrderLedger } from "../src/ledger/orders.ts";
import { createMetrics } from "../src/metrics.ts";
import type { OrderEffect, OrderEvent, Quarantine } from "../src/model/marketplace_order.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import type { OrderBook, StoredDelivery } from "../src/sync/channel.ts";
import { LocalBucket } from "../src/sync/cost_bucket.ts";
import { DATABASE_URL, integration, REDIS_URL, uniqueName, waitFor } from "./helpers.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const catalog = defaultCatalog();
const STORE = catalog.stores[0].tienda_id;

/** An order book that keeps everything in memory and records each call. */
class RecordingBook implements OrderBook {
  applied: OrderEvent[] = [];
  received: { deliveryId: string; duplicate: boolean }[] = [];
  settled = new Map<string, { done: true } | { quarantine: Quarantine }>();
  #deliveries: StoredDelivery[] = [];

  apply(event: OrderEvent): Promise<OrderEffect> {
    this.applied.push(structuredClone(event));
    return Promise.resolve({ outcome: "applied", changes: event.lines.length });
  }
  receive(d: { deliveryId: string; topic: string; body: string }) {
    const known = this.#deliveries.find((x) => x.deliveryId === d.deliveryId);
    this.received.push({ deliveryId: d.deliveryId, duplicate: known !== undefined });
    if (known) return Promise.resolve({ id: known.id, duplicate: true });
    const stored = { id: String(this.#deliveries.length + 1), attempts: 0, ...d };
    this.#deliveries.push(stored);
    return Promise.resolve({ id: stored.id, duplicate: false });
  }
  unsettled(_channel: string, limit: number) {
    return Promise.resolve(this.#deliveries.filter((d) => !this.settled.has(d.id)).slice(0, limit));
  }
  settle(id: string, outcome: { done: true } | { quarantine: Quarantine }) {
    this.settled.set(id, outcome);
    return Promise.resolve();
  }
  /** Settle outcomes, as `done` or the quarantine reason. */
  outcomes(): string[] {
    return [...this.settled.values()].map((o) => "done" in o ? "done" : o.quarantine.reason);
  }
}

interface Rig {
  sb: MeliSandbox;
  orders: MeliOrders;
  /** Where the route listens (the sandbox's notifications go there). */
  hookUrl: string;
  /** Sandbox requests to `/orders…` so far. */
  orderFetches(): number;
  notify(body: unknown): Promise<{ status: number; body: Json }>;
}

async function withRig(
  book: OrderBook,
  fn: (rig: Rig) => Promise<void>,
  options: { perMinute?: number; otherSellers?: boolean } = {},
): Promise<void> {
  const sb = await startMeliSandbox({
    catalog,
    ratePerSecond: 1_000,
    notificationRetryDelaysMs: [50],
    ...(options.otherSellers ? { otherSellers: [{ userId: 555, catalog }] } : {}),
  });
  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const client = new MeliClient({
    baseUrl: sb.url,
    tokens: new StaticToken(sb.staticToken),
    budget: new LocalBucket({ max: 1_000, restoreRate: 1_000 }),
    timeoutMs: 5_000,
    metrics: createMetrics(`${uniqueName("test_meli_orders")}_`, () => Promise.resolve([])),
    rateLimitRetries: 0,
    rateLimitBackoffMs: 10,
  });
  const orders = new MeliOrders({
    client,
    book,
    sellerId: () => Promise.resolve(String(sb.userId)),
    tiendaId: STORE,
    cap: new FetchCap(redis, uniqueName("test:order-fetches"), options.perMinute ?? 100),
    maxBytes: 4096,
  });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      new URL(req.url).pathname === "/webhooks/mercadolibre"
        ? orders.route.handle(req)
        : new Response(null, { status: 404 }),
  );
  const hookUrl = `http://127.0.0.1:${server.addr.port}/webhooks/mercadolibre`;
  sb.setNotificationUrl(hookUrl);
  try {
    await fn({
      sb,
      orders,
      hookUrl,
      orderFetches: () => sb.requestLog().filter((r) => r.path.startsWith("/orders")).length,
      notify: async (body) => {
        const res = await fetch(hookUrl, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: typeof body === "string" ? body : JSON.stringify(body),
        });
        return { status: res.status, body: await res.json() };
      },
    });
  } finally {
    await orders.stop();
    await sb.close();
    await server.shutdown();
    await redis.quit();
  }
}

/** A product without variations with stock, and one variation of an item with variations. */
function listings(sb: MeliSandbox) {
  const plain = sb.listings.find((l) => l.variationId === null && (sb.quantityOf(l.productoId) ?? 0) >= 5)!;
  const variation = sb.listings.find((l) =>
    l.variationId !== null && (sb.quantityOf(l.productoId) ?? 0) >= 5
  )!;
  return { plain, variation };
}

function notification(sb: MeliSandbox, resource: string, overrides: Record<string, unknown> = {}) {
  const now = new Date().toISOString();
  return {
    _id: crypto.randomUUID(),
    resource,
    user_id: sb.userId,
    topic: "orders_v2",
    application_id: 1234567890123456,
    attempts: 1,
    sent: now,
    received: now,
    ...overrides,
  };
}

Deno.test("order events: paid → created, cancelled → restock 'cancel', lines by listing, unusable → reason", () => {
  const order = {
    id: 2000009000000001,
    status: "paid",
    date_created: "2026-12-04T10:00:00.000-03:00",
    date_last_updated: "2026-12-04T10:05:00.000-03:00",
    order_items: [
      { item: { id: "MLA1", variation_id: null, seller_sku: "A" }, quantity: 2 },
      { item: { id: "MLA2", variation_id: 180000000001, seller_sku: "B" }, quantity: 1 },
      { item: { id: "MLA3", variation_id: null, seller_sku: null }, quantity: 1 },
    ],
    seller: { id: 123 },
  };
  const paid = orderEvents(order, STORE, "notification");
  assert.ok(paid.ok);
  assert.equal(paid.sellerId, "123");
  assert.equal(paid.updatedAt, "2026-12-04T13:05:00.000Z");
  assert.deepEqual(paid.unmapped, ["MLA3"]);
  assert.deepEqual(paid.events, [{
    kind: "created",
    origin: "mercadolibre",
    orderId: "2000009000000001",
    tiendaId: STORE,
    lines: [{ lineId: "MLA1", sku: "A", quantity: 2 }, {
      lineId: "MLA2/180000000001",
      sku: "B",
      quantity: 1,
    }],
    occurredAt: "2026-12-04T13:00:00.000Z",
    via: "notification",
  }]);
  const cancelled = orderEvents({ ...order, status: "cancelled" }, STORE, "catch_up");
  assert.ok(cancelled.ok);
  assert.equal(cancelled.events.length, 1);
  assert.equal(cancelled.events[0].kind, "restock");
  assert.equal((cancelled.events[0] as { restockId: string }).restockId, "cancel");
  assert.equal(cancelled.events[0].occurredAt, "2026-12-04T13:05:00.000Z");
  const partly = orderEvents({ ...order, status: "partially_refunded" }, STORE, "catch_up");
  assert.ok(partly.ok);
  assert.deepEqual(
    partly.events.map((e) => e.kind),
    ["created"],
    "a partly refunded order still sold its units",
  );
  const pending = orderEvents({ ...order, status: "payment_required" }, STORE, "catch_up");
  assert.ok(pending.ok);
  assert.deepEqual(pending.events, [], "an unpaid order takes nothing yet");
  const broken = orderEvents({ ...order, order_items: "x" }, STORE, "catch_up");
  assert.ok(!broken.ok);
  assert.equal(broken.reason, "unusable_order");
});

integration(
  "MeLi notifications: what is not ours or not a notification is refused before anything is stored or fetched",
  async () => {
    const book = new RecordingBook();
    await withRig(book, async ({ sb, notify, orderFetches }) => {
      sb.setNotificationUrl(undefined);
      const order = sb.sell({ items: [{ item_id: listings(sb).plain.itemId, quantity: 1 }] });
      const forged = await notify(notification(sb, `/orders/${order.id}`, { user_id: 42 }));
      assert.equal(forged.status, 200, "answered 200: MeLi must not re-send it");
      assert.equal((await notify(notification(sb, "/items/MLA1", { topic: "items" }))).status, 200);
      assert.equal((await notify(notification(sb, "/questions/5"))).status, 200);
      assert.equal((await notify("{not json")).status, 400);
      assert.equal((await notify({ resource: `/orders/${order.id}` })).status, 400);
      assert.equal(
        (await notify(notification(sb, `/orders/${order.id}`, { pad: "x".repeat(5000) }))).status,
        413,
      );
      assert.deepEqual(book.received, [], "nothing stored");
      assert.equal(orderFetches(), 0, "nothing fetched");
      assert.deepEqual(book.applied, []);
    });
  },
);

integration(
  "MeLi notifications: a sale is fetched with our token and applied as created; its cancellation as a restock",
  async () => {
    const book = new RecordingBook();
    await withRig(book, async ({ sb, orders }) => {
      const { plain, variation } = listings(sb);
      const order = sb.sell({
        items: [
          { item_id: plain.itemId, quantity: 2 },
          { item_id: variation.itemId, variation_id: variation.variationId, quantity: 1 },
        ],
      });
      await waitFor(() => book.settled.size === 1, "the sale's notification settled");
      await orders.settled();
      assert.deepEqual(book.outcomes(), ["done"]);
      assert.equal(book.applied.length, 1);
      const created = book.applied[0];
      assert.equal(created.kind, "created");
      assert.equal(created.orderId, String(order.id));
      assert.equal(created.via, "notification");
      assert.equal(created.kind === "created" && created.tiendaId, STORE);
      assert.deepEqual(created.lines, [
        { lineId: plain.itemId, sku: plain.sku, quantity: 2 },
        { lineId: `${variation.itemId}/${variation.variationId}`, sku: variation.sku, quantity: 1 },
      ]);
      const fetches = sb.requestLog().filter((r) => r.path.startsWith("/orders"));
      assert.deepEqual(fetches.map((r) => [r.method, r.path, r.status]), [[
        "GET",
        `/orders/${order.id}`,
        200,
      ]]);

      sb.cancelOrder(order.id);
      await waitFor(() => book.settled.size === 2, "the cancellation's notification settled");
      const restock = book.applied[1];
      assert.equal(restock.kind, "restock");
      assert.equal(restock.kind === "restock" && restock.restockId, "cancel");
      assert.deepEqual(restock.lines.map((l) => l.quantity), [2, 1]);
    });
  },
);

integration("MeLi notifications: a re-sent notification is stored once and fetched once", async () => {
  const book = new RecordingBook();
  await withRig(book, async ({ sb, orders, notify, orderFetches }) => {
    sb.setNotificationUrl(undefined);
    const order = sb.sell({ items: [{ item_id: listings(sb).plain.itemId, quantity: 1 }] });
    const body = notification(sb, `/orders/${order.id}`);
    const answers = await Promise.all([notify(body), notify({ ...body, attempts: 2 }), notify(body)]);
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
    await orders.settled();
    assert.deepEqual(book.received.map((r) => r.duplicate).sort(), [false, true, true]);
    assert.equal(orderFetches(), 1);
    assert.equal(book.applied.length, 1);
  });
});

integration(
  "MeLi notifications: another seller's order is not applied (403, or readable as our purchase)",
  async () => {
    const book = new RecordingBook();
    await withRig(book, async ({ sb, orders, notify }) => {
      const theirItem = sb.itemsOf(555)[0];
      const theirs = sb.sell({ items: [{ item_id: theirItem, quantity: 1 }] });
      const bought = sb.sell({ items: [{ item_id: theirItem, quantity: 1 }], buyer_id: sb.userId });
      await notify(notification(sb, `/orders/${theirs.id}`));
      await notify(notification(sb, `/orders/${bought.id}`));
      await notify(notification(sb, "/orders/2000009999999999"));
      await waitFor(() => book.settled.size === 3, "three deliveries settled");
      await orders.settled();
      assert.deepEqual(book.outcomes().sort(), ["not_our_order", "not_our_seller", "order_not_found"]);
      assert.deepEqual(book.applied, []);
    }, { otherSellers: true });
  },
);

integration(
  "MeLi notifications: past the per-minute cap they are kept but not fetched, by the route or the sweep, until the minute is over",
  async () => {
    const book = new RecordingBook();
    await withRig(book, async ({ sb, orders, notify, orderFetches }) => {
      sb.setNotificationUrl(undefined);
      const { plain } = listings(sb);
      const ids = [1, 2, 3, 4].map(() => sb.sell({ items: [{ item_id: plain.itemId, quantity: 1 }] }).id);
      for (const id of ids) assert.equal((await notify(notification(sb, `/orders/${id}`))).status, 200);
      await orders.settled();
      assert.equal(orderFetches(), 2, "the cap of 2 per minute");
      assert.equal(book.received.length, 4, "all four kept");
      assert.equal(book.settled.size, 2);
      await orders.sweep();
      assert.equal(orderFetches(), 2, "still capped within this minute: the sweep waits too");
      assert.equal(book.settled.size, 2);
    }, { perMinute: 2 });
  },
);

integration(
  "MeLi notifications: MeLi unavailable leaves the delivery unsettled; the sweep settles it",
  async () => {
    const book = new RecordingBook();
    await withRig(book, async ({ sb, orders, notify }) => {
      sb.setNotificationUrl(undefined);
      const order = sb.sell({ items: [{ item_id: listings(sb).plain.itemId, quantity: 1 }] });
      sb.setFaults({ rateLimitAll: true });
      assert.equal((await notify(notification(sb, `/orders/${order.id}`))).status, 200);
      await orders.settled();
      assert.equal(book.settled.size, 0, "not settled: nothing is known about the order yet");
      sb.setFaults({ rateLimitAll: false });
      await orders.sweep();
      await orders.settled();
      assert.deepEqual(book.outcomes(), ["done"]);
      assert.equal(book.applied.length, 1);
    });
  },
);

integration(
  "MeLi catch-up: orders updated since the watermark, oldest update first, every page read",
  async () => {
    const book = new RecordingBook();
    await withRig(book, async ({ sb, orders }) => {
      sb.setNotificationUrl(undefined);
      const before = new Date(Date.now() - 1_000).toISOString();
      const items = sb.listings.filter((l) =>
        l.variationId === null && (sb.quantityOf(l.productoId) ?? 0) >= 2
      )
        .slice(0, 30);
      const sold: number[] = [];
      for (const l of items) sold.push(sb.sell({ items: [{ item_id: l.itemId, quantity: 1 }] }).id);
      for (const l of items) sold.push(sb.sell({ items: [{ item_id: l.itemId, quantity: 1 }] }).id);
      await new Promise((r) => setTimeout(r, 5));
      sb.cancelOrder(sold[0]); // created first, updated last
      const pages: { events: OrderEvent[]; updatedAt: string }[][] = [];
      for await (const page of orders.updatedSince(before, AbortSignal.timeout(10_000))) pages.push(page);
      const all = pages.flat();
      assert.equal(all.length, 60, "two search pages of MeLi's 50 read");
      const updated = all.map((o) => o.updatedAt);
      assert.deepEqual(updated, [...updated].sort(), "oldest update first");
      const last = all.at(-1)!.events;
      assert.equal(last[0].kind, "restock");
      assert.equal(last[0].orderId, String(sold[0]));
      assert.ok(
        all.slice(0, -1).every((o) => o.events[0].kind === "created" && o.events[0].via === "catch_up"),
      );
      const searches = sb.requestLog().filter((r) => r.path === "/orders/search");
      assert.equal(searches.length, 2);
      assert.ok(searches.every((r) => new URLSearchParams(r.query).get("sort") === "date_asc"));
      assert.equal(sb.invalidRequests().length, 0);

      const later = new Date(Date.now() + 60_000).toISOString();
      const none = [];
      for await (const page of orders.updatedSince(later, AbortSignal.timeout(10_000))) none.push(page);
      assert.deepEqual(none, []);
    });
  },
);

// ---- With the real order book (OrderLedger on Postgres) ----

async function withLedger(fn: (sql: postgres.Sql, ledger: OrderLedger) => Promise<void>): Promise<void> {
  const schema = uniqueName("test_meli_orders");
  const sql = postgres(DATABASE_URL, { max: 3, onnotice: () => {}, connection: { search_path: schema } });
  try {
    await migrate(sql, schema);
    await fn(sql, new OrderLedger(sql, { channels: ["shopify", "mercadolibre"] }));
  } finally {
    await sql.unsafe(`drop schema if exists "${schema}" cascade`);
    await sql.end();
  }
}

/** The stock changes recorded per channel, as `channel sku delta`. */
async function changes(sql: postgres.Sql): Promise<string[]> {
  const rows = await sql<{ channel: string; sku: string; delta: number }[]>`
    select channel, sku, delta from stock_change where delta <> 0 order by id`;
  return rows.map((r) => `${r.channel} ${r.sku} ${r.delta}`);
}

integration(
  "MeLi orders with the real ledger: forged, duplicate and foreign notifications change nothing; a sale lowers Shopify only; a cancellation restocks once",
  async () => {
    await withLedger(async (sql, ledger) => {
      await withRig(ledger, async ({ sb, orders, notify, orderFetches }) => {
        const { plain } = listings(sb);
        // A forged notification for another user: no effect, no fetch.
        const ours = sb.sell({ items: [{ item_id: plain.itemId, quantity: 2 }] });
        await waitFor(async () => (await changes(sql)).length === 1, "the sale's stock change");
        await orders.settled();
        assert.deepEqual(
          await changes(sql),
          [`shopify ${plain.sku} -2`],
          "Shopify lowered, MeLi never again",
        );
        const fetchesAfterSale = orderFetches();
        assert.equal((await notify(notification(sb, `/orders/${ours.id}`, { user_id: 42 }))).status, 200);
        assert.equal(orderFetches(), fetchesAfterSale, "a forged user_id costs no fetch");

        // The sandbox re-sends nothing here; the same notification posted again is a duplicate.
        const [first] = sb.notifications();
        assert.equal((await notify(first.notification)).status, 200);
        await orders.settled();
        assert.equal(orderFetches(), fetchesAfterSale, "a duplicate delivery is not fetched again");

        // Another seller's order named in a notification with our user_id: not applied.
        const theirs = sb.sell({ items: [{ item_id: sb.itemsOf(555)[0], quantity: 1 }] });
        await notify(notification(sb, `/orders/${theirs.id}`));
        await orders.settled();

        // A new notification of the same order (a later change): fetched, a duplicate inside apply.
        await notify(notification(sb, `/orders/${ours.id}`));
        await orders.settled();

        sb.cancelOrder(ours.id);
        await waitFor(async () => (await changes(sql)).length === 2, "the cancellation's stock change");
        await orders.settled();
        // The cancellation seen again (catch-up and another notification): restocked once.
        for await (
          const _ of orders.updatedSince(
            new Date(Date.now() - 60_000).toISOString(),
            AbortSignal.timeout(5_000),
          )
        ) {
          for (const o of _) for (const e of o.events) await ledger.apply(e);
        }
        await notify(notification(sb, `/orders/${ours.id}`));
        await orders.settled();
        assert.deepEqual(await changes(sql), [`shopify ${plain.sku} -2`, `shopify ${plain.sku} 2`]);

        const deliveries = await sql<{ reason: string | null; settled: boolean }[]>`
        select quarantine_reason as reason, settled_at is not null as settled from order_delivery order by id`;
        assert.ok(deliveries.every((d) => d.settled), "every stored delivery settled");
        assert.deepEqual(deliveries.map((d) => d.reason).filter(Boolean), ["not_our_order"]);
      }, { otherSellers: true });
    });
  },
);
