/**
 * Composition root: builds the service from configuration, wires broker →
 * ledger (and later dispatcher → channels), serves HTTP, and shuts down
 * gracefully. Tests call {@link startService} with their own configuration.
 */
import { Connection } from "rabbitmq-client";
import postgres from "postgres";
import { createClient } from "redis";
import { createConfirmingPublisher } from "./broker/publisher.ts";
import { locationMap, ShopifyChannel } from "./channels/shopify/channel.ts";
import { ShopifyClient } from "./channels/shopify/client.ts";
import { MeliChannel } from "./channels/mercadolibre/channel.ts";
import { MeliStock } from "./channels/mercadolibre/stock.ts";
import { ShopifyStock } from "./channels/shopify/stock.ts";
import { listChanges } from "./ops/changes.ts";
import { DeadLetterAdmin } from "./ops/dead_letters.ts";
import { ReconcileScheduler } from "./ops/reconcile.ts";
import { type ChannelStock, Resyncer, type ResyncHooks } from "./ops/resync.ts";
import { type ChannelProbe, collectStatus } from "./ops/status.ts";
import { MeliClient } from "./channels/mercadolibre/client.ts";
import { MeliListings } from "./channels/mercadolibre/listings.ts";
import { type AccessTokens, OAuthTokens, StaticToken } from "./channels/mercadolibre/tokens.ts";
import { PosStockReader, type StockRedis } from "./pos/stock.ts";
// The built-in sandboxes (graphql-js, the Shopify schema, the simulators) are loaded with import() only when a
// marketplace is not configured: a live instance never loads them (docs/DECISIONS.md, "Memory").
import type { MeliSandbox } from "./sandbox/mercadolibre/sandbox.ts";
import { InDoubtMarks, ListingLocks } from "./sync/listing_lock.ts";
import { DispatchStore } from "./ledger/dispatch_store.ts";
import type { Catalog } from "./sandbox/catalog.ts";
import type { ShopifySandbox } from "./sandbox/shopify/sandbox.ts";
import { RedisBucket } from "./sync/cost_bucket.ts";
import { Dispatcher, type DispatcherHooks } from "./sync/dispatcher.ts";
import type { ChannelAdapter } from "./sync/channel.ts";
import { keepRawBodies } from "./broker/raw_body.ts";
import { startSaleConsumer } from "./broker/sale_consumer.ts";
import { ledgerBacklog } from "./ledger/backlog.ts";
import { declareTopology, type Topology, topologyFromConfig } from "./broker/topology.ts";
import { type Config, CONFIG_VARIABLES, ConfigError, loadConfig, redactUrl } from "./config.ts";
import { createApp } from "./http/app.ts";
import { type CheckResult } from "./model/health.ts";
import { statusPageHtml } from "./http/status_page.tsx";
import { Custody } from "./ledger/custody.ts";
import { migrate } from "./ledger/migrate.ts";
import { logger, setupLogging } from "./log.ts";
import { createMetrics, type ServiceMetrics } from "./metrics.ts";
import { VERSION } from "./version.ts";

const log = logger("main");

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

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Seconds before a Postgres connection tries again after a failed connect. postgres.js's
 * default grows as 3^n/100 s up to 20 s with n shared by the whole pool, so after a short
 * outage queries waited up to 20 s more for Postgres that was already back (docs/RELIABILITY.md).
 */
export function reconnectBackoff(retries: number): number {
  return Math.min(0.1 * 2 ** retries, 2) * (0.75 + Math.random() / 4);
}

function connectBroker(url: string, name: string, metrics: ServiceMetrics): Connection {
  const connection = new Connection({
    url,
    connectionName: `marketplace-sync ${name} (${Deno.hostname?.() ?? "host"})`,
    retryLow: 250,
    retryHigh: 10_000,
    heartbeat: 30,
  });
  let down = false;
  connection.on("connection", () => {
    metrics.brokerReconnects.inc({ connection: name });
    metrics.componentUp.set({ component: `broker_${name}` }, 1);
    if (down) log.info("RabbitMQ {connection} connection restored", { connection: name, mark: "start" });
    down = false;
  });
  connection.on("error", (error: Error) => {
    metrics.componentUp.set({ component: `broker_${name}` }, 0);
    // One line per outage, not one per reconnect attempt.
    if (!down) {
      log.warning("RabbitMQ {connection} connection lost: {error}; reconnecting", {
        connection: name,
        error: error.message,
        mark: "retry",
      });
    }
    down = true;
  });
  return connection;
}

