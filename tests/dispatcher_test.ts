/**
 * The dispatcher (src/sync/dispatcher.ts) against the real dispatch store on a fresh
 * ledger schema, with a scripted channel adapter and a recording failure route: what
 * each batch outcome does to the ledger, where the changes that failed for good go,
 * and how the loop starts, wakes, idles and stops.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { Custody } from "../src/ledger/custody.ts";
import { DeadLetterOutbox } from "../src/ledger/dead_letter_outbox.ts";
import { type DispatchPolicy, DispatchStore } from "../src/ledger/dispatch_store.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { createMetrics, type ServiceMetrics } from "../src/metrics.ts";
import type { BatchOutcome, ClaimedBatch, FailedChange, LogicalChange } from "../src/model/batch.ts";
import type { CheckResult } from "../src/model/health.ts";
import { decodeSaleEvent } from "../src/model/sale_event.ts";
import type { BatchContext, ChannelAdapter } from "../src/sync/channel.ts";
import { Dispatcher } from "../src/sync/dispatcher.ts";
import type { FailureRoute } from "../src/sync/failure_route.ts";
import { DATABASE_URL, integration, sale, uniqueName, waitFor } from "./helpers.ts";

const CHANNEL = "shopify";
const STORE = "33333333-3333-4333-8333-333333333333";

// ---- The scripted adapter ----

/** What the adapter was handed on one call, copied before anything was sent. */
interface Call {
  batchId: string;
  key: string;
  resend: boolean;
  sends: number;
  /** The request the batch came with: the one persisted by an earlier send, or null. */
  storedRequest: unknown;
  changes: LogicalChange[];
  /** The request this call built (each build is unique, so a re-built request would show). */
  built?: unknown;
  /** What persistRequest returned: the request this call "sent". Undefined when it sent nothing. */
  sent?: unknown;
  at: number;
}

/** One scripted turn of `process()`: `send()` persists and "sends" the request. */
type Step = (
  turn: { batch: ClaimedBatch; send(): Promise<unknown>; signal: AbortSignal },
) => Promise<BatchOutcome> | BatchOutcome;

/**
 * A channel adapter whose answers the test dictates, one step per call, recording what
 * it was given. Like the real adapters it persists the request before every send.
 */
class ScriptedAdapter implements ChannelAdapter {
  readonly name = CHANNEL;
  readonly maxListingsPerBatch = 10;
  readonly calls: Call[] = [];

  constructor(private readonly steps: Step[]) {}

  async process(batch: ClaimedBatch, context: BatchContext): Promise<BatchOutcome> {
    const call: Call = {
      batchId: batch.id,
      key: batch.idempotencyKey,
      resend: batch.resend,
      sends: batch.sends,
      storedRequest: structuredClone(batch.request),
      changes: structuredClone(batch.changes),
      at: Date.now(),
    };
    this.calls.push(call);
    // Unscripted calls apply everything: the call counts the tests assert show them.
    const step = this.steps.shift() ?? sendThen(appliedAll);
    return await step({
      batch,
      signal: context.signal,
      send: async () => {
        call.built = {
          idempotencyKey: batch.idempotencyKey,
          listings: batch.changes.map((c) => ({ sku: c.sku, tiendaId: c.tiendaId, delta: c.delta })),
          build: crypto.randomUUID(),
        };
        call.sent = await context.persistRequest(call.built);
        return call.sent;
      },
    });
  }

  health(): CheckResult {
    return { ok: true };
  }
}

/** A step that sends, then answers `outcome`. */
function sendThen(outcome: BatchOutcome | ((batch: ClaimedBatch) => BatchOutcome)): Step {
  return async ({ batch, send }) => {
    await send();
    return typeof outcome === "function" ? outcome(batch) : outcome;
  };
}

/** Every listing applied, listing i with quantity 10 + i. */
function appliedAll(batch: ClaimedBatch): BatchOutcome {
  return { kind: "done", results: batch.changes.map((_, i) => ({ kind: "applied", quantityAfter: 10 + i })) };
}

/** A failure route that keeps what it was given (or refuses it). */
class RecordingRoute implements FailureRoute {
  readonly failed: FailedChange[] = [];
  refuse = false;

