/**
 * Custody: the step that makes the service responsible for a sale.
 *
 * Deliveries are grouped (up to `batchSize` events or `maxWaitMs`) into ONE
 * Postgres transaction that writes the sale and one `stock_change` row per
 * (enabled channel, SKU). Only after it commits does the broker ack them. A
 * redelivered event inserts nothing; a re-received event whose changes had
 * failed re-arms them (DLQ replay) without creating any it did not have, one
 * whose outcome is unknown re-opens its batch under the original idempotency
 * key while the marketplace still remembers it, and applied changes are never
 * touched.
 */
import type { Sql } from "postgres";
import type { ChannelName } from "../model/channel_name.ts";
import type { SaleEvent } from "../model/sale_event.ts";
import { logger } from "../log.ts";
import { IDEMPOTENCY_SAFE_HOURS, OUTCOME_UNKNOWN, SAME_KEY_CHANNELS } from "../model/batch.ts";
import { markError, type Span, withSpan } from "../tracing.ts";

const log = logger("ledger");

/** What custody did with one event. */
export type CustodyOutcome = "stored" | "duplicate" | "rearmed";

/** Postgres could not be reached or the transaction could not run: retry later. */
export class LedgerUnavailableError extends Error {
  override name = "LedgerUnavailableError";
}

/** Postgres refused this event's data (it would fail every time): dead-letter it. */
export class LedgerRejectedError extends Error {
  override name = "LedgerRejectedError";
}

/** Observers for batch size and duration (metrics). */
export interface CustodyObserver {
  batch(size: number, seconds: number): void;
  /** The POS recorded a marketplace order (its echo); `known`: the order was applied here before. */
  recorded?(origin: ChannelName, known: boolean): void;
}

/** A row of the custody statement's answer: what it did with one sale (or one of its changes). */
interface CustodyRow {
  event_id: string;
  kind: "stored" | "rearmed" | "kept" | "echo";
  /** kept: the change's channel and SKU; echo: whether the order is known. */
  detail: string | null;
  /** kept: the change's id. */
  change_id: string | null;
}

interface Waiter {
  event: SaleEvent;
  resolve(outcome: CustodyOutcome): void;
  reject(error: Error): void;
}

// SQLSTATE classes that mean "this data can never be stored", as opposed to
// "the database is unavailable right now".
const DATA_ERROR_CLASSES = ["22", "23", "54"];
const TRANSIENT_CODES = new Set(["40001", "40P01"]);

/** True when a postgres.js error is about the data rather than the connection. */
export function isDataError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" && code.length === 5 &&
    DATA_ERROR_CLASSES.includes(code.slice(0, 2));
}

/**
 * Groups events into custody transactions. `accept` resolves when the event's
 * transaction has committed, and rejects with {@link LedgerUnavailableError} or
 * {@link LedgerRejectedError}.
 */
export class Custody {
  #pending: Waiter[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight = new Set<Promise<void>>();

  constructor(
    private readonly sql: Sql,
    private readonly channels: readonly ChannelName[],
    private readonly options: {
      batchSize: number;
      maxWaitMs: number;
      /**
       * Custody transactions running at once. Events arriving meanwhile wait
       * and join the next (larger) batch instead of starting another writer.
       */
      maxWriters?: number;
      /**
       * Channels that follow some stores only (MeLi mirrors MELI_TIENDA_ID's stock, or
       * MELI_LOCATIONS' stores): sales at other stores create no change for them.
       */
      onlyStores?: Partial<Record<ChannelName, string[]>>;
    },
    private readonly observer?: CustodyObserver,
  ) {}

