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

/** What the keeper is told of a renewal that failed (Postgres trouble): it tries again next time. */
export type RenewalError = (error: unknown) => void;

/**
 * Calls `renew` every `everyMs` until stopped or until a renewal answers false (the lease
 * belongs to someone else now: renewing again cannot win it back). Renewals never overlap.
 */
export function keepLease(
  renew: () => Promise<boolean>,
  everyMs: number,
  onError: RenewalError,
): LeaseKeeper {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let inFlight: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      inFlight = renew().then(
        (held) => {
          if (held) schedule();
        },
        (error) => {
          onError(error);
          schedule();
        },
      );
    }, everyMs);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await inFlight;
    },
  };
}
