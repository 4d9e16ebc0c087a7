/**
 * What the service knows about its own dependencies: one registry of named health
 * checks (`/readyz`, and `component_up` on every scrape) and one queue probe (depth and
 * consumers by passive declare) shared by `/status` and `/metrics`.
 */
import type { Connection } from "rabbitmq-client";
import type postgres from "postgres";
import { redactUrl } from "../config.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { CheckResult } from "../model/health.ts";
import { withTimeout } from "./lifecycle.ts";
import type { PluggedChannels } from "./channels.ts";
import type { BrokerLink, RedisClient } from "./connections.ts";

/** A named dependency's check; a throw counts as not ok, with the (redacted) message. */
export type Check = () => CheckResult | Promise<CheckResult>;

/** The named checks `/readyz` runs, in the order they were added. */
export class HealthRegistry {
  readonly #checks = new Map<string, Check>();

  /** Adds (or replaces) the check called `name`. */
  add(name: string, check: Check): this {
    this.#checks.set(name, check);
    return this;
  }

  /** Runs every check at once. */
  async run(): Promise<Record<string, CheckResult>> {
    const entries = await Promise.all(
      [...this.#checks].map(async ([name, check]) => {
        try {
          return [name, await check()] as const;
        } catch (error) {
          return [name, { ok: false, detail: redactUrl((error as Error).message) }] as const;
        }
      }),
    );
    return Object.fromEntries(entries);
  }
}

const PROBE_TIMEOUT_MS = 2_000;

/** The ledger answers, and is `ready` (migrated); reported as `component_up{component="postgres"}`. */
export function postgresCheck(sql: postgres.Sql, ready: () => boolean, metrics: ServiceMetrics): Check {
  return async () => {
    const result = await withTimeout(sql`select 1`, PROBE_TIMEOUT_MS, "postgres ping").then(
      () => ({ ok: ready(), detail: ready() ? undefined : "ledger migrations not applied yet" }),
      (e: Error) => ({ ok: false, detail: redactUrl(e.message) }),
    );
    metrics.componentUp.set({ component: "postgres" }, result.ok ? 1 : 0);
    return result;
  };
}

/** Redis answers a PING; reported as `component_up{component="redis"}`. */
export function redisCheck(redis: RedisClient, metrics: ServiceMetrics): Check {
  return async () => {
    const result: CheckResult = redis.isReady
      ? await withTimeout(redis.ping(), PROBE_TIMEOUT_MS, "redis ping").then(
        () => ({ ok: true }),
        (e: Error) => ({ ok: false, detail: redactUrl(e.message) }),
      )
      : { ok: false, detail: "not connected" };
    metrics.componentUp.set({ component: "redis" }, result.ok ? 1 : 0);
    return result;
  };
}

/** A queue's depth and consumers. */
export interface QueueCount {
  messageCount: number;
  consumerCount: number;
}

/** Depth and consumers of `queue` by passive declare; throws when RabbitMQ does not answer in 2 s. */
export async function probeQueue(connection: Connection | undefined, queue: string): Promise<QueueCount> {
  if (!connection?.ready) throw new Error("not connected");
  const info = await withTimeout(
    connection.queueDeclare({ queue, passive: true }),
    PROBE_TIMEOUT_MS,
    "queue probe",
  );
  return { messageCount: info.messageCount, consumerCount: info.consumerCount };
}

/** What `/readyz` looks at. */
export interface ReadinessSources {
  broker: BrokerLink;
  /** Whether the sale consumer is attached to the work queue. */
  consuming(): boolean;
  stopping(): boolean;
  queue: string;
  sql: postgres.Sql;
  ledgerReady(): boolean;
  redis: RedisClient;
  metrics: ServiceMetrics;
  channels: PluggedChannels;
}

/** The service's readiness: its own dependencies, then each plugged channel's health. */
export function serviceReadiness(s: ReadinessSources): () => Promise<Record<string, CheckResult>> {
  const health = new HealthRegistry()
    .add("broker", () => s.broker.ready ? { ok: true } : { ok: false, detail: "not connected to RabbitMQ" })
    .add(
      "consumer",
      () =>
        s.consuming()
          ? { ok: true }
          : { ok: false, detail: s.stopping() ? "shutting down" : `not consuming ${s.queue}` },
    )
    .add("postgres", postgresCheck(s.sql, s.ledgerReady, s.metrics))
    .add("redis", redisCheck(s.redis, s.metrics));
  return async () => ({
    ...await health.run(),
    ...Object.fromEntries(Object.entries(s.channels.probes).map(([name, probe]) => [name, probe.health()])),
  });
}
