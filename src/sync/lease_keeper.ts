/**
 * Keeps a claimed batch's lease alive while its adapter works on it.
 *
 * A lease says "this batch is being sent; take it over only if I die". An adapter's work can
 * outlast it without anything being wrong: a MercadoLibre batch paced at 5 requests/s, a cold
 * account read, a Shopify throttle wait. Without renewals another lane or replica takes such a
 * batch over while its owner still sends it, the owner loses it at its next write, and the two
 * can hand it back and forth for as long as the work stays longer than the lease (the chaos
 * suite's `resync_under_load` did, with two lanes: docs/DECISIONS.md, "Dispatch lanes").
 *
 * A process that dies stops renewing, so its batch is still taken over one lease after the
 * last renewal; the store's owner check fences a renewal that comes after a takeover.
 */

/** A running renewal; `stop()` ends it (idempotent) and waits for a renewal in flight. */
export interface LeaseKeeper {
  stop(): Promise<void>;
}

/** How a keeper renews, and what it is told. */
export interface LeaseKeeping {
  /** Pushes the lease one lease ahead; false when it is not ours any more. */
  renew(): Promise<boolean>;
  /** Time between renewals (a third of the lease leaves two chances before it runs out). */
  everyMs: number;
  /**
   * Longest the work may hold the lease through renewals. A process alive but stuck inside the work
   * (a call with no timeout) would otherwise hold the batch, and its listings, for ever; past this the
   * keeper stops renewing and says so, and the lease runs out as a dead process's would.
   */
  maxHoldMs: number;
  /** A renewal failed (Postgres trouble): the keeper tries again at the next one. */
  onError(error: unknown): void;
  /** The lease is not ours any more (taken over), or was held for `maxHoldMs`: the work should stop. */
  onLost(why: "taken_over" | "held_too_long"): void;
  /** Ends the renewals at once (shutdown's abort: nothing is renewed on the way out). */
  signal?: AbortSignal;
}

/**
 * Calls `renew` every `everyMs` until stopped, until a renewal answers false (the lease belongs to
 * someone else now: renewing again cannot win it back), until `maxHoldMs` have passed, or until the
 * signal aborts. Renewals never overlap.
 */
export function keepLease(keeping: LeaseKeeping): LeaseKeeper {
  const { renew, everyMs, maxHoldMs, onError, onLost, signal } = keeping;
  const deadline = performance.now() + maxHoldMs;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let inFlight: Promise<void> = Promise.resolve();
  const end = () => {
    stopped = true;
    clearTimeout(timer);
  };
  signal?.addEventListener("abort", end, { once: true });
  const schedule = () => {
    if (stopped || signal?.aborted) return;
    if (performance.now() + everyMs > deadline) {
      onLost("held_too_long");
      return;
    }
    timer = setTimeout(() => {
      inFlight = renew().then(
        (held) => {
          if (held) schedule();
          else if (!stopped) onLost("taken_over");
        },
        (error) => {
          if (!stopped) onError(error);
          schedule();
        },
      );
    }, everyMs);
  };
  schedule();
  return {
    async stop() {
      end();
      signal?.removeEventListener("abort", end);
      await inFlight;
    },
  };
}
