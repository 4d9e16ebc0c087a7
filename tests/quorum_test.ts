/**
 * Quorum queues under a delivery limit (RabbitMQ 4.x gives every quorum queue
 * a limit of 20; operators set their own by policy): a delivery handed back
 * more times than the limit must land in the DLQ, where it can be seen and
 * replayed, never be deleted. Uses the real RabbitMQ; the limit comes from a
 * policy scoped to exactly this test's queues, cleared at the end.
 */
import assert from "node:assert/strict";
import { Connection } from "rabbitmq-client";
import { Buffer } from "node:buffer";
import {
  declareTopology,
  legacyWorkQueueDeclaration,
  type Topology,
  topologyFromConfig,
} from "../src/broker/topology.ts";
import { startService } from "../src/main.ts";
import { resetLogging, setupLogging } from "../src/log.ts";
import { harnessFor, integration, policyOn, RABBITMQ_URL, sale, testConfig, waitFor } from "./helpers.ts";

/**
 * A consumer process that crashes while holding the delivery, `times` times:
 * it takes the message and its connection dies without an ack, so RabbitMQ
 * hands the message back (and counts the return).
 */
async function crashLoop(queue: string, times: number): Promise<number> {
  let held = 0;
  for (let i = 0; i < times; i++) {
    const doomed = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
    await doomed.onConnect(5000);
    const msg = await doomed.basicGet({ queue, noAck: false });
    await doomed.close();
    if (!msg) break;
    held++;
  }
  return held;
}

/** Publishes a sale the way the POS does (through the exchange), confirmed. */
async function publishSale(rabbit: Connection, topology: Topology, eventId: string): Promise<void> {
  const pub = rabbit.createPublisher({ confirm: true });
  try {
    await pub.send({
      exchange: topology.exchange,
      routingKey: topology.routingKey,
      contentType: "application/json",
      messageId: eventId,
      durable: true,
    }, Buffer.from(JSON.stringify(sale({ event_id: eventId }))));
  } finally {
    await pub.close();
  }
}

integration(
  "a quorum work queue under a delivery-limit policy of 2: a crash loop moves the sale to the DLQ, replay stores it",
  async () => {
    const config = testConfig({ QUEUE_TYPE: "quorum" });
    const topology = topologyFromConfig(config);
    const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
    await rabbit.onConnect(5000);
    // The service's topology, as a replica declared it before the others crashed.
    await declareTopology(rabbit, topology);
    const clear = await policyOn(topology.queue, { "delivery-limit": 2 });
    let service: ReturnType<typeof startService> | undefined;
    let h: Awaited<ReturnType<typeof harnessFor>> | undefined;
    try {
      await publishSale(rabbit, topology, "crash-loop-1");
      // Returned 3 times: over the limit of 2.
      assert.equal(
        await crashLoop(topology.queue, 5),
        3,
        "the sale was handed out 3 times, then left the queue",
      );

      service = startService(config);
      await service.started;
      h = await harnessFor(service, config);
      const res = await fetch(`${service.url}/dlq?limit=10`);
      assert.equal(res.status, 200);
      const listed = await res.json();
      assert.equal(listed.total, 1, "the sale is in the DLQ, not deleted");
      const [view] = listed.messages;
      assert.equal(view.event_id, "crash-loop-1");
      assert.equal(view.reason, "delivery_limit");
      assert.match(view.error, /delivery limit/);

      const replayed = await fetch(`${service.url}/dlq/replay`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ reason: "delivery_limit" }),
      });
      assert.equal(replayed.status, 200);
      assert.equal((await replayed.json()).moved, 1);
      const stored = await waitFor(async () => {
        const rows = await h!.sql`select 1 from sale where event_id = 'crash-loop-1'`;
        return rows.length === 1;
      }, "the replayed sale in custody");
      assert.ok(stored);
      assert.equal(await h.queueDepth(topology.deadLetterQueue), 0);
    } finally {
      await clear();
      await rabbit.close();
      if (h) await h.close();
      else await service?.close();
    }
  },
);

