/**
 * Prometheus metrics (prom-client), one registry per service instance so tests
 * can run several instances in one process. Names follow Prometheus
 * conventions (`_total` counters, `_seconds` / `_bytes` units).
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** Every metric the service exports. */
export interface ServiceMetrics {
  registry: Registry;
  eventsConsumed: Counter<"queue">;
  eventsAcked: Counter<"outcome">;
  ackFrames: Counter;
  eventsRetried: Counter<"reason">;
  eventsDeadLettered: Counter<"reason">;
  eventIdentity: Counter<"source">;
  productConflicts: Counter;
  custodyBatchSize: Histogram;
  custodyBatchSeconds: Histogram;
  ledgerChanges: Gauge<"channel" | "status">;
  brokerReconnects: Counter<"connection">;
  componentUp: Gauge<"component">;
  rssBytes: Gauge;
  heapUsedBytes: Gauge;
  dispatchBatchSize: Histogram<"channel">;
  dispatchPhaseSeconds: Histogram<"channel" | "phase">;
  changesProcessed: Counter<"channel" | "outcome">;
  eventAppliedSeconds: Histogram<"channel">;
  marketplaceCalls: Counter<"channel" | "operation" | "outcome">;
  throttleWaitSeconds: Counter<"channel">;
  budgetLevel: Gauge<"channel">;
  tokenRefreshes: Counter<"channel" | "outcome">;
  resyncDrift: Counter<"channel">;
  queueMessages: Gauge<"queue">;
  queueConsumers: Gauge<"queue">;
  tokenExpirySeconds: Gauge<"channel">;
  resyncRuns: Counter<"mode" | "state">;
  /** The service's own VACUUM / ANALYZE of ledger tables autovacuum does not look after (src/ledger/upkeep.ts). */
  ledgerUpkeep: Counter<"table" | "action">;
  deadLetterCopyFailures: Counter<"channel">;
  deadLetterCopiesDue: Gauge<"channel">;
  /** Marketplace order events by origin, kind (created, restock), how they came and what applying did. */
  ordersApplied: Counter<"origin" | "kind" | "via" | "outcome">;
  /** From the marketplace's order time to its effect in the ledger (applied events only). */
  orderLagSeconds: Histogram<"origin" | "via">;
  /** Inbound order deliveries (webhooks, notifications): stored, duplicate, done, quarantined. */
  orderDeliveries: Counter<"channel" | "outcome">;
  /** POS echoes of marketplace orders (sales.created with origen): known or unknown order. */
  ordersRecordedByPos: Counter<"origin" | "order">;
  /** Catch-up polls of a channel's orders, by outcome (ok, error). */
  orderCatchUps: Counter<"channel" | "outcome">;
  /** Messages for the POS confirmed by RabbitMQ. */
  posMessagesPublished: Counter<"routing_key">;
  /** Publishes to the POS that were not confirmed (left in the outbox, retried). */
  posPublishFailures: Counter<"routing_key">;
  /** Messages for the POS in the outbox, not published yet (read on every scrape). */
  posOutboxUnpublished: Gauge<"routing_key">;
}

/**
 * Creates the registry and metrics.
 * @param prefix metric name prefix, e.g. `marketplace_sync_`.
 * @param collectLedger called on each scrape to refresh the backlog gauge.
 * @param collectDueCopies called on each scrape to refresh the gauge of DLQ copies still due.
 */
