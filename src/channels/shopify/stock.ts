/**
 * Shopify's side of a resync: read `available` of one SKU at one store's
 * location, and set it with compare-and-set (`inventorySetQuantities` with
 * `changeFromQuantity` = the value just read, under `@idempotent`) — one
 * listing at a time, or up to 250 listings in one call each way.
 */
import { exponential } from "../../resilience/backoff.ts";
import {
  type BatchSetOutcome,
  type ChannelCatalog,
  type ChannelStock,
  type StockRead,
  type StockWrite,
  unresolvedRead,
} from "../../sync/channel.ts";
import { sleep } from "../../sync/cost_bucket.ts";
import type { LocationMap } from "./channel.ts";
import type { CallResult, ShopifyClient } from "./client.ts";
import {
  AVAILABLE_AT_LOCATION,
  availableAtLocations,
  type ItemAtLocation,
  SET_AVAILABLE,
} from "./documents.ts";
import type { ShopifyListings } from "./listings.ts";

export type { ItemAtLocation } from "./documents.ts";

/** An inventory item as the level queries return it (null: Shopify has no such item). */
type AvailableItem = {
  inventoryLevel: { quantities: { name: string; quantity: number }[] } | null;
} | null;

interface AvailableAtLocation {
  inventoryItem: AvailableItem;
}

interface UserError {
  field: string[] | null;
  message: string;
  code: string | null;
}

interface SetAvailable {
  inventorySetQuantities: {
    inventoryAdjustmentGroup:
      | {
        id: string;
        changes: {
          name: string;
          quantityAfterChange: number | null;
          item: { id: string } | null;
          location: { id: string } | null;
        }[];
      }
      | null;
    userErrors: UserError[];
  } | null;
}

/**
 * Listings one batched read or write holds at most: Shopify's limit on an input array
 * (`quantities`), and at 3 points a listing a read of that many stays under the 1,000
 * points one query may cost.
 */
export const MAX_LISTINGS_PER_CALL = 250;

/** What one listing adds to the batched read until Shopify has priced one (see `availableAtLocations`). */
const READ_COST_PER_LISTING = 3;

/** Sends of one batched write that may have reached Shopify (5xx, timeout, lost answer), all under one key. */
const WRITE_SENDS = 3;
/** Answers that say Shopify did not run the write (THROTTLED, 429, key busy) waited out before giving up. */
const WRITE_WAITS = 10;
/** Pause before sending the same write again when Shopify does not say how long. */
const WRITE_BACKOFF = exponential({ baseMs: 500, maxMs: 4_000, firstAttempt: 1, jitter: 0.2 });

/** Codes of a compare-and-set that saw another value (the second is the pre-2026-04 name). */
const STALE_CODES = new Set(["CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"]);

/** One listing to set: `from` is the quantity read (compared by Shopify), `to` the one wanted. */
export interface StockSet {
  ref: ItemAtLocation;
  from: number;
  to: number;
}

/** What one set of a batched write came to (the channel contract's words). */
export type StockSetOutcome = BatchSetOutcome;

/** A batched write: one outcome per set, in the order given, and the idempotency key that carried it. */
export interface StockWriteMany {
  key: string;
  outcomes: StockSetOutcome[];
}

/** How the loop in `writeMany` goes on after one answer. */
type WriteStep =
  /** `answered`: Shopify's own answer for the key (its record), which settles any earlier doubt. */
  | { done: StockSetOutcome[]; answered: boolean }
  | {
    done?: undefined;
    reason: string;
    error: string;
    /** The call may have been applied (it reached Shopify, or the key's first request is still running). */
    uncertain: boolean;
    /** Counts against WRITE_SENDS (else WRITE_WAITS). */
    sent: boolean;
    /** Shopify says the key's earlier request failed: send again under a new one. */
    newKey?: boolean;
    waitMs?: number;
  };

/** Reads and sets Shopify stock for resync. */
export class ShopifyStock implements ChannelStock {
  readonly name = "shopify" as const;
  readonly maxPerCall = MAX_LISTINGS_PER_CALL;
  readonly deltas = true;

  constructor(
    private readonly client: ShopifyClient,
    private readonly listings: ShopifyListings,
    private readonly locations: LocationMap,
    private readonly reason: string,
    /** Every inventory level at the mapped locations, for a resync of `all`. */
    readonly catalog?: ChannelCatalog,
  ) {}