  deadLetter(failed: FailedChange): Promise<void> {
    if (this.refuse) return Promise.reject(new Error("dead-letter exchange unreachable"));
    this.failed.push(failed);
    return Promise.resolve();
  }
}

/** A promise the test settles by hand. */
function deferred(): { promise: Promise<void>; resolve(): void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => resolve = r);
  return { promise, resolve };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- The ledger and the dispatcher under test ----

interface ChangeRow {
  id: string;
  event_id: string;
  sku: string;
  delta: number;
  status: string;
  attempts: number;
  batch_id: string | null;
  error: string | null;
  error_reason: string | null;
  result: { quantity_after: number | null; batch_id: string } | null;
  /** How long after its last update the change is due again. */
  wait_ms: number;
}

interface BatchRow {
  id: string;
  idempotency_key: string;
  status: string;
  request: unknown;
  channel_attempts: number;
  sent_at: Date | null;
  error: string | null;
}

interface Fixture {
  sql: postgres.Sql;
  adapter: ScriptedAdapter;
  route: RecordingRoute;
  metrics: ServiceMetrics;
  dispatcher: Dispatcher;
  /** Takes sales into custody (one pending change per SKU); returns their bodies. */
  sell(...bodies: Record<string, unknown>[]): Promise<Record<string, unknown>[]>;
  changes(): Promise<ChangeRow[]>;
  batches(): Promise<BatchRow[]>;
  close(): Promise<void>;
}

/** A migrated ledger schema of its own, the real dispatch store on it, and a dispatcher. */
async function fixture(
  options: { steps?: Step[]; pollIntervalMs?: number; policy?: Partial<DispatchPolicy>; lanes?: number } = {},
): Promise<Fixture> {
  const schema = uniqueName("msync_dispatcher");
  const sql = postgres(DATABASE_URL, { max: 4, onnotice: () => {}, connection: { search_path: schema } });
  await migrate(sql, schema);
  const store = new DispatchStore(sql, {
    maxAttempts: 3,
    leaseMs: 30_000,
    backoffBaseMs: 20,
    backoffMaxMs: 50,
    ...options.policy,
  });
  const custody = new Custody(sql, [CHANNEL], { batchSize: 50, maxWaitMs: 5 });
  const adapter = new ScriptedAdapter(options.steps ?? []);
  const route = new RecordingRoute();
  const metrics = createMetrics(`${uniqueName("dispatcher_test")}_`, () => Promise.resolve([]));
  const dispatcher = new Dispatcher({
    adapter,
    store,
    failures: route,
    outbox: new DeadLetterOutbox(sql),
    metrics,
    pollIntervalMs: options.pollIntervalMs ?? 50,
    deadLetterSweepMs: 30_000,
    lanes: options.lanes,
  });
  const limits = { maxBytes: 1 << 20, maxItems: 100, maxQuantity: 1000 };
  return {
    sql,
    adapter,
    route,
    metrics,
    dispatcher,
    async sell(...bodies) {
      await Promise.all(bodies.map((body) => {
        const decoded = decodeSaleEvent(new TextEncoder().encode(JSON.stringify(body)), {}, limits);
        if (!decoded.ok) throw new Error(`test sale refused: ${decoded.rejection.message}`);
        return custody.accept(decoded.event);
      }));
      return bodies;
    },
    changes: () =>
      sql<ChangeRow[]>`
        select id::text, event_id, sku, delta, status, attempts, batch_id::text, error, error_reason, result,
               (extract(epoch from next_attempt_at - updated_at) * 1000)::float8 as wait_ms
          from stock_change order by id`,
    batches: () =>
      sql<BatchRow[]>`
        select id::text, idempotency_key, status, request, channel_attempts, sent_at, error
          from sync_batch order by id`,
    async close() {
      dispatcher.abort();
      await dispatcher.stop();
      await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
      await sql.end({ timeout: 2 });
    },
  };
}

/** One sale at STORE of `quantity` units of each SKU. */
function saleOf(skus: Record<string, number>): Record<string, unknown> {
  return sale({
    tienda_id: STORE,
    items: Object.entries(skus).map(([sku, cantidad]) => ({
      producto_id: `p-${sku}`,
      producto_sku: sku,
      cantidad,
    })),
  });
}

