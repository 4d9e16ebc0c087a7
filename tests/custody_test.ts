/**
 * The custody pipeline against real RabbitMQ and Postgres: valid events end in
 * the ledger exactly once, redeliveries and replays insert nothing, failed
 * changes are re-armed by a replay and applied ones are never touched.
 */
import assert from "node:assert/strict";
import { type RunningService, startService } from "../src/main.ts";
import { integration, sale, startHarness, testConfig, waitFor } from "./helpers.ts";

integration("N valid events become N sales with one change per channel and SKU; queue drained", async () => {
  const h = await startHarness({ CHANNELS: "shopify,mercadolibre", MELI_MODE: "delta" });
  try {
    const events = Array.from({ length: 300 }, (_, i) =>
      sale({
        tienda_id: `store-${i % 3}`,
        items: [
          { producto_id: `p-${i % 7}`, producto_sku: `SKU-${i % 7}`, cantidad: 1 + (i % 3) },
          { producto_id: "p-x", producto_sku: "SKU-X", cantidad: 2 },
          { producto_id: "p-x", producto_sku: "SKU-X", cantidad: 3 }, // duplicate SKU: summed
        ],
      }));
    // Published at once, so deliveries arrive together and share custody batches.
    await Promise.all(events.map((e) => h.publish(e, { messageId: e.event_id as string })));
    await waitFor(async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 300, "300 sales");
    const changes = await h.sql<
      { channel: string; sku: string; delta: number; status: string; event_id: string }[]
    >`
      select channel, sku, delta, status, event_id from stock_change`;
    // 2 distinct SKUs per event × 2 channels
    assert.equal(changes.length, 300 * 2 * 2);
    assert.ok(changes.every((c) => c.status === "pending"));
    const skuX = changes.filter((c) => c.sku === "SKU-X");
    assert.equal(skuX.length, 600);
    assert.ok(skuX.every((c) => c.delta === -5), "duplicate SKUs in one event are summed");
    const byEvent = new Map(events.map((e) => [e.event_id as string, e]));
    for (const c of changes.filter((c) => c.sku !== "SKU-X")) {
      const items = byEvent.get(c.event_id)!.items as { producto_sku: string; cantidad: number }[];
      assert.equal(c.delta, -items.find((i) => i.producto_sku === c.sku)!.cantidad);
    }
    await waitFor(async () => (await h.queueDepth()) === 0, "work queue empty");
    assert.equal((await h.takeDeadLetters()).length, 0);
    const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
    assert.match(metrics, /marketplace_sync_events_acked_total\{outcome="stored"\} 300/);
    // Deliveries committed together are acked together (one frame per run, not per event).
    const frames = Number(/marketplace_sync_broker_ack_frames_total (\d+)/.exec(metrics)?.[1]);
    assert.ok(frames >= 1 && frames <= 100, `300 deliveries took ${frames} ack frames`);
  } finally {
    await h.close();
  }
});

integration(
  "the sale's body is kept as the POS wrote it: numbers JavaScript would round, unknown fields",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify" });
    try {
      // 2^63 and a 20-digit decimal do not survive a JavaScript parse and re-serialization.
      const text = '{"event_id":"as-written-1","tienda_id":"t-1","total":9223372036854775807,' +
        '"precio_lista":0.12345678901234567890,"items":[{"producto_sku":"SKU-1","cantidad":1,"extra":{"a":[1,2]}}]}';
      await h.publish(text, { messageId: "as-written-1" });
      await waitFor(async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 1, "the sale");
      const [row] = await h.sql<{ total: string; precio: string; extra: string }[]>`
      select body->>'total' as total, body->>'precio_lista' as precio, body->'items'->0->>'extra' as extra
        from sale where event_id = 'as-written-1'`;
      assert.deepEqual(row, {
        total: "9223372036854775807",
        precio: "0.12345678901234567890",
        extra: '{"a": [1, 2]}',
      });
    } finally {
      await h.close();
    }
  },
);

