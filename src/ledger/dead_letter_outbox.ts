/**
 * The ledger's outbox of DLQ copies. A change that fails for good is marked
 * `dead_letter_due` in the same transaction that makes it `failed`
 * (DispatchStore.record), and the mark is cleared only once its sale's copy is
 * confirmed in the DLQ. A process killed between the two leaves the mark, and a
 * later sweep publishes the copy: copies are at least once (a duplicate is
 * harmless: replaying either re-arms the same change).
 *
 * Read through the partial index `stock_change_dead_letter_due`, so neither the sweep
 * nor the gauge ever scans the change history.
 */
import type { Sql } from "postgres";
import type { FailedChange } from "../model/batch.ts";

/** Copies still due, per channel (the metrics gauge). */
export interface DueCopies {
  channel: string;
  count: number;
}

/** Reads and clears the DLQ copies still due. */
export class DeadLetterOutbox {
  constructor(private readonly sql: Sql) {}

  /**
   * Up to `limit` failed changes of `channel` whose copy is still due and that failed
   * more than `olderThanMs` ago (younger ones are the normal path's, still on their
   * way), oldest first, each with its sale as the copy needs it.
   */
  async due(channel: string, olderThanMs: number, limit = 100): Promise<FailedChange[]> {
    const rows = await this.sql<
      {
        event_id: string;
        channel: string;
        sku: string;
        tienda_id: string;
        error_reason: string | null;
        error: string | null;
        attempts: number;
        body: unknown;
      }[]
    >`
      select s.event_id, s.channel, s.sku, s.tienda_id, s.error_reason, s.error, s.attempts, sale.body
        from stock_change s join sale using (event_id)
       where s.channel = ${channel} and s.dead_letter_due and s.status = 'failed'
         and s.updated_at < now() - ${Math.max(0, Math.round(olderThanMs))} * interval '1 millisecond'
       order by s.updated_at, s.id
       limit ${limit}`;
    return rows.map((r) => ({
      eventId: r.event_id,
      channel: r.channel,
      sku: r.sku,
      tiendaId: r.tienda_id,
      reason: r.error_reason ?? "unknown",
      error: r.error ?? "",
      attempts: r.attempts,
      body: r.body,
    }));
  }

  /** Clears the mark of changes whose copy the DLQ confirmed. */
  async copied(failed: readonly FailedChange[]): Promise<void> {
    if (failed.length === 0) return;
    const keys = failed.map((f) => ({ event_id: f.eventId, channel: f.channel, sku: f.sku }));
    await this.sql`
      update stock_change s set dead_letter_due = false
        from jsonb_to_recordset(${this.sql.json(keys)}::jsonb) as k(event_id text, channel text, sku text)
       where s.event_id = k.event_id and s.channel = k.channel and s.sku = k.sku and s.dead_letter_due`;
  }

  /** Copies still due, per channel. */
  async countDue(): Promise<DueCopies[]> {
    const rows = await this.sql<{ channel: string; n: number }[]>`
      select channel, count(*)::int as n from stock_change where dead_letter_due group by channel`;
    return rows.map((r) => ({ channel: r.channel, count: r.n }));
  }
}
