/**
 * Shopify orders (issue #14): the `/webhooks/shopify` route, its payloads as order events, and
 * the catch-up source — first against a small recording order book (parse and route only), then
 * through the running service in sandbox mode (real RabbitMQ, Postgres, Redis, the real order
 * ledger, and the Shopify sandbox placing orders and delivering signed webhooks).
 */
import assert from "node:assert/strict";
import { locationMap } from "../src/channels/shopify/channel.ts";
import {
  orderStoreRule,
  parseShopifyWebhook,
  shopifyOrderSource,
  ShopifyOrderWebhooks,
} from "../src/channels/shopify/orders.ts";
import { type RunningService, startService } from "../src/main.ts";
import { createMetrics } from "../src/metrics.ts";
import type { OrderEffect, OrderEvent, Quarantine } from "../src/model/marketplace_order.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type ShopifySandbox, startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import type { OrderBook, StoredDelivery } from "../src/sync/channel.ts";
import {
  type Harness,
  harnessFor,
  integration,
  sandboxShopifyClient,
  testConfig,
  uniqueName,
  waitFor,
} from "./helpers.ts";

const catalog = defaultCatalog();
const STORES = catalog.stores.map((s) => s.tienda_id);
/** A plain SKU with stock at the first store (the one the MeLi sandbox mirrors). */
const PRODUCT = catalog.products.find((p) =>
  /^[A-Z0-9-]+$/.test(p.sku) && p.sku !== "MATE-IMP-01" && (p.stock[STORES[0]] ?? 0) >= 5 &&
  !p.meli_item
)!;
const SKU = PRODUCT.sku;
const SECRET = "shpss_test_secret_0123456789";

async function hmac(secret: string, body: string | Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, bytes as BufferSource));
  return btoa(String.fromCharCode(...mac));
}

function webhookRequest(
  url: string,
  topic: string,
  body: string,
  headers: Record<string, string | undefined>,
): Request {
  const h = new Headers({ "content-type": "application/json", "x-shopify-topic": topic });
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) h.set(k, v);
  return new Request(url, { method: "POST", headers: h, body });
}

/** Records what the route asks of the order book (unit tests of parsing and the route only). */
class RecordingBook implements OrderBook {
  received: { deliveryId: string; topic: string; body: string }[] = [];
  applied: OrderEvent[] = [];
  settled: { id: string; outcome: { done: true } | { quarantine: Quarantine } }[] = [];
  apply(event: OrderEvent): Promise<OrderEffect> {
    this.applied.push(event);
    return Promise.resolve({ outcome: "applied", changes: 1 });
  }
  receive(d: { deliveryId: string; topic: string; body: string }) {
    const known = this.received.findIndex((r) => r.deliveryId === d.deliveryId);
    if (known >= 0) return Promise.resolve({ id: String(known), duplicate: true });
    this.received.push(d);
    return Promise.resolve({ id: String(this.received.length - 1), duplicate: false });
  }
  unsettled(): Promise<StoredDelivery[]> {
    return Promise.resolve([]);
  }
  settle(id: string, outcome: { done: true } | { quarantine: Quarantine }) {
    this.settled.push({ id, outcome });
    return Promise.resolve();
  }
}

const LOC_A = "gid://shopify/Location/101";
const LOC_B = "gid://shopify/Location/102";
const twoStores = locationMap({ "store-a": LOC_A, "store-b": LOC_B });

function orderPayload(overrides: Record<string, unknown> = {}) {
  return {
    id: 5900000000001,
    name: "#1001",
    created_at: "2026-12-04T15:02:45-03:00",
    updated_at: "2026-12-04T15:02:45-03:00",
    cancelled_at: null,
    location_id: 101,
    line_items: [
      { id: 15000000000001, sku: "MATE-01", quantity: 2 },
      { id: 15000000000002, sku: null, quantity: 1 },
    ],
    refunds: [],
    ...overrides,
  };
}

// ---- Parsing (no infrastructure) ----

