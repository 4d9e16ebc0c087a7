/**
 * The contract between the dispatcher and a marketplace channel adapter.
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
