/**
 * Throughput benchmark against the real RabbitMQ and Postgres on loopback.
 *
 *   deno task bench [--events N] [--concurrency N] [--prefetch N] [--batch N]
 *                   [--batch-wait DURATION] [--pool N] [--log-level LEVEL] [--seed N]
 *                   [--dispatch]
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
 * (scripts/bench_shopify.ts), `meli` (scripts/bench_meli.ts).
 *
 * Human-readable output goes to stdout, progress to stderr, and the last stdout
 * line is one JSON object with every figure. Every name is unique per run and
 * removed at the end (also on Ctrl-C). Uses BENCH_RABBITMQ_URL,
 * BENCH_DATABASE_URL and BENCH_REDIS_URL, defaulting to the loopback servers
 * and the `test` database.
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import { parseArgs } from "node:util";
import { type AsyncMessage, Connection } from "rabbitmq-client";
import postgres from "postgres";
import { keepRawBodies } from "../src/broker/raw_body.ts";
import { declareTopology, type Topology, topologyFromConfig } from "../src/broker/topology.ts";
import { type Config, ConfigError, loadConfig, parseDurationMs } from "../src/config.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { setupLogging } from "../src/log.ts";
import { type RunningService, startService } from "../src/main.ts";
import { type ServiceMetrics } from "../src/metrics.ts";
import { sampleSales } from "./publish_sample.ts";
import { naiveSection, PLAN_BUCKETS, shopifyBurstSection } from "./bench_shopify.ts";
import { meliBurstSection } from "./bench_meli.ts";
import { sustainedSection } from "./bench_sustained.ts";
import { benchServiceEnv, DATABASE_URL, RABBITMQ_URL } from "./bench_support.ts";

/** The service's own defaults, so the benchmark follows them when they change. */
const SERVICE_DEFAULTS = loadConfig({});

const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;
/** Section ids in run order (must match {@link SECTIONS}); the default of --sections. */
const SECTION_IDS: readonly string[] = [
  "machine",
  "broker",
  "custody",
  "shopify",
  "naive",
  "meli",
  "sustained",
];
type LogLevel = typeof LOG_LEVELS[number];

// ---------------------------------------------------------------------------
// Options

/** Validated command-line options. */
export interface BenchOptions {
  /** Events per section. */
  events: number;
  /** CONSUMER_CONCURRENCY of the service, and the bare consumer's concurrency. */
  concurrency: number;
  /** Prefetch of both consumers (the service's rule: defaults to concurrency). */
  prefetch: number;
  /** CUSTODY_BATCH_SIZE. */
  batch: number;
  /** CUSTODY_BATCH_WAIT in milliseconds. */
  batchWaitMs: number;
  /** CUSTODY_WRITERS. */
  writers: number;
  /** DATABASE_POOL_SIZE. */
  pool: number;
  /** LOG_LEVEL of the service under test (log lines go to stderr). */
  logLevel: LogLevel;
  /** Seed for {@link sampleSales}. */
  seed: number;
  /** Keep the marketplace dispatcher running during the custody section (DISPATCH_ENABLED). */
  dispatch: boolean;
  /** Sections to run, by id (default: all). */
  sections: string[];
  /** Shopify burst: sales, SKUs and stores. */
  shopifySales: number;
  shopifySkus: number;
  shopifyStores: number;
  /** How long the naive baseline runs before its rate is extrapolated. */
  naiveSeconds: number;
  /** MeLi burst: sales and SKUs (default: the Shopify burst's), and MELI_RATE_PER_SEC. */
  meliSales: number;
  meliSkus: number;
  meliRate: number;
  /** Sustained stream: sales per second and seconds. */
  sustainedRate: number;
  sustainedSeconds: number;
  /** Shopify plan whose rate limit the sandbox enforces (standard, advanced, plus, enterprise). */
  plan: string;
  /** Latency the marketplace sandboxes add to every request, in ms. */
  latencyMs: number;
  help: boolean;
}