Deno.test("orders/create: the lines with a SKU, at the store its location maps to, the time in UTC", () => {
  const parsed = parseShopifyWebhook(
    "orders/create",
    JSON.stringify(orderPayload()),
    orderStoreRule(twoStores),
  );
  assert.ok("events" in parsed);
  assert.deepEqual(parsed.events, [{
    kind: "created",
    origin: "shopify",
    orderId: "5900000000001",
    tiendaId: "store-a",
    lines: [{ lineId: "15000000000001", sku: "MATE-01", quantity: 2 }],
    occurredAt: "2026-12-04T18:02:45.000Z",
    via: "webhook",
  }]);
});

Deno.test("the store rule: the location's store, else SHOPIFY_ORDER_TIENDA_ID, else the only mapped store, else quarantine", () => {
  const online = JSON.stringify(orderPayload({ location_id: null }));
  const store = (rule: ReturnType<typeof orderStoreRule>, body = online) => {
    const parsed = parseShopifyWebhook("orders/create", body, rule);
    return "events" in parsed
      ? (parsed.events[0] as { tiendaId: string }).tiendaId
      : parsed.quarantine.reason;
  };
  assert.equal(store(orderStoreRule(twoStores, "store-b")), "store-b");
  assert.equal(store(orderStoreRule(twoStores)), "store_unknown");
  assert.equal(store(orderStoreRule(locationMap({ only: LOC_A }))), "only");
  // A location the map does not name falls back the same way.
  const elsewhere = JSON.stringify(orderPayload({ location_id: 999 }));
  assert.equal(store(orderStoreRule(twoStores, "store-b"), elsewhere), "store-b");
  // Two stores on one location cannot be told apart by it.
  assert.equal(
    store(orderStoreRule(locationMap({ x: LOC_A, y: LOC_A }), "y"), JSON.stringify(orderPayload())),
    "y",
  );
  const unknown = parseShopifyWebhook("orders/create", online, orderStoreRule(twoStores));
  assert.ok("quarantine" in unknown && /SHOPIFY_ORDER_TIENDA_ID/.test(unknown.quarantine.error));
});

Deno.test("a cancellation and its refund name the same restock; a no_restock refund restocks nothing", () => {
  const rule = orderStoreRule(twoStores);
  const refund = {
    id: 930000000001,
    order_id: 5900000000001,
    created_at: "2026-12-04T15:10:00-03:00",
    restock: true,
    refund_line_items: [
      {
        id: 1,
        line_item_id: 15000000000001,
        location_id: 102,
        quantity: 2,
        restock_type: "cancel",
        line_item: { sku: "MATE-01" },
      },
      { id: 2, line_item_id: 15000000000002, location_id: null, quantity: 1, restock_type: "no_restock" },
    ],
  };
  const cancelled = parseShopifyWebhook(
    "orders/cancelled",
    JSON.stringify(orderPayload({ cancelled_at: "2026-12-04T15:10:00-03:00", refunds: [refund] })),
    rule,
  );
  const refunded = parseShopifyWebhook("refunds/create", JSON.stringify(refund), rule);
  assert.ok("events" in cancelled && "events" in refunded);
  assert.deepEqual(cancelled.events.map((e) => e.kind), ["created", "restock"]);
  const expected: OrderEvent = {
    kind: "restock",
    origin: "shopify",
    orderId: "5900000000001",
    restockId: "930000000001",
    tiendaId: "store-b",
    lines: [{ lineId: "15000000000001", sku: "MATE-01", quantity: 2 }],
    occurredAt: "2026-12-04T18:10:00.000Z",
    via: "webhook",
  };
  assert.deepEqual(cancelled.events[1], expected);
  assert.deepEqual(refunded.events, [expected]);
  const none = parseShopifyWebhook(
    "refunds/create",
    JSON.stringify({
      ...refund,
      refund_line_items: [{ ...refund.refund_line_items[0], restock_type: "no_restock" }],
    }),
    rule,
  );
  assert.deepEqual(none, { events: [] });
});

