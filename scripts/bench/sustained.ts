/**
 * Benchmark section `sustained`: the service as its own process, with its
 * least-privilege flags, both channels dispatching to sandboxes started here
 * (so the service's RSS is the service's alone), fed a steady stream of sales
 * (default 1 000/s for 60 s). The service gets the flags and allocator
 * environment scripts/launch.ts gives it (src/permissions.ts: permissions, V8
 * heap settings, SERVICE_ENV). Reports the service process's RSS over time
 * (sampled from /proc, idle before, peak during), the CPU time it used, whether
 * custody kept up (the queue's depth), and what the channels applied meanwhile.
 *
 * For issue #15 it also reports, per channel, the sale → applied lag per 30 s
 * window of sale time (read from the ledger after the stream, Shopify given up
 * to 120 s to drain) and the backlog over time (open changes, sampled with the
 * RSS) with its slope over the stream's last half; what bounds MercadoLibre (its
 * writes per second, changes per write, one pass over its listings); and the cost
 * per sale over the stream and drain: ledger rows written, WAL bytes, and CPU
 * seconds per 1 000 sales of the service, Postgres and RabbitMQ. The ledger
 * queries are scripts/bench/sustained_ledger.ts. docs/BENCHMARKS.md says what
 * each figure means and its caveats.
 *
 * Targets: RSS ≤ 128 MiB (issue #7), idle ≤ 100 MiB; Shopify lag p99 ≤ 2 s in
 * every window and a backlog that does not grow (issue #15).
 */
import { Buffer } from "node:buffer";
import postgres from "postgres";
import { createClient } from "redis";
import { type Config, loadConfig } from "../../src/config.ts";
import { envText, permissionsFor, SERVICE_ENV, withV8Flags } from "../../src/permissions.ts";
import { buildCatalog } from "../../src/sandbox/catalog.ts";
import { startMeliSandbox } from "../../src/sandbox/mercadolibre/sandbox.ts";
import { startShopifySandbox } from "../../src/sandbox/shopify/sandbox.ts";
import {
  type BenchContext,
  benchServiceEnv,
  connectionPorts,
  cpuSeconds,
  DATABASE_URL,
  deleteKeys,
  freePort,
  memorySplit,
  PLAN_BUCKETS,
  REDIS_URL,
  rssMib,
  runResources,
  type Section,
  type SectionResult,
  type ServiceProcess,
  spawnService,
  trackProcessCpu,
} from "./harness.ts";
import { reservePosStock, type SampleSale, sampleSales } from "../publish_sample.ts";
import {
  backendPids,
  backlogByChannel,
  lagFigures,
  lagWindows,
  meliWritesBeforeApplied,
  oldestOpenAgeS,
  slope,
  tableWrites,
  walBytes,
  walLsn,
  writesPerSale,
} from "./sustained_ledger.ts";

const log = (text: string) => console.error(`[bench] ${text}`);
const round = (n: number, digits = 1) => Number(n.toFixed(digits));

/** Width of the windows of sale time the lag is reported in, in seconds. */
const LAG_WINDOW_S = 30;
/** How long Shopify gets after custody is done to settle every change before the lag is read. */
const DRAIN_S = 120;

/** One sample of the stream, every 0.5 s: service RSS, queue depth, open changes per channel. */
interface Sample {
  t: number;
  rss: number;
  depth: number;
  shopify: number;
  meli: number;
}

/**
 * A channel's backlog about 20 times over the stream (every 30 s of a 600 s stream, at least
 * every 5 s) and at the end: `"30s:123 60s:140 … 602s:0"`.
 */
function backlogTimeline(samples: readonly Sample[], channel: "shopify" | "meli", streamS: number): string {
  const step = Math.max(5, Math.round(streamS / 20 / 5) * 5);
  const shown: string[] = [];
  let next = step;
  for (const s of samples) {
    if (s.t < next) continue;
    shown.push(`${next}s:${s[channel]}`);
    next += step;
  }
  const last = samples.at(-1);
  if (last && next - step < Math.floor(last.t)) shown.push(`${round(last.t, 0)}s:${last[channel]}`);
  return shown.join(" ");
}

