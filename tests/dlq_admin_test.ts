/**
 * DLQ inspection and replay (src/ops/dead_letters.ts) against the real
 * RabbitMQ (and, through the service, Postgres, Redis and the Shopify
 * sandbox): listing never loses or reorders messages, replay moves exactly the
 * matches with their original bytes and properties and a fresh set of
 * attempts, and a replayed failed sale is applied once. Plus the operator
 * CLIs' argument parsing and output (scripts/dlq.ts, scripts/resync*.ts) against a fake service.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Connection, type Envelope, type Publisher, type SyncMessage } from "rabbitmq-client";
import { type ConfirmingPublisher, createConfirmingPublisher } from "../src/broker/publisher.ts";
import { originalContentEncoding } from "../src/broker/raw_body.ts";
import { buildTopology, declareTopology, type Topology } from "../src/broker/topology.ts";
import { startService } from "../src/main.ts";
import {
  DeadLetterAdmin,
  DeadLetterReplayError,
  DeadLetterValidationError,
  type DeadLetterView,
  replayRequestSchema,
} from "../src/ops/dead_letters.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { formatDlqList, formatReplay, parseDlqArgs } from "../scripts/dlq.ts";
import { CliError, formatTable, OpsClient, UsageError } from "../scripts/ops_client.ts";
import { main as resyncMain, parseResyncArgs } from "../scripts/resync.ts";
import {
  exitCodeFor,
  formatDuration,
  formatResyncReport,
  formatSummary,
  groupDigits,
  progressLine,
  ReportTally,
  type ResyncStatus,
} from "../scripts/resync_format.ts";
import {
  harnessFor,
  integration,
  policyOn,
  RABBITMQ_URL,
  sale,
  startHarness,
  testConfig,
  uniqueName,
  waitFor,
} from "./helpers.ts";

const enc = (s: string) => new TextEncoder().encode(s);

/** A DeadLetterAdmin on its own connection and confirming publisher, as the service builds it. */
async function adminFor(topology: Topology, wrap?: (p: ConfirmingPublisher) => ConfirmingPublisher) {
  const connection = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  await connection.onConnect(5000);
  const real = createConfirmingPublisher(connection, topology);
  const admin = new DeadLetterAdmin({ connection, publisher: wrap ? wrap(real) : real, topology });
  return {
    admin,
    connection,
    async close() {
      await real.close();
      await connection.close();
    },
  };
}

/** Drains a queue (noAck) and returns its messages, content encoding restored. */
async function drain(connection: Connection, queue: string): Promise<SyncMessage[]> {
  const out: SyncMessage[] = [];
  for (;;) {
    const msg = await connection.basicGet({ queue, noAck: true });
    if (!msg) return out;
    out.push({ ...msg, contentEncoding: originalContentEncoding(msg.contentEncoding) });
  }
}

async function depth(connection: Connection, queue: string): Promise<number> {
  return (await connection.queueDeclare({ queue, passive: true })).messageCount;
}

const bytesOf = (msg: SyncMessage) =>
  new Uint8Array(msg.body instanceof Uint8Array ? msg.body : enc(String(msg.body)));

/**
 * A topology nobody consumes: the test sees exactly what a replay put in the
 * work queue, and fills the DLQ itself.
 */
async function standalone(
  wrap?: (p: ConfirmingPublisher) => ConfirmingPublisher,
  queueType: "classic" | "quorum" = "classic",
) {
  const id = uniqueName("dlqt");
  const topology = buildTopology({
    exchange: `blend_events.${id}`,
    routingKey: "sales.created",
    queue: `marketplace-sync.${id}`,
    queueType,
    retryDelaysMs: [100],
  });
  const a = await adminFor(topology, wrap);
  await declareTopology(a.connection, topology);
  const pub: Publisher = a.connection.createPublisher({ confirm: true });
  return {
    ...a,
    topology,
    /** Puts a message straight into the DLQ. */
    deadLetter: (body: Uint8Array | string, envelope: Envelope = {}) =>
      pub.send(
        { exchange: "", routingKey: topology.deadLetterQueue, durable: true, ...envelope },
        Buffer.from(typeof body === "string" ? enc(body) : body),
      ),
    /** A DLQ message for event `e` with a reason. */
    failed: (e: string, reason: string) =>
      pub.send({
        exchange: "",
        routingKey: topology.deadLetterQueue,
        durable: true,
        contentType: "application/json",
        messageId: `msg-${e}`,
        headers: { "sync-event-id": e, "sync-reason": reason, "sync-attempts": 3 },
      }, Buffer.from(JSON.stringify(sale({ event_id: e })))),
    dlqIds: async () => (await a.admin.list(1000)).messages.map((m) => m.event_id),
    /** Event ids of what a replay put in the work queue (`sync-event-id` is gone: from the message id). */
    workIds: async () =>
      (await drain(a.connection, topology.queue)).map((m) => {
        assert.equal(m.headers?.["sync-event-id"], undefined);
        return String(m.messageId).replace(/^msg-/, "");
      }),
    async cleanup() {
      for (
        const q of [
          topology.queue,
          ...topology.retryQueues.map((r) => r.name),
          topology.deadLetterQueue,
        ]
      ) {
        await a.connection.queueDelete({ queue: q }).catch(() => {});
      }
      await a.connection.exchangeDelete({ exchange: topology.exchange }).catch(() => {});
      await pub.close();
      await a.close();
    },
  };
}

/** Reads one outcome of the service's `events_acked_total`. */
async function acked(url: string, outcome: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = text.match(new RegExp(`events_acked_total\\{outcome="${outcome}"\\} (\\d+)`));
  return m ? Number(m[1]) : 0;
}

// ---------------------------------------------------------------------------
// Listing