Deno.test("signed bodies that cannot be used say why", () => {
  const rule = orderStoreRule(twoStores, "store-a");
  const reason = (topic: string, body: string) => {
    const parsed = parseShopifyWebhook(topic, body, rule);
    return "quarantine" in parsed ? parsed.quarantine.reason : "usable";
  };
  assert.equal(reason("orders/create", "{not json"), "invalid_json");
  assert.equal(reason("orders/create", JSON.stringify({ id: 1 })), "unexpected_payload");
  assert.equal(
    reason("orders/create", JSON.stringify(orderPayload({ created_at: "yesterday" }))),
    "unexpected_payload",
  );
  assert.equal(reason("products/update", JSON.stringify(orderPayload())), "topic_not_handled");
  assert.equal(reason("orders/create", JSON.stringify(orderPayload())), "usable");
});

// ---- The route, against a recording order book ----

Deno.test("the route: 401 without effect unless the HMAC of the raw bytes matches; 413 before reading past the limit", async () => {
  const book = new RecordingBook();
  const hooks = new ShopifyOrderWebhooks({
    secret: SECRET,
    book,
    rule: orderStoreRule(twoStores),
    maxBodyBytes: 4096,
  });
  const url = "http://127.0.0.1/webhooks/shopify";
  const body = JSON.stringify(orderPayload());
  const ids = { "x-shopify-event-id": "ev-1", "x-shopify-webhook-id": "wh-1" };
  const send = async (b: string, headers: Record<string, string | undefined>) => {
    const response = await hooks.handle(webhookRequest(url, "orders/create", b, { ...ids, ...headers }));
    await response.body?.cancel();
    return response.status;
  };
  assert.equal(await send(body, {}), 401, "missing signature");
  assert.equal(await send(body, { "x-shopify-hmac-sha256": await hmac("another secret", body) }), 401);
  assert.equal(await send(body, { "x-shopify-hmac-sha256": "not base64 !!" }), 401);
  // The same JSON re-serialized is other bytes: the signature is over what Shopify sent.
  const reformatted = JSON.stringify(JSON.parse(body), null, 2);
  assert.equal(await send(reformatted, { "x-shopify-hmac-sha256": await hmac(SECRET, body) }), 401);
  const big = JSON.stringify(orderPayload({ note: "x".repeat(5000) }));
  assert.equal(await send(big, { "x-shopify-hmac-sha256": await hmac(SECRET, big) }), 413);
  assert.equal(book.received.length, 0, "nothing refused reached custody");

  assert.equal(await send(body, { "x-shopify-hmac-sha256": await hmac(SECRET, body) }), 200);
  assert.equal(await send(body, { "x-shopify-hmac-sha256": await hmac(SECRET, body) }), 200, "re-delivery");
  await hooks.stop();
  assert.equal(book.received.length, 1);
  assert.equal(book.received[0].deliveryId, "orders/create:ev-1");
  assert.equal(book.applied.length, 1);
  assert.deepEqual(book.settled, [{ id: "0", outcome: { done: true } }]);

  // Without a secret nothing is accepted.
  const closed = new ShopifyOrderWebhooks({ secret: undefined, book, rule: orderStoreRule(twoStores) });
  const response = await closed.handle(
    webhookRequest(url, "orders/create", body, { "x-shopify-hmac-sha256": await hmac("x", body) }),
  );
  await response.body?.cancel();
  assert.equal(response.status, 401);
});

Deno.test("the route: a signed body it cannot use is answered 200 and quarantined with its reason", async () => {
  const book = new RecordingBook();
  const hooks = new ShopifyOrderWebhooks({ secret: SECRET, book, rule: orderStoreRule(twoStores) });
  const body = "{truncated";
  const response = await hooks.handle(
    webhookRequest("http://127.0.0.1/webhooks/shopify", "orders/create", body, {
      "x-shopify-hmac-sha256": await hmac(SECRET, body),
      "x-shopify-webhook-id": "wh-9",
    }),
  );
  await response.body?.cancel();
  assert.equal(response.status, 200);
  await hooks.stop();
  assert.equal(book.applied.length, 0);
  assert.equal(book.settled.length, 1);
  const outcome = book.settled[0].outcome;
  assert.ok("quarantine" in outcome && outcome.quarantine.reason === "invalid_json");
});

