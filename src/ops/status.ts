/**
 * `GET /status`: what an operator needs at a glance — queue depth and
 * consumers, DLQ size, per channel its health, backlog by status, oldest
 * pending age, budget level, token expiry, applied changes per minute over the
 * last hour, marketplace orders (received, lag, not recorded by the POS), and the last
 * failures with their reasons.
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
  const [backlog, oldest, perMinute, failures, queue, orders] = await Promise.all([
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
    collectOrders(sql),
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
    orders,
    last_errors: failures.slice(0, 10).map(failureJson),
  };
}

/**
 * Marketplace orders (issue #14), per origin: received in the last hour, the last one, the lag from the
 * marketplace's order time to its effect in the ledger, orders the POS has not recorded yet, deliveries
 * quarantined or still unsettled; and the POS outbox's unpublished messages.
 */
async function collectOrders(sql: Sql) {
  const [lag, unrecorded, deliveries, [outbox]] = await Promise.all([
    sql<
      {
        origin: string;
        received: number;
        last_at: Date | null;
        p50: number | null;
        p95: number | null;
        max: number | null;
      }[]
    >`
      select origin, count(*)::int as received, max(applied_at) as last_at,
             percentile_cont(0.5) within group (order by extract(epoch from applied_at - occurred_at))::float8 as p50,
             percentile_cont(0.95) within group (order by extract(epoch from applied_at - occurred_at))::float8 as p95,
             max(extract(epoch from applied_at - occurred_at))::float8 as max
        from marketplace_order where applied_at > now() - interval '1 hour' group by origin`,
    sql<{ origin: string; orders: number; units: number }[]>`
      select origin, count(distinct order_id)::int as orders, sum(sold - restocked)::int as units
        from marketplace_order_line where not recorded and restocked < sold group by origin`,
    sql<{ channel: string; quarantined: number; unsettled: number }[]>`
      select channel, count(*) filter (where quarantine_reason is not null)::int as quarantined,
             count(*) filter (where settled_at is null)::int as unsettled
        from order_delivery group by channel`,
    sql<
      { unpublished: number }[]
    >`select count(*)::int as unpublished from pos_outbox where published_at is null`,
  ]);
  const origins = new Set(
    [...lag, ...unrecorded].map((r) => r.origin).concat(deliveries.map((d) => d.channel)),
  );
  const round = (n: number | null | undefined) => n == null ? null : Math.round(n * 10) / 10;
  const byOrigin: Record<string, unknown> = {};
  for (const origin of [...origins].sort()) {
    const l = lag.find((r) => r.origin === origin);
    const u = unrecorded.find((r) => r.origin === origin);
    const d = deliveries.find((r) => r.channel === origin);
    byOrigin[origin] = {
      received_last_hour: l?.received ?? 0,
      last_at: l?.last_at?.toISOString() ?? null,
      lag_seconds: { p50: round(l?.p50), p95: round(l?.p95), max: round(l?.max) },
      not_recorded_by_pos: { orders: u?.orders ?? 0, units: u?.units ?? 0 },
      deliveries_quarantined: d?.quarantined ?? 0,
      deliveries_unsettled: d?.unsettled ?? 0,
    };
  }
  return { by_origin: byOrigin, pos_outbox_unpublished: outbox?.unpublished ?? 0 };
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