async function counter(
  metric: { get(): Promise<{ values: { labels: Record<string, unknown>; value: number }[] }> },
  labels: Record<string, string>,
): Promise<number> {
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
}

// ---- Outcomes ----

integration("pending changes of one listing go out as one logical change and land applied", async () => {
  const f = await fixture({ steps: [sendThen(appliedAll)] });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }), saleOf({ "SKU-1": 2, "SKU-2": 5 }), saleOf({ "SKU-1": 4 }));
    f.dispatcher.start();
    await waitFor(
      async () => (await f.changes()).every((c) => c.status === "applied"),
      "every change applied",
    );

    assert.equal(f.adapter.calls.length, 1, "one batch for both listings");
    const [call] = f.adapter.calls;
    const rows = await f.changes();
    const ids = (sku: string) => rows.filter((r) => r.sku === sku).map((r) => r.id);
    assert.deepEqual(
      call.changes.map((c) => ({ sku: c.sku, tiendaId: c.tiendaId, delta: c.delta, ids: c.changeIds })),
      [
        { sku: "SKU-1", tiendaId: STORE, delta: -7, ids: ids("SKU-1") },
        { sku: "SKU-2", tiendaId: STORE, delta: -5, ids: ids("SKU-2") },
      ],
    );
    assert.equal(ids("SKU-1").length, 3);
    assert.deepEqual([call.resend, call.sends, call.storedRequest], [false, 0, null], "a first send");

    for (const row of rows) {
      assert.equal(row.status, "applied");
      assert.equal(row.attempts, 1);
      assert.equal(row.batch_id, call.batchId);
      assert.deepEqual(row.result, {
        quantity_after: row.sku === "SKU-1" ? 10 : 11,
        batch_id: call.batchId,
        detail: null,
      });
    }
    const [batch] = await f.batches();
    assert.equal(batch.status, "done");
    assert.equal(batch.idempotency_key, call.key);
    assert.deepEqual(batch.request, call.built, "the request was persisted before it was sent");
    assert.deepEqual(call.sent, call.built);
    assert.equal(f.route.failed.length, 0);
    assert.equal(await counter(f.metrics.changesProcessed, { channel: CHANNEL, outcome: "applied" }), 4);
  } finally {
    await f.close();
  }
});

integration(
  "two lanes: a batch whose work outlasts its lease stays with the lane working on it and is sent once",
  async () => {
    // The first call works two and a half leases long before it sends (a MercadoLibre batch paced by its
    // rate limit does); the other lane polls every 50 ms meanwhile, and would take an expired lease over.
    const f = await fixture({
      lanes: 2,
      policy: { leaseMs: 1_000 },
      steps: [async (turn) => {
        await sleep(2_500);
        return await sendThen(appliedAll)(turn);
      }],
    });
    try {
      await f.sell(saleOf({ "SKU-1": 2 }));
      f.dispatcher.start();
      await waitFor(async () => (await f.changes()).every((c) => c.status === "applied"), "applied");
      assert.equal(f.adapter.calls.length, 1, "no lane took the batch over while it was worked on");
      const batches = await f.batches();
      assert.deepEqual(
        batches.map((b) => [b.status, b.channel_attempts]),
        [["done", 1]],
        "one batch, sent once",
      );
      assert.equal(await counter(f.metrics.changesProcessed, { channel: CHANNEL, outcome: "applied" }), 1);
    } finally {
      await f.close();
    }
  },
);

integration(
  "a batch taken over while its adapter works: the adapter is told to stop, and the new owner keeps it",
  async () => {
    let aborted = false;
    const f = await fixture({
      policy: { leaseMs: 600 },
      steps: [async ({ signal }) => {
        // Works (without sending) until told to stop, as an adapter waiting on its rate limit would.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 10_000);
          signal.addEventListener("abort", () => {
            aborted = true;
            clearTimeout(timer);
            resolve();
          }, { once: true });
        });
        throw signal.reason;
      }],
    });
    try {
      await f.sell(saleOf({ "SKU-1": 2 }));
      f.dispatcher.start();
      await waitFor(() => f.adapter.calls.length === 1, "the batch in its adapter");
      // Another replica takes the batch over (as after a Postgres stall longer than the lease).
      const [taken] = await f.sql<{ owner: string }[]>`
        update sync_batch set owner = gen_random_uuid(), lease_until = now() + interval '1 minute'
        returning owner::text`;
      await waitFor(() => aborted, "the adapter told to stop at the next renewal", 3_000);
      await sleep(300);
      const [batch] = await f.sql<
        { owner: string; status: string }[]
      >`select owner::text, status from sync_batch`;
      assert.deepEqual({ ...batch }, { owner: taken.owner, status: "sending" }, "left to its new owner");
      assert.deepEqual((await f.changes()).map((c) => c.status), ["sending"], "nothing released or recorded");
      assert.equal(f.adapter.calls.length, 1, "not claimed again here");
    } finally {
      await f.close();
    }
  },
);

