/**
 * Composition root: connects, serves HTTP (first, for the probes), migrates the ledger,
 * declares the broker topology, plugs the channels, starts dispatch, resync and custody,
 * and closes it all in the reverse order. Tests call {@link startService} with their own
 * configuration.
 */
import type { Connection } from "rabbitmq-client";
import { type ConfirmingPublisher, createConfirmingPublisher } from "./broker/publisher.ts";
import { keepRawBodies } from "./broker/raw_body.ts";
import { startSaleConsumer } from "./broker/sale_consumer.ts";
import { declareTopology, reportDeclaration, type Topology, topologyFromConfig } from "./broker/topology.ts";
import { mercadolibre } from "./channels/mercadolibre/plug.ts";
import type { MeliPlug } from "./channels/mercadolibre/plug.ts";
import { shopify, type ShopifyPlug } from "./channels/shopify/plug.ts";
import { type Config, CONFIG_VARIABLES, ConfigError, loadConfig, sandboxMode } from "./config.ts";
import { createApp } from "./http/app.ts";
import { ledgerBacklog } from "./ledger/backlog.ts";
import { Custody } from "./ledger/custody.ts";
import { DispatchStore } from "./ledger/dispatch_store.ts";
import { migrate } from "./ledger/migrate.ts";
import { logger, setupLogging } from "./log.ts";
import { createMetrics, type ServiceMetrics } from "./metrics.ts";
import type { ChannelName } from "./model/channel_name.ts";
import { DeadLetterAdmin } from "./ops/dead_letters.ts";
import { ReconcileScheduler } from "./ops/reconcile.ts";
import { Resyncer, type ResyncHooks } from "./ops/resync.ts";
import type { MeliSandbox } from "./sandbox/mercadolibre/sandbox.ts";
import type { ShopifySandbox } from "./sandbox/shopify/sandbox.ts";
import { PluggedChannels } from "./service/channels.ts";
import { closeRedis, connectBroker, openLedger, openRedis } from "./service/connections.ts";
import { Lifecycle, withTimeout } from "./service/lifecycle.ts";
import { operatorSurface, refreshGauges } from "./service/operator.ts";
import { PosSource } from "./service/pos_source.ts";
import { HealthRegistry, postgresCheck, redisCheck } from "./service/probes.ts";
import { sandboxCatalogLoader } from "./service/sandbox_catalog.ts";
import type { ChannelPlugin } from "./sync/channel.ts";
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
  const metrics = createMetrics(config.METRICS_PREFIX, () => ledgerBacklog(sql));
  const redis = openRedis(config.REDIS_URL, "Redis");
  const pos = new PosSource(config, redis);
  const sandboxCatalog = sandboxCatalogLoader(config);
  const channels = new PluggedChannels();
  let ledgerReady = false;
  let consumeConnection: Connection | undefined;
  let publishConnection: Connection | undefined;
  let publisher: ConfirmingPublisher | undefined;
  let consumer: ReturnType<typeof startSaleConsumer> | undefined;
  let custody: Custody | undefined;
  let resyncer: Resyncer | undefined;
  let reconcile: ReconcileScheduler | undefined;
  let deadLetters: DeadLetterAdmin | undefined;

  // 1. HTTP first, so /readyz can say what is still down.
  const health = new HealthRegistry()
    .add(
      "broker",
      () =>
        consumeConnection?.ready && publishConnection?.ready
          ? { ok: true }
          : { ok: false, detail: "not connected to RabbitMQ" },
    )
    .add(
      "consumer",
      () =>
        consumer?.attached
          ? { ok: true }
          : { ok: false, detail: lifecycle.stopping ? "shutting down" : `not consuming ${topology.queue}` },
    )
    .add("postgres", postgresCheck(sql, () => ledgerReady, metrics))
    .add("redis", redisCheck(redis, metrics));
  const readiness = async () => ({
    ...await health.run(),
    ...Object.fromEntries(Object.entries(channels.probes).map(([name, probe]) => [name, probe.health()])),
  });
  const app = createApp({
    readiness,
    registry: metrics.registry,
    version: VERSION,
    beforeScrape: () =>
      refreshGauges({ readiness, metrics, topology, channels, broker: () => publishConnection }),
    operator: operatorSurface({
      config,
      sql,
      topology,
      sandboxMode: sandboxMode(config),
      channels,
      broker: () => publishConnection,
      resyncer: () => resyncer,
      deadLetters: () => deadLetters,
    }),
    inbound: (name) => channels.get(name as ChannelName)?.routes,
  });
  const server = Deno.serve(
    { hostname: config.HTTP_HOST, port: config.HTTP_PORT, onListen: () => {} },
    app.fetch,
  );
  const address = server.addr as Deno.NetAddr;
  const host = address.hostname === "0.0.0.0" ? "127.0.0.1" : address.hostname;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`;
  log.info("marketplace-sync {version} listening on {url}", { mark: "start", version: VERSION, url });

  const started = (async () => {
    // 2. The ledger: nothing is consumed that could not be stored.
    const migrated = await lifecycle.retrying("ledger migration", async () => {
      const applied = await migrate(sql, config.LEDGER_SCHEMA);
      ledgerReady = true;
      log.info("ledger ready in schema {schema} ({count} migrations applied now)", {
        schema: config.LEDGER_SCHEMA,
        count: applied.length,
      });
    });
    if (!migrated) return;

    // 3. The broker: one connection to consume, one to publish (DLQ copies, confirms).
    consumeConnection = connectBroker(config.RABBITMQ_URL, "consume", metrics);
    publishConnection = connectBroker(config.RABBITMQ_URL, "publish", metrics);
    const declared = await lifecycle.retrying("RabbitMQ topology declaration", async () => {
      await publishConnection!.onConnect(10_000, true);
      reportDeclaration(topology, await declareTopology(publishConnection!, topology));
    });
    if (!declared) return;
    publisher = createConfirmingPublisher(publishConnection, topology);

    // 4. The channels, each with its dispatch loop.
    const store = new DispatchStore(sql, {
      maxAttempts: config.DISPATCH_MAX_ATTEMPTS,
      leaseMs: config.DISPATCH_LEASE,
      backoffBaseMs: config.DISPATCH_BACKOFF_BASE,
      backoffMaxMs: config.DISPATCH_BACKOFF_MAX,
    });
    const context = {
      config,
      sql,
      redis,
      metrics,
      sandboxCatalog,
      posStock: () => pos.reader(),
      batchSending: (id: string) => store.isSending(id),
    };
    if (config.DISPATCH_ENABLED) {
      await channels.plug(CHANNELS, config.CHANNELS, context, (plug) =>
        new Dispatcher({
          adapter: plug.adapter,
          store,
          publisher: publisher!,
          topology,
          metrics,
          pollIntervalMs: config.DISPATCH_POLL_INTERVAL,
          hooks: options.dispatcherHooks,
        }));
    } else {
      log.info("DISPATCH_ENABLED=false: this instance only takes sales into custody; others dispatch them");
    }
    // Stores a channel does not show (MeLi mirroring one store) get no change for it, plugged here or not.
    const onlyStore: Partial<Record<ChannelName, string>> = {};
    for (const name of config.CHANNELS) {
      const store = await CHANNELS[name].onlyStore?.(context);
      if (store) onlyStore[name] = store;
    }
    channels.start();

    // 5. The operator's tools: dead letters, resync (live sales first), the scheduled reconcile.
    deadLetters = new DeadLetterAdmin({ connection: publishConnection, publisher, topology });
    resyncer = new Resyncer({
      sql,
      stock: pos.reader(),
      channels: channels.stocks,
      metrics,
      owner: `${Deno.hostname?.() ?? "host"}:${Deno.pid}`,
      liveIdle: (channel, signal) => channels.idle(channel, config.RESYNC_LIVE_WAIT, signal),
      hooks: options.resyncHooks,
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
    custody = new Custody(sql, config.CHANNELS, {
      batchSize: config.CUSTODY_BATCH_SIZE,
      maxWaitMs: config.CUSTODY_BATCH_WAIT,
      maxWriters: config.CUSTODY_WRITERS,
      onlyStore: Object.keys(onlyStore).length ? onlyStore : undefined,
    }, {
      batch: (size, seconds) => {
        metrics.custodyBatchSize.observe(size);
        metrics.custodyBatchSeconds.observe(seconds);
        channels.wake();
      },
    });
    if (lifecycle.stopping) return;
    consumer = startSaleConsumer({
      connection: consumeConnection,
      publisher,
      custody,
      topology,
      limits: {
        maxBytes: config.MAX_EVENT_BYTES,
        maxItems: config.MAX_ITEMS_PER_EVENT,
        maxQuantity: config.MAX_ITEM_QUANTITY,
      },
      concurrency: config.CONSUMER_CONCURRENCY,
      prefetch: config.prefetch,
      metrics,
    });
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
    await consumer?.close();
    await custody?.drain();
    await channels.stop(Math.min(10_000, config.SHUTDOWN_TIMEOUT / 2));
    // A refresh in flight is stored before the ledger closes, if it ends within the budget: the closes
    // below (publisher, AMQP, ledger) keep a reserve of it, or main() would exit 1 without them.
    await channels.finish(deadline - Math.min(5_000, config.SHUTDOWN_TIMEOUT / 4));
    await publisher?.close();
    await Promise.all([consumeConnection?.close(), publishConnection?.close()]);
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
    url,
    started,
    close,
    shopifySandbox: () => channels.get<ShopifyPlug>("shopify")?.sandbox,
    meliSandbox: () => channels.get<MeliPlug>("mercadolibre")?.sandbox,
    resyncer: () => resyncer,
  };
}

async function main(): Promise<number> {
  let config: Config;
  try {
    // Only our own variables: toObject() would need access to the whole environment.
    config = loadConfig(Object.fromEntries(CONFIG_VARIABLES.map((name) => [name, Deno.env.get(name)])));
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`marketplace-sync: ${error.message}`);
      return 2;
    }
    throw error;
  }
  await setupLogging({ level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  const service = startService(config);
  const stop = Promise.withResolvers<string>();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => stop.resolve(signal));
  }
  // A start-up step that cannot be retried (e.g. the sandbox port is taken) ends the process.
  let fatal = false;
  service.started.catch(() => {
    fatal = true;
    stop.resolve("start-up failure");
  });
  const signal = await stop.promise;
  log.info("received {signal}", { signal, mark: "shutdown" });
  try {
    await withTimeout(service.close(), config.SHUTDOWN_TIMEOUT, "graceful shutdown");
    return fatal ? 1 : 0;
  } catch (error) {
    log.error("{error}; exiting anyway (unacked deliveries will be redelivered)", {
      mark: "error",
      error: (error as Error).message,
    });
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main());
