/**
 * A shared leaky-bucket rate budget.
 *
 * Shopify's GraphQL cost bucket belongs to the app + store, not to a process,
 * so every replica draws from one bucket kept in Redis and updated atomically
 * by a Lua script. The marketplace's own answer (`throttleStatus`) corrects our
 * estimate after every call, downwards only: it may predate calls another lane
 * or replica has already taken units for, and raising our count to it would give
 * those units away twice (THROTTLED). What a call cost less than it took comes
 * back explicitly. If Redis is unreachable the budget falls back to a local
 * bucket at a fraction of the rate: syncing slows down but never stops.
 *
 * Callers are served first come, first served: a take that finds too few units
 * takes them anyway, driving the count below zero, and waits until the refill
 * has paid them back. A later caller queues behind that debt. (Waiting and
 * asking again let a small call overtake a large one that asked first, and
 * left lanes sharing a budget unevenly.)
 *
 * A steady stream of calls (Shopify's stock writes) may instead leave room for
 * the others (`keep`): it takes only while that much would remain, holding
 * nothing while it waits. A saturating stream then keeps the count at `keep`,
 * and an occasional read whose requested cost is hundreds of points (the
 * orders poll) goes at once instead of stalling the stream behind its debt;
 * what it did not use comes back with its answer.
 */
import { logger } from "../log.ts";

const log = logger("budget");

/** The part of a node-redis client the bucket uses (keeps the type small). */
export interface ScriptRunner {
  readonly isReady: boolean;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

/** Bucket parameters: capacity and refill per second. */
export interface BucketShape {
  max: number;
  restoreRate: number;
}

/** Something that hands out units of a rate budget. */
export interface RateBudget {
  /**
   * Takes `cost` units, waiting for the refill when they are not there yet (after every caller
   * that asked before); resolves to the ms waited. A cost above the bucket's size takes the whole
   * bucket (it could never be served otherwise). An abort ends the wait at once; the units stay
   * taken. With `keep`, the call yields to the others instead: it takes only once `keep` units
   * would remain (at most the bucket's size less the cost), and holds nothing while it waits.
   */
  take(cost: number, signal?: AbortSignal, keep?: number): Promise<number>;
  /**
   * Corrects the bucket with what the marketplace reported after a call: `refund` is what that
   * call took here beyond what it cost there (negative: it cost more), and the count then goes
   * no higher than `available`. A report never raises the count: it may not have seen calls
   * other lanes or replicas have in flight.
   */
  observe(available: number, shape?: BucketShape, refund?: number): Promise<void>;
  /** Last known level (for metrics); 0 while callers wait for units they have taken. */
  readonly level: number;
  readonly shape: BucketShape;
}

// KEYS[1] bucket; ARGV: cost, default max, default rate, keep. Returns {wait_ms, level, taken}.
// Time comes from Redis so replicas with skewed clocks agree.
const TAKE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'level', 'max', 'rate', 'ts')
local max = tonumber(b[2]) or tonumber(ARGV[2])
local rate = tonumber(b[3]) or tonumber(ARGV[3])
local level = tonumber(b[1]) or max
local ts = tonumber(b[4]) or now
-- A cost above the bucket's size could never be served: take the whole bucket instead.
local cost = math.min(tonumber(ARGV[1]), max)
level = math.min(max, level + math.max(0, now - ts) * rate / 1000)
local keep = math.min(tonumber(ARGV[4]) or 0, max - cost)
local wait = 0
local taken = 1
if keep > 0 and level - cost < keep then
  -- Yields to the others: nothing taken; ask again once the refill leaves keep after the cost.
  wait = math.ceil((keep + cost - level) * 1000 / rate)
  taken = 0
else
  -- Below zero: units already promised to earlier callers, paid back by the refill in order.
  level = level - cost
  if level < 0 then wait = math.ceil(-level * 1000 / rate) end
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'max', tostring(max), 'rate', tostring(rate), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 3600000)
return {wait, tostring(level), taken}
`;

// KEYS[1] bucket; ARGV: available, max, rate, refund. Returns the level.
// The count, refilled to now and given the refund, is lowered to the report, never raised to it.
const OBSERVE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'level', 'rate', 'ts')
local max = tonumber(ARGV[2])
local rate = tonumber(b[2]) or tonumber(ARGV[3])
local level = tonumber(b[1]) or max
local ts = tonumber(b[3]) or now
level = level + math.max(0, now - ts) * rate / 1000 + tonumber(ARGV[4])
level = math.min(max, level, tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'level', tostring(level), 'max', ARGV[2], 'rate', ARGV[3], 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 3600000)
return tostring(level)
`;

/**
 * The longest a yielding call sleeps before asking again: the room it waits for usually comes back
 * with a read's answer (what it did not use), long before the refill alone would make it.
 */
const YIELD_RECHECK_MS = 100;