integration("a failed change is failed in the ledger and goes down the failure route once", async () => {
  const f = await fixture({
    steps: [sendThen((batch) => ({
      kind: "done",
      results: batch.changes.map((c) =>
        c.sku === "SKU-9"
          ? { kind: "failed", reason: "sku_not_found", error: "no listing has SKU-9" }
          : { kind: "applied", quantityAfter: 3 }
      ),
    }))],
  });
  try {
    const [body] = await f.sell(saleOf({ "SKU-1": 1, "SKU-9": 2 }));
    f.dispatcher.start();
    await waitFor(() => f.route.failed.length > 0, "a dead letter");
    await f.dispatcher.stop();

    assert.equal(f.route.failed.length, 1, "only the failed change is dead-lettered, once");
    assert.deepEqual(f.route.failed[0], {
      eventId: body.event_id,
      channel: CHANNEL,
      sku: "SKU-9",
      tiendaId: STORE,
      reason: "sku_not_found",
      error: "no listing has SKU-9",
      attempts: 1,
      body,
    });
    const rows = await f.changes();
    assert.deepEqual(
      rows.map((r) => [r.sku, r.status, r.error_reason, r.error]),
      [["SKU-1", "applied", null, null], ["SKU-9", "failed", "sku_not_found", "no listing has SKU-9"]],
    );
    assert.equal(await counter(f.metrics.eventsDeadLettered, { reason: "sku_not_found" }), 1);
    assert.equal(await counter(f.metrics.changesProcessed, { channel: CHANNEL, outcome: "failed" }), 1);
  } finally {
    await f.close();
  }
});

integration(
  "a failure route that refuses the copy: the change stays failed and the loop goes on",
  async () => {
    const failAll: Step = sendThen((batch) => ({
      kind: "done",
      results: batch.changes.map(() => ({ kind: "failed", reason: "invalid_sku", error: "bad" })),
    }));
    const f = await fixture({ steps: [failAll], pollIntervalMs: 60_000 });
    try {
      f.route.refuse = true;
      await f.sell(saleOf({ "SKU-1": 1 }));
      f.dispatcher.start();
      await waitFor(
        async () => await counter(f.metrics.deadLetterCopyFailures, { channel: CHANNEL }) === 1,
        "the refused copy counted",
      );
      assert.equal((await f.changes())[0].status, "failed");
      await waitFor(() => !f.dispatcher.busy, "the loop idle"); // asleep, so wake() reaches it
      await f.sell(saleOf({ "SKU-2": 1 }));
      f.dispatcher.wake();
      await waitFor(async () => (await f.changes())[1]?.status === "applied", "the next sale applied");
    } finally {
      await f.close();
    }
  },
);

