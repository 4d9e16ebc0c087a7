/**
 * The MercadoLibre channel. Stock on MeLi is absolute (`PUT /items/{id}` or
 * `PUT /items/{id}/variations/{vid}` with `available_quantity`), so:
 *
 * - mirror (default): the value sent is the backing store's stock read from the
 *   POS at send time, clamped at 0. Latest wins, a re-send is harmless, and the
 *   read and the write happen under a per-listing lock so two replicas cannot
 *   land an older reading after a newer one.
 * - delta: read the listing, subtract, write, under the per-listing lock. The
 *   planned `from → to` is persisted before the PUT, so a re-send after a crash
 *   can tell whether the first one landed (listing at `to`) or not (at `from`).
 *
 * A listing with a stock rule (`STOCK_RULES`) is written as mirror mode writes, in
 * either mode: the rule's value of the store's POS stock (a rule is not linear, so
 * a delta cannot carry it).
 *
 * The PUT's answer is read back: a 200 whose `available_quantity` is not what
 * was sent is not `applied`.
 *
 * Writes go once per user product (the items selling it share its stock), under a
 * lock on the user product. With MELI_LOCATIONS they go to the user product's stock
 * locations instead (`/user-products/{id}/stock`, compare-and-set on `x-version`, see
 * `#locationWrite`); Full's `meli_facility` is never written.
 */
import type { MeliLocation } from "../../config.ts";
import type { CheckResult } from "../../model/health.ts";
import {
  type BatchOutcome,
  type ChangeOutcome,
  type ClaimedBatch,
  type LogicalChange,
  OUTCOME_UNKNOWN,
} from "../../model/batch.ts";
import { logger } from "../../log.ts";
import { exponential, jittered } from "../../resilience/backoff.ts";
import { type PosStockReader, type StockReading, StockSourceUnavailableError } from "../../pos/stock.ts";
import { applyRule, describeRule, type StockRule } from "../../model/stock_rule.ts";
import type { BatchContext, ChannelAdapter } from "../../sync/channel.ts";
import {
  type InDoubtMarks,
  type ListingLocks,
  LockLostError,
  LockUnavailableError,
} from "../../sync/listing_lock.ts";
import { describeMeliError, type MeliClient, type MeliResult } from "./client.ts";
import type { MeliItem, MeliListings } from "./listings.ts";
import { type AccessTokens, AuthUnavailableError } from "./tokens.ts";
import {
  describeLocation,
  type LocationTarget,
  onlyInFull,
  quantityAt,
  readUserProductStock,
  type UserProductLocation,
  writeUserProductStock,
} from "./user_products.ts";

const log = logger("mercadolibre");

/** How MeLi quantities are computed. */
export type MeliMode = "mirror" | "delta";

/** Options of {@link MeliChannel}. */
export interface MeliChannelOptions {
  client: MeliClient;
  listings: MeliListings;
  tokens: AccessTokens;
  stock: PosStockReader;
  locks: ListingLocks;
  mode: MeliMode;
  /** The store whose stock MeLi mirrors (mirror mode). */
  tiendaId: string | undefined;
  /** MELI_LOCATIONS: stores → the user products' stock locations (then `tiendaId` is unset). */
  locations?: Record<string, MeliLocation>;
  /** Reactivate a listing MeLi paused at 0 once stock is back. */
  reactivate: boolean;
  /** Listings per batch in mirror mode (delta mode always takes one). */
  batchSize: number;
  /** Delta mode: listings whose last write is unanswered. */
  doubts: InDoubtMarks;
  /** Whether a batch is still being sent (a doubt mark of a finished batch is stale). */
  batchOpen(batchId: string): Promise<boolean>;
  /** The stock rule of a SKU at a store (`STOCK_RULES`); none: undefined. */
  ruleFor?(tiendaId: string, sku: string): StockRule | undefined;
}

/** One listing's write in a batch. */
interface PlanEntry {
  itemId: string;
  variationId: number | null;
  /** The user product the listing sells: the write's and the lock's key when known. */
  userProductId?: string | null;
  /** MELI_LOCATIONS: the changes' deltas per store (delta mode writes each store's location). */
  storeDeltas?: Record<string, number>;
  /**
   * MELI_LOCATIONS, delta mode: the write persisted before its PUT — the `x-version` it
   * carries and the quantity per store. A later send settles it by reading: the version
   * unchanged, it did not land; the quantities there, it did.
   */
  sent?: { version: string; quantities: Record<string, number> };
  sku: string;
  productoId: string | null;
  /** Batch indexes of the logical changes this write carries. */
  indexes: number[];
  delta: number;
  /** Delta mode: the listing's quantity read before the first PUT, and what was sent. */
  from?: number;
  to?: number;
}

