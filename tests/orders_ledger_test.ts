/**
 * Marketplace orders in the ledger (issue #14), against real Postgres: each order's effect exactly once
 * (the other channels lowered, never the origin; the stores a channel shows honoured), restocks at most
 * what was sold however many cancellations and refunds name a line, inbound deliveries deduplicated and
 * quarantined, units held out of available stock until the POS records the order, and the catch-up poll
 * from a stored watermark.
 */
import assert from "node:assert/strict";
import type { OrderEvent } from "../src/model/marketplace_order.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { CATCH_UP_OVERLAP_MS, OrderCatchUp } from "../src/service/order_catch_up.ts";
import type { OrderSource } from "../src/sync/channel.ts";
import { integration, startHarness } from "./helpers.ts";

const catalog = defaultCatalog();
/** In sandbox mode MercadoLibre mirrors the catalog's first store: it shows that store only. */
const MELI_STORE = catalog.stores[0].tienda_id;
const OTHER_STORE = catalog.stores[1].tienda_id;

function created(
  origin: "shopify" | "mercadolibre",
  orderId: string,
  lines: { lineId: string; sku: string; quantity: number }[],
  tiendaId = MELI_STORE,
): OrderEvent {
  return {
    kind: "created",
    origin,
    orderId,
    tiendaId,
    lines,
    occurredAt: new Date(Date.now() - 2_000).toISOString(),
    via: "webhook",
  };
}

function restock(
  origin: "shopify" | "mercadolibre",
  orderId: string,
  restockId: string,
  lines: { lineId: string; sku: string; quantity: number }[],
): OrderEvent {
  return {
    kind: "restock",
    origin,
    orderId,
    restockId,
    lines,
    occurredAt: new Date().toISOString(),
    via: "webhook",
  };
}

integration(
  "an order lowers every other channel once, never its own; a re-delivery changes nothing",
  async () => {
    const h = await startHarness();
    try {
      const order = created("shopify", "1001", [
        { lineId: "L1", sku: "REMERA-001", quantity: 2 },
        { lineId: "L2", sku: "BUZO-GRIS-L", quantity: 1 },
        { lineId: "L3", sku: "REMERA-001", quantity: 1 },
      ]);
      // Webhook and catch-up at once: one effect.
      const effects = await Promise.all([
        h.service.orders.apply(order),
        h.service.orders.apply({ ...order, via: "catch_up" }),
      ]);
      assert.deepEqual(effects.map((e) => e.outcome).sort(), ["applied", "duplicate"]);
      assert.equal(effects.find((e) => e.outcome === "applied")!.changes, 2);
      const changes = await h.sql<{ event_id: string; channel: string; sku: string; delta: number }[]>`
      select event_id, channel, sku, delta from stock_change order by sku`;
      assert.deepEqual(changes.map((c) => ({ ...c })), [
        { event_id: "order:shopify:1001", channel: "mercadolibre", sku: "BUZO-GRIS-L", delta: -1 },
        { event_id: "order:shopify:1001", channel: "mercadolibre", sku: "REMERA-001", delta: -3 },
      ], "MercadoLibre lowered by the SKUs' sums; Shopify (the origin) untouched");
      const [sale] = await h.sql`select identity_source, tienda_id, body from sale`;
      assert.equal(sale.identity_source, "marketplace_order");
      assert.equal(sale.body.origen, undefined, "a DLQ copy of the sale must not read as the POS's echo");
      assert.equal(sale.body.marketplace_order.order_id, "1001");
      const outbox = await h.sql`select message_id, routing_key, body from pos_outbox`;
      assert.equal(outbox.length, 1);
      assert.equal(outbox[0].message_id, "order:shopify:1001");
      assert.equal(outbox[0].routing_key, "marketplace.sales.created");
      assert.equal(outbox[0].body.origen, "shopify");
      assert.equal(outbox[0].body.origen_order_id, "1001");
      assert.equal(outbox[0].body.tienda_id, MELI_STORE);
      assert.deepEqual(
        outbox[0].body.items.map((
          i: { producto_sku: string; cantidad: number },
        ) => [i.producto_sku, i.cantidad]),
        [["BUZO-GRIS-L", 1], ["REMERA-001", 3]],
      );
      const remera = catalog.products.find((p) => p.sku === "REMERA-001")!;
      assert.equal(
        outbox[0].body.items[1].producto_id,
        remera.producto_id,
        "the POS's producto_id (the sandbox catalog's here)",
      );

      // A MercadoLibre order lowers Shopify, not MercadoLibre.
      const meli = await h.service.orders.apply(
        created("mercadolibre", "2000000001", [{ lineId: "MLA1", sku: "REMERA-001", quantity: 1 }]),
      );
      assert.deepEqual(meli, { outcome: "applied", changes: 1 });
      const [shopifyChange] = await h
        .sql`select channel, delta from stock_change where event_id = 'order:mercadolibre:2000000001' and delta <> 0`;
      assert.deepEqual({ ...shopifyChange }, { channel: "shopify", delta: -1 });

      // A Shopify order at a store MercadoLibre does not show: no change for it (custody's store filter).
      const elsewhere = await h.service.orders.apply(
        created("shopify", "1002", [{ lineId: "L1", sku: "REMERA-001", quantity: 1 }], OTHER_STORE),
      );
      assert.deepEqual(elsewhere, { outcome: "applied", changes: 0 });
      assert.equal((await h.sql`select 1 from pos_outbox where message_id = 'order:shopify:1002'`).length, 1);

      const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
      // Order 1001's webhook and catch-up raced: either may be the one applied, the other the duplicate.
      const shopifyCreated = (outcome: string) =>
        [...metrics.matchAll(
          new RegExp(
            `orders_total\\{origin="shopify",kind="created",via="\\w+",outcome="${outcome}"\\} (\\d+)`,
            "g",
          ),
        )].reduce((sum, m) => sum + Number(m[1]), 0);
      assert.equal(shopifyCreated("applied"), 2, "orders 1001 and 1002 applied once each");
      assert.equal(shopifyCreated("duplicate"), 1, "1001's other delivery a duplicate");
      assert.match(
        metrics,
        /orders_total\{origin="shopify",kind="created",via="webhook",outcome="applied"\} [12]/,
      );
      assert.match(metrics, /order_lag_seconds_count\{origin="mercadolibre",via="webhook"\} 1/);
    } finally {
      await h.close();
    }
  },
);

