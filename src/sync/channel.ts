/**
 * The contract between the service and a marketplace channel, in one place: the
 * {@link ChannelPlug} a channel's folder builds (src/channels/<name>/plug.ts), the
 * {@link ChannelAdapter} the dispatcher drives, the {@link ChannelStock} resync
 * reads and writes, and the {@link ChannelProbe} status and metrics ask.
 */
import type { Sql } from "postgres";
import type { Config } from "../config.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { ChannelName } from "../model/channel_name.ts";
import type { PosStockReader } from "../pos/stock.ts";
import type { Catalog } from "../sandbox/catalog.ts";
import type { ScriptRunner } from "./cost_bucket.ts";
import type { MarkRedis } from "./listing_lock.ts";
import type { CheckResult } from "../model/health.ts";
import type { BatchOutcome, ClaimedBatch } from "../model/batch.ts";
import type { OrderEffect, OrderEvent, Quarantine } from "../model/marketplace_order.ts";

/** What the dispatcher lends an adapter while it processes one batch. */
export interface BatchContext {
  /**
   * Marks a send. Must be awaited before EVERY send (first or repeated): it
   * persists the request the first time, renews the lease, counts the attempt,
   * and returns the request to send — the one stored first, so a re-send after
   * a crash repeats it exactly under the same idempotency key. Throws when
   * another replica took the batch over.
   */
  persistRequest(request: unknown): Promise<unknown>;
  signal: AbortSignal;
}

/**
 * A marketplace adapter turns a batch of coalesced changes into marketplace
 * calls and maps every outcome to applied / retry-later / failed-permanently.
 * It must not throw for marketplace errors; a throw is treated as a bug and the
 * batch is retried under the same key.
 */
export interface ChannelAdapter {
  readonly name: ChannelName;
  /** Most listings one batch may hold (Shopify: 250 changes per call). */
  readonly maxListingsPerBatch: number;
  /**
   * Writes a batch's listings one request at a time, in the batch's order (MercadoLibre, 5 writes/s): its
   * claims keep each listing's turn, so no listing is written twice in one pass over the listings while
   * the others wait (`claimBatch` in src/ledger/dispatch_store.ts). A channel that writes a whole batch in one call
   * (Shopify) needs no turns: a listing in two batches in a row costs it nothing.
   */
  readonly writesListingsInTurn?: boolean;
  process(batch: ClaimedBatch, context: BatchContext): Promise<BatchOutcome>;
  /** Channel health for /readyz (credentials, last error). */
  health(): CheckResult;
}

// ---- Resync: a channel's stock, read and written outside the dispatcher ----

/** A marketplace quantity read, with what the write needs to address it. */
export type StockRead =
  | { ok: true; quantity: number; ref: unknown }
  | { ok: false; reason: string; error: string; transient?: boolean };

/** What a resync write came to. `stale`: the compare-and-set saw another value. */
export type StockWrite =
  | { kind: "written"; quantityAfter: number }
  | { kind: "stale" }
  | { kind: "error"; reason: string; error: string };

/** A channel's side of a resync. */
export interface ChannelStock {
  readonly name: ChannelName;
  /** Stores the channel shows, when configured explicitly (empty: learn them from the ledger). */
  mappedStores(): string[];
  /** Whether the channel also shows stores `mappedStores` does not name (a default Shopify location). */
  readonly showsUnmapped?: boolean;
  /** Whether the channel shows this store's stock. */
  shows(tiendaId: string): boolean;
  /**
   * Where the marketplace keeps this store's stock (a Shopify location). Stores with the same
   * place share one quantity: the sum of theirs. Undefined: every store has its own.
   */
  place?(tiendaId: string): string | undefined;
  /** Whether live sales reach this channel as deltas (then changes not applied yet count). */
  readonly deltas: boolean;
  read(sku: string, tiendaId: string, signal?: AbortSignal): Promise<StockRead>;
  /** Every listing of the channel, in pages: what `{"all": true}` compares with the POS catalog. */
  readonly catalog?: ChannelCatalog;
  /** Most listings `readMany` / `writeMany` take in one call, where the marketplace batches them. */
  readonly maxPerCall?: number;
  /** The current quantity of many listings (by the `ref` a read or the catalog gave) in one call. */
  readMany?(refs: readonly unknown[], signal?: AbortSignal): Promise<StockRead[]>;
  /** Compare-and-set of many listings in one call: one outcome per set, in order. */
  writeMany?(
    sets: readonly BatchSet[],
    reference: string,
    signal?: AbortSignal,
  ): Promise<{ outcomes: BatchSetOutcome[] }>;
  /**
   * Sets `to`, conditional on the value `read` saw where the marketplace allows it.
   * A channel without compare-and-set calls `retarget` under its listing lock and sets
   * what it returns instead, or answers `stale` when it returns undefined.
   */
  write(
    read: Extract<StockRead, { ok: true }>,
    to: number,
    reference: string,
    signal?: AbortSignal,
    retarget?: () => Promise<number | undefined>,
  ): Promise<StockWrite>;
}