/** A bad command line; the message names the option and the value. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Usage text for `--help`. */
export const USAGE = `usage: deno task bench [options]

Measures the raw RabbitMQ consume rate and the service's custody rate on this
machine, in one run. Progress goes to stderr; the last stdout line is JSON.

options:
  --events N             events per section (default 20000; 1..1000000)
  --concurrency N        CONSUMER_CONCURRENCY, also used by the bare consumer
                         (default ${SERVICE_DEFAULTS.CONSUMER_CONCURRENCY}; 1..5000)
  --prefetch N           PREFETCH for both consumers (default: 2 × concurrency, as the service; 1..65535)
  --batch N              CUSTODY_BATCH_SIZE (default ${SERVICE_DEFAULTS.CUSTODY_BATCH_SIZE}; 1..5000)
  --batch-wait DURATION  CUSTODY_BATCH_WAIT, e.g. 5ms or 20 (default ${SERVICE_DEFAULTS.CUSTODY_BATCH_WAIT}ms)
  --writers N            CUSTODY_WRITERS (default ${SERVICE_DEFAULTS.CUSTODY_WRITERS}; 1..64)
  --pool N               DATABASE_POOL_SIZE (default ${SERVICE_DEFAULTS.DATABASE_POOL_SIZE}; 1..100)
  --log-level LEVEL      service LOG_LEVEL: ${LOG_LEVELS.join(", ")} (default warning)
  --seed N               seed for the sample events (default 7)
  --sections LIST        comma-separated sections to run (default: all):
                         machine,broker,custody,shopify,naive,meli,sustained
  --shopify-sales N      Shopify burst: sales (default 20000)
  --shopify-skus N       Shopify burst: SKUs (default 500)
  --shopify-stores N     Shopify burst: stores (default 5)
  --naive-seconds N      how long the naive baseline runs (default 30)
  --plan NAME            Shopify plan's rate limit for the shopify and naive sections: standard
                         (100 points/s), advanced (200), plus (1000), enterprise (2000); default standard
  --latency MS           latency the marketplace sandboxes add to every request (default 0)
  --meli-sales N         MeLi burst: sales (default: --shopify-sales)
  --meli-skus N          MeLi burst: SKUs (default: --shopify-skus; stores: --shopify-stores).
                         ~3 requests per SKU cold, 1 warm: at 5 req/s ~7.5 min for 500 SKUs
  --meli-rate N          MeLi burst: MELI_RATE_PER_SEC (default ${SERVICE_DEFAULTS.MELI_RATE_PER_SEC});
                         the sandbox's own limit is twice that
  --sustained-rate N     sustained stream: sales per second (default 1000)
  --sustained-seconds N  sustained stream: how long (default 60); the service runs as its own
                         process with its derived permissions, its RSS sampled from /proc
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
        events: { type: "string", default: "20000" },
        concurrency: { type: "string", default: String(SERVICE_DEFAULTS.CONSUMER_CONCURRENCY) },
        prefetch: { type: "string" },
        batch: { type: "string", default: String(SERVICE_DEFAULTS.CUSTODY_BATCH_SIZE) },
        "batch-wait": { type: "string", default: String(SERVICE_DEFAULTS.CUSTODY_BATCH_WAIT) },
        writers: { type: "string", default: String(SERVICE_DEFAULTS.CUSTODY_WRITERS) },
        pool: { type: "string", default: String(SERVICE_DEFAULTS.DATABASE_POOL_SIZE) },
        "log-level": { type: "string", default: "warning" },
        seed: { type: "string", default: "7" },
        dispatch: { type: "boolean", default: false },
        sections: { type: "string", default: SECTION_IDS.join(",") },
        "shopify-sales": { type: "string", default: "20000" },
        "shopify-skus": { type: "string", default: "500" },
        "shopify-stores": { type: "string", default: "5" },
        "naive-seconds": { type: "string", default: "30" },
        "meli-sales": { type: "string" },
        "meli-skus": { type: "string" },
        "meli-rate": { type: "string", default: String(SERVICE_DEFAULTS.MELI_RATE_PER_SEC) },
        "sustained-rate": { type: "string", default: "1000" },
        "sustained-seconds": { type: "string", default: "60" },
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
    sustainedRate: wholeNumber("sustained-rate", values["sustained-rate"], 1, 100_000),
    sustainedSeconds: wholeNumber("sustained-seconds", values["sustained-seconds"], 1, 3_600),
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

// ---------------------------------------------------------------------------
// Shared helpers

/** One message as both sections publish it. */
export interface BenchMessage {
  messageId: string;
  body: Buffer;
}

/** What every section gets. */
export interface BenchContext {
  options: BenchOptions;
  /** The same realistic events for every section (messageId = event_id). */
  messages: readonly BenchMessage[];
  /** A connection for publishing, declaring and deleting. */
  rabbit: Connection;
  /** Registers a cleanup step; they run last-in first-out at the end or on Ctrl-C. */
  defer(what: string, step: () => Promise<unknown>): void;
  /** Results of the sections that ran before, by section id. */
  results: Record<string, SectionResult>;
}

/** Figures a section reports: printed as a table and put in the JSON line. */
export type SectionResult = Record<string, number | string | boolean>;

/** One benchmark scenario. */
export interface Section {
  id: string;
  title: string;
  run(ctx: BenchContext): Promise<SectionResult>;
}

function progress(text: string): void {
  console.error(`[bench] ${text}`);
}

function uniqueSuffix(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 10);
}

const round = (n: number, digits = 0) => Number(n.toFixed(digits));

/** Builds the realistic events once, as encoded Buffers with their message ids. */
export function buildMessages(count: number, seed: number): BenchMessage[] {
  return sampleSales({ count, stores: 3, skus: 20, maxItems: 3, seed }).map((sale) => ({
    messageId: sale.event_id,
    // A Buffer: rabbitmq-client JSON-encodes anything that is not a Buffer or a string.
    body: Buffer.from(JSON.stringify(sale)),
  }));
}

/**
 * Publishes every message with publisher confirms (a window of 1000 unconfirmed).
 * @returns publish rate in messages per second.
 */
export async function publishAll(
  rabbit: Connection,
  target: { exchange: string; routingKey: string },
  messages: readonly BenchMessage[],
): Promise<number> {
  const publisher = rabbit.createPublisher({ confirm: true, maxAttempts: 3 });
  const started = performance.now();
  try {
    const window: Promise<void>[] = [];
    for (const [i, m] of messages.entries()) {
      window.push(publisher.send({
        exchange: target.exchange,
        routingKey: target.routingKey,
        contentType: "application/json",
        durable: true,
        messageId: m.messageId,
      }, m.body));
      if (window.length >= 1000) await Promise.all(window.splice(0));
      if ((i + 1) % 10_000 === 0) progress(`published ${i + 1}/${messages.length}`);
    }
    await Promise.all(window);
  } finally {
    await publisher.close();
  }
  return messages.length / ((performance.now() - started) / 1000);
}

/** Messages ready in a queue (passive declare). */
async function queueDepth(rabbit: Connection, queue: string): Promise<number> {
  return (await rabbit.queueDeclare({ queue, passive: true })).messageCount;
}

/** Waits until `done()` is true; fails if `progressOf()` stalls for `stallMs`. */
async function waitUntil(
  what: string,
  done: () => Promise<boolean> | boolean,
  progressOf: () => Promise<number> | number,
  options: { intervalMs: number; stallMs: number },
): Promise<void> {
  let last = -1;
  let lastChange = performance.now();
  let lastReport = performance.now();
  while (!(await done())) {
    const now = performance.now();
    const current = await progressOf();
    if (current !== last) {
      last = current;
      lastChange = now;
    } else if (now - lastChange > options.stallMs) {
      throw new Error(`${what}: no progress for ${options.stallMs} ms (stuck at ${current})`);
    }
    if (now - lastReport > 2000) {
      progress(`${what}: ${current}`);
      lastReport = now;
    }
    await new Promise((r) => setTimeout(r, options.intervalMs));
  }
}

/** Samples `Deno.memoryUsage().rss` every `intervalMs` until stopped. */
export function sampleRss(intervalMs = 100): { stop(): { peak: number; start: number } } {
  const start = Deno.memoryUsage().rss;
  let peak = start;
  const timer = setInterval(() => {
    peak = Math.max(peak, Deno.memoryUsage().rss);
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, Deno.memoryUsage().rss);
      return { peak, start };
    },
  };
}

/** Busy share of all CPUs (0..100) from /proc/stat; undefined where there is none. */
function readCpuTimes(): { busy: number; total: number } | undefined {
  try {
    const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(
      Number,
    );
    const idle = fields[3] + (fields[4] ?? 0);
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/**
 * Measures CPU use over a phase: the whole machine's busy share (100 = every
 * core busy) and this process's CPU as a share of one core.
 */
export function cpuMeter(): { stop(): { machineBusyPct: number; processPct: number } } {
  const machine = readCpuTimes();
  const self = process.cpuUsage();
  const started = performance.now();
  return {
    stop() {
      const now = readCpuTimes();
      const used = process.cpuUsage(self);
      const wallUs = (performance.now() - started) * 1000;
      return {
        machineBusyPct: machine && now
          ? round(100 * (now.busy - machine.busy) / (now.total - machine.total), 0)
          : NaN,
        processPct: round(100 * (used.user + used.system) / wallUs, 0),
      };
    },
  };
}

async function counterTotal(metric: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function ackedByOutcome(metrics: ServiceMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.eventsAcked.get()).values) out[String(v.labels.outcome)] = v.value;
  return out;
}

async function histogramMean(
  metric: ServiceMetrics["custodyBatchSize"] | ServiceMetrics["custodyBatchSeconds"],
): Promise<{ mean: number; count: number }> {
  const values = (await metric.get()).values;
  const sum = values.find((v) => v.metricName?.endsWith("_sum"))?.value ?? 0;
  const count = values.find((v) => v.metricName?.endsWith("_count"))?.value ?? 0;
  return { mean: count === 0 ? 0 : sum / count, count };
}

// ---------------------------------------------------------------------------
// Section 0: the machine

/** Busy share of the machine over `ms` while the benchmark does nothing. */
async function backgroundBusyPct(ms: number): Promise<number> {
  const meter = cpuMeter();
  await new Promise((r) => setTimeout(r, ms));
  return meter.stop().machineBusyPct;
}

/**
 * What the figures were measured on, including how busy the machine already
 * was: other work on the same cores lowers every rate below.
 */
export const machineSection: Section = {
  id: "machine",
  title: "Machine",
  async run() {
    const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    let postgresVersion = "unknown";
    try {
      [{ server_version: postgresVersion }] = await sql<{ server_version: string }[]>`show server_version`;
    } finally {
      await sql.end({ timeout: 5 });
    }
    const busy = await backgroundBusyPct(1000);
    if (busy > 10) {
      progress(
        `WARNING: the machine is already ${busy}% busy before the benchmark; rates will be low and noisy`,
      );
    }
    return {
      cpus: navigator.hardwareConcurrency,
      load_avg_1m: Number(Deno.loadavg()[0].toFixed(2)),
      background_busy_pct: busy,
      deno: Deno.version.deno,
      postgres: postgresVersion,
    };
  },
};

// ---------------------------------------------------------------------------
// Section 1: raw broker rate

/** Raw RabbitMQ rate: a bare consumer that only acks. */
export const brokerSection: Section = {
  id: "broker",
  title: "Raw broker rate (bare rabbitmq-client consumer, ack only)",
  async run({ options, messages, rabbit, defer }) {
    const queue = `bench.raw.${uniqueSuffix()}`;
    // Shaped like the service's work queue (durable classic); the consumer re-declares it.
    const declaration = { queue, durable: true, arguments: { "x-queue-type": "classic" as const } };
    await rabbit.queueDeclare(declaration);
    defer(`delete queue ${queue}`, () => rabbit.queueDelete({ queue }));
    progress(`broker: publishing ${messages.length} events to ${queue}`);
    const publishRate = await publishAll(rabbit, { exchange: "", routingKey: queue }, messages);
    const depth = await queueDepth(rabbit, queue);
    if (depth !== messages.length) {
      throw new Error(`broker: ${depth} messages in ${queue}, expected ${messages.length}`);
    }

    const consumerConnection = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
    defer("close bare consumer connection", () => consumerConnection.close());
    await consumerConnection.onConnect(5000);
    let acked = 0;
    const all = Promise.withResolvers<void>();
    progress(`broker: consuming (concurrency ${options.concurrency}, prefetch ${options.prefetch})`);
    const cpu = cpuMeter();
    const started = performance.now();
    const consumer = consumerConnection.createConsumer({
      queue,
      queueOptions: declaration,
      qos: { prefetchCount: options.prefetch },
      concurrency: options.concurrency,
      requeue: true,
    }, (_msg: AsyncMessage) => {
      // Returning resolves to ACK; the library acks each delivery on its own.
      if (++acked === messages.length) all.resolve();
    });
    consumer.on("error", (error: Error) => all.reject(error));
    await all.promise;
    const seconds = (performance.now() - started) / 1000;
    const cpuUse = cpu.stop();
    await consumer.close();
    const left = await queueDepth(rabbit, queue);
    if (left !== 0) throw new Error(`broker: ${left} messages left in ${queue} after the consumer closed`);
    return {
      events: messages.length,
      publish_msgs_per_s: round(publishRate),
      seconds: round(seconds, 3),
      msgs_per_s: round(messages.length / seconds),
      machine_cpu_busy_pct: cpuUse.machineBusyPct,
      bench_process_cpu_pct: cpuUse.processPct,
    };
  },
};

// ---------------------------------------------------------------------------
// Section 2: custody rate

/** Environment for a service instance that only touches this run's names. */
function serviceEnv(options: BenchOptions, id: string): Record<string, string> {
  return {
    ...benchServiceEnv(id),
    LOG_LEVEL: options.logLevel,
    LOG_FORMAT: "json",
    CONSUMER_CONCURRENCY: String(options.concurrency),
    PREFETCH: String(options.prefetch),
    CUSTODY_BATCH_SIZE: String(options.batch),
    CUSTODY_BATCH_WAIT: `${options.batchWaitMs}ms`,
    CUSTODY_WRITERS: String(options.writers),
    DATABASE_POOL_SIZE: String(options.pool),
    // Custody alone unless asked: the dispatcher would sync the new changes to
    // the built-in Shopify sandbox on loopback while we measure.
    DISPATCH_ENABLED: String(options.dispatch),
  };
}

async function deleteTopology(rabbit: Connection, t: Topology): Promise<void> {
  for (const queue of [t.queue, ...t.retryQueues.map((r) => r.name), t.deadLetterQueue]) {
    await rabbit.queueDelete({ queue }).catch(() => {});
  }
  await rabbit.exchangeDelete({ exchange: t.exchange }).catch(() => {});
}

/** Where the WAL is and how many checkpoints have run (-1 where the view differs, PG 17+). */
async function walPosition(sql: postgres.Sql): Promise<{ lsn: string; checkpoints: number }> {
  const [{ lsn }] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
  const checkpoints = await sql<{ n: number }[]>`
    select (checkpoints_timed + checkpoints_req)::int as n from pg_stat_bgwriter`.then(
    ([row]) => row.n,
    () => -1,
  );
  return { lsn, checkpoints };
}

/** WAL bytes written and checkpoints run since `start` (by every database on the server). */
async function walSince(
  sql: postgres.Sql,
  start: { lsn: string; checkpoints: number },
): Promise<{ bytes: number; checkpoints: number }> {
  const [{ bytes }] = await sql<{ bytes: string }[]>`
    select pg_wal_lsn_diff(pg_current_wal_lsn(), ${start.lsn}::pg_lsn)::text as bytes`;
  const now = await walPosition(sql);
  return {
    bytes: Number(bytes),
    checkpoints: start.checkpoints < 0 || now.checkpoints < 0 ? -1 : now.checkpoints - start.checkpoints,
  };
}

/** Custody rate: a fresh service instance drains a pre-filled queue into its ledger. */
export const custodySection: Section = {
  id: "custody",
  title: "Custody rate (service: decode, validate, ledger transaction, ack)",
  async run({ options, messages, rabbit, defer, results }) {
    const config: Config = loadConfig(serviceEnv(options, uniqueSuffix()));
    const topology = topologyFromConfig(config);
    const sql = postgres(DATABASE_URL, {
      max: 2,
      onnotice: () => {},
      connection: { search_path: config.LEDGER_SCHEMA },
    });
    defer(`drop schema ${config.LEDGER_SCHEMA}`, async () => {
      await sql.unsafe(`drop schema if exists ${config.LEDGER_SCHEMA} cascade`);
      await sql.end({ timeout: 5 });
    });
    defer(`delete exchange ${topology.exchange} and its queues`, () => deleteTopology(rabbit, topology));
    // Declared exactly as the service will, so it finds its queue full; the
    // ledger is migrated up front so the timed window is consumption only.
    await declareTopology(rabbit, topology);
    await migrate(sql, config.LEDGER_SCHEMA);
    progress(`custody: publishing ${messages.length} events to ${topology.exchange}`);
    const publishRate = await publishAll(rabbit, topology, messages);
    const depth = await queueDepth(rabbit, topology.queue);
    if (depth !== messages.length) {
      throw new Error(`custody: ${depth} messages in ${topology.queue}, expected ${messages.length}`);
    }

    progress(
      `custody: starting the service (concurrency ${config.CONSUMER_CONCURRENCY}, prefetch ${config.prefetch}, ` +
        `batch ${config.CUSTODY_BATCH_SIZE}/${config.CUSTODY_BATCH_WAIT} ms, writers ${config.CUSTODY_WRITERS}, ` +
        `pool ${config.DATABASE_POOL_SIZE}, ` +
        `dispatch ${options.dispatch ? "on" : "off"})`,
    );
    const wal = await walPosition(sql);
    const rss = sampleRss(100);
    const cpu = cpuMeter();
    const started = performance.now();
    let service: RunningService | undefined;
    let rssFigures: { peak: number; start: number };
    let consumingAt: number;
    try {
      service = await startService(config);
      const running = service;
      defer("close the service", () => running.close());
      await service.started;
      consumingAt = performance.now();
      await waitUntil(
        "custody: acked",
        async () => await counterTotal(running.metrics.eventsAcked) >= messages.length,
        () => counterTotal(running.metrics.eventsAcked),
        { intervalMs: 10, stallMs: 30_000 },
      );
    } finally {
      rssFigures = rss.stop();
    }
    const cpuUse = cpu.stop();
    const seconds = (performance.now() - started) / 1000;
    const consumeSeconds = (performance.now() - consumingAt) / 1000;
    const outcomes = await ackedByOutcome(service.metrics);
    const batches = await histogramMean(service.metrics.custodyBatchSize);
    const batchSeconds = await histogramMean(service.metrics.custodyBatchSeconds);
    await service.close();
    const walUse = await walSince(sql, wal);
    const [{ sales, changes }] = await sql<{ sales: number; changes: number }[]>`
      select (select count(*)::int from sale) as sales, (select count(*)::int from stock_change) as changes`;
    if (sales !== messages.length || (outcomes.stored ?? 0) !== messages.length) {
      throw new Error(
        `custody: ${sales} sales in the ledger and outcomes ${
          JSON.stringify(outcomes)
        }; expected ${messages.length} stored`,
      );
    }
    const left = await queueDepth(rabbit, topology.queue);
    const dead = await queueDepth(rabbit, topology.deadLetterQueue);
    if (left !== 0 || dead !== 0) {
      throw new Error(`custody: ${left} left in the work queue, ${dead} in the DLQ`);
    }
    const rate = messages.length / seconds;
    const raw = Number(results.broker?.msgs_per_s ?? NaN);
    return {
      events: messages.length,
      publish_msgs_per_s: round(publishRate),
      seconds: round(seconds, 3),
      msgs_per_s: round(rate),
      consume_msgs_per_s: round(messages.length / consumeSeconds),
      startup_ms: round(consumingAt - started, 0),
      ratio_to_broker: round(rate / raw, 3),
      // The bare consumer's clock starts with its connection already open; this
      // one starts once the service is up (connections, migrations, HTTP).
      ratio_consuming_to_broker: round(messages.length / consumeSeconds / raw, 3),
      target_met: rate >= 0.5 * raw,
      batches: batches.count,
      batch_size_mean: round(batches.mean, 1),
      batch_ms_mean: round(batchSeconds.mean * 1000, 1),
      stock_changes: changes,
      wal_kib_per_event: round(walUse.bytes / 1024 / messages.length, 2),
      pg_checkpoints: walUse.checkpoints,
      rss_start_mib: round(rssFigures.start / 2 ** 20, 1),
      rss_peak_mib: round(rssFigures.peak / 2 ** 20, 1),
      machine_cpu_busy_pct: cpuUse.machineBusyPct,
      service_process_cpu_pct: cpuUse.processPct,
      concurrency: config.CONSUMER_CONCURRENCY,
      prefetch: config.prefetch,
      batch: config.CUSTODY_BATCH_SIZE,
      batch_wait_ms: config.CUSTODY_BATCH_WAIT,
      writers: config.CUSTODY_WRITERS,
      pool: config.DATABASE_POOL_SIZE,
      dispatch: options.dispatch,
    };
  },
};

/** Every section, in the order they run. Add new scenarios here. */
export const SECTIONS: readonly Section[] = [
  machineSection,
  brokerSection,
  custodySection,
  shopifyBurstSection,
  naiveSection,
  meliBurstSection,
  sustainedSection,
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
    for (const section of SECTIONS.filter((s) => options.sections.includes(s.id))) {
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
        `custody/raw ${ratio.toFixed(3)} (target >= 0.5: ${ratio >= 0.5 ? "met" : "NOT met"}; ` +
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
  if (results.sustained) {
    const r = results.sustained;
    lines.push(
      `sustained ${r.achieved_publish_rate_per_s} sales/s for ${r.seconds} s: service RSS idle ${r.rss_idle_mib} MiB, ` +
        `peak ${r.rss_high_water_mib} MiB (target <= 128: ${r.target_rss_le_128_mib ? "met" : "NOT met"}); ` +
        `custody done ${r.custody_done_after_s} s after the start, peak queue depth ${r.peak_queue_depth}`,
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
