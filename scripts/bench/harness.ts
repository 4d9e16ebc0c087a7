/**
 * The benchmark harness every section shares (run by `deno task bench`, see
 * scripts/bench/main.ts): the options and context a section gets, what it
 * returns, the loopback URLs, a fresh ledger schema and queues per run
 * (removed at the end), and the measuring helpers — publishing with confirms,
 * queue depth, waiting on progress, RSS and CPU sampling. Sections import this
 * file only; the runner imports the sections.
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import type { Connection } from "rabbitmq-client";
import postgres from "postgres";
import { declareTopology, type Topology, topologyFromConfig } from "../../src/broker/topology.ts";
import type { Config } from "../../src/config.ts";
import type { BucketSettings } from "../../src/sandbox/cost.ts";
import { sampleSales } from "../publish_sample.ts";
import { isolatedServiceEnv } from "../support/service_env.ts";

// ---------------------------------------------------------------------------
// What a section gets and returns

/** Service log levels --log-level accepts. */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Shopify's GraphQL Admin rate limits by plan: points restored per second, bucket of 20 s of them. */
export const PLAN_BUCKETS: Record<string, BucketSettings> = {
  standard: { maximumAvailable: 2000, restoreRate: 100 },
  advanced: { maximumAvailable: 4000, restoreRate: 200 },
  plus: { maximumAvailable: 20000, restoreRate: 1000 },
  enterprise: { maximumAvailable: 40000, restoreRate: 2000 },
};

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
  /** Interleaved rounds of the broker and custody sections when both run; the median round is reported. */
  rounds: number;
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
  /** Idle: how long the service rests before its memory is read again. */
  idleSeconds: number;
  /** Sustained stream: sales per second and seconds. */
  sustainedRate: number;
  sustainedSeconds: number;
  /** Resync of the whole catalog: SKU counts (one run each), stores, and the share of listings drifted (%). */
  resyncSkus: number[];
  resyncStores: number;
  resyncDriftPct: number;
  /** The `ledger` section migrates its scratch schema only up to this migration (to compare one's cost). */
  ledgerVersion: number;
  /** SQL the `ledger` section runs on its scratch schema after migrating (a variant to weigh); empty: none. */
  ledgerSql: string;
  /** Shopify plan whose rate limit the sandbox enforces (standard, advanced, plus, enterprise). */
  plan: string;
  /** Latency the marketplace sandboxes add to every request, in ms. */
  latencyMs: number;
  help: boolean;
}

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

// ---------------------------------------------------------------------------
// A service of the run's own: loopback servers, fresh names, removed at the end

/** Postgres of the run (BENCH_DATABASE_URL; the loopback `test` database by default). */
export const DATABASE_URL = Deno.env.get("BENCH_DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/test";
/** RabbitMQ of the run (BENCH_RABBITMQ_URL; loopback by default). */
export const RABBITMQ_URL = Deno.env.get("BENCH_RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5672";
/** Redis of the run (BENCH_REDIS_URL; loopback by default). */
export const REDIS_URL = Deno.env.get("BENCH_REDIS_URL") ?? "redis://127.0.0.1:6379";

/** The service variables every bench run shares: loopback services and names of its own. */
export function benchServiceEnv(id: string): Record<string, string> {
  return isolatedServiceEnv({ RABBITMQ_URL, DATABASE_URL, REDIS_URL }, `bench_${id}`);
}

/** The part of a node-redis client {@link deleteKeys} uses. */
export interface KeyScanner {
  scanIterator(options: { MATCH: string; COUNT: number }): AsyncIterable<string[]>;
  del(keys: string[]): Promise<number>;
}

/** Deletes every key matching `pattern` (SCAN, never KEYS). */
export async function deleteKeys(redis: KeyScanner, pattern: string): Promise<number> {
  let n = 0;
  for await (const keys of redis.scanIterator({ MATCH: pattern, COUNT: 1000 })) {
    if (keys.length > 0) n += await redis.del(keys);
  }
  return n;
}

/**
 * Declares the run's topology and opens a connection on its ledger schema;
 * both are removed (schema dropped, queues and exchange deleted) at the end.
 */
export async function runResources(
  ctx: BenchContext,
  config: Config,
): Promise<{ sql: postgres.Sql; topology: Topology }> {
  const topology = topologyFromConfig(config);
  const sql = postgres(DATABASE_URL, {
    max: 2,
    onnotice: () => {},
    connection: { search_path: config.LEDGER_SCHEMA },
  });
  ctx.defer("drop the bench ledger", async () => {
    // BENCH_KEEP_LEDGER=1 keeps it for a post-mortem (which listing was written when: docs/BENCHMARKS.md).
    if (Deno.env.get("BENCH_KEEP_LEDGER") === "1") {
      progress(`kept the ledger: schema ${config.LEDGER_SCHEMA}`);
    } else await sql.unsafe(`drop schema if exists ${config.LEDGER_SCHEMA} cascade`);
    await sql.end();
  });
  ctx.defer("delete the bench queues", async () => {
    for (const q of [topology.queue, topology.deadLetterQueue, ...topology.retryQueues.map((r) => r.name)]) {
      await ctx.rabbit.queueDelete({ queue: q }).catch(() => {});
    }
    await ctx.rabbit.exchangeDelete({ exchange: topology.exchange }).catch(() => {});
  });
  await declareTopology(ctx.rabbit, topology);
  return { sql, topology };
}

// ---------------------------------------------------------------------------
// Measuring

/** A progress line on stderr, so stdout stays the report. */
export function progress(text: string): void {
  console.error(`[bench] ${text}`);
}

/** A short random suffix for the run's queue, exchange and schema names. */
export function uniqueSuffix(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 10);
}

/** `n` rounded to `digits` decimals, as a number. */
export const round = (n: number, digits = 0) => Number(n.toFixed(digits));

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
export async function queueDepth(rabbit: Connection, queue: string): Promise<number> {
  return (await rabbit.queueDeclare({ queue, passive: true })).messageCount;
}

/** Waits until `done()` is true; fails if `progressOf()` stalls for `stallMs`. */
export async function waitUntil(
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

// ---------------------------------------------------------------------------
// The service as a process of its own (its memory and CPU are then its own)

/** Resident set size of a process in MiB, from /proc (undefined once it is gone). */
export async function rssMib(pid: number): Promise<{ rss: number; hwm: number } | undefined> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const kib = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
  } catch {
    return undefined;
  }
}

