/**
 * A per-listing lock in Redis, shared by replicas, so one replica's read of a
 * listing (or of the POS stock) and its write are never interleaved with
 * another's. `SET NX PX` with a random token; released only by its holder.
 *
 * The work under it can outlast the TTL (429 back-off, a token refresh, a slow
 * marketplace), so the holder renews it every third of the TTL while the work
 * runs, and every marketplace write is fenced: right before it is sent,
 * {@link fenceHeldLock} checks (and extends) the lock in one Redis script, and
 * a write whose lock was lost is not sent.
 */
import { AsyncLocalStorage } from "node:async_hooks";

/** The part of a node-redis client the lock uses. */
export interface LockRedis {
  readonly isReady: boolean;
  set(key: string, value: string, options: { NX: true; PX: number }): Promise<string | null>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

const RELEASE =
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
// Extends the lock only while it is still ours: the renewal and the fence in one round trip.
const RENEW =
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;

// Replaces a stale in-doubt mark only if it still names the finished batch that was checked.
const TAKE_OVER =
  `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0`;

/** Thrown when the lock could not be had in time (or Redis is down). */
export class LockUnavailableError extends Error {
  override name = "LockUnavailableError";
}

/** Thrown by a fence when the lock expired or was taken by another holder: the write is not sent. */
export class LockLostError extends LockUnavailableError {
  override name = "LockLostError";
}

/** The lock as its holder sees it while the work runs. */
export interface LockHold {
  /** The listing locked. */
  readonly listing: string;
  /** Whether a renewal or a fence found the lock gone. */
  readonly lost: boolean;
  /**
   * Confirms the lock is still ours and extends it by a full TTL, right before
   * a write. @throws LockLostError when it is not (or Redis cannot tell).
   */
  fence(): Promise<void>;
}

const held = new AsyncLocalStorage<LockHold>();

/**
 * Fences the listing lock the calling code runs under, if any (see
 * {@link LockHold.fence}). Marketplace clients call it before every write, so
 * a writer under {@link ListingLocks.with} is fenced without passing the hold
 * down. @throws LockLostError
 */
export async function fenceHeldLock(): Promise<void> {
  await held.getStore()?.fence();
}

/** Locks named by listing. */
export class ListingLocks {
  constructor(
    private readonly redis: LockRedis,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {}

  /**
   * Runs `work` holding the lock on `listing`, renewed while it runs; waits up
   * to `waitMs` for it. Writes inside `work` are fenced ({@link fenceHeldLock}).
   * @throws LockUnavailableError when it cannot be taken; LockLostError from a fence.
   */
  async with<T>(listing: string, work: (hold: LockHold) => Promise<T>, waitMs = this.ttlMs): Promise<T> {
    if (!this.redis.isReady) throw new LockUnavailableError("Redis is not connected");
    const key = `${this.prefix}${listing}`;
    const token = crypto.randomUUID();
    const deadline = Date.now() + waitMs;
    for (let pause = 10;; pause = Math.min(pause * 2, 200)) {
      let taken: string | null;
      try {
        taken = await this.redis.set(key, token, { NX: true, PX: this.ttlMs });
      } catch (error) {
        throw new LockUnavailableError(`Redis: ${(error as Error).message}`);
      }
      if (taken === "OK") break;
      if (Date.now() >= deadline) {
        throw new LockUnavailableError(`listing ${listing} is locked by another replica`);
      }
      await new Promise((r) => setTimeout(r, pause));
    }
    const hold = new Hold(this.redis, listing, key, token, this.ttlMs);
    try {
      return await held.run(hold, () => work(hold));
    } finally {
      hold.stop();
      await this.redis.eval(RELEASE, { keys: [key], arguments: [token] }).catch(() => {});
    }
  }
}

/** One holding of a lock: renews it every third of the TTL until stopped. */
class Hold implements LockHold {
  #lost = false;
  #timer: ReturnType<typeof setInterval>;

  constructor(
    private readonly redis: LockRedis,
    readonly listing: string,
    private readonly key: string,
    private readonly token: string,
    private readonly ttlMs: number,
  ) {
    this.#timer = setInterval(() => {
      // A failed renewal (Redis away) is not a loss yet: the fence before a write decides.
      this.#renew().catch(() => {});
    }, Math.max(1, Math.floor(ttlMs / 3)));
  }

  get lost(): boolean {
    return this.#lost;
  }

  async fence(): Promise<void> {
    if (this.#lost) throw new LockLostError(`the lock on listing ${this.listing} was lost`);
    let ours: boolean;
    try {
      ours = await this.#renew();
    } catch (error) {
      throw new LockLostError(
        `cannot confirm the lock on listing ${this.listing} (Redis: ${(error as Error).message})`,
      );
    }
    if (!ours) {
      throw new LockLostError(
        `the lock on listing ${this.listing} expired or was taken by another holder; the write was not sent`,
      );
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async #renew(): Promise<boolean> {
    if (this.#lost) return false;
    const renewed = await this.redis.eval(RENEW, {
      keys: [this.key],
      arguments: [this.token, String(this.ttlMs)],
    });
    if (Number(renewed) !== 1) this.#lost = true;
    return !this.#lost;
  }
}

/** The part of a node-redis client {@link InDoubtMarks} uses. */
export interface MarkRedis extends LockRedis {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, options: { NX?: true; PX: number }): Promise<string | null>;
}

/**
 * Listings whose last write may or may not have landed (no answer came), with
 * the batch that must settle them. Until it does, no other batch may read and
 * write the listing: its from → to check would no longer tell what happened.
 */
export class InDoubtMarks {
  constructor(
    private readonly redis: MarkRedis,
    private readonly prefix: string,
    private readonly ttlMs = 24 * 3_600_000,
  ) {}

  /** The batch holding `listing` in doubt, if any. */
  async holder(listing: string): Promise<string | undefined> {
    return (await this.redis.get(`${this.prefix}${listing}`)) ?? undefined;
  }

  /**
   * Claims `listing` for `batchId` before it is read (`SET NX`), so at most one
   * batch reads and writes it until that batch settles, even if the listing
   * lock expired meanwhile. A mark left by a batch that is no longer open is
   * taken over. Returns the open batch holding the listing, or undefined once
   * `batchId` holds it.
   */
  async claim(
    listing: string,
    batchId: string,
    isOpen: (batchId: string) => Promise<boolean>,
  ): Promise<string | undefined> {
    const key = `${this.prefix}${listing}`;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.redis.set(key, batchId, { NX: true, PX: this.ttlMs }) === "OK") return undefined;
      const holder = await this.redis.get(key);
      if (holder === batchId) return undefined;
      if (holder === null) continue;
      if (await isOpen(holder)) return holder;
      const replaced = await this.redis.eval(TAKE_OVER, {
        keys: [key],
        arguments: [holder, batchId, String(this.ttlMs)],
      });
      if (Number(replaced) === 1) return undefined;
    }
    return (await this.redis.get(key)) ?? "another batch";
  }

  /** Marks `listing` in doubt for `batchId` (before a write whose answer may be lost). */
  async mark(listing: string, batchId: string): Promise<void> {
    await this.redis.set(`${this.prefix}${listing}`, batchId, { PX: this.ttlMs });
  }

  /** Clears the mark if `batchId` holds it. */
  async clear(listing: string, batchId: string): Promise<void> {
    await this.redis.eval(RELEASE, { keys: [`${this.prefix}${listing}`], arguments: [batchId] });
  }
}
