/**
 * The dispatcher's side of the ledger: claim pending changes into a batch with
 * its idempotency key (persisted BEFORE anything is sent), re-claim batches
 * whose lease expired (a crashed replica's, or one waiting to be re-sent with
 * the same key), and record what the marketplace said.
 *
 * All claims use FOR UPDATE SKIP LOCKED, so any number of replicas can
 * dispatch the same channel without sending a change twice.
 */
import type postgres from "postgres";
import type { Sql } from "postgres";
import { exponential } from "../resilience/backoff.ts";
import {
  type BatchOutcome,
  type ChangeOutcome,
  type ClaimedBatch,
  type FailedChange,
  IDEMPOTENCY_SAFE_HOURS,
  KeyWindowPassedError,
  LeaseLostError,
  type LogicalChange,
  OUTCOME_UNKNOWN,
  SAME_KEY_CHANNELS,
} from "../model/batch.ts";

/**
 * Most changes one batch carries. A listing is claimed with all its due changes (a marketplace write
 * costs the same for one change as for a hundred, and a listing claimed in part stays the oldest and is
 * written again at once, out of its turn); this only bounds a batch after a long outage, when a few
 * listings can have tens of thousands due. Their rest goes in the next batch.
 */
export const MAX_CHANGES_PER_BATCH = 20_000;

/** Retry and lease policy. */
export interface DispatchPolicy {
  /** Attempts per change before it fails as `exhausted`. */
  maxAttempts: number;
  /** Lease on a batch in flight; a crashed replica's batch is re-sent after it. */
  leaseMs: number;
  /** First backoff step for a change sent back to pending. */
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/**
 * Wait before a change sent back to pending is due again, by its attempts so far: the
 * base after the first, doubling to the max, ±20 %.
 */
export function backoffMs(
  attempt: number,
  policy: Pick<DispatchPolicy, "backoffBaseMs" | "backoffMaxMs">,
): number {
  return exponential({
    baseMs: policy.backoffBaseMs,
    maxMs: policy.backoffMaxMs,
    firstAttempt: 1,
    jitter: 0.2,
  })(attempt);
}

/** One listing's claimed changes, grouped by the claim itself (see {@link DispatchStore.claimBatch}). */
interface ClaimedListing {
  tienda_id: string;
  sku: string;
  producto_id: string | null;
  delta: number;
  attempts: number;
  oldest_created_at: Date;
  change_ids: string[];
  /** Where the listing's turn came in this claim (its oldest due change, or just after its last claim). */
  turn: string;
}

function toLogicalChanges(rows: ClaimedListing[]): LogicalChange[] {
  // In turn order, as the claim picks them: channels that write one listing at a time (MercadoLibre,
  // 5 writes/s) write in this order, and a listing claimed for its old sale must not wait behind the
  // younger ones claimed with it. Sorted by store and SKU, the oldest could be written last: up to a
  // batch of writes past the bound a pass over the listings sets (docs/BENCHMARKS.md, issue #15). Ties
  // (two listings just after the same claim) go by their oldest change; the change ids are unique, so
  // the order is total and the payload stored with the batch keeps it.
  const key = (row: ClaimedListing) => [BigInt(row.turn), BigInt(row.change_ids[0])];
  const sorted = rows.map((row) => ({ row, key: key(row) })).sort((a, b) =>
    a.key[0] !== b.key[0] ? (a.key[0] < b.key[0] ? -1 : 1) : a.key[1] < b.key[1] ? -1 : 1
  );
  return sorted.map(({ row }): LogicalChange => ({
    tiendaId: row.tienda_id,
    sku: row.sku,
    productoId: row.producto_id,
    delta: row.delta,
    changeIds: row.change_ids,
    attempts: row.attempts,
    oldestCreatedAt: row.oldest_created_at,
  }));
}

function toJson(value: unknown): postgres.JSONValue {
  return value as postgres.JSONValue;
}

/** Ledger operations for one dispatcher. */
export class DispatchStore {
  constructor(private readonly sql: Sql, private readonly policy: DispatchPolicy) {}

