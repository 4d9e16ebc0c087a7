/**
 * The contract between the service and a marketplace channel, in one place: the
 * {@link ChannelPlug} a channel's folder builds (src/channels/<name>/plug.ts), the
 * {@link ChannelAdapter} the dispatcher drives, the {@link ChannelStock} resync
 * reads and writes, and the {@link ChannelProbe} status and metrics ask.
 */
import type { ChannelName } from "../model/channel_name.ts";
import type { CheckResult } from "../model/health.ts";
import type { BatchOutcome, ClaimedBatch } from "../model/batch.ts";

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

// ---- Status and metrics ----

/** What a channel contributes to the status besides the ledger's numbers. */
export interface ChannelProbe {
  health(): CheckResult;
  /** Current budget level and capacity. */
  budget?(): { level: number; max: number };
  tokenExpiresAt?(): Date | undefined;
}