integration("list peeks without losing or reordering: same 5 messages twice, depth unchanged", async () => {
  const h = await startHarness({ CONSUMER_CONCURRENCY: "1" });
  const a = await adminFor(h.service.topology);
  try {
    const dlq = h.service.topology.deadLetterQueue;
    const nonUtf8 = new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]);
    const zero = sale({
      event_id: "zero-1",
      items: [{ producto_id: "p", producto_sku: "S-1", cantidad: 0 }],
    });
    const bodies: [Uint8Array | string | Record<string, unknown>, string][] = [
      ["this is not json", "invalid_json"],
      [zero, "invalid_event"],
      [nonUtf8, "invalid_encoding"],
      ['{"tienda_id": "t", "items": [{', "invalid_json"],
      [
        sale({ event_id: "zero-2", items: [{ producto_id: "p", producto_sku: "S-2", cantidad: 0 }] }),
        "invalid_event",
      ],
    ];
    for (const [i, [body]] of bodies.entries()) {
      await h.publish(body, { messageId: `bad-${i}`, headers: { "x-origin": "pos-7" } });
    }
    await waitFor(async () => (await h.queueDepth(dlq)) === 5, "5 dead letters");

    const first = await a.admin.list(10);
    assert.equal(first.total, 5);
    assert.deepEqual(first.messages.map((m) => m.position), [0, 1, 2, 3, 4]);
    assert.deepEqual(first.messages.map((m) => m.message_id), ["bad-0", "bad-1", "bad-2", "bad-3", "bad-4"]);
    assert.deepEqual(first.messages.map((m) => m.reason), bodies.map(([, r]) => r));
    // The identity the consumer computed: message_id first (docs/DESIGN.md §3).
    assert.deepEqual(first.messages.map((m) => m.event_id), ["bad-0", "bad-1", "bad-2", "bad-3", "bad-4"]);
    for (const m of first.messages) {
      assert.equal(m.attempts, 1);
      assert.ok((m.error ?? "").length > 5, "a human message");
      assert.equal(m.headers["x-origin"], "pos-7");
      assert.equal(m.content_type, "application/json");
      assert.ok(m.first_failure && m.last_failure);
      assert.equal(m.channel, null);
    }
    const [notJson, zeroView, binary, truncated] = first.messages;
    assert.equal(notJson.body, "this is not json");
    assert.equal(notJson.body_text, "this is not json");
    assert.equal(notJson.body_base64, undefined);
    assert.deepEqual(zeroView.body, zero, "JSON bodies are parsed");
    assert.equal(zeroView.body_text, undefined);
    assert.equal(binary.body_base64, btoa(String.fromCharCode(...nonUtf8)));
    assert.equal(binary.body, '{"\uFFFD\uFFFD"}', "lossy text next to the exact bytes");
    assert.equal(truncated.body, '{"tienda_id": "t", "items": [{');

    const second = await a.admin.list(10);
    assert.deepEqual(second, first, "a second listing sees the same messages in the same order");
    assert.equal(await h.queueDepth(dlq), 5, "listing removed nothing");

    const two = await a.admin.list(2);
    assert.equal(two.total, 5);
    assert.deepEqual(
      two.messages.map((m) => m.message_id),
      ["bad-0", "bad-1"],
      "limit respected, from the head",
    );
    assert.deepEqual(await a.admin.list(0), { total: 5, messages: [] });
    await assert.rejects(a.admin.list(-1), DeadLetterValidationError);

    const all = await h.takeDeadLetters();
    assert.deepEqual(
      all.map((m) => m.messageId),
      ["bad-0", "bad-1", "bad-2", "bad-3", "bad-4"],
      "after three listings the DLQ is intact, in order",
    );
    assert.deepEqual(new Uint8Array(all[2].body), nonUtf8, "bytes untouched");
  } finally {
    await a.close();
    await h.close();
  }
});

integration("list returns at most 1000 messages and reports the full depth", async () => {
  const s = await standalone();
  try {
    for (let i = 0; i < 1003; i++) await s.deadLetter(`m${i}`, { messageId: `m${i}` });
    const got = await s.admin.list(5000);
    assert.equal(got.total, 1003);
    assert.equal(got.messages.length, 1000);
    assert.equal(got.messages[999].position, 999);
    assert.equal(got.messages[999].message_id, "m999");
    assert.equal(await depth(s.connection, s.topology.deadLetterQueue), 1003);
    const head = await s.admin.list(3);
    assert.deepEqual(
      head.messages.map((m) => m.message_id),
      ["m0", "m1", "m2"],
      "order kept after a big peek",
    );
  } finally {
    await s.cleanup();
  }
});

integration("concurrent lists and replays are serialized: each sees the whole DLQ", async () => {
  const s = await standalone();
  try {
    for (const e of ["e0", "e1", "e2", "e3", "e4"]) await s.failed(e, "exhausted");
    const [l1, l2, r, l3] = await Promise.all([
      s.admin.list(10),
      s.admin.list(10),
      s.admin.replay({ reason: "no_such_reason" }),
      s.admin.list(10),
    ]);
    for (const l of [l1, l2, l3]) {
      assert.equal(l.total, 5);
      assert.deepEqual(l.messages.map((m) => m.event_id), ["e0", "e1", "e2", "e3", "e4"]);
    }
    assert.deepEqual(r, { moved: 0, kept: 5, scanned: 5, moved_event_ids: [] });
    assert.deepEqual(await s.dlqIds(), ["e0", "e1", "e2", "e3", "e4"]);
  } finally {
    await s.cleanup();
  }
});

integration(
  "quorum DLQ under a delivery-limit policy of 2: 30 listings and a replay lose nothing",
  async () => {
    const s = await standalone(undefined, "quorum");
    const clear = await policyOn(s.topology.queue, { "delivery-limit": 2 });
    try {
      const bad = ["bad-0", "bad-1", "bad-2", "bad-3", "bad-4"];
      for (const e of ["bad-0", "sale-1", "bad-1", "bad-2", "sale-2", "bad-3", "bad-4"]) {
        await s.failed(e, e.startsWith("sale") ? "ledger_unavailable" : "invalid_event");
      }
      const everything = ["bad-0", "sale-1", "bad-1", "bad-2", "sale-2", "bad-3", "bad-4"];
      for (let i = 0; i < 30; i++) {
        const listed = await s.admin.list(50);
        assert.equal(listed.total, 7, `listing ${i + 1} sees all 7 dead letters`);
        assert.deepEqual(listed.messages.map((m) => m.event_id), everything, `listing ${i + 1}: same order`);
      }
      assert.deepEqual(await s.admin.replay({ eventIds: ["sale-1", "sale-2"] }), {
        moved: 2,
        kept: 5,
        scanned: 7,
        moved_event_ids: ["sale-1", "sale-2"],
      });
      for (let i = 0; i < 30; i++) {
        assert.deepEqual(await s.dlqIds(), bad, `after the replay, listing ${i + 1}: the 5 bad events stay`);
      }
      assert.deepEqual(await s.workIds(), ["sale-1", "sale-2"], "both sales went back to the work queue");
      const left = await drain(s.connection, s.topology.deadLetterQueue);
      assert.deepEqual(left.map((m) => m.headers?.["sync-event-id"]), bad);
      for (const m of left) {
        // RabbitMQ 3.10 sends 0 on a first delivery when a limit applies; any return would make it ≥ 1.
        assert.equal(
          Number(m.headers?.["x-delivery-count"] ?? 0),
          0,
          "inspection never counted as a delivery",
        );
      }
    } finally {
      await clear();
      await s.cleanup();
    }
  },
);

// ---------------------------------------------------------------------------
// Replay

