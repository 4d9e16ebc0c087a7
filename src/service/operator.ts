/**
 * The operator's view of a running instance, wired from its parts: what `/status`,
 * `/changes`, `/resync` and `/dead-letters` answer from, and the gauges refreshed
 * before every Prometheus scrape.
 */
import type { Connection } from "rabbitmq-client";
import type postgres from "postgres";
import type { Topology } from "../broker/topology.ts";
import type { Config } from "../config.ts";
import type { OperatorDeps } from "../http/operator.ts";
import { statusPageHtml } from "../http/status_page.tsx";
import type { ServiceMetrics } from "../metrics.ts";
import type { CheckResult } from "../model/health.ts";
import { listChanges } from "../ops/changes.ts";
import type { DeadLetterAdmin } from "../ops/dead_letters.ts";
import type { Resyncer } from "../ops/resync.ts";
import { collectStatus } from "../ops/status.ts";
import { VERSION } from "../version.ts";
import type { PluggedChannels } from "./channels.ts";
import { probeQueue } from "./probes.ts";

/** What the operator routes are built from. */
export interface OperatorParts {
  config: Config;
  sql: postgres.Sql;
  topology: Topology;
  sandboxMode: boolean;
  channels: PluggedChannels;
  /** The publishing connection, once connected (queue probes). */
  broker(): Connection | undefined;
  resyncer(): Resyncer | undefined;
  deadLetters(): DeadLetterAdmin | undefined;
}

/** The operator routes' dependencies. */
export function operatorSurface(parts: OperatorParts): OperatorDeps {
  const { config, sql, topology, channels } = parts;
  return {
    auth: { token: config.ADMIN_TOKEN, sandboxMode: parts.sandboxMode },
    status: () =>
      collectStatus({
        sql,
        version: VERSION,
        mode: parts.sandboxMode ? "sandbox" : "live",
        channels: config.CHANNELS,
        probes: channels.probes,
        queue: async () => {
          const [work, dead] = await Promise.all([
            probeQueue(parts.broker(), topology.queue),
            probeQueue(parts.broker(), topology.deadLetterQueue),
          ]);
          return {
            name: topology.queue,
            depth: work.messageCount,
            consumers: work.consumerCount,
            dead_letters: dead.messageCount,
          };
        },
      }),
    changes: (query) => listChanges(sql, query),
    resyncer: parts.resyncer,
    deadLetters: parts.deadLetters,
    statusPage: () => statusPageHtml(VERSION),
  };
}

/** What a scrape refreshes. */
export interface GaugeSources {
  /** The readiness checks (they set `component_up`). */
  readiness(): Promise<Record<string, CheckResult>>;
  metrics: ServiceMetrics;
  topology: Topology;
  channels: PluggedChannels;
  broker(): Connection | undefined;
}

/** Gauges read at scrape time: dependency probes, token expiry, queue depths. */
export async function refreshGauges(sources: GaugeSources): Promise<void> {
  const { metrics, topology } = sources;
  await sources.readiness();
  for (const [channel, probe] of Object.entries(sources.channels.probes)) {
    const expires = probe.tokenExpiresAt?.();
    if (expires) {
      metrics.tokenExpirySeconds.set({ channel }, Math.round((expires.getTime() - Date.now()) / 1000));
    }
  }
  for (const queue of [topology.queue, topology.deadLetterQueue]) {
    const info = await probeQueue(sources.broker(), queue).catch(() => undefined);
    if (!info) continue;
    metrics.queueMessages.set({ queue }, info.messageCount);
    metrics.queueConsumers.set({ queue }, info.consumerCount);
  }
}
