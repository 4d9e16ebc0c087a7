/**
 * The acking consumer (src/broker/acking_consumer.ts) against the real
 * RabbitMQ, judged by what the broker does with the deliveries: one still being
 * handled keeps every later one unacked (a crash redelivers them all, never
 * loses one), a slow delivery does not hold the prefetch window shut, a handler
 * that throws gets its delivery back, close() drains, and a deleted queue is
 * declared again. The ack frames themselves are in delivery_acks_test.ts.
 */
import assert from "node:assert/strict";
import { Connection } from "rabbitmq-client";
import { type AckingConsumer, startAckingConsumer } from "../src/broker/acking_consumer.ts";
import { integration, RABBITMQ_URL, sale, startHarness, uniqueName, waitFor } from "./helpers.ts";

interface Seen {
  body: string;
  redelivered: boolean;
}

/** The body as text, whether the library decoded it or the service's raw-body hook kept the bytes. */
function text(msg: { body: unknown }): string {
  return String(msg.body);
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A queue of this test's own holding `bodies`, a connection to look at it, deletion at the end. */
async function testQueue(bodies: string[]) {
  const queue = uniqueName("acking_consumer");
  const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  await rabbit.onConnect(5000);
  await rabbit.queueDeclare({ queue, durable: false });
  const publisher = rabbit.createPublisher({ confirm: true });
  for (const body of bodies) await publisher.send({ routingKey: queue }, body);
  const declared = () => rabbit.queueDeclare({ queue, passive: true });
  return {
    queue,
    depth: async () => (await declared()).messageCount,
    consumers: async () => (await declared()).consumerCount,
    /** Takes every ready message, as another consumer would. */
    async takeAll(): Promise<Seen[]> {
      const out: Seen[] = [];
      for (;;) {
        const msg = await rabbit.basicGet({ queue, noAck: true });
        if (!msg) return out;
        out.push({ body: text(msg), redelivered: msg.redelivered });
      }
    },
    async close() {
      await publisher.close();
      await rabbit.queueDelete({ queue }).catch(() => {});
      await rabbit.close();
    },
  };
}

/** A consumer on its own connection whose handler finishes each delivery when the test says so. */
async function gatedConsumer(queue: string, limits: { prefetch: number; concurrency: number }) {
  const connection = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  await connection.onConnect(5000);
  const seen: Seen[] = [];
  const gates = new Map<string, () => void>();
  const errors: Error[] = [];
  let ackFrames = 0;
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => ready = resolve);
  const consumer: AckingConsumer = startAckingConsumer(connection, {
    queue,
    queueOptions: { durable: false },
    ...limits,
    onReady: ready,
    onAckFrame: () => ackFrames++,
    onError: (error) => errors.push(error),
  }, (msg) =>
    new Promise<void>((resolve) => {
      seen.push({ body: text(msg), redelivered: msg.redelivered });
      gates.set(text(msg), resolve);
    }));
  await isReady;
  let crashed = false;
  return {
    consumer,
    seen,
    errors,
    ackFrames: () => ackFrames,
    /** Lets the handler of these deliveries finish. */
    finish(...bodies: string[]) {
      for (const body of bodies) gates.get(body)!();
    },
    /** The process dies: its connection drops without closing anything. */
    crash() {
      crashed = true;
      connection.unsafeDestroy();
    },
    async close() {
      for (const finish of gates.values()) finish();
      await consumer.close();
      if (!crashed) await connection.close();
    },
  };
}

integration(
  "deliveries finished out of order are acked only up to the first one still being handled",
  async () => {
    const q = await testQueue(["1", "2", "3", "4", "5", "6"]);
    const c = await gatedConsumer(q.queue, { prefetch: 10, concurrency: 10 });
    try {
      await waitFor(() => c.seen.length === 6, "all six handed to the handler");
      c.finish("1", "2", "4", "5", "6");
      await waitFor(() => c.ackFrames() > 0, "1 and 2 acked");
      await pause(300); // room for any ack frame that should not be sent
      // The process dies while 3 is still being handled.
      c.crash();
      // The broker requeues a consumer's unacked deliveries as it drops the consumer.
      await waitFor(async () => (await q.consumers()) === 0, "the broker saw the consumer go");
      const back = await q.takeAll();
      assert.deepEqual(
        back.map((m) => m.body).sort(),
        ["3", "4", "5", "6"],
        "3 and everything after it come back; 1 and 2 were acked",
      );
      assert.ok(back.every((m) => m.redelivered));
    } finally {
      await c.close();
      await q.close();
    }
  },
);