integration(
  "replay publishes the original bytes and properties, without sync-* and broker headers",
  async () => {
    const s = await standalone();
    try {
      const raw = new Uint8Array([0x7b, 0xff, 0x7d, 0x00, 0x0a]);
      await s.deadLetter(raw, {
        contentType: "application/json",
        messageId: "m-1",
        correlationId: "c-1",
        appId: "pos",
        type: "sale",
        timestamp: 1_700_000_000,
        priority: 3,
        headers: {
          "x-origin": "pos-7",
          "x-death": [{ count: 1, reason: "rejected", queue: "q" }],
          "x-delivery-count": 2,
          "sync-reason": "invalid_encoding",
          "sync-error": "not UTF-8",
          "sync-attempts": 4,
          "sync-event-id": "ev-1",
          "sync-first-failure": "2024-01-15T10:30:45.000Z",
          "sync-original-exchange": "blend_events",
          "sync-original-expiration": "60000",
        },
      });
      await s.deadLetter(enc('{"a":1}'), { contentEncoding: "gzip", messageId: "m-2" });

      const [view] = (await s.admin.list(1)).messages;
      assert.equal(view.event_id, "ev-1", "sync-event-id wins over message_id");
      assert.equal(view.attempts, 4);
      assert.equal(view.reason, "invalid_encoding");
      assert.equal(view.body_base64, btoa(String.fromCharCode(...raw)));

      assert.deepEqual(await s.admin.replay({ eventIds: ["ev-1", "m-2"] }), {
        moved: 2,
        kept: 0,
        scanned: 2,
        moved_event_ids: ["ev-1", "m-2"],
      });
      const [first, second] = await drain(s.connection, s.topology.queue);
      assert.deepEqual(bytesOf(first), raw, "original bytes");
      assert.equal(first.contentType, "application/json");
      assert.equal(first.contentEncoding, undefined);
      assert.equal(first.messageId, "m-1");
      assert.equal(first.correlationId, "c-1");
      assert.equal(first.appId, "pos");
      assert.equal(first.type, "sale");
      assert.equal(first.timestamp, 1_700_000_000);
      assert.equal(first.priority, 3);
      assert.equal(first.durable, true);
      assert.equal(first.expiration, undefined);
      // The confirming publisher tags every publish with its own id (stripped again on any republish).
      const { "sync-publish-id": publishId, ...headers } = first.headers ?? {};
      assert.equal(typeof publishId, "string");
      assert.deepEqual(headers, { "x-origin": "pos-7" }, "only the application's own headers go back");
      assert.equal(second.contentEncoding, "gzip", "content encoding restored");
      assert.deepEqual(bytesOf(second), enc('{"a":1}'));
      assert.equal(await depth(s.connection, s.topology.deadLetterQueue), 0);
    } finally {
      await s.cleanup();
    }
  },
);

integration(
  "replay by event id, by reason and by both moves only the matches; the rest keep their order",
  async () => {
    const s = await standalone();
    try {
      const reasons = [
        "invalid_json",
        "exhausted",
        "invalid_json",
        "store_unmapped",
        "exhausted",
        "invalid_json",
      ];
      for (const [i, r] of reasons.entries()) await s.failed(`e${i}`, r);

      for (
        const bad of [{}, { all: false }, { eventIds: [] }, { reason: "" }, { eventIds: ["e1"], reason: "" }]
      ) {
        await assert.rejects(s.admin.replay(bad), DeadLetterValidationError, JSON.stringify(bad));
      }
      assert.equal(
        await depth(s.connection, s.topology.deadLetterQueue),
        6,
        "a refused replay touches nothing",
      );

      assert.deepEqual(await s.admin.replay({ eventIds: ["e3", "e1", "nope"] }), {
        moved: 2,
        kept: 4,
        scanned: 6,
        moved_event_ids: ["e1", "e3"],
      });
      assert.deepEqual(await s.dlqIds(), ["e0", "e2", "e4", "e5"]);

      const both = await s.admin.replay({ reason: "invalid_json", eventIds: ["e0", "e4"] });
      assert.deepEqual(
        both,
        { moved: 1, kept: 3, scanned: 4, moved_event_ids: ["e0"] },
        "event ids AND reason",
      );
      assert.deepEqual(await s.dlqIds(), ["e2", "e4", "e5"]);

      // Criteria combine with AND; "all" restricts nothing.
      const byReason = await s.admin.replay({ all: true, reason: "exhausted" });
      assert.deepEqual(byReason, { moved: 1, kept: 2, scanned: 3, moved_event_ids: ["e4"] });
      assert.deepEqual(await s.dlqIds(), ["e2", "e5"]);

      assert.deepEqual(await s.admin.replay({ all: true }), {
        moved: 2,
        kept: 0,
        scanned: 2,
        moved_event_ids: ["e2", "e5"],
      });
      assert.deepEqual(await s.admin.replay({ all: true }), {
        moved: 0,
        kept: 0,
        scanned: 0,
        moved_event_ids: [],
      });
      assert.deepEqual(await s.workIds(), ["e1", "e3", "e0", "e4", "e2", "e5"], "each moved exactly once");
    } finally {
      await s.cleanup();
    }
  },
);

integration(
  "a failed publish stops the replay, keeps the rest in order and says how many moved",
  async () => {
    let calls = 0;
    const s = await standalone((real) => ({
      toQueue: (queue, envelope, body) =>
        ++calls === 3 ? Promise.reject(new Error("broker said no")) : real.toQueue(queue, envelope, body),
      close: () => real.close(),
    }));
    try {
      for (const e of ["e0", "e1", "e2", "e3", "e4"]) await s.failed(e, "exhausted");
      const error = await s.admin.replay({ all: true }).then(() => undefined, (e) => e);
      assert.ok(error instanceof DeadLetterReplayError, String(error));
      assert.equal(error.moved, 2);
      assert.match(error.message, /after moving 2 message/);
      assert.match(error.message, /broker said no/);
      assert.deepEqual(await s.dlqIds(), ["e2", "e3", "e4"], "nothing lost, order kept");
      assert.deepEqual(await s.workIds(), ["e0", "e1"]);

      // The work queue deleted by hand: refused before anything is taken from the DLQ.
      await s.connection.queueDelete({ queue: s.topology.queue });
      const gone = await s.admin.replay({ all: true }).then(() => undefined, (e) => e);
      assert.ok(gone instanceof DeadLetterReplayError, String(gone));
      assert.equal(gone.moved, 0);
      assert.match(gone.message, /replay not started: the work queue .* is not there/);
      assert.deepEqual(await s.dlqIds(), ["e2", "e3", "e4"]);
    } finally {
      await s.cleanup();
    }
  },
);

integration(
  "quorum DLQ: a publish failing mid-listing or mid-replay loses nothing and duplicates nothing",
  async () => {
    let failOn = -1, calls = 0;
    const s = await standalone((real) => ({
      toQueue: (queue, envelope, body) =>
        ++calls === failOn
          ? Promise.reject(new Error("broker said no"))
          : real.toQueue(queue, envelope, body),
      close: () => real.close(),
    }), "quorum");
    try {
      const ids = ["k0", "m1", "k2", "k3", "m4", "k5"];
      for (const e of ids) await s.failed(e, e.startsWith("m") ? "exhausted" : "invalid_event");
      // Listing: the 4th copy fails.
      calls = 0, failOn = 4;
      await assert.rejects(s.admin.list(10), /keeping k3 .* failed: broker said no/);
      failOn = -1;
      assert.deepEqual((await s.dlqIds()).toSorted(), ids.toSorted(), "all 6 still there, once each");
      // Replay of the two m*: the 3rd publish (whatever it is) fails.
      calls = 0, failOn = 3;
      const error = await s.admin.replay({ reason: "exhausted" }).then(() => undefined, (e) => e);
      assert.ok(error instanceof DeadLetterReplayError, String(error));
      assert.match(error.message, /broker said no/);
      failOn = -1;
      const moved = await s.workIds();
      assert.equal(moved.length, error.moved);
      assert.deepEqual(
        [...moved, ...await s.dlqIds()].toSorted(),
        ids.toSorted(),
        "every message is either back in the work queue or still in the DLQ, once",
      );
    } finally {
      await s.cleanup();
    }
  },
);

