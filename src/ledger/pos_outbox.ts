/**
 * The POS outbox in the ledger (issue #14): messages for the POS written in the same transaction as the
 * order they tell of (src/ledger/orders.ts), handed to the publisher under a lease, and marked published
 * once RabbitMQ confirmed them. A crash between the confirm and the mark publishes a message again under
 * the same `message_id` (at least once; the POS deduplicates by it).
 */
import type { Sql } from "postgres";

/** One message waiting for the POS. */
export interface OutboxMessage {
  id: string;
  messageId: string;
  routingKey: string;
  body: unknown;
  attempts: number;
}

/** The outbox's rows. */
export class PosOutboxStore {
  constructor(private readonly sql: Sql) {}

  /**
   * Takes up to `limit` due messages, oldest first, under a lease of `leaseMs` (another replica's loop skips
   * them until it ends: a publisher that died mid-way leaves them to the next).
   */
  async claim(limit: number, leaseMs: number): Promise<OutboxMessage[]> {
    const rows = await this.sql<
      { id: string; message_id: string; routing_key: string; body: unknown; attempts: number }[]
    >`
      update pos_outbox o set lease_until = now() + ${leaseMs} * interval '1 millisecond', attempts = o.attempts + 1
        from (select id from pos_outbox
               where published_at is null and next_attempt_at <= now()
                 and (lease_until is null or lease_until < now())
               order by id limit ${limit} for update skip locked) due
       where o.id = due.id
      returning o.id::text, o.message_id, o.routing_key, o.body, o.attempts`;
    return rows.sort((a, b) => Number(a.id) - Number(b.id)).map((r) => ({
      id: r.id,
      messageId: r.message_id,
      routingKey: r.routing_key,
      body: r.body,
      attempts: r.attempts,
    }));
  }

  /** RabbitMQ confirmed these messages. */
  async published(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.sql`
      update pos_outbox set published_at = now(), lease_until = null, last_error = null
       where id = any(${ids}::bigint[])`;
  }

  /** A publish that was not confirmed: tried again after `waitMs`. */
  async failed(id: string, error: string, waitMs: number): Promise<void> {
    await this.sql`
      update pos_outbox set lease_until = null, last_error = ${error.slice(0, 1000)},
             next_attempt_at = now() + ${Math.max(0, Math.round(waitMs))} * interval '1 millisecond'
       where id = ${id}`;
  }

  /** Messages not published yet, by routing key, and the age of the oldest (metrics, status). */
  async unpublished(): Promise<{ routingKey: string; count: number; oldestSeconds: number }[]> {
    const rows = await this.sql<{ routing_key: string; count: number; oldest: number }[]>`
      select routing_key, count(*)::int as count,
             coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as oldest
        from pos_outbox where published_at is null group by routing_key`;
    return rows.map((r) => ({ routingKey: r.routing_key, count: r.count, oldestSeconds: r.oldest }));
  }
}
