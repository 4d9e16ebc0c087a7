/**
 * Marketplace orders in the ledger (issue #14): inbound deliveries kept before they are answered, and each
 * order's effect applied exactly once — the other channels' stock changes (through the same `sale` /
 * `stock_change` rows, dispatcher, budgets and DLQ as POS sales), the units it holds until the POS records
 * it ("available stock"), and the POS's message in the outbox, all in one transaction.
 *
 * Implements the OrderBook of src/sync/channel.ts (structurally: the ledger does not import the floor above).
 */
import type postgres from "postgres";
import type { Sql } from "postgres";
import { type ChannelName, KNOWN_CHANNELS } from "../model/channel_name.ts";
import type { OrderEffect, OrderEvent, OrderLine, Quarantine } from "../model/marketplace_order.ts";

/** Routing keys of the messages the POS is told on `blend_events`. */
export const POS_ROUTING_KEYS = {
  created: "marketplace.sales.created",
  cancelled: "marketplace.sales.cancelled",
} as const;

/** The ledger identity of an order's sale row (and the POS message's `message_id`). */
export function orderEventId(origin: ChannelName, orderId: string, restockId?: string): string {
  return restockId === undefined
    ? `order:${origin}:${orderId}`
    : `order:${origin}:${orderId}:restock:${restockId}`;
}

/** An event a channel built that cannot be applied (a bug in its parser, not the marketplace's). */
export class InvalidOrderEventError extends Error {
  override name = "InvalidOrderEventError";
}

/** What the order ledger tells metrics and the dispatchers. */
export interface OrderObserver {
  /** An event was applied (or found a duplicate, …); `lagSeconds` from the marketplace's time to now. */
  applied?(event: OrderEvent, effect: OrderEffect, lagSeconds: number | undefined): void;
  /** New stock changes and a POS message were committed: wake the dispatchers and the outbox. */
  changed?(): void;
  /** A delivery was stored (or recognised as a re-delivery). */
  received?(channel: ChannelName, duplicate: boolean): void;
  /** A delivery was settled (quarantined with a reason, or done). */
  settled?(channel: ChannelName, quarantine: Quarantine | undefined): void;
}

/** Options of {@link OrderLedger}. */
export interface OrderLedgerOptions {
  /** The enabled channels (CHANNELS): each but the order's origin gets its stock changes. */
  channels: readonly ChannelName[];
  /**
   * Per channel, the only stores whose stock it shows (custody's filter: MercadoLibre's MELI_TIENDA_ID /
   * MELI_LOCATIONS); asked on first use, since the plugs that know it are built after the ledger.
   */
  onlyStores?: () => Promise<Partial<Record<ChannelName, string[]>>>;
  /** The POS's producto_id of a SKU at a store (the POS's stock key wants it); null when unknown. */
  productoId?: (tiendaId: string, sku: string) => Promise<string | null>;
  observer?: OrderObserver;
}

/** An inbound delivery taken into custody (the StoredDelivery of src/sync/channel.ts). */
export interface OrderDelivery {
  id: string;
  deliveryId: string;
  topic: string;
  body: string;
  attempts: number;
}

/** One product at one store, as "available stock" asks for it. */
export interface StoreSku {
  tiendaId: string;
  sku: string;
}

interface OrderLineRow {
  line_id: string;
  sku: string;
  sold: number;
  restocked: number;
}

/** The ledger's side of marketplace orders. */
export class OrderLedger {
  #onlyStores: Promise<Partial<Record<ChannelName, string[]>>> | undefined;

  constructor(private readonly sql: Sql, private readonly options: OrderLedgerOptions) {}

