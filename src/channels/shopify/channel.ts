/**
 * The Shopify channel: sales become `inventoryAdjustQuantities` deltas on
 * `available`, up to 250 changes per call, coalesced per (item, location),
 * sent with `@idempotent(key:)` and the batch's persisted key. A listing with a
 * stock rule (`STOCK_RULES`) is set absolutely from the POS instead (ruled.ts).
 */
import type { Sql } from "postgres";
import type { CheckResult } from "../../model/health.ts";
import {
  type BatchOutcome,
  type ChangeOutcome,
  type ClaimedBatch,
  OUTCOME_UNKNOWN,
} from "../../model/batch.ts";
import { logger } from "../../log.ts";
import { exponential } from "../../resilience/backoff.ts";
import type { BatchContext, ChannelAdapter } from "../../sync/channel.ts";
import type { ShopifyClient } from "./client.ts";
import { ADJUST_AVAILABLE } from "./documents.ts";
import { ShopifyListings } from "./listings.ts";
import { hasRules, type StockRules } from "../../model/stock_rule.ts";
import type { PosStockReader } from "../../pos/stock.ts";
import { type RuledSet, RuledSets } from "./ruled.ts";
import { ShopifyStock } from "./stock.ts";

const log = logger("shopify");

/** How long the ledger's list of stores sold on Shopify is reused (ruled listings on the default location). */
const SEEN_STORES_TTL_MS = 10_000;

/** Shopify accepts at most 250 changes per inventoryAdjustQuantities call. */
export const MAX_CHANGES_PER_CALL = 250;

/**
 * Wait before a same-key re-send Shopify gave no wait for, by the batch's sends so far:
 * 1 s after the first, doubling to 60 s.
 */
const resendBackoff = exponential({ baseMs: 1_000, maxMs: 60_000, firstAttempt: 1 });

/** Where each store's stock lives in Shopify. */
export interface LocationMap {
  /** Location gid for a store, or undefined when the store is not mapped. */
  locationFor(tiendaId: string): string | undefined;
  /** Stores mapped explicitly (empty when one location serves every store). */
  stores(): string[];
  /** Whether a default location serves stores the map does not name (SHOPIFY_LOCATION_ID). */
  hasDefault?: boolean;
  /** Every location the map uses (its stores' and the default), each once: where a catalog read looks. */
  locations(): string[];
}

/** A fixed location for every store, or a per-store map (with an optional default). */
export function locationMap(byStore: Record<string, string>, fallback?: string): LocationMap {
  return {
    locationFor: (tiendaId) => byStore[tiendaId] ?? fallback,
    stores: () => Object.keys(byStore),
    hasDefault: fallback !== undefined,
    locations: () => [...new Set([...Object.values(byStore), ...(fallback === undefined ? [] : [fallback])])],
  };
}

/** What a batch sends, persisted before the first send. */
interface AdjustRequest {
  variables: {
    input: {
      reason: string;
      name: "available";
      referenceDocumentUri: string;
      changes: { inventoryItemId: string; locationId: string; delta: number; changeFromQuantity: null }[];
    };
    key: string;
  };
  /** For each request change, the logical changes (batch indexes) it carries. */
  index: number[][];
  /** Outcomes decided without asking Shopify (unresolvable SKUs, unmapped stores, net-zero). */
  decided: Record<number, ChangeOutcome>;
  /**
   * Inventory items this request's SKUs were resolved to by a lookup in Shopify while
   * building it (the others came from the cache). Absent in requests stored before.
   */
  fresh?: string[];
  /**
   * Listings with a stock rule: set absolutely from the POS at every send (not part of the
   * idempotent adjustment, whose key replays one request). Absent in requests stored before.
   */
  sets?: RuledSet[];
}

/** Shopify's userError code for an inventory item that does not exist (any more). */
const INVALID_INVENTORY_ITEM = "INVALID_INVENTORY_ITEM";