  mappedStores(): string[] {
    return this.locations.stores();
  }

  get showsUnmapped(): boolean {
    return this.locations.hasDefault === true;
  }

  place(tiendaId: string): string | undefined {
    return this.locations.locationFor(tiendaId);
  }

  shows(tiendaId: string): boolean {
    return this.locations.locationFor(tiendaId) !== undefined;
  }

  async read(sku: string, tiendaId: string, signal?: AbortSignal): Promise<StockRead> {
    const locationId = this.locations.locationFor(tiendaId);
    if (!locationId) {
      return { ok: false, reason: "store_unmapped", error: `store ${tiendaId} has no Shopify location` };
    }
    const resolution = await this.listings.resolve(sku, signal);
    if (!resolution.ok) {
      return unresolvedRead(resolution);
    }
    const item = resolution.listing.inventoryItemId;
    const result = await this.client.call<AvailableAtLocation>(
      "AvailableAtLocation",
      AVAILABLE_AT_LOCATION,
      { item, location: locationId },
      signal,
    );
    if (result.kind !== "ok") {
      return {
        ok: false,
        reason: "shopify_read_failed",
        error: result.error,
        transient: result.kind === "retry",
      };
    }
    const level = result.data.inventoryItem?.inventoryLevel;
    if (!level) {
      return {
        ok: false,
        reason: "not_stocked_at_location",
        error: `SKU ${sku} is not stocked at ${locationId}`,
      };
    }
    const quantity = level.quantities.find((q) => q.name === "available")?.quantity ?? 0;
    return { ok: true, quantity, ref: { item, location: locationId } };
  }

  async write(
    read: Extract<StockRead, { ok: true }>,
    to: number,
    reference: string,
    signal?: AbortSignal,
  ): Promise<StockWrite> {
    const { item, location } = read.ref as { item: string; location: string };
    const result = await this.client.call<SetAvailable>("SetAvailable", SET_AVAILABLE, {
      input: {
        name: "available",
        reason: this.reason,
        referenceDocumentUri: reference,
        quantities: [{
          inventoryItemId: item,
          locationId: location,
          quantity: to,
          changeFromQuantity: read.quantity,
        }],
      },
      key: crypto.randomUUID(),
    }, signal);
    if (result.kind !== "ok") return { kind: "error", reason: "shopify_write_failed", error: result.error };
    const payload = result.data.inventorySetQuantities;
    const errors = payload?.userErrors ?? [];
    if (errors.some((e) => e.code === "CHANGE_FROM_QUANTITY_STALE")) return { kind: "stale" };
    if (errors.length > 0) {
      return {
        kind: "error",
        reason: (errors[0].code ?? "user_error").toLowerCase(),
        error: errors.map((e) => `${e.code}: ${e.message}`).join("; "),
      };
    }
    return { kind: "written", quantityAfter: to };
  }

  /**
   * Current `available` of up to {@link MAX_LISTINGS_PER_CALL} listings, each at its own
   * location, in one query; one read per listing, in the order given. A listing whose
   * inventory item is gone reads `listing_gone` (resolve its SKU again); one not stocked at
   * its location reads `not_stocked_at_location`. Should Shopify price the query above what
   * one query may cost, the listings are read in halves.
   */
  async readMany(refs: readonly ItemAtLocation[], signal?: AbortSignal): Promise<StockRead[]> {
    if (refs.length > MAX_LISTINGS_PER_CALL) {
      throw new RangeError(`readMany takes at most ${MAX_LISTINGS_PER_CALL} listings, not ${refs.length}`);
    }
    if (refs.length === 0) return [];
    const { query, variables } = availableAtLocations(refs);
    const result = await this.client.call<Record<string, AvailableItem | undefined>>(
      "AvailableAtLocations",
      query,
      variables,
      signal,
      { cost: { parts: refs.length, perPart: READ_COST_PER_LISTING } },
    );
    if (result.kind === "rejected" && result.reason === "max_cost_exceeded" && refs.length > 1) {
      const half = Math.ceil(refs.length / 2);
      const first = await this.readMany(refs.slice(0, half), signal);
      return [...first, ...await this.readMany(refs.slice(half), signal)];
    }
    if (result.kind !== "ok") {
      return refs.map(() => ({
        ok: false,
        reason: "shopify_read_failed",
        error: result.error,
        transient: result.kind === "retry",
      }));
    }
    return refs.map((ref, i) => levelRead(ref, result.data[`l${i}`]));
  }