integration(
  "a replayed invalid event lands in the DLQ again with its reason and fresh attempts, once",
  async () => {
    const h = await startHarness({ CONSUMER_CONCURRENCY: "1" });
    const a = await adminFor(h.service.topology);
    try {
      const dlq = h.service.topology.deadLetterQueue;
      await h.publish("not json at all", { messageId: "again-1" });
      await h.publish(sale({ items: [{ producto_id: "p", producto_sku: "S", cantidad: 0 }] }), {
        messageId: "again-2",
      });
      await waitFor(async () => (await h.queueDepth(dlq)) === 2, "2 dead letters");

      const moved = await a.admin.replay({ reason: "invalid_event" });
      assert.deepEqual(moved, { moved: 1, kept: 1, scanned: 2, moved_event_ids: ["again-2"] });
      await waitFor(async () => (await h.queueDepth(dlq)) === 2, "dead-lettered again");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await h.queueDepth(dlq), 2, "it does not loop");
      assert.equal(await h.queueDepth(), 0);
      const after = (await a.admin.list(10)).messages;
      assert.deepEqual(after.map((m) => [m.event_id, m.reason, m.attempts]), [
        ["again-1", "invalid_json", 1],
        ["again-2", "invalid_event", 1],
      ], "kept in place; the replayed one is back at the tail with attempts starting over");
      assert.match(after[1].error ?? "", /cantidad/);

      const all = await a.admin.replay({ all: true });
      assert.equal(all.moved, 2);
      assert.equal(all.scanned, 2, "messages dead-lettered again during the replay are not rescanned");
      await waitFor(async () => (await h.queueDepth(dlq)) === 2, "both dead-lettered again");
      await new Promise((r) => setTimeout(r, 500));
      const final = (await a.admin.list(10)).messages;
      assert.deepEqual(final.map((m: DeadLetterView) => [m.event_id, m.reason, m.attempts]), [
        ["again-1", "invalid_json", 1],
        ["again-2", "invalid_event", 1],
      ]);
      assert.equal((await h.sql`select count(*)::int as n from sale`)[0].n, 0, "nothing invalid was stored");
    } finally {
      await a.close();
      await h.close();
    }
  },
);

integration(
  "a sale that failed for good is applied exactly once when replayed, and never again",
  async () => {
    const catalog = defaultCatalog();
    // Every inventory mutation fails inside Shopify (nothing applied): the change is
    // retried under new keys until DISPATCH_MAX_ATTEMPTS runs out → `exhausted`.
    const sandbox = await startShopifySandbox({ catalog, faults: { internalErrorRate: 1, seed: 5 } });
    const config = testConfig({
      CHANNELS: "shopify",
      DISPATCH_ENABLED: "true",
      SHOPIFY_URL: sandbox.url,
      SHOPIFY_TOKEN: sandbox.token,
      SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id]))),
      DISPATCH_BACKOFF_BASE: "100ms",
      DISPATCH_BACKOFF_MAX: "1s",
      DISPATCH_MAX_ATTEMPTS: "2",
    });
    const service = startService(config);
    await service.started;
    const h = await harnessFor(service, config);
    const a = await adminFor(service.topology);
    try {
      const dlq = service.topology.deadLetterQueue;
      const tienda = catalog.stores[0].tienda_id;
      const product = catalog.products.find((p) => p.sku === "REMERA-001")!;
      const before = sandbox.availableFor(product.producto_id, tienda)!;
      const e = sale({
        event_id: "replay-once-1",
        tienda_id: tienda,
        items: [{ producto_id: product.producto_id, producto_sku: "REMERA-001", cantidad: 3 }],
      });
      await h.publish(e, { messageId: "replay-once-1" });

      const [failed] = await waitFor(
        async () => {
          const rows = await h.sql<{ status: string; error_reason: string }[]>`
        select status, error_reason from stock_change where event_id = 'replay-once-1' and status = 'failed'`;
          return rows.length ? rows : undefined;
        },
        "the change failed for good",
        30_000,
      );
      assert.equal(failed.error_reason, "exhausted");
      await waitFor(async () => (await h.queueDepth(dlq)) === 1, "its DLQ copy");
      const [copy] = (await a.admin.list(10)).messages;
      assert.equal(copy.event_id, "replay-once-1");
      assert.equal(copy.reason, "exhausted");
      assert.equal(copy.channel, "shopify");
      assert.equal(copy.sku, "REMERA-001");
      assert.equal(copy.attempts, 2);
      assert.equal(sandbox.availableFor(product.producto_id, tienda), before, "nothing applied yet");
      assert.equal(sandbox.stats().mutationsApplied, 0);

      // Shopify recovers; the operator replays the sale.
      sandbox.setFaults({ internalErrorRate: 0 });
      assert.deepEqual(await a.admin.replay({ eventIds: ["replay-once-1"] }), {
        moved: 1,
        kept: 0,
        scanned: 1,
        moved_event_ids: ["replay-once-1"],
      });
      await waitFor(
        async () => {
          const rows = await h
            .sql`select 1 from stock_change where event_id = 'replay-once-1' and status = 'applied'`;
          return rows.length === 1;
        },
        "applied after the replay",
        20_000,
      );
      assert.equal(await acked(service.url, "rearmed"), 1, "custody re-armed the failed change");
      assert.equal(sandbox.availableFor(product.producto_id, tienda), before - 3, "applied once");
      assert.equal(sandbox.stats().mutationsApplied, 1);
      assert.equal(await h.queueDepth(dlq), 0);

      // A second replay finds nothing to move…
      assert.deepEqual(await a.admin.replay({ eventIds: ["replay-once-1"] }), {
        moved: 0,
        kept: 0,
        scanned: 0,
        moved_event_ids: [],
      });
      // …and a second copy of the same sale (e.g. one replayed twice by hand) changes nothing.
      const pub = h.rabbit.createPublisher({ confirm: true });
      await pub.send(
        {
          exchange: "",
          routingKey: dlq,
          durable: true,
          contentType: "application/json",
          headers: copy.headers,
        },
        Buffer.from(JSON.stringify(copy.body)),
      );
      await pub.close();
      assert.equal((await a.admin.replay({ eventIds: ["replay-once-1"] })).moved, 1);
      await waitFor(
        async () => (await acked(service.url, "duplicate")) === 1,
        "the copy was taken as a duplicate",
      );
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(sandbox.availableFor(product.producto_id, tienda), before - 3, "still applied once");
      assert.equal(sandbox.stats().mutationsApplied, 1);
      const rows = await h.sql<
        { status: string }[]
      >`select status from stock_change where event_id = 'replay-once-1'`;
      assert.deepEqual(rows.map((r) => r.status), ["applied"]);
      assert.equal(await h.queueDepth(dlq), 0);
    } finally {
      await a.close();
      await h.close();
      await sandbox.close();
    }
  },
);

// ---------------------------------------------------------------------------
// HTTP body schema and CLIs (pure)

