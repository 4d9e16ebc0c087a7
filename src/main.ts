/**
 * Composition root: connects, serves HTTP (first, for the probes), migrates the ledger,
 * declares the broker topology, plugs the channels, starts dispatch, resync and custody,
 * and closes it all in the reverse order. Tests call {@link startService} with their own
 * configuration.
 */
import { type ConfirmingPublisher, createConfirmingPublisher } from "./broker/publisher.ts";
import { deadLetterRoute } from "./broker/dead_letter_route.ts";
import { PosOutboxPublisher } from "./broker/pos_outbox.ts";
import { keepRawBodies } from "./broker/raw_body.ts";
import { declareTopology, reportDeclaration, type Topology, topologyFromConfig } from "./broker/topology.ts";
import { mercadolibre } from "./channels/mercadolibre/plug.ts";
import type { MeliPlug } from "./channels/mercadolibre/plug.ts";
import { shopify, type ShopifyPlug } from "./channels/shopify/plug.ts";
import { type Config, sandboxMode } from "./config.ts";
import { createApp } from "./http/app.ts";
import { ledgerBacklog } from "./ledger/backlog.ts";
import { DeadLetterOutbox } from "./ledger/dead_letter_outbox.ts";
import type { Custody } from "./ledger/custody.ts";
import type { SaleConsumer } from "./broker/sale_consumer.ts";
import { contractLedger, migrate } from "./ledger/migrate.ts";
import { LedgerUpkeep } from "./ledger/upkeep.ts";
import type { OrderLedger } from "./ledger/orders.ts";
import { PosOutboxStore } from "./ledger/pos_outbox.ts";
import { logger } from "./log.ts";
import { createMetrics, type ServiceMetrics } from "./metrics.ts";
import type { ChannelName } from "./model/channel_name.ts";
import { DeadLetterAdmin } from "./ops/dead_letters.ts";
import { ReconcileScheduler } from "./ops/reconcile.ts";
import { Resyncer, type ResyncHooks } from "./ops/resync.ts";
import type { MeliSandbox } from "./sandbox/mercadolibre/sandbox.ts";
import type { ShopifySandbox } from "./sandbox/shopify/sandbox.ts";
import { PluggedChannels, shownStores } from "./service/channels.ts";
import { consumeSales, custody, dispatchStore } from "./service/pipeline.ts";
import { BrokerLink, closeRedis, openLedger, openLedgerUpkeep, openRedis } from "./service/connections.ts";
import { listen } from "./service/http_server.ts";
import { OrderCatchUp } from "./service/order_catch_up.ts";
import { orderBook } from "./service/orders.ts";
import { Lifecycle } from "./service/lifecycle.ts";
import { operatorSurface, refreshGauges } from "./service/operator.ts";
import { PosSource } from "./service/pos_source.ts";
import { serviceReadiness } from "./service/probes.ts";
import { runProcess } from "./service/process.ts";
import { sandboxCatalogLoader } from "./service/sandbox_catalog.ts";
import type { ChannelPlugin, PlugContext } from "./sync/channel.ts";
import { Dispatcher, type DispatcherHooks } from "./sync/dispatcher.ts";
import { VERSION } from "./version.ts";

const log = logger("main");

/** The marketplaces this service can plug in: one line per channel. */
const CHANNELS: Record<ChannelName, ChannelPlugin> = { shopify, mercadolibre };

/** A started service instance. */
export interface RunningService {
  config: Config;
  topology: Topology;
  metrics: ServiceMetrics;
  /** Base URL of the HTTP server, e.g. http://127.0.0.1:8080 */
  url: string;
  /** Resolves when the ledger is migrated and the consumer has started. */
  started: Promise<void>;
  /** The built-in Shopify sandbox, when Shopify is not configured. */
  shopifySandbox(): ShopifySandbox | undefined;
  /** The built-in MercadoLibre sandbox, when MeLi is not configured. */
  meliSandbox(): MeliSandbox | undefined;
  /** The resync runner, once started. */
  resyncer(): Resyncer | undefined;
  /** Marketplace orders in the ledger (issue #14): what the channels' routes and the catch-up apply. */
  orders: OrderLedger;
  /** The catch-up poll of the channels' orders, once started (dispatching instances only). */
  catchUp(): OrderCatchUp | undefined;
  /** The POS outbox's publishing loop, once the broker is up. */
  posOutbox(): PosOutboxPublisher | undefined;
  /** Graceful stop: consumer, in-flight custody, publisher, connections, HTTP. */
  close(): Promise<void>;
}

/** Extra wiring for tests: seams around the dispatcher and resync. */
export interface ServiceOptions {
  dispatcherHooks?: DispatcherHooks;
  resyncHooks?: ResyncHooks;
}

