/**
 * Benchmark sections `broker`, `custody` and `ledger` (run by `deno task bench`):
 *
 * - `broker`: the raw broker rate. N events are published to a scratch durable
 *   queue, then a bare rabbitmq-client consumer with the service's concurrency
 *   and prefetch acks each one and does nothing else; msgs/s from consumer
 *   start to the N-th ack.
 * - `custody`: the same N events published to a fresh exchange/queue of a
 *   service instance that is not consuming yet; then `startService` is called
 *   and timed until `events_acked_total` reaches N (the ledger count is checked
 *   afterwards). Also reports the mean custody batch size, the peak RSS of this
 *   process and the WAL written per event. The marketplace dispatcher is off
 *   (DISPATCH_ENABLED=false) unless --dispatch.
 *
 * Both see the same bytes, so the ratio custody/broker is the cost of
 * decoding, validating and writing the ledger.
 *
 * - `ledger`: custody's statements alone against Postgres (no broker, no
 *   service process around them): Postgres's CPU per event, to weigh a
 *   change to the ledger (`--ledger-version` migrates only up to a version).
 */
import { type AsyncMessage, Connection } from "rabbitmq-client";
import postgres from "postgres";
import { declareTopology, type Topology, topologyFromConfig } from "../../src/broker/topology.ts";
import { type Config, loadConfig } from "../../src/config.ts";
import { Custody } from "../../src/ledger/custody.ts";
import { migrate } from "../../src/ledger/migrate.ts";
import { MIGRATIONS } from "../../src/ledger/migrations.ts";
import { decodeSaleEvent } from "../../src/model/sale_event.ts";
import { type RunningService, startService } from "../../src/main.ts";
import { type ServiceMetrics } from "../../src/metrics.ts";
import {
  type BenchOptions,
  benchServiceEnv,
  cpuMeter,
  DATABASE_URL,
  type ProcessCpuTracker,
  progress,
  publishAll,
  queueDepth,
  RABBITMQ_URL,
  round,
  sampleRss,
  type Section,
  type SectionResult,
  trackProcessCpu,
  uniqueSuffix,
  waitUntil,
} from "./harness.ts";

/**
 * CPU per event, in µs, of RabbitMQ, Postgres and this process (the bare consumer, or the
 * service started in it) over a timed window: where a custody event's cost goes next to a
 * bare delivery's.
 */
async function cpuPerEvent(
  servers: ProcessCpuTracker,
  processSeconds: number,
  events: number,
): Promise<
  { rabbitmq_cpu_us_per_event: number; postgres_cpu_us_per_event: number; process_cpu_us_per_event: number }
> {
  await servers.sample();
  const us = (seconds: number) => round(seconds * 1e6 / events, 1);
  return {
    rabbitmq_cpu_us_per_event: us(servers.used("beam.smp")),
    postgres_cpu_us_per_event: us(servers.used("postgres")),
    process_cpu_us_per_event: us(processSeconds),
  };
}

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
    const servers = await trackProcessCpu(["postgres", "beam.smp"]);
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
    const perEvent = await cpuPerEvent(servers, cpuUse.processSeconds, messages.length);
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
      ...perEvent,
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

// The service's own metrics, read back after the run.

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
    const servers = await trackProcessCpu(["postgres", "beam.smp"]);
    const cpu = cpuMeter();
    const started = performance.now();
    let service: RunningService | undefined;
    let rssFigures: { peak: number; start: number };
    let consumingAt: number;
    // When half the events were acked: the second half's rate is custody once the service is warm.
    let halfAt: { t: number; acked: number } | undefined;
    try {
      service = await startService(config);
      const running = service;
      defer("close the service", () => running.close());
      await service.started;
      consumingAt = performance.now();
      await waitUntil(
        "custody: acked",
        async () => {
          const acked = await counterTotal(running.metrics.eventsAcked);
          if (halfAt === undefined && acked >= messages.length / 2) halfAt = { t: performance.now(), acked };
          return acked >= messages.length;
        },
        () => counterTotal(running.metrics.eventsAcked),
        { intervalMs: 10, stallMs: 30_000 },
      );
    } finally {
      rssFigures = rss.stop();
    }
    // The clock stops first: reading the servers' CPU from /proc is not custody.
    const ended = performance.now();
    const cpuUse = cpu.stop();
    const seconds = (ended - started) / 1000;
    const consumeSeconds = (ended - consumingAt) / 1000;
    const secondHalfRate = halfAt ? (messages.length - halfAt.acked) / ((ended - halfAt.t) / 1000) : NaN;
    const perEvent = await cpuPerEvent(servers, cpuUse.processSeconds, messages.length);
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
      // The second half of the events alone: no start-up, new connections or cold code in it.
      second_half_msgs_per_s: round(secondHalfRate),
      ratio_second_half_to_broker: round(secondHalfRate / raw, 3),
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
      ...perEvent,
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

/** One round of the paired broker and custody sections. */
export interface CustodyRound {
  broker: SectionResult;
  custody: SectionResult;
}

