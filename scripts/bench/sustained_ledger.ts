/**
 * What the sustained section (scripts/bench/sustained.ts) reads from the ledger and
 * from Postgres: the backlog per channel, the sale → applied lag per window of sale
 * time, the rows the ledger wrote and the WAL the server wrote — plus the small
 * arithmetic that turns them into flat figures (percentile timelines, slopes).
 */
import type postgres from "postgres";
import { ledgerBacklog } from "../../src/ledger/backlog.ts";

/** `n` rounded to `digits` decimals, as a number. */
const round = (n: number, digits = 2) => Number(n.toFixed(digits));

// ---------------------------------------------------------------------------
// Backlog

/** Changes of each channel not settled yet (pending or sending), by channel. */
export async function backlogByChannel(sql: postgres.Sql): Promise<Record<string, number>> {
  // The service's own count, which reads each status from its partial index. A single
  // `status in ('pending', 'sending')` matches neither index's predicate: it was a parallel
  // sequential scan of the whole ledger, twice a second, 0.3 s of three processes' CPU at
  // 2 million changes, on the machine the stream was measured on (docs/BENCHMARKS.md).
  const totals: Record<string, number> = {};
  for (const row of await ledgerBacklog(sql)) {
    if (row.status === "failed") continue;
    totals[row.channel] = (totals[row.channel] ?? 0) + row.count;
  }
  return totals;
}

/**
 * Least-squares slope of `y` over `t` (units of y per unit of t); NaN with fewer
 * than two distinct points in time.
 */