integration("once the delivery holding them back finishes, the ones after it are acked too", async () => {
  const q = await testQueue(["1", "2", "3", "4"]);
  const c = await gatedConsumer(q.queue, { prefetch: 10, concurrency: 10 });
  try {
    await waitFor(() => c.seen.length === 4, "all four handed to the handler");
    c.finish("2", "3", "4");
    await pause(200);
    c.finish("1");
    await waitFor(() => c.ackFrames() > 0, "acked");
    await pause(300);
    // Without close(): what was acked was acked before the crash.
    c.crash();
    await waitFor(async () => (await q.consumers()) === 0, "the broker saw the consumer go");
    await pause(200);
    assert.deepEqual(await q.takeAll(), [], "nothing redelivered");
  } finally {
    await c.close();
    await q.close();
  }
});

integration("a slow delivery does not hold the prefetch window shut", async () => {
  const bodies = Array.from({ length: 12 }, (_, i) => String(i + 1));
  const q = await testQueue(bodies);
  const c = await gatedConsumer(q.queue, { prefetch: 4, concurrency: 20 });
  try {
    // Everything but the first finishes at once; the first takes as long as it takes.
    const finishing = setInterval(() => c.finish(...c.seen.map((m) => m.body).filter((b) => b !== "1")), 10);
    try {
      await waitFor(() => c.seen.length === 12, "all twelve handled past a window of four");
    } finally {
      clearInterval(finishing);
    }
    assert.ok(!c.seen.some((m) => m.redelivered), "each delivered once");
    await c.close();
    await pause(200);
    assert.deepEqual(await q.takeAll(), [], "every delivery acked");
  } finally {
    await c.close();
    await q.close();
  }
});

integration("a delivery whose handler throws goes back to the queue and is handled again", async () => {
  const q = await testQueue(["boom", "fine"]);
  const connection = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  const seen: Seen[] = [];
  const errors: string[] = [];
  const consumer = startAckingConsumer(connection, {
    queue: q.queue,
    queueOptions: { durable: false },
    prefetch: 10,
    concurrency: 2,
    onError: (error) => errors.push(error.message),
  }, (msg) => {
    seen.push({ body: text(msg), redelivered: msg.redelivered });
    if (text(msg) === "boom" && !msg.redelivered) return Promise.reject(new Error("ledger hiccup"));
    return Promise.resolve();
  });
  try {
    await waitFor(() => seen.length === 3, "boom handled twice, fine once");
    assert.deepEqual(
      seen.filter((m) => m.body === "boom"),
      [{ body: "boom", redelivered: false }, { body: "boom", redelivered: true }],
    );
    assert.deepEqual(seen.filter((m) => m.body === "fine"), [{ body: "fine", redelivered: false }]);
    assert.deepEqual(errors, ["ledger hiccup"], "the handler's error is reported");
    await consumer.close();
    await pause(200);
    assert.deepEqual(await q.takeAll(), [], "both acked in the end");
  } finally {
    await consumer.close();
    await connection.close();
    await q.close();
  }
});

integration("close() waits for the delivery in flight and acks it; those not started go back", async () => {
  const q = await testQueue(["1", "2", "3"]);
  const c = await gatedConsumer(q.queue, { prefetch: 10, concurrency: 1 });
  try {
    await waitFor(() => c.seen.length === 1, "the first delivery started");
    let closed = false;
    const closing = c.consumer.close().then(() => closed = true);
    await pause(200);
    assert.equal(closed, false, "close() waits for the handler");
    assert.deepEqual(c.seen.map((m) => m.body), ["1"], "nothing new is started while closing");
    c.finish("1");
    await closing;
    assert.equal(c.consumer.ready, false);
    await waitFor(async () => (await q.depth()) === 2, "the two not started back in the queue");
    assert.deepEqual((await q.takeAll()).map((m) => m.body).sort(), ["2", "3"], "1 was acked");
  } finally {
    await c.close();
    await q.close();
  }
});

integration(
  "the broker cancels our subscription (queue deleted): the consumer re-declares it and goes on",
  async () => {
    const h = await startHarness({ CHANNELS: "shopify" });
    try {
      await h.publish(sale());
      await waitFor(async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 1, "first sale");
      // An operator deletes the work queue: RabbitMQ sends basic.cancel to its consumer.
      await h.rabbit.queueDelete({ queue: h.config.QUEUE });
      await waitFor(async () => {
        const ok = await h.rabbit.queueDeclare({ queue: h.config.QUEUE, passive: true }).then(
          (r) => r.consumerCount === 1,
          () => false,
        );
        return ok;
      }, "queue re-declared with our consumer on it");
      await h.publish(sale());
      await waitFor(async () => (await h.sql`select count(*)::int as n from sale`)[0].n === 2, "second sale");
      assert.equal((await h.takeDeadLetters()).length, 0);
    } finally {
      await h.close();
    }
  },
);