integration(
  "a cancellation and a refund of the same lines restock each line once, at most what it sold",
  async () => {
    const h = await startHarness();
    try {
      const lines = [
        { lineId: "L1", sku: "REMERA-001", quantity: 3 },
        { lineId: "L2", sku: "BUZO-GRIS-L", quantity: 1 },
      ];
      await h.service.orders.apply(created("shopify", "5001", lines));
      const held = () => h.service.orders.unrecorded([{ tiendaId: MELI_STORE, sku: "REMERA-001" }]);
      assert.deepEqual(await held(), [3]);

      // A partial refund first: 1 of L1.
      const refund = await h.service.orders.apply(
        restock("shopify", "5001", "refund-1", [{ lineId: "L1", sku: "REMERA-001", quantity: 1 }]),
      );
      assert.deepEqual(refund, { outcome: "applied", changes: 1 });
      assert.deepEqual(await held(), [2]);
      // Its re-delivery: nothing.
      assert.equal(
        (await h.service.orders.apply(
          restock("shopify", "5001", "refund-1", [{ lineId: "L1", sku: "REMERA-001", quantity: 1 }]),
        )).outcome,
        "duplicate",
      );
      // The cancellation names every line in full: only what is left goes back (2 of L1, 1 of L2).
      const cancel = await h.service.orders.apply(restock("shopify", "5001", "cancel", lines));
      assert.deepEqual(cancel, { outcome: "applied", changes: 2 });
      // A refund of the same lines after the cancellation (refunds/create follows orders/cancelled): nothing.
      const late = await h.service.orders.apply(restock("shopify", "5001", "refund-2", lines));
      assert.equal(late.outcome, "nothing_to_restock");
      const deltas = await h.sql<{ sku: string; total: number }[]>`
      select sku, sum(delta)::int as total from stock_change where channel = 'mercadolibre' group by sku order by sku`;
      assert.deepEqual(deltas.map((d) => ({ ...d })), [
        { sku: "BUZO-GRIS-L", total: 0 },
        { sku: "REMERA-001", total: 0 },
      ], "MercadoLibre got back exactly what the order took");
      assert.deepEqual(await held(), [0]);
      const cancelled = await h.sql`
      select message_id, body from pos_outbox where routing_key = 'marketplace.sales.cancelled' order by id`;
      assert.deepEqual(cancelled.map((r) => r.message_id), [
        "order:shopify:5001:restock:refund-1",
        "order:shopify:5001:restock:cancel",
      ]);
      assert.equal(cancelled[1].body.origen_restock_id, "cancel");
      // A restock of an order not seen yet: nothing is put back that was never taken off; it waits for the
      // order (tests/review14_test.ts applies one when its order comes).
      const unknown = await h.service.orders.apply(
        restock("mercadolibre", "404", "cancel", [{ lineId: "X", sku: "REMERA-001", quantity: 1 }]),
      );
      assert.deepEqual(unknown, { outcome: "deferred", changes: 0 });
      const [{ n }] = await h.sql<{ n: number }[]>`
        select count(*)::int as n from stock_change where event_id like 'order:mercadolibre:404%' and delta <> 0`;
      assert.equal(n, 0);
    } finally {
      await h.close();
    }
  },
);