interface AdjustResponse {
  inventoryAdjustQuantities: {
    inventoryAdjustmentGroup: {
      id: string;
      changes: {
        name: string;
        delta: number;
        quantityAfterChange: number | null;
        item: { id: string };
        location: { id: string };
      }[];
    } | null;
    userErrors: { field: string[] | null; message: string; code: string | null }[];
  } | null;
}

/** Options for {@link ShopifyChannel}. */
export interface ShopifyChannelOptions {
  client: ShopifyClient;
  sql: Sql;
  locations: LocationMap;
  /** One of Shopify's documented inventory reasons (there is no "sale"). */
  reason: string;
  /** Stock rules (`STOCK_RULES`) and the POS they are applied to; without, every listing takes deltas. */
  rules?: { rules: StockRules; pos(): PosStockReader };
}

/** The Shopify adapter for the dispatcher. */
export class ShopifyChannel implements ChannelAdapter {
  readonly name = "shopify" as const;
  readonly maxListingsPerBatch = MAX_CHANGES_PER_CALL;
  readonly listings: ShopifyListings;
  readonly #ruled: RuledSets | undefined;
  #unauthorized: string | undefined;
  /** The stores the ledger has seen sold on Shopify, and when that was asked (default location, rules). */
  #seen: { at: number; stores: Promise<Set<string>> } | undefined;

