/**
 * One dispatch loop per enabled channel, on every replica: claim (or re-claim)
 * a batch, let the channel adapter send it, record the outcome, and send the
 * sale of every change that failed for good down the injected failure route
 * (the DLQ, in the service). On start and every `deadLetterSweepMs` the loop also
 * publishes the copies a killed process or a refused publish left due.
 */
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { DeadLetterOutbox } from "../ledger/dead_letter_outbox.ts";
import { type DispatchStore } from "../ledger/dispatch_store.ts";
import {
  type BatchOutcome,
  type ClaimedBatch,
  KeyWindowPassedError,
  LeaseLostError,
} from "../model/batch.ts";
import type { ChannelAdapter } from "./channel.ts";
import { DeadLetterCopies } from "./dead_letter_copies.ts";
import type { FailureRoute } from "./failure_route.ts";
import { exponential } from "../resilience/backoff.ts";
import { keepLease } from "./lease_keeper.ts";
import { type Attributes, markError, type Span, withSpan } from "../tracing.ts";

const log = logger("sync");

/**
 * Pause of the loop after a Postgres error, by failures in a row (1 after the first, so the
 * first pause is 500 ms), doubling to 10 s.
 */
const loopBackoff = exponential({ baseMs: 250, maxMs: 10_000, firstAttempt: 0 });

/**
 * Leases an adapter may hold one batch through renewals (5 min at the default 30 s DISPATCH_LEASE): far
 * more than a MeLi batch paced by its rate limit or a Shopify throttle wait needs, and a bound on a call
 * stuck with no timeout, after which the batch is left to its lease as a dead process's is.
 */
export const LEASE_HOLD_LEASES = 10;

/** Test seams around the send; production passes none. */
export interface DispatcherHooks {
  /** Runs after the adapter returned and before the outcome is recorded. */
  afterSend?(batch: ClaimedBatch, outcome: BatchOutcome): Promise<void> | void;
}

/** What a dispatcher needs, passed in by the composition root. */
export interface DispatcherDeps {
  adapter: ChannelAdapter;
  store: DispatchStore;
  /** Where the sale of a change that failed for good goes (the DLQ, in the service). */
  failures: FailureRoute;
  /** The ledger's DLQ copies still due: cleared once copied, swept when left behind. */
  outbox: DeadLetterOutbox;
  /**
   * How often the loop publishes copies still due, and how long a copy must have been due
   * before a sweep takes it (younger ones are the normal path's, on their way).
   */
  deadLetterSweepMs: number;
  metrics: ServiceMetrics;
  /** How often an idle loop looks for work claimed by nobody (other replicas' custody). */
  pollIntervalMs: number;
  /**
   * Batches of this channel in flight at once (DISPATCH_LANES, default 1). Each lane is one
   * claim → send → record loop, exactly as another replica's would be: claims skip each other's
   * rows, and the adapters already lock and throttle per listing across replicas. A second lane
   * claims and records while the first waits on the marketplace, so Postgres and the API overlap
   * (docs/BENCHMARKS.md, issue #15).
   */
  lanes?: number;
  hooks?: DispatcherHooks;
}

/** The dispatch loop of one channel. */
export class Dispatcher {
  #stopping = false;
  #abort = new AbortController();
  /** Wakes each lane that is sleeping. */
  #wakers = new Set<() => void>();
  #loop: Promise<void> | undefined;
  #lastError: string | undefined;
  /** Lanes whose last claim found a batch. */
  #busyLanes = new Set<number>();
  #copies: DeadLetterCopies;
  /** performance.now() of the next sweep of due DLQ copies; 0: on start. */
  #nextSweepAt = 0;

  constructor(private readonly deps: DispatcherDeps) {
    this.#copies = new DeadLetterCopies({ route: deps.failures, outbox: deps.outbox, metrics: deps.metrics });
  }

  get channel(): string {
    return this.deps.adapter.name;
  }

  /** Starts the loop. */
  start(): void {
    const lanes = Math.max(1, this.deps.lanes ?? 1);
    this.#loop ??= Promise.all(Array.from({ length: lanes }, (_, lane) => this.#run(lane))).then(() => {});
  }

  /** Wakes an idle loop now (custody just stored changes). */
  wake(): void {
    this.#wakeAll();
  }

  /** Finishes the batch in flight and stops. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wakeAll();
    await this.#loop;
  }

  /** Aborts waits (throttle sleeps) too: for shutdown deadlines. */
  abort(): void {
    this.#abort.abort();
    this.#stopping = true;
    this.#wakeAll();
  }

  /** True while the loop has live work (a lane's last claim found a batch). */
  get busy(): boolean {
    return this.#busyLanes.size > 0;
  }