/**
 * Starts the service with the given configuration. HTTP answers at once
 * (`/readyz` says what is still down); the ledger is migrated with retries and
 * the consumer starts once it is ready.
 */
/** Extra wiring for tests: seams around the dispatcher. */
export interface ServiceOptions {
  dispatcherHooks?: DispatcherHooks;
  resyncHooks?: ResyncHooks;
}

export function startService(config: Config, options: ServiceOptions = {}): RunningService {
  keepRawBodies();
  const topology = topologyFromConfig(config);

  const sql = postgres(config.DATABASE_URL, {
    max: config.DATABASE_POOL_SIZE,
    connect_timeout: 5,
    backoff: reconnectBackoff,
    idle_timeout: 30,
    onnotice: () => {},
    connection: {
      application_name: "marketplace-sync",
      search_path: config.LEDGER_SCHEMA,
      statement_timeout: 15_000,
    },
  });

  const metrics = createMetrics(config.METRICS_PREFIX, () => ledgerBacklog(sql));

  const redis = createClient({
    url: config.REDIS_URL,
    socket: {
      connectTimeout: 2_000,
      reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000),
    },
  });
  let redisDown = false;
  redis.on("error", (error: Error) => {
    if (!redisDown) log.warning("Redis unreachable: {error}", { error: error.message });
    redisDown = true;
  });
  redis.on("ready", () => {
    if (redisDown) log.info("Redis reachable again");
    redisDown = false;
  });
  redis.connect().catch(() => {});

  let ledgerReady = false;
  let consumer: ReturnType<typeof startSaleConsumer> | undefined;
  let consumeConnection: Connection | undefined;
  let publishConnection: Connection | undefined;
  let stopping = false;

  async function readiness(): Promise<Record<string, CheckResult>> {
    const [pg, rd] = await Promise.all([
      withTimeout(sql`select 1`, 2_000, "postgres ping").then(
        () => ({ ok: ledgerReady, detail: ledgerReady ? undefined : "ledger migrations not applied yet" }),
        (e: Error) => ({ ok: false, detail: redactUrl(e.message) }),
      ),
      redis.isReady
        ? withTimeout(redis.ping(), 2_000, "redis ping").then(
          () => ({ ok: true }),
          (e: Error) => ({ ok: false, detail: redactUrl(e.message) }),
        )
        : Promise.resolve({ ok: false, detail: "not connected" }),
    ]);
    const brokerOk = Boolean(consumeConnection?.ready && publishConnection?.ready);
    metrics.componentUp.set({ component: "postgres" }, pg.ok ? 1 : 0);
    metrics.componentUp.set({ component: "redis" }, rd.ok ? 1 : 0);
    return {
      broker: brokerOk ? { ok: true } : { ok: false, detail: "not connected to RabbitMQ" },
      consumer: consumer?.attached ? { ok: true } : {
        ok: false,
        detail: stopping ? "shutting down" : `not consuming ${topology.queue}`,
      },
      postgres: pg,
      redis: rd,
      ...Object.fromEntries(Object.entries(channelHealth).map(([name, health]) => [name, health()])),
    };
  }

  // A scrape probes the dependencies too, so component_up is fresh without /readyz traffic.
  const meliConfigured = Boolean(config.MELI_TOKEN || config.MELI_CLIENT_ID);
  const sandboxMode = !config.SHOPIFY_URL && !meliConfigured;
  let resyncer: Resyncer | undefined;
  let reconcile: ReconcileScheduler | undefined;
  let deadLetters: DeadLetterAdmin | undefined;
  const channelStocks: ChannelStock[] = [];
  const probes: Record<string, ChannelProbe> = {};
  const operator = {
    auth: { token: config.ADMIN_TOKEN, sandboxMode },
    status: () =>
      collectStatus({
        sql,
        version: VERSION,
        mode: sandboxMode ? "sandbox" : "live",
        channels: config.CHANNELS,
        probes,
        queue: async () => {
          const connection = publishConnection;
          if (!connection?.ready) throw new Error("not connected");
          const [work, dead] = await Promise.all([
            connection.queueDeclare({ queue: topology.queue, passive: true }),
            connection.queueDeclare({ queue: topology.deadLetterQueue, passive: true }),
          ]);
          return {
            name: topology.queue,
            depth: work.messageCount,
            consumers: work.consumerCount,
            dead_letters: dead.messageCount,
          };
        },
      }),
    changes: (query: Parameters<typeof listChanges>[1]) => listChanges(sql, query),
    resyncer: () => resyncer,
    deadLetters: () => deadLetters,
    statusPage: () => statusPageHtml(VERSION),
  };
  /** Gauges read at scrape time: dependency probes, queue depths, token expiry. */
  async function beforeScrape(): Promise<void> {
    await readiness();
    for (const [channel, probe] of Object.entries(probes)) {
      const expires = probe.tokenExpiresAt?.();
      if (expires) {
        metrics.tokenExpirySeconds.set({ channel }, Math.round((expires.getTime() - Date.now()) / 1000));
      }
    }
    const connection = publishConnection;
    if (!connection?.ready) return;
    for (const queue of [topology.queue, topology.deadLetterQueue]) {
      const info = await withTimeout(connection.queueDeclare({ queue, passive: true }), 2_000, "queue probe")
        .catch(() => undefined);
      if (!info) continue;
      metrics.queueMessages.set({ queue }, info.messageCount);
      metrics.queueConsumers.set({ queue }, info.consumerCount);
    }
  }

  const app = createApp({
    readiness,
    registry: metrics.registry,
    version: VERSION,
    beforeScrape,
    operator,
  });
  const server = Deno.serve({
    hostname: config.HTTP_HOST,
    port: config.HTTP_PORT,
    onListen: () => {},
  }, app.fetch);
  const address = server.addr as Deno.NetAddr;
  const host = address.hostname === "0.0.0.0" ? "127.0.0.1" : address.hostname;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`;
  log.info("marketplace-sync {version} listening on {url}", { mark: "start", version: VERSION, url });

  let custody: Custody | undefined;
  let publisher: ReturnType<typeof createConfirmingPublisher> | undefined;
  let sandbox: ShopifySandbox | undefined;
  let meliSandbox: MeliSandbox | undefined;
  let posSql: postgres.Sql | undefined;
  let posRedis: ReturnType<typeof createClient> | undefined;
  let posStock: PosStockReader | undefined;
  let closeTokens: ((deadline: number) => void | Promise<void>) | undefined;
  let catalog: Promise<Catalog> | undefined;
  const sandboxCatalog = () =>
    catalog ??= import("./sandbox/catalog.ts").then(({ defaultCatalog, loadCatalog }) =>
      config.SANDBOX_CATALOG ? loadCatalog(config.SANDBOX_CATALOG) : defaultCatalog()
    );
  const dispatchers: Dispatcher[] = [];
  const channelHealth: Record<string, () => CheckResult> = {};

  /** Builds the Shopify channel: the real API when configured, else the built-in sandbox. */
  async function shopifyDispatcher(store: DispatchStore): Promise<Dispatcher> {
    let baseUrl = config.SHOPIFY_URL;
    let token = config.SHOPIFY_TOKEN;
    let locations = locationMap(config.SHOPIFY_LOCATIONS ?? {}, config.SHOPIFY_LOCATION_ID);
    if (!baseUrl || !token) {
      const { startShopifySandbox } = await import("./sandbox/shopify/sandbox.ts");
      sandbox = await startShopifySandbox({
        port: config.SANDBOX_SHOPIFY_PORT,
        catalog: await sandboxCatalog(),
      });
      baseUrl = sandbox.url;
      token = sandbox.token;
      locations = locationMap(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id])));
      log.warning(
        "SHOPIFY_URL/SHOPIFY_TOKEN not set: syncing to the built-in Shopify SANDBOX at {url} (no real store is touched)",
        { url: sandbox.url, mark: "start" },
      );
    } else if (!config.SHOPIFY_LOCATION_ID && !config.SHOPIFY_LOCATIONS) {
      log.warning(
        "neither SHOPIFY_LOCATION_ID nor SHOPIFY_LOCATIONS is set: every Shopify change will fail store_unmapped",
      );
    }
    const budget = new RedisBucket(redis, `marketplace-sync:budget:shopify:${new URL(baseUrl).host}`, {
      max: config.SHOPIFY_BUCKET_MAX,
      restoreRate: config.SHOPIFY_RESTORE_RATE,
    });
    const client = new ShopifyClient({
      baseUrl,
      token,
      apiVersion: config.SHOPIFY_API_VERSION,
      timeoutMs: config.SHOPIFY_TIMEOUT,
      budget,
      metrics,
    });
    const channel = new ShopifyChannel({ client, sql, locations, reason: config.SHOPIFY_REASON });
    channelHealth.shopify = () => channel.health();
    channelStocks.push(new ShopifyStock(client, channel.listings, locations, config.SHOPIFY_REASON));
    probes.shopify = {
      health: () => channel.health(),
      budget: () => ({ level: budget.level, max: budget.shape.max }),
    };
    return dispatcherFor(channel, store);
  }

  /** A dispatch loop for a channel adapter. */
  function dispatcherFor(adapter: ChannelAdapter, store: DispatchStore): Dispatcher {
    return new Dispatcher({
      adapter,
      store,
      publisher: publisher!,
      topology,
      metrics,
      pollIntervalMs: config.DISPATCH_POLL_INTERVAL,
      hooks: options.dispatcherHooks,
    });
  }

  /** The POS stock reader (mirror mode, resync): Redis keys, then the POS Postgres. */
  function posStockReader(): PosStockReader {
    if (posStock) return posStock;
    posSql = postgres(config.POS_DATABASE_URL ?? config.DATABASE_URL, {
      max: 2,
      connect_timeout: 5,
      backoff: reconnectBackoff,
      idle_timeout: 30,
      onnotice: () => {},
      connection: { application_name: "marketplace-sync pos-reader", statement_timeout: 5_000 },
    });
    let stockRedis: StockRedis = redis;
    if (config.POS_REDIS_URL && config.POS_REDIS_URL !== config.REDIS_URL) {
      posRedis = createClient({
        url: config.POS_REDIS_URL,
        socket: { connectTimeout: 2_000, reconnectStrategy: (n: number) => Math.min(100 * 2 ** n, 5_000) },
      });
      posRedis.on("error", () => {});
      posRedis.connect().catch(() => {});
      stockRedis = posRedis;
    }
    posStock = new PosStockReader({
      redis: stockRedis,
      sql: posSql,
      keyTemplate: config.POS_STOCK_KEY,
      query: config.POS_STOCK_QUERY,
      productQuery: config.POS_PRODUCT_QUERY,
    });
    return posStock;
  }

  /**
   * The store whose stock MeLi mirrors: MELI_TIENDA_ID, or in sandbox mode the
   * catalog's first store. Undefined in delta mode without MELI_TIENDA_ID (every store).
   */
  async function meliStore(): Promise<string | undefined> {
    if (config.MELI_TIENDA_ID) return config.MELI_TIENDA_ID;
    if (config.MELI_MODE === "delta" || meliConfigured) return undefined;
    return (await sandboxCatalog()).stores[0].tienda_id;
  }

  /** Builds the MercadoLibre channel: the real API when configured, else the built-in sandbox. */
  async function meliDispatcher(store: DispatchStore): Promise<Dispatcher> {
    let baseUrl = config.MELI_URL;
    let tokens: AccessTokens;
    const tiendaId = await meliStore();
    const onRefresh = (outcome: string) => metrics.tokenRefreshes.inc({ channel: "mercadolibre", outcome });
    if (config.MELI_CLIENT_ID && config.MELI_CLIENT_SECRET && config.MELI_REFRESH_TOKEN) {
      tokens = new OAuthTokens({
        sql,
        baseUrl,
        clientId: config.MELI_CLIENT_ID,
        clientSecret: config.MELI_CLIENT_SECRET,
        refreshToken: config.MELI_REFRESH_TOKEN,
        timeoutMs: config.MELI_TIMEOUT,
        onRefresh,
      });
    } else if (config.MELI_TOKEN) {
      tokens = new StaticToken(config.MELI_TOKEN);
    } else {
      const { startMeliSandbox } = await import("./sandbox/mercadolibre/sandbox.ts");
      meliSandbox = await startMeliSandbox({
        port: config.SANDBOX_MELI_PORT,
        catalog: await sandboxCatalog(),
        tiendaId,
        accessTokenTtlSeconds: config.SANDBOX_MELI_TOKEN_TTL,
      });
      baseUrl = meliSandbox.url;
      // The sandbox goes through the real OAuth chain, so the refresh path runs every day.
      tokens = new OAuthTokens({
        sql,
        baseUrl,
        clientId: meliSandbox.clientId,
        clientSecret: meliSandbox.clientSecret,
        refreshToken: meliSandbox.currentRefreshToken(),
        timeoutMs: config.MELI_TIMEOUT,
        onRefresh,
      });
      log.warning(
        "MELI_TOKEN / MELI_CLIENT_ID not set: syncing to the built-in MercadoLibre SANDBOX at {url} " +
          "(no real listing is touched); it mirrors store {tienda_id}",
        { url: meliSandbox.url, tienda_id: tiendaId, mark: "start" },
      );
    }
    const host = new URL(baseUrl).host;
    const budget = new RedisBucket(redis, `marketplace-sync:budget:mercadolibre:${host}`, {
      max: Math.max(1, config.MELI_RATE_PER_SEC),
      restoreRate: config.MELI_RATE_PER_SEC,
    });
    const client = new MeliClient({ baseUrl, tokens, budget, timeoutMs: config.MELI_TIMEOUT, metrics });
    const listings = new MeliListings(sql, client, config.MELI_USER_ID);
    const stock = posStockReader();
    const locks = new ListingLocks(
      redis,
      `marketplace-sync:lock:mercadolibre:${host}:`,
      config.MELI_LOCK_TTL,
    );
    const doubts = new InDoubtMarks(redis, `marketplace-sync:doubt:mercadolibre:${host}:`);
    const channel = new MeliChannel({
      client,
      listings,
      tokens,
      stock,
      locks,
      mode: config.MELI_MODE,
      tiendaId,
      reactivate: config.MELI_REACTIVATE,
      batchSize: config.MELI_BATCH_SIZE,
      doubts,
      batchOpen: async (id) =>
        (await sql`select 1 from sync_batch where id = ${id} and status = 'sending'`).length > 0,
    });
    channelHealth.mercadolibre = () => channel.health();
    channelStocks.push(new MeliStock(client, listings, locks, tiendaId, config.MELI_MODE === "delta"));
    probes.mercadolibre = {
      health: () => channel.health(),
      budget: () => ({ level: budget.level, max: budget.shape.max }),
      tokenExpiresAt: () => tokens.expiresAt(),
    };
    closeTokens = (deadline) => tokens.close?.(deadline);
    return dispatcherFor(channel, store);
  }

  // Waits during start-up end early when shutdown begins, so close() never hangs on them.
  const stopWaiting = new AbortController();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stopWaiting.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      stopWaiting.signal.addEventListener("abort", done, { once: true });
    });

  /** Runs `step` until it succeeds or shutdown begins; false if shutdown won. */
  async function retrying(what: string, step: () => Promise<void>): Promise<boolean> {
    for (let attempt = 1; !stopping; attempt++) {
      try {
        await step();
        return true;
      } catch (error) {
        const delay = Math.min(500 * 2 ** attempt, 15_000);
        log.error("{what} failed ({error}); retrying in {delay_ms} ms", {
          mark: "error",
          what,
          error: redactUrl((error as Error).message),
          delay_ms: delay,
        });
        await pause(delay);
      }
    }
    return false;
  }

  const started = (async () => {
    const migrated = await retrying("ledger migration", async () => {
      const applied = await migrate(sql, config.LEDGER_SCHEMA);
      ledgerReady = true;
      log.info("ledger ready in schema {schema} ({count} migrations applied now)", {
        schema: config.LEDGER_SCHEMA,
        count: applied.length,
      });
    });
    if (!migrated) return;
    consumeConnection = connectBroker(config.RABBITMQ_URL, "consume", metrics);
    publishConnection = connectBroker(config.RABBITMQ_URL, "publish", metrics);
    const declared = await retrying("RabbitMQ topology declaration", async () => {
      await publishConnection!.onConnect(10_000, true);
      const { legacyWorkQueue, workQueueAsDeclared } = await declareTopology(publishConnection!, topology);
      if (workQueueAsDeclared) {
        log.warning(
          "QUEUE_DELIVERY_LIMIT={limit} (QUEUE_TYPE={queue_type}) differs from the arguments work queue {queue} " +
            "was declared with; the queue keeps its declaration (RabbitMQ cannot change a queue's arguments): " +
            "change the limit by policy (README: quorum queues, existing deployments)",
          { limit: topology.deliveryLimit, queue_type: topology.queueType, queue: topology.queue },
        );
      } else if (legacyWorkQueue) {
        log.warning(
          "work queue {queue} was declared by an older version without a delivery limit and dead-letter target: " +
            "deliveries returned more often than the broker's limit are DELETED unless a policy sets " +
            "dead-letter-exchange/dead-letter-routing-key (README: quorum queues, existing deployments)",
          { queue: topology.queue, dead_letter_queue: topology.deadLetterQueue },
        );
      }
    });
    if (!declared) return;
    publisher = createConfirmingPublisher(publishConnection, topology);
    const store = new DispatchStore(sql, {
      maxAttempts: config.DISPATCH_MAX_ATTEMPTS,
      leaseMs: config.DISPATCH_LEASE,
      backoffBaseMs: config.DISPATCH_BACKOFF_BASE,
      backoffMaxMs: config.DISPATCH_BACKOFF_MAX,
    });
    if (!config.DISPATCH_ENABLED) {
      log.info("DISPATCH_ENABLED=false: this instance only takes sales into custody; others dispatch them");
    } else if (config.CHANNELS.includes("shopify")) dispatchers.push(await shopifyDispatcher(store));
    if (config.DISPATCH_ENABLED && config.CHANNELS.includes("mercadolibre")) {
      dispatchers.push(await meliDispatcher(store));
    }
    const meliTienda = config.CHANNELS.includes("mercadolibre") ? await meliStore() : undefined;
    for (const d of dispatchers) d.start();
    deadLetters = new DeadLetterAdmin({ connection: publishConnection, publisher, topology });
    resyncer = new Resyncer({
      sql,
      stock: posStockReader(),
      channels: channelStocks,
      metrics,
      owner: `${Deno.hostname?.() ?? "host"}:${Deno.pid}`,
      // Live sales first: wait (up to RESYNC_LIVE_WAIT per listing) while the channel's dispatcher has work.
      liveIdle: async (channel, signal) => {
        await dispatchers.find((d) => d.channel === channel)?.idle(config.RESYNC_LIVE_WAIT, signal);
      },
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
    custody = new Custody(sql, config.CHANNELS, {
      batchSize: config.CUSTODY_BATCH_SIZE,
      maxWaitMs: config.CUSTODY_BATCH_WAIT,
      maxWriters: config.CUSTODY_WRITERS,
      onlyStore: meliTienda ? { mercadolibre: meliTienda } : undefined,
    }, {
      batch: (size, seconds) => {
        metrics.custodyBatchSize.observe(size);
        metrics.custodyBatchSeconds.observe(seconds);
        // New pending changes: wake the local dispatchers instead of waiting for their poll.
        for (const d of dispatchers) d.wake();
      },
    });
    if (stopping) return;
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
    if (stopping) return;
    stopping = true;
    const shutdownBegan = Date.now();
    stopWaiting.abort();
    log.info("shutting down: stop consuming, finish in-flight work", { mark: "shutdown" });
    await started.catch(() => {});
    const reconcileStopped = reconcile?.stop();
    await resyncer?.close(); // ends a scheduled round's job too
    await reconcileStopped;
    await consumer?.close();
    await custody?.drain();
    // Let each dispatcher finish (and record) the batch in flight; abort waits
    // for the rate budget if that takes too long. An unrecorded batch keeps its
    // lease and is re-sent with the same key by whoever claims it next.
    const stopped = Promise.all(dispatchers.map((d) => d.stop()));
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) =>
      graceTimer = setTimeout(r, Math.min(10_000, config.SHUTDOWN_TIMEOUT / 2))
    );
    await Promise.race([stopped, grace]);
    clearTimeout(graceTimer);
    for (const d of dispatchers) d.abort();
    await stopped;
    // A refresh in flight is stored before the ledger closes, if it ends within the budget: the closes
    // below (publisher, AMQP, ledger) keep a reserve of it, or main() would exit 1 without them.
    const reserve = Math.min(5_000, config.SHUTDOWN_TIMEOUT / 4);
    await closeTokens?.(shutdownBegan + config.SHUTDOWN_TIMEOUT - reserve);
    await publisher?.close();
    await Promise.all([consumeConnection?.close(), publishConnection?.close()]);
    // A refresh given up above still holds its reserved connection: end waits for it only as long as the
    // budget allows (then closes it, which releases the advisory lock).
    const left = (shutdownBegan + config.SHUTDOWN_TIMEOUT - Date.now()) / 1000;
    await sql.end({ timeout: Math.max(0.5, Math.min(5, left - 0.5)) });
    if (redis.isOpen) await redis.close().catch(() => redis.destroy());
    else redis.destroy();
    await posSql?.end({ timeout: 5 });
    if (posRedis?.isOpen) await posRedis.close().catch(() => posRedis?.destroy());
    await sandbox?.close();
    await meliSandbox?.close();
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
    shopifySandbox: () => sandbox,
    meliSandbox: () => meliSandbox,
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