/** Whether process `pid` still exists. */
const alive = (pid: number) => Deno.stat(`/proc/${pid}`).then(() => true, () => false);

/**
 * Publishes `sales` at `perSecond` as the POS does (persistent JSON, message id = event id,
 * publisher confirms), stamping each sale's `timestamp` as it is sent: that instant is the
 * "sale" the lag is measured from.
 */
async function publishStream(
  ctx: BenchContext,
  config: Config,
  sales: SampleSale[],
  perSecond: number,
): Promise<void> {
  const publisher = ctx.rabbit.createPublisher({ confirm: true });
  const window: Promise<void>[] = [];
  const started = performance.now();
  try {
    for (const [n, sale] of sales.entries()) {
      const wait = started + n / perSecond * 1000 - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sale.timestamp = new Date().toISOString();
      window.push(publisher.send({
        exchange: config.EXCHANGE,
        routingKey: config.ROUTING_KEY,
        contentType: "application/json",
        durable: true,
        messageId: sale.event_id,
      }, Buffer.from(JSON.stringify(sale))));
      if (window.length >= 500) await Promise.all(window.splice(0));
    }
    await Promise.all(window);
  } finally {
    await publisher.close();
  }
}

/** The service as the `sustained` and `idle` sections run it, and what it was started with. */
export interface SandboxedService {
  /** The run's own names (`bench_<id>…`). */
  id: string;
  catalog: ReturnType<typeof buildCatalog>;
  meli: Awaited<ReturnType<typeof startMeliSandbox>>;
  /** The store MercadoLibre mirrors. */
  meliStore: string;
  env: Record<string, string>;
  config: Config;
  /** `service_settings`, `v8_glibc_defaults` or `v8_flags:…` (BENCH_SUSTAINED_RUNTIME / _V8_FLAGS). */
  runtime: string;
  /** A connection on the run's ledger schema. */
  sql: postgres.Sql;
  child: ServiceProcess;
}

/**
 * Starts both marketplace sandboxes in this process and the service as its own process with both channels
 * dispatching to them, the way scripts/launch.ts starts it (the derived flags, SERVICE_ENV), and returns once
 * it answers /readyz. Everything is stopped and removed by the context's cleanup.
 */
export async function startSandboxedService(ctx: BenchContext, section: string): Promise<SandboxedService> {
  const o = ctx.options;
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 8);
  const catalog = buildCatalog({
    skus: o.shopifySkus,
    stores: o.shopifyStores,
    seed: o.seed,
    maxQuantity: 1e6,
  });
  const shop = await startShopifySandbox({
    catalog,
    bucket: PLAN_BUCKETS[o.plan],
    faults: { latencyMs: o.latencyMs },
  });
  ctx.defer("Shopify sandbox", () => shop.close());
  const meliStore = catalog.stores[0].tienda_id;
  const meli = await startMeliSandbox({
    catalog,
    tiendaId: meliStore,
    ratePerSecond: o.meliRate * 2,
    faults: { latencyMs: o.latencyMs },
  });
  ctx.defer("MeLi sandbox", () => meli.close());
  const port = freePort();
  const env: Record<string, string> = {
    ...benchServiceEnv(id),
    HTTP_PORT: String(port),
    LOG_LEVEL: "warning",
    LOG_FORMAT: "json",
    SHOPIFY_URL: shop.url,
    SHOPIFY_TOKEN: shop.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id]))),
    MELI_URL: meli.url,
    MELI_TOKEN: meli.staticToken,
    MELI_TIENDA_ID: meliStore,
    MELI_RATE_PER_SEC: String(o.meliRate),
    POS_STOCK_KEY: `bench_${id}:stock:{tienda_id}:{producto_id}`,
    // BENCH_SERVICE_ENV='{"DISPATCH_LANES":"2"}' sets service variables for an experiment.
    ...serviceOverrides(),
  };
  const config: Config = loadConfig(env);
  // To measure what the service's runtime settings change (docs/BENCHMARKS.md, "Sustained stream"):
  // BENCH_SUSTAINED_RUNTIME=defaults runs it with V8's and glibc's own defaults instead;
  // BENCH_SUSTAINED_V8_FLAGS=--a,--b replaces the V8 flags only (as `launch.ts --v8-flags=…` would).
  const runtimeDefaults = Deno.env.get("BENCH_SUSTAINED_RUNTIME") === "defaults";
  const v8Override = Deno.env.get("BENCH_SUSTAINED_V8_FLAGS");
  const derived = permissionsFor(config).flags;
  const flags = runtimeDefaults
    ? withV8Flags(derived, null)
    : v8Override !== undefined
    ? withV8Flags(derived, `--v8-flags=${v8Override}`)
    : derived;
  const serviceEnv = runtimeDefaults ? {} : SERVICE_ENV;
  const runtime = runtimeDefaults
    ? "v8_glibc_defaults"
    : v8Override !== undefined
    ? `v8_flags:${v8Override}`
    : "service_settings";
  log(
    `${section}: service process with ${flags.join(" ")}` +
      (runtimeDefaults ? "" : ` ${envText(serviceEnv)}`) + ` (${runtime})`,
  );
  // Declared first, so cleanup (last in, first out) stops the service before it drops its schema.
  const { sql } = await runResources(ctx, config);
  // As scripts/launch.ts starts it: the allocator defaults of SERVICE_ENV next to the configuration.
  const child = await spawnService(ctx, { flags, env, serviceEnv });
  return { id, catalog, meli, meliStore, env, config, runtime, sql, child };
}

