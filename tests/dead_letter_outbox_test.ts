/**
 * DLQ copies of changes that failed for good survive the process that recorded the
 * failure: a run killed between recording a failure (src/ledger/dispatch_store.ts
 * `record()`) and publishing its DLQ copy leaves the copy due in the ledger, and the
 * next run's dispatcher publishes exactly that copy, in the envelope the normal path
 * builds. Real Postgres (a fresh ledger schema) and the real RabbitMQ (a topology of
 * the test's own); only the marketplace is a scripted adapter.
 */
import assert from "node:assert/strict";
import { Connection, type SyncMessage } from "rabbitmq-client";
import postgres from "postgres";
import { deadLetterRoute } from "../src/broker/dead_letter_route.ts";
import { failedChangeEnvelope } from "../src/broker/envelope.ts";
import { type ConfirmingPublisher, createConfirmingPublisher } from "../src/broker/publisher.ts";
import { keepRawBodies, originalContentEncoding } from "../src/broker/raw_body.ts";
import { buildTopology, declareTopology, type Topology } from "../src/broker/topology.ts";
import { Custody } from "../src/ledger/custody.ts";
import { DeadLetterOutbox } from "../src/ledger/dead_letter_outbox.ts";
import { DispatchStore } from "../src/ledger/dispatch_store.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { MIGRATIONS } from "../src/ledger/migrations.ts";
import { createMetrics, type ServiceMetrics } from "../src/metrics.ts";
import type { BatchOutcome, ClaimedBatch, FailedChange } from "../src/model/batch.ts";
import type { CheckResult } from "../src/model/health.ts";
import { decodeSaleEvent } from "../src/model/sale_event.ts";
import type { BatchContext, ChannelAdapter } from "../src/sync/channel.ts";
import { Dispatcher } from "../src/sync/dispatcher.ts";
import type { FailureRoute } from "../src/sync/failure_route.ts";
import { DATABASE_URL, integration, RABBITMQ_URL, sale, uniqueName, waitFor } from "./helpers.ts";

const CHANNEL = "shopify";
const STORE = "44444444-4444-4444-8444-444444444444";
const POLICY = { maxAttempts: 3, leaseMs: 30_000, backoffBaseMs: 20, backoffMaxMs: 50 };

/**
 * Shopify as far as the dispatcher sees it: a SKU starting with NOPE has no listing
 * (`sku_not_found`, failed for good), every other one is applied. The request is
 * persisted before the "send", as the real adapters do.
 */
class Marketplace implements ChannelAdapter {
  readonly name = CHANNEL;
  readonly maxListingsPerBatch = 10;

  async process(batch: ClaimedBatch, context: BatchContext): Promise<BatchOutcome> {
    await context.persistRequest({ listings: batch.changes.map((c) => [c.sku, c.delta]) });
    return {
      kind: "done",
      results: batch.changes.map((c) =>
        c.sku.startsWith("NOPE")
          ? { kind: "failed", reason: "sku_not_found", error: `no listing has ${c.sku}` }
          : { kind: "applied", quantityAfter: 5 }
      ),
    };
  }

  health(): CheckResult {
    return { ok: true };
  }
}

/** The process dies on its way to the DLQ: the copy is never published, nothing after it runs. */
class DyingRoute implements FailureRoute {
  entered = false;
  deadLetter(_failed: FailedChange): Promise<void> {
    this.entered = true;
    return new Promise(() => {});
  }
}