// ---- The sandbox and the catch-up source ----

Deno.test("the sandbox sells like Shopify: available moves to committed; a restocking cancellation puts it back once", async () => {
  const sandbox = await startShopifySandbox({ catalog: defaultCatalog() });
  try {
    const before = sandbox.availableFor(PRODUCT.producto_id, STORES[0])!;
    const order = sandbox.placeOrder({ tiendaId: STORES[0], lines: [{ sku: SKU, quantity: 2 }] });
    assert.equal(sandbox.availableFor(PRODUCT.producto_id, STORES[0]), before - 2);
    const variant = sandbox.state().variants.find((v) => v.sku === SKU)!;
    assert.equal(variant.committed[sandbox.locationIdOf(STORES[0])!], 2);
    // Deny policy: no more than is available.
    assert.throws(() => sandbox.placeOrder({ tiendaId: STORES[0], lines: [{ sku: SKU, quantity: before }] }));
    const line = (order.line_items as { id: number }[])[0].id;
    sandbox.refundOrder(order.id as number, [{ lineItemId: line, quantity: 1 }]);
    assert.equal(sandbox.availableFor(PRODUCT.producto_id, STORES[0]), before - 1);
    const cancelled = sandbox.cancelOrder(order.id as number);
    assert.equal(sandbox.availableFor(PRODUCT.producto_id, STORES[0]), before);
    assert.equal((cancelled.refunds as unknown[]).length, 2, "the cancellation is a refund of what was left");
  } finally {
    await sandbox.close();
  }
});

Deno.test("catch-up source: orders(updated_at:>=…) validated by the sandbox gives the webhook's events", async () => {
  // A clock the test moves, so each change has its own second (the API shows whole seconds).
  let clock = Date.parse("2026-12-04T18:00:00Z");
  const sandbox = await startShopifySandbox({ catalog: defaultCatalog(), now: () => clock });
  const metrics = createMetrics(`${uniqueName("shopify_orders")}_`, () => Promise.resolve([]));
  try {
    const client = sandboxShopifyClient(sandbox, { metrics });
    const locations = locationMap(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id])));
    const rule = orderStoreRule(locations, STORES[1]);
    const since = new Date(clock - 1000).toISOString();
    const placed: Record<string, unknown>[] = [];
    for (let i = 0; i < 4; i++) {
      clock += 1000;
      placed.push(sandbox.placeOrder({
        tiendaId: STORES[i % 2],
        lines: [{ sku: SKU, quantity: 1 }],
        sourceName: i === 3 ? "web" : "pos",
      }));
    }
    const first = placed[0];
    const firstLine = (first.line_items as { id: number }[])[0].id;
    clock += 1000;
    sandbox.cancelOrder(first.id as number);
    const pages = [];
    for await (
      const page of shopifyOrderSource(client, rule).updatedSince(since, AbortSignal.timeout(5000))
    ) {
      pages.push(page);
    }
    assert.equal(sandbox.stats().invalid, 0, "every document was valid for the schema");
    assert.deepEqual(pages.map((p) => p.length), [3, 1], "three orders per call, oldest update first");
    const orders = pages.flat();
    // The cancelled order was updated last.
    const cancelled = orders.at(-1)!;
    assert.deepEqual(cancelled.events.map((e) => e.kind), ["created", "restock"]);
    const [created, restock] = cancelled.events as [
      Extract<OrderEvent, { kind: "created" }>,
      Extract<OrderEvent, { kind: "restock" }>,
    ];
    assert.equal(created.orderId, String(first.id));
    assert.equal(created.tiendaId, STORES[0]);
    assert.deepEqual(created.lines, [{ lineId: String(firstLine), sku: SKU, quantity: 1 }]);
    assert.equal(created.via, "catch_up");
    assert.equal(restock.tiendaId, STORES[0]);
    // The same ids a webhook carries: a refund's legacy id, the line's legacy id.
    const webhook = sandbox.webhookDeliveries();
    assert.equal(webhook.length, 0, "nobody subscribed");
    const online = orders.find((o) => o.events[0]?.orderId === String(placed[3].id))!;
    assert.equal(
      (online.events[0] as { tiendaId: string }).tiendaId,
      STORES[1],
      "an online order: the configured store",
    );
    // Updates after the watermark only.
    const later: { events: OrderEvent[]; updatedAt: string }[] = [];
    for await (
      const page of shopifyOrderSource(client, rule).updatedSince(
        cancelled.updatedAt,
        AbortSignal.timeout(5000),
      )
    ) {
      later.push(...page);
    }
    assert.deepEqual(later.map((o) => o.events[0].orderId), [String(first.id)]);
  } finally {
    await sandbox.close();
  }
});

