/**
 * The batch vocabulary shared by the ledger, the dispatcher and every channel: what a
 * claimed batch holds, what a marketplace call came to, and the rules of the
 * idempotency-key window. Words only: no I/O here.
 */
/** Changes for one listing (store × SKU) inside a batch, coalesced. */
export interface LogicalChange {
  tiendaId: string;
  sku: string;
  productoId: string | null;
  /** Sum of the coalesced changes' deltas (negative for sales). */
  delta: number;
  changeIds: string[];
  /**
   * The sales of the coalesced changes. Written into batches claimed before 2026-12-04; nothing
   * reads it, and a claim no longer reads the event ids back (docs/BENCHMARKS.md, issue #15's peak RSS).
   */
  eventIds?: string[];
  /** Highest attempt count among the coalesced changes (1 on the first send). */
  attempts: number;
  oldestCreatedAt: Date;
}

/** A batch claimed by this replica. */
export interface ClaimedBatch {
  id: string;
  channel: string;
  idempotencyKey: string;
  changes: LogicalChange[];
  /** The exact request persisted before the first send; null until then. */
  request: unknown | null;
  /** Sends of this batch so far under this key (0 before the first). */
  sends: number;
  /** True when this batch was sent before (crash recovery or same-key retry). */
  resend: boolean;
  /** This claim's fencing token; writes by an older claim of the batch are refused. */
  owner: string;
}

/** Another replica took the batch over after our lease expired: drop it, do not write. */
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
}

/** What happened to one logical change. */
export type ChangeOutcome =
  | {
    kind: "applied";
    quantityAfter?: number | null;
    detail?: unknown;
    /**
     * When the marketplace answered that it holds this change (`Date.now()`, the service's clock), where a
     * batch writes its listings one after another: the change's `applied_at` is then that moment, not the
     * end of the whole batch. Without it, `applied_at` is when the outcome is recorded.
     */
    answeredAt?: number;
  }
  | { kind: "failed"; reason: string; error: string }
  | { kind: "retry"; reason: string; error: string; waitMs?: number };

/** What happened to a batch. */
export type BatchOutcome =
  /** The key is used up; every logical change (by index) has its own outcome. */
  | { kind: "done"; results: ChangeOutcome[]; response?: unknown }
  /** Send the same request with the same key again after `waitMs`. */
  | {
    kind: "resend";
    reason: string;
    error: string;
    waitMs: number;
    countsAsAttempt: boolean;
    /** Outcomes the adapter decided without sending (kept if the batch is given up). */
    decided?: Record<number, ChangeOutcome>;
  }
  /** Nothing was sent (e.g. the marketplace refused us while resolving): put the changes back, untouched, for later. */
  | { kind: "release"; reason: string; error: string; waitMs: number };

/** A change that has just failed for good, with its sale, for a DLQ copy. */
export interface FailedChange {
  eventId: string;
  channel: string;
  sku: string;
  tiendaId: string;
  reason: string;
  error: string;
  attempts: number;
  body: unknown;
}

/**
 * Failure reason for a change whose batch was sent but never got a definite
 * answer. Never re-sent under a new key (docs/DESIGN.md §2: never apply twice); a replay
 * within the key window re-opens the batch under its original key.
 */
export const OUTCOME_UNKNOWN = "outcome_unknown";

/** Same-key re-sends stop this long after the first send, inside Shopify's ~24 h key window. */
export const IDEMPOTENCY_SAFE_HOURS = 20;

/**
 * Channels whose marketplace answers a re-sent idempotency key from its record
 * (within {@link IDEMPOTENCY_SAFE_HOURS}): a re-send there can never apply twice,
 * and past the window it could. MercadoLibre has no keys (it reads before writing).
 */
export const SAME_KEY_CHANNELS: readonly string[] = ["shopify"];

/**
 * The batch's first send is older than {@link IDEMPOTENCY_SAFE_HOURS}: the
 * marketplace may have forgotten its key, so the same key would be a fresh
 * request. It must not be sent; it is given up as `outcome_unknown`.
 */
export class KeyWindowPassedError extends Error {
  override name = "KeyWindowPassedError";
}