interface World {
  schema: string;
  /** The test's own view of the ledger. */
  sql: postgres.Sql;
  rabbit: Connection;
  topology: Topology;
  publisher: ConfirmingPublisher;
  sell(body: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** One run of the service's dispatch side: its own pool, store and dispatcher. */
  run(failures: (publisher: ConfirmingPublisher) => FailureRoute, sweepMs?: number): Promise<Run>;
  takeDeadLetters(): Promise<SyncMessage[]>;
  close(): Promise<void>;
}

interface Run {
  dispatcher: Dispatcher;
  metrics: ServiceMetrics;
  /** Ends the run as SIGKILL would: its connections drop, nothing of it runs again. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

async function world(): Promise<World> {
  keepRawBodies(); // as the service does: DLQ bodies arrive as the bytes published
  const schema = uniqueName("msync_outbox");
  const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {}, connection: { search_path: schema } });
  await migrate(sql, schema);
  const id = uniqueName("outbox");
  const topology = buildTopology({
    exchange: `blend_events.${id}`,
    routingKey: "sales.created",
    queue: `marketplace-sync.${id}`,
    queueType: "classic",
    retryDelaysMs: [100],
  });
  const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  await rabbit.onConnect(5000);
  await declareTopology(rabbit, topology);
  const publisher = createConfirmingPublisher(rabbit, topology);
  const custody = new Custody(sql, [CHANNEL], { batchSize: 50, maxWaitMs: 5 });
  const limits = { maxBytes: 1 << 20, maxItems: 100, maxQuantity: 1000 };
  const runs: Run[] = [];
  return {
    schema,
    sql,
    rabbit,
    topology,
    publisher,
    async sell(body) {
      const decoded = decodeSaleEvent(new TextEncoder().encode(JSON.stringify(body)), {}, limits);
      if (!decoded.ok) throw new Error(`test sale refused: ${decoded.rejection.message}`);
      await custody.accept(decoded.event);
      return body;
    },
    run(failures, sweepMs = 200) {
      const pool = postgres(DATABASE_URL, {
        max: 3,
        onnotice: () => {},
        connection: { search_path: schema },
      });
      const metrics = createMetrics(`${uniqueName("outbox_test")}_`, () => Promise.resolve([]));
      const dispatcher = new Dispatcher({
        adapter: new Marketplace(),
        store: new DispatchStore(pool, POLICY),
        failures: failures(publisher),
        outbox: new DeadLetterOutbox(pool),
        metrics,
        pollIntervalMs: 50,
        deadLetterSweepMs: sweepMs,
      });
      let ended = false;
      const run: Run = {
        dispatcher,
        metrics,
        async kill() {
          ended = true;
          dispatcher.abort();
          await pool.end({ timeout: 0 });
        },
        async stop() {
          if (ended) return;
          ended = true;
          dispatcher.abort();
          await dispatcher.stop();
          await pool.end({ timeout: 2 });
        },
      };
      runs.push(run);
      dispatcher.start();
      return Promise.resolve(run);
    },
    async takeDeadLetters() {
      const out: SyncMessage[] = [];
      for (;;) {
        const msg = await rabbit.basicGet({ queue: topology.deadLetterQueue, noAck: true });
        if (!msg) return out;
        out.push({ ...msg, contentEncoding: originalContentEncoding(msg.contentEncoding) });
      }
    },
    async close() {
      for (const run of runs) await run.stop().catch(() => {});
      await publisher.close().catch(() => {});
      for (
        const q of [
          topology.queue,
          ...topology.retryQueues.map((r) => r.name),
          topology.deadLetterQueue,
        ]
      ) {
        await rabbit.queueDelete({ queue: q }).catch(() => {});
      }
      await rabbit.exchangeDelete({ exchange: topology.exchange }).catch(() => {});
      await rabbit.close();
      await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
      await sql.end({ timeout: 2 });
    },
  };
}

/** One sale at STORE of one unit of each SKU. */
function saleOf(...skus: string[]): Record<string, unknown> {
  return sale({
    tienda_id: STORE,
    items: skus.map((sku) => ({ producto_id: `p-${sku}`, producto_sku: sku, cantidad: 1 })),
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the normal path would have published for `failed`: headers as strings, timestamps apart. */
function expectedCopy(failed: FailedChange) {
  const envelope = failedChangeEnvelope(failed);
  const headers = Object.fromEntries(
    Object.entries(envelope.headers ?? {})
      .filter(([name]) => !/^sync-(first|last)-failure$/.test(name))
      .map(([name, value]) => [name, String(value)]),
  );
  return { messageId: envelope.messageId, contentType: envelope.contentType, headers, body: failed.body };
}

/** A DLQ message in the same shape as {@link expectedCopy}. */
function copyOf(msg: SyncMessage) {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(msg.headers ?? {})) {
    if (name === "sync-publish-id") continue; // the publisher's own, per publish
    if (/^sync-(first|last)-failure$/.test(name)) {
      assert.ok(!Number.isNaN(Date.parse(String(value))), `${name} is a timestamp`);
      continue;
    }
    headers[name] = String(value);
  }
  const text = msg.body instanceof Uint8Array ? new TextDecoder().decode(msg.body) : String(msg.body);
  return { messageId: msg.messageId, contentType: msg.contentType, headers, body: JSON.parse(text) };
}

integration(
  "a run killed between recording a failure and its DLQ copy: the next run publishes exactly that copy",
  async () => {
    const w = await world();
    try {
      const body = await w.sell(saleOf("REMERA-1", "NOPE-1"));
      const dying = new DyingRoute();
      const first = await w.run(() => dying);
      await waitFor(() => dying.entered, "the failure recorded and its copy on its way");
      await first.kill();
      const [failedRow] = await w.sql<{ status: string; error_reason: string }[]>`
        select status, error_reason from stock_change where sku = 'NOPE-1'`;
      assert.deepEqual(failedRow, { status: "failed", error_reason: "sku_not_found" });
      assert.deepEqual(await w.takeDeadLetters(), [], "the killed run published no copy");

      // The restarted service: its dispatcher finds the copy still due and publishes it.
      await w.run((publisher) => deadLetterRoute(publisher, w.topology));
      const [copy] = await waitFor(
        async () => {
          const got = await w.takeDeadLetters();
          return got.length > 0 ? got : undefined;
        },
        "the missing DLQ copy",
        10_000,
      );
      assert.deepEqual(
        copyOf(copy),
        expectedCopy({
          eventId: String(body.event_id),
          channel: CHANNEL,
          sku: "NOPE-1",
          tiendaId: STORE,
          reason: "sku_not_found",
          error: "no listing has NOPE-1",
          attempts: 1,
          body,
        }),
        "the copy the normal path would have published",
      );
      // Sweeps go on every 200 ms: a copy published and cleared is not published again.
      await sleep(1_000);
      assert.deepEqual(await w.takeDeadLetters(), [], "exactly one copy");
      const rows = await w.sql<{ sku: string; status: string }[]>`
        select sku, status from stock_change order by sku`;
      assert.deepEqual(rows.map((r) => [r.sku, r.status]), [["NOPE-1", "failed"], ["REMERA-1", "applied"]]);
    } finally {
      await w.close();
    }
  },
);

/** A route that refuses its first `refusals` copies (the broker away), then publishes through `next`. */
class FlakyRoute implements FailureRoute {
  calls = 0;
  constructor(private readonly next: FailureRoute, private refusals: number) {}
  deadLetter(failed: FailedChange): Promise<void> {
    this.calls++;
    if (this.refusals-- > 0) {
      return Promise.reject(new Error("publish to the DLQ not confirmed within 10000 ms"));
    }
    return this.next.deadLetter(failed);
  }
}

async function dueMarks(sql: postgres.Sql): Promise<[string, string, boolean][]> {
  const rows = await sql<{ sku: string; status: string; dead_letter_due: boolean }[]>`
    select sku, status, dead_letter_due from stock_change order by sku`;
  return rows.map((r) => [r.sku, r.status, r.dead_letter_due]);
}

integration("the normal path's copy clears its mark: later sweeps publish nothing more", async () => {
  const w = await world();
  try {
    await w.sell(saleOf("REMERA-1", "NOPE-1"));
    await w.run((publisher) => deadLetterRoute(publisher, w.topology));
    const [copy] = await waitFor(async () => {
      const got = await w.takeDeadLetters();
      return got.length > 0 ? got : undefined;
    }, "the DLQ copy");
    assert.equal(copy.headers?.["sync-sku"], "NOPE-1");
    await waitFor(
      async () => (await dueMarks(w.sql)).every(([, , due]) => !due),
      "the mark cleared",
    );
    await sleep(1_000); // five sweeps
    assert.deepEqual(await w.takeDeadLetters(), [], "one copy, not one per sweep");
    assert.deepEqual(await dueMarks(w.sql), [["NOPE-1", "failed", false], ["REMERA-1", "applied", false]]);
  } finally {
    await w.close();
  }
});

integration("a copy the broker refused stays due and a later sweep publishes it, once", async () => {
  const w = await world();
  try {
    await w.sell(saleOf("NOPE-1"));
    let route: FlakyRoute | undefined;
    const run = await w.run((publisher) => route = new FlakyRoute(deadLetterRoute(publisher, w.topology), 1));
    const [copy] = await waitFor(async () => {
      const got = await w.takeDeadLetters();
      return got.length > 0 ? got : undefined;
    }, "the copy, published by a sweep");
    assert.equal(copy.headers?.["sync-reason"], "sku_not_found");
    assert.equal(route!.calls, 2, "refused once by the normal path, published by the sweep");
    assert.equal(
      (await run.metrics.deadLetterCopyFailures.get()).values[0]?.value,
      1,
      "the refusal counted",
    );
    await sleep(600);
    assert.deepEqual(await w.takeDeadLetters(), []);
    assert.deepEqual(await dueMarks(w.sql), [["NOPE-1", "failed", false]]);
  } finally {
    await w.close();
  }
});

integration(
  "a copy due for less than the sweep's grace is left to the normal path; the gauge counts what is due",
  async () => {
    const w = await world();
    try {
      const body = await w.sell(saleOf("NOPE-1"));
      const dying = new DyingRoute();
      const first = await w.run(() => dying, 60_000);
      await waitFor(() => dying.entered, "the failure recorded");
      await first.kill();
      assert.deepEqual(await dueMarks(w.sql), [["NOPE-1", "failed", true]]);

      const outbox = new DeadLetterOutbox(w.sql);
      assert.deepEqual(await outbox.due(CHANNEL, 60_000), [], "younger than the grace: not taken");
      assert.deepEqual(await outbox.due("mercadolibre", 0), [], "another channel's sweep does not take it");
      const [due] = await outbox.due(CHANNEL, 0);
      assert.deepEqual(due, {
        eventId: String(body.event_id),
        channel: CHANNEL,
        sku: "NOPE-1",
        tiendaId: STORE,
        reason: "sku_not_found",
        error: "no listing has NOPE-1",
        attempts: 1,
        body,
      });
      const metrics = createMetrics(
        `${uniqueName("outbox_gauge")}_`,
        () => Promise.resolve([]),
        () => outbox.countDue(),
      );
      assert.match(await metrics.registry.metrics(), /dead_letter_copies_due\{channel="shopify"\} 1\n/);
    } finally {
      await w.close();
    }
  },
);

integration("a change re-armed by a replay owes no copy any more", async () => {
  const w = await world();
  try {
    const body = await w.sell(saleOf("NOPE-1"));
    const dying = new DyingRoute();
    const first = await w.run(() => dying);
    await waitFor(() => dying.entered, "the failure recorded");
    await first.kill();
    assert.deepEqual(await dueMarks(w.sql), [["NOPE-1", "failed", true]]);
    await w.sell(body); // the POS republishes the sale (or an operator replays another copy)
    assert.deepEqual(await dueMarks(w.sql), [["NOPE-1", "pending", false]]);
  } finally {
    await w.close();
  }
});

integration(
  "upgrade: changes failed before the outbox are not copied; a big table gets the sweep's index concurrently",
  async () => {
    const schema = uniqueName("msync_outbox_upgrade");
    // One connection, with the service's statement_timeout: the index build lifts it for itself only.
    const sql = postgres(DATABASE_URL, {
      max: 1,
      onnotice: () => {},
      connection: { search_path: schema, statement_timeout: 15_000 },
    });
    try {
      await migrate(sql, schema, MIGRATIONS.filter((m) => m.version <= 10));
      await sql`insert into sale (event_id, identity_source, tienda_id, body) values ('old-1', 'event_id', ${STORE}, '{}')`;
      await sql`
        insert into stock_change (event_id, channel, tienda_id, sku, delta, status, error_reason, error)
        values ('old-1', 'shopify', ${STORE}, 'NOPE-OLD', -1, 'failed', 'sku_not_found', 'copied long ago')`;
      // Enough history that the migration leaves the index to a concurrent build.
      await sql`
        insert into stock_change (event_id, channel, tienda_id, sku, delta, status)
        select 'old-' || g, 'shopify', ${STORE}, 'S-' || g, -1, 'applied' from generate_series(2, 100001) g`;

      assert.deepEqual(
        await migrate(sql, schema),
        MIGRATIONS.filter((m) => m.version > 10).map((m) => m.version),
      );
      const [old] = await sql<{ dead_letter_due: boolean }[]>`
        select dead_letter_due from stock_change where sku = 'NOPE-OLD'`;
      assert.equal(old.dead_letter_due, false, "nothing is re-copied on upgrade");
      const index = () =>
        sql<{ valid: boolean; definition: string }[]>`
          select i.indisvalid as valid, pg_get_indexdef(i.indexrelid) as definition
            from pg_index i join pg_class c on c.oid = i.indexrelid
            join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = ${schema} and c.relname = 'stock_change_dead_letter_due'`;
      const [built] = await index();
      assert.ok(built?.valid, "built concurrently after the migration");
      assert.match(built.definition, /\(channel, updated_at\) WHERE dead_letter_due/);
      assert.deepEqual(await new DeadLetterOutbox(sql).due(CHANNEL, 0), []);

      // A build killed midway leaves an invalid index: the next start drops and builds it again.
      await sql`
        update pg_index set indisvalid = false
         where indexrelid = ${`${schema}.stock_change_dead_letter_due`}::regclass`;
      assert.deepEqual(await migrate(sql, schema), []);
      assert.equal((await index())[0]?.valid, true, "rebuilt");
      const [session] = await sql<{ timeout: string; path: string }[]>`
        select current_setting('statement_timeout') as timeout, current_setting('search_path') as path`;
      assert.deepEqual(
        session,
        { timeout: "15s", path: schema },
        "the pool's connection back as it was lent",
      );
    } finally {
      await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
      await sql.end({ timeout: 2 });
    }
  },
);