  /** Takes one event into custody (batched with others arriving meanwhile). */
  accept(event: SaleEvent): Promise<CustodyOutcome> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ event, resolve, reject });
      if (this.#pending.length >= this.options.batchSize) this.#flush();
      else this.#timer ??= setTimeout(() => this.#flush(), this.options.maxWaitMs);
    });
  }

  /** Writes whatever is waiting now and waits for every write in flight. */
  async drain(): Promise<void> {
    this.#flush();
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const maxWriters = this.options.maxWriters ?? Infinity;
    while (this.#pending.length > 0 && this.#inFlight.size < maxWriters) {
      const batch = this.#pending.splice(0, this.options.batchSize);
      const run = this.#write(batch).finally(() => {
        this.#inFlight.delete(run);
        // A writer is free: what queued up behind the busy ones goes now.
        if (this.#pending.length > 0) this.#flush();
      });
      this.#inFlight.add(run);
    }
  }

  /** One custody transaction (or its isolation into single ones), as a "custody batch" span. */
  #write(batch: Waiter[]): Promise<void> {
    const attributes = { "messaging.batch.message_count": batch.length };
    return withSpan("custody batch", attributes, (span) => this.#writeBatch(batch, span));
  }

  async #writeBatch(batch: Waiter[], span: Span): Promise<void> {
    const started = performance.now();
    try {
      const outcomes = await this.#writeWithRetry(batch.map((w) => w.event));
      this.observer?.batch(batch.length, (performance.now() - started) / 1000);
      const seen = new Set<string>();
      for (const w of batch) {
        // The same event twice in one batch: the second copy is a duplicate.
        const id = w.event.eventId;
        w.resolve(seen.has(id) ? "duplicate" : outcomes.get(id)!);
        seen.add(id);
      }
      if (span.isRecording()) {
        const count = (kind: CustodyOutcome) => [...outcomes.values()].filter((o) => o === kind).length;
        span.setAttributes({
          "marketplace_sync.outcome": "committed",
          "marketplace_sync.sales_new": count("stored"),
          "marketplace_sync.sales_rearmed": count("rearmed"),
          "marketplace_sync.sales_duplicate": batch.length - count("stored") - count("rearmed"),
        });
      }
    } catch (error) {
      if (isDataError(error) && batch.length > 1) {
        // One event Postgres refuses must not hold the others hostage: write
        // them one by one so only the culprit fails.
        log.warning("custody batch of {size} refused by Postgres ({error}); isolating", {
          size: batch.length,
          error: (error as Error).message,
        });
        span.setAttribute("marketplace_sync.outcome", "isolated");
        await Promise.all(batch.map((w) => this.#write([w])));
        return;
      }
      const wrapped = isDataError(error)
        ? new LedgerRejectedError(`Postgres refused the event: ${(error as Error).message}`)
        : new LedgerUnavailableError(`ledger unavailable: ${(error as Error).message}`);
      span.setAttribute("marketplace_sync.outcome", isDataError(error) ? "rejected" : "unavailable");
      markError(span, wrapped);
      for (const w of batch) w.reject(wrapped);
    }
  }

  async #writeWithRetry(events: SaleEvent[]): Promise<Map<string, CustodyOutcome>> {
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#writeOnce(events);
      } catch (error) {
        const code = (error as { code?: string }).code ?? "";
        if (!TRANSIENT_CODES.has(code) || attempt >= 3) throw error;
      }
    }
  }

  /**
   * Of the changes a replay left `outcome_unknown`, those still so now. A replay of
   * another sale of the same batch, committed meanwhile, may have re-opened it (this
   * statement then skipped the batch under its row lock): no warning for those.
   */
  async #stillUnknown(kept: CustodyRow[]): Promise<CustodyRow[]> {
    if (kept.length === 0) return kept;
    try {
      const open = await this.sql<{ id: string }[]>`
        select id::text from stock_change
         where id = any(${kept.map((k) => k.change_id!)}::bigint[])
           and status = 'failed' and error_reason = ${OUTCOME_UNKNOWN}`;
      const still = new Set(open.map((r) => r.id));
      return kept.filter((k) => still.has(k.change_id!));
    } catch {
      return kept; // the sale is stored either way; better a warning too many than none
    }
  }

  async #writeOnce(events: SaleEvent[]): Promise<Map<string, CustodyOutcome>> {
    // Same event twice in one batch (a duplicate publish): write it once. Rows
    // are sorted so concurrent batches lock keys in the same order (no deadlock).
    const unique = new Map<string, SaleEvent>();
    for (const e of events) if (!unique.has(e.eventId)) unique.set(e.eventId, e);
    const sorted = [...unique.values()].sort((a, b) =>
      a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0
    );
    // The batch as one JSON array. Each body goes in as the text received: serializing the
    // parsed body again was most of the service's work to send a batch (docs/BENCHMARKS.md).
    const sales = `[${
      sorted.map((e) => {
        const fields = JSON.stringify({
          event_id: e.eventId,
          identity_source: e.identitySource,
          tienda_id: e.tiendaId,
          items: e.items.map((item) => ({
            sku: item.sku,
            producto_id: item.productoId,
            delta: -item.quantity,
          })),
          echo_origin: e.origin?.channel ?? null,
          echo_order_id: e.origin?.orderId ?? null,
        });
        return `${fields.slice(0, -1)},"body":${e.body}}`;
      }).join(",")
    }]`;
    const channels = [...this.channels].sort();
    // Per channel a JSON list of its stores, or null for every store (a text[] cannot nest lists).
    const onlyStores = channels.map((c) => {
      const stores = this.options.onlyStores?.[c];
      return stores ? JSON.stringify(stores) : null;
    });
    // One statement, atomic on its own: the sales; for each NEW one its changes,
    // expanded in Postgres from the items rather than sent row by row (half the
    // JSON to build and parse, no BEGIN/COMMIT round trips); for each one already
    // in custody (a redelivery or a DLQ replay) its failed changes re-armed, its
    // outcome_unknown ones re-opened under their batch's key within the key
    // window, and applied ones never touched.
    const rows = await this.sql<CustodyRow[]>`
      with input as (
        -- text, then jsonb: a parameter typed jsonb would be serialized by the driver once more.
        select * from jsonb_to_recordset(${sales}::text::jsonb)
          as x(event_id text, identity_source text, tienda_id text, body jsonb, items jsonb,
               echo_origin text, echo_order_id text)
      ), change as (
        -- One row per (sale, enabled channel, item); a channel that follows some stores only
        -- gets the sales of those stores. The POS's echo of a marketplace order changes no stock:
        -- the order's own channel lowered itself and the others got the order's changes already.
        -- Ids are taken here, so the sale's row can list them (a sale already in custody wastes
        -- its few: ids have gaps anyway).
        select nextval('stock_change_id_seq') as id,
               i.event_id, c.channel, i.tienda_id, item.sku, item.producto_id, item.delta
          from input i
          cross join unnest(${channels}::text[], ${onlyStores}::text[]) as c(channel, only_stores)
          cross join jsonb_to_recordset(i.items) as item(sku text, producto_id text, delta integer)
         where (c.only_stores is null or c.only_stores::jsonb ? i.tienda_id) and i.echo_origin is null
      ), echo as (
        -- The POS recorded the order: its units are in the POS's own number from now on.
        insert into marketplace_order_echo (origin, order_id, event_id)
        select echo_origin, echo_order_id, event_id from input where echo_origin is not null
        on conflict (origin, order_id) do nothing
        returning origin, order_id, event_id
      ), recorded as (
        -- A shortcut for "available stock" (its index skips recorded lines); the echo row is the truth.
        update marketplace_order_line l set recorded = true
          from echo e where l.origin = e.origin and l.order_id = e.order_id
        returning l.order_id
      ), new_sale as (
        -- A sale lists its changes: a replay finds them by primary key (migration 16).
        insert into sale (event_id, identity_source, tienda_id, body, change_ids)
        select i.event_id, i.identity_source, i.tienda_id, i.body, coalesce(c.ids, '{}')
          from input i
          left join (select event_id, array_agg(id order by id) as ids from change group by event_id) c
            using (event_id)
        on conflict (event_id) do nothing
        returning event_id
      ), known as (
        -- Sales already in custody (a redelivery or a DLQ replay): their changes that custody would
        -- create now (same channel and SKU), as stored. Almost every batch has none, so the lookups
        -- cost nothing on the common path. A sale stored before migration 16 does not list its
        -- changes: they are found by SKU (the index the audit trail reads), slower and as rare.
        -- Laterals from the few known sales inward: a join could read the whole sale table.
        select s.id, s.event_id, s.channel, s.sku, s.status, s.error_reason, s.batch_id
          from (select event_id from input except all select event_id from new_sale) known_sale
          cross join lateral (select k.change_ids from sale k where k.event_id = known_sale.event_id) k
          join change c on c.event_id = known_sale.event_id
          cross join lateral (
            select s.* from stock_change s
             where k.change_ids is not null and s.id = any(k.change_ids)
               and s.channel = c.channel and s.sku = c.sku
            union all
            select s.* from stock_change s
             where k.change_ids is null
               and s.sku = c.sku and s.channel = c.channel and s.event_id = c.event_id
          ) s
      ), new_change as (
        insert into stock_change (id, event_id, channel, tienda_id, sku, producto_id, delta)
        overriding system value
        select c.* from change c join new_sale using (event_id)
         order by c.id
      ), rearmed as (
        -- Only changes the sale already has: a channel enabled since (or MeLi now
        -- following this store) started from a quantity that included this sale,
        -- so a new change for it would take the sale off twice. A re-armed change is
        -- no longer failed: a DLQ copy still due for it is owed no more.
        update stock_change s
           set status = 'pending', attempts = 0, next_attempt_at = now(), batch_id = null,
               error = null, error_reason = null, updated_at = now(), dead_letter_due = false
          from known c
         where s.id = c.id
           and s.status = 'failed' and s.error_reason is distinct from 'outcome_unknown'
        returning s.event_id
      ), unknown as (
        -- Changes whose batch reached the marketplace without a definite answer.
        select c.id, c.event_id, c.channel, c.sku, c.batch_id from known c
         where c.status = 'failed' and c.error_reason = ${OUTCOME_UNKNOWN}
      ), reopened_batch as (
        -- Within the key window, their batch goes out again under its ORIGINAL key and
        -- stored request: the marketplace answers an applied key from its record, so
        -- it cannot apply twice. A new key could; past the window the old one could too.
        -- channel_attempts starts at 1, not 0: the key was sent before without an
        -- answer, so a refusal of the re-send still says nothing about that first
        -- send (outcome_unknown, never a definite failure a later replay would re-arm).
        update sync_batch b
           set status = 'sending', lease_until = now(), owner = gen_random_uuid(), channel_attempts = 1,
               finished_at = null, error = 'reopened by a replay'
         where b.id in (select batch_id from unknown)
           and b.status in ('failed', 'done') and b.channel = any(${SAME_KEY_CHANNELS}::text[])
           and b.request is not null
           and b.sent_at >= now() - ${IDEMPOTENCY_SAFE_HOURS} * interval '1 hour'
           -- A resync since the first send wrote an absolute quantity that already
           -- counts the sale: re-sending the delta then could take it off twice.
           and not exists (
             select 1 from stock_change bc
               join stock_change w on w.sku = bc.sku and w.channel = bc.channel
              where bc.batch_id = b.id and bc.status = 'failed'
                and w.event_id like 'resync:%' and w.created_at >= b.sent_at)
        returning b.id
      ), reopened as (
        update stock_change s
           set status = 'sending', error = null, error_reason = null, updated_at = now(),
               dead_letter_due = false
          from reopened_batch r
         where s.batch_id = r.id and s.status = 'failed' and s.error_reason = ${OUTCOME_UNKNOWN}
        returning s.event_id
      )
      select event_id, 'stored' as kind, null as detail, null as change_id from new_sale
      union all
      select e.event_id, 'echo',
             case when exists (select 1 from marketplace_order o where o.origin = e.origin and o.order_id = e.order_id)
                  then 'known' else 'unknown' end, null
        from echo e
      union all
      select distinct event_id, 'rearmed', null, null from rearmed
      union all
      select distinct event_id, 'rearmed', null, null from reopened
      union all
      select event_id, 'kept', channel || ' ' || sku, id::text from unknown u
       where not exists (select 1 from reopened_batch r where r.id = u.batch_id)`;
    // An echo is news when its order was not marked recorded before (the sale row may be known: the POS
    // can reuse the order's message_id as its own identity).
    const echoes = new Map(
      rows.filter((r) => r.kind === "echo").map((r) => [r.event_id, r.detail === "known"]),
    );
    for (const e of sorted) {
      if (!e.origin || !echoes.has(e.eventId)) continue;
      const known = echoes.get(e.eventId)!;
      this.observer?.recorded?.(e.origin.channel, known);
      if (!known) {
        log.warning(
          "the POS recorded {origin} order {order_id} (sale {event_id}), which this service has not seen: " +
            "nothing applied; its units count as recorded when the order arrives",
          { origin: e.origin.channel, order_id: e.origin.orderId, event_id: e.eventId },
        );
      }
    }
    const fresh = new Set(
      rows.filter((r) => r.kind === "stored" || r.kind === "echo").map((r) => r.event_id),
    );
    const rearmed = new Set(rows.filter((r) => r.kind === "rearmed").map((r) => r.event_id));
    for (const kept of await this.#stillUnknown(rows.filter((r) => r.kind === "kept"))) {
      // A replay that cannot heal an unknown outcome must not vanish silently.
      log.warning(
        "sale {event_id} re-received: {change} stays outcome_unknown (past the {hours} h key window, " +
          "no key to re-send under, or the listing was resynced since): check the listing and resync",
        { mark: "error", event_id: kept.event_id, change: kept.detail, hours: IDEMPOTENCY_SAFE_HOURS },
      );
    }
    const outcomes = new Map<string, CustodyOutcome>();
    for (const e of events) {
      outcomes.set(
        e.eventId,
        fresh.has(e.eventId) ? "stored" : rearmed.has(e.eventId) ? "rearmed" : "duplicate",
      );
    }
    return outcomes;
  }
}
