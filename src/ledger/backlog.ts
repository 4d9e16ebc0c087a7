/**
 * The ledger's backlog: changes not applied yet, by channel and status.
 *
 * Read from the two partial indexes (pending in `stock_change_due`, sending and
 * failed in `stock_change_open`) so a scrape never scans applied history.
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
  const rows = await sql<{ channel: string; status: BacklogCount["status"]; n: number }[]>`
    select channel, 'pending' as status, count(*)::int as n
      from stock_change where status = 'pending' group by channel
    union all
    select channel, status, count(*)::int as n
      from stock_change where status in ('sending', 'failed') group by channel, status`;
  return rows.map((r) => ({ channel: r.channel, status: r.status, count: r.n }));
}