integration(
  "retry: back to pending with a later due time, re-sent, and exhausted after max attempts",
  async () => {
    const retry = (waitMs?: number) =>
      sendThen((batch) => ({
        kind: "done",
        results: batch.changes.map(() => ({
          kind: "retry",
          reason: "http_503",
          error: "unavailable",
          waitMs,
        })),
      }));
    const f = await fixture({ steps: [retry(1_500), retry(), retry()], policy: { maxAttempts: 3 } });
    try {
      const [body] = await f.sell(saleOf({ "SKU-1": 2 }));
      f.dispatcher.start();
      await waitFor(
        async () => f.adapter.calls.length === 1 && (await f.changes())[0].status === "pending",
        "retry recorded",
        5_000,
        10,
      );
      const [afterFirst] = await f.changes();
      assert.equal(afterFirst.attempts, 1);
      assert.equal(afterFirst.batch_id, null);
      assert.deepEqual([afterFirst.error_reason, afterFirst.error], ["http_503", "unavailable"]);
      assert.equal(afterFirst.wait_ms, 1_500, "due again after the wait the adapter asked for");

      await waitFor(() => f.route.failed.length > 0, "given up");
      await f.dispatcher.stop();
      const calls = f.adapter.calls;
      assert.equal(calls.length, 3, "sent maxAttempts times, then no more");
      assert.ok(calls[1].at - calls[0].at >= 1_400, `re-sent after ${calls[1].at - calls[0].at} ms`);
      assert.deepEqual(calls.map((c) => c.changes[0].attempts), [1, 2, 3]);
      assert.equal(
        new Set(calls.map((c) => c.key)).size,
        3,
        "an answered batch's key is used up: new key each time",
      );

      const [row] = await f.changes();
      assert.equal(row.status, "failed");
      assert.equal(row.error_reason, "exhausted");
      assert.equal(row.error, "gave up after 3 attempts: unavailable");
      assert.equal(f.route.failed.length, 1);
      assert.deepEqual(f.route.failed[0], {
        eventId: body.event_id,
        channel: CHANNEL,
        sku: "SKU-1",
        tiendaId: STORE,
        reason: "exhausted",
        error: "gave up after 3 attempts: unavailable",
        attempts: 3,
        body,
      });
    } finally {
      await f.close();
    }
  },
);

integration("resend: the same persisted request goes out again under the same key", async () => {
  const f = await fixture({
    steps: [
      sendThen({ kind: "resend", reason: "timeout", error: "no answer", waitMs: 0, countsAsAttempt: true }),
      sendThen(appliedAll),
    ],
  });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await waitFor(async () => (await f.changes())[0].status === "applied", "applied after the re-send");

    const [first, second] = f.adapter.calls;
    assert.equal(f.adapter.calls.length, 2);
    assert.equal(second.batchId, first.batchId);
    assert.equal(second.key, first.key, "same idempotency key");
    assert.deepEqual([second.resend, second.sends], [true, 1]);
    assert.deepEqual(second.storedRequest, first.built, "the batch comes back with the stored request");
    assert.notDeepEqual(second.built, first.built);
    assert.deepEqual(
      second.sent,
      first.built,
      "persistRequest hands back the first request, not the new one",
    );

    const [row] = await f.changes();
    assert.equal(row.attempts, 1, "a re-send does not claim the changes again");
    const [batch] = await f.batches();
    assert.deepEqual([batch.status, batch.channel_attempts], ["done", 2]);
    assert.deepEqual(batch.request, first.built);
    assert.equal(
      (await f.metrics.dispatchBatchSize.get()).values.find((v) => v.metricName?.endsWith("_count"))?.value,
      1,
    );
  } finally {
    await f.close();
  }
});

integration(
  "resend: given up as outcome_unknown after max counted sends; uncounted ones are free",
  async () => {
    const resend = (countsAsAttempt: boolean): Step =>
      sendThen({ kind: "resend", reason: "timeout", error: "no answer", waitMs: 0, countsAsAttempt });
    const f = await fixture({
      steps: [resend(false), resend(true), resend(true), resend(true)],
      policy: { maxAttempts: 3 },
    });
    try {
      const [body] = await f.sell(saleOf({ "SKU-1": 1 }));
      f.dispatcher.start();
      await waitFor(() => f.route.failed.length > 0, "given up");
      await f.dispatcher.stop();

      assert.equal(f.adapter.calls.length, 4, "a throttled send does not use up an attempt");
      assert.equal(new Set(f.adapter.calls.map((c) => c.key)).size, 1, "always the same key");
      assert.equal(f.route.failed.length, 1);
      const failed = f.route.failed[0];
      assert.deepEqual(
        [failed.eventId, failed.sku, failed.reason, failed.attempts],
        [body.event_id, "SKU-1", "outcome_unknown", 1],
      );
      assert.match(failed.error, /gave up after 3 sends without a definite answer \(last: no answer\)/);
      const [row] = await f.changes();
      assert.deepEqual([row.status, row.error_reason], ["failed", "outcome_unknown"]);
      assert.equal((await f.batches())[0].status, "failed");
    } finally {
      await f.close();
    }
  },
);

