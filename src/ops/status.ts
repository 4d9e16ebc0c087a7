/**
 * `GET /status`: what an operator needs at a glance — queue depth and
 * consumers, DLQ size, per channel its health, backlog by status, oldest
 * pending age, budget level, token expiry, applied changes per minute over the
 * last hour, and the last failures with their reasons.
 */
import type { Sql } from "postgres";
import { ledgerBacklog } from "../ledger/backlog.ts";
import type { ChannelProbe } from "../sync/channel.ts";

/** Queue numbers, from a passive declare. */
export interface QueueInfo {
  name: string;
  depth: number | null;
  consumers: number | null;
  dead_letters: number | null;
}

/** Dependencies of {@link collectStatus}. */
export interface StatusDeps {
  sql: Sql;
  version: string;
  mode: "sandbox" | "live";
  channels: readonly string[];
  probes: Record<string, ChannelProbe>;
  queue(): Promise<QueueInfo>;
}

interface FailureRow {
  at: Date;
  channel: string;
  event_id: string;
  sku: string;
  tienda_id: string;
  reason: string | null;
  error: string | null;
}

/** Collects the status document. */
export async function collectStatus(deps: StatusDeps) {
  const { sql } = deps;
  const [backlog, oldest, perMinute, failures, queue] = await Promise.all([
    ledgerBacklog(sql),
    sql<{ channel: string; seconds: number }[]>`
      select channel, extract(epoch from now() - min(created_at))::float8 as seconds
        from stock_change where status = 'pending' group by 1`,
    sql<{ channel: string; minute: Date; n: number }[]>`
      select channel, date_trunc('minute', applied_at) as minute, count(*)::int as n
        from stock_change
       where status = 'applied' and applied_at > date_trunc('minute', now()) - interval '59 minutes'
       group by 1, 2 order by 2`,
    sql<FailureRow[]>`
      select updated_at as at, channel, event_id, sku, tienda_id, error_reason as reason, error
        from stock_change where status = 'failed' order by updated_at desc limit 20`,
    deps.queue().catch(() => ({ name: "", depth: null, consumers: null, dead_letters: null })),
  ]);
  const now = Date.now();
  const minuteStart = Math.floor(now / 60_000) * 60_000;
  const channels: Record<string, unknown> = {};
  for (const name of deps.channels) {
    const probe = deps.probes[name];
    const health = probe?.health() ?? { ok: false, detail: "not dispatched by this instance" };
    const counts = Object.fromEntries(
      ["pending", "sending", "failed"].map((s) => [
        s,
        backlog.find((b) => b.channel === name && b.status === s)?.count ?? 0,
      ]),
    );
    const byMinute = new Map(
      perMinute.filter((m) => m.channel === name).map((m) => [m.minute.getTime(), m.n]),
    );
    const appliedPerMinute = Array.from({ length: 60 }, (_, i) => {
      const t = minuteStart - (59 - i) * 60_000;
      return { minute: new Date(t).toISOString(), count: byMinute.get(t) ?? 0 };
    });
    const seconds = oldest.find((o) => o.channel === name)?.seconds;
    channels[name] = {
      healthy: health.ok,
      detail: health.detail ?? null,
      backlog: counts,
      oldest_pending_seconds: seconds === undefined ? null : Math.round(seconds * 10) / 10,
      budget: probe?.budget?.() ?? null,
      token_expires_at: probe?.tokenExpiresAt?.()?.toISOString() ?? null,
      applied_per_minute: appliedPerMinute,
      last_errors: failures.filter((f) => f.channel === name).slice(0, 10).map(failureJson),
    };
  }
  return {
    version: deps.version,
    time: new Date(now).toISOString(),
    mode: deps.mode,
    queue,
    failed_total: backlog.filter((b) => b.status === "failed").reduce((n, b) => n + b.count, 0),
    channels,
    last_errors: failures.slice(0, 10).map(failureJson),
  };
}

function failureJson(f: FailureRow) {
  return {
    at: f.at.toISOString(),
    channel: f.channel,
    event_id: f.event_id,
    sku: f.sku,
    tienda_id: f.tienda_id,
    reason: f.reason,
    error: f.error,
  };
}
