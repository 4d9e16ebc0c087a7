/**
 * Shopify listings with a stock rule (`STOCK_RULES`): a rule is not linear (the clamp at 0, a
 * maximum, a percentage), so a sale's delta cannot carry it. Such a listing — an inventory item at a
 * location — is set absolutely instead, as resync sets one: the POS stock of every store on the
 * location, each through its own rule and summed, written with `inventorySetQuantities` compared
 * with the quantity just read (`changeFromQuantity`). The POS is read before and after Shopify, so a
 * sale reserved meanwhile makes the listing be computed again rather than set from an older reading;
 * a compare-and-set that finds another value (`CHANGE_FROM_QUANTITY_STALE`) is read and computed again,
 * and a write that landed is followed by one more POS read (a sale reserved just before it, which
 * another writer found nothing to send for, would otherwise leave this older value standing).
 */
import type { ChangeOutcome } from "../../model/batch.ts";
import {
  describeRules,
  placeQuantity,
  resolveRule,
  type StockRule,
  type StockRules,
} from "../../model/stock_rule.ts";
import {
  type PosStockReader,
  type StockKey,
  type StockReading,
  StockSourceUnavailableError,
} from "../../pos/stock.ts";
import type { StockRead } from "../../sync/channel.ts";
import type { ShopifyListings } from "./listings.ts";
import type { StockSetOutcome, StockWriteMany } from "./stock.ts";
import type { ItemAtLocation } from "./documents.ts";

/** Reads and compare-and-sets of many listings in one call each (ShopifyStock's). */
export interface BatchedLevels {
  readMany(refs: readonly ItemAtLocation[], signal?: AbortSignal): Promise<StockRead[]>;
  writeMany(
    sets: readonly { ref: ItemAtLocation; from: number; to: number }[],
    reference: string,
    signal?: AbortSignal,
  ): Promise<StockWriteMany>;
}

/** One ruled listing of a batch, as persisted with its request. */
export interface RuledSet {
  inventoryItemId: string;
  locationId: string;
  sku: string;
  productoId: string | null;
  /** Every store whose stock the location shows (the POS is read at each). */
  stores: string[];
  /** The batch's logical changes (indexes) this set settles. */
  indexes: number[];
  /** Whether the SKU's listing was looked up for this batch (not from the cache). */
  fresh?: boolean;
}

/** Options of {@link RuledSets}. */
export interface RuledSetsOptions {
  rules: StockRules;
  levels: BatchedLevels;
  /** The POS stock reader, opened on first use. */
  pos(): PosStockReader;
  listings: ShopifyListings;
}

/** Rounds of read-compute-set before a listing whose stock keeps moving is left for a retry. */
const ROUNDS = 5;

/** What a listing should show now, from the POS; or why it cannot be told. */
type Wanted = { target: number; pos: number[]; rule: string } | { outcome: ChangeOutcome };

/** Sets ruled Shopify listings absolutely from the POS. */
export class RuledSets {
  constructor(private readonly options: RuledSetsOptions) {}

  /** The rule of each store for a SKU, or undefined when none of them has one (the delta path applies). */
  rulesFor(stores: readonly string[], sku: string): (StockRule | undefined)[] | undefined {
    const rules = stores.map((tiendaId) => resolveRule(this.options.rules, "shopify", tiendaId, sku));
    return rules.some((r) => r !== undefined) ? rules : undefined;
  }