  /**
   * Sets up to {@link MAX_LISTINGS_PER_CALL} listings in ONE `inventorySetQuantities` call, each
   * compared with its own `from`, under one idempotency key (`options.key`, else a new one).
   * Shopify applies the call whole or not at all: when one `from` is stale the call is refused,
   * the sets Shopify names are `stale` and the rest `not_applied` (re-read them all, recompute,
   * and send again under a new key). A send that may have reached Shopify unanswered (5xx,
   * timeout) is sent again under the same key, which answers from Shopify's record of the first
   * rather than applying twice.
   *
   * A mutation costs 10 points whatever it holds (the client's first guess for it), so 250
   * listings cost what one does.
   */
  async writeMany(
    sets: readonly StockSet[],
    reference: string,
    signal?: AbortSignal,
    options: { key?: string } = {},
  ): Promise<StockWriteMany> {
    if (sets.length > MAX_LISTINGS_PER_CALL) {
      throw new RangeError(`writeMany takes at most ${MAX_LISTINGS_PER_CALL} listings, not ${sets.length}`);
    }
    let key = options.key ?? crypto.randomUUID();
    if (sets.length === 0) return { key, outcomes: [] };
    const input = {
      name: "available",
      reason: this.reason,
      referenceDocumentUri: reference,
      quantities: sets.map((set) => ({
        inventoryItemId: set.ref.item,
        locationId: set.ref.location,
        quantity: set.to,
        changeFromQuantity: set.from,
      })),
    };
    let sent = 0;
    let waited = 0;
    let uncertain = false;
    for (;;) {
      const result = await this.client.call<SetAvailable>(
        "SetAvailable",
        SET_AVAILABLE,
        { input, key },
        signal,
      );
      const step = judgeWrite(sets, result);
      if (step.done) {
        // A failure that is not Shopify's answer leaves an earlier unanswered send in doubt.
        const doubt = uncertain && !step.answered;
        const outcomes = doubt
          ? step.done.map((o): StockSetOutcome => o.kind === "error" ? { ...o, uncertain: true } : o)
          : step.done;
        return { key, outcomes };
      }
      if (step.sent) sent++;
      else waited++;
      // A key whose earlier request failed applied nothing: what was uncertain is settled.
      uncertain = step.newKey ? false : uncertain || step.uncertain;
      if (sent >= WRITE_SENDS || waited >= WRITE_WAITS || signal?.aborted) {
        const outcome: StockSetOutcome = uncertain
          ? { kind: "error", reason: step.reason, error: step.error, uncertain: true }
          : { kind: "not_applied", reason: step.reason, error: step.error };
        return { key, outcomes: sets.map(() => ({ ...outcome })) };
      }
      if (step.newKey) key = crypto.randomUUID();
      await sleep(step.waitMs ?? WRITE_BACKOFF(Math.max(1, sent)), signal);
    }
  }
}

/** One listing of the batched read's answer (`undefined`: the answer left it out). */
function levelRead(ref: ItemAtLocation, item: AvailableItem | undefined): StockRead {
  if (item === undefined) {
    return {
      ok: false,
      reason: "shopify_read_failed",
      error: `the answer has no entry for inventory item ${ref.item}`,
      transient: true,
    };
  }
  if (item === null) {
    return { ok: false, reason: "listing_gone", error: `Shopify has no inventory item ${ref.item}` };
  }
  if (!item.inventoryLevel) {
    return {
      ok: false,
      reason: "not_stocked_at_location",
      error: `inventory item ${ref.item} is not stocked at ${ref.location}`,
    };
  }
  const quantity = item.inventoryLevel.quantities.find((q) => q.name === "available")?.quantity ?? 0;
  return { ok: true, quantity, ref: { item: ref.item, location: ref.location } };
}

/** The set a user error names (`["input", "quantities", "7", "changeFromQuantity"]` → 7), if any. */
function quantityIndex(field: string[] | null, count: number): number | undefined {
  const at = field?.indexOf("quantities") ?? -1;
  if (at < 0 || field!.length <= at + 1) return undefined;
  const index = Number(field![at + 1]);
  return Number.isInteger(index) && index >= 0 && index < count ? index : undefined;
}