// ---- Through the service, with the real order ledger ----

async function startOrdersService(env: Record<string, string> = {}): Promise<{
  h: Harness;
  service: RunningService;
  shop: ShopifySandbox;
}> {
  const config = testConfig({
    CHANNELS: "shopify,mercadolibre",
    DISPATCH_ENABLED: "true",
    HTTP_PORT: "0",
    HTTP_HOST: "127.0.0.1",
    SHOPIFY_WEBHOOK_SECRET: SECRET,
    WEBHOOK_MAX_BYTES: "65536",
    ...env,
  });
  const service = startService(config);
  await service.started;
  const h = await harnessFor(service, config);
  const shop = service.shopifySandbox()!;
  await waitFor(() => service.catchUp() !== undefined, "the catch-up poll started");
  // Its first round starts the watermark at "now" (orders before the service are not its to apply).
  await waitFor(() => service.orders.watermark("shopify"), "the Shopify watermark");
  return { h, service, shop };
}

async function rows(h: Harness, orderId: string) {
  return await h.sql<{ channel: string; delta: number; event_id: string }[]>`
    select channel, delta, event_id from stock_change
     where event_id like ${`order:shopify:${orderId}%`} order by id`;
}

integration(
  "service: a Shopify order lowers the other channels once, never Shopify again; re-deliveries do nothing",
  async () => {
    const { h, service, shop } = await startOrdersService();
    try {
      const meli = service.meliSandbox()!;
      const meliBefore = meli.quantityOf(PRODUCT.producto_id)!;
      const shopBefore = shop.availableFor(PRODUCT.producto_id, STORES[0])!;
      const order = shop.placeOrder({ tiendaId: STORES[0], lines: [{ sku: SKU, quantity: 2 }] });
      const orderId = String(order.id);
      await shop.webhooksIdle();
      const delivered = shop.webhookDeliveries();
      assert.deepEqual(delivered.map((d) => [d.topic, d.state, d.lastStatus]), [[
        "orders/create",
        "delivered",
        200,
      ]]);
      await waitFor(async () => (await rows(h, orderId)).length === 1, "the order's stock change");
      assert.deepEqual(
        (await rows(h, orderId)).map((r) => [r.channel, r.delta, r.event_id]),
        [["mercadolibre", -2, `order:shopify:${orderId}`]],
      );
      await waitFor(
        () => meli.quantityOf(PRODUCT.producto_id) === meliBefore - 2,
        "MercadoLibre lowered by 2",
      );

      // Shopify's retry of the same delivery, and the same order under another event id: no second effect.
      shop.redeliverWebhook(delivered[0].webhookId);
      await shop.webhooksIdle();
      const again = JSON.stringify(order);
      const response = await fetch(`${service.url}/webhooks/shopify`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-shopify-topic": "orders/create",
          "x-shopify-hmac-sha256": await hmac(SECRET, again),
          "x-shopify-event-id": crypto.randomUUID(),
        },
        body: again,
      });
      assert.equal(response.status, 200);
      await response.body?.cancel();
      await waitFor(async () => {
        const [d] = await h.sql<{ n: number; open: number }[]>`
        select count(*)::int as n, count(*) filter (where settled_at is null)::int as open
          from order_delivery where channel = 'shopify'`;
        return d.n === 2 && d.open === 0;
      }, "two deliveries kept (the retry was the first's duplicate), both settled");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await rows(h, orderId)).length, 1, "still one stock change");
      assert.equal(
        shop.availableFor(PRODUCT.producto_id, STORES[0]),
        shopBefore - 2,
        "Shopify lowered by its order only",
      );
      const shopifyChanges = await h.sql`select 1 from stock_change where channel = 'shopify'`;
      assert.equal(shopifyChanges.length, 0, "no change for Shopify from its own order");
      const [outbox] = await h.sql<{ n: number }[]>`
      select count(*)::int as n from pos_outbox where message_id = ${`order:shopify:${orderId}`}`;
      assert.equal(outbox.n, 1, "one POS message for the order");
      // The operator sees it on /status (and so on the status page): one Shopify order in the last hour.
      const status = await fetch(`${service.url}/status`, {
        headers: h.config.ADMIN_TOKEN ? { authorization: `Bearer ${h.config.ADMIN_TOKEN}` } : {},
      });
      assert.equal(status.status, 200);
      const orders = (await status.json()).orders;
      assert.equal(orders.by_origin.shopify.received_last_hour, 1, JSON.stringify(orders));
      assert.equal(typeof orders.by_origin.shopify.lag_seconds.max, "number");
      assert.deepEqual(orders.by_origin.shopify.not_recorded_by_pos, { orders: 1, units: 2 });
    } finally {
      await h.close();
    }
  },
);