  /**
   * Sets every listing to its rule's value of the POS stock now; an outcome per logical change (by
   * batch index). `reference` is the batch's document URI.
   */
  async settle(
    sets: readonly RuledSet[],
    reference: string,
    signal: AbortSignal,
  ): Promise<Record<number, ChangeOutcome>> {
    const outcomes: Record<number, ChangeOutcome> = {};
    const decide = (set: RuledSet, outcome: ChangeOutcome) => {
      for (const i of set.indexes) outcomes[i] = outcome;
    };
    let open = [...sets];
    for (let round = 1; open.length > 0 && round <= ROUNDS && !signal.aborted; round++) {
      const before = await this.#wanted(open);
      const reads = await this.options.levels.readMany(open.map(refOf), signal);
      const after = await this.#wanted(open);
      const writes: { set: RuledSet; from: number; wanted: Extract<Wanted, { target: number }> }[] = [];
      const again: RuledSet[] = [];
      for (const [i, set] of open.entries()) {
        const [first, second, read] = [before[i], after[i], reads[i]];
        if ("outcome" in first) decide(set, first.outcome);
        else if ("outcome" in second) decide(set, second.outcome);
        else if (!read.ok) decide(set, await this.#unreadable(set, read));
        // A sale reserved between the two POS reads: Shopify's value may already count it or not.
        else if (first.pos.some((q, k) => q !== second.pos[k])) again.push(set);
        else if (read.quantity === second.target) {
          decide(set, applied(second, second.target, { unchanged: true }));
        } else writes.push({ set, from: read.quantity, wanted: second });
      }
      if (writes.length > 0) {
        const { outcomes: written } = await this.options.levels.writeMany(
          writes.map((w) => ({ ref: refOf(w.set), from: w.from, to: w.wanted.target })),
          reference,
          signal,
        );
        const landed: typeof writes = [];
        for (const [i, w] of writes.entries()) {
          const outcome = judged(written[i], w.wanted);
          if (outcome?.kind === "applied") landed.push(w);
          if (outcome) decide(w.set, outcome);
          else again.push(w.set);
        }
        // Compare-and-set is by value: a sale reserved after the last POS read, whose own batch found
        // Shopify already at its new target (nothing to send), cannot stop this older value from
        // landing. So the POS is read once more: moved since, the listing is computed and set again.
        const now = landed.length > 0 ? await this.#wanted(landed.map((w) => w.set)) : [];
        for (const [i, w] of landed.entries()) {
          const check = now[i];
          if ("pos" in check && check.pos.some((q, k) => q !== w.wanted.pos[k])) again.push(w.set);
        }
      }
      open = again;
    }
    for (const set of open) {
      decide(set, {
        kind: "retry",
        reason: "stock_kept_changing",
        error: `the POS or Shopify stock of ${set.sku} kept changing (${ROUNDS} rounds); set again later`,
        waitMs: 1_000,
      });
    }
    return outcomes;
  }

  /** What each listing should show from the POS now (each store's stock through its rule, summed). */
  async #wanted(sets: readonly RuledSet[]): Promise<Wanted[]> {
    const keys: StockKey[] = sets.flatMap((set) =>
      set.stores.map((tiendaId) => ({ tiendaId, productoId: set.productoId, sku: set.sku }))
    );
    let readings: StockReading[];
    try {
      readings = await this.options.pos().readMany(keys);
    } catch (error) {
      if (!(error instanceof StockSourceUnavailableError)) throw error;
      const outcome: ChangeOutcome = {
        kind: "retry",
        reason: "stock_source_unavailable",
        error: error.message,
        waitMs: 5_000,
      };
      return sets.map(() => ({ outcome }));
    }
    let at = 0;
    return sets.map((set): Wanted => {
      const mine = readings.slice(at, at += set.stores.length);
      const unknown = mine.find((r) => !r.found);
      if (unknown && !unknown.found) {
        return { outcome: { kind: "failed", reason: "stock_unknown", error: unknown.reason } };
      }
      const pos = mine.map((r) => r.found ? r.quantity : 0);
      const rules = set.stores.map((tiendaId) =>
        resolveRule(this.options.rules, "shopify", tiendaId, set.sku)
      );
      return {
        target: placeQuantity(set.stores.map((_, k) => ({ rule: rules[k], quantity: pos[k] }))),
        pos,
        rule: describeRules(set.stores.map((tiendaId, k) => ({ tiendaId, rule: rules[k] }))),
      };
    });
  }

  /** A listing Shopify could not read: gone (resolve the SKU again), not stocked there, or not now. */
  async #unreadable(set: RuledSet, read: Extract<StockRead, { ok: false }>): Promise<ChangeOutcome> {
    if (read.reason === "listing_gone") {
      await this.options.listings.invalidate(set.sku, set.inventoryItemId);
      if (set.fresh) return { kind: "failed", reason: "invalid_inventory_item", error: read.error };
      return { kind: "retry", reason: "listing_stale", error: read.error, waitMs: 0 };
    }
    if (read.reason === "not_stocked_at_location") {
      return { kind: "failed", reason: "item_not_stocked_at_location", error: read.error };
    }
    return { kind: "retry", reason: read.reason, error: read.error, waitMs: read.transient ? 2_000 : 5_000 };
  }
}

function refOf(set: RuledSet): ItemAtLocation {
  return { item: set.inventoryItemId, location: set.locationId };
}

function applied(
  wanted: Extract<Wanted, { target: number }>,
  after: number,
  extra: object = {},
): ChangeOutcome {
  return {
    kind: "applied",
    quantityAfter: after,
    detail: {
      absolute: true,
      rule: wanted.rule,
      pos_quantity: wanted.pos.reduce((a, b) => a + b, 0),
      ...extra,
    },
  };
}

/** One set's write, as a change outcome; undefined: read and compute it again (stale, or refused with a stale one). */
function judged(
  outcome: StockSetOutcome | undefined,
  wanted: Extract<Wanted, { target: number }>,
): ChangeOutcome | undefined {
  if (!outcome) return { kind: "retry", reason: "shopify_write_failed", error: "no outcome for this set" };
  switch (outcome.kind) {
    case "written":
      return applied(wanted, outcome.quantityAfter);
    case "stale":
      return undefined;
    case "not_applied":
      return outcome.reason === "stale_in_batch"
        ? undefined
        : { kind: "retry", reason: outcome.reason, error: outcome.error, waitMs: 2_000 };
    case "error":
      // An absolute value computed from the POS at send time: a retry (which reads again) is always safe.
      if (outcome.uncertain || outcome.reason === "unauthorized") {
        return {
          kind: "retry",
          reason: outcome.reason,
          error: outcome.error,
          waitMs: outcome.reason === "unauthorized" ? 10_000 : 2_000,
        };
      }
      return { kind: "failed", reason: outcome.reason, error: outcome.error };
  }
}