Deno.test("replayRequestSchema: explicit filters only", () => {
  assert.deepEqual(replayRequestSchema.parse({ all: true }), { all: true });
  assert.deepEqual(replayRequestSchema.parse({ all: true, reason: "x" }), { all: true, reason: "x" });
  assert.deepEqual(replayRequestSchema.parse({ event_ids: ["a", "b"] }), { eventIds: ["a", "b"] });
  assert.deepEqual(replayRequestSchema.parse({ reason: "exhausted", event_ids: ["a"] }), {
    eventIds: ["a"],
    reason: "exhausted",
  });
  for (
    const bad of [{}, { all: false }, { event_ids: [] }, { reason: "" }, { foo: 1 }]
  ) {
    assert.equal(replayRequestSchema.safeParse(bad).success, false, JSON.stringify(bad));
  }
});

Deno.test("dlq CLI: arguments", () => {
  assert.deepEqual(parseDlqArgs(["--", "list"]), { command: "list", limit: undefined, json: false });
  assert.deepEqual(parseDlqArgs(["list", "--limit", "5", "--json"]), {
    command: "list",
    limit: 5,
    json: true,
  });
  assert.deepEqual(parseDlqArgs(["list", "--limit=7"]), { command: "list", limit: 7, json: false });
  assert.deepEqual(parseDlqArgs(["replay", "--all"]), {
    command: "replay",
    body: { all: true },
    json: false,
  });
  assert.deepEqual(
    parseDlqArgs(["replay", "--event-id", "a", "b", "--event-id", "c", "--reason", "exhausted"]),
    {
      command: "replay",
      body: { event_ids: ["a", "b", "c"], reason: "exhausted" },
      json: false,
    },
  );
  const usage = (args: string[], flag: RegExp) =>
    assert.throws(() => parseDlqArgs(args), (e: Error) => {
      assert.ok(e instanceof UsageError);
      assert.equal(e.exitCode, 2);
      assert.match(e.message, flag);
      return true;
    });
  usage([], /list or replay/);
  usage(["purge"], /"purge"/);
  usage(["list", "--limit", "x"], /--limit/);
  usage(["list", "--limit", "1001"], /--limit/);
  usage(["list", "--limit"], /--limit needs a value/);
  usage(["list", "--bogus"], /"--bogus"/);
  usage(["replay"], /--all, --event-id/);
  usage(["replay", "--all", "--reason", "x"], /--all cannot be combined/);
  usage(["replay", "--event-id"], /--event-id needs a value/);
});

const JOB = "0b8f6c2e-4a51-4d3e-9a7b-2f1e3c4d5a6b";

Deno.test("resync CLI: arguments", () => {
  assert.deepEqual(parseResyncArgs(["--", "--sku", "A", "--sku", "B", "--channel", "shopify"]), {
    command: "run",
    body: { skus: ["A", "B"], channels: ["shopify"] },
    json: false,
    files: [],
  });
  assert.deepEqual(parseResyncArgs(["--store", "t-1", "--dry-run", "--json"]), {
    command: "run",
    body: { tienda_id: "t-1", dry_run: true },
    json: true,
    files: [],
  });
  assert.deepEqual(parseResyncArgs(["--all", "--channel=mercadolibre", "--channel", "shopify"]), {
    command: "run",
    body: { all: true, channels: ["mercadolibre", "shopify"] },
    json: false,
    files: [],
  });
  assert.deepEqual(parseResyncArgs(["--all", "--csv", "out.csv", "--ndjson=out.ndjson"]), {
    command: "run",
    body: { all: true },
    json: false,
    files: [{ format: "csv", path: "out.csv" }, { format: "ndjson", path: "out.ndjson" }],
  });
  assert.deepEqual(parseResyncArgs(["--follow", JOB, "--csv", "r.csv"]), {
    command: "follow",
    id: JOB,
    json: false,
    files: [{ format: "csv", path: "r.csv" }],
  });
  assert.deepEqual(parseResyncArgs([`--cancel=${JOB}`, "--json"]), {
    command: "cancel",
    id: JOB,
    json: true,
  });
  const usage = (args: string[], flag: RegExp) =>
    assert.throws(() => parseResyncArgs(args), (e: Error) => e instanceof UsageError && flag.test(e.message));
  usage([], /--sku SKU, --store TIENDA_ID or --all/);
  usage(["--sku", "A", "--all"], /--sku and --all cannot be combined/);
  usage(["--all", "--channel", "amazon"], /--channel must be one of shopify, mercadolibre/);
  usage(["--all", "--dryrun"], /"--dryrun"/);
  usage(["--sku"], /--sku needs a value/);
  usage(["--all", "--dry-run=yes"], /--dry-run takes no value/);
  usage(["--all", "--csv"], /--csv needs a value/);
  usage(["--all", "--ndjson", "--json"], /--ndjson needs a value/);
  usage(["--all", "--csv", "a.csv", "--csv", "b.csv"], /--csv may be given once/);
  usage(["--all", "--csv", "r", "--ndjson", "r"], /--ndjson r: --csv and --ndjson need different files/);
  usage(["--follow"], /--follow needs a value/);
  usage(["--follow", "r-1"], /--follow wants a resync id .*"r-1"/);
  usage(["--cancel", "42"], /--cancel wants a resync id .*"42"/);
  usage(["--follow", JOB, "--follow", JOB], /--follow may be given once/);
  usage(["--follow", JOB, "--cancel", JOB], /--follow and --cancel cannot be combined/);
  usage(["--follow", JOB, "--all"], /--follow and --all cannot be combined/);
  usage(["--cancel", JOB, "--dry-run"], /--cancel and --dry-run cannot be combined/);
  usage(["--cancel", JOB, "--channel", "shopify"], /--cancel and --channel cannot be combined/);
  usage(["--cancel", JOB, "--csv", "r.csv"], /--cancel and --csv cannot be combined: --follow ID --csv FILE/);
});

Deno.test("table output: aligned columns, numbers right-aligned, empty cells for null", () => {
  assert.equal(
    formatTable(["SKU", "QTY", "NOTE"], [["REMERA-001", 5, null], ["B", 120, "a  b"]]),
    "SKU         QTY  NOTE\n" +
      "REMERA-001    5\n" +
      "B           120  a b",
  );
  const list = formatDlqList({
    total: 7,
    messages: [{
      position: 0,
      event_id: "ev-1",
      reason: "exhausted",
      channel: "shopify",
      sku: "REMERA-001",
      attempts: 20,
      last_failure: "2024-01-15T10:30:45.000Z",
      error: "gave up after 20 attempts: " + "x".repeat(100),
    }],
  });
  assert.equal(
    list,
    "POSITION  EVENT_ID  REASON     CHANNEL  SKU         ATTEMPTS  LAST_FAILURE              ERROR\n" +
      `       0  ev-1      exhausted  shopify  REMERA-001        20  2024-01-15T10:30:45.000Z  gave up after 20 attempts: ${
        "x".repeat(32)
      }…\n\n1 of 7 message(s) in the DLQ shown`,
  );
  assert.equal(formatDlqList({ total: 0, messages: [] }), "the DLQ is empty");
  const withRemedy = formatDlqList({
    total: 2,
    messages: ["a", "b"].map((id, position) => ({
      position,
      event_id: id,
      reason: "sku_not_found",
      channel: "shopify",
      sku: "X-1",
      attempts: 1,
      last_failure: null,
      error: "no Shopify variant has SKU",
      remedy: "give exactly one listing the SKU, then replay",
    })),
  });
  assert.ok(
    withRemedy.endsWith(
      "\n\nbefore replaying:\n  sku_not_found: give exactly one listing the SKU, then replay\n\n2 of 2 message(s) in the DLQ shown",
    ),
    `each reason's fix once, under the table:\n${withRemedy}`,
  );
  assert.equal(
    formatReplay({ moved: 2, kept: 1, scanned: 3, moved_event_ids: ["a", "b"] }),
    "moved 2 message(s) back to the work queue (scanned 3, kept 1)\nevents: a, b",
  );
});