/** What a batch sends, persisted before the first send. */
interface MeliPlan {
  mode: MeliMode;
  entries: PlanEntry[];
  /** Outcomes decided without writing (unresolvable SKUs, Full listings, multi-origin). */
  decided: Record<number, ChangeOutcome>;
}

/**
 * Delta mode: a write whose effect is not known. MeLi did not answer, answered
 * 200 without showing the quantity sent (it may still apply it), or the lock
 * was lost before a re-send. Only this batch's from → to check can tell, so it
 * is never re-planned (a re-plan would subtract again from a quantity it set).
 */
function isUnanswered(outcome: ChangeOutcome): outcome is Extract<ChangeOutcome, { kind: "retry" }> {
  return outcome.kind === "retry" &&
    (outcome.reason === "meli_unavailable" || outcome.reason === "not_applied" ||
      outcome.reason === "listing_lock_lost");
}

type Transient = { transient: { reason: string; error: string; waitMs?: number } };

/** A fixed wait, ±25 %: replicas told to come back at the same moment do not. */
function jitter(ms: number): number {
  return jittered(ms, 0.25);
}

/** Looks again at an unanswered PUT while holding the lock: 250 ms, 500 ms, 1 s (i from 0). */
const settleBackoff = exponential({ baseMs: 250, firstAttempt: 0 });

/** A user product's stock write, read and computed again after each lost `x-version` race. */
const VERSION_TRIES = 4;

/**
 * Wait before re-sending an unanswered batch, by its sends so far:
 * 1 s after the first, doubling to 30 s, ±25 %.
 */
const resendBackoff = exponential({ baseMs: 1_000, maxMs: 30_000, firstAttempt: 1, jitter: 0.25 });

function itemKey(e: { itemId: string; variationId: number | null }): string {
  return e.variationId === null ? e.itemId : `${e.itemId}/${e.variationId}`;
}

/** What a write (and its lock) is keyed by: the user product when known, its items share one stock. */
function listingKey(
  e: { itemId: string; variationId: number | null; userProductId?: string | null },
): string {
  return e.userProductId ?? itemKey(e);
}

/**
 * A location write's outcome for one change: a change of a store whose POS stock was unknown (its
 * location was left as it was) fails `stock_unknown`, whatever the others' write came to.
 */
function perStore(outcome: ChangeOutcome, tiendaId: string): ChangeOutcome {
  const unknown = outcome.kind === "applied"
    ? (outcome.detail as { unknown_stores?: Record<string, string> } | undefined)?.unknown_stores
    : undefined;
  const reason = unknown?.[tiendaId];
  return reason === undefined ? outcome : { kind: "failed", reason: "stock_unknown", error: reason };
}

/** What buyers see: every location's stock together. */
function total(locations: UserProductLocation[]): number {
  return locations.reduce((s, l) => s + l.quantity, 0);
}

/** A DLQ reason for a MeLi refusal of a stock write. */
function refusalReason(status: number, text: string): string {
  const t = text.toLowerCase();
  if (t.includes("under_review") || t.includes("under review")) return "listing_under_review";
  if (t.includes("closed")) return "listing_closed";
  if (t.includes("fulfillment") || t.includes(" full")) return "fulfillment_listing";
  return status === 400 ? "meli_validation" : `meli_http_${status}`;
}

/** The MercadoLibre adapter for the dispatcher. */
export class MeliChannel implements ChannelAdapter {
  readonly name = "mercadolibre" as const;
  readonly maxListingsPerBatch: number;
  /** One PUT per listing at MELI_RATE_PER_SEC: a listing written out of its turn delays every other. */
  readonly writesListingsInTurn = true;

  constructor(private readonly options: MeliChannelOptions) {
    // Delta mode persists each listing's from → to before its PUT: one listing per batch.
    this.maxListingsPerBatch = options.mode === "delta" ? 1 : options.batchSize;
  }

  health(): CheckResult {
    return this.options.tokens.health();
  }