/** Resolves after `ms`, or at once when `signal` aborts (always unhooking its listener). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    // The signal lives as long as the dispatcher: always unhook, or listeners pile up.
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** An in-process bucket: the fallback, and the budget for tests of one replica. */
export class LocalBucket implements RateBudget {
  /** Units left; below zero, units promised to callers still waiting. */
  #count: number;
  #ts = performance.now();
  constructor(public shape: BucketShape) {
    this.#count = shape.max;
  }

  get level(): number {
    this.#refill();
    return Math.max(0, this.#count);
  }

  #refill() {
    const now = performance.now();
    this.#count = Math.min(this.shape.max, this.#count + (now - this.#ts) * this.shape.restoreRate / 1000);
    this.#ts = now;
  }

  async take(cost: number, signal?: AbortSignal, keep = 0): Promise<number> {
    // A cost above the bucket's size could never be served: take the whole bucket instead
    // (the marketplace then answers for the call itself, e.g. MAX_COST_EXCEEDED).
    cost = Math.min(cost, this.shape.max);
    keep = Math.min(keep, this.shape.max - cost);
    let waited = 0;
    for (;;) {
      this.#refill();
      if (keep > 0 && this.#count - cost < keep && !signal?.aborted) {
        // Yields to the others: nothing held while waiting for the room to come back.
        const wait = Math.min(
          YIELD_RECHECK_MS,
          Math.ceil((keep + cost - this.#count) * 1000 / this.shape.restoreRate),
        );
        await sleep(wait, signal);
        waited += wait;
        continue;
      }
      this.#count -= cost;
      if (this.#count >= 0 || signal?.aborted) return waited;
      const wait = Math.ceil(-this.#count * 1000 / this.shape.restoreRate);
      await sleep(wait, signal);
      return waited + wait;
    }
  }

  observe(available: number, shape?: BucketShape, refund = 0): Promise<void> {
    this.#refill();
    if (shape) this.shape = shape;
    this.#count = Math.min(this.shape.max, this.#count + refund, available);
    return Promise.resolve();
  }
}

/**
 * The bucket shared by every replica through Redis.
 * @param key Redis key, e.g. `marketplace-sync:budget:shopify:<shop host>`.
 * @param fallbackFraction rate of the local fallback relative to the shared one.
 */
export class RedisBucket implements RateBudget {
  level: number;
  #fallback: LocalBucket;
  #degraded = false;

  constructor(
    private readonly redis: ScriptRunner,
    private readonly key: string,
    public shape: BucketShape,
    fallbackFraction = 0.5,
  ) {
    this.level = shape.max;
    this.#fallback = new LocalBucket({
      max: shape.max * fallbackFraction,
      restoreRate: shape.restoreRate * fallbackFraction,
    });
  }

  #degrade(error: unknown) {
    if (!this.#degraded) {
      log.warning("shared budget {key} unavailable ({error}); using a local budget at reduced rate", {
        key: this.key,
        error: (error as Error).message,
      });
    }
    this.#degraded = true;
  }

  async take(cost: number, signal?: AbortSignal, keep = 0): Promise<number> {
    let waited = 0;
    for (;;) {
      if (!this.redis.isReady) return waited + await this.#fallback.take(cost, signal, keep * 0.5);
      let reply: [number, string, number];
      try {
        reply = await this.redis.eval(TAKE, {
          keys: [this.key],
          arguments: [String(cost), String(this.shape.max), String(this.shape.restoreRate), String(keep)],
        }) as [number, string, number];
      } catch (error) {
        this.#degrade(error);
        return waited + await this.#fallback.take(cost, signal, keep * 0.5);
      }
      if (this.#degraded) log.info("shared budget {key} reachable again", { key: this.key });
      this.#degraded = false;
      const [wait, level, taken] = reply;
      this.level = Math.max(0, Number(level));
      if (wait <= 0 || signal?.aborted) return waited;
      // Taken: the units are ours, wait for the refill to pay them back and go. Not taken (the
      // call yields to others): wait for the room to come back, or a little, and ask again.
      const pause = taken !== 0 ? wait : Math.min(wait, YIELD_RECHECK_MS);
      await sleep(pause, signal);
      waited += pause;
      if (taken !== 0) return waited;
    }
  }

  async observe(available: number, shape?: BucketShape, refund = 0): Promise<void> {
    if (shape) this.shape = shape;
    await this.#fallback.observe(available * 0.5, undefined, refund * 0.5);
    if (!this.redis.isReady) {
      this.level = this.#fallback.level;
      return;
    }
    try {
      const level = await this.redis.eval(OBSERVE, {
        keys: [this.key],
        arguments: [
          String(available),
          String(this.shape.max),
          String(this.shape.restoreRate),
          String(refund),
        ],
      });
      this.level = Math.max(0, Number(level));
    } catch (error) {
      this.#degrade(error);
    }
  }
}