  /** How long a claim or a renewal holds a batch (DISPATCH_LEASE). */
  get leaseMs(): number {
    return this.policy.leaseMs;
  }

  /**
   * Pushes the lease of a batch its owner is still working on one lease into the future.
   * False when the batch is no longer this owner's to hold (taken over, recorded, released):
   * renewing is fenced by the owner token like every other write.
   */
  async renewLease(batch: ClaimedBatch): Promise<boolean> {
    const rows = await this.sql`
      update sync_batch set lease_until = now() + ${this.policy.leaseMs} * interval '1 millisecond'
       where id = ${batch.id} and owner = ${batch.owner} and status = 'sending'
      returning id`;
    return rows.length > 0;
  }

  /**
   * Claims up to `maxListings` listings, each with all its due pending changes (up to
   * {@link MAX_CHANGES_PER_BATCH} in the batch), for `channel` into a new batch with a fresh
   * idempotency key. Null when idle.
   * @param options.turns keep each listing's turn (for a channel that writes listings one at a time, in
   *   the batch's order): see below and migration 15. Without, a listing goes by its oldest due change.
   * @param options.maxRows due changes looked at to pick the listings (the oldest first).
   * @param options.look whether to look for due work before opening the claim's transaction (default true);
   *   a loop whose last claim found work need not.
   */
  async claimBatch(
    channel: string,
    maxListings: number,
    options: { turns?: boolean; maxRows?: number; look?: boolean } = {},
  ): Promise<ClaimedBatch | null> {
    const maxRows = options.maxRows ?? maxListings * 20;
    const turns = options.turns ?? false;
    // Idle loops poll often: look before opening a transaction that writes. A loop whose last claim
    // found work does not look (`look: false`): under load the look found work every time, one more
    // statement per batch for nothing.
    if (options.look ?? true) {
      const [due] = await this.sql<{ due: boolean }[]>`
        select exists (
          select 1 from stock_change
           where channel = ${channel} and status = 'pending' and next_attempt_at <= now()
        ) as due`;
      if (!due.due) return null;
    }
    return await this.sql.begin(async (tx) => {
      const key = crypto.randomUUID();
      const owner = crypto.randomUUID();
      const [batch] = await tx<{ id: string }[]>`
        insert into sync_batch (channel, idempotency_key, payload, status, lease_until, owner)
        values (${channel}, ${key}, '[]', 'sending', now() + ${this.policy.leaseMs} * interval '1 millisecond',
                ${owner})
        returning id`;
      // One statement: pick the listings first without locking anything, then lock only their due rows
      // (skipping rows another replica holds), then mark them sending: locks, and their WAL, are spent only
      // on rows this batch will carry, and the locked ids never leave Postgres. (They used to come back, up
      // to MAX_CHANGES_PER_BATCH of them, only to be sent again as the update's parameter: socket reads that
      // Deno keeps in malloc's arena, docs/BENCHMARKS.md.)
      //
      // The join of a listing's due rows must be a hash join, whatever the statistics say. On a
      // ledger Postgres has not analyzed (autovacuum off, or a table that grew since), the planner
      // expects a handful of due rows and nests the loop: 250 listings × every due row, 2 s per
      // claim at 27 000 due rows (docs/BENCHMARKS.md). `set local` ends with this transaction, whose
      // other statements join nothing. The update goes by id on the primary key (`= any(array(…))`, computed
      // once), not by a join, so it needs no nested loop either.
      //
      // Grouped per listing by Postgres, not returned row by row: a claim may take up to
      // MAX_CHANGES_PER_BATCH changes (20 000, for Shopify once it trails), and one row per change was ~190
      // bytes on the wire each (two UUIDs, a timestamp…), megabytes per claim that the service
      // read only to sum them up. Deno keeps the 64 KiB socket buffers such a read fills, so the
      // service's native heap grew with the largest claims (docs/BENCHMARKS.md, issue #15's peak
      // RSS). One row per listing with its change ids is ~8 bytes per change.
      await tx`set local enable_nestloop = off`;
      if (turns) {
        // With turns, one claim of the channel at a time (across lanes and replicas), each seeing the last
        // one committed: a claim running beside another saw that one's listings still pending, judged a
        // listing by changes the other was taking, put it first, and sent its one newer change at once,
        // ahead of every listing waiting (written twice, seconds apart). A claim takes milliseconds, at
        // MercadoLibre's pace of a claim or two a second. Keyed by schema: ledgers may share a database.
        await tx`select pg_advisory_xact_lock(hashtext(current_schema() || '.claim.' || ${channel}))`;
      }
      // A listing's turn is its oldest due change or, with `turns`, just after its last claim when that change
      // is no newer than what the claim could see: custody commits ids out of order (two writers), and a
      // change that was in flight at its listing's claim must not put the listing first again, written twice
      // in one pass while the others wait (migration 15). Turns are doubled so "just after" is an integer
      // between ids. Looked up per listing in a subquery, not joined: with nested loops off a join would read
      // every turn. Kept only where the order of writes is the channel's pace (MercadoLibre): for Shopify it
      // was ~1.8 row updates per sale for nothing (docs/BENCHMARKS.md).
      const lastTurn = turns
        ? tx`coalesce((
                select t.claimed_through from listing_turn t
                 where t.channel = ${channel} and t.tienda_id = c.tienda_id and t.sku = c.sku), 0)`
        : tx`0`;
      const keepTurns = turns
        ? tx`, turned as (
            -- In key order, so two claims that share a listing cannot lock their turns crosswise.
            insert into listing_turn (channel, tienda_id, sku, claimed_through)
            select distinct on (tienda_id, sku) ${channel}, tienda_id, sku, (select through from horizon)
              from claimed order by tienda_id, sku
            on conflict (channel, tienda_id, sku) do update set claimed_through = excluded.claimed_through
          )`
        : tx``;
      const rows = await tx<ClaimedListing[]>`
        with horizon as (
          select coalesce(max(id), 0) as through from stock_change
        ), listings as (
          select tienda_id, sku, greatest(2 * first_id, 2 * ${lastTurn} + 1) as turn
            from (
              select tienda_id, sku, min(id) as first_id from (
                select id, tienda_id, sku from stock_change
                 where channel = ${channel} and status = 'pending' and next_attempt_at <= now()
                 order by next_attempt_at, id
                 limit ${maxRows}
              ) candidates
              group by tienda_id, sku
            ) c
           order by turn limit ${maxListings}
        ), due as (
          select s.id from stock_change s join listings l using (tienda_id, sku)
           where s.channel = ${channel} and s.status = 'pending' and s.next_attempt_at <= now()
           order by s.id
           limit ${MAX_CHANGES_PER_BATCH}
           for update of s skip locked
        ), claimed as (
          update stock_change s
             set status = 'sending', batch_id = ${batch.id}, attempts = s.attempts + 1, updated_at = now()
           where s.id = any(array(select id from due))
          returning s.id, s.tienda_id, s.sku, s.producto_id, s.delta, s.attempts, s.created_at
        )${keepTurns}
        select c.tienda_id, c.sku,
               (array_agg(c.producto_id order by c.id) filter (where c.producto_id is not null))[1] as producto_id,
               sum(c.delta)::float8 as delta, max(c.attempts) as attempts,
               min(c.created_at) as oldest_created_at, array_agg(c.id order by c.id)::text[] as change_ids,
               min(l.turn)::text as turn
          from claimed c join listings l using (tienda_id, sku)
         group by c.tienda_id, c.sku`;
      if (rows.length === 0) {
        await tx`delete from sync_batch where id = ${batch.id}`;
        return null;
      }
      const changes = toLogicalChanges(rows);
      await tx`update sync_batch set payload = ${tx.json(toJson(changes))} where id = ${batch.id}`;
      return {
        id: String(batch.id),
        channel,
        idempotencyKey: key,
        changes,
        request: null,
        sends: 0,
        resend: false,
        owner,
      };
    });
  }