/** A job as GET /resync/{id} answers it (src/ops/resync_jobs.ts); `progress` follows `done` and `total`. */
const status = (over: Partial<ResyncStatus> = {}): ResyncStatus => {
  const job = { ...doneJob(), ...over };
  return { ...job, progress: over.progress ?? { ...job.progress, done: job.done, total: job.total } };
};

const doneJob = (): ResyncStatus => ({
  id: "r-1",
  state: "done",
  dry_run: false,
  total: 3,
  done: 3,
  drift_found: 1,
  written: 1,
  errors: 0,
  resumed: 0,
  progress: { done: 3, total: 3, per_second: null, eta_seconds: null },
  report_lines: 2,
  unresolved_lines: 1,
  report: [
    {
      sku: "A",
      tienda_id: "t1",
      channel: "shopify",
      source_qty: -7,
      in_flight: 0,
      marketplace_qty: -7,
      target: 0,
      difference: 7,
      action: "set",
      outcome: "written",
    },
    {
      sku: "B",
      tienda_id: "t1",
      channel: "mercadolibre",
      source_qty: 1,
      in_flight: 0,
      marketplace_qty: 1,
      target: 1,
      difference: 0,
      action: "none",
    },
  ],
  unresolved: [{
    sku: "C",
    tienda_id: "t2",
    channel: "shopify",
    reason: "sku_not_found",
    error: "no variant has SKU C",
  }],
});

const running = (done: number, over: Partial<ResyncStatus> = {}): ResyncStatus => ({
  ...status({ state: "running", done, drift_found: 0, written: 0, report: [], unresolved: [] }),
  report_lines: 0,
  unresolved_lines: 0,
  progress: { done, total: 3, per_second: 2, eta_seconds: (3 - done) / 2 },
  ...over,
});

Deno.test("resync CLI: thousands, durations, rate and ETA in the progress line", () => {
  assert.deepEqual([0, 999, 1234, 50_000, 1_234_567, 2.5].map(groupDigits), [
    "0",
    "999",
    "1 234",
    "50 000",
    "1 234 567",
    "2.5",
  ]);
  assert.deepEqual([0, 0.4, 45, 60, 574, 3_600, 3_725, 90_000].map(formatDuration), [
    "0 s",
    "0 s",
    "45 s",
    "1 min",
    "9 min 34 s",
    "1 h",
    "1 h 2 min",
    "1 d 1 h",
  ]);
  const big = (over: Partial<ResyncStatus>) =>
    progressLine({
      id: "r-2",
      state: "running",
      done: 1_234,
      total: 50_000,
      drift_found: 7,
      errors: 0,
      progress: { done: 1_234, total: 50_000, per_second: 85.3, eta_seconds: 574 },
      ...over,
    });
  assert.equal(big({}), "resync r-2: 1 234/50 000 checked · 85/s · ETA 9 min 34 s · 7 drift, 0 errors");
  assert.equal(
    big({ progress: { done: 1_234, total: 50_000, per_second: 2.46, eta_seconds: 19_820 } }),
    "resync r-2: 1 234/50 000 checked · 2.5/s · ETA 5 h 30 min · 7 drift, 0 errors",
  );
  assert.equal(
    big({ resumed: 1, progress: { done: 1_234, total: 50_000, per_second: null, eta_seconds: null } }),
    "resync r-2: 1 234/50 000 checked · 7 drift, 0 errors · resumed 1× by another instance",
    "no rate yet (just resumed): no rate and no ETA",
  );
  assert.equal(
    progressLine(status()),
    "resync r-1: 3/3 checked · 1 drift, 0 errors",
    "an ended job has no ETA",
  );
  assert.equal(
    progressLine({
      id: "r-3",
      state: "running",
      progress: { done: 0, total: 0, per_second: 0, eta_seconds: null },
    }),
    "resync r-3: planning the listings to check",
    "no total before the job read the catalogs",
  );
  assert.equal(progressLine({ id: "r-3", state: "done" }), "resync r-3: 0/? checked · 0 drift, 0 errors");
});

Deno.test("resync CLI: the summary first, then the lines with their target, then how it ended", () => {
  assert.equal(
    formatResyncReport(status()),
    [
      "ACTION        MERCADOLIBRE  SHOPIFY  TOTAL",
      "none                     1        0      1",
      "set: written             0        1      1",
      "total                    1        1      2",
      "",
      "UNRESOLVED     SHOPIFY  TOTAL",
      "sku_not_found        1      1",
      "total                1      1",
      "",
      "SKU  STORE  CHANNEL       POS  TARGET  MARKETPLACE  DIFF  ACTION  OUTCOME",
      "A    t1     shopify        -7       0           -7     7  set     written",
      "B    t1     mercadolibre    1       1            1     0  none",
      "",
      "unresolved (1):",
      "SKU  STORE  CHANNEL  REASON         DETAIL",
      "C    t2     shopify  sku_not_found  no variant has SKU C",
      "",
      "done: drift_found 1, written 1, errors 0",
    ].join("\n"),
  );
  // Every action/outcome in the order an operator reads them; changes in flight show as a column.
  const tally = new ReportTally();
  const line = { sku: "X", tienda_id: "t", source_qty: 1, marketplace_qty: 1, difference: 0 };
  for (
    const [channel, action, outcome] of [
      ["shopify", "skip", "skipped"],
      ["shopify", "set", "error"],
      ["shopify", "would_set", undefined],
      ["mercadolibre", "none", undefined],
      ["shopify", "set", "written"],
      ["shopify", "set", "written"],
    ] as const
  ) tally.add("drift", { ...line, channel, action, outcome });
  for (const reason of ["stock_unknown", "no_listing", "stock_unknown"]) {
    tally.add("unresolved", { sku: "Y", channel: "mercadolibre", reason });
  }
  assert.equal(tally.count("set: written"), 2);
  assert.equal(tally.count("stock_unknown", "mercadolibre"), 2);
  assert.equal(
    formatSummary(tally),
    [
      "ACTION        MERCADOLIBRE  SHOPIFY  TOTAL",
      "none                     1        0      1",
      "would_set                0        1      1",
      "set: written             0        2      2",
      "set: error               0        1      1",
      "skip                     0        1      1",
      "total                    1        5      6",
      "",
      "UNRESOLVED     MERCADOLIBRE  TOTAL",
      "no_listing                1      1",
      "stock_unknown             2      2",
      "total                     3      3",
    ].join("\n"),
  );
  const inFlight = formatResyncReport(status({
    report: [{
      ...status().report![0],
      source_qty: 3,
      in_flight: -1,
      target: 2,
      marketplace_qty: 5,
      difference: -3,
    }],
  }));
  assert.ok(
    inFlight.includes(
      "SKU  STORE  CHANNEL  POS  IN_FLIGHT  TARGET  MARKETPLACE  DIFF  ACTION  OUTCOME\n" +
        "A    t1     shopify    3         -1       2            5    -3  set     written\n",
    ),
    inFlight,
  );
  assert.match(
    formatResyncReport(status({ report_lines: 1_500, unresolved_lines: 3 }), { files: ["r.csv"] }),
    /first 2 of 1 500 lines shown; all of them are in r\.csv[^]*first 1 of 3 lines shown; all of them are in r\.csv/,
  );
  assert.match(
    formatResyncReport(status({ report_lines: 1_500 })),
    /first 2 of 1 500 lines shown; --csv FILE writes them all/,
  );
});