/** A process's resident memory in MiB, split by kind (/proc/<pid>/status) and by mapping (/proc/<pid>/smaps). */
export interface MemorySplit {
  rss: number;
  /** Anonymous memory: the V8 heap, malloc's arenas, thread stacks, JIT code. */
  anon: number;
  /** File-backed pages: the executable and the files it maps. */
  file: number;
  /** Resident MiB per group of mappings (see {@link memorySplit}). */
  mappings: Record<string, number>;
}

/**
 * Where a process's resident memory is (undefined once it is gone). Mapping groups: `binary_text` and
 * `binary_data` (the executable `binary` maps: code, read-only data with V8's snapshot, its own writable
 * data), `code_cache` (Deno's V8 code cache database, mapped by SQLite), `other_files` (shared libraries,
 * Deno's other caches), `malloc_heap` (glibc's main arena, `[heap]`), `anonymous` (nameless mappings: the
 * V8 heap, malloc's other arenas, thread stacks, JIT code) and `other` (`[stack]`, `[vvar]`, …).
 */
export async function memorySplit(pid: number, binary: string): Promise<MemorySplit | undefined> {
  let status: string, smaps: string;
  try {
    [status, smaps] = await Promise.all([
      Deno.readTextFile(`/proc/${pid}/status`),
      Deno.readTextFile(`/proc/${pid}/smaps`),
    ]);
  } catch {
    return undefined;
  }
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  const mappings: Record<string, number> = {};
  let group = "other";
  for (const line of smaps.split("\n")) {
    // "start-end perms offset dev inode [name]" opens each mapping; "Rss: N kB" is one of its fields.
    const header = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      const [, perms, name] = header;
      group = name === binary
        ? (perms.includes("x") ? "binary_text" : "binary_data")
        : name.includes("v8_code_cache")
        ? "code_cache"
        : name.startsWith("/")
        ? "other_files"
        : name === "[heap]"
        ? "malloc_heap"
        : name === ""
        ? "anonymous"
        : "other";
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) mappings[group] = (mappings[group] ?? 0) + Number(rss[1]) / 1024;
  }
  return { rss: kib("VmRSS") / 1024, anon: kib("RssAnon") / 1024, file: kib("RssFile") / 1024, mappings };
}

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every Linux the service targets). */
const CLOCK_TICKS = 100;

/** CPU time (user + system) a process has used so far, in seconds, from /proc (undefined once it is gone). */
export async function cpuSeconds(pid: number): Promise<number | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // pid (comm) state … utime stime are fields 14 and 15; comm may hold spaces, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** One process's CPU reading: its command name, start time (tells a reused pid apart) and CPU seconds. */
interface ProcessCpu {
  name: string;
  started: string;
  seconds: number;
}

/** CPU seconds of every process whose command name (`comm`) is one of `names`, by pid, from /proc. */
async function processCpuByName(names: ReadonlySet<string>): Promise<Map<number, ProcessCpu>> {
  const found = new Map<number, ProcessCpu>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (!names.has(name)) continue;
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // utime, stime: fields 14 and 15; starttime: field 22 (the slice starts at field 3).
      found.set(Number(entry.name), {
        name,
        started: fields[19],
        seconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS,
      });
    } catch {
      // gone between the listing and the read
    }
  }
  return found;
}

/**
 * CPU time used by the processes of some command names (`postgres`, `beam.smp`) since
 * {@link trackProcessCpu} was called. Call `sample()` often: a process that exits keeps
 * what it used up to its last sample (only the time since is lost), and one started
 * meanwhile counts from zero.
 */