export function slope(points: readonly { t: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const meanT = points.reduce((a, p) => a + p.t, 0) / n;
  const meanY = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - meanT) * (p.y - meanY);
    den += (p.t - meanT) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

// ---------------------------------------------------------------------------
// Lag: sale (the event's `timestamp`, set when it was published) → applied

/** One channel's lag over one window of sale time. */
export interface LagWindow {
  channel: string;
  /** Window index: sales published in [index × width, (index + 1) × width) s after the first publish. */
  index: number;
  /** Changes whose sale falls in the window. */
  changes: number;
  /** Of those, applied (the percentiles are over these) and failed (terminal, not in the percentiles). */
  applied: number;
  failed: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * Lag of every change, `stock_change.applied_at − sale timestamp`, per channel and per
 * `widthS`-second window of sale time counted from `firstPublish`, plus each channel's
 * whole-run figures (index −1). Changes not applied yet count in `changes` only.
 */
export async function lagWindows(
  sql: postgres.Sql,
  firstPublish: Date,
  widthS: number,
): Promise<LagWindow[]> {
  const rows = await sql<
    {
      channel: string;
      index: number | null;
      changes: number;
      applied: number;
      failed: number;
      p50: number | null;
      p99: number | null;
      max: number | null;
    }[]
  >`
    with lag as (
      select c.channel, c.status,
             floor(extract(epoch from ((s.body->>'timestamp')::timestamptz - ${firstPublish}::timestamptz))
                   / ${widthS})::int as index,
             extract(epoch from c.applied_at - (s.body->>'timestamp')::timestamptz)::float8 as lag_s
        from stock_change c join sale s using (event_id)
    )
    select channel, index, count(*)::int as changes,
           count(*) filter (where status = 'applied')::int as applied,
           count(*) filter (where status = 'failed')::int as failed,
           percentile_cont(0.5) within group (order by lag_s) filter (where status = 'applied') as p50,
           percentile_cont(0.99) within group (order by lag_s) filter (where status = 'applied') as p99,
           max(lag_s) filter (where status = 'applied') as max
      from lag group by grouping sets ((channel, index), (channel))
     order by channel, index nulls first`;
  return rows.map((r) => ({
    channel: r.channel,
    index: r.index ?? -1,
    changes: r.changes,
    applied: r.applied,
    failed: r.failed,
    p50: r.p50 ?? NaN,
    p99: r.p99 ?? NaN,
    max: r.max ?? NaN,
  }));
}

/** Age in seconds of the oldest sale whose change on `channel` is still open (0 when none is). */
export async function oldestOpenAgeS(sql: postgres.Sql, channel: string): Promise<number> {
  const [row] = await sql<{ age: number | null }[]>`
    select extract(epoch from now() - min((s.body->>'timestamp')::timestamptz))::float8 as age
      from stock_change c join sale s using (event_id)
     where c.channel = ${channel} and c.status in ('pending', 'sending')`;
  return row.age ?? 0;
}

/**
 * Flat figures of one channel's lag (keys start with `prefix`): the whole run's, the worst window's p99, and a
 * timeline `"<end of window>s:p50/p99/max"` (an `+N open` suffix where changes of that
 * window were not applied yet), e.g. `30s:0.12/0.41/0.93 60s:0.11/0.38/0.88`.
 */
export function lagFigures(
  windows: readonly LagWindow[],
  channel: string,
  prefix: string,
  widthS: number,
  streamS: number,
): Record<string, number | string> {
  const mine = windows.filter((w) => w.channel === channel);
  const all = mine.find((w) => w.index === -1);
  const timed = mine.filter((w) => w.index >= 0);
  const open = (w: LagWindow) => w.changes - w.applied - w.failed;
  return {
    [`${prefix}_changes`]: all?.changes ?? 0,
    [`${prefix}_changes_applied`]: all?.applied ?? 0,
    [`${prefix}_changes_failed`]: all?.failed ?? 0,
    [`${prefix}_lag_p50_s`]: round(all?.p50 ?? NaN),
    [`${prefix}_lag_p99_s`]: round(all?.p99 ?? NaN),
    [`${prefix}_lag_max_s`]: round(all?.max ?? NaN),
    [`${prefix}_lag_p99_worst_window_s`]: round(timed.length ? Math.max(...timed.map((w) => w.p99)) : NaN),
    [`${prefix}_lag_timeline_p50_p99_max_s`]: timed.map((w) => {
      const end = Math.min((w.index + 1) * widthS, Math.round(streamS));
      const rest = open(w) > 0 ? ` +${open(w)} open` : "";
      return `${end}s:${round(w.p50)}/${round(w.p99)}/${round(w.max)}${rest}`;
    }).join(" "),
  };
}

/** Backend pids of the connections whose client (this host) port is one of `ports`. */
export async function backendPids(sql: postgres.Sql, ports: readonly number[]): Promise<number[]> {
  if (ports.length === 0) return [];
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where client_port = any(${ports}::int[])`;
  return rows.map((r) => r.pid);
}

// ---------------------------------------------------------------------------
// What the ledger and the server wrote

/** Rows inserted, updated and deleted so far, per table of one schema (pg_stat_user_tables). */
export type TableWrites = Record<string, { ins: number; upd: number; del: number }>;

/**
 * The ledger schema's row counters. Backends publish their counters when a transaction
 * ends, at most once a second, and an idle backend up to 10 s later (Postgres 15); read
 * this after the service's backends have exited (they publish on exit) for a count
 * that is complete.
 */
export async function tableWrites(sql: postgres.Sql, schema: string): Promise<TableWrites> {
  await sql`select pg_stat_force_next_flush()`; // this backend's own counters (Postgres ≥ 15)
  await sql`select pg_stat_clear_snapshot()`;
  const rows = await sql<{ relname: string; ins: string; upd: string; del: string }[]>`
    select relname, n_tup_ins as ins, n_tup_upd as upd, n_tup_del as del
      from pg_stat_user_tables where schemaname = ${schema}`;
  return Object.fromEntries(
    rows.map((r) => [r.relname, { ins: Number(r.ins), upd: Number(r.upd), del: Number(r.del) }]),
  );
}

/** Rows written per sale between two readings: the total and a per-table breakdown string. */
export function writesPerSale(
  before: TableWrites,
  after: TableWrites,
  sales: number,
): { total: number; byTable: string } {
  let total = 0;
  const parts: string[] = [];
  for (const [table, a] of Object.entries(after).sort()) {
    const b = before[table] ?? { ins: 0, upd: 0, del: 0 };
    const d = { ins: a.ins - b.ins, upd: a.upd - b.upd, del: a.del - b.del };
    const rows = d.ins + d.upd + d.del;
    total += rows;
    if (rows > 0) {
      parts.push(
        `${table}=${round(rows / sales)}(i${round(d.ins / sales)}/u${round(d.upd / sales)}/d${
          round(d.del / sales)
        })`,
      );
    }
  }
  return { total: total / sales, byTable: parts.join(" ") };
}

/** The server's current WAL insert position. */
export async function walLsn(sql: postgres.Sql): Promise<string> {
  const [row] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
  return row.lsn;
}

/** WAL bytes written between two positions (server-wide). */
export async function walBytes(sql: postgres.Sql, from: string, to: string): Promise<number> {
  const [row] = await sql<
    { bytes: string }[]
  >`select pg_wal_lsn_diff(${to}::pg_lsn, ${from}::pg_lsn) as bytes`;
  return Number(row.bytes);
}

/**
 * For every MercadoLibre change whose sale is at or after `from`: how many stock writes MeLi received between
 * the change's creation (custody) and its `applied_at` (`putTimes`: when each PUT arrived, ms, sorted). A
 * change still open counts every write since it was created: one left waiting too long breaks the bound too.
 * Returns the largest count (0 when none), the lag of the change it was seen on and how many were checked.
 */
export async function meliWritesBeforeApplied(
  sql: postgres.Sql,
  putTimes: readonly number[],
  from: Date,
): Promise<{ max: number; lagS: number; checked: number }> {
  const rows = await sql<{ created_ms: number; applied_ms: number | null; sale_ms: number }[]>`
    select extract(epoch from c.created_at)::float8 * 1000 as created_ms,
           extract(epoch from c.applied_at)::float8 * 1000 as applied_ms,
           extract(epoch from (s.body->>'timestamp')::timestamptz)::float8 * 1000 as sale_ms
      from stock_change c join sale s using (event_id)
     where c.channel = 'mercadolibre' and c.status <> 'failed'
       and (s.body->>'timestamp')::timestamptz >= ${from}::timestamptz`;
  // Index of the first PUT that arrived after `ms`.
  const after = (ms: number) => {
    let lo = 0, hi = putTimes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (putTimes[mid] <= ms) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  let max = 0, lagS = NaN;
  for (const r of rows) {
    const until = r.applied_ms ?? Infinity;
    const writes = after(until) - after(r.created_ms);
    if (writes > max) [max, lagS] = [writes, (Math.min(until, Date.now()) - r.sale_ms) / 1000];
  }
  return { max, lagS, checked: rows.length };
}
