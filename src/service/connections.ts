/**
 * The service's connections to its own infrastructure — the ledger's Postgres, Redis and
 * RabbitMQ — built in one place, each with one reconnect backoff and one line per outage
 * in the log (not one per reconnect attempt).
 */
import { Connection } from "rabbitmq-client";
import postgres from "postgres";
import { createClient } from "@redis/client";
import type { Config } from "../config.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import { exponential, inSeconds } from "../resilience/backoff.ts";
import { LEDGER_VERSION } from "../ledger/migrations.ts";

const log = logger("main");

/** A node-redis client, as the service creates it. */
export type RedisClient = ReturnType<typeof newRedisClient>;

/**
 * Seconds before a Postgres connection tries again after a failed connect. postgres.js's
 * default grows as 3^n/100 s up to 20 s with n shared by the whole pool, so after a short
 * outage queries waited up to 20 s more for Postgres that was already back (docs/RELIABILITY.md).
 */
export const reconnectBackoff: (retries: number) => number = inSeconds(
  exponential({ baseMs: 100, maxMs: 2_000, firstAttempt: 0, jitter: { down: 0.25 } }),
);

/** Milliseconds before node-redis tries to reconnect. */
const redisReconnectDelay = exponential({ baseMs: 100, maxMs: 5_000, firstAttempt: 0 });

/** What differs between the service's Postgres pools. */
export interface PostgresOptions {
  /** Pool size. */
  max: number;
  /** `application_name`, as `pg_stat_activity` shows it. */
  name: string;
  statementTimeoutMs: number;
  /** `lock_timeout`; the server's default when omitted. */
  lockTimeoutMs?: number;
  /** `search_path` (the ledger's schema); the server's default when omitted. */
  schema?: string;
  /**
   * Plan every execution of a prepared statement for its parameters and the tables' size now
   * (`plan_cache_mode=force_custom_plan`). The ledger's tables grow from empty to millions of rows
   * while a connection lives: a generic plan Postgres cached while `stock_change` was small (a hash
   * join over a sequential scan) kept recording a batch at 6.9 s once it was not (docs/BENCHMARKS.md).
   * Planning these statements costs well under a millisecond.
   */
  customPlans?: boolean;
}

/** A Postgres pool with the service's connect timeout, reconnect backoff and idle timeout. */
export function openPostgres(url: string, options: PostgresOptions): postgres.Sql {
  return postgres(url, {
    max: options.max,
    connect_timeout: 5,
    backoff: reconnectBackoff,
    idle_timeout: 30,
    onnotice: () => {},
    connection: {
      // The ledger version marks this replica's connections: a newer replica waits for the older ones to
      // be gone before it removes what they still use (src/ledger/migrate.ts, contractLedger).
      application_name: `${options.name} [ledger ${LEDGER_VERSION}]`,
      ...(options.schema ? { search_path: options.schema } : {}),
      statement_timeout: options.statementTimeoutMs,
      ...(options.lockTimeoutMs === undefined ? {} : { lock_timeout: options.lockTimeoutMs }),
      ...(options.customPlans ? { plan_cache_mode: "force_custom_plan" } : {}),
    },
  });
}

/** The ledger's pool. */
export function openLedger(config: Config): postgres.Sql {
  return openPostgres(config.DATABASE_URL, {
    max: config.DATABASE_POOL_SIZE,
    name: "marketplace-sync",
    schema: config.LEDGER_SCHEMA,
    statementTimeoutMs: 15_000,
    customPlans: true,
  });
}

/**
 * The ledger upkeep's own connection (src/ledger/upkeep.ts): one, with no statement timeout (a VACUUM
 * takes what it takes) and a short lock timeout (a table another replica vacuums is left to it).
 */
export function openLedgerUpkeep(config: Config): postgres.Sql {
  return openPostgres(config.DATABASE_URL, {
    max: 1,
    name: "marketplace-sync upkeep",
    schema: config.LEDGER_SCHEMA,
    statementTimeoutMs: 0,
    lockTimeoutMs: 1_000,
  });
}

/**
 * A Redis client that connects in the background and reconnects by itself.
 * @param what how log lines name it; undefined: silent (a secondary client whose
 *   absence its user reports).
 */
export function openRedis(url: string, what?: string): RedisClient {
  const redis = newRedisClient(url);
  let down = false;
  redis.on("error", (error: Error) => {
    if (what && !down) log.warning("{what} unreachable: {error}", { what, error: error.message });
    down = true;
  });
  redis.on("ready", () => {
    if (what && down) log.info("{what} reachable again", { what });
    down = false;
  });
  redis.connect().catch(() => {});
  return redis;
}

/**
 * node-redis's core client (`@redis/client`, what the `redis` package wraps): the `redis` package's own
 * createClient adds the RediSearch, JSON, time-series and Bloom command sets, ~150 more modules the service
 * never calls, which cost the idle process ~1 MiB (docs/BENCHMARKS.md, "Sustained stream").
 */
function newRedisClient(url: string) {
  return createClient({ url, socket: { connectTimeout: 2_000, reconnectStrategy: redisReconnectDelay } });
}

/** Closes a Redis client: gracefully when it is open, at once when it is still (re)connecting. */
export async function closeRedis(redis: RedisClient | undefined): Promise<void> {
  if (!redis) return;
  if (redis.isOpen) await redis.close().catch(() => redis.destroy());
  else redis.destroy();
}

/** A RabbitMQ connection that reconnects by itself and reports its state in `component_up`. */
export function connectBroker(url: string, name: string, metrics: ServiceMetrics): Connection {
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

/** The instance's two RabbitMQ connections: one to consume, one to publish (DLQ copies, confirms). */
export class BrokerLink {
  consume: Connection | undefined;
  publish: Connection | undefined;

  /** Opens both; they reconnect by themselves from then on. */
  open(url: string, metrics: ServiceMetrics): { consume: Connection; publish: Connection } {
    this.consume = connectBroker(url, "consume", metrics);
    this.publish = connectBroker(url, "publish", metrics);
    return { consume: this.consume, publish: this.publish };
  }

  /** Both connections are up. */
  get ready(): boolean {
    return Boolean(this.consume?.ready && this.publish?.ready);
  }

  async close(): Promise<void> {
    await Promise.all([this.consume?.close(), this.publish?.close()]);
  }
}
