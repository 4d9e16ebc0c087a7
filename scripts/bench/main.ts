/**
 * Throughput benchmark against the real RabbitMQ and Postgres on loopback.
 *
 *   deno task bench [--events N] [--concurrency N] [--prefetch N] [--batch N]
 *                   [--batch-wait DURATION] [--pool N] [--log-level LEVEL] [--seed N]
 *                   [--dispatch] [--sections LIST] … (see {@link USAGE})
 *
 * Sections, run in order in ONE process:
 *
 * 0. `machine`: CPUs, Postgres version, and how busy the machine already is
 *    (other work on the same cores lowers every rate; a warning is printed).
 * 1. `broker`: the raw broker rate. N events are published to a scratch durable
 *    queue, then a bare rabbitmq-client consumer with the service's concurrency
 *    and prefetch acks each one and does nothing else; msgs/s from consumer
 *    start to the N-th ack.
 * 2. `custody`: the same N events published to a fresh exchange/queue of a
 *    service instance that is not consuming yet; then `startService` is called
 *    and timed until `events_acked_total` reaches N (the ledger count is checked
 *    afterwards). Also reports the mean custody batch size and the peak RSS of
 *    this process, sampled every 100 ms, and the WAL written per event. The
 *    marketplace dispatcher is off (DISPATCH_ENABLED=false) unless --dispatch.
 *
 * Both sections see the same bytes, envelope and client-library behaviour
 * ({@link keepRawBodies} is installed up front, as the service does), so the
 * ratio custody/broker is the cost of decoding, validating and writing the
 * ledger. Later scenarios (e.g. marketplace sync throughput) are added as
 * further {@link Section}s in {@link SECTIONS}: `shopify` and `naive`
 * (scripts/bench/shopify.ts), `meli` (scripts/bench/meli.ts), `sustained`
 * (scripts/bench/sustained.ts), `idle` (scripts/bench/idle.ts), `resync` (scripts/bench/resync.ts); `machine` is scripts/bench/machine.ts, `broker`
 * and `custody` scripts/bench/custody.ts. This file is the command line and the
 * runner; what the sections share is scripts/bench/harness.ts, and the sections
 * import only that.
 *
 * Human-readable output goes to stdout, progress to stderr, and the last stdout
 * line is one JSON object with every figure. Every name is unique per run and
 * removed at the end (also on Ctrl-C). Uses BENCH_RABBITMQ_URL,
 * BENCH_DATABASE_URL and BENCH_REDIS_URL, defaulting to the loopback servers
 * and the `test` database.
 */
import { parseArgs } from "node:util";
import { Connection } from "rabbitmq-client";
import { keepRawBodies } from "../../src/broker/raw_body.ts";
import { ConfigError, loadConfig, parseDurationMs } from "../../src/config.ts";
import { setupLogging } from "../../src/log.ts";
import {
  type BenchContext,
  type BenchOptions,
  buildMessages,
  LOG_LEVELS,
  type LogLevel,
  PLAN_BUCKETS,
  progress,
  RABBITMQ_URL,
  type Section,
  type SectionResult,
} from "./harness.ts";
import { machineSection } from "./machine.ts";
import { MIGRATIONS } from "../../src/ledger/migrations.ts";
import { brokerSection, type CustodyRound, custodySection, ledgerSection, medianRound } from "./custody.ts";
import { naiveSection, shopifyBurstSection } from "./shopify.ts";
import { meliBurstSection } from "./meli.ts";
import { sustainedSection } from "./sustained.ts";
import { idleSection } from "./idle.ts";
import { resyncSection } from "./resync.ts";

/** The service's own defaults, so the benchmark follows them when they change. */
const SERVICE_DEFAULTS = loadConfig({});

/** Section ids in run order (must match {@link SECTIONS}); the default of --sections. */
const SECTION_IDS: readonly string[] = [
  "machine",
  "broker",
  "custody",
  "ledger",
  "shopify",
  "naive",
  "meli",
  "idle",
  "sustained",
  "resync",
];

// ---------------------------------------------------------------------------
// Options