integration("release: the changes go back untouched, attempts unchanged, and are claimed later", async () => {
  const f = await fixture({
    steps: [
      () => ({ kind: "release", reason: "budget_exhausted", error: "no budget left", waitMs: 400 }),
      sendThen(appliedAll),
    ],
  });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await waitFor(
      async () => f.adapter.calls.length === 1 && (await f.changes())[0].status === "pending",
      "released",
      5_000,
      10,
    );
    const [released] = await f.changes();
    assert.equal(released.attempts, 0, "the claim's attempt is given back");
    assert.equal(released.batch_id, null);
    assert.equal(released.error, "budget_exhausted: no budget left");
    assert.equal(released.wait_ms, 400);
    const [superseded] = await f.batches();
    assert.deepEqual([superseded.status, superseded.request, superseded.sent_at], ["superseded", null, null]);

    await waitFor(async () => (await f.changes())[0].status === "applied", "applied later");
    const [first, second] = f.adapter.calls;
    assert.equal(f.adapter.calls.length, 2);
    assert.equal(first.sent, undefined, "nothing was sent");
    assert.ok(second.at - first.at >= 350, `claimed again after ${second.at - first.at} ms`);
    assert.notEqual(second.key, first.key, "a new batch under a new key");
    assert.deepEqual([second.resend, second.changes[0].attempts], [false, 1]);
    assert.equal(f.route.failed.length, 0);
  } finally {
    await f.close();
  }
});

integration(
  "an adapter that throws after sending: the loop lives on, the batch is re-sent under its key",
  async () => {
    const f = await fixture({
      steps: [
        async ({ send }) => {
          await send();
          throw new TypeError("adapter bug: cannot read 'id' of undefined");
        },
        sendThen(appliedAll),
      ],
    });
    try {
      await f.sell(saleOf({ "SKU-1": 1 }));
      f.dispatcher.start();
      await waitFor(async () => (await f.changes())[0].status === "applied", "applied after the throw");

      const [first, second] = f.adapter.calls;
      assert.equal(f.adapter.calls.length, 2);
      assert.deepEqual([second.batchId, second.key, second.resend], [first.batchId, first.key, true]);
      assert.deepEqual(second.sent, first.built, "the same request again");
      const [batch] = await f.batches();
      assert.deepEqual([batch.status, batch.channel_attempts], ["done", 2]);
      assert.match(batch.error ?? "", /adapter bug/);
      assert.equal((await f.changes())[0].attempts, 1);
    } finally {
      await f.close();
    }
  },
);

integration("an adapter that throws before sending: the batch is released and claimed again", async () => {
  const f = await fixture({
    steps: [
      () => {
        throw new Error("adapter bug before the send");
      },
      sendThen(appliedAll),
    ],
  });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await waitFor(async () => (await f.changes())[0].status === "applied", "applied after the throw");

    const [first, second] = f.adapter.calls;
    assert.equal(f.adapter.calls.length, 2);
    assert.notEqual(second.key, first.key, "never sent, so its key was retired");
    assert.deepEqual([second.resend, second.changes[0].attempts], [false, 1]);
    assert.deepEqual((await f.batches()).map((b) => b.status), ["superseded", "done"]);
  } finally {
    await f.close();
  }
});

// ---- The loop ----

integration("stop() lets the batch in flight finish and be recorded, then claims nothing more", async () => {
  const entered = deferred();
  const gate = deferred();
  const f = await fixture({
    pollIntervalMs: 60_000,
    steps: [async ({ batch, send }) => {
      await send();
      entered.resolve();
      await gate.promise;
      return appliedAll(batch);
    }],
  });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await entered.promise;
    let stopped = false;
    const stopping = f.dispatcher.stop().then(() => stopped = true);
    await sleep(200);
    assert.equal(stopped, false, "stop waits for the batch in flight");
    assert.equal((await f.changes())[0].status, "sending");
    gate.resolve();
    await stopping;
    assert.equal((await f.changes())[0].status, "applied", "recorded before stop() resolved");
    assert.equal((await f.batches())[0].status, "done");

    await f.sell(saleOf({ "SKU-2": 1 }));
    f.dispatcher.wake();
    await sleep(300);
    assert.equal(f.adapter.calls.length, 1, "a stopped loop claims nothing");
    assert.equal((await f.changes())[1].status, "pending");
  } finally {
    gate.resolve();
    await f.close();
  }
});