  /**
   * Takes over one batch of `channel` whose lease has expired: a batch waiting
   * for a same-key re-send, or one left in flight by a crashed replica.
   */
  async reclaimBatch(channel: string): Promise<ClaimedBatch | null> {
    return await this.sql.begin(async (tx) => {
      const [row] = await tx<
        {
          id: string;
          idempotency_key: string;
          payload: LogicalChange[];
          request: unknown;
          channel_attempts: number;
          sent_at: Date | null;
        }[]
      >`
        select id, idempotency_key, payload, request, channel_attempts, sent_at from sync_batch
         where channel = ${channel} and status = 'sending' and lease_until <= now()
         order by lease_until limit 1
         for update skip locked`;
      if (!row) return null;
      const owner = crypto.randomUUID();
      await tx`
        update sync_batch set lease_until = now() + ${this.policy.leaseMs} * interval '1 millisecond',
               owner = ${owner}
         where id = ${row.id}`;
      const changes = row.payload.map((c) => ({ ...c, oldestCreatedAt: new Date(c.oldestCreatedAt) }));
      return {
        id: String(row.id),
        channel,
        idempotencyKey: row.idempotency_key,
        changes,
        request: row.request ?? null,
        sends: row.channel_attempts,
        resend: row.sent_at !== null,
        owner,
      };
    });
  }

