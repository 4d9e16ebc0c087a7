/**
 * Where the dispatcher sends the sale of a change that failed for good.
 *
 * The dispatcher decides that a change failed for good (the dispatch store gave it
 * up); where its sale goes so an operator sees what to fix and can replay it is
 * not its business. The composition root injects the route: in the service the
 * broker's DLQ (src/broker/dead_letter_route.ts). There is no retry tier here: a
 * change is retried by the dispatch store's backoff before it is given up.
 */
import type { FailedChange } from "../model/batch.ts";

/** The way out for changes that failed for good. */
export interface FailureRoute {
  /**
   * Copies the sale behind `failed` to the dead letters, with why it failed and what
   * to fix. Resolves once the copy is durable; rejects when it could not be made (the
   * change stays failed in the ledger either way).
   */
  deadLetter(failed: FailedChange): Promise<void>;
}