integration("an event no marketplace answer can make is refused, not applied", async () => {
  const h = await startHarness();
  try {
    for (
      const lines of [[], [{ lineId: "L1", sku: "REMERA-001", quantity: 0 }], [{
        lineId: "L1",
        sku: "REMERA-001",
        quantity: 1.5,
      }]]
    ) {
      await assert.rejects(
        h.service.orders.apply(created("shopify", "9", lines)),
        /InvalidOrderEventError|line|lines/,
      );
    }
    assert.equal((await h.sql`select count(*)::int as n from marketplace_order`)[0].n, 0);
  } finally {
    await h.close();
  }
});

integration(
  "inbound deliveries: stored once per delivery id, unsettled until settled, quarantine kept aside",
  async () => {
    const h = await startHarness();
    try {
      const orders = h.service.orders;
      const first = await orders.receive({
        channel: "shopify",
        deliveryId: "evt-1",
        topic: "orders/create",
        body: "{}",
      });
      assert.equal(first.duplicate, false);
      const again = await orders.receive({
        channel: "shopify",
        deliveryId: "evt-1",
        topic: "orders/create",
        body: "{}",
      });
      assert.deepEqual(again, { id: first.id, duplicate: true });
      // The same id on another channel is another delivery.
      const meli = await orders.receive({
        channel: "mercadolibre",
        deliveryId: "evt-1",
        topic: "orders_v2",
        body: "{}",
      });
      assert.equal(meli.duplicate, false);
      const second = await orders.receive({
        channel: "shopify",
        deliveryId: "evt-2",
        topic: "refunds/create",
        body: "x",
      });

      const open = await orders.unsettled("shopify", 10);
      assert.deepEqual(open.map((d) => [d.deliveryId, d.attempts]), [["evt-1", 1], ["evt-2", 1]]);
      assert.deepEqual((await orders.unsettled("shopify", 1)).map((d) => [d.deliveryId, d.attempts]), [[
        "evt-1",
        2,
      ]]);
      await orders.settle(first.id, { done: true });
      await orders.settle(second.id, {
        quarantine: { reason: "invalid_json", error: "the body is not JSON" },
      });
      assert.deepEqual(await orders.unsettled("shopify", 10), []);
      const [kept] = await h
        .sql`select quarantine_reason, quarantine_error from order_delivery where id = ${second.id}`;
      assert.deepEqual({ ...kept }, {
        quarantine_reason: "invalid_json",
        quarantine_error: "the body is not JSON",
      });
      assert.deepEqual((await orders.unsettled("mercadolibre", 10)).map((d) => d.id), [meli.id]);
      const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
      assert.match(metrics, /order_deliveries_total\{channel="shopify",outcome="duplicate"\} 1/);
      assert.match(metrics, /order_deliveries_total\{channel="shopify",outcome="quarantined"\} 1/);
    } finally {
      await h.close();
    }
  },
);

