/**
 * The sale pipeline's parts built from the configuration: custody (sales and their
 * changes into the ledger), the consumer that feeds it, and the ledger's dispatch store.
 */
import type { Connection } from "rabbitmq-client";
import type postgres from "postgres";
import type { ConfirmingPublisher } from "../broker/publisher.ts";
import { type SaleConsumer, startSaleConsumer } from "../broker/sale_consumer.ts";
import type { Topology } from "../broker/topology.ts";
import type { Config } from "../config.ts";
import { Custody } from "../ledger/custody.ts";
import { DispatchStore } from "../ledger/dispatch_store.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { ChannelName } from "../model/channel_name.ts";

/** The ledger's dispatch side, with the retry and lease policy from DISPATCH_*. */
export function dispatchStore(sql: postgres.Sql, config: Config): DispatchStore {
  return new DispatchStore(sql, {
    maxAttempts: config.DISPATCH_MAX_ATTEMPTS,
    leaseMs: config.DISPATCH_LEASE,
    backoffBaseMs: config.DISPATCH_BACKOFF_BASE,
    backoffMaxMs: config.DISPATCH_BACKOFF_MAX,
  });
}

/**
 * Custody with CUSTODY_* batching.
 * @param onlyStores per channel, the only stores whose sales reach it (others get no change).
 * @param stored called after every stored batch (new pending changes: wake the dispatchers).
 */
export function custody(
  sql: postgres.Sql,
  config: Config,
  metrics: ServiceMetrics,
  onlyStores: Partial<Record<ChannelName, string[]>>,
  stored: () => void,
): Custody {
  return new Custody(sql, config.CHANNELS, {
    batchSize: config.CUSTODY_BATCH_SIZE,
    maxWaitMs: config.CUSTODY_BATCH_WAIT,
    maxWriters: config.CUSTODY_WRITERS,
    onlyStores: Object.keys(onlyStores).length ? onlyStores : undefined,
  }, {
    batch: (size, seconds) => {
      metrics.custodyBatchSize.observe(size);
      metrics.custodyBatchSeconds.observe(seconds);
      stored();
    },
    recorded: (origin, known) =>
      metrics.ordersRecordedByPos.inc({ origin, order: known ? "known" : "unknown" }),
  });
}

/** What the sale consumer is attached to. */
export interface ConsumerParts {
  connection: Connection;
  publisher: ConfirmingPublisher;
  custody: Custody;
  topology: Topology;
  metrics: ServiceMetrics;
}

/** Consumes `sales.created` into custody with the event limits and concurrency from the configuration. */
export function consumeSales(config: Config, parts: ConsumerParts): SaleConsumer {
  return startSaleConsumer({
    ...parts,
    limits: {
      maxBytes: config.MAX_EVENT_BYTES,
      maxItems: config.MAX_ITEMS_PER_EVENT,
      maxQuantity: config.MAX_ITEM_QUANTITY,
    },
    concurrency: config.CONSUMER_CONCURRENCY,
    prefetch: config.prefetch,
  });
}