export function createMetrics(
  prefix: string,
  collectLedger: () => Promise<{ channel: string; status: string; count: number }[]>,
  collectDueCopies: () => Promise<{ channel: string; count: number }[]> = () => Promise.resolve([]),
  collectOutbox: () => Promise<{ routingKey: string; count: number }[]> = () => Promise.resolve([]),
): ServiceMetrics {
  const registry = new Registry();
  const registers = [registry];
  const ledgerChanges = new Gauge({
    name: `${prefix}ledger_changes`,
    help: "Stock changes not applied yet, by channel and status (pending, sending, failed).",
    labelNames: ["channel", "status"] as const,
    registers,
    async collect() {
      try {
        const rows = await collectLedger();
        this.reset();
        for (const row of rows) this.set({ channel: row.channel, status: row.status }, row.count);
      } catch {
        // Postgres down: keep the last values; readiness already reports it.
      }
    },
  });
  return {
    registry,
    ordersApplied: new Counter({
      name: `${prefix}orders_total`,
      help:
        "Marketplace order events by origin, kind (created, restock), via (webhook, notification, catch_up) and outcome (applied, duplicate, nothing_to_restock, deferred).",
      labelNames: ["origin", "kind", "via", "outcome"] as const,
      registers,
    }),
    orderLagSeconds: new Histogram({
      name: `${prefix}order_lag_seconds`,
      help: "From the time a marketplace gives an order event to its effect recorded in the ledger.",
      labelNames: ["origin", "via"] as const,
      buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    }),
    orderDeliveries: new Counter({
      name: `${prefix}order_deliveries_total`,
      help:
        "Order webhooks / notifications by channel and outcome: stored, duplicate (a re-delivery), done, quarantined.",
      labelNames: ["channel", "outcome"] as const,
      registers,
    }),
    ordersRecordedByPos: new Counter({
      name: `${prefix}orders_recorded_by_pos_total`,
      help:
        "POS sales.created carrying origen (the POS recorded a marketplace order), by origin and order (known, unknown).",
      labelNames: ["origin", "order"] as const,
      registers,
    }),
    orderCatchUps: new Counter({
      name: `${prefix}order_catch_ups_total`,
      help: "Catch-up polls of a marketplace's orders since the stored watermark, by outcome (ok, error).",
      labelNames: ["channel", "outcome"] as const,
      registers,
    }),
    posMessagesPublished: new Counter({
      name: `${prefix}pos_messages_published_total`,
      help: "Messages for the POS (marketplace.sales.created / cancelled) confirmed by RabbitMQ.",
      labelNames: ["routing_key"] as const,
      registers,
    }),
    posPublishFailures: new Counter({
      name: `${prefix}pos_publish_failures_total`,
      help:
        "Publishes to the POS not confirmed by RabbitMQ (the message stays in the outbox and is retried).",
      labelNames: ["routing_key"] as const,
      registers,
    }),
    posOutboxUnpublished: new Gauge({
      name: `${prefix}pos_outbox_unpublished`,
      help: "Messages for the POS in the outbox not published yet, by routing key.",
      labelNames: ["routing_key"] as const,
      registers,
      async collect() {
        try {
          const rows = await collectOutbox();
          this.reset();
          for (const key of ["marketplace.sales.created", "marketplace.sales.cancelled"]) {
            this.set({ routing_key: key }, rows.find((r) => r.routingKey === key)?.count ?? 0);
          }
        } catch {
          // Postgres down (or not migrated yet): keep the last values; readiness reports it.
        }
      },
    }),
    dispatchBatchSize: new Histogram({
      name: `${prefix}dispatch_batch_listings`,
      help: "Listings (coalesced store × SKU changes) per marketplace batch.",
      labelNames: ["channel"] as const,
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500],
      registers,
    }),
    dispatchPhaseSeconds: new Histogram({
      name: `${prefix}dispatch_phase_seconds`,
      help: "Time per dispatch step: claim (ledger), send (resolve + marketplace call), record (ledger).",
      labelNames: ["channel", "phase"] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    changesProcessed: new Counter({
      name: `${prefix}changes_processed_total`,
      help: "Stock changes given an outcome by a marketplace batch: applied, retry, failed.",
      labelNames: ["channel", "outcome"] as const,
      registers,
    }),
    eventAppliedSeconds: new Histogram({
      name: `${prefix}event_applied_latency_seconds`,
      help: "From custody of a sale to its change applied on the marketplace.",
      labelNames: ["channel"] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
      registers,
    }),
    marketplaceCalls: new Counter({
      name: `${prefix}marketplace_calls_total`,
      help: "Marketplace API calls by operation and outcome (ok, throttled, http_429, http_5xx, network, …).",
      labelNames: ["channel", "operation", "outcome"] as const,
      registers,
    }),
    throttleWaitSeconds: new Counter({
      name: `${prefix}throttle_wait_seconds_total`,
      help: "Time spent waiting for the marketplace rate budget before sending.",
      labelNames: ["channel"] as const,
      registers,
    }),
    deadLetterCopyFailures: new Counter({
      name: `${prefix}dead_letter_copy_failures_total`,
      help:
        "Failed changes whose sale could not be copied to the DLQ (still failed in the ledger's audit trail).",
      labelNames: ["channel"] as const,
      registers,
    }),
    deadLetterCopiesDue: new Gauge({
      name: `${prefix}dead_letter_copies_due`,
      help: "Failed changes whose DLQ copy is not confirmed yet (published by the next sweep).",
      labelNames: ["channel"] as const,
      registers,
      async collect() {
        try {
          const rows = await collectDueCopies();
          this.reset();
          for (const row of rows) this.set({ channel: row.channel }, row.count);
        } catch {
          // Postgres down: keep the last values; readiness already reports it.
        }
      },
    }),
    queueMessages: new Gauge({
      name: `${prefix}queue_messages`,
      help: "Messages ready in our RabbitMQ queues (work queue and DLQ), read on every scrape.",
      labelNames: ["queue"] as const,
      registers,
    }),
    queueConsumers: new Gauge({
      name: `${prefix}queue_consumers`,
      help: "Consumers attached to our RabbitMQ queues (all replicas), read on every scrape.",
      labelNames: ["queue"] as const,
      registers,
    }),
    tokenExpirySeconds: new Gauge({
      name: `${prefix}oauth_token_expiry_seconds`,
      help: "Seconds until the channel's current OAuth access token expires (negative: expired).",
      labelNames: ["channel"] as const,
      registers,
    }),
    resyncDrift: new Counter({
      name: `${prefix}resync_drift_total`,
      help: "Listings found differing from the POS by resync and scheduled reconcile (dry run or not).",
      labelNames: ["channel"] as const,
      registers,
    }),
    ledgerUpkeep: new Counter({
      name: `${prefix}ledger_upkeep_total`,
      help: "VACUUM and ANALYZE runs the service made on ledger tables autovacuum does not look after.",
      labelNames: ["table", "action"] as const,
      registers,
    }),
    resyncRuns: new Counter({
      name: `${prefix}resync_runs_total`,
      help: "Resync jobs finished, by mode (dry_run, write) and state (done, failed).",
      labelNames: ["mode", "state"] as const,
      registers,
    }),
    tokenRefreshes: new Counter({
      name: `${prefix}oauth_refreshes_total`,
      help: "OAuth token refresh calls by outcome (ok, invalid_grant, network, http_5xx, …).",
      labelNames: ["channel", "outcome"] as const,
      registers,
    }),
    budgetLevel: new Gauge({
      name: `${prefix}budget_available`,
      help: "Last known level of the marketplace rate budget (Shopify: cost points; MercadoLibre: requests).",
      labelNames: ["channel"] as const,
      registers,
    }),
    eventsConsumed: new Counter({
      name: `${prefix}events_consumed_total`,
      help: "Sale events delivered to this instance by RabbitMQ.",
      labelNames: ["queue"] as const,
      registers,
    }),
    ackFrames: new Counter({
      name: `${prefix}broker_ack_frames_total`,
      help:
        "AMQP ack/nack frames sent for deliveries of our queue; one frame settles every delivery of a custody batch, so this grows far slower than events_acked_total.",
      registers,
    }),
    eventsAcked: new Counter({
      name: `${prefix}events_acked_total`,
      help:
        "Deliveries acked, by outcome: stored (new sale), duplicate (already in custody), rearmed (failed changes re-armed), retried (moved to a wait queue), dead_lettered.",
      labelNames: ["outcome"] as const,
      registers,
    }),
    eventsRetried: new Counter({
      name: `${prefix}events_retried_total`,
      help: "Deliveries sent to a retry wait queue, by reason.",
      labelNames: ["reason"] as const,
      registers,
    }),
    eventsDeadLettered: new Counter({
      name: `${prefix}events_dead_lettered_total`,
      help: "Messages sent to the dead-letter queue, by reason.",
      labelNames: ["reason"] as const,
      registers,
    }),
    eventIdentity: new Counter({
      name: `${prefix}event_identity_total`,
      help: "Where accepted events got their identity; body_hash means identical sales may collapse.",
      labelNames: ["source"] as const,
      registers,
    }),
    productConflicts: new Counter({
      name: `${prefix}event_product_conflicts_total`,
      help:
        "SKUs that one accepted sale listed under more than one producto_id; applied by SKU (summed). A POS catalog bug to fix.",
      registers,
    }),
    custodyBatchSize: new Histogram({
      name: `${prefix}custody_batch_size`,
      help: "Events written per custody transaction.",
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
      registers,
    }),
    custodyBatchSeconds: new Histogram({
      name: `${prefix}custody_batch_seconds`,
      help: "Duration of one custody transaction.",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    ledgerChanges,
    brokerReconnects: new Counter({
      name: `${prefix}broker_connections_total`,
      help: "RabbitMQ connections established (the first one and every reconnect).",
      labelNames: ["connection"] as const,
      registers,
    }),
    componentUp: new Gauge({
      name: `${prefix}component_up`,
      help: "1 when a dependency (broker, consumer, postgres, redis) is reachable.",
      labelNames: ["component"] as const,
      registers,
    }),
    rssBytes: new Gauge({
      name: `${prefix}process_resident_memory_bytes`,
      help: "Resident set size of the service process.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    }),
    heapUsedBytes: new Gauge({
      name: `${prefix}process_heap_used_bytes`,
      help: "V8 heap in use.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().heapUsed);
      },
    }),
  };
}