/** A bad command line; the message names the option and the value. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Usage text for `--help`. */
export const USAGE = `usage: deno task bench [options]

Measures the raw RabbitMQ consume rate and the service's custody rate on this
machine, in one run. Progress goes to stderr; the last stdout line is JSON.

options:
  --events N             events in the broker and custody sections (default 50000; 1..1000000)
  --concurrency N        CONSUMER_CONCURRENCY, also used by the bare consumer
                         (default ${SERVICE_DEFAULTS.CONSUMER_CONCURRENCY}; 1..5000)
  --prefetch N           PREFETCH for both consumers (default: 2 × concurrency, as the service; 1..65535)
  --batch N              CUSTODY_BATCH_SIZE (default ${SERVICE_DEFAULTS.CUSTODY_BATCH_SIZE}; 1..5000)
  --batch-wait DURATION  CUSTODY_BATCH_WAIT, e.g. 5ms or 20 (default ${SERVICE_DEFAULTS.CUSTODY_BATCH_WAIT}ms)
  --writers N            CUSTODY_WRITERS (default ${SERVICE_DEFAULTS.CUSTODY_WRITERS}; 1..64)
  --pool N               DATABASE_POOL_SIZE (default ${SERVICE_DEFAULTS.DATABASE_POOL_SIZE}; 1..100)
  --log-level LEVEL      service LOG_LEVEL: ${LOG_LEVELS.join(", ")} (default warning)
  --seed N               seed for the sample events (default 7)
  --rounds N             when both broker and custody run: that many interleaved rounds of the two
                         (broker, custody, broker, custody, …); the round with the median custody/raw
                         is reported, with every round's figures (default 3; 1..15)
  --sections LIST        comma-separated sections to run (default: all):
                         machine,broker,custody,ledger,shopify,naive,meli,idle,sustained,resync
  --shopify-sales N      Shopify burst: sales (default 20000)
  --shopify-skus N       Shopify burst: SKUs (default 500)
  --shopify-stores N     Shopify burst: stores (default 5)
  --naive-seconds N      how long the naive baseline runs (default 30)
  --plan NAME            Shopify plan's rate limit the Shopify sandbox enforces in every section: standard
                         (100 points/s), advanced (200), plus (1000), enterprise (2000); default standard
  --latency MS           latency the marketplace sandboxes add to every request (default 0)
  --meli-sales N         MeLi burst: sales (default: --shopify-sales)
  --meli-skus N          MeLi burst: SKUs (default: --shopify-skus; stores: --shopify-stores).
                         ~3 requests per SKU cold, 1 warm: at 5 req/s ~7.5 min for 500 SKUs
  --meli-rate N          MeLi burst: MELI_RATE_PER_SEC (default ${SERVICE_DEFAULTS.MELI_RATE_PER_SEC});
                         the sandbox's own limit is twice that
  --idle-seconds N       idle: how long the service rests after start-up before its memory is read
                         again (default 45; 4..3600); no load, its RSS split by kind and mapping
  --sustained-rate N     sustained stream: sales per second (default 1000)
  --sustained-seconds N  sustained stream: how long (default 60); the service runs as its own
                         process with its derived permissions, its RSS sampled from /proc
  --resync-skus N[,N…]   resync of the whole catalog: SKUs (default 10000); several sizes run one
                         after the other, each on a fresh service, so their memory compares
  --resync-stores N      resync: stores, one Shopify location each (default 5)
  --resync-drift PCT     resync: share of the listings drifted behind the service's back before the
                         second dry run and the write (default 5; 0..100). Four jobs per size (dry run,
                         dry run with drift, write, dry run); ~2 min for 10000 × 5 on 2 cores
  --ledger-version N     ledger: migrate the scratch ledger only up to migration N (default: all), to
                         compare what one migration changes in custody's Postgres cost
  --ledger-sql SQL       ledger: run SQL on the scratch ledger after migrating (e.g. "drop index
                         stock_change_sku"), to weigh a change before writing its migration
  --dispatch             keep the marketplace dispatcher (DISPATCH_ENABLED) running
                         during the custody section; off by default so that
                         section measures custody alone
  -h, --help             show this help

environment: BENCH_RABBITMQ_URL, BENCH_DATABASE_URL (default database "test"),
BENCH_REDIS_URL; loopback defaults.`;

