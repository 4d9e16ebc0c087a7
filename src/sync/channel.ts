/**
 * The contract between the dispatcher and a marketplace channel adapter.
 */
import type { ChannelName } from "../config.ts";
import type { CheckResult } from "../http/app.ts";
import type { BatchOutcome, ClaimedBatch } from "../ledger/dispatch_store.ts";

/** What the dispatcher lends an adapter while it processes one batch. */
export interface BatchContext {
  /**
   * Persists the exact request with the batch before it is sent. Must be
   * awaited before the first byte goes out: it is what makes a re-send after a
   * crash repeat the same request under the same idempotency key.
   */
  persistRequest(request: unknown): Promise<void>;
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