Deno.test("resync CLI: exit codes and how a job that did not finish reads", () => {
  assert.equal(exitCodeFor(status()), 0);
  assert.equal(exitCodeFor(status({ errors: 1 })), 1);
  assert.equal(exitCodeFor(status({ state: "failed", error: "redis down" })), 1);
  assert.equal(exitCodeFor(status({ state: "cancelled", error: "cancelled by an operator" })), 1);
  assert.match(formatResyncReport(status({ state: "failed", error: "redis down" })), /FAILED: redis down$/);
  assert.match(
    formatResyncReport(
      status({
        state: "cancelled",
        error: "cancelled by an operator",
        done: 1_234,
        total: 50_000,
        resumed: 2,
      }),
    ),
    /\ncancelled: drift_found 1, written 1, errors 0; resumed 2× by another instance; CANCELLED at 1 234\/50 000 listings checked \(cancelled by an operator\): what it wrote is kept, the rest was not checked$/,
  );
  assert.match(
    formatResyncReport(status({ dry_run: true })),
    /\ndone \(dry run: nothing written\): drift_found/,
  );
});

/** A fake service answering in order, recording requests; a string answer is sent as is (a report). */
function fakeService(answers: [number, unknown][]) {
  const requests: { method: string; url: string; auth: string | null; body: unknown }[] = [];
  const fetchFn = ((input: string | URL | Request, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    requests.push({
      method: init?.method ?? "GET",
      url: String(input),
      auth: headers.get("authorization"),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
    });
    const [code, body] = answers.shift() ?? [500, { error: "unexpected" }];
    if (body instanceof Error) return Promise.reject(body);
    return Promise.resolve(
      typeof body === "string"
        ? new Response(body, { status: code, headers: { "content-type": "application/x-ndjson" } })
        : new Response(JSON.stringify(body), {
          status: code,
          headers: { "content-type": "application/json" },
        }),
    );
  }) as typeof fetch;
  return { requests, fetchFn };
}

/** An io that records what the CLI says and how long it waits. */
function recordingIo() {
  const out: string[] = [];
  const err: string[] = [];
  const sleeps: number[] = [];
  return {
    out,
    err,
    sleeps,
    io: {
      sleep: (ms: number) => (sleeps.push(ms), Promise.resolve()),
      out: (t: string) => out.push(t),
      err: (t: string) => err.push(t),
    },
  };
}

Deno.test("resync CLI: starts, polls every 500 ms until done, prints the summary and the report", async () => {
  const { requests, fetchFn } = fakeService([
    [202, { id: "r-1", status_url: "/resync/r-1" }],
    [200, running(1)],
    [200, running(1)],
    [200, status()],
  ]);
  const { out, err, sleeps, io } = recordingIo();
  const client = new OpsClient({ baseUrl: "http://svc:9/", token: "s3cret", fetch: fetchFn });
  const code = await resyncMain(["--sku", "A", "--dry-run"], client, io);
  assert.equal(code, 0);
  assert.deepEqual(requests.map((r) => `${r.method} ${r.url}`), [
    "POST http://svc:9/resync",
    "GET http://svc:9/resync/r-1",
    "GET http://svc:9/resync/r-1",
    "GET http://svc:9/resync/r-1",
  ]);
  assert.deepEqual(requests[0].body, { skus: ["A"], dry_run: true });
  assert.ok(requests.every((r) => r.auth === "Bearer s3cret"));
  assert.deepEqual(sleeps, [500, 500]);
  assert.deepEqual(err, [
    "resync r-1 started: Ctrl-C stops following, not the job (--follow r-1 re-attaches, --cancel r-1 stops it)",
    "resync r-1: 1/3 checked · 2/s · ETA 1 s · 0 drift, 0 errors",
    "resync r-1: 3/3 checked · 1 drift, 0 errors",
  ]);
  assert.equal(out.length, 1);
  assert.match(out[0], /^ACTION {8}MERCADOLIBRE/);
  assert.match(out[0], /\n\nSKU {2}STORE/);
  assert.match(out[0], /done: drift_found 1, written 1, errors 0$/);
});

Deno.test("resync CLI: a long job is polled every 2 s after its first 10 s", async () => {
  const answers: [number, unknown][] = [[202, { id: "r-1" }]];
  for (let i = 0; i < 25; i++) answers.push([200, running(1)]);
  answers.push([200, status()]);
  const { fetchFn } = fakeService(answers);
  const { sleeps, io } = recordingIo();
  assert.equal(
    await resyncMain(["--all"], new OpsClient({ baseUrl: "http://svc:9", fetch: fetchFn }), io),
    0,
  );
  assert.deepEqual(sleeps, [...Array(20).fill(500), ...Array(5).fill(2_000)]);
});

Deno.test("resync CLI: a running resync of the same scope is a 409, printed with how to follow it, exit 1", async () => {
  const { fetchFn } = fakeService([
    [409, { error: "resync_running", id: JOB, message: "a resync of these SKUs is running" }],
  ]);
  const { err, io } = recordingIo();
  const code = await resyncMain(["--all"], new OpsClient({ baseUrl: "http://svc:9", fetch: fetchFn }), io);
  assert.equal(code, 1);
  assert.deepEqual(err, [
    `error: resync_running: a resync of these SKUs is running (running resync: ${JOB}; deno task resync -- --follow ${JOB})`,
  ]);
});

Deno.test("resync CLI: --follow re-attaches through a restart; a cancelled job exits 1 saying so", async () => {
  const { requests, fetchFn } = fakeService([
    [200, running(1, { id: JOB })],
    [0, new TypeError("connection refused")],
    [503, { error: "starting", message: "resync is not available yet: the service is still starting" }],
    [200, running(2, { id: JOB, resumed: 1 })],
    [200, status({ id: JOB, state: "cancelled", error: "cancelled by an operator", done: 2, resumed: 1 })],
  ]);
  const { out, err, io } = recordingIo();
  const code = await resyncMain(
    ["--follow", JOB],
    new OpsClient({ baseUrl: "http://svc:9", fetch: fetchFn }),
    io,
  );
  assert.equal(code, 1);
  assert.deepEqual(
    requests.map((r) => `${r.method} ${r.url}`),
    Array(5).fill(`GET http://svc:9/resync/${JOB}`),
  );
  assert.equal(
    err[0],
    `following resync ${JOB}: Ctrl-C stops following, not the job (--follow ${JOB} re-attaches, --cancel ${JOB} stops it)`,
  );
  assert.match(
    err[2],
    /^cannot reach marketplace-sync at http:\/\/svc:9: .*; asking again for up to 60 s \(the job goes on\)$/,
  );
  assert.equal(err[3], "the service answers again");
  assert.equal(
    err[4],
    `resync ${JOB}: 2/3 checked · 2/s · ETA 1 s · 0 drift, 0 errors · resumed 1× by another instance`,
  );
  assert.equal(
    err.at(-1),
    `error: resync ${JOB} was cancelled (cancelled by an operator): it did not finish`,
  );
  assert.match(out[0], /CANCELLED at 2\/3 listings checked/);
});