/** A marketplace's orders as a catch-up source reads them: all of them, filtered by update time. */
class FakeOrders implements OrderSource {
  orders: { events: OrderEvent[]; updatedAt: string }[] = [];
  asked: string[] = [];
  failAfterPages = Infinity;

  async *updatedSince(since: string, _signal: AbortSignal) {
    this.asked.push(since);
    const due = this.orders.filter((o) => o.updatedAt >= since).sort((a, b) =>
      a.updatedAt < b.updatedAt ? -1 : 1
    );
    for (let i = 0, pages = 0; i < due.length; i += 2, pages++) {
      if (pages >= this.failAfterPages) throw new Error("marketplace answered 503");
      yield await Promise.resolve(due.slice(i, i + 2));
    }
  }
}

integration(
  "catch-up: from now on the first start, then every order updated since the watermark, once",
  async () => {
    const h = await startHarness();
    try {
      const source = new FakeOrders();
      const catchUp = new OrderCatchUp({
        ledger: h.service.orders,
        channels: () => [{ name: "shopify", orders: source }],
        intervalMs: 3_600_000,
        metrics: h.service.metrics,
      });
      const at = (secondsAgo: number) => new Date(Date.now() - secondsAgo * 1000).toISOString();
      // An order from before the service ever ran is not this service's to apply.
      source.orders.push({
        events: [created("shopify", "old", [{ lineId: "L", sku: "REMERA-001", quantity: 1 }])],
        updatedAt: at(3600),
      });
      const [first] = await catchUp.runOnce();
      assert.equal(first.orders, 0);
      assert.deepEqual(source.asked, [], "the first start only stores the watermark");

      // While the service was "down": three orders, one of which a webhook already delivered.
      const mk = (id: string) => created("shopify", id, [{ lineId: "L", sku: "REMERA-001", quantity: 1 }]);
      await h.service.orders.apply(mk("b"));
      const t1 = new Date(Date.parse(first.watermark) + 1_000).toISOString();
      const t2 = new Date(Date.parse(first.watermark) + 2_000).toISOString();
      const t3 = new Date(Date.parse(first.watermark) + 3_000).toISOString();
      source.orders.push(
        { events: [{ ...mk("a"), via: "catch_up" }], updatedAt: t1 },
        { events: [{ ...mk("b"), via: "catch_up" }], updatedAt: t2 },
        { events: [{ ...mk("c"), via: "catch_up" }], updatedAt: t3 },
      );
      source.failAfterPages = 1; // the marketplace fails after the first page (a, b)
      const broken = await catchUp.poll({ name: "shopify", orders: source });
      assert.ok(broken.error);
      assert.equal(broken.watermark, t2, "the watermark holds at the last applied page");
      assert.equal(await h.service.orders.watermark("shopify"), t2);
      assert.equal(
        source.asked[0],
        new Date(Date.parse(first.watermark) - CATCH_UP_OVERLAP_MS).toISOString(),
      );

      source.failAfterPages = Infinity;
      const [healed] = await catchUp.runOnce();
      assert.equal(healed.error, undefined);
      assert.equal(healed.watermark, t3);
      const applied = await h.sql<{ event_id: string }[]>`select event_id from sale order by event_id`;
      assert.deepEqual(applied.map((r) => r.event_id), [
        "order:shopify:a",
        "order:shopify:b",
        "order:shopify:c",
      ]);
      assert.equal(
        (await h.sql`select count(*)::int as n from stock_change where delta <> 0`)[0].n,
        3,
        "one change each, b not twice",
      );
      const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
      assert.match(metrics, /order_catch_ups_total\{channel="shopify",outcome="error"\} 1/);
      assert.match(
        metrics,
        /orders_total\{origin="shopify",kind="created",via="catch_up",outcome="duplicate"\} 3/,
      );
      await catchUp.close();
    } finally {
      await h.close();
    }
  },
);

