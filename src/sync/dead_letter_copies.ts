/**
 * DLQ copies of changes that failed for good, at least once. The dispatcher hands
 * over the changes `record()` just failed (and marked due in the ledger); each copy
 * the failure route confirms is cleared from the ledger's outbox. What a killed
 * process, a refused publish or a lost clear leaves due is published by the sweep,
 * which every dispatch loop runs on start and then every DLQ_COPY_SWEEP, taking only
 * copies due for longer than that, so it does not race the normal path.
 */
import type { DeadLetterOutbox } from "../ledger/dead_letter_outbox.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { FailedChange } from "../model/batch.ts";
import type { FailureRoute } from "./failure_route.ts";

const log = logger("sync");

/** Copies per sweep query; a sweep goes on page by page while the route takes them. */
const SWEEP_PAGE = 100;

/** What the copies need, passed in by the dispatcher. */
export interface DeadLetterCopiesDeps {
  route: FailureRoute;
  outbox: DeadLetterOutbox;
  metrics: ServiceMetrics;
}

/** Publishes DLQ copies and keeps the ledger's outbox in step. */
export class DeadLetterCopies {
  constructor(private readonly deps: DeadLetterCopiesDeps) {}

  /**
   * Copies each change to the DLQ and clears those confirmed. Never throws: a copy
   * that could not be made stays due for the sweep.
   */
  async copy(failed: readonly FailedChange[]): Promise<void> {
    await this.#copyAll(failed, false);
  }

  /**
   * Publishes the copies of `channel` due for longer than `graceMs`: left by a process
   * killed before its copy, refused by the broker, or not cleared. Stops at the first
   * copy it cannot make or clear (the broker or Postgres is down: the next sweep goes
   * on). Returns how many it published. Never throws.
   */
  async sweep(channel: string, graceMs: number): Promise<number> {
    let published = 0;
    try {
      for (;;) {
        const due = await this.deps.outbox.due(channel, graceMs, SWEEP_PAGE);
        if (due.length === 0) break;
        const done = await this.#copyAll(due, true);
        published += done.published;
        if (!done.whole || due.length < SWEEP_PAGE) break;
      }
    } catch (error) {
      log.warning("{channel}: could not read the DLQ copies still due: {error}; the next sweep retries", {
        channel,
        error: (error as Error).message,
      });
    }
    if (published > 0) {
      log.warning("{channel}: published {count} DLQ copies left due by an earlier run or a refused publish", {
        mark: "retry",
        channel,
        count: published,
      });
    }
    return published;
  }

  /** Copies, then clears what was copied; `whole` when every copy was made and cleared. */
  async #copyAll(
    failed: readonly FailedChange[],
    stopAtFirstRefusal: boolean,
  ): Promise<{ published: number; whole: boolean }> {
    const copied: FailedChange[] = [];
    for (const f of failed) {
      if (await this.#copyOne(f)) copied.push(f);
      else if (stopAtFirstRefusal) break;
    }
    if (copied.length === 0) return { published: 0, whole: failed.length === 0 };
    try {
      await this.deps.outbox.copied(copied);
    } catch (error) {
      // The copies are in the DLQ; a later sweep publishes them once more (harmless).
      log.warning("{count} DLQ copies made but still marked due: {error}", {
        count: copied.length,
        error: (error as Error).message,
      });
      return { published: copied.length, whole: false };
    }
    return { published: copied.length, whole: copied.length === failed.length };
  }

  async #copyOne(f: FailedChange): Promise<boolean> {
    try {
      await this.deps.route.deadLetter(f);
      this.deps.metrics.eventsDeadLettered.inc({ reason: f.reason });
      return true;
    } catch (error) {
      // The change is failed in the ledger either way (the audit trail keeps it), and its copy stays due.
      this.deps.metrics.deadLetterCopyFailures.inc({ channel: f.channel });
      log.error("could not copy failed sale {event_id} to the DLQ: {error}; the sweep tries again", {
        mark: "error",
        event_id: f.eventId,
        channel: f.channel,
        sku: f.sku,
        error: (error as Error).message,
      });
      return false;
    }
  }
}