/** One listing of a batched compare-and-set: set `to` where the marketplace still shows `from`. */
export interface BatchSet {
  ref: unknown;
  from: number;
  to: number;
}

/** What one set of a batched write came to. */
export type BatchSetOutcome =
  | { kind: "written"; quantityAfter: number }
  /** Nothing of the call was applied (this set, or another, was stale): re-read and recompute. */
  | { kind: "stale"; error: string }
  | { kind: "not_applied"; reason: string; error: string }
  /** `uncertain`: the call may have been applied unheard; a re-read tells. */
  | { kind: "error"; reason: string; error: string; uncertain?: boolean };

/** A SKU a channel could not resolve, as a failed read (transient problems are marked so). */
export function unresolvedRead(
  resolution:
    | { outcome: { kind: string; reason?: string; error?: string } }
    | { transient: { reason: string; error: string } },
): StockRead {
  if ("transient" in resolution) {
    return {
      ok: false,
      reason: resolution.transient.reason,
      error: resolution.transient.error,
      transient: true,
    };
  }
  return {
    ok: false,
    reason: resolution.outcome.reason ?? "unresolved",
    error: resolution.outcome.error ?? "unresolved",
  };
}

/**
 * One listing as a whole-catalog read sees it: a SKU's quantity at one place of the
 * marketplace (a Shopify location; MercadoLibre's item or variation).
 */
export interface CatalogListing {
  sku: string;
  /** Where the quantity is kept: a Shopify location id; the MercadoLibre item (and variation) id. */
  place: string;
  quantity: number;
  /** What a write needs to address the listing: the same shape the channel's `read` returns. */
  ref: unknown;
  /** Why the listing must not be written (MercadoLibre Full, under review); undefined when it may be. */
  unwritable?: { reason: string; error: string };
}

/** A channel's whole catalog, read in pages (bulk where the marketplace offers it, never one call per SKU). */
export interface ChannelCatalog {
  /** Every listing at the places the configuration maps, page by page; never the whole catalog at once. */
  listings(signal?: AbortSignal): AsyncIterable<CatalogListing[]>;
}

// ---- Status and metrics ----

/** What a channel contributes to the status besides the ledger's numbers. */
export interface ChannelProbe {
  health(): CheckResult;
  /** Current budget level and capacity. */
  budget?(): { level: number; max: number };
  tokenExpiresAt?(): Date | undefined;
}

// ---- The plug: what a channel's folder hands the service ----

/**
 * An inbound HTTP route a channel serves (marketplace order webhooks): a plain fetch
 * handler, mounted by src/http/ at `/webhooks/<name>` (path "") or `/webhooks/<name>/<path>`,
 * outside the admin token (a marketplace signs its own calls; the handler checks that).
 */
export interface InboundRoute {
  method: "GET" | "POST" | "PUT" | "DELETE";
  /** Path below `/webhooks/<name>/`; "" for `/webhooks/<name>` itself. */
  path: string;
  handle(request: Request): Response | Promise<Response>;
}

/**
 * Everything one marketplace contributes to the service, built by its plug
 * (src/channels/<name>/plug.ts): the root plugs it in with one line and never
 * learns what is inside.
 */