  async process(batch: ClaimedBatch, context: BatchContext): Promise<BatchOutcome> {
    const { signal } = context;
    let plan = batch.request as MeliPlan | null;
    if (!plan) {
      // Without a token nothing can be sent: give the changes back untouched (they wait).
      try {
        await this.options.tokens.get(signal);
      } catch (error) {
        if (!(error instanceof AuthUnavailableError)) throw error;
        return { kind: "release", reason: "unauthorized", error: error.message, waitMs: 10_000 };
      }
      const built = await this.#plan(batch, signal);
      if ("transient" in built) {
        const waitMs = built.transient.waitMs ?? (built.transient.reason === "unauthorized" ? 10_000 : 2_000);
        return { kind: "release", reason: built.transient.reason, error: built.transient.error, waitMs };
      }
      plan = built;
    }
    const results: (ChangeOutcome | undefined)[] = batch.changes.map((_, i) => plan!.decided[i]);
    if (plan.entries.length === 0) {
      await context.persistRequest(plan);
      return {
        kind: "done",
        results: results.map((r) => r ?? { kind: "retry", reason: "unsent", error: "not sent" }),
      };
    }
    if (this.options.locations && plan.mode === "mirror") {
      // Absolute and compare-and-set on x-version: a re-send reads and computes again, nothing to settle.
      plan = await context.persistRequest(plan) as MeliPlan;
      for (const entry of plan.entries) {
        const outcome = await this.#locked(entry, () => this.#locationWrite(entry, "mirror", signal));
        for (const i of entry.indexes) results[i] = perStore(outcome, batch.changes[i].tiendaId);
      }
    } else if (plan.mode === "mirror") {
      plan = await context.persistRequest(plan) as MeliPlan;
      for (const entry of plan.entries) {
        const outcome = await this.#locked(entry, () => this.#mirror(entry, signal));
        for (const i of entry.indexes) results[i] = outcome;
      }
    } else {
      for (const entry of plan.entries) {
        let blockedBy: string | undefined;
        const outcome = await this.#locked(entry, async () => {
          const key = listingKey(entry);
          // Claimed before the read (NX): while this batch holds it, no other batch reads the listing
          // and plans from it, even if this lock expires meanwhile.
          const holder = await this.options.doubts.claim(key, batch.id, this.options.batchOpen);
          if (holder) {
            blockedBy = holder;
            return {
              kind: "retry",
              reason: "listing_in_doubt",
              error: `batch ${holder} must settle ${key} first`,
            };
          }
          if (this.options.locations) {
            const persist = async () => {
              plan = await context.persistRequest(plan) as MeliPlan;
              return plan.entries.find((e) => listingKey(e) === key)!;
            };
            const stored = (batch.request as MeliPlan | null)?.entries.find((e) => listingKey(e) === key);
            const written = await this.#locationWrite(stored ?? entry, "delta", signal, persist);
            if (!isUnanswered(written)) await this.options.doubts.clear(key, batch.id);
            return written;
          }
          const decided = await this.#deltaPrepare(batch, entry, signal);
          if (decided) {
            await this.options.doubts.clear(key, batch.id);
            return decided;
          }
          plan = await context.persistRequest(plan) as MeliPlan;
          const stored = plan.entries.find((e) => listingKey(e) === key)!;
          let written: ChangeOutcome;
          try {
            written = await this.#write(stored, stored.to!, signal);
            // No answer: look again now, still holding the lock, while nothing else can move it.
            for (let i = 0; isUnanswered(written) && i < 3 && !signal.aborted; i++) {
              await new Promise((r) => setTimeout(r, settleBackoff(i)));
              const settled = await this.#deltaSettle(stored, signal);
              if (settled === "resend") written = await this.#write(stored, stored.to!, signal);
              else if (settled) written = settled;
            }
          } catch (error) {
            if (!(error instanceof LockLostError)) throw error;
            // Not sent; an earlier send of this batch may have landed: settle it by a re-send.
            written = { kind: "retry", reason: "listing_lock_lost", error: error.message };
          }
          // Until it is settled, nobody else may re-plan this listing from a quantity we may have set.
          if (!isUnanswered(written)) await this.options.doubts.clear(key, batch.id);
          return written;
        });
        if (blockedBy && batch.sends === 0 && !batch.resend) {
          return {
            kind: "release",
            reason: "listing_in_doubt",
            error: (outcome as { error: string }).error,
            waitMs: 2_000,
          };
        }
        if (isUnanswered(outcome)) {
          // The PUT may have landed: only this batch's from → to can tell, so the
          // same batch is re-sent (never re-planned from a quantity it may have set).
          return {
            kind: "resend",
            reason: outcome.reason,
            error: outcome.error,
            waitMs: resendBackoff(batch.sends),
            countsAsAttempt: true,
            decided: plan.decided,
          };
        }
        for (const i of entry.indexes) results[i] = perStore(outcome, batch.changes[i].tiendaId);
      }
    }
    return {
      kind: "done",
      results: results.map((r) => r ?? { kind: "retry", reason: "unsent", error: "not sent" }),
      response: { entries: plan.entries.length },
    };
  }

  async #locked(entry: PlanEntry, work: () => Promise<ChangeOutcome>): Promise<ChangeOutcome> {
    try {
      const outcome = await this.options.locks.with(listingKey(entry), work);
      // A batch writes its listings one after another, seconds apart at MELI_RATE_PER_SEC: each listing's
      // changes are applied when MeLi answered for it, not when the last listing of the batch is done. The
      // write stamps the answer itself; an outcome decided otherwise (a read that confirmed it, nothing to
      // write) is stamped here, when the listing is done.
      return outcome.kind === "applied"
        ? { ...outcome, answeredAt: outcome.answeredAt ?? Date.now() }
        : outcome;
    } catch (error) {
      if (error instanceof LockUnavailableError) {
        return { kind: "retry", reason: "listing_locked", error: error.message, waitMs: jitter(2_000) };
      }
      throw error;
    }
  }

  /** A store's (available) POS stock of the entry's SKU now, or the retry the channel answers while it cannot be read. */
  async #posStock(tiendaId: string, entry: PlanEntry): Promise<StockReading | ChangeOutcome> {
    try {
      return await this.options.stock.read({ tiendaId, productoId: entry.productoId, sku: entry.sku });
    } catch (error) {
      if (!(error instanceof StockSourceUnavailableError)) throw error;
      return { kind: "retry", reason: "stock_source_unavailable", error: error.message, waitMs: 5_000 };
    }
  }

  /** Mirror: the backing store's POS stock now, through the SKU's stock rule, else clamped at 0. */
  async #mirror(entry: PlanEntry, signal: AbortSignal): Promise<ChangeOutcome> {
    const tiendaId = this.options.tiendaId;
    if (!tiendaId) {
      return { kind: "failed", reason: "store_unmapped", error: "MELI_TIENDA_ID is not set (mirror mode)" };
    }
    const reading = await this.#posStock(tiendaId, entry);
    if ("kind" in reading) return reading;
    if (!reading.found) return { kind: "failed", reason: "stock_unknown", error: reading.reason };
    const rule = this.options.ruleFor?.(tiendaId, entry.sku);
    const quantity = rule ? applyRule(rule, reading.quantity) : Math.max(0, reading.quantity);
    const outcome = await this.#write(entry, quantity, signal);
    if (outcome.kind === "applied") {
      outcome.detail = {
        ...(outcome.detail as object),
        source: reading.origin,
        pos_quantity: reading.quantity,
        ...(rule ? { rule: describeRule(rule) } : {}),
      };
    }
    return outcome;
  }

  /**
   * MELI_LOCATIONS: sets the user product's mapped locations — a store's POS stock
   * (mirror mode, or a store with a stock rule: the rule's value) or, in delta mode,
   * the location's quantity read now plus the store's delta. The PUT carries the
   * `x-version` of the read, so it lands only on the stock it was computed from.
   *
   * Mirror: a 409 is read and computed again (VERSION_TRIES a send); a re-send
   * computes again. Delta: the write (version and quantities) is persisted before
   * its PUT, as `/items` delta persists from → to, and the first stored is the one
   * kept: a 409 ends the send (`meli_conflict`; a 409 never lands, so the change is
   * planned again from a fresh read). A write without an answer — now, or from an
   * earlier send that died — is settled by {@link #locationSettle}: never a second
   * subtraction.
   */
  async #locationWrite(
    entry: PlanEntry,
    mode: MeliMode,
    signal: AbortSignal,
    persist?: () => Promise<PlanEntry>,
  ): Promise<ChangeOutcome> {
    const upId = entry.userProductId;
    if (!upId) {
      return {
        kind: "failed",
        reason: "user_product_unknown",
        error: `MercadoLibre names no user_product_id for ${
          itemKey(entry)
        }: its stock locations cannot be set`,
      };
    }
    if (mode === "delta" && entry.sent) return await this.#locationSettle(entry, upId, entry.sent, signal);
    let mapped = Object.entries(this.options.locations!).filter(([tiendaId]) =>
      mode === "mirror" || (entry.storeDeltas?.[tiendaId] ?? 0) !== 0
    );
    const unknown: Record<string, string> = {};
    if (mapped.length === 0) {
      return { kind: "applied", quantityAfter: null, detail: { nothing_to_write: true } };
    }
    const rules = new Map(
      mapped.map(([tiendaId]) => [tiendaId, this.options.ruleFor?.(tiendaId, entry.sku)]),
    );
    // The POS stock of every store written absolutely: all of them in mirror mode, ruled ones in delta.
    const pos = new Map<string, number>();
    for (const [tiendaId] of mapped) {
      if (mode === "delta" && !rules.get(tiendaId)) continue;
      const reading = await this.#posStock(tiendaId, entry);
      if ("kind" in reading) return reading;
      if (!reading.found) unknown[tiendaId] = reading.reason;
      else pos.set(tiendaId, reading.quantity);
    }
    // A store whose POS stock is unknown (it does not carry the SKU) keeps its location as it is and
    // fails its own changes; the other stores' locations are still written.
    if (Object.keys(unknown).length > 0) {
      mapped = mapped.filter(([tiendaId]) => !(tiendaId in unknown));
      if (mapped.length === 0) {
        return { kind: "failed", reason: "stock_unknown", error: Object.values(unknown).join("; ") };
      }
    }
    let conflicts = 0;
    for (let attempt = 0; attempt < VERSION_TRIES; attempt++) {
      const read = await readUserProductStock(this.options.client, upId, signal);
      if (read.kind !== "ok") return this.#problem(read, entry);
      const stock = read.data;
      if (onlyInFull(stock)) {
        return {
          kind: "failed",
          reason: "fulfillment_listing",
          error: `user product ${upId} (${itemKey(entry)}) is stocked in MercadoLibre Full (meli_facility) ` +
            "only: MercadoLibre manages that stock, so the POS cannot set it",
        };
      }
      const quantities: Record<string, number> = {};
      const from: Record<string, number> = {};
      for (const [tiendaId, location] of mapped) {
        const rule = rules.get(tiendaId);
        from[tiendaId] = quantityAt(stock, location);
        quantities[tiendaId] = pos.has(tiendaId)
          ? rule ? applyRule(rule, pos.get(tiendaId)!) : Math.max(0, pos.get(tiendaId)!)
          : Math.max(0, from[tiendaId] + entry.storeDeltas![tiendaId]);
      }
      if (mode === "delta") {
        entry.sent = { version: stock.version, quantities };
        const stored = await persist!();
        if (
          stored.sent?.version !== stock.version ||
          JSON.stringify(stored.sent.quantities) !== JSON.stringify(quantities)
        ) {
          // An earlier send's write is the one on record: settle that one, never send a second.
          return await this.#locationSettle(stored, upId, stored.sent, signal);
        }
      }
      const put = await writeUserProductStock(
        this.options.client,
        upId,
        stock.version,
        this.#targets(quantities)!,
        signal,
      );
      if (put.kind === "conflict") {
        conflicts++;
        if (mode === "delta") {
          return {
            kind: "retry",
            reason: "meli_conflict",
            error:
              `user product ${upId}'s stock moved between its read and the write (x-version): planned again`,
            waitMs: jitter(500),
          };
        }
        continue;
      }
      if (put.kind === "unavailable" && mode === "delta") {
        return await this.#locationSettle(entry, upId, entry.sent, signal);
      }
      if (put.kind !== "ok") return this.#problem(put, entry);
      const outcome = this.#locationAnswer(upId, quantities, put);
      if (outcome.kind === "applied") {
        const detail = outcome.detail as Record<string, unknown>;
        if (mode === "delta") detail.from = from;
        const ruled = [...rules].filter(([, r]) => r).map(([t, r]) => [t, describeRule(r!)]);
        if (ruled.length > 0) detail.rule = Object.fromEntries(ruled);
        if (conflicts > 0) detail.version_conflicts = conflicts;
        if (Object.keys(unknown).length > 0) detail.unknown_stores = unknown;
      }
      return outcome;
    }
    return {
      kind: "retry",
      reason: "meli_conflict",
      error: `user product ${upId}'s stock moved between each read and write (${VERSION_TRIES} x-version ` +
        "conflicts in a row)",
      waitMs: jitter(1_000),
    };
  }

  /**
   * Delta mode on stock locations: a persisted write whose answer never came. Read:
   * the version unchanged, it did not land and nothing moved — the same write is
   * sent again, still compare-and-set (a 409 then is read and judged again: the
   * unanswered write may be what moved it); the quantities there, it landed; anything
   * else, nobody can tell (`outcome_unknown`). Unreadable: `meli_unavailable`, so
   * the same batch is sent again later and settles then.
   */
  async #locationSettle(
    entry: PlanEntry,
    upId: string,
    sent: PlanEntry["sent"],
    signal: AbortSignal,
  ): Promise<ChangeOutcome> {
    const targets = sent && this.#targets(sent.quantities);
    if (!sent || !targets) {
      return {
        kind: "failed",
        reason: OUTCOME_UNKNOWN,
        error: `an earlier send of this batch wrote user product ${upId}'s stock without recording the ` +
          "x-version it sent (or to a store MELI_LOCATIONS no longer maps): check it and resync",
      };
    }
    let error = "";
    for (let i = 0; i < 3 && !signal.aborted; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, settleBackoff(i - 1)));
      const read = await readUserProductStock(this.options.client, upId, signal);
      if (read.kind !== "ok") {
        if (read.kind !== "unavailable" && read.kind !== "rate_limited") return this.#problem(read, entry);
        error = read.error;
        continue;
      }
      if (read.data.version === sent.version) {
        const put = await writeUserProductStock(this.options.client, upId, sent.version, targets, signal);
        if (put.kind === "ok") {
          const outcome = this.#locationAnswer(upId, sent.quantities, put);
          if (outcome.kind === "applied") (outcome.detail as Record<string, unknown>).resent = true;
          return outcome;
        }
        if (put.kind === "conflict") {
          // The stock moved since the read — maybe by our own unanswered write, landing late. Planning
          // again would subtract the sale a second time: read again and judge what is there.
          error = put.error;
          continue;
        }
        if (put.kind !== "unavailable") return this.#problem(put, entry);
        error = put.error;
        continue;
      }
      const shown = Object.entries(sent.quantities).map(([tiendaId, q]) =>
        [quantityAt(read.data, this.options.locations![tiendaId]), q] as const
      );
      if (shown.every(([now, q]) => now === q)) {
        return {
          kind: "applied",
          quantityAfter: total(read.data.locations),
          detail: { user_product_id: upId, sent: sent.quantities, confirmed_by_read: true },
        };
      }
      return {
        kind: "failed",
        reason: OUTCOME_UNKNOWN,
        error: `user product ${upId}'s stock moved past a write that got no answer (sent ` +
          `${JSON.stringify(sent.quantities)}, version ${sent.version}; now version ${read.data.version}): ` +
          "check it and resync",
      };
    }
    return {
      kind: "retry",
      reason: "meli_unavailable",
      error: `the stock write of user product ${upId} got no answer and could not be read again yet` +
        (error ? `: ${error}` : ""),
    };
  }

  /** The mapped locations of a write, or undefined when a store is no longer mapped. */
  #targets(quantities: Record<string, number>): LocationTarget[] | undefined {
    const targets: LocationTarget[] = [];
    for (const [tiendaId, quantity] of Object.entries(quantities)) {
      const location = this.options.locations![tiendaId];
      if (!location) return undefined;
      targets.push({ location, quantity });
    }
    return targets;
  }

  /** A location write's answer: applied when MeLi shows every quantity sent. */
  #locationAnswer(
    upId: string,
    quantities: Record<string, number>,
    put: Extract<MeliResult<{ locations?: UserProductLocation[] }>, { kind: "ok" }>,
  ): ChangeOutcome {
    const shown = { locations: put.data.locations ?? [] };
    for (const [tiendaId, quantity] of Object.entries(quantities)) {
      const location = this.options.locations![tiendaId];
      if (quantityAt(shown, location) !== quantity) {
        return {
          kind: "retry",
          reason: "not_applied",
          error: `MercadoLibre answered ${put.status} but user product ${upId} shows ` +
            `${quantityAt(shown, location)} at ${describeLocation(location)}, not the ${quantity} sent`,
          waitMs: jitter(2_000),
        };
      }
    }
    return {
      kind: "applied",
      quantityAfter: total(shown.locations),
      detail: { user_product_id: upId, sent: quantities },
      answeredAt: Date.now(),
    };
  }

  /** After an unanswered PUT: applied (at `to`), "resend" (still at `from`), or undefined (cannot tell yet). */
  async #deltaSettle(entry: PlanEntry, signal: AbortSignal): Promise<ChangeOutcome | "resend" | undefined> {
    const read = await this.#readQuantity(entry, signal);
    if ("kind" in read) return undefined;
    if (read.quantity === entry.to) {
      return {
        kind: "applied",
        quantityAfter: entry.to,
        detail: { from: entry.from, confirmed_by_read: true },
      };
    }
    if (read.quantity === entry.from) return "resend";
    return {
      kind: "failed",
      reason: OUTCOME_UNKNOWN,
      error:
        `listing ${listingKey(entry)} holds ${read.quantity}, neither ${entry.from} nor the ${entry.to} ` +
        "sent without an answer: it changed meanwhile; check it and resync",
    };
  }

  /**
   * Delta: decides from the listing's quantity. Returns an outcome when nothing
   * should be written, or undefined after filling `from`/`to` for the PUT.
   */
  async #deltaPrepare(
    batch: ClaimedBatch,
    entry: PlanEntry,
    signal: AbortSignal,
  ): Promise<ChangeOutcome | undefined> {
    const read = await this.#readQuantity(entry, signal);
    if ("kind" in read) return read;
    const stored = (batch.request as MeliPlan | null)?.entries.find((e) =>
      listingKey(e) === listingKey(entry)
    );
    if (stored?.from !== undefined && stored.to !== undefined) {
      // A re-send: did the first PUT land?
      if (read.quantity === stored.to) {
        return {
          kind: "applied",
          quantityAfter: stored.to,
          detail: { from: stored.from, confirmed_by_read: true },
        };
      }
      if (read.quantity === stored.from) return undefined; // not applied: send it again
      return {
        kind: "failed",
        reason: OUTCOME_UNKNOWN,
        error:
          `listing ${listingKey(entry)} holds ${read.quantity}, neither the ${stored.from} read before ` +
          `the first send nor the ${stored.to} sent: it changed meanwhile; check it and resync`,
      };
    }
    entry.from = read.quantity;
    entry.to = Math.max(0, read.quantity + entry.delta);
    return undefined;
  }

  async #readQuantity(entry: PlanEntry, signal: AbortSignal): Promise<{ quantity: number } | ChangeOutcome> {
    const got = await this.options.client.request<MeliItem>(
      "GET",
      `/items/${encodeURIComponent(entry.itemId)}`,
      {
        operation: "get_item",
        signal,
      },
    );
    if (got.kind !== "ok") return this.#problem(got, entry);
    if (entry.variationId === null) return { quantity: got.data.available_quantity };
    const variation = got.data.variations?.find((v) => v.id === entry.variationId);
    if (!variation) {
      await this.options.listings.forget(entry.sku);
      return {
        kind: "retry",
        reason: "listing_gone",
        error: `variation ${listingKey(entry)} no longer exists`,
      };
    }
    return { quantity: variation.available_quantity };
  }

  /** PUTs the quantity and checks MeLi's answer. */
  async #write(entry: PlanEntry, quantity: number, signal: AbortSignal): Promise<ChangeOutcome> {
    const path = entry.variationId === null
      ? `/items/${encodeURIComponent(entry.itemId)}`
      : `/items/${encodeURIComponent(entry.itemId)}/variations/${entry.variationId}`;
    const put = await this.options.client.request<MeliItem>("PUT", path, {
      operation: entry.variationId === null ? "put_item" : "put_variation",
      body: { available_quantity: quantity },
      signal,
    });
    if (put.kind !== "ok") return this.#problem(put, entry);
    const answeredAt = Date.now(); // before any reactivation calls below: the stock is MeLi's from here
    const after = entry.variationId !== null && put.data.variations
      ? put.data.variations.find((v) => v.id === entry.variationId)?.available_quantity
      : put.data.available_quantity;
    if (after !== quantity) {
      return {
        kind: "retry",
        reason: "not_applied",
        error: `MercadoLibre answered ${put.status} but ${listingKey(entry)} shows available_quantity ` +
          `${after ?? "(missing)"}, not the ${quantity} sent`,
        waitMs: jitter(2_000),
      };
    }
    const detail: Record<string, unknown> = { sent: quantity };
    if (entry.from !== undefined) detail.from = entry.from;
    if (this.options.reactivate && quantity > 0) {
      const reactivated = await this.#reactivate(
        entry,
        entry.variationId === null ? put.data : undefined,
        signal,
      );
      if (reactivated) detail.reactivation = reactivated;
    }
    return { kind: "applied", quantityAfter: quantity, detail, answeredAt };
  }

  /** Reactivates a listing MeLi paused because it ran out of stock. */
  async #reactivate(
    entry: PlanEntry,
    item: MeliItem | undefined,
    signal: AbortSignal,
  ): Promise<string | undefined> {
    let state = item;
    if (!state) {
      const got = await this.options.client.request<MeliItem>(
        "GET",
        `/items/${encodeURIComponent(entry.itemId)}`,
        {
          operation: "get_item",
          signal,
        },
      );
      if (got.kind !== "ok") return `could not read the status: ${got.error}`;
      state = got.data;
    }
    if (state.status !== "paused" || !(state.sub_status ?? []).includes("out_of_stock")) return undefined;
    let put;
    try {
      put = await this.options.client.request<MeliItem>(
        "PUT",
        `/items/${encodeURIComponent(entry.itemId)}`,
        {
          operation: "put_item_status",
          body: { status: "active" },
          signal,
        },
      );
    } catch (error) {
      // The stock write landed already; the next write under the lock reactivates it.
      if (error instanceof LockLostError) return `not sent: ${error.message}`;
      throw error;
    }
    if (put.kind !== "ok") {
      log.warning("could not reactivate {item_id} ({sku}): {error}", {
        item_id: entry.itemId,
        sku: entry.sku,
        error: put.error,
      });
      return `failed: ${put.error}`;
    }
    log.info("reactivated {item_id} ({sku}): stock is back", {
      mark: "done",
      item_id: entry.itemId,
      sku: entry.sku,
    });
    return "reactivated";
  }

  async #problem(
    result: Exclude<MeliResult<unknown>, { kind: "ok" }>,
    entry: PlanEntry,
  ): Promise<ChangeOutcome> {
    switch (result.kind) {
      case "conflict":
        return { kind: "retry", reason: "meli_conflict", error: result.error, waitMs: jitter(1_000) };
      case "rate_limited":
        return { kind: "retry", reason: "rate_limited", error: result.error, waitMs: result.waitMs };
      case "unavailable":
        return { kind: "retry", reason: "meli_unavailable", error: result.error };
      case "auth":
        return { kind: "retry", reason: "unauthorized", error: result.error, waitMs: 10_000 };
      case "rejected":
        if (result.status === 404) {
          await this.options.listings.forget(entry.sku);
          return { kind: "retry", reason: "listing_gone", error: result.error };
        }
        return {
          kind: "failed",
          reason: refusalReason(result.status, `${result.meli.error} ${result.meli.message}`),
          error: `MercadoLibre refused the stock update of ${listingKey(entry)}: ${
            describeMeliError(result.meli)
          }`,
        };
    }
  }

  /** Resolves the batch's SKUs and groups its changes per listing. */
  async #plan(batch: ClaimedBatch, signal: AbortSignal): Promise<MeliPlan | Transient> {
    const decided: Record<number, ChangeOutcome> = {};
    const seller = await this.options.listings.seller(signal);
    if ("ok" in seller) {
      if ("transient" in seller) return { transient: seller.transient };
      batch.changes.forEach((_, i) => decided[i] = seller.outcome);
      return { mode: this.options.mode, entries: [], decided };
    }
    const locations = this.options.locations;
    if (seller.tags.includes("warehouse_management") && !locations) {
      // MeLi ignores /items stock writes for multi-origin sellers: never report a silent success.
      const outcome: ChangeOutcome = {
        kind: "failed",
        reason: "multi_origin_unmapped",
        error: "this seller uses multi-origin stock (warehouse_management): MercadoLibre ignores " +
          "available_quantity writes on /items for it; map the POS stores to its warehouses with " +
          'MELI_LOCATIONS ({"<tienda_id>": {"store_id": "…", "network_node_id": "…"}})',
      };
      batch.changes.forEach((_, i) => decided[i] = outcome);
      return { mode: this.options.mode, entries: [], decided };
    }
    const entries = new Map<string, PlanEntry>();
    const resolved = await this.options.listings.resolveMany(batch.changes.map((c) => c.sku), signal);
    for (const [i, change] of batch.changes.entries()) {
      const resolution = resolved.get(change.sku)!;
      if (!resolution.ok && "transient" in resolution) return { transient: resolution.transient };
      if (!resolution.ok) {
        decided[i] = resolution.outcome;
        continue;
      }
      const { listing } = resolution;
      if (locations && !locations[change.tiendaId]) {
        decided[i] = {
          kind: "failed",
          reason: "store_unmapped",
          error: `store ${change.tiendaId} is not in MELI_LOCATIONS: MercadoLibre keeps no stock for it`,
        };
        continue;
      }
      // With MELI_LOCATIONS the user product's locations tell what is Full's (a listing in Full may
      // also have the seller's own stock); through /items a Full listing's stock is never the seller's.
      if (!locations && listing.logisticType === "fulfillment") {
        decided[i] = {
          kind: "failed",
          reason: "fulfillment_listing",
          error: `${listingKey(listing)} is a MercadoLibre Full (fulfillment) listing: ` +
            "MeLi's warehouse manages its stock, so the POS cannot set it",
        };
        continue;
      }
      const key = listingKey(listing);
      const entry: PlanEntry = entries.get(key) ?? {
        itemId: listing.itemId,
        variationId: listing.variationId,
        userProductId: listing.userProductId,
        ...(locations ? { storeDeltas: {} } : {}),
        sku: change.sku,
        productoId: change.productoId,
        indexes: [],
        delta: 0,
      };
      entry.delta += change.delta;
      if (entry.storeDeltas) {
        entry.storeDeltas[change.tiendaId] = (entry.storeDeltas[change.tiendaId] ?? 0) + change.delta;
      }
      entry.indexes.push(i);
      entry.productoId ??= (change as LogicalChange).productoId;
      entries.set(key, entry);
    }
    const planned = [...entries.values()];
    // Delta mode: a listing with a stock rule is written absolutely, as mirror mode writes (a delta
    // batch holds one listing, so the whole plan is one or the other).
    const store = this.options.tiendaId;
    const ruled = !locations && store !== undefined && planned.length > 0 &&
      planned.every((e) => this.options.ruleFor?.(store, e.sku) !== undefined);
    return { mode: ruled ? "mirror" : this.options.mode, entries: planned, decided };
  }
}