  /**
   * Applies an order event exactly once: a `created` order's units leave every other enabled channel (at the
   * stores it shows) and are held out of available stock until the POS records the order; a `restock` puts
   * back at most what each line sold minus what was put back already. The POS message goes to the outbox in
   * the same transaction. An order seen again with lines the first sight lacked applies those lines; a
   * restock of an order not seen yet waits (`deferred`) and is applied with the order.
   * @throws InvalidOrderEventError for an event no marketplace answer can produce (empty lines, bad units).
   */
  async apply(event: OrderEvent): Promise<OrderEffect> {
    validate(event);
    const { effect, restocks } = event.kind === "created"
      ? await this.#created(event)
      : { effect: await this.#restock(event), restocks: [] };
    this.#applied(event, effect);
    // Restocks that waited for this order were applied in its transaction: told as what they are now.
    for (const [restock, restockEffect] of restocks) this.#applied(restock, restockEffect);
    if (effect.outcome === "applied") this.options.observer?.changed?.();
    return effect;
  }

  #applied(event: OrderEvent, effect: OrderEffect): void {
    const occurred = Date.parse(event.occurredAt);
    const lag = Number.isFinite(occurred) ? Math.max(0, (Date.now() - occurred) / 1000) : undefined;
    this.options.observer?.applied?.(event, effect, lag);
  }