  #wakeAll(): void {
    for (const wake of [...this.#wakers]) wake();
  }

  /** Resolves once the loop is idle, or after `maxWaitMs` (resync yields to live sales, but is not starved). */
  async idle(maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + maxWaitMs;
    while (this.busy && Date.now() < deadline && !signal?.aborted) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Sleeps `ms` or until woken; never once stopping (stop() may have come while the loop was awake). */
  #idle(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const wakers = this.#wakers;
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wakers.delete(done);
        resolve();
      }
      wakers.add(done);
    });
  }

  async #run(lane: number): Promise<void> {
    const { store, adapter } = this.deps;
    let failures = 0;
    while (!this.#stopping) {
      // One lane sweeps the DLQ copies left due; the others only dispatch.
      if (lane === 0 && performance.now() >= this.#nextSweepAt) {
        await this.#copies.sweep(adapter.name, this.deps.deadLetterSweepMs);
        this.#nextSweepAt = performance.now() + this.deps.deadLetterSweepMs;
        if (this.#stopping) break;
      }
      try {
        const claimStarted = performance.now();
        const batch = await store.reclaimBatch(adapter.name) ??
          await store.claimBatch(adapter.name, adapter.maxListingsPerBatch, {
            turns: adapter.writesListingsInTurn ?? false,
            look: !this.#busyLanes.has(lane),
          });
        if (batch) this.#phase("claim", claimStarted);
        if (batch) this.#busyLanes.add(lane);
        else this.#busyLanes.delete(lane);
        if (!batch) {
          const untilSweep = lane === 0 ? Math.max(0, this.#nextSweepAt - performance.now()) : Infinity;
          await this.#idle(Math.min(this.deps.pollIntervalMs, untilSweep));
          continue;
        }
        await this.#dispatch(batch);
        failures = 0;
        this.#lastError = undefined;
      } catch (error) {
        if (error instanceof LeaseLostError) {
          // Our lease ran out mid-batch; the new owner sends and records it under the same key.
          log.warning("{channel}: {error}; leaving the batch to its new owner", {
            channel: adapter.name,
            error: error.message,
          });
          continue;
        }
        // Postgres trouble: the batch (if any) keeps its lease and is re-claimed.
        failures++;
        this.#lastError = (error as Error).message;
        const wait = loopBackoff(failures);
        log.error("{channel} dispatch loop error: {error}; retrying in {delay_ms} ms", {
          mark: "error",
          channel: adapter.name,
          error: (error as Error).message,
          delay_ms: wait,
        });
        await this.#idle(wait);
      }
    }
  }

  #phase(phase: string, started: number): void {
    this.deps.metrics.dispatchPhaseSeconds.observe(
      { channel: this.deps.adapter.name, phase },
      (performance.now() - started) / 1000,
    );
  }

  /** One marketplace batch, as a "<channel> batch" span (the adapter's fetch spans nest under it). */
  #dispatch(batch: ClaimedBatch): Promise<void> {
    const channel = this.deps.adapter.name;
    return withSpan(`${channel} batch`, {
      "marketplace_sync.channel": channel,
      "marketplace_sync.batch_id": batch.id,
      "marketplace_sync.listings": batch.changes.length,
      "marketplace_sync.changes": batch.changes.reduce((n, c) => n + c.changeIds.length, 0),
      "marketplace_sync.resend": batch.resend,
    }, (span) => this.#dispatchBatch(batch, span));
  }

  async #dispatchBatch(batch: ClaimedBatch, span: Span): Promise<void> {
    const { store, adapter, metrics } = this.deps;
    const channel = adapter.name;
    if (!batch.resend) metrics.dispatchBatchSize.observe({ channel }, batch.changes.length);
    let outcome: BatchOutcome;
    let sent = true;
    const sendStarted = performance.now();
    // The lease is renewed while the adapter works (its planning and throttle waits can outlast
    // one), and no longer once it has answered: from then on the batch is ours only until the
    // lease runs out, which is what lets another replica take over from a process that dies
    // before recording. The adapter's work stops on shutdown's abort or when the lease ends
    // (taken over, or held too long).
    const work = new AbortController();
    const lease = keepLease({
      renew: () => store.renewLease(batch),
      everyMs: Math.max(1, Math.floor(store.leaseMs / 3)),
      maxHoldMs: LEASE_HOLD_LEASES * store.leaseMs,
      signal: this.#abort.signal,
      onError: (error) =>
        log.warning("{channel}: could not renew the lease of batch {batch_id}: {error}", {
          channel,
          batch_id: batch.id,
          error: (error as Error).message,
        }),
      onLost: (why) => {
        log.warning("{channel}: batch {batch_id} {why}; its work is stopped and left to the lease", {
          mark: "retry",
          channel,
          batch_id: batch.id,
          why: why === "taken_over"
            ? "was taken over by another replica while its adapter worked"
            : `was held for ${LEASE_HOLD_LEASES} leases without an answer from its adapter`,
        });
        work.abort(new Error(`batch ${batch.id} lease ${why}`));
      },
    });
    try {
      outcome = await adapter.process(batch, {
        persistRequest: (request) => store.markSending(batch, request),
        signal: AbortSignal.any([this.#abort.signal, work.signal]),
      });
    } catch (error) {
      if (error instanceof LeaseLostError) throw error; // not the adapter's fault: see #run
      if (error instanceof KeyWindowPassedError) {
        // Not sent: the key may be forgotten. Recorded like an unanswered send, which
        // past the window the store gives up as outcome_unknown (DLQ copies below).
        sent = false;
        outcome = {
          kind: "resend",
          reason: "key_window_passed",
          error: error.message,
          waitMs: 0,
          countsAsAttempt: false,
        };
      } else {
        log.error("{channel} adapter failed on batch {batch_id}: {error}", {
          mark: "error",
          channel,
          batch_id: batch.id,
          error: (error as Error).message,
        });
        markError(span, error);
        if (batch.sends === 0 && !batch.resend) {
          span.setAttributes({
            "marketplace_sync.outcome": "release",
            "marketplace_sync.reason": "adapter_error",
          });
          await store.release(batch);
          return;
        }
        outcome = {
          kind: "resend",
          reason: "adapter_error",
          error: (error as Error).message,
          waitMs: 5_000,
          countsAsAttempt: true,
        };
      }
    } finally {
      await lease.stop();
    }
    span.setAttributes(outcomeAttributes(outcome));
    if (outcome.kind === "release") {
      log.warning("{channel} batch {batch_id} not sent ({reason}: {error}); changes wait {delay_ms} ms", {
        mark: "retry",
        channel,
        batch_id: batch.id,
        reason: outcome.reason,
        error: outcome.error,
        delay_ms: outcome.waitMs,
      });
      await store.release(batch, outcome.waitMs, `${outcome.reason}: ${outcome.error}`);
      // Whatever stopped this batch stops the next one too: give it the same pause.
      span.addEvent("pause", { "marketplace_sync.pause_ms": Math.min(outcome.waitMs, 5_000) });
      await this.#idle(Math.min(outcome.waitMs, 5_000));
      return;
    }
    this.#phase("send", sendStarted);
    if (sent) await this.deps.hooks?.afterSend?.(batch, outcome);
    const recordStarted = performance.now();
    const failed = await store.record(batch, outcome);
    span.setAttribute("marketplace_sync.dead_lettered", failed.length);
    this.#phase("record", recordStarted);
    this.#observe(batch, outcome, failed.length);
    await this.#copies.copy(failed);
  }

  #observe(
    batch: ClaimedBatch,
    outcome: Exclude<BatchOutcome, { kind: "release" }>,
    failedForGood: number,
  ): void {
    const { metrics } = this.deps;
    const channel = this.deps.adapter.name;
    if (outcome.kind === "resend" && failedForGood > 0) {
      // The store gave the re-send up (attempts spent, or past the key window): outcome_unknown.
      metrics.changesProcessed.inc({ channel, outcome: "failed" }, failedForGood);
      log.error("{channel} batch {batch_id} given up, its changes outcome_unknown: {reason}: {error}", {
        mark: "error",
        channel,
        batch_id: batch.id,
        reason: outcome.reason,
        error: outcome.error,
      });
      return;
    }
    if (outcome.kind === "resend") {
      log.warning("{channel} batch {batch_id} will be re-sent with the same key in {delay_ms} ms: {error}", {
        mark: "retry",
        channel,
        batch_id: batch.id,
        reason: outcome.reason,
        error: outcome.error,
        delay_ms: outcome.waitMs,
      });
      return;
    }
    const now = Date.now();
    for (const [index, result] of outcome.results.entries()) {
      const change = batch.changes[index];
      metrics.changesProcessed.inc({ channel, outcome: result.kind }, change.changeIds.length);
      if (result.kind === "applied") {
        metrics.eventAppliedSeconds.observe({ channel }, (now - change.oldestCreatedAt.getTime()) / 1000);
        log.info("{channel} {sku} at {tienda_id}: {delta} applied", {
          mark: "done",
          channel,
          sku: change.sku,
          tienda_id: change.tiendaId,
          delta: change.delta,
          quantity_after: result.quantityAfter,
          changes: change.changeIds.length,
        });
      } else {
        const level = result.kind === "failed" ? "warning" : "info";
        log[level]("{channel} {sku} at {tienda_id}: {reason}: {error}", {
          mark: result.kind === "failed" ? "error" : "retry",
          channel,
          sku: change.sku,
          tienda_id: change.tiendaId,
          reason: result.reason,
          error: result.error,
          attempt: change.attempts,
        });
      }
    }
  }
}

/** Span attributes for a batch outcome: its kind, and per-listing counts or the reason. */
function outcomeAttributes(outcome: BatchOutcome): Attributes {
  if (outcome.kind !== "done") {
    return { "marketplace_sync.outcome": outcome.kind, "marketplace_sync.reason": outcome.reason };
  }
  const count = (kind: string) => outcome.results.filter((r) => r.kind === kind).length;
  return {
    "marketplace_sync.outcome": "done",
    "marketplace_sync.applied": count("applied"),
    "marketplace_sync.failed": count("failed"),
    "marketplace_sync.retry": count("retry"),
  };
}