  /**
   * Marks a send (every send, first or repeated): persists the request if this
   * is the first, renews the lease and counts the attempt. Returns the request
   * to send, which is the one stored first: a re-send repeats it exactly.
   * @throws LeaseLostError when another replica owns the batch now.
   * @throws KeyWindowPassedError when a same-key channel's batch was first sent
   *   longer than {@link IDEMPOTENCY_SAFE_HOURS} ago (checked on every send, so a
   *   batch reclaimed after a long stop is never re-sent under a forgotten key).
   */
  async markSending(batch: ClaimedBatch, request: unknown): Promise<unknown> {
    const keyed = SAME_KEY_CHANNELS.includes(batch.channel);
    const [row] = await this.sql<{ request: unknown; channel_attempts: number }[]>`
      update sync_batch
         set request = coalesce(request, ${this.sql.json(toJson(request))}),
             sent_at = coalesce(sent_at, now()),
             channel_attempts = channel_attempts + 1,
             lease_until = now() + ${this.policy.leaseMs} * interval '1 millisecond'
       where id = ${batch.id} and owner = ${batch.owner} and status = 'sending'
         and (not ${keyed} or sent_at is null
              or sent_at >= now() - ${IDEMPOTENCY_SAFE_HOURS} * interval '1 hour')
      returning request, channel_attempts`;
    if (!row) {
      const [ours] = await this.sql`
        select 1 from sync_batch where id = ${batch.id} and owner = ${batch.owner} and status = 'sending'`;
      if (ours) {
        throw new KeyWindowPassedError(
          `batch ${batch.id} was first sent more than ${IDEMPOTENCY_SAFE_HOURS} h ago: ` +
            "its idempotency key may have expired, so it is not sent again",
        );
      }
      throw new LeaseLostError(`batch ${batch.id} was taken over by another replica`);
    }
    batch.request = row.request;
    batch.sends = row.channel_attempts;
    batch.resend = true;
    return row.request;
  }