Deno.test("resync CLI: following gives up when the service stays away", async () => {
  const answers: [number, unknown][] = [];
  for (let i = 0; i < 200; i++) answers.push([503, { error: "starting", message: "still starting" }]);
  const { fetchFn } = fakeService(answers);
  const { io } = recordingIo();
  await assert.rejects(
    resyncMain(["--follow", JOB], new OpsClient({ baseUrl: "http://svc:9", fetch: fetchFn }), io),
    /HTTP 503: starting: still starting/,
  );
  assert.ok(answers.length > 100, "about 60 s of polls, not forever");
});

Deno.test("resync CLI: --cancel calls DELETE: 0 when cancelled, 1 when it had ended", async () => {
  const { requests, fetchFn } = fakeService([
    [200, { id: JOB, state: "cancelled", status_url: `/resync/${JOB}` }],
    [409, { error: "resync_finished", message: `resync ${JOB} has already ended: nothing to cancel` }],
    [404, { error: "not_found", message: `no resync ${JOB}` }],
  ]);
  const client = new OpsClient({ baseUrl: "http://svc:9", fetch: fetchFn });
  const first = recordingIo();
  assert.equal(await resyncMain(["--cancel", JOB], client, first.io), 0);
  assert.match(
    first.err[0],
    new RegExp(`^resync ${JOB} cancelled: it stops after the listing it is checking`),
  );
  const again = recordingIo();
  assert.equal(await resyncMain(["--cancel", JOB, "--json"], client, again.io), 1);
  assert.deepEqual(again.err, [`error: resync ${JOB} has already ended: nothing to cancel`]);
  assert.equal(JSON.parse(again.out[0]).error, "resync_finished");
  await assert.rejects(
    resyncMain(["--cancel", JOB], client, recordingIo().io),
    /HTTP 404: not_found: no resync/,
  );
  assert.deepEqual(requests.map((r) => r.method), ["DELETE", "DELETE", "DELETE"]);
});

Deno.test("resync CLI: with more lines than shown, the summary counts the whole report as it streams", async () => {
  const lines = [
    { kind: "drift", ...status().report![0] },
    { kind: "drift", ...status().report![0], sku: "A2" },
    { kind: "drift", ...status().report![1] },
    { kind: "unresolved", ...status().unresolved![0] },
    { kind: "unresolved", ...status().unresolved![0], sku: "C2", reason: "no_listing" },
  ];
  const ndjson = lines.map((l) => JSON.stringify(l) + "\n").join("");
  const done = status({ id: JOB, report_lines: 3, unresolved_lines: 2 });
  // Only counted: one download, nothing written.
  let svc = fakeService([[200, done], [200, ndjson]]);
  let rec = recordingIo();
  assert.equal(
    await resyncMain(
      ["--follow", JOB],
      new OpsClient({ baseUrl: "http://svc:9", fetch: svc.fetchFn }),
      rec.io,
    ),
    0,
  );
  assert.deepEqual(svc.requests.map((r) => r.url), [
    `http://svc:9/resync/${JOB}`,
    `http://svc:9/resync/${JOB}/report?format=ndjson`,
  ]);
  const summary = [
    "ACTION        MERCADOLIBRE  SHOPIFY  TOTAL",
    "none                     1        0      1",
    "set: written             0        2      2",
    "total                    1        2      3",
    "",
    "UNRESOLVED     SHOPIFY  TOTAL",
    "no_listing           1      1",
    "sku_not_found        1      1",
    "total                2      2",
    "",
  ].join("\n");
  assert.ok(rec.out[0].startsWith(summary), rec.out[0]);
  assert.match(rec.out[0], /first 2 of 3 lines shown; --csv FILE writes them all/);

  // Written to a file and counted on the way: still one download.
  const dir = await Deno.makeTempDir();
  try {
    svc = fakeService([[200, done], [200, ndjson]]);
    rec = recordingIo();
    const path = `${dir}/report.ndjson`;
    assert.equal(
      await resyncMain(
        ["--follow", JOB, "--ndjson", path],
        new OpsClient({ baseUrl: "http://svc:9", fetch: svc.fetchFn }),
        rec.io,
      ),
      0,
    );
    assert.equal(svc.requests.length, 2);
    assert.equal(await Deno.readTextFile(path), ndjson);
    assert.equal(rec.err.at(-1), `report: 5 lines written to ${path} (ndjson)`);
    assert.ok(rec.out[0].startsWith(summary), "counted from the file's download");
    assert.match(rec.out[0], /all of them are in .*report\.ndjson/);
    // A download that breaks off leaves no file that could pass for the whole report.
    svc = fakeService([[200, done], [200, '{"kind":"drift"}\n{"kind":']]);
    await assert.rejects(
      resyncMain(
        ["--follow", JOB, "--ndjson", `${dir}/broken.ndjson`],
        new OpsClient({ baseUrl: "http://svc:9", fetch: svc.fetchFn }),
        recordingIo().io,
      ),
      /the report of resync .* broke off/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["report.ndjson"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ops client: 401 shows the service's message; an unreachable service names the URL", async () => {
  const { fetchFn } = fakeService([[401, {
    error: "unauthorized",
    message: "missing or wrong Bearer token",
  }]]);
  await assert.rejects(
    new OpsClient({ baseUrl: "http://svc:9", fetch: fetchFn }).request("GET", "/dlq"),
    (e: Error) => {
      assert.ok(e instanceof CliError && e.exitCode === 1);
      assert.match(e.message, /HTTP 401\): unauthorized: missing or wrong Bearer token \(set ADMIN_TOKEN/);
      return true;
    },
  );
  const { fetchFn: f500 } = fakeService([[500, { error: "internal_error", message: "see the log" }]]);
  await assert.rejects(
    new OpsClient({ baseUrl: "http://svc:9", fetch: f500 }).request("POST", "/dlq/replay", {
      body: { all: true },
    }),
    /POST http:\/\/svc:9\/dlq\/replay failed: HTTP 500: internal_error: see the log/,
  );
  // A port nothing listens on.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(
    new OpsClient({ baseUrl: `http://127.0.0.1:${port}` }).request("GET", "/dlq"),
    new RegExp(
      `^CliError: cannot reach marketplace-sync at http://127\\.0\\.0\\.1:${port}: .+ \\(set MARKETPLACE_SYNC_URL\\)$`,
    ),
  );
});