integration("service: the signature matrix — missing, wrong, right, oversized", async () => {
  const { h, service } = await startOrdersService();
  try {
    const body = JSON.stringify(orderPayload({ location_id: null }));
    const post = async (b: string, signature: string | undefined) => {
      const response = await fetch(`${service.url}/webhooks/shopify`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-shopify-topic": "orders/create",
          "x-shopify-event-id": crypto.randomUUID(),
          ...(signature ? { "x-shopify-hmac-sha256": signature } : {}),
        },
        body: b,
      });
      await response.body?.cancel();
      return response.status;
    };
    const deliveries = async () =>
      (await h.sql<{ n: number }[]>`select count(*)::int as n from order_delivery`)[0].n;
    assert.equal(await post(body, undefined), 401);
    assert.equal(await post(body, await hmac("not the secret", body)), 401);
    const big = JSON.stringify(orderPayload({ note: "x".repeat(70_000) }));
    assert.equal(await post(big, await hmac(SECRET, big)), 413);
    assert.equal(await deliveries(), 0, "nothing refused was kept");
    // Right: kept, and (an online order with no store configured among five) quarantined with its reason.
    assert.equal(await post(body, await hmac(SECRET, body)), 200);
    const [kept] = await waitFor(async () => {
      const r = await h.sql<{ quarantine_reason: string | null; settled_at: Date | null }[]>`
        select quarantine_reason, settled_at from order_delivery`;
      return r.length === 1 && r[0].settled_at ? r : undefined;
    }, "the delivery settled");
    assert.equal(kept.quarantine_reason, "store_unknown");
    assert.equal((await h.sql`select 1 from stock_change`).length, 0);
  } finally {
    await h.close();
  }
});