export interface ChannelPlug {
  readonly name: ChannelName;
  /** Turns claimed batches into marketplace calls; the dispatcher drives it. */
  readonly adapter: ChannelAdapter;
  /** The marketplace's stock as resync reads and sets it. */
  readonly stock: ChannelStock;
  /** Health, budget and token expiry for /readyz, /status and /metrics. */
  readonly probe: ChannelProbe;
  /** Inbound routes (order webhooks); none yet. */
  readonly routes?: readonly InboundRoute[];
  /** The marketplace's orders, for the catch-up poll (issue #14); absent: the channel takes no orders. */
  readonly orders?: OrderSource;
  /**
   * Lets the plug's own work with the marketplace end while the ledger is still open
   * (a token refresh in flight is stored). Called once the dispatcher has stopped.
   * @param deadline epoch ms by which it must have returned.
   */
  finish?(deadline: number): Promise<void>;
  /** Releases what is left (the built-in sandbox), after the ledger has closed. */
  close(): Promise<void>;
}

/**
 * A marketplace's orders since a moment, for the catch-up poll (issue #14): what webhooks or
 * notifications missed while the service was down, or never delivered.
 */
export interface OrderSource {
  /**
   * The orders updated since `since` (ISO 8601), oldest first, in pages: each order's events and the
   * marketplace's update time of that order (the poll's next watermark once the page is applied).
   */
  updatedSince(
    since: string,
    signal: AbortSignal,
  ): AsyncIterable<{ events: OrderEvent[]; updatedAt: string }[]>;
}

/** An inbound delivery (a webhook or a notification) taken into custody before it was answered. */
export interface StoredDelivery {
  id: string;
  deliveryId: string;
  topic: string;
  body: string;
  attempts: number;
}

/**
 * The ledger's side of marketplace orders, lent to each channel (issue #14): inbound deliveries are
 * stored before they are answered (custody first, work after), and an order's effect is applied once.
 */
export interface OrderBook {
  /** Applies an order event exactly once (see {@link OrderEvent}): other channels' stock, the POS outbox. */
  apply(event: OrderEvent): Promise<OrderEffect>;
  /**
   * Stores a delivery before it is answered. `duplicate`: this channel took this delivery id before
   * (a re-delivery: answer 200, do nothing).
   */
  receive(delivery: { channel: ChannelName; deliveryId: string; topic: string; body: string }): Promise<
    { id: string; duplicate: boolean }
  >;
  /** Deliveries stored but not settled yet (the service stopped after answering), oldest first. */
  unsettled(channel: ChannelName, limit: number): Promise<StoredDelivery[]>;
  /** A delivery processed, or kept aside with the reason it could not be used. */
  settle(id: string, outcome: { done: true } | { quarantine: Quarantine }): Promise<void>;
}

/** The shared Redis, as the channels use it: rate budgets, listing locks and in-doubt marks. */
export type ChannelRedis = ScriptRunner & MarkRedis;

/** What the service lends a plug to build its channel. */
export interface PlugContext {
  config: Config;
  /** The ledger. */
  sql: Sql;
  redis: ChannelRedis;
  metrics: ServiceMetrics;
  /** The built-in sandboxes' catalog, loaded on first use (only when a marketplace is not configured). */
  sandboxCatalog(): Promise<Catalog>;
  /**
   * The POS stock reader every absolute write uses (MercadoLibre's mirror mode, Shopify's ruled listings),
   * opened on first use. It answers AVAILABLE stock: the POS's number less the units of marketplace orders
   * the POS has not recorded yet (issue #14; src/pos/available.ts).
   */
  posStock(): PosStockReader;
  /** Whether a batch is still being sent (not yet recorded), from the ledger. */
  batchSending(batchId: string): Promise<boolean>;
  /** Marketplace orders: inbound custody and each order's effect (issue #14). */
  orders: OrderBook;
  /**
   * The service's own base URL as it listens (e.g. `http://127.0.0.1:8080`, no trailing slash): what a
   * plug subscribes its built-in sandbox's webhooks / notifications to (`${selfUrl()}/webhooks/<name>`).
   */
  selfUrl(): string;
}

/**
 * A channel as the root knows it before plugging: its name, the one store whose
 * sales reach it (when it shows one store only), and how to build it.
 */
export interface ChannelPlugin<P extends ChannelPlug = ChannelPlug> {
  readonly name: ChannelName;
  /**
   * The only stores whose sales reach this channel (MercadoLibre mirroring one store, or
   * the stores of MELI_LOCATIONS); undefined: every store. Custody gives the others no change.
   */
  onlyStores?(context: PlugContext): Promise<string[] | undefined>;
  plug(context: PlugContext): Promise<P>;
}