integration("only enabled channels get change rows", async () => {
  const h = await startHarness({ CHANNELS: "shopify" });
  try {
    await h.publish(sale());
    await waitFor(
      async () => (await h.sql`select count(*)::int as n from stock_change`)[0].n === 1,
      "one change",
    );
    const [row] = await h.sql`select channel, sku, delta, tienda_id, producto_id from stock_change`;
    assert.deepEqual({ ...row }, {
      channel: "shopify",
      sku: "REMERA-001",
      delta: -2,
      tienda_id: "11111111-1111-4111-8111-111111111111",
      producto_id: "22222222-2222-4222-8222-222222222222",
    });
  } finally {
    await h.close();
  }
});

integration("the same message delivered twice inserts nothing the second time", async () => {
  const h = await startHarness();
  try {
    const e = sale();
    await h.publish(e, { messageId: "dup-1" });
    await h.publish(e, { messageId: "dup-1" });
    // Same body without message_id: identity falls back to event_id, a different key space.
    const other = sale();
    await h.publish(other);
    await h.publish(other);
    await waitFor(
      async () => (await h.service.metrics.eventsAcked.get()).values.reduce((s, v) => s + v.value, 0) === 4,
      "4 deliveries acked (custody committed)",
    );
    await waitFor(async () => (await h.queueDepth()) === 0, "queue drained");
    const sales = await h.sql`select event_id, identity_source from sale order by event_id`;
    assert.deepEqual(sales.map((s) => s.event_id).sort(), ["dup-1", other.event_id].sort());
    assert.equal((await h.sql`select count(*)::int as n from stock_change`)[0].n, 2 * 2);
    const acked = await h.service.metrics.eventsAcked.get();
    const count = (outcome: string) => acked.values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
    assert.equal(count("stored"), 2);
    assert.equal(count("duplicate"), 2);
  } finally {
    await h.close();
  }
});

integration("a body without any id gets a stable hash identity (and a warning metric)", async () => {
  const h = await startHarness();
  try {
    const e = sale();
    delete e.event_id;
    await h.publish(e);
    await h.publish(e);
    await waitFor(
      async () => (await h.queueDepth()) === 0 && (await h.sql`select 1 from sale`).length === 1,
      "stored",
    );
    await new Promise((r) => setTimeout(r, 200));
    const [row] = await h.sql`select event_id, identity_source from sale`;
    assert.match(row.event_id, /^sha256:[0-9a-f]{64}$/);
    assert.equal(row.identity_source, "body_hash");
    assert.equal((await h.sql`select count(*)::int as n from sale`)[0].n, 1);
    const identity = await h.service.metrics.eventIdentity.get();
    assert.equal(identity.values.find((v) => v.labels.source === "body_hash")?.value, 2);
  } finally {
    await h.close();
  }
});

