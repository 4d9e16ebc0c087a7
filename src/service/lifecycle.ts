/**
 * The service's life: start-up steps retried until they succeed (dependencies may come
 * up after the service) and waits that end early when shutdown begins, so `close()`
 * never hangs on a start-up still in progress.
 */
import { redactUrl } from "../config.ts";
import { logger } from "../log.ts";
import { exponential } from "../resilience/backoff.ts";

const log = logger("main");

/** Rejects with "`what` timed out after `ms` ms" unless `promise` settles first. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Milliseconds before a failed start-up step is tried again. */
const startupRetryDelay = exponential({ baseMs: 500, maxMs: 15_000, firstAttempt: 0 });

/** Start-up that yields to shutdown. */
export class Lifecycle {
  #stopping = false;
  readonly #stopWaiting = new AbortController();

  /** True once shutdown has begun. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Begins shutdown: ends every wait in progress; false if it had begun already. */
  beginStop(): boolean {
    if (this.#stopping) return false;
    this.#stopping = true;
    this.#stopWaiting.abort();
    return true;
  }

  /** Waits `ms`, or less when shutdown begins. */
  pause(ms: number): Promise<void> {
    const signal = this.#stopWaiting.signal;
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Runs `step` until it succeeds or shutdown begins; false if shutdown won. */
  async retrying(what: string, step: () => Promise<void>): Promise<boolean> {
    for (let attempt = 1; !this.#stopping; attempt++) {
      try {
        await step();
        return true;
      } catch (error) {
        const delay = startupRetryDelay(attempt);
        log.error("{what} failed ({error}); retrying in {delay_ms} ms", {
          mark: "error",
          what,
          error: redactUrl((error as Error).message),
          delay_ms: delay,
        });
        await this.pause(delay);
      }
    }
    return false;
  }
}
