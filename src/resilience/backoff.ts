/**
 * Retry delays as named policies: `(attempt) => ms`.
 *
 * Every wait before trying again (a marketplace send, a lost connection, a
 * failed re-subscribe, the dispatch loop after a Postgres error) doubles per
 * attempt up to a cap and is spread by jitter, so replicas that failed together
 * do not all come back in the same millisecond. Each caller states its own
 * numbers and how it counts attempts; this module only does the arithmetic.
 *
 * The policies are plain functions, so they plug straight into callbacks that
 * want one: postgres.js `backoff` (seconds, see {@link inSeconds}), node-redis
 * `reconnectStrategy`, or a timer of our own.
 */

/** The wait, in whole milliseconds, before trying again after attempt number `attempt`. */
export type Backoff = (attempt: number) => number;

/**
 * How a delay is spread around its nominal value:
 * - a number `j`: symmetric, the delay times a uniform draw from [1 − j, 1 + j);
 * - `{ down: d }`: only ever shorter, the delay times a uniform draw from [1 − d, 1).
 */
export type Jitter = number | { down: number };

/** An exponential policy: `baseMs` at `firstAttempt`, doubling per attempt after it. */
export interface ExponentialOptions {
  /** The nominal delay at `firstAttempt` (and at any attempt number below it). */
  baseMs: number;
  /** The cap on the nominal delay; jitter applies after it, so a symmetric jitter can exceed it. */
  maxMs?: number;
  /**
   * The attempt number that waits `baseMs`: callers count differently (a send count that
   * is 1 after the first send, a failure counter that starts at 0), and say which here.
   */
  firstAttempt: number;
  /** Spread of each delay; none when absent. */
  jitter?: Jitter;
  /** Uniform draw in [0, 1); `Math.random` unless a test pins it. */
  random?: () => number;
}

/**
 * `min(maxMs, baseMs × 2^(attempt − firstAttempt))`, jittered, in whole milliseconds.
 *
 * @example The dispatch store's retry of a change: 1 s, 2 s, 4 s … up to 60 s, ±20 %.
 * ```ts
 * const wait = exponential({ baseMs: 1_000, maxMs: 60_000, firstAttempt: 1, jitter: 0.2 });
 * wait(1); // ≈ 1000 (800 … 1200)
 * ```
 */
export function exponential(options: ExponentialOptions): Backoff {
  const { baseMs, maxMs = Infinity, firstAttempt, jitter, random = Math.random } = options;
  if (!(baseMs >= 0) || !(maxMs >= 0)) throw new RangeError("backoff: baseMs and maxMs must be ≥ 0");
  checkJitter(jitter);
  return (attempt) => {
    // An exponent past ~1000 overflows to Infinity; the cap still holds (min), and 0 × Infinity is avoided.
    const nominal = baseMs === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - firstAttempt));
    return spread(nominal, jitter, random);
  };
}

/**
 * A fixed delay with jitter, in whole milliseconds: for waits that do not grow
 * (e.g. MercadoLibre's "listing locked, come back in ~2 s").
 */
export function jittered(ms: number, jitter: Jitter, random: () => number = Math.random): number {
  checkJitter(jitter);
  return spread(ms, jitter, random);
}

/**
 * The same policy in seconds (millisecond precision), for callbacks that count
 * in seconds: postgres.js's `backoff` option.
 */
export function inSeconds(backoff: Backoff): Backoff {
  return (attempt) => backoff(attempt) / 1000;
}

function spread(ms: number, jitter: Jitter | undefined, random: () => number): number {
  if (jitter === undefined) return Math.round(ms);
  if (typeof jitter === "number") return Math.round(ms * (1 - jitter + random() * 2 * jitter));
  return Math.round(ms * (1 - jitter.down + random() * jitter.down));
}

function checkJitter(jitter: Jitter | undefined): void {
  const ratio = typeof jitter === "number" ? jitter : jitter?.down ?? 0;
  if (!(ratio >= 0 && ratio <= 1)) throw new RangeError(`backoff: jitter must be within 0 … 1, got ${ratio}`);
}
