/**
 * Dependencies going away: Postgres unreachable (retry tiers, then DLQ with
 * ledger_unavailable, and recovery), and the RabbitMQ connection cut
 * mid-stream (reconnect; every event in the ledger exactly once). Each test
 * reaches the shared servers through its own loopback proxy and cuts that.
 */
import assert from "node:assert/strict";
import { header, integration, sale, startHarness, waitFor } from "./helpers.ts";
import { TcpProxy } from "../scripts/support/tcp_proxy.ts";

integration(
  "Postgres unreachable: retried through every tier, then DLQ ledger_unavailable; recovers",
  async () => {
    const pg = new TcpProxy(5432).start();
    const h = await startHarness({
      DATABASE_URL: `postgres://postgres@127.0.0.1:${pg.port}/test`,
      RETRY_DELAYS: "150ms,300ms,450ms",
    });
    try {
      pg.cut();
      const lost = Array.from({ length: 5 }, () => sale());
      for (const e of lost) await h.publish(e, { messageId: e.event_id as string });
      const ready = await fetch(`${h.service.url}/readyz`);
      const body = await ready.json();
      assert.equal(ready.status, 503);
      assert.ok(body.down.includes("postgres"), `readyz names postgres: ${JSON.stringify(body)}`);

      const dead = await waitFor(async () => {
        const got = await h.takeDeadLetters();
        return got.length ? got : undefined;
      }, "dead letters");
      await waitFor(async () => {
        dead.push(...await h.takeDeadLetters());
        return dead.length >= 5;
      }, "all 5 dead-lettered");
      assert.equal(dead.length, 5);
      for (const msg of dead) {
        assert.equal(header(msg, "sync-reason"), "ledger_unavailable");
        assert.equal(header(msg, "sync-attempts"), "4", "first try + 3 retry tiers");
        assert.ok(header(msg, "sync-error")?.includes("ledger unavailable"));
        assert.ok(header(msg, "sync-first-failure")! < header(msg, "sync-last-failure")!);
        assert.equal(msg.headers?.["x-death"], undefined, "no broker x-death copied");
      }
      const retried = await h.service.metrics.eventsRetried.get();
      assert.equal(retried.values.find((v) => v.labels.reason === "ledger_unavailable")?.value, 15);

      // Postgres comes back: new events flow, and a DLQ replay stores the old ones.
      pg.restore();
      const fresh = Array.from({ length: 5 }, () => sale());
      for (const e of fresh) await h.publish(e, { messageId: e.event_id as string });
      for (const msg of dead) {
        await h.publishToQueue(msg.body, { messageId: msg.messageId });
      }
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 10,
        "10 sales",
        20_000,
      );
      await waitFor(async () => (await fetch(`${h.service.url}/readyz`)).status === 200, "ready again");
    } finally {
      pg.restore();
      await h.close();
      pg.close();
    }
  },
);

integration("an outage shorter than the retry budget loses nothing and dead-letters nothing", async () => {
  const pg = new TcpProxy(5432).start();
  const h = await startHarness({
    DATABASE_URL: `postgres://postgres@127.0.0.1:${pg.port}/test`,
    RETRY_DELAYS: "300ms,600ms,900ms",
  });
  try {
    pg.cut();
    for (let i = 0; i < 20; i++) await h.publish(sale());
    await waitFor(
      async () => (await h.service.metrics.eventsRetried.get()).values.length > 0,
      "first retries",
    );
    pg.restore();
    await waitFor(
      async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 20,
      "20 sales",
      20_000,
    );
    assert.equal((await h.takeDeadLetters()).length, 0);
  } finally {
    pg.restore();
    await h.close();
    pg.close();
  }
});

integration(
  "RabbitMQ connection cut mid-stream: reconnects and stores every event exactly once",
  async () => {
    const amqp = new TcpProxy(5672).start();
    const h = await startHarness({
      RABBITMQ_URL: `amqp://guest:guest@127.0.0.1:${amqp.port}`,
      CUSTODY_BATCH_WAIT: "20ms",
    });
    try {
      const n = 3000;
      const events = Array.from({ length: n }, () => sale());
      const publishing = (async () => {
        for (const e of events) await h.publish(e, { messageId: e.event_id as string });
      })();
      // Cut twice while events are flowing; the proxy keeps accepting, like a network blip.
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from sale`)[0].n > 200,
        "some progress",
      );
      amqp.reset();
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from sale`)[0].n > 1200,
        "more progress",
      );
      amqp.reset();
      await publishing;
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from sale`)[0].n === n,
        `${n} sales`,
        30_000,
      );
      await waitFor(async () => (await h.queueDepth()) === 0, "queue drained", 15_000);
      assert.equal((await h.sql`select count(*)::int as n from stock_change`)[0].n, n * 2);
      const connections = await h.service.metrics.brokerReconnects.get();
      const consume = connections.values.find((v) => v.labels.connection === "consume")?.value ?? 0;
      assert.ok(consume >= 3, `consumer connection re-established after each cut (${consume})`);
      assert.equal((await h.takeDeadLetters()).length, 0);
    } finally {
      await h.close();
      amqp.close();
    }
  },
);

integration("RabbitMQ down for a while: readyz says so, then the consumer re-attaches", async () => {
  const amqp = new TcpProxy(5672).start();
  const h = await startHarness({ RABBITMQ_URL: `amqp://guest:guest@127.0.0.1:${amqp.port}` });
  try {
    amqp.cut();
    await waitFor(async () => {
      const r = await fetch(`${h.service.url}/readyz`);
      const body = await r.json();
      return r.status === 503 && body.down.includes("broker") && body.down.includes("consumer");
    }, "readyz reports broker and consumer down");
    await h.publish(sale(), { messageId: "while-down" });
    amqp.restore();
    await waitFor(
      async () => (await h.sql`select 1 from sale where event_id = 'while-down'`).length === 1,
      "stored after reconnect",
      20_000,
    );
    await waitFor(async () => (await fetch(`${h.service.url}/readyz`)).status === 200, "ready again");
  } finally {
    amqp.restore();
    await h.close();
    amqp.close();
  }
});