  async #created(
    event: CreatedEvent,
  ): Promise<{ effect: OrderEffect; restocks: [RestockEvent, OrderEffect][] }> {
    const lines = mergeLines(event.lines);
    // An order seen before keeps the store of its first sight (its restocks and added lines go there).
    const store = await this.#orderStore(event.origin, event.orderId) ?? event.tiendaId;
    const ids = await this.#productoIds(store, [...new Set(lines.map((l) => l.sku))]);
    const eventId = orderEventId(event.origin, event.orderId);
    return await this.sql.begin(async (tx) => {
      await lockOrder(tx, event.origin, event.orderId);
      const [fresh] = await tx`
        insert into marketplace_order (origin, order_id, tienda_id, occurred_at, via)
        values (${event.origin}, ${event.orderId}, ${event.tiendaId}, ${
        isoOrNull(event.occurredAt)
      }, ${event.via})
        on conflict (origin, order_id) do nothing
        returning order_id`;
      if (!fresh) return { effect: await this.#addedLines(tx, event, lines, store, ids), restocks: [] };
      await insertLines(tx, event, event.tiendaId, lines);
      const items = withIds(bySku(lines), event.tiendaId === store ? ids : new Map());
      let changes = await this.#changes(tx, eventId, event, event.tiendaId, items, -1);
      await tx`
        insert into pos_outbox (message_id, routing_key, body)
        values (${eventId}, ${POS_ROUTING_KEYS.created}, ${
        tx.json(posMessage(eventId, event, event.tiendaId, items) as postgres.JSONValue)
      })
        on conflict (message_id) do nothing`;
      // Restocks that came first (refunds/create before orders/create): applied now, each line at most once.
      const restocks: [RestockEvent, OrderEffect][] = [];
      const pending = await tx<PendingRestockRow[]>`
        delete from marketplace_restock_pending
         where origin = ${event.origin} and order_id = ${event.orderId}
        returning restock_id, tienda_id, lines, occurred_at, via, received_at`;
      pending.sort((a, b) => a.received_at.getTime() - b.received_at.getTime());
      for (const row of pending) {
        const restock: RestockEvent = {
          kind: "restock",
          origin: event.origin,
          orderId: event.orderId,
          restockId: row.restock_id,
          ...(row.tienda_id === null ? {} : { tiendaId: row.tienda_id }),
          lines: row.lines,
          occurredAt: row.occurred_at,
          via: row.via,
        };
        const tiendaId = row.tienda_id ?? event.tiendaId;
        const effect = await this.#putBack(tx, restock, tiendaId, tiendaId === store ? ids : new Map());
        changes += effect.changes;
        restocks.push([restock, effect]);
      }
      return { effect: { outcome: "applied", changes } satisfies OrderEffect, restocks };
    });
  }

  /**
   * An order seen again: the lines the ledger does not know yet (a catch-up read capped at 50 lines, an order
   * edit) take their units off the other channels under an event id of their own (an event id's changes are
   * written once, with its sale row) — `order:<origin>:<id>:lines:<k>`, k = lines known before + 1. Known lines are
   * left as they are (a quantity edit is not applied). A re-delivery of the same addition adds nothing.
   */
  async #addedLines(
    tx: postgres.TransactionSql,
    event: CreatedEvent,
    lines: OrderLine[],
    store: string,
    ids: Map<string, string | null>,
  ): Promise<OrderEffect> {
    const [order] = await tx<{ tienda_id: string; known: number }[]>`
      select o.tienda_id,
             (select count(*) from marketplace_order_line l
               where l.origin = o.origin and l.order_id = o.order_id)::int as known
        from marketplace_order o where o.origin = ${event.origin} and o.order_id = ${event.orderId}`;
    const added = await insertLines(tx, event, order.tienda_id, lines);
    if (added.length === 0) return { outcome: "duplicate", changes: 0 };
    const eventId = `${orderEventId(event.origin, event.orderId)}:lines:${order.known + 1}`;
    const items = withIds(bySku(added), order.tienda_id === store ? ids : new Map());
    const changes = await this.#changes(tx, eventId, event, order.tienda_id, items, -1);
    await tx`
      insert into pos_outbox (message_id, routing_key, body)
      values (${eventId}, ${POS_ROUTING_KEYS.created}, ${
      tx.json(posMessage(eventId, event, order.tienda_id, items) as postgres.JSONValue)
    })
      on conflict (message_id) do nothing`;
    return { outcome: "applied", changes };
  }

  async #restock(event: RestockEvent): Promise<OrderEffect> {
    // The POS's producto_ids are looked up outside the transaction (another database, maybe).
    const storeHint = event.tiendaId ?? await this.#orderStore(event.origin, event.orderId);
    const ids = storeHint === undefined
      ? new Map<string, string | null>()
      : await this.#productoIds(storeHint, [...new Set(event.lines.map((l) => l.sku))]);
    return await this.sql.begin(async (tx) => {
      // The order's lock: two refunds at once count lines once, and a restock racing its order's created
      // event either sees the order or leaves a pending row that event's transaction finds.
      await lockOrder(tx, event.origin, event.orderId);
      const [order] = await tx<{ tienda_id: string }[]>`
        select tienda_id from marketplace_order
         where origin = ${event.origin} and order_id = ${event.orderId}`;
      if (!order) {
        // Before its order (Shopify does not order its deliveries): kept until the order is applied.
        const [kept] = await tx`
          insert into marketplace_restock_pending
                 (origin, order_id, restock_id, tienda_id, lines, occurred_at, via)
          values (${event.origin}, ${event.orderId}, ${event.restockId}, ${event.tiendaId ?? null}, ${
          tx.json(mergeLines(event.lines) as unknown as postgres.JSONValue)
        }, ${event.occurredAt}, ${event.via})
          on conflict (origin, order_id, restock_id) do nothing
          returning restock_id`;
        return { outcome: kept ? "deferred" : "duplicate", changes: 0 } satisfies OrderEffect;
      }
      const tiendaId = event.tiendaId ?? order.tienda_id;
      return await this.#putBack(tx, event, tiendaId, tiendaId === storeHint ? ids : new Map());
    });
  }

  /** A restock of a known order, under its lock: each line back at most sold − restocked, told to the POS. */
  async #putBack(
    tx: postgres.TransactionSql,
    event: RestockEvent,
    tiendaId: string,
    ids: Map<string, string | null>,
  ): Promise<OrderEffect> {
    const eventId = orderEventId(event.origin, event.orderId, event.restockId);
    const [fresh] = await tx`
      insert into marketplace_restock (origin, order_id, restock_id, tienda_id, units)
      values (${event.origin}, ${event.orderId}, ${event.restockId}, ${tiendaId}, 0)
      on conflict (origin, order_id, restock_id) do nothing
      returning restock_id`;
    if (!fresh) return { outcome: "duplicate", changes: 0 };
    const known = await tx<OrderLineRow[]>`
      select line_id, sku, sold, restocked from marketplace_order_line
       where origin = ${event.origin} and order_id = ${event.orderId} order by line_id`;
    const back = putBack(known, mergeLines(event.lines));
    if (back.length === 0) return { outcome: "nothing_to_restock", changes: 0 };
    await tx`
      update marketplace_order_line l set restocked = l.restocked + x.units
        from jsonb_to_recordset(${
      tx.json(back.map((b) => ({ line_id: b.lineId, units: b.quantity })))
    }::jsonb)
          as x(line_id text, units integer)
       where l.origin = ${event.origin} and l.order_id = ${event.orderId} and l.line_id = x.line_id`;
    const units = back.reduce((n, b) => n + b.quantity, 0);
    await tx`
      update marketplace_restock set units = ${units}
       where origin = ${event.origin} and order_id = ${event.orderId} and restock_id = ${event.restockId}`;
    const items = withIds(bySku(back), ids);
    const changes = await this.#changes(tx, eventId, event, tiendaId, items, +1);
    await tx`
      insert into pos_outbox (message_id, routing_key, body)
      values (${eventId}, ${POS_ROUTING_KEYS.cancelled}, ${
      tx.json(posMessage(eventId, event, tiendaId, items) as postgres.JSONValue)
    })
      on conflict (message_id) do nothing`;
    return { outcome: "applied", changes };
  }

  async #orderStore(origin: ChannelName, orderId: string): Promise<string | undefined> {
    const [row] = await this.sql<{ tienda_id: string }[]>`
      select tienda_id from marketplace_order where origin = ${origin} and order_id = ${orderId}`;
    return row?.tienda_id;
  }

  /** The sale row and one stock change per (other enabled channel showing the store, SKU). */
  async #changes(
    tx: postgres.TransactionSql,
    eventId: string,
    event: OrderEvent,
    tiendaId: string,
    items: Item[],
    sign: -1 | 1,
  ): Promise<number> {
    // Asked once; a failure is asked again by the next order (this one's transaction fails and is retried).
    this.#onlyStores ??= (this.options.onlyStores?.() ?? Promise.resolve({})).catch((error) => {
      this.#onlyStores = undefined;
      throw error;
    });
    const onlyStores = await this.#onlyStores;
    const targets = this.options.channels.filter((c) =>
      c !== event.origin && (onlyStores[c] === undefined || onlyStores[c]!.includes(tiendaId))
    ).sort();
    // MercadoLibre's own order: no change lowers it again, but a mirror write computed just before this
    // transaction (available stock without this order) may land after the marketplace moved itself and
    // undo the order (or a cancellation). A change of 0 makes it write available stock once more, after
    // this commit, under the listing lock: mirror mode sets the POS less the orders held (this one
    // included), delta mode reads and writes the same number.
    const remirror = event.origin === "mercadolibre" && this.options.channels.includes(event.origin) &&
      (onlyStores[event.origin] === undefined || onlyStores[event.origin]!.includes(tiendaId));
    const rows = targets.flatMap((channel) =>
      items.map((i) => ({
        channel,
        sku: i.sku,
        producto_id: i.productoId,
        delta: sign * i.quantity,
      }))
    ).concat(
      remirror
        ? items.map((i) => ({ channel: event.origin, sku: i.sku, producto_id: i.productoId, delta: 0 }))
        : [],
    );
    // The sale row and its changes in one statement, as custody writes a sale: the changes only with a new
    // sale row (the order's own lock and dedupe already keep a second pass out; this is the ledger's word),
    // and the row lists their ids, which a replay of a failed one finds them by (migration 16). No `origen`
    // in the stored body: a DLQ copy of a failed change replays as what it is, a re-receipt of this sale row
    // (it re-arms), never as the POS's echo of an order.
    const inserted = await tx`
      with change as (
        select nextval('stock_change_id_seq') as id, x.*
          from (select * from jsonb_to_recordset(${tx.json(rows)}::jsonb)
                  as x(channel text, sku text, producto_id text, delta integer)
                 order by x.channel, x.sku) x
      ), new_sale as (
        insert into sale (event_id, identity_source, tienda_id, body, change_ids)
        values (${eventId}, 'marketplace_order', ${tiendaId}, ${
      tx.json(saleBody(event, tiendaId, items) as postgres.JSONValue)
    }, (select coalesce(array_agg(id order by id), '{}') from change))
        on conflict (event_id) do nothing
        returning event_id
      )
      insert into stock_change (id, event_id, channel, tienda_id, sku, producto_id, delta)
      overriding system value
      select c.id, ${eventId}, c.channel, ${tiendaId}, c.sku, c.producto_id, c.delta
        from change c where exists (select 1 from new_sale)
       order by c.id
      returning delta`;
    // A re-mirror (delta 0) moves no stock: it is not one of the order's changes.
    return inserted.filter((r) => r.delta !== 0).length;
  }

  async #productoIds(tiendaId: string, skus: string[]): Promise<Map<string, string | null>> {
    const ids = new Map<string, string | null>();
    for (const sku of skus) {
      // A lookup that fails leaves the id unknown: the POS's stock query can still find the SKU.
      ids.set(sku, await this.options.productoId?.(tiendaId, sku).catch(() => null) ?? null);
    }
    return ids;
  }

  /**
   * Units of marketplace orders at each store and SKU that the POS has not recorded yet and that were not
   * put back: what "available stock" takes off the POS's number. One query for many products.
   */
  async unrecorded(keys: readonly StoreSku[]): Promise<number[]> {
    if (keys.length === 0) return [];
    const rows = await this.sql<{ n: number; units: number }[]>`
      select k.n::int as n, coalesce(sum(l.sold - l.restocked), 0)::int as units
        from unnest(${keys.map((k) => k.tiendaId)}::text[], ${keys.map((k) => k.sku)}::text[])
             with ordinality as k(tienda_id, sku, n)
        left join marketplace_order_line l
          on l.tienda_id = k.tienda_id and l.sku = k.sku and not l.recorded and l.restocked < l.sold
         -- The flag is a shortcut an echo racing the order's own transaction can miss; the echo row is not.
         and not exists (select 1 from marketplace_order_echo e where e.origin = l.origin and e.order_id = l.order_id)
       group by k.n`;
    const units = keys.map(() => 0);
    for (const row of rows) units[row.n - 1] = row.units;
    return units;
  }

  // ---- Inbound custody ----

  /** Stores a delivery before it is answered; `duplicate` when this channel took this delivery id before. */
  async receive(
    delivery: { channel: ChannelName; deliveryId: string; topic: string; body: string },
  ): Promise<{ id: string; duplicate: boolean }> {
    const [fresh] = await this.sql<{ id: string }[]>`
      insert into order_delivery (channel, delivery_id, topic, body)
      values (${delivery.channel}, ${delivery.deliveryId}, ${delivery.topic}, ${delivery.body})
      on conflict (channel, delivery_id) do nothing
      returning id::text`;
    if (fresh) {
      this.options.observer?.received?.(delivery.channel, false);
      return { id: fresh.id, duplicate: false };
    }
    const [known] = await this.sql<{ id: string }[]>`
      select id::text from order_delivery where channel = ${delivery.channel} and delivery_id = ${delivery.deliveryId}`;
    this.options.observer?.received?.(delivery.channel, true);
    return { id: known.id, duplicate: true };
  }

  /**
   * Deliveries stored but not settled yet, oldest first; each one handed out counts an attempt (a delivery
   * that keeps failing shows it). Processing one twice is harmless: `apply` is idempotent.
   */
  async unsettled(channel: ChannelName, limit: number): Promise<OrderDelivery[]> {
    const rows = await this.sql<
      { id: string; delivery_id: string; topic: string; body: string; attempts: number }[]
    >`
      update order_delivery d set attempts = d.attempts + 1
        from (select id from order_delivery where channel = ${channel} and settled_at is null
               order by id limit ${Math.max(0, Math.floor(limit))}) o
       where d.id = o.id
      returning d.id::text, d.delivery_id, d.topic, d.body, d.attempts`;
    return rows.sort((a, b) => Number(a.id) - Number(b.id)).map((r) => ({
      id: r.id,
      deliveryId: r.delivery_id,
      topic: r.topic,
      body: r.body,
      attempts: r.attempts,
    }));
  }

  /** A delivery processed, or kept aside (never retried) with the reason it could not be used. */
  async settle(id: string, outcome: { done: true } | { quarantine: Quarantine }): Promise<void> {
    const quarantine = "quarantine" in outcome ? outcome.quarantine : undefined;
    const [row] = await this.sql<{ channel: ChannelName }[]>`
      update order_delivery
         set settled_at = now(), quarantine_reason = ${quarantine?.reason ?? null},
             quarantine_error = ${quarantine?.error ?? null}
       where id = ${id} and settled_at is null
      returning channel`;
    if (row) this.options.observer?.settled?.(row.channel, quarantine);
  }

  // ---- Catch-up watermarks ----

  /** Where the channel's catch-up poll got to (ISO 8601), undefined before its first poll. */
  async watermark(channel: ChannelName): Promise<string | undefined> {
    const [row] = await this.sql<
      { since: Date }[]
    >`select since from order_watermark where channel = ${channel}`;
    return row?.since.toISOString();
  }

  /** Moves the channel's watermark forward (never back: replicas polling at once cannot rewind it). */
  async advance(channel: ChannelName, since: string): Promise<void> {
    await this.sql`
      insert into order_watermark (channel, since) values (${channel}, ${since})
      on conflict (channel) do update set since = greatest(order_watermark.since, excluded.since), updated_at = now()`;
  }
}