  constructor(private readonly options: ShopifyChannelOptions) {
    this.listings = new ShopifyListings(options.sql, options.client);
    const rules = options.rules;
    if (rules && hasRules(rules.rules, "shopify")) {
      this.#ruled = new RuledSets({
        rules: rules.rules,
        pos: rules.pos,
        listings: this.listings,
        levels: new ShopifyStock(options.client, this.listings, options.locations, options.reason),
      });
    }
  }

  health(): CheckResult {
    return this.#unauthorized ? { ok: false, detail: this.#unauthorized } : { ok: true };
  }

  async process(batch: ClaimedBatch, context: BatchContext): Promise<BatchOutcome> {
    const built = (batch.request as AdjustRequest | null) ?? await this.#buildRequest(batch, context.signal);
    if ("transient" in built) {
      if (built.transient.reason === "unauthorized") this.#noteUnauthorized(built.transient.error);
      const waitMs = built.transient.waitMs ?? (built.transient.reason === "unauthorized" ? 10_000 : 2_000);
      return { kind: "release", reason: built.transient.reason, error: built.transient.error, waitMs };
    }
    // Every send goes through the ledger first; it hands back the request stored
    // with the batch, so a re-send repeats the original exactly.
    const request = await context.persistRequest(built) as AdjustRequest;
    const results: ChangeOutcome[] = batch.changes.map((_, i) =>
      request.decided[i] ?? { kind: "retry", reason: "unsent", error: "not sent" }
    );
    // Ruled listings first: absolute sets read at send time, so a re-send sets them afresh.
    const ruled = await this.#settleRuled(batch, request, context.signal);
    for (const [i, outcome] of Object.entries(ruled)) results[Number(i)] = outcome;
    if (request.variables.input.changes.length === 0) return { kind: "done", results };
    // Kept if the batch is given up; a re-send sets the ruled listings again anyway.
    const decided = { ...request.decided, ...settledOnly(ruled) };

    const result = await this.options.client.call<AdjustResponse>(
      "AdjustAvailable",
      ADJUST_AVAILABLE,
      request.variables,
      context.signal,
      { stream: true },
    );
    if (result.kind === "unauthorized") {
      if (!this.#unauthorized) {
        log.error("Shopify refused our credentials: {error}", { mark: "error", error: result.error });
      }
      this.#unauthorized = result.error;
      return {
        kind: "resend",
        reason: "unauthorized",
        error: result.error,
        waitMs: 10_000,
        countsAsAttempt: false,
        decided,
      };
    }
    this.#unauthorized = undefined;
    const sent = request.index.flat();
    if (result.kind === "retry") {
      const waitMs = result.waitMs ?? resendBackoff(batch.sends);
      return {
        kind: "resend",
        reason: result.reason,
        error: result.error,
        waitMs,
        countsAsAttempt: result.countsAsAttempt,
        decided,
      };
    }
    if (result.kind === "new_key") {
      for (const i of sent) {
        results[i] = { kind: "retry", reason: result.reason, error: result.error, waitMs: 500 };
      }
      return { kind: "done", results };
    }
    if (result.kind === "rejected") {
      // A definite refusal now says nothing about an earlier send under this key that
      // got no answer: after one, what happened is unknown (never re-armed).
      const reason = result.reason === "idempotency_key_parameter_mismatch" || batch.sends > 1
        ? OUTCOME_UNKNOWN
        : result.reason;
      for (const i of sent) results[i] = { kind: "failed", reason, error: result.error };
      return { kind: "done", results };
    }

    const payload = result.data.inventoryAdjustQuantities;
    const userErrors = payload?.userErrors ?? [];
    // Shopify also reports idempotency and transient failures as userErrors.
    const codes = new Set(userErrors.map((e) => e.code ?? ""));
    const summary = userErrors.map((e) => `${e.code ?? "ERROR"}: ${e.message}`).join("; ");
    if (codes.has("IDEMPOTENCY_CONCURRENT_REQUEST")) {
      return {
        kind: "resend",
        reason: "idempotency_concurrent",
        error: summary,
        waitMs: 1_000,
        countsAsAttempt: false,
        decided,
      };
    }
    if (codes.has("ADJUST_QUANTITIES_FAILED") || codes.has("SERVICE_UNAVAILABLE")) {
      // A userError means this key's request was not applied, and the key now
      // replays that error: go again under a new key.
      for (const i of sent) {
        results[i] = { kind: "retry", reason: "shopify_unavailable", error: summary, waitMs: 2_000 };
      }
      return { kind: "done", results };
    }
    if (codes.has("IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED")) {
      // The key is spent on a failed attempt: nothing was applied; go again under a new key.
      for (const i of sent) {
        results[i] = {
          kind: "retry",
          reason: "idempotency_previous_attempt_failed",
          error: summary,
          waitMs: 500,
        };
      }
      return { kind: "done", results };
    }
    if (codes.has("IDEMPOTENCY_KEY_PARAMETER_MISMATCH")) {
      for (const i of sent) results[i] = { kind: "failed", reason: OUTCOME_UNKNOWN, error: summary };
      return { kind: "done", results };
    }
    if (userErrors.length > 0 || !payload?.inventoryAdjustmentGroup) {
      // The mutation is all-or-nothing: a userError that names one change fails
      // that change; the others were not applied and go out again under a new key.
      const blamed = new Map<number, ChangeOutcome>();
      for (const e of userErrors) {
        const at = (e.field ?? []).indexOf("changes");
        const j = at >= 0 ? Number((e.field ?? [])[at + 1]) : NaN;
        if (Number.isInteger(j) && request.index[j]) {
          const stale = e.code === INVALID_INVENTORY_ITEM
            ? await this.#staleListing(batch, request, j)
            : undefined;
          for (const i of request.index[j]) {
            blamed.set(
              i,
              stale ?? { kind: "failed", reason: (e.code ?? "user_error").toLowerCase(), error: e.message },
            );
          }
        }
      }
      const reasonText = summary || "no adjustment group returned";
      for (const i of sent) {
        const b = blamed.get(i);
        results[i] = b ? b : blamed.size > 0
          ? {
            kind: "retry",
            reason: "batch_rejected",
            error: `another change in the batch was refused: ${summary}`,
            waitMs: 0,
          }
          : userErrors.length > 0
          ? { kind: "failed", reason: "rejected", error: reasonText }
          // No group and no userError (e.g. a field error nulled the payload):
          // it may have been applied.
          : { kind: "failed", reason: OUTCOME_UNKNOWN, error: reasonText };
      }
      return { kind: "done", results, response: payload };
    }
    const after = new Map<string, number | null>();
    for (const c of payload.inventoryAdjustmentGroup.changes) {
      if (c.name === "available" && c.item && c.location) {
        after.set(`${c.item.id} ${c.location.id}`, c.quantityAfterChange);
      }
    }
    for (const [j, change] of request.variables.input.changes.entries()) {
      const quantityAfter = after.get(`${change.inventoryItemId} ${change.locationId}`) ?? null;
      for (const i of request.index[j]) {
        results[i] = {
          kind: "applied",
          quantityAfter,
          detail: { group: payload.inventoryAdjustmentGroup.id },
        };
      }
    }
    return { kind: "done", results, response: { group: payload.inventoryAdjustmentGroup.id } };
  }

  /**
   * Shopify no longer has the inventory item request change `j` names. If the SKU's
   * listing came from the cache, the variant was deleted (and maybe re-created) since:
   * the cached listing is dropped and the change retried, so it is resolved again —
   * applied to the new item, or failed `sku_not_found`, never written to the old one.
   * A listing looked up for this very request is not retried (the change fails
   * `invalid_inventory_item`; a replay resolves the SKU again): that bounds it to once.
   */
  async #staleListing(
    batch: ClaimedBatch,
    request: AdjustRequest,
    j: number,
  ): Promise<ChangeOutcome | undefined> {
    const { inventoryItemId } = request.variables.input.changes[j];
    const sku = batch.changes[request.index[j][0]].sku;
    await this.listings.invalidate(sku, inventoryItemId); // no later sale should try it either
    if (request.fresh?.includes(inventoryItemId)) return undefined;
    log.warning("Shopify no longer has inventory item {item} of SKU {sku}; resolving the SKU again", {
      item: inventoryItemId,
      sku,
    });
    return {
      kind: "retry",
      reason: "listing_stale",
      error:
        `Shopify no longer has inventory item ${inventoryItemId} (variant deleted?); SKU "${sku}" is resolved again`,
      waitMs: 0,
    };
  }

  /** Sets the request's ruled listings (none when rules are off or the request has none). */
  async #settleRuled(
    batch: ClaimedBatch,
    request: AdjustRequest,
    signal: AbortSignal,
  ): Promise<Record<number, ChangeOutcome>> {
    const sets = request.sets ?? [];
    if (sets.length === 0) return {};
    if (!this.#ruled) {
      // Stored by an instance with rules, re-sent by one without: nothing here can compute the value.
      const outcome: ChangeOutcome = {
        kind: "retry",
        reason: "stock_rules_off",
        error: "this batch sets ruled listings but STOCK_RULES has no shopify rule on this instance",
        waitMs: 10_000,
      };
      return Object.fromEntries(sets.flatMap((s) => s.indexes.map((i) => [i, outcome])));
    }
    return await this.#ruled.settle(sets, `gid://marketplace-sync/SyncBatch/${batch.id}`, signal);
  }

  /**
   * Every store whose stock a location shows: those mapped to it, this batch's stores there, and — for
   * the default location (SHOPIFY_LOCATION_ID), which takes any store not mapped — every store the
   * ledger has seen sold on Shopify that lands there.
   */
  #storesAt(batchStores: string[]): (location: string) => Promise<string[]> {
    const { locations } = this.options;
    return async (location) => {
      const at = (t: string) => locations.locationFor(t) === location;
      const stores = new Set([...locations.stores().filter(at), ...batchStores.filter(at)]);
      if (locations.hasDefault) {
        const seen = await this.#seenStores();
        for (const tiendaId of batchStores) seen.add(tiendaId);
        for (const tiendaId of seen) if (at(tiendaId)) stores.add(tiendaId);
      }
      return [...stores].sort();
    };
  }

  /**
   * The stores the ledger has seen sold on Shopify, asked at most every SEEN_STORES_TTL_MS: a scan of
   * the change table per batch would cost more than the batch. Stores this replica's batches carry are
   * added as they come; a store another replica saw first is missed for at most that long.
   */
  #seenStores(): Promise<Set<string>> {
    const now = Date.now();
    if (!this.#seen || now - this.#seen.at > SEEN_STORES_TTL_MS) {
      const stores = this.options.sql<{ tienda_id: string }[]>`
        select distinct tienda_id from stock_change where channel = 'shopify' and event_id not like 'resync:%'`
        .then((rows) => new Set(rows.map((r) => r.tienda_id)));
      // A failed look is not kept: the next batch asks again.
      stores.catch(() => (this.#seen = undefined));
      this.#seen = { at: now, stores };
    }
    return this.#seen.stores;
  }

  #noteUnauthorized(error: string): void {
    if (!this.#unauthorized) log.error("Shopify refused our credentials: {error}", { mark: "error", error });
    this.#unauthorized = error;
  }

  async #buildRequest(
    batch: ClaimedBatch,
    signal: AbortSignal,
  ): Promise<AdjustRequest | { transient: { reason: string; error: string; waitMs?: number } }> {
    const decided: Record<number, ChangeOutcome> = {};
    const merged = new Map<
      string,
      {
        inventoryItemId: string;
        locationId: string;
        sku: string;
        productoId: string | null;
        delta: number;
        indexes: number[];
      }
    >();
    const resolved = await this.listings.resolveMany(batch.changes.map((c) => c.sku), signal);
    const fresh = new Set<string>();
    for (const [i, change] of batch.changes.entries()) {
      const locationId = this.options.locations.locationFor(change.tiendaId);
      if (!locationId) {
        decided[i] = {
          kind: "failed",
          reason: "store_unmapped",
          error:
            `store ${change.tiendaId} has no Shopify location (set SHOPIFY_LOCATION_ID or SHOPIFY_LOCATIONS)`,
        };
        continue;
      }
      const resolution = resolved.get(change.sku)!;
      if (!resolution.ok && "transient" in resolution) return { transient: resolution.transient };
      if (!resolution.ok) {
        decided[i] = resolution.outcome;
        continue;
      }
      this.#unauthorized = undefined;
      if (resolution.fresh) fresh.add(resolution.listing.inventoryItemId);
      const key = `${resolution.listing.inventoryItemId} ${locationId}`;
      const entry = merged.get(key) ?? {
        inventoryItemId: resolution.listing.inventoryItemId,
        locationId,
        sku: change.sku,
        productoId: change.productoId,
        delta: 0,
        indexes: [],
      };
      entry.delta += change.delta;
      entry.indexes.push(i);
      entry.productoId ??= change.productoId;
      merged.set(key, entry);
    }
    const changes: AdjustRequest["variables"]["input"]["changes"] = [];
    const index: number[][] = [];
    const sets: RuledSet[] = [];
    const storesAt = this.#storesAt([...new Set(batch.changes.map((c) => c.tiendaId))]);
    for (const entry of merged.values()) {
      if (this.#ruled) {
        const stores = await storesAt(entry.locationId);
        if (this.#ruled.rulesFor(stores, entry.sku)) {
          // Absolute, from the POS at send time: even a net-zero batch sets the rule's value.
          sets.push({
            inventoryItemId: entry.inventoryItemId,
            locationId: entry.locationId,
            sku: entry.sku,
            productoId: entry.productoId,
            stores,
            indexes: entry.indexes,
            fresh: fresh.has(entry.inventoryItemId),
          });
          continue;
        }
      }
      if (entry.delta === 0) {
        for (const i of entry.indexes) {
          decided[i] = { kind: "applied", quantityAfter: null, detail: { net_zero: true } };
        }
        continue;
      }
      changes.push({
        inventoryItemId: entry.inventoryItemId,
        locationId: entry.locationId,
        delta: entry.delta,
        changeFromQuantity: null,
      });
      index.push(entry.indexes);
    }
    return {
      variables: {
        input: {
          reason: this.options.reason,
          name: "available",
          referenceDocumentUri: `gid://marketplace-sync/SyncBatch/${batch.id}`,
          changes,
        },
        key: batch.idempotencyKey,
      },
      index,
      decided,
      fresh: [...fresh],
      ...(sets.length > 0 ? { sets } : {}),
    };
  }
}

/** The ruled outcomes that settle a change (applied or failed): what a given-up batch keeps. */
function settledOnly(outcomes: Record<number, ChangeOutcome>): Record<number, ChangeOutcome> {
  return Object.fromEntries(Object.entries(outcomes).filter(([, o]) => o.kind !== "retry"));
}