integration(
  "an order seen again with more lines: the new lines once, told to the POS under their own message; " +
    "known lines and a re-delivery change nothing",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify,mercadolibre" });
    try {
      const first = [{ lineId: "L1", sku: "REMERA-001", quantity: 2 }];
      const all = [...first, { lineId: "L2", sku: "BUZO-GRIS-L", quantity: 1 }];
      assert.equal((await h.service.orders.apply(created("shopify", "6001", first))).outcome, "applied");
      assert.deepEqual(await h.service.orders.apply(created("shopify", "6001", all)), {
        outcome: "applied",
        changes: 1,
      });
      // The same addition again (the webhook after the catch-up, or re-delivered): nothing new.
      assert.deepEqual(await h.service.orders.apply(created("shopify", "6001", all)), {
        outcome: "duplicate",
        changes: 0,
      });
      const changes = await h.sql<{ event_id: string; channel: string; sku: string; delta: number }[]>`
        select event_id, channel, sku, delta from stock_change where event_id like 'order:shopify:6001%'
         order by id`;
      assert.deepEqual(changes.map((c) => ({ ...c })), [
        { event_id: "order:shopify:6001", channel: "mercadolibre", sku: "REMERA-001", delta: -2 },
        { event_id: "order:shopify:6001:lines:2", channel: "mercadolibre", sku: "BUZO-GRIS-L", delta: -1 },
      ], "Shopify (the origin) is never lowered; MercadoLibre loses each line once");
      const outbox = await h.sql<
        { message_id: string; body: { items: unknown[]; origen_order_id: string } }[]
      >`
        select message_id, body from pos_outbox where routing_key = 'marketplace.sales.created' order by id`;
      assert.deepEqual(outbox.map((o) => [o.message_id, o.body.origen_order_id, o.body.items.length]), [
        ["order:shopify:6001", "6001", 1],
        ["order:shopify:6001:lines:2", "6001", 1],
      ]);
      // Both lines are held out of available stock until the POS records the order.
      assert.deepEqual(
        await h.service.orders.unrecorded([
          { tiendaId: MELI_STORE, sku: "REMERA-001" },
          { tiendaId: MELI_STORE, sku: "BUZO-GRIS-L" },
        ]),
        [2, 1],
      );
    } finally {
      await h.close();
    }
  },
);

integration(
  "a restock racing its order's transaction (two replicas at once) is not lost: the order applies it",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify,mercadolibre" });
    const held = await h.sql.reserve();
    try {
      const line = { lineId: "L1", sku: "REMERA-001", quantity: 3 };
      // The worst interleaving, made deterministic: the refund's transaction found no order and is about to
      // store itself as pending (held here on that row's key) while the order's whole transaction runs.
      await held`begin`;
      await held`
        insert into marketplace_restock_pending (origin, order_id, restock_id, lines, occurred_at, via)
        values ('shopify', 'race-1', 'r1', '[]', '', 'webhook')`;
      const early = h.service.orders.apply(restock("shopify", "race-1", "r1", [line]));
      const waiting = async (table: string) => {
        for (let i = 0; i < 100; i++) {
          const [{ n }] = await h.sql<{ n: number }[]>`
            select count(*)::int as n from pg_stat_activity
             where wait_event_type = 'Lock' and query like ${`%${table}%`}`;
          if (n > 0) return;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        throw new Error(`nothing waits on ${table}`);
      };
      await waiting("marketplace_restock_pending");
      const order = h.service.orders.apply(created("shopify", "race-1", [line]));
      // The order waits for the refund (the per-order lock); without it, it would commit here and miss it.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await held`rollback`;
      const outcomes = await Promise.all([early, order]);
      assert.deepEqual(outcomes.map((o) => o.outcome), ["deferred", "applied"]);
      const [{ net }] = await h.sql<{ net: number }[]>`
        select coalesce(sum(delta), 0)::int as net from stock_change
         where channel = 'mercadolibre' and event_id like 'order:shopify:race-1%'`;
      assert.equal(net, 0, "MercadoLibre got the 3 units back");
      const [{ pending }] = await h.sql<{ pending: number }[]>`
        select count(*)::int as pending from marketplace_restock_pending`;
      assert.equal(pending, 0, "the pending restock was applied with its order");
      assert.deepEqual(await h.service.orders.unrecorded([{ tiendaId: MELI_STORE, sku: "REMERA-001" }]), [0]);
      // The same refund again: a duplicate.
      assert.equal(
        (await h.service.orders.apply(restock("shopify", "race-1", "r1", [line]))).outcome,
        "duplicate",
      );
    } finally {
      held.release();
      await h.close();
    }
  },
);