integration(
  "DLQ replay: applied changes untouched, failed changes re-armed, nothing duplicated",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify,mercadolibre", MELI_MODE: "delta" });
    try {
      const e = sale({
        items: [
          { producto_id: "a", producto_sku: "A", cantidad: 1 },
          { producto_id: "b", producto_sku: "B", cantidad: 4 },
        ],
      });
      await h.publish(e, { messageId: "replay-1" });
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from stock_change`)[0].n === 4,
        "4 changes",
      );
      // Simulate the dispatcher's outcomes: A applied everywhere, B failed everywhere.
      await h
        .sql`update stock_change set status = 'applied', applied_at = now(), attempts = 1 where sku = 'A'`;
      await h
        .sql`update stock_change set status = 'failed', attempts = 5, error = 'boom', error_reason = 'sku_not_found' where sku = 'B'`;
      // The operator replays the DLQ copy straight into our queue.
      await h.publishToQueue(e, {
        messageId: "replay-1",
        headers: { "sync-attempts": 3, "sync-reason": "sku_not_found" },
      });
      await waitFor(
        async () =>
          (await h.sql`select count(*)::int as n from stock_change where status = 'pending'`)[0].n === 2,
        "B re-armed",
      );
      const rows = await h.sql<{ sku: string; status: string; attempts: number; error: string | null }[]>`
      select sku, status, attempts, error from stock_change order by sku, channel`;
      assert.equal(rows.length, 4, "no new rows");
      for (const r of rows.filter((r) => r.sku === "A")) assert.equal(r.status, "applied");
      for (const r of rows.filter((r) => r.sku === "B")) {
        assert.deepEqual({ status: r.status, attempts: r.attempts, error: r.error }, {
          status: "pending",
          attempts: 0,
          error: null,
        });
      }
      assert.equal((await h.sql`select count(*)::int as n from sale`)[0].n, 1);
      const acked = await h.service.metrics.eventsAcked.get();
      assert.equal(acked.values.find((v) => v.labels.outcome === "rearmed")?.value, 1);
    } finally {
      await h.close();
    }
  },
);

// A replay of an old sale must not create changes the sale never had: a channel
// enabled since (or MeLi now following another store) had the sale's effect in
// its starting quantity already, so a new change would decrement it twice.
for (
  const [what, before, after] of [
    ["a channel enabled since", { CHANNELS: "shopify" }, { CHANNELS: "shopify,mercadolibre" }],
    ["MELI_TIENDA_ID moved to the sale's store", {
      CHANNELS: "shopify,mercadolibre",
      MELI_TIENDA_ID: "another-store",
    }, { CHANNELS: "shopify,mercadolibre", MELI_TIENDA_ID: "11111111-1111-4111-8111-111111111111" }],
  ] as const
) {
  integration(`DLQ replay after ${what}: the failed change is re-armed, no change is created`, async () => {
    const h = await startHarness({ MELI_MODE: "delta", ...before });
    let later: RunningService | undefined;
    try {
      const e = sale({ tienda_id: "11111111-1111-4111-8111-111111111111" });
      await h.publish(e, { messageId: "late-channel-1" });
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from stock_change`)[0].n === 1,
        "one change (Shopify only)",
      );
      await h
        .sql`update stock_change set status = 'failed', attempts = 5, error = 'boom', error_reason = 'sku_not_found'`;
      await h.service.close();
      // The operator changes the configuration, restarts, and replays the old sale's DLQ copy.
      later = startService(testConfig({
        MELI_MODE: "delta",
        ...after,
        EXCHANGE: h.config.EXCHANGE,
        QUEUE: h.config.QUEUE,
        LEDGER_SCHEMA: h.config.LEDGER_SCHEMA,
      }));
      await later.started;
      await h.publishToQueue(e, { messageId: "late-channel-1" });
      await waitFor(
        async () =>
          ((await later!.metrics.eventsAcked.get()).values.find((v) => v.labels.outcome === "rearmed")
            ?.value ?? 0) === 1,
        "the replay re-armed the sale",
      );
      const rows = await h.sql<{ channel: string; status: string }[]>`
        select channel, status from stock_change order by channel`;
      assert.deepEqual(rows.map((r) => ({ ...r })), [{ channel: "shopify", status: "pending" }]);
    } finally {
      await later?.close();
      await h.close();
    }
  });
}

integration("two replicas on one queue share the work and store each event once", async () => {
  const a = await startHarness();
  const { startService } = await import("../src/main.ts");
  const b = startService(a.config);
  await b.started;
  try {
    const n = 400;
    await Promise.all(Array.from({ length: n }, () => {
      const e = sale();
      return a.publish(e, { messageId: e.event_id as string });
    }));
    await waitFor(
      async () => (await a.sql`select count(*)::int as n from sale`)[0].n === n,
      `${n} sales`,
      20_000,
    );
    await waitFor(async () => (await a.queueDepth()) === 0, "drained");
    assert.equal((await a.sql`select count(*)::int as n from stock_change`)[0].n, n * 2);
    const consumedA = (await a.service.metrics.eventsConsumed.get()).values[0]?.value ?? 0;
    const consumedB = (await b.metrics.eventsConsumed.get()).values[0]?.value ?? 0;
    assert.equal(consumedA + consumedB, n);
  } finally {
    await b.close();
    await a.close();
  }
});