integration(
  "service: cancellation and refund restock each line once; Shopify's own stock is not touched",
  async () => {
    const { h, service, shop } = await startOrdersService();
    try {
      const meli = service.meliSandbox()!;
      const meliBefore = meli.quantityOf(PRODUCT.producto_id)!;
      const shopBefore = shop.availableFor(PRODUCT.producto_id, STORES[0])!;
      const order = shop.placeOrder({ tiendaId: STORES[0], lines: [{ sku: SKU, quantity: 3 }] });
      const orderId = String(order.id);
      const line = (order.line_items as { id: number }[])[0].id;
      await waitFor(async () => (await rows(h, orderId)).length === 1, "the order applied");
      // A refund of one unit with restock, then a cancellation that restocks the other two.
      shop.refundOrder(order.id as number, [{ lineItemId: line, quantity: 1 }]);
      shop.cancelOrder(order.id as number);
      await shop.webhooksIdle();
      assert.deepEqual(
        shop.webhookDeliveries().map((d) => d.topic),
        ["orders/create", "refunds/create", "orders/cancelled", "refunds/create"],
      );
      await waitFor(async () => (await rows(h, orderId)).length === 3, "two restocks");
      // The refund's and the cancellation's deliveries are processed concurrently: either restock may be first.
      assert.deepEqual((await rows(h, orderId)).map((r) => [r.channel, r.delta]).sort(), [
        ["mercadolibre", -3],
        ["mercadolibre", 1],
        ["mercadolibre", 2],
      ]);
      // Every delivery again (Shopify retries, new event ids): nothing more is put back.
      for (const d of shop.webhookDeliveries()) {
        const response = await fetch(`${service.url}/webhooks/shopify`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-shopify-topic": d.topic,
            "x-shopify-hmac-sha256": await hmac(SECRET, d.body),
            "x-shopify-event-id": crypto.randomUUID(),
          },
          body: d.body,
        });
        await response.body?.cancel();
      }
      await waitFor(
        async () => (await h.sql`select 1 from order_delivery where settled_at is null`).length === 0,
        "all settled",
      );
      assert.equal((await rows(h, orderId)).length, 3, "each line restocked once");
      await waitFor(
        () => meli.quantityOf(PRODUCT.producto_id) === meliBefore,
        "MercadoLibre back where it was",
      );
      assert.equal(
        shop.availableFor(PRODUCT.producto_id, STORES[0]),
        shopBefore,
        "Shopify restocked itself, once",
      );
      assert.equal((await h.sql`select 1 from stock_change where channel = 'shopify'`).length, 0);
    } finally {
      await h.close();
    }
  },
);

integration(
  "service: an order whose webhook never came is found by the catch-up; a stored, unsettled one by the sweep",
  async () => {
    const { h, service, shop } = await startOrdersService();
    try {
      shop.setFaults({ webhookDropRate: 1 });
      const order = shop.placeOrder({ tiendaId: STORES[0], lines: [{ sku: SKU, quantity: 1 }] });
      await shop.webhooksIdle();
      assert.equal(shop.webhookDeliveries()[0].state, "dropped");
      const results = await service.catchUp()!.runOnce();
      const shopify = results.find((r) => r.channel === "shopify")!;
      assert.equal(shopify.error, undefined);
      assert.ok(shopify.applied >= 1, `catch-up applied the order (${JSON.stringify(shopify)})`);
      assert.deepEqual((await rows(h, String(order.id))).map((r) => [r.channel, r.delta]), [[
        "mercadolibre",
        -1,
      ]]);

      // A delivery taken into custody whose processing never ran (a stop right after the 200).
      const second = shop.placeOrder({ tiendaId: STORES[0], lines: [{ sku: SKU, quantity: 1 }] });
      await service.orders.receive({
        channel: "shopify",
        deliveryId: `orders/create:${crypto.randomUUID()}`,
        topic: "orders/create",
        body: JSON.stringify(second),
      });
      const hooks = new ShopifyOrderWebhooks({
        secret: SECRET,
        book: service.orders,
        rule: orderStoreRule(locationMap(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id])))),
      });
      assert.equal(await hooks.sweep(), 1);
      await hooks.stop();
      assert.deepEqual((await rows(h, String(second.id))).map((r) => r.delta), [-1]);
      assert.equal((await service.orders.unsettled("shopify", 10)).length, 0);
    } finally {
      await h.close();
    }
  },
);