function wholeNumber(name: string, value: string | undefined, min: number, max: number): number {
  const text = (value ?? "").trim();
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max} (got "${value ?? ""}")`);
  }
  return n;
}

/**
 * Parses and validates the command line.
 * @throws UsageError naming the first bad option and its value.
 */
export function parseOptions(args: string[]): BenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        events: { type: "string", default: "50000" },
        concurrency: { type: "string", default: String(SERVICE_DEFAULTS.CONSUMER_CONCURRENCY) },
        prefetch: { type: "string" },
        batch: { type: "string", default: String(SERVICE_DEFAULTS.CUSTODY_BATCH_SIZE) },
        "batch-wait": { type: "string", default: String(SERVICE_DEFAULTS.CUSTODY_BATCH_WAIT) },
        writers: { type: "string", default: String(SERVICE_DEFAULTS.CUSTODY_WRITERS) },
        pool: { type: "string", default: String(SERVICE_DEFAULTS.DATABASE_POOL_SIZE) },
        "log-level": { type: "string", default: "warning" },
        seed: { type: "string", default: "7" },
        rounds: { type: "string", default: "3" },
        dispatch: { type: "boolean", default: false },
        sections: { type: "string", default: SECTION_IDS.join(",") },
        "shopify-sales": { type: "string", default: "20000" },
        "shopify-skus": { type: "string", default: "500" },
        "shopify-stores": { type: "string", default: "5" },
        "naive-seconds": { type: "string", default: "30" },
        "meli-sales": { type: "string" },
        "meli-skus": { type: "string" },
        "meli-rate": { type: "string", default: String(SERVICE_DEFAULTS.MELI_RATE_PER_SEC) },
        "idle-seconds": { type: "string", default: "45" },
        "sustained-rate": { type: "string", default: "1000" },
        "sustained-seconds": { type: "string", default: "60" },
        "resync-skus": { type: "string", default: "10000" },
        "resync-stores": { type: "string", default: "5" },
        "resync-drift": { type: "string", default: "5" },
        "ledger-version": { type: "string" },
        "ledger-sql": { type: "string", default: "" },
        plan: { type: "string", default: "standard" },
        latency: { type: "string", default: "0" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    return { ...parseOptions([]), help: true };
  }
  const concurrency = wholeNumber("concurrency", values.concurrency, 1, 5000);
  const batchWaitMs = parseDurationMs(values["batch-wait"] ?? "");
  if (batchWaitMs === undefined || batchWaitMs > 60_000) {
    throw new UsageError(
      `--batch-wait must be a duration up to 1m like 5ms, 20 or 0.5s (got "${values["batch-wait"]}")`,
    );
  }
  const logLevel = values["log-level"] as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")} (got "${logLevel}")`);
  }
  const shopifySales = wholeNumber("shopify-sales", values["shopify-sales"], 1, 1_000_000);
  const shopifySkus = wholeNumber("shopify-skus", values["shopify-skus"], 1, 100_000);
  return {
    events: wholeNumber("events", values.events, 1, 1_000_000),
    concurrency,
    // Same rule as the service (src/config.ts): twice the concurrency unless set.
    prefetch: values.prefetch === undefined
      ? loadConfig({ CONSUMER_CONCURRENCY: String(concurrency) }).prefetch
      : wholeNumber("prefetch", values.prefetch, 1, 65535),
    batch: wholeNumber("batch", values.batch, 1, 5000),
    batchWaitMs,
    writers: wholeNumber("writers", values.writers, 1, 64),
    pool: wholeNumber("pool", values.pool, 1, 100),
    logLevel,
    seed: wholeNumber("seed", values.seed, 1, 2 ** 31 - 1),
    rounds: wholeNumber("rounds", values.rounds, 1, 15),
    dispatch: values.dispatch ?? false,
    sections: (() => {
      const known = SECTION_IDS;
      const list = String(values.sections).split(",").map((x) => x.trim()).filter(Boolean);
      const unknown = list.filter((x) => !known.includes(x));
      if (unknown.length > 0 || list.length === 0) {
        throw new UsageError(`--sections must list some of ${known.join(", ")} (got "${values.sections}")`);
      }
      return list;
    })(),
    shopifySales,
    shopifySkus,
    shopifyStores: wholeNumber("shopify-stores", values["shopify-stores"], 1, 1_000),
    naiveSeconds: wholeNumber("naive-seconds", values["naive-seconds"], 5, 3_600),
    meliSales: values["meli-sales"] === undefined
      ? shopifySales
      : wholeNumber("meli-sales", values["meli-sales"], 1, 1_000_000),
    meliSkus: values["meli-skus"] === undefined
      ? shopifySkus
      : wholeNumber("meli-skus", values["meli-skus"], 1, 100_000),
    meliRate: wholeNumber("meli-rate", values["meli-rate"], 1, 500),
    idleSeconds: wholeNumber("idle-seconds", values["idle-seconds"], 4, 3_600),
    sustainedRate: wholeNumber("sustained-rate", values["sustained-rate"], 1, 100_000),
    sustainedSeconds: wholeNumber("sustained-seconds", values["sustained-seconds"], 1, 3_600),
    resyncSkus: String(values["resync-skus"]).split(",").map((n) =>
      wholeNumber("resync-skus", n, 1, 200_000)
    ),
    resyncStores: wholeNumber("resync-stores", values["resync-stores"], 1, 250),
    ledgerSql: String(values["ledger-sql"]),
    ledgerVersion: values["ledger-version"] === undefined
      ? MIGRATIONS.at(-1)!.version
      : wholeNumber("ledger-version", values["ledger-version"], 1, MIGRATIONS.at(-1)!.version),
    resyncDriftPct: (() => {
      const text = String(values["resync-drift"]).trim();
      const pct = Number(text);
      if (!/^\d+(\.\d+)?$/.test(text) || pct > 100) {
        throw new UsageError(`--resync-drift must be a percentage from 0 to 100 (got "${text}")`);
      }
      return pct;
    })(),
    plan: (() => {
      const plan = String(values.plan);
      if (!Object.keys(PLAN_BUCKETS).includes(plan)) {
        throw new UsageError(`--plan must be one of ${Object.keys(PLAN_BUCKETS).join(", ")} (got "${plan}")`);
      }
      return plan;
    })(),
    latencyMs: wholeNumber("latency", values.latency, 0, 60_000),
    help: false,
  };
}