/**
 * Starts the service with the given configuration. HTTP answers at once (`/readyz` says
 * what is still down); the ledger is migrated with retries and the consumer starts once
 * it is ready.
 */
export function startService(config: Config, options: ServiceOptions = {}): RunningService {
  keepRawBodies();
  const topology = topologyFromConfig(config);
  const lifecycle = new Lifecycle();
  const sql = openLedger(config);
  const dueCopies = new DeadLetterOutbox(sql);
  const outboxStore = new PosOutboxStore(sql);
  const metrics = createMetrics(
    config.METRICS_PREFIX,
    () => ledgerBacklog(sql),
    () => dueCopies.countDue(),
    () => outboxStore.unpublished(),
  );
  const redis = openRedis(config.REDIS_URL, "Redis");
  const sandboxCatalog = sandboxCatalogLoader(config);
  const channels = new PluggedChannels();
  let outbox: PosOutboxPublisher | undefined;
  let catchUp: OrderCatchUp | undefined;
  let upkeep: LedgerUpkeep | undefined;
  // Per channel the stores it shows, known once the plugins can be asked (step 4); orders wait for it.
  let storesShown: (stores: Partial<Record<ChannelName, string[]>>) => void;
  const shown = new Promise<Partial<Record<ChannelName, string[]>>>((resolve) => storesShown = resolve);
  const orders = orderBook({
    config,
    sql,
    metrics,
    onlyStores: () => shown,
    pos: () => pos.reader(),
    sandboxCatalog,
    changed: () => {
      channels.wake();
      outbox?.wake();
    },
  });
  // Every absolute write reads AVAILABLE stock: the POS's number less orders it has not recorded.
  const pos = new PosSource(config, redis, sandboxCatalog, (keys) => orders.unrecorded(keys));
  let ledgerReady = false;
  const broker = new BrokerLink();
  let publisher: ConfirmingPublisher | undefined;
  let consumer: SaleConsumer | undefined;
  let sales: Custody | undefined;
  let resyncer: Resyncer | undefined;
  let reconcile: ReconcileScheduler | undefined;
  let deadLetters: DeadLetterAdmin | undefined;

  // 1. HTTP first, so /readyz can say what is still down.
  const readiness = serviceReadiness({
    broker,
    consuming: () => consumer?.attached === true,
    stopping: () => lifecycle.stopping,
    queue: topology.queue,
    sql,
    ledgerReady: () => ledgerReady,
    redis,
    metrics,
    channels,
  });
  const app = createApp({
    readiness,
    registry: metrics.registry,
    version: VERSION,
    beforeScrape: () =>
      refreshGauges({ readiness, metrics, topology, channels, broker: () => broker.publish }),
    operator: operatorSurface({
      config,
      sql,
      topology,
      sandboxMode: sandboxMode(config),
      channels,
      broker: () => broker.publish,
      resyncer: () => resyncer,
      deadLetters: () => deadLetters,
    }),
    inbound: (name) => channels.get(name as ChannelName)?.routes,
  });
  const server = listen(config, app.fetch);

  const started = (async () => {
    // 2. The ledger: nothing is consumed that could not be stored.
    const migrated = await lifecycle.retrying("ledger migration", async () => {
      const applied = await migrate(sql, config.LEDGER_SCHEMA);
      // What older replicas still used, once they are gone: in the background, never failing.
      void contractLedger(sql, config.LEDGER_SCHEMA);
      ledgerReady = true;
      log.info("ledger ready in schema {schema} ({count} migrations applied now)", {
        schema: config.LEDGER_SCHEMA,
        count: applied.length,
      });
    });
    if (!migrated) return;
    if (config.LEDGER_UPKEEP_INTERVAL > 0) {
      upkeep = new LedgerUpkeep({
        sql: openLedgerUpkeep(config),
        schema: config.LEDGER_SCHEMA,
        intervalMs: config.LEDGER_UPKEEP_INTERVAL,
        metrics,
      });
      upkeep.start();
    }

    // 3. The broker: one connection to consume, one to publish (DLQ copies, confirms).
    const { consume, publish } = broker.open(config.RABBITMQ_URL, metrics);
    const declared = await lifecycle.retrying("RabbitMQ topology declaration", async () => {
      await publish.onConnect(10_000, true);
      reportDeclaration(topology, await declareTopology(publish, topology));
    });
    if (!declared) return;
    publisher = createConfirmingPublisher(publish, topology);
    outbox = new PosOutboxPublisher({
      connection: publish,
      store: outboxStore,
      topology,
      metrics,
      pollIntervalMs: config.POS_OUTBOX_POLL_INTERVAL,
    });
    outbox.start();

    // 4. The channels, each with its dispatch loop.
    const store = dispatchStore(sql, config);
    const context: PlugContext = {
      config,
      sql,
      redis,
      metrics,
      sandboxCatalog,
      posStock: () => pos.reader(),
      batchSending: (id) => store.isSending(id),
      orders,
      selfUrl: () => server.url,
    };
    const onlyStores = await shownStores(CHANNELS, config.CHANNELS, context);
    storesShown!(onlyStores);
    if (config.DISPATCH_ENABLED) {
      await channels.plug(CHANNELS, config.CHANNELS, context, (plug) =>
        new Dispatcher({
          adapter: plug.adapter,
          store,
          failures: deadLetterRoute(publisher!, topology),
          outbox: dueCopies,
          deadLetterSweepMs: config.DLQ_COPY_SWEEP,
          metrics,
          pollIntervalMs: config.DISPATCH_POLL_INTERVAL,
          lanes: config.DISPATCH_LANES,
          hooks: options.dispatcherHooks,
        }));
    } else {
      log.info("DISPATCH_ENABLED=false: this instance only takes sales into custody; others dispatch them");
    }
    channels.start();
    if (config.DISPATCH_ENABLED) {
      // Orders webhooks missed (the service down, a notification never sent): polled from the watermark.
      catchUp = new OrderCatchUp({
        ledger: orders,
        channels: () => channels.orderSources,
        intervalMs: config.ORDERS_POLL_INTERVAL,
        metrics,
      });
      catchUp.start();
    }

    // 5. The operator's tools: dead letters, resync (live sales first), the scheduled reconcile.
    deadLetters = new DeadLetterAdmin({ connection: publish, publisher, topology });
    resyncer = new Resyncer({
      sql,
      stock: pos.reader(),
      catalog: pos.catalog(),
      channels: channels.stocks,
      metrics,
      owner: `${Deno.hostname?.() ?? "host"}:${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`, // pid 1 repeats across restarts
      liveIdle: (channel, signal) => channels.idle(channel, config.RESYNC_LIVE_WAIT, signal),
      hooks: options.resyncHooks,
      rules: config.stockRules,
    });
    if (config.RESYNC_INTERVAL) {
      reconcile = new ReconcileScheduler({
        sql,
        resyncer,
        intervalMs: config.RESYNC_INTERVAL,
        dryRun: config.RESYNC_MODE === "dry_run",
      });
      reconcile.start();
    }

    // 6. Custody last: sales are taken only once everything downstream stands.
    sales = custody(
      sql,
      config,
      metrics,
      onlyStores,
      () => channels.wake(),
    );
    if (lifecycle.stopping) return;
    consumer = consumeSales(config, { connection: consume, publisher, custody: sales, topology, metrics });
  })();
  started.catch((error) =>
    log.error("start-up failed: {error}", { mark: "error", error: (error as Error).message })
  );

  async function close(): Promise<void> {
    if (!lifecycle.beginStop()) return;
    const deadline = Date.now() + config.SHUTDOWN_TIMEOUT;
    log.info("shutting down: stop consuming, finish in-flight work", { mark: "shutdown" });
    await started.catch(() => {});
    const reconcileStopped = reconcile?.stop();
    await resyncer?.close(); // ends a scheduled round's job too
    await reconcileStopped;
    await catchUp?.close();
    await consumer?.close();
    await sales?.drain();
    await channels.stop(Math.min(10_000, config.SHUTDOWN_TIMEOUT / 2));
    // A refresh in flight is stored before the ledger closes, if it ends within the budget: the closes
    // below (publisher, AMQP, ledger) keep a reserve of it, or main() would exit 1 without them.
    await channels.finish(deadline - Math.min(5_000, config.SHUTDOWN_TIMEOUT / 4));
    await outbox?.close();
    await upkeep?.close();
    await publisher?.close();
    await broker.close();
    // A refresh given up above still holds its reserved connection: end waits for it only as long as the
    // budget allows (then closes it, which releases the advisory lock).
    await sql.end({ timeout: Math.max(0.5, Math.min(5, (deadline - Date.now()) / 1000 - 0.5)) });
    await closeRedis(redis);
    await pos.close();
    await channels.close();
    await server.shutdown();
    log.info("stopped", { mark: "shutdown" });
  }

  return {
    config,
    topology,
    metrics,
    url: server.url,
    started,
    close,
    shopifySandbox: () => channels.get<ShopifyPlug>("shopify")?.sandbox,
    meliSandbox: () => channels.get<MeliPlug>("mercadolibre")?.sandbox,
    resyncer: () => resyncer,
    orders,
    catchUp: () => catchUp,
    posOutbox: () => outbox,
  };
}

if (import.meta.main) Deno.exit(await runProcess(startService));