/** Whether a text names a channel this service knows (an `origen` the POS echoes). */
export function isChannelName(text: string): text is ChannelName {
  return (KNOWN_CHANNELS as readonly string[]).includes(text);
}

interface Item {
  sku: string;
  quantity: number;
  productoId: string | null;
}

type CreatedEvent = Extract<OrderEvent, { kind: "created" }>;
type RestockEvent = Extract<OrderEvent, { kind: "restock" }>;

interface PendingRestockRow {
  restock_id: string;
  tienda_id: string | null;
  lines: OrderLine[];
  occurred_at: string;
  via: RestockEvent["via"];
  received_at: Date;
}

/**
 * Serializes every `created` and `restock` of one order across transactions and replicas (a restock that
 * finds no order and the order's own transaction cannot miss each other). The two-key form keeps these
 * locks apart from the single-key ones other modules take.
 */
async function lockOrder(tx: postgres.TransactionSql, origin: ChannelName, orderId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtext('marketplace_order'), hashtext(${origin} || ':' || ${orderId}))`;
}

/**
 * Inserts the order's lines the ledger does not know yet (by line id); returns those. An order the POS
 * re-published before we saw it starts recorded: its units are in the POS's number.
 */
async function insertLines(
  tx: postgres.TransactionSql,
  event: CreatedEvent,
  tiendaId: string,
  lines: OrderLine[],
): Promise<OrderLine[]> {
  const rows = await tx<{ line_id: string; sku: string; sold: number }[]>`
    insert into marketplace_order_line (origin, order_id, line_id, tienda_id, sku, sold, recorded)
    select ${event.origin}, ${event.orderId}, x.line_id, ${tiendaId}, x.sku, x.sold,
           exists (select 1 from marketplace_order_echo e
                    where e.origin = ${event.origin} and e.order_id = ${event.orderId})
      from jsonb_to_recordset(${
    tx.json(lines.map((l) => ({ line_id: l.lineId, sku: l.sku, sold: l.quantity })))
  }::jsonb)
        as x(line_id text, sku text, sold integer)
    on conflict (origin, order_id, line_id) do nothing
    returning line_id, sku, sold`;
  return rows.map((r) => ({ lineId: r.line_id, sku: r.sku, quantity: r.sold }));
}

function withIds(skus: { sku: string; quantity: number }[], ids: Map<string, string | null>): Item[] {
  return skus.map((s) => ({ ...s, productoId: ids.get(s.sku) ?? null }));
}

function validate(event: OrderEvent): void {
  const fail = (what: string) => {
    throw new InvalidOrderEventError(`order ${event.origin}:${event.orderId}: ${what}`);
  };
  if (!isChannelName(event.origin)) fail(`unknown origin "${event.origin}"`);
  if (!event.orderId) fail("no order id");
  if (event.kind === "created" && !event.tiendaId) fail("no tienda_id");
  if (event.kind === "restock" && !event.restockId) fail("no restock id");
  if (event.lines.length === 0) fail("no lines");
  for (const line of event.lines) {
    if (!line.lineId || !line.sku.trim()) fail(`a line without id or SKU (${JSON.stringify(line)})`);
    if (!Number.isInteger(line.quantity) || line.quantity <= 0) {
      fail(`line ${line.lineId} has ${line.quantity} units; a line takes a whole number above 0`);
    }
  }
}

/** The same line named twice in one event counts once per mention (summed). */
function mergeLines(lines: readonly OrderLine[]): OrderLine[] {
  const merged = new Map<string, OrderLine>();
  for (const line of lines) {
    const known = merged.get(line.lineId);
    if (known) known.quantity += line.quantity;
    else merged.set(line.lineId, { ...line });
  }
  return [...merged.values()];
}

function bySku(lines: readonly OrderLine[]): { sku: string; quantity: number }[] {
  const skus = new Map<string, number>();
  for (const line of lines) skus.set(line.sku, (skus.get(line.sku) ?? 0) + line.quantity);
  return [...skus].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([sku, quantity]) => ({
    sku,
    quantity,
  }));
}

/**
 * What a restock puts back per line: at most sold − restocked. A line is found by its id, else (a
 * marketplace naming the line differently in a refund) by SKU among the order's lines with units left.
 */
function putBack(known: OrderLineRow[], asked: OrderLine[]): OrderLine[] {
  const left = new Map(known.map((l) => [l.line_id, { sku: l.sku, units: l.sold - l.restocked }]));
  const back = new Map<string, OrderLine>();
  const take = (lineId: string, wanted: number) => {
    const line = left.get(lineId)!;
    const units = Math.min(wanted, line.units);
    if (units <= 0) return 0;
    line.units -= units;
    const entry = back.get(lineId) ?? { lineId, sku: line.sku, quantity: 0 };
    entry.quantity += units;
    back.set(lineId, entry);
    return units;
  };
  for (const line of asked) {
    if (left.has(line.lineId)) {
      take(line.lineId, line.quantity);
      continue;
    }
    let wanted = line.quantity;
    for (const [lineId, l] of left) {
      if (wanted <= 0) break;
      if (l.sku === line.sku) wanted -= take(lineId, wanted);
    }
  }
  return [...back.values()];
}

function isoOrNull(text: string): string | null {
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : null;
}

function posItems(items: Item[]) {
  return items.map((i) => ({ producto_id: i.productoId, producto_sku: i.sku, cantidad: i.quantity }));
}

/** The POS's sale shape (README: "Marketplace orders, for the POS"), plus origen and origen_order_id. */
function posMessage(
  eventId: string,
  event: OrderEvent,
  tiendaId: string,
  items: Item[],
): Record<string, unknown> {
  return {
    event_id: eventId,
    tienda_id: tiendaId,
    items: posItems(items),
    timestamp: isoOrNull(event.occurredAt) ?? new Date().toISOString(),
    origen: event.origin,
    origen_order_id: event.orderId,
    ...(event.kind === "restock" ? { origen_restock_id: event.restockId } : {}),
  };
}

/** The ledger's copy of the order as a sale (what a DLQ copy of a failed change carries). */
function saleBody(event: OrderEvent, tiendaId: string, items: Item[]): Record<string, unknown> {
  return {
    tienda_id: tiendaId,
    items: posItems(items),
    timestamp: isoOrNull(event.occurredAt) ?? new Date().toISOString(),
    marketplace_order: {
      origin: event.origin,
      order_id: event.orderId,
      kind: event.kind,
      via: event.via,
      ...(event.kind === "restock" ? { restock_id: event.restockId } : {}),
    },
  };
}
