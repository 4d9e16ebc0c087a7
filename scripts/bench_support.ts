/**
 * What the benchmark sections that start a service share: the loopback URLs
 * and a fresh ledger schema and queues per run, removed at the end.
 */
import postgres from "postgres";
import { declareTopology, type Topology, topologyFromConfig } from "../src/broker/topology.ts";
import type { Config } from "../src/config.ts";
import type { BenchContext } from "./bench.ts";

export const DATABASE_URL = Deno.env.get("BENCH_DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/test";
export const RABBITMQ_URL = Deno.env.get("BENCH_RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5672";
export const REDIS_URL = Deno.env.get("BENCH_REDIS_URL") ?? "redis://127.0.0.1:6379";

/** The service variables every bench run shares: loopback services and names of its own. */
export function benchServiceEnv(id: string): Record<string, string> {
  return {
    RABBITMQ_URL,
    DATABASE_URL,
    REDIS_URL,
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    EXCHANGE: `blend_events.bench_${id}`,
    QUEUE: `marketplace-sync.bench_${id}`,
    LEDGER_SCHEMA: `msync_bench_${id}`,
  };
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
    await sql.unsafe(`drop schema if exists ${config.LEDGER_SCHEMA} cascade`);
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
