/**
 * Work repeated on an interval, one round at a time: the next round is scheduled when the last one
 * has ended (a slow round never overlaps the next, as `setInterval`'s would), and stopping waits for
 * the round in progress. The ledger upkeep and the scheduled reconcile run on it.
 */

/** Rounds under way; `stop()` schedules no more and resolves when the round in progress has ended. */
export interface Rounds {
  stop(): Promise<void>;
}

/**
 * Runs `round` every `intervalMs` (the first one interval from now), each after the last has ended,
 * until stopped. A round that fails is given to `onError`, and the next one is still scheduled.
 */
export function repeatRounds(
  intervalMs: number,
  round: () => Promise<unknown>,
  onError: (error: unknown) => void,
): Rounds {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let current: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      current = round().then(() => {}, onError).finally(schedule);
    }, intervalMs);
  };
  schedule();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      return current;
    },
  };
}
