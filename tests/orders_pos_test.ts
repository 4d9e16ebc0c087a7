/**
 * The POS's side of marketplace orders (issue #14), against real RabbitMQ and Postgres: each order is
 * published once on `blend_events` (`marketplace.sales.created` / `cancelled`, a stable message_id, with
 * confirms) whether or not a POS queue is bound, and the POS's echo — a `sales.created` carrying `origen` —
 * changes no stock and marks the order recorded.
 */
import assert from "node:assert/strict";
import type { AsyncMessage } from "rabbitmq-client";
import type { OrderEvent } from "../src/model/marketplace_order.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { integration, sale, startHarness, uniqueName, waitFor } from "./helpers.ts";

const STORE = defaultCatalog().stores[0].tienda_id;

function order(orderId: string, quantity = 2): OrderEvent {
  return {
    kind: "created",
    origin: "mercadolibre",
    orderId,
    tiendaId: STORE,
    lines: [{ lineId: "MLA1", sku: "REMERA-001", quantity }],
    occurredAt: new Date().toISOString(),
    via: "notification",
  };
}

integration(
  "no POS queue bound: the outbox publishes (confirmed, dropped) and does not retry forever",
  async () => {
    const h = await startHarness();
    try {
      await h.service.orders.apply(order("100"));
      await waitFor(
        async () => (await h.sql`select published_at from pos_outbox`)[0]?.published_at,
        "the message confirmed",
      );
      const [row] = await h.sql`select attempts, last_error from pos_outbox`;
      assert.deepEqual({ ...row }, { attempts: 1, last_error: null }, "one publish, no bounce loop");
      const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
      assert.match(metrics, /pos_outbox_unpublished\{routing_key="marketplace.sales.created"\} 0/);
      assert.match(metrics, /pos_messages_published_total\{routing_key="marketplace.sales.created"\} 1/);
    } finally {
      await h.close();
    }
  },
);

integration(
  "a POS queue gets each order once, in the POS's sale shape with origen and a stable message_id",
  async () => {
    const h = await startHarness();
    const queue = uniqueName("pos_orders");
    const got: AsyncMessage[] = [];
    const consumer = h.rabbit.createConsumer({
      queue,
      queueOptions: { exclusive: true },
      queueBindings: [
        { exchange: h.config.EXCHANGE, routingKey: "marketplace.sales.created" },
        { exchange: h.config.EXCHANGE, routingKey: "marketplace.sales.cancelled" },
      ],
    }, (msg) => {
      got.push(msg);
    });
    const ready = new Promise((resolve) => consumer.once("ready", resolve));
    try {
      await ready; // queue declared and bound
      await h.service.orders.apply(order("200", 3));
      await h.service.orders.apply({ ...order("200", 3), via: "catch_up" }); // the same order again
      await h.service.orders.apply({
        kind: "restock",
        origin: "mercadolibre",
        orderId: "200",
        restockId: "cancel",
        lines: [{ lineId: "MLA1", sku: "REMERA-001", quantity: 3 }],
        occurredAt: new Date().toISOString(),
        via: "notification",
      });
      await waitFor(() => got.length >= 2, "two POS messages");
      await new Promise((r) => setTimeout(r, 500)); // a second copy would have arrived by now
      assert.equal(got.length, 2);
      const [createdMsg, cancelled] = got;
      assert.equal(createdMsg.routingKey, "marketplace.sales.created");
      assert.equal(createdMsg.messageId, "order:mercadolibre:200");
      const body = JSON.parse(new TextDecoder().decode(createdMsg.body as Uint8Array));
      assert.equal(body.tienda_id, STORE);
      assert.equal(body.origen, "mercadolibre");
      assert.equal(body.origen_order_id, "200");
      assert.deepEqual(
        body.items.map((i: { producto_sku: string; cantidad: number }) => [i.producto_sku, i.cantidad]),
        [[
          "REMERA-001",
          3,
        ]],
      );
      assert.equal(cancelled.routingKey, "marketplace.sales.cancelled");
      assert.equal(cancelled.messageId, "order:mercadolibre:200:restock:cancel");
    } finally {
      await consumer.close();
      await h.close();
    }
  },
);

integration(
  "the POS's echo (sales.created with origen) changes no stock and marks the order recorded",
  async () => {
    const h = await startHarness();
    try {
      await h.service.orders.apply(order("300", 2));
      const held = () => h.service.orders.unrecorded([{ tiendaId: STORE, sku: "REMERA-001" }]);
      assert.deepEqual(await held(), [2], "until the POS records it, the order's units are held");
      const before = (await h.sql`select count(*)::int as n from stock_change`)[0].n;

      // The POS re-publishes the order it recorded (its own identity), and once more (a redelivery).
      const echo = sale({
        tienda_id: STORE,
        origen: "mercadolibre",
        origen_order_id: 300,
        items: [{ producto_sku: "REMERA-001", cantidad: 2 }],
      });
      await h.publish(echo);
      await h.publish(echo);
      // An echo of an order this service never saw: stored, nothing applied.
      await h.publish(
        sale({
          tienda_id: STORE,
          origen: "shopify",
          origen_order_id: "999",
          items: [{ producto_sku: "REMERA-001", cantidad: 1 }],
        }),
      );
      // A sale with an origin we do not sell on is a POS sale like any other.
      await h.publish(
        sale({
          tienda_id: STORE,
          origen: "tiendanube",
          origen_order_id: "5",
          items: [{ producto_sku: "REMERA-001", cantidad: 1 }],
        }),
      );
      await waitFor(async () => (await h.queueDepth()) === 0, "queue drained");
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 4,
        "sales stored",
      );

      const after = await h.sql<{ event_id: string }[]>`select distinct event_id from stock_change`;
      assert.equal(after.length, 2, "only the order and the foreign-origin sale changed stock");
      assert.equal((await h.sql`select count(*)::int as n from stock_change`)[0].n, before + 2);
      assert.deepEqual(await held(), [0], "the POS recorded it: its own number carries the units now");
      const echoes = await h.sql`select origin, order_id from marketplace_order_echo order by origin`;
      assert.deepEqual(echoes.map((e) => `${e.origin}:${e.order_id}`), ["mercadolibre:300", "shopify:999"]);
      // The order the POS recorded first and we see later starts recorded.
      await h.service.orders.apply({ ...order("999", 1), origin: "shopify" });
      assert.deepEqual(await held(), [0]);
      const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
      assert.match(metrics, /orders_recorded_by_pos_total\{origin="mercadolibre",order="known"\} 1/);
      assert.match(metrics, /orders_recorded_by_pos_total\{origin="shopify",order="unknown"\} 1/);
      assert.equal((await h.takeDeadLetters()).length, 0);

      // origen without origen_order_id cannot say which order: refused with the field.
      await h.publish(sale({ tienda_id: STORE, origen: "shopify" }));
      await waitFor(
        async () => (await h.queueDepth(h.service.topology.deadLetterQueue)) === 1,
        "dead letter",
      );
      const [dead] = await h.takeDeadLetters();
      assert.equal(dead.headers?.["sync-field"], "origen_order_id");
    } finally {
      await h.close();
    }
  },
);