integration(
  "QUEUE_DELIVERY_LIMIT=2 is declared on the work queue: the third return dead-letters the sale, nothing is deleted",
  async () => {
    const config = testConfig({ QUEUE_TYPE: "quorum", QUEUE_DELIVERY_LIMIT: "2" });
    const service = startService(config);
    await service.started;
    const h = await harnessFor(service, config);
    const topology = service.topology;
    try {
      // Stop the service's consumer so the test's crashing consumer gets the sale.
      await service.close();
      await publishSale(h.rabbit, topology, "limit-2");
      assert.equal(await crashLoop(topology.queue, 5), 3);
      const [copy] = await waitFor(async () => {
        const got = await h.takeDeadLetters();
        return got.length ? got : undefined;
      }, "the sale in the DLQ");
      assert.equal(copy.messageId, "limit-2");
      assert.equal(copy.headers?.["x-first-death-reason"], "delivery_limit");
      assert.equal(await h.queueDepth(topology.queue), 0);
    } finally {
      await h.close();
    }
  },
);

integration(
  "an existing quorum work queue without the new arguments keeps working; the README's policy makes it dead-letter",
  async () => {
    const config = testConfig({ QUEUE_TYPE: "quorum" });
    const topology = topologyFromConfig(config);
    const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
    await rabbit.onConnect(5000);
    // As the previous version declared it.
    await rabbit.queueDeclare(legacyWorkQueueDeclaration(topology));
    // The migration the README gives operators: dead-letter target (and here a small limit) by policy.
    const clear = await policyOn(topology.queue, {
      "delivery-limit": 2,
      "dead-letter-exchange": "",
      "dead-letter-routing-key": topology.deadLetterQueue,
      "dead-letter-strategy": "at-least-once",
      "overflow": "reject-publish",
    });
    let h: Awaited<ReturnType<typeof harnessFor>> | undefined;
    try {
      const service = startService(config);
      await service.started;
      h = await harnessFor(service, config);
      assert.equal(service.topology.legacyWorkQueue, true, "the older declaration is kept");
      await publishSale(rabbit, topology, "legacy-ok");
      await waitFor(
        async () => (await h!.sql`select 1 from sale where event_id = 'legacy-ok'`).length === 1,
        "stored",
      );

      await service.close();
      await publishSale(rabbit, topology, "legacy-crash");
      assert.equal(await crashLoop(topology.queue, 5), 3);
      const [copy] = await waitFor(async () => {
        const got = await h!.takeDeadLetters();
        return got.length ? got : undefined;
      }, "the sale in the DLQ");
      assert.equal(copy.messageId, "legacy-crash");
      assert.equal(copy.headers?.["x-first-death-reason"], "delivery_limit");
    } finally {
      await clear();
      await rabbit.close();
      await h?.close();
    }
  },
);

integration(
  "QUEUE_DELIVERY_LIMIT changed on an existing quorum work queue: the service starts on the queue as declared and warns once",
  async () => {
    const declared = testConfig({ QUEUE_TYPE: "quorum", QUEUE_DELIVERY_LIMIT: "20" });
    const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
    await rabbit.onConnect(5000);
    // The previous release's topology: limit 20 with the dead-letter target.
    await declareTopology(rabbit, topologyFromConfig(declared));
    const config = { ...declared, QUEUE_DELIVERY_LIMIT: 10 };
    const logs: string[] = [];
    await setupLogging({ level: "info", format: "json", write: (line) => logs.push(line) });
    const service = startService(config);
    let h: Awaited<ReturnType<typeof harnessFor>> | undefined;
    try {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const gaveUp = new Promise<"stuck">((resolve) => timer = setTimeout(() => resolve("stuck"), 8000));
      const outcome = await Promise.race([service.started.then(() => "started" as const), gaveUp]);
      clearTimeout(timer);
      const failures = logs.filter((l) => /topology declaration/.test(l)).slice(0, 1);
      assert.equal(outcome, "started", `the service started (declaration failures: ${failures.join("")})`);
      h = await harnessFor(service, config);
      await publishSale(rabbit, service.topology, "limit-changed");
      await waitFor(
        async () => (await h!.sql`select 1 from sale where event_id = 'limit-changed'`).length === 1,
        "the sale stored from the queue as it exists",
      );
      const warnings = logs.filter((l) => l.includes("QUEUE_DELIVERY_LIMIT=10"));
      assert.equal(warnings.length, 1, `one warning names the variable and its value:\n${logs.join("")}`);
      assert.equal(JSON.parse(warnings[0]).level, "warning");
      assert.match(warnings[0], /policy/);

      // The queue kept its declaration: the old limit of 20 (not 10) still applies.
      await service.close();
      await publishSale(rabbit, service.topology, "limit-still-20");
      assert.equal(
        await crashLoop(service.topology.queue, 12),
        12,
        "handed out 12 times: the limit is not 10",
      );
    } finally {
      await resetLogging();
      await rabbit.close();
      if (h) await h.close();
      else await service.close();
    }
  },
);