export interface ProcessCpuTracker {
  /** Reads every matching process once more (one pass over /proc, ~5 ms for ~100 processes). */
  sample(): Promise<void>;
  /** CPU seconds the processes named `name` used since the start (only those `counted` says, if given). */
  used(name: string, counted?: (pid: number) => boolean): number;
  /** Processes named `name` seen, and how many of them had exited by the last sample. */
  processes(name: string): { seen: number; exited: number };
}

/** Starts a {@link ProcessCpuTracker} for the processes named `names` (the baseline is read now). */
export async function trackProcessCpu(names: readonly string[]): Promise<ProcessCpuTracker> {
  const wanted = new Set(names);
  // Keyed pid:starttime, so a pid reused by a new process is a new process.
  const first = new Map<string, number>();
  const last = new Map<string, { pid: number; name: string; seconds: number; alive: boolean }>();
  const read = async (baseline: boolean) => {
    const now = await processCpuByName(wanted);
    for (const entry of last.values()) entry.alive = false;
    for (const [pid, cpu] of now) {
      const key = `${pid}:${cpu.started}`;
      if (!first.has(key)) first.set(key, baseline ? cpu.seconds : 0);
      last.set(key, { pid, name: cpu.name, seconds: cpu.seconds, alive: true });
    }
  };
  await read(true);
  return {
    sample: () => read(false),
    used(name, counted = () => true) {
      let total = 0;
      for (const [key, e] of last) {
        if (e.name === name && counted(e.pid)) total += e.seconds - first.get(key)!;
      }
      return total;
    },
    processes(name) {
      const all = [...last.values()].filter((e) => e.name === name);
      return { seen: all.length, exited: all.filter((e) => !e.alive).length };
    },
  };
}

/**
 * Local ports of a process's TCP connections to `remotePort` (e.g. its Postgres
 * connections, which `pg_stat_activity.client_port` names): its socket inodes from
 * /proc/<pid>/fd matched against /proc/net/tcp and tcp6. Empty once it is gone.
 */
export async function connectionPorts(pid: number, remotePort: number): Promise<number[]> {
  const inodes = new Set<string>();
  try {
    for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
      const target = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`).catch(() => "");
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode) inodes.add(inode);
    }
  } catch {
    return [];
  }
  const ports: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(table).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …; addresses are HEX:PORT.
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      if (parseInt(f[2].split(":")[1], 16) === remotePort) ports.push(parseInt(f[1].split(":")[1], 16));
    }
  }
  return ports;
}

/** A free TCP port on loopback (for the service's HTTP_PORT). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A service started by {@link spawnService}. */
export interface ServiceProcess {
  pid: number;
  /** `http://127.0.0.1:<HTTP_PORT>`. */
  url: string;
  /** Whether the process has ended. */
  exited(): boolean;
  /** Stops it (SIGTERM) and waits until it has exited; nothing when it already has. */
  stop(): Promise<void>;
}

/**
 * Starts `src/main.ts` as its own process with `flags` (e.g. what src/permissions.ts derives)
 * and only the variables given (`serviceEnv` first, then `env`, which must set HTTP_PORT), and
 * waits up to 30 s for /readyz. It is stopped (SIGTERM) when the section ends. Its stderr is
 * inherited unless `onStderrLine` takes it line by line.
 */
export async function spawnService(
  ctx: BenchContext,
  options: {
    flags: string[];
    env: Record<string, string>;
    serviceEnv?: Record<string, string>;
    onStderrLine?: (line: string) => void;
  },
): Promise<ServiceProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...options.flags, "src/main.ts"],
    cwd: new URL("../../", import.meta.url).pathname,
    env: { ...options.serviceEnv ?? {}, ...options.env },
    clearEnv: true,
    stdout: "null",
    stderr: options.onStderrLine ? "piped" : "inherit",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const lines = options.onStderrLine ? forEachLine(child.stderr, options.onStderrLine) : Promise.resolve();
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    await status;
    await lines;
  };
  ctx.defer("service process", stop);
  const url = `http://127.0.0.1:${options.env.HTTP_PORT}`;
  for (let i = 0;; i++) {
    const ok = await fetch(`${url}/readyz`).then((r) => r.body?.cancel().then(() => r.ok), () => false);
    if (ok) break;
    if (i > 300 || exited) throw new Error("the service did not become ready within 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { pid: child.pid, url, exited: () => exited, stop };
}

/** Calls `each` with every line of a byte stream until it ends. */
async function forEachLine(stream: ReadableStream<Uint8Array>, each: (line: string) => void): Promise<void> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + text).split("\n");
    rest = parts.pop()!;
    for (const line of parts) each(line);
  }
  if (rest) each(rest);
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
export function cpuMeter(): {
  stop(): { machineBusyPct: number; processPct: number; processSeconds: number };
} {
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
        processSeconds: (used.user + used.system) / 1e6,
      };
    },
  };
}