export const sustainedSection: Section = {
  id: "sustained",
  title: "Sustained sales stream: the service process's memory (RSS) and whether custody keeps up",
  async run(ctx: BenchContext): Promise<SectionResult> {
    const o = ctx.options;
    const rate = o.sustainedRate;
    const seconds = o.sustainedSeconds;
    const { id, catalog, meli, meliStore, env, config, runtime, sql, child } = await startSandboxedService(
      ctx,
      "sustained",
    );
    await new Promise((r) => setTimeout(r, 3_000)); // let start-up allocations settle
    const idle = (await rssMib(child.pid))!;
    log(`sustained: idle RSS ${round(idle.rss)} MiB; publishing ${rate} sales/s for ${seconds} s`);

    const sales = sampleSales({
      count: rate * seconds,
      stores: o.shopifyStores,
      skus: o.shopifySkus,
      maxItems: 3,
      seed: o.seed,
      catalog,
    });
    const redis = createClient({ url: REDIS_URL });
    await redis.connect();
    ctx.defer("POS keys", async () => {
      await deleteKeys(redis, `bench_${id}:*`);
      await redis.close();
    });
    await reservePosStock(redis, env.POS_STOCK_KEY, catalog, sales);

    // The section's own queries go through one connection of their own, so Postgres's CPU
    // can be counted without this backend's (its pid is left out).
    const probe = postgres(DATABASE_URL, {
      max: 1,
      onnotice: () => {},
      connection: { search_path: config.LEDGER_SCHEMA, application_name: "bench sustained probe" },
    });
    ctx.defer("probe connection", () => probe.end());
    const [{ pid: probePid }] = await probe<{ pid: number }[]>`select pg_backend_pid() as pid`;

    // Baselines of the cost window (first publish → Shopify drained or the drain budget spent).
    const writesBefore = await tableWrites(probe, config.LEDGER_SCHEMA);
    const lsnBefore = await walLsn(probe);
    const servers = await trackProcessCpu(["postgres", "beam.smp"]);
    // The service's own Postgres backends: its connections' ports, as pg_stat_activity shows them.
    const postgresPort = Number(new URL(DATABASE_URL).port || 5432);
    const serviceBackends = new Set<number>();
    const findServiceBackends = async () => {
      for (const pid of await backendPids(probe, await connectionPorts(child.pid, postgresPort))) {
        serviceBackends.add(pid);
      }
    };
    await findServiceBackends();
    const meliBefore = meli.stats();
    const cpuBefore = await cpuSeconds(child.pid);
    const firstPublish = new Date();
    const started = performance.now();
    const elapsed = () => (performance.now() - started) / 1000;

    const samples: Sample[] = [];
    // Every 5 s: where the service's RSS is (/proc/<pid>/smaps): malloc's main arena (`[heap]`, native
    // memory of the JS thread: Deno's I/O buffers), the other anonymous mappings (the V8 heap, malloc's
    // other arena, stacks) and file-backed pages (the binary). The 600 s peak of issue #15 was the arena.
    const splits: { t: number; heap: number; anon: number; file: number }[] = [];
    let meliHalf: { t: number; puts: number } | undefined;
    // When each MeLi stock write arrived, read off the sandbox's request log (a capped ring) as the run goes.
    const meliPutsSeen = new Set<string>();
    const meliPutTimes: number[] = [];
    const collectMeliPuts = () => {
      for (const r of meli.requestLog()) {
        const key = `${r.at} ${r.path}`;
        if (r.method !== "PUT" || meliPutsSeen.has(key)) continue;
        meliPutsSeen.add(key);
        meliPutTimes.push(r.at);
      }
    };
    let sampling = true;
    let backlog: Record<string, number> = {};
    const sampler = (async () => {
      while (sampling && !child.exited()) {
        const m = await rssMib(child.pid);
        const depth = (await ctx.rabbit.queueDeclare({ queue: config.QUEUE, passive: true })).messageCount;
        // The backlog every 2 s, not every sample: counting it reads every pending change (tens of thousands
        // for MeLi, which trails by design), 0.14 s a count on the loaded machine (pg_stat_statements, 300 s
        // run), a tenth of the ledger's statement time at 2 Hz: the probe must not load what it measures.
        if (samples.length % 4 === 0) backlog = await backlogByChannel(probe);
        await servers.sample();
        if (samples.length % 10 === 0) {
          await findServiceBackends(); // the pool opens and closes connections
          const split = await memorySplit(child.pid, Deno.execPath());
          if (split) {
            const heap = split.mappings.malloc_heap ?? 0;
            splits.push({ t: elapsed(), heap, anon: split.anon - heap, file: split.file });
          }
        }
        const t = elapsed();
        if (!meliHalf && t >= seconds / 2) meliHalf = { t, puts: meli.stats().puts };
        if (samples.length % 10 === 0) collectMeliPuts();
        if (m) {
          samples.push({
            t,
            rss: m.rss,
            depth,
            shopify: backlog.shopify ?? 0,
            meli: backlog.mercadolibre ?? 0,
          });
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    await publishStream(ctx, config, sales, rate);
    const publishSeconds = elapsed();
    const meliPutsAtPublishEnd = meli.stats().puts;
    // Custody drains what is left; the channels keep dispatching (MeLi is budget-bound and far behind).
    // Counting `sale` is a parallel scan of every sale so far (~0.1 s of three processes at 600 000): it
    // is asked only once the queue holds nothing ready, so it does not take the drain's CPU.
    for (let i = 0; i < 600; i++) {
      const ready = (await ctx.rabbit.queueDeclare({ queue: config.QUEUE, passive: true })).messageCount;
      if (ready === 0) {
        const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from sale`;
        if (n >= sales.length) break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const custodySeconds = elapsed();
    const cpuUsed = (await cpuSeconds(child.pid) ?? NaN) - (cpuBefore ?? NaN);
    // Shopify may trail the stream a little: give it up to DRAIN_S to settle every change, so
    // the lag of the last windows is measured, not cut off. MeLi is left where it is.
    let shopifyOpen = NaN;
    for (const until = performance.now() + DRAIN_S * 1000; performance.now() < until;) {
      shopifyOpen = (await backlogByChannel(probe)).shopify ?? 0;
      if (shopifyOpen === 0) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const windowSeconds = elapsed();
    // The end of the cost window: CPU, WAL and MeLi's counters now, before anything stops.
    await findServiceBackends();
    await servers.sample();
    const serviceCpuWindow = (await cpuSeconds(child.pid) ?? NaN) - (cpuBefore ?? NaN);
    const lsnAfter = await walLsn(probe);
    const meliAfter = meli.stats();
    const meliOldestOpen = await oldestOpenAgeS(probe, "mercadolibre");
    sampling = false;
    await sampler;
    collectMeliPuts();
    const end = (await rssMib(child.pid))!;
    // The service's backends publish their row counters when they exit: stop it, then read them.
    await child.stop();
    collectMeliPuts(); // what a graceful stop wrote
    // A backend publishes its counters on its way out, a moment after the client has gone.
    for (let i = 0; i < 50 && (await Promise.all([...serviceBackends].map(alive))).some(Boolean); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const writesAfter = await tableWrites(probe, config.LEDGER_SCHEMA);
    const walPerSale = await walBytes(probe, lsnBefore, lsnAfter) / sales.length;
    const lag = await lagWindows(probe, firstPublish, LAG_WINDOW_S);

    const during = samples.filter((s) => s.t <= publishSeconds);
    const peakDuring = Math.max(...during.map((s) => s.rss));
    const peakDepth = Math.max(...samples.map((s) => s.depth));
    const lastHalf = during.filter((s) => s.t >= publishSeconds / 2);
    const shopifySlope = slope(lastHalf.map((s) => ({ t: s.t, y: s.shopify })));
    const meliSlope = slope(lastHalf.map((s) => ({ t: s.t, y: s.meli })));
    const shopifyAll = lag.find((w) => w.channel === "shopify" && w.index === -1);
    const shopifyArrivalPerS = (shopifyAll?.changes ?? 0) / publishSeconds;
    const writes = writesPerSale(writesBefore, writesAfter, sales.length);
    const thousands = sales.length / 1000;
    const pgCpu = servers.used("postgres", (pid) => pid !== probePid);
    const pgServiceCpu = servers.used("postgres", (pid) => serviceBackends.has(pid));
    const rabbitCpu = servers.used("beam.smp");
    const pgProcesses = servers.processes("postgres");

    // MeLi: a write (PUT) carries every pending change of one listing (coalescing), and a claim
    // takes the listings with the oldest pending changes first, so a change waits at most about one
    // pass over the listings with sales: their number / the writes per second MELI_RATE_PER_SEC allows.
    const meliPuts = meliAfter.puts - meliBefore.puts;
    // Over the stream's second half: past the cold lookups, while sales still arrive.
    const meliSteadyPutsPerS = meliHalf && publishSeconds > meliHalf.t
      ? (meliPutsAtPublishEnd - meliHalf.puts) / (publishSeconds - meliHalf.t)
      : meliPuts / windowSeconds;
    const meliListings = new Set(
      sales.filter((s) => s.tienda_id === meliStore).flatMap((s) => s.items.map((i) => i.producto_sku)),
    ).size;
    const meliListingsPut = Object.entries(meliAfter.putsByListing)
      .reduce((n, [k, v]) => n + v - (meliBefore.putsByListing[k] ?? 0), 0);
    const meliPassS = meliListings / meliSteadyPutsPerS;
    // The bound on a change's lag, counted in MeLi writes (docs/BENCHMARKS.md derives it). The change may be
    // created just after its listing was claimed. Until MeLi answers for the listing again, MeLi receives at
    // most: the batches in flight then (DISPATCH_LANES of them, the listing's among them), one write for each
    // other listing with sales (a listing claimed after the change was due before it, and is not due again
    // before it), the listing's own write, and what the other lanes' batches write meanwhile (DISPATCH_LANES − 1
    // of them, as long as no batch stalls for longer than another lane's whole batch): listings + (2 × lanes − 1)
    // × batch. Counted from the change's creation (custody), so custody's own delay is not in it. In seconds, at
    // the second half's rate.
    const meliBatch = config.MELI_MODE === "delta" ? 1 : config.MELI_BATCH_SIZE; // as the channel claims
    const meliWritesBound = meliListings + (2 * config.DISPATCH_LANES - 1) * meliBatch;
    const meliLagBoundS = meliWritesBound / meliSteadyPutsPerS;
    meliPutTimes.sort((a, b) => a - b);
    const meliWrites = await meliWritesBeforeApplied(
      probe,
      meliPutTimes,
      new Date(firstPublish.getTime() + publishSeconds / 2 * 1000),
    );
    const meliApplied = lag.find((w) => w.channel === "mercadolibre" && w.index === -1)?.applied ?? 0;
    const lastHalfFrom = Math.floor(publishSeconds / 2 / LAG_WINDOW_S);
    const meliLastHalf = lag.filter((w) => w.channel === "mercadolibre" && w.index >= lastHalfFrom);
    // A window whose changes are all still open has no applied lag (NaN): the oldest open change covers it.
    const meliLagMaxLastHalf = Math.max(
      ...meliLastHalf.map((w) => w.max).filter(Number.isFinite),
      meliOldestOpen,
    );
    const shopifyLag = lagFigures(lag, "shopify", "shopify", LAG_WINDOW_S, publishSeconds);
    const custodyRatio = ctx.results.custody?.ratio_to_broker;

    const result: SectionResult = {
      sales: sales.length,
      target_rate_per_s: rate,
      achieved_publish_rate_per_s: round(sales.length / publishSeconds, 0),
      seconds: round(publishSeconds),
      custody_done_after_s: round(custodySeconds),
      peak_queue_depth: peakDepth,
      rss_idle_mib: round(idle.rss),
      rss_peak_during_mib: round(peakDuring),
      rss_high_water_mib: round(end.hwm),
      rss_end_mib: round(end.rss),
      // CPU the service process used from the first publish until custody was done (1.0 s/s = one core).
      service_cpu_s: round(cpuUsed),
      service_cpu_cores: round(cpuUsed / custodySeconds, 2),
      // "t s: MiB" every 5 s, as one string (results are flat).
      rss_timeline_mib: samples.filter((_, i) => i % 10 === 0).map((s) =>
        `${round(s.t, 0)}s:${round(s.rss, 0)}`
      )
        .join(" "),
      // "t s: [heap]/other anonymous/file-backed MiB" every 5 s (see `splits`), and the largest [heap].
      rss_split_timeline_heap_anon_file_mib: splits.map((s) =>
        `${round(s.t, 0)}s:${round(s.heap, 0)}/${round(s.anon, 0)}/${round(s.file, 0)}`
      ).join(" "),
      malloc_heap_peak_mib: round(Math.max(0, ...splits.map((s) => s.heap))),

      // Lag, sale (the event's timestamp, set as it is published) → stock_change.applied_at, per change.
      ...shopifyLag,
      shopify_open_after_drain: shopifyOpen,
      shopify_drained_after_s: shopifyOpen === 0 ? round(windowSeconds) : "not within " + DRAIN_S + " s",
      ...lagFigures(lag, "mercadolibre", "meli", LAG_WINDOW_S, publishSeconds),
      meli_oldest_open_age_s: round(meliOldestOpen),

      // Backlog: changes pending or sending, sampled every 0.5 s; shown every 30 s.
      shopify_backlog_timeline: backlogTimeline(samples, "shopify", publishSeconds),
      meli_backlog_timeline: backlogTimeline(samples, "meli", publishSeconds),
      shopify_backlog_peak: Math.max(0, ...during.map((s) => s.shopify)),
      shopify_backlog_slope_last_half_per_s: round(shopifySlope),
      meli_backlog_slope_last_half_per_s: round(meliSlope),
      shopify_changes_arriving_per_s: round(shopifyArrivalPerS, 0),
      meli_backlog_at_end: samples.at(-1)?.meli ?? NaN,

      // What bounds MeLi.
      meli_rate_per_s: o.meliRate,
      meli_requests_per_s: round((meliAfter.requests - meliBefore.requests) / windowSeconds),
      meli_rate_limited: meliAfter.rateLimited - meliBefore.rateLimited,
      meli_puts: meliPuts,
      meli_puts_per_s: round(meliPuts / windowSeconds),
      meli_puts_per_s_last_half: round(meliSteadyPutsPerS),
      meli_listings_per_put: round(meliListingsPut / Math.max(1, meliPuts)),
      meli_changes_per_put: round(meliApplied / Math.max(1, meliPuts)),
      meli_listings_sold: meliListings,
      meli_pass_s: round(meliPassS, 1),
      meli_lag_bound_s: round(meliLagBoundS, 1),
      meli_lag_max_last_half_s: round(meliLagMaxLastHalf, 1),
      meli_writes_bound: meliWritesBound,
      meli_writes_before_applied_max_last_half: meliWrites.max,
      meli_writes_max_seen_at_lag_s: round(meliWrites.lagS, 1),
      meli_changes_checked_last_half: meliWrites.checked,
      meli_puts_logged: meliPutTimes.length,

      // Cost per sale over the cost window (first publish → Shopify drained), ledger and servers.
      cost_window_s: round(windowSeconds),
      ledger_rows_written_per_sale: round(writes.total),
      ledger_rows_by_table_per_sale: writes.byTable,
      wal_bytes_per_sale: round(walPerSale, 0),
      service_cpu_s_per_1000_sales: round(serviceCpuWindow / thousands, 3),
      postgres_cpu_s_per_1000_sales: round(pgCpu / thousands, 3),
      postgres_service_backends_cpu_s_per_1000_sales: round(pgServiceCpu / thousands, 3),
      rabbitmq_cpu_s_per_1000_sales: round(rabbitCpu / thousands, 3),
      postgres_processes_seen_exited: `${pgProcesses.seen}/${pgProcesses.exited}`,
      postgres_service_backends: serviceBackends.size,

      ...Object.fromEntries(
        (await sql<{ channel: string; status: string; n: number }[]>`
          select channel, status, count(*)::int as n from stock_change group by 1, 2 order by 1, 2`)
          .map((c) => [`changes_${c.channel}_${c.status}`, c.n]),
      ),
      runtime,
      ...(custodyRatio === undefined ? {} : { custody_ratio_to_broker_same_run: custodyRatio }),
      target_rss_idle_le_100_mib: idle.rss <= 100,
      target_rss_le_128_mib: end.hwm <= 128,
      target_shopify_lag_p99_le_2_s: Number(shopifyLag.shopify_lag_p99_worst_window_s) <= 2 &&
        shopifyOpen === 0,
      // "Does not grow": over the last half it rises by less than 1 % of what arrives per second.
      target_shopify_backlog_not_growing: shopifySlope <= 0.01 * shopifyArrivalPerS,
      target_meli_lag_within_bound: meliLagMaxLastHalf <= meliLagBoundS,
      // The bound itself, free of the rate's ups and downs: no change waited for more writes than it allows.
      target_meli_writes_within_bound: meliWrites.checked > 0 && meliWrites.max <= meliWritesBound,
    };
    log(
      `sustained: ${result.achieved_publish_rate_per_s} sales/s for ${result.seconds} s; custody done after ` +
        `${result.custody_done_after_s} s (peak queue ${peakDepth}); RSS idle ${result.rss_idle_mib} MiB, ` +
        `peak ${result.rss_high_water_mib} MiB; Shopify lag p99 ${result.shopify_lag_p99_s} s ` +
        `(worst window ${result.shopify_lag_p99_worst_window_s} s)`,
    );
    return result;
  },
};

/** Service variables from BENCH_SERVICE_ENV (a JSON object of strings), for experiments; none when unset. */
function serviceOverrides(): Record<string, string> {
  const text = Deno.env.get("BENCH_SERVICE_ENV");
  if (!text) return {};
  const parsed: unknown = JSON.parse(text);
  if (
    typeof parsed !== "object" || parsed === null || Array.isArray(parsed) ||
    !Object.values(parsed).every((v) => typeof v === "string")
  ) {
    throw new Error(`BENCH_SERVICE_ENV must be a JSON object of strings, got ${text}`);
  }
  return parsed as Record<string, string>;
}