/**
 * The round whose custody/raw is the median (the lower one of the middle two for an even count), with every
 * round's raw rate, custody rate and ratio added to its custody figures in the order they ran.
 */
export function medianRound(rounds: readonly CustodyRound[]): CustodyRound {
  if (rounds.length === 0) throw new Error("medianRound: no rounds");
  const ratio = (r: CustodyRound) => Number(r.custody.ratio_to_broker);
  const sorted = [...rounds].sort((a, b) => ratio(a) - ratio(b));
  const median = sorted[Math.floor((sorted.length - 1) / 2)];
  const each = (pick: (r: CustodyRound) => unknown) => rounds.map(pick).join(" / ");
  return {
    broker: median.broker,
    custody: {
      ...median.custody,
      rounds: rounds.length,
      median_round: rounds.indexOf(median) + 1,
      ratio_to_broker_per_round: each((r) => ratio(r).toFixed(3)),
      ratio_consuming_to_broker_per_round: each((r) => r.custody.ratio_consuming_to_broker),
      raw_msgs_per_s_per_round: each((r) => r.broker.msgs_per_s),
      custody_msgs_per_s_per_round: each((r) => r.custody.msgs_per_s),
    },
  };
}

// ---------------------------------------------------------------------------
// Section 3: the ledger's custody writes alone

/**
 * Custody's statements against Postgres with no broker and no service around them: the same events, decoded
 * up front, written by {@link Custody} with the service's batch size and writers, batches full. What Postgres
 * spends per event is measured without RabbitMQ and the service sharing the two cores, so a change to the
 * ledger (an index, a key: `--ledger-version`) shows its cost in a few percent rather than in the noise of the
 * custody/raw ratio.
 */
export const ledgerSection: Section = {
  id: "ledger",
  title: "Custody's ledger writes alone (no broker): Postgres CPU per event",
  async run({ options, messages, defer }) {
    const schema = `bench_ledger_${uniqueSuffix()}`;
    const limits = { maxBytes: 1 << 20, maxItems: 1000, maxQuantity: 1_000_000 };
    const events = messages.map((m) => {
      const decoded = decodeSaleEvent(new Uint8Array(m.body), { messageId: m.messageId }, limits);
      if (!decoded.ok) throw new Error(`ledger: a sample event was rejected: ${decoded.rejection.message}`);
      return decoded.event;
    });
    const sql = postgres(DATABASE_URL, {
      max: options.pool,
      onnotice: () => {},
      connection: { search_path: schema },
    });
    defer(`drop schema ${schema}`, async () => {
      await sql.unsafe(`drop schema if exists ${schema} cascade`);
      await sql.end({ timeout: 5 });
    });
    await migrate(sql, schema, MIGRATIONS.filter((m) => m.version <= options.ledgerVersion));
    if (options.ledgerSql) {
      await sql.unsafe(options.ledgerSql).catch((error) => {
        throw new Error(`--ledger-sql ${JSON.stringify(options.ledgerSql)}: ${(error as Error).message}`);
      });
    }
    const custody = new Custody(sql, ["mercadolibre", "shopify"], {
      batchSize: options.batch,
      maxWaitMs: options.batchWaitMs,
      maxWriters: options.writers,
    });
    // Warm: the pool's connections open, and their backends have touched the ledger, before the clock starts.
    const warm = Math.min(2000, Math.floor(events.length / 10));
    await Promise.all(events.slice(0, warm).map((e) => custody.accept(e)));
    // A checkpoint first: otherwise whether one falls in the timed window (each page's first write after
    // it is a full page in the WAL) moved the figure by ±15 % between runs of the same ledger.
    await sql`checkpoint`.catch((error) =>
      progress(`ledger: no checkpoint before the clock (${(error as Error).message}); the figure varies more`)
    );
    const wal = await walPosition(sql);
    const servers = await trackProcessCpu(["postgres"]);
    const cpu = cpuMeter();
    const started = performance.now();
    progress(
      `ledger: ${events.length - warm} events into custody (ledger at migration ${options.ledgerVersion}` +
        `${options.ledgerSql ? `, then: ${options.ledgerSql}` : ""})`,
    );
    await Promise.all(events.slice(warm).map((e) => custody.accept(e)));
    const seconds = (performance.now() - started) / 1000;
    const cpuUse = cpu.stop();
    await servers.sample();
    const walUse = await walSince(sql, wal);
    const timed = events.length - warm;
    return {
      events: timed,
      ledger_version: options.ledgerVersion,
      ledger_sql: options.ledgerSql,
      msgs_per_s: round(timed / seconds),
      postgres_cpu_us_per_event: round(servers.used("postgres") * 1e6 / timed, 1),
      process_cpu_us_per_event: round(cpuUse.processSeconds * 1e6 / timed, 1),
      wal_kib_per_event: round(walUse.bytes / 1024 / timed, 2),
      machine_cpu_busy_pct: cpuUse.machineBusyPct,
      batch: options.batch,
      writers: options.writers,
    };
  },
};