  /**
   * Records a batch outcome in one transaction. Returns the changes that have
   * just failed for good, each marked `dead_letter_due` in the same transaction:
   * their DLQ copies are owed until DeadLetterOutbox.copied clears the mark.
   */
  async record(
    batch: ClaimedBatch,
    outcome: Exclude<BatchOutcome, { kind: "release" }>,
  ): Promise<FailedChange[]> {
    return await this.sql.begin(async (tx) => {
      // Fencing: only the current owner records; the row lock keeps a reclaim out meanwhile.
      const [owned] = await tx<{ stale: boolean }[]>`
        select sent_at < now() - ${IDEMPOTENCY_SAFE_HOURS} * interval '1 hour' as stale
          from sync_batch where id = ${batch.id} and owner = ${batch.owner} and status = 'sending'
        for update`;
      if (!owned) throw new LeaseLostError(`batch ${batch.id} was taken over by another replica`);
      const failed: { ids: string[]; reason: string; error: string }[] = [];
      let givenUp = false;
      if (outcome.kind === "resend") {
        // Throttling, a concurrent request under our key or bad credentials are
        // not the request's fault: they do not use up an attempt.
        if (!outcome.countsAsAttempt) batch.sends -= 1;
        const exhausted = outcome.countsAsAttempt && batch.sends >= this.policy.maxAttempts;
        givenUp = exhausted || owned.stale;
        // Past Shopify's idempotency window the same key would be a fresh request.
        if (!exhausted && !owned.stale) {
          // An adapter's own backoff for a failed send is capped like any retry (DISPATCH_BACKOFF_MAX);
          // waits the marketplace asked for (throttling, Retry-After) are kept as they are.
          const waitMs = outcome.countsAsAttempt
            ? Math.min(outcome.waitMs, this.policy.backoffMaxMs)
            : outcome.waitMs;
          await tx`
            update sync_batch
               set lease_until = now() + ${Math.max(0, Math.round(waitMs))} * interval '1 millisecond',
                   error = ${outcome.error}, channel_attempts = ${batch.sends}
             where id = ${batch.id}`;
          return [];
        }
        // The request reached (or may have reached) the marketplace and no answer
        // said whether it was applied: never re-sent under a new key (that could
        // apply it twice). A DLQ replay within the key window re-opens the batch
        // under this same key (custody); after it, an operator checks the listing
        // and resyncs. Changes the adapter decided without sending keep their own outcome.
        const why = owned.stale
          ? `still unanswered after ${IDEMPOTENCY_SAFE_HOURS} h (Shopify keeps idempotency keys ~24 h)`
          : `gave up after ${batch.sends} sends without a definite answer`;
        const unknown: ChangeOutcome = {
          kind: "failed",
          reason: OUTCOME_UNKNOWN,
          error: `${why} (last: ${outcome.error}); the marketplace may or may not have applied it: ` +
            "check the listing and resync",
        };
        outcome = {
          kind: "done",
          results: batch.changes.map((_, i) => outcome.kind === "resend" && outcome.decided?.[i] || unknown),
        };
      }
      if (outcome.kind === "done") {
        // A batch given up without a definite answer is 'failed'; any answered one is 'done'.
        const batchStatus = givenUp ? "failed" : "done";
        await tx`
          update sync_batch set status = ${batchStatus}, finished_at = now(),
                 response = ${outcome.response === undefined ? null : tx.json(toJson(outcome.response))}
           where id = ${batch.id}`;
        // Set-based updates: one statement per kind, however many listings the batch holds.
        // One entry per listing (its change ids and what was applied or why it waits), not per change:
        // the batch's JSON is what Postgres parses, and a listing's changes share one result.
        const applied: { ids: string[]; result: unknown; answered_ms_ago: number | null }[] = [];
        const retried: { ids: string[]; wait_ms: number; error: string; reason: string }[] = [];
        for (const [index, result] of outcome.results.entries()) {
          const change = batch.changes[index];
          if (result.kind === "applied") {
            const stored = {
              quantity_after: result.quantityAfter ?? null,
              batch_id: batch.id,
              detail: result.detail ?? null,
            };
            applied.push({
              ids: change.changeIds,
              result: stored,
              // A duration, not a time: Postgres's clock and the service's need not agree.
              answered_ms_ago: result.answeredAt === undefined
                ? null
                : Math.max(0, Date.now() - result.answeredAt),
            });
          } else if (result.kind === "retry") {
            // A listing's changes share one write but not their history: a sale that arrived since the
            // listing's last try has used one attempt, an old one may have used them all. Each goes by its
            // own count: the retried update below takes those with attempts left, and the ones it leaves
            // sending have none left, so the failed update after it gives them up (exhausted).
            const wait = Math.max(
              result.waitMs ?? 0,
              backoffMs(Math.min(change.attempts, this.policy.maxAttempts - 1), this.policy),
            );
            retried.push({
              ids: change.changeIds,
              wait_ms: wait,
              error: result.error,
              reason: result.reason,
            });
            if (change.attempts >= this.policy.maxAttempts) {
              failed.push({
                ids: change.changeIds,
                reason: "exhausted",
                error: `gave up after ${change.attempts} attempts: ${result.error}`,
              });
            }
          } else {
            failed.push({ ids: change.changeIds, reason: result.reason, error: result.error });
          }
        }
        if (applied.length > 0) {
          await tx`
            update stock_change s
               set status = 'applied', updated_at = now(), error = null, error_reason = null, result = x.result,
                   applied_at = coalesce(clock_timestamp() - x.answered_ms_ago * interval '1 millisecond', now())
              from jsonb_to_recordset(${tx.json(toJson(applied))}::jsonb)
                as x(ids bigint[], result jsonb, answered_ms_ago float8)
             where s.id = any(x.ids) and s.batch_id = ${batch.id} and s.status = 'sending'`;
        }
        if (retried.length > 0) {
          await tx`
            update stock_change s
               set status = 'pending', batch_id = null, updated_at = now(), error = x.error,
                   error_reason = x.reason, next_attempt_at = now() + x.wait_ms * interval '1 millisecond'
              from jsonb_to_recordset(${tx.json(toJson(retried))}::jsonb)
                as x(ids bigint[], wait_ms integer, error text, reason text)
             where s.id = any(x.ids) and s.batch_id = ${batch.id} and s.status = 'sending'
               and s.attempts < ${this.policy.maxAttempts}`;
        }
      }
      const out: FailedChange[] = [];
      for (const f of failed) {
        const rows = await tx<
          {
            event_id: string;
            channel: string;
            sku: string;
            tienda_id: string;
            attempts: number;
            body: unknown;
          }[]
        >`
          update stock_change s
             set status = 'failed', updated_at = now(), error = ${f.error}, error_reason = ${f.reason},
                 dead_letter_due = true
            from sale
           where s.id = any(${f.ids}::bigint[]) and sale.event_id = s.event_id
             and s.batch_id = ${batch.id} and s.status = 'sending'
          returning s.event_id, s.channel, s.sku, s.tienda_id, s.attempts, sale.body`;
        for (const r of rows) {
          out.push({
            eventId: r.event_id,
            channel: r.channel,
            sku: r.sku,
            tiendaId: r.tienda_id,
            reason: f.reason,
            error: f.error,
            attempts: r.attempts,
            body: r.body,
          });
        }
      }
      return out;
    });
  }