integration("stop() during a claim ends the loop at once, not after a whole poll interval", async () => {
  const f = await fixture({ pollIntervalMs: 60_000 });
  // Holding sync_batch locked keeps the loop inside its claim until the test lets go.
  const blocker = await f.sql.reserve();
  try {
    await blocker`begin`;
    await blocker`lock table sync_batch in access exclusive mode`;
    f.dispatcher.start();
    await waitFor(
      async () =>
        (await f.sql`select 1 from pg_locks where relation = 'sync_batch'::regclass and not granted`).length >
          0,
      "the loop's claim waiting on the lock",
    );
    let stopped = false;
    const stopping = f.dispatcher.stop().then(() => stopped = true);
    await blocker`commit`;
    // The claim finds nothing; a loop that is stopping must not go to sleep on its 60 s poll.
    await waitFor(() => stopped, "stop() resolved", 5_000);
    await stopping;
  } finally {
    await blocker`rollback`.catch(() => {});
    blocker.release();
    await f.close();
  }
});

integration("stop() while a batch is released ends the loop without the release's pause", async () => {
  const entered = deferred();
  const gate = deferred();
  const f = await fixture({
    pollIntervalMs: 60_000,
    steps: [async () => {
      entered.resolve();
      await gate.promise;
      return { kind: "release", reason: "throttled", error: "budget", waitMs: 60_000 };
    }],
  });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await entered.promise;
    let stopped = false;
    const stopping = f.dispatcher.stop().then(() => stopped = true);
    gate.resolve();
    // The release pauses the loop up to 5 s; a stopping loop skips it.
    await waitFor(() => stopped, "stop() resolved", 2_500);
    await stopping;
    assert.equal((await f.changes())[0].status, "pending", "the released change waits for the next claim");
  } finally {
    gate.resolve();
    await f.close();
  }
});

integration("wake() makes an idle loop take new work long before its poll interval", async () => {
  const f = await fixture({ pollIntervalMs: 60_000 });
  try {
    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await waitFor(async () => (await f.changes())[0].status === "applied", "the first sale applied");
    // Busy until a claim finds nothing; then the loop sleeps on its 60 s poll.
    await waitFor(() => !f.dispatcher.busy, "the loop idle");

    await f.sell(saleOf({ "SKU-2": 1 }));
    await sleep(500);
    assert.equal(f.adapter.calls.length, 1, "an idle loop does not see new work by itself");
    assert.equal((await f.changes())[1].status, "pending");

    const woken = Date.now();
    f.dispatcher.wake();
    await waitFor(async () => (await f.changes())[1].status === "applied", "the second sale applied", 3_000);
    assert.equal(f.adapter.calls.length, 2);
    assert.ok(f.adapter.calls[1].at - woken < 3_000);
  } finally {
    await f.close();
  }
});

integration("idle(maxWaitMs) resolves once the loop has no work, or at maxWaitMs while it has", async () => {
  const entered = deferred();
  const gate = deferred();
  const f = await fixture({
    pollIntervalMs: 60_000,
    steps: [async ({ batch, send }) => {
      await send();
      entered.resolve();
      await gate.promise;
      return appliedAll(batch);
    }],
  });
  try {
    let started = Date.now();
    await f.dispatcher.idle(5_000);
    assert.ok(Date.now() - started < 1_000, "nothing to do: idle at once");

    await f.sell(saleOf({ "SKU-1": 1 }));
    f.dispatcher.start();
    await entered.promise;
    assert.equal(f.dispatcher.busy, true);
    started = Date.now();
    await f.dispatcher.idle(300);
    const waited = Date.now() - started;
    assert.ok(waited >= 290 && waited < 2_000, `busy: idle(300) gave up after ${waited} ms`);
    assert.equal((await f.changes())[0].status, "sending");

    gate.resolve();
    started = Date.now();
    await f.dispatcher.idle(10_000);
    assert.ok(Date.now() - started < 3_000, "resolved once the work was done, not at maxWaitMs");
    assert.equal(f.dispatcher.busy, false);
    assert.equal((await f.changes())[0].status, "applied");
  } finally {
    gate.resolve();
    await f.close();
  }
});
