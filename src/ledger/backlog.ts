/**
 * The ledger's backlog: changes not applied yet, by channel and status.
 *
 * Read from the two partial indexes (pending in `stock_change_due`, sending and
 * failed in `stock_change_open`) so a scrape never scans applied history, and by one
 * backend: with tens of thousands of changes pending (MercadoLibre trails by design),
 * Postgres plans the count with two parallel workers, three processes counting on
 * the cores that dispatch (docs/BENCHMARKS.md, issue #15). A count for a gauge
 * is not worth them.
 */
import type { Sql } from "postgres";

/** Changes not applied yet, per channel and status. */
export interface BacklogCount {
  channel: string;
  status: "pending" | "sending" | "failed";
  count: number;
}

/** Counts the backlog (metrics gauge and status page share it). */
export async function ledgerBacklog(sql: Sql): Promise<BacklogCount[]> {
  const rows = await sql.begin(async (tx) => {
    await tx`set local max_parallel_workers_per_gather = 0`;
    return await tx<{ channel: string; status: BacklogCount["status"]; n: number }[]>`
    select channel, 'pending' as status, count(*)::int as n
      from stock_change where status = 'pending' group by channel
    union all
    select channel, status, count(*)::int as n
      from stock_change where status in ('sending', 'failed') group by channel, status`;
  });
  return rows.map((r) => ({ channel: r.channel, status: r.status, count: r.n }));
}