function describe(errors: UserError[]): string {
  return errors.map((e) =>
    `${e.code ?? "USER_ERROR"}${e.field ? ` at ${e.field.join(".")}` : ""}: ${e.message}`
  )
    .join("; ");
}

function codeReason(error: UserError): string {
  return (error.code ?? "user_error").toLowerCase();
}

/** What one answer to the batched write means for each set, or how to go on. */
function judgeWrite(sets: readonly StockSet[], result: CallResult<SetAvailable>): WriteStep {
  const every = (outcome: StockSetOutcome, answered = false) => ({
    done: sets.map(() => ({ ...outcome })),
    answered,
  });
  switch (result.kind) {
    case "retry":
      return {
        reason: result.reason,
        error: result.error,
        // Counted sends reached Shopify or may have; a busy key means its first request is still running.
        uncertain: result.countsAsAttempt || result.reason === "idempotency_concurrent",
        sent: result.countsAsAttempt,
        waitMs: result.waitMs,
      };
    case "new_key":
      return { reason: result.reason, error: result.error, uncertain: false, sent: true, newKey: true };
    case "unauthorized":
      return every({ kind: "error", reason: "unauthorized", error: result.error });
    case "rejected":
      return every({
        kind: "error",
        reason: result.reason,
        error: result.error,
        // Our key carried another request: what became of this one is unknown.
        uncertain: result.reason === "idempotency_key_parameter_mismatch" || undefined,
      });
  }
  const payload = result.data.inventorySetQuantities;
  if (!payload) {
    return every({ kind: "error", reason: "shopify_write_failed", error: "the answer has no payload" });
  }
  // From here on the answer is Shopify's for this key: applied, or refused whole.
  const errors = payload.userErrors;
  if (errors.length === 0) {
    const after = new Map<string, number>();
    for (const c of payload.inventoryAdjustmentGroup?.changes ?? []) {
      if (c.name === "available" && c.item && c.location && c.quantityAfterChange != null) {
        after.set(`${c.item.id}|${c.location.id}`, c.quantityAfterChange);
      }
    }
    // A set already at its target makes no change, so Shopify lists none for it.
    return {
      answered: true,
      done: sets.map((set) => ({
        kind: "written",
        quantityAfter: after.get(`${set.ref.item}|${set.ref.location}`) ?? set.to,
      })),
    };
  }
  const idempotency = errors.find((e) => e.code?.startsWith("IDEMPOTENCY_"));
  if (idempotency?.code === "IDEMPOTENCY_CONCURRENT_REQUEST") {
    return { reason: "idempotency_concurrent", error: describe([idempotency]), uncertain: true, sent: false };
  }
  if (idempotency?.code === "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED") {
    return {
      reason: "idempotency_previous_attempt_failed",
      error: describe([idempotency]),
      uncertain: false,
      sent: true,
      newKey: true,
    };
  }
  if (idempotency) {
    return every({
      kind: "error",
      reason: codeReason(idempotency),
      error: describe([idempotency]),
      uncertain: true,
    }, true);
  }

  // The call was refused whole: nothing applied. Say what Shopify named, set by set.
  const named = new Map<number, UserError[]>();
  const general: UserError[] = [];
  for (const e of errors) {
    const i = quantityIndex(e.field, sets.length);
    if (i === undefined) general.push(e);
    else named.set(i, [...named.get(i) ?? [], e]);
  }
  const generalFault = general.find((e) => !STALE_CODES.has(e.code ?? ""));
  const staleSomewhere = errors.some((e) => STALE_CODES.has(e.code ?? ""));
  return {
    answered: true,
    done: sets.map((_, i): StockSetOutcome => {
      const own = named.get(i);
      if (own) {
        const fault = own.find((e) => !STALE_CODES.has(e.code ?? ""));
        return fault
          ? { kind: "error", reason: codeReason(fault), error: describe(own) }
          : { kind: "stale", error: describe(own) };
      }
      if (generalFault) return { kind: "error", reason: codeReason(generalFault), error: describe(general) };
      return {
        kind: "not_applied",
        reason: staleSomewhere ? "stale_in_batch" : "refused_with_batch",
        error: `refused with the whole call: ${describe(errors)}`,
      };
    }),
  };
}