  /**
   * Abandons a batch that was never sent (e.g. shutdown, or nothing in it could
   * be resolved): its changes go back to pending; the unused key is retired.
   * Never call this for a batch that may have reached the marketplace.
   */
  /** Whether the batch is still being sent: claimed, its outcome not recorded yet. */
  async isSending(batchId: string): Promise<boolean> {
    return (await this.sql`select 1 from sync_batch where id = ${batchId} and status = 'sending'`).length > 0;
  }

  async release(batch: ClaimedBatch, waitMs = 0, error: string | null = null): Promise<void> {
    if (batch.resend || batch.sends > 0) {
      throw new Error(`batch ${batch.id} was sent; it must be re-sent, not released`);
    }
    await this.sql.begin(async (tx) => {
      const released = await tx`
        update sync_batch set status = 'superseded', finished_at = now(), error = ${error}
         where id = ${batch.id} and owner = ${batch.owner} and status = 'sending' and sent_at is null
        returning id`;
      if (released.length === 0) return; // taken over, or sent meanwhile: not ours to release
      await tx`
        update stock_change set status = 'pending', batch_id = null, attempts = greatest(attempts - 1, 0),
               updated_at = now(), error = coalesce(${error}, error),
               next_attempt_at = now() + ${Math.max(0, Math.round(waitMs))} * interval '1 millisecond'
         where batch_id = ${batch.id} and status = 'sending'`;
    });
  }
}