/** Every section, in the order they run. Add new scenarios here. */
export const SECTIONS: readonly Section[] = [
  machineSection,
  brokerSection,
  custodySection,
  ledgerSection,
  shopifyBurstSection,
  naiveSection,
  meliBurstSection,
  idleSection,
  sustainedSection,
  resyncSection,
];

// ---------------------------------------------------------------------------
// Runner

function printSection(section: Section, result: SectionResult): void {
  console.log(`\n== ${section.title}`);
  const width = Math.max(...Object.keys(result).map((k) => k.length));
  for (const [key, value] of Object.entries(result)) console.log(`  ${key.padEnd(width)}  ${value}`);
}

/**
 * Runs every section in order with shared events and cleanup.
 * @returns results by section id.
 */
export async function runBenchmark(options: BenchOptions): Promise<Record<string, SectionResult>> {
  keepRawBodies();
  // The service's loggers write to stderr so stdout stays the report.
  await setupLogging({
    level: options.logLevel,
    format: "json",
    write: (line) => console.error(line.trimEnd()),
  });
  const cleanups: { what: string; step: () => Promise<unknown> }[] = [];
  const cleanup = async () => {
    while (cleanups.length > 0) {
      const { what, step } = cleanups.pop()!;
      try {
        await step();
      } catch (error) {
        progress(`cleanup: ${what} failed: ${(error as Error).message}`);
      }
    }
  };
  const onSignal = () => {
    progress("interrupted; cleaning up");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);

  const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  cleanups.push({ what: "close the bench connection", step: () => rabbit.close() });
  const results: Record<string, SectionResult> = {};
  try {
    await rabbit.onConnect(5000);
    progress(`building ${options.events} sample events (seed ${options.seed})`);
    const messages = buildMessages(options.events, options.seed);
    const ctx: BenchContext = {
      options,
      messages,
      rabbit,
      results,
      defer: (what, step) => cleanups.push({ what, step }),
    };
    const runSection = async (section: Section): Promise<SectionResult> => {
      const depth = cleanups.length;
      try {
        results[section.id] = await section.run(ctx);
      } finally {
        // Each section's names are removed before the next one starts.
        while (cleanups.length > depth) {
          const { what, step } = cleanups.pop()!;
          await step().catch((error) => progress(`cleanup: ${what} failed: ${(error as Error).message}`));
        }
      }
      printSection(section, results[section.id]);
      return results[section.id];
    };
    // custody/raw compares two rates measured seconds apart on a shared machine, and the raw one alone moved
    // by a fifth between runs: with both sections asked for, they alternate and the median round counts.
    const paired = options.rounds > 1 && options.sections.includes(brokerSection.id) &&
      options.sections.includes(custodySection.id);
    for (const section of SECTIONS.filter((s) => options.sections.includes(s.id))) {
      if (paired && section === custodySection) continue;
      if (!paired || section !== brokerSection) {
        await runSection(section);
        continue;
      }
      const rounds: CustodyRound[] = [];
      for (let round = 1; round <= options.rounds; round++) {
        progress(`broker and custody: round ${round} of ${options.rounds}`);
        const broker = await runSection(brokerSection);
        rounds.push({ broker, custody: await runSection(custodySection) });
      }
      const median = medianRound(rounds);
      results.broker = median.broker;
      results.custody = median.custody;
      printSection({
        ...custodySection,
        title: `${custodySection.title}: the median of ${rounds.length} rounds`,
      }, {
        ...median.custody,
        raw_broker_msgs_per_s: median.broker.msgs_per_s,
      });
    }
  } finally {
    await cleanup();
    Deno.removeSignalListener("SIGINT", onSignal);
  }
  return results;
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(`bench: ${error.message}\n(see --help)`);
      return 2;
    }
    throw error;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  let results: Record<string, SectionResult>;
  try {
    results = await runBenchmark(options);
  } catch (error) {
    console.error(`bench: failed: ${(error as Error).message}`);
    return 1;
  }
  const lines: string[] = [];
  if (results.broker && results.custody) {
    const ratio = Number(results.custody.ratio_to_broker);
    lines.push(
      `raw broker ${results.broker.msgs_per_s} msg/s, custody ${results.custody.msgs_per_s} msg/s, ` +
        `custody/raw ${ratio.toFixed(3)}` +
        (results.custody.rounds === undefined
          ? ""
          : ` (the median of ${results.custody.rounds} interleaved rounds: ${results.custody.ratio_to_broker_per_round})`) +
        ` (target >= 0.5: ${ratio >= 0.5 ? "met" : "NOT met"}; ` +
        `${results.custody.ratio_consuming_to_broker} once the service is up), ` +
        `batch mean ${results.custody.batch_size_mean}, peak RSS ${results.custody.rss_peak_mib} MiB`,
    );
  }
  if (results.shopify) {
    const r = results.shopify;
    lines.push(
      `shopify warm burst ${r.warm_stock_changes_applied_per_s} changes/s = ${r.warm_ratio_to_ceiling} x ceiling ` +
        `(target >= 0.9: ${
          Number(r.warm_ratio_to_ceiling) >= 0.9 ? "met" : "NOT met"
        }), throttled after warm-up ` +
        `${r.throttled_after_warmup_5s}, quantity mismatches ${r.quantity_mismatches}; at ` +
        `${r.trickle_sales_per_s} sales/s custody→applied p50 ${r.trickle_latency_p50_s} s, p99 ${r.trickle_latency_p99_s} s`,
    );
  }
  if (results.naive) {
    lines.push(
      `naive baseline ${results.naive.steady_items_per_s} items/s; it needs ${results.naive.calls_ratio_naive_to_service_cold}x (cold) / ${results.naive.calls_ratio_naive_to_service_warm}x (warm) the service's calls`,
    );
  }
  if (results.idle) {
    const r = results.idle;
    lines.push(
      `idle service RSS ${r.after_3s_rss_mib} MiB 3 s after ready (target <= 100: ${
        r.target_rss_idle_le_100_mib ? "met" : "NOT met"
      }; anon ${r.after_3s_anon_mib}, file ${r.after_3s_file_mib}), ${r.rest_rss_mib} MiB after ${r.rest_seconds} s`,
    );
  }
  if (results.sustained) {
    const r = results.sustained;
    lines.push(
      `sustained ${r.achieved_publish_rate_per_s} sales/s for ${r.seconds} s: service RSS idle ${r.rss_idle_mib} MiB, ` +
        `peak ${r.rss_high_water_mib} MiB (target <= 128: ${r.target_rss_le_128_mib ? "met" : "NOT met"}); ` +
        `custody done ${r.custody_done_after_s} s after the start, peak queue depth ${r.peak_queue_depth}`,
    );
    lines.push(
      `sustained lag sale→applied: Shopify p99 ${r.shopify_lag_p99_s} s, worst 30 s window ${r.shopify_lag_p99_worst_window_s} s ` +
        `(target <= 2: ${
          r.target_shopify_lag_p99_le_2_s ? "met" : "NOT met"
        }), backlog slope over the last half ` +
        `${r.shopify_backlog_slope_last_half_per_s}/s (not growing: ${
          r.target_shopify_backlog_not_growing ? "met" : "NOT met"
        }); MeLi ${r.meli_puts_per_s_last_half} writes/s × ${r.meli_changes_per_put} changes/write, lag max ` +
        `${r.meli_lag_max_last_half_s} s in the last half against its bound ${r.meli_lag_bound_s} s (a pass over ` +
        `${r.meli_listings_sold} listings ${r.meli_pass_s} s + the batches in flight and the rest of its own: ${
          r.target_meli_lag_within_bound ? "met" : "NOT met"
        }), at most ${r.meli_writes_before_applied_max_last_half} MeLi writes between a sale and its change ` +
        `applied against the bound ${r.meli_writes_bound} (${
          r.target_meli_writes_within_bound ? "met" : "NOT met"
        }); per sale ${r.ledger_rows_written_per_sale} ledger rows, ${r.wal_bytes_per_sale} WAL bytes; ` +
        `CPU-s per 1 000 sales: service ${r.service_cpu_s_per_1000_sales}, Postgres ${r.postgres_cpu_s_per_1000_sales} ` +
        `(its backends ${r.postgres_service_backends_cpu_s_per_1000_sales}), RabbitMQ ${r.rabbitmq_cpu_s_per_1000_sales}` +
        (r.custody_ratio_to_broker_same_run === undefined
          ? ""
          : `; custody/raw in this run ${r.custody_ratio_to_broker_same_run} (issue #15: >= 0.6)`),
    );
  }
  if (results.meli) {
    const r = results.meli;
    lines.push(
      `meli warm burst at ${r.rate_per_s} req/s: ${r.warm_puts} PUTs for ${r.warm_listings_touched} listings ` +
        `(${r.warm_puts_per_listing}/listing, max ${r.warm_puts_per_listing_max}, ${r.warm_repeat_puts} repeats ` +
        `on listings claimed during ingest; target PUTs <= listings per window: ${
          r.target_puts_le_listings_per_window ? "met" : "NOT met"
        }), 429 after warm-up ${r.rate_limited_after_warmup} (target 0: ${
          Number(r.rate_limited_after_warmup) === 0 ? "met" : "NOT met"
        }), ${r.warm_requests_per_s_busy} req/s; converged ${r.warm_converge_after_publish_s} s after the last ` +
        `publish (cold ${r.cold_converge_after_publish_s} s, ${r.cold_requests} requests), quantity mismatches ` +
        `${r.quantity_mismatches}`,
    );
  }
  if (results.resync) {
    const r = results.resync;
    for (const skus of options.resyncSkus) {
      const f = (key: string) => r[`${skus}x${options.resyncStores}_${key}`];
      lines.push(
        `resync all ${skus}×${options.resyncStores} (${options.plan}): dry run ${f("clean_wall_s")} s ` +
          `(${f("clean_points")} points); ${f("drifted_listings")} drifted: dry run ${
            f("drifted_wall_s")
          } s, ` +
          `write ${f("write_wall_s")} s (${f("write_points")} points, ${
            f("write_points_per_written")
          }/listing ` +
          `written, the budget alone ${f("write_budget_bound_s")} s), then ${
            f("after_drift_found")
          } drift; ` +
          `service RSS idle ${f("rss_idle_mib")} MiB, high-water ${f("rss_high_water_mib")} MiB; checks ${
            f("checks")
          }`,
      );
    }
  }
  console.log("\n" + lines.join("\n"));
  console.log(JSON.stringify({
    bench: "marketplace-sync",
    time: new Date().toISOString(),
    deno: Deno.version.deno,
    cpus: navigator.hardwareConcurrency,
    options,
    sections: results,
  }));
  return 0;
}

if (import.meta.main) Deno.exit(await main());
