/**
 * A per-listing lock in Redis, shared by replicas, so one replica's read of a
 * listing (or of the POS stock) and its write are never interleaved with
 * another's. `SET NX PX` with a random token; released only by its holder.
 */

/** The part of a node-redis client the lock uses. */
export interface LockRedis {
  readonly isReady: boolean;
  set(key: string, value: string, options: { NX: true; PX: number }): Promise<string | null>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

const RELEASE =
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/** Thrown when the lock could not be had in time (or Redis is down). */
export class LockUnavailableError extends Error {
  override name = "LockUnavailableError";
}

/** Locks named by listing. */
export class ListingLocks {
  constructor(
    private readonly redis: LockRedis,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {}

  /**
   * Runs `work` holding the lock on `listing`; waits up to `waitMs` for it.
   * @throws LockUnavailableError when it cannot be taken.
   */
  async with<T>(listing: string, work: () => Promise<T>, waitMs = this.ttlMs): Promise<T> {
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
    try {
      return await work();
    } finally {
      await this.redis.eval(RELEASE, { keys: [key], arguments: [token] }).catch(() => {});
    }
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

  /** Marks `listing` in doubt for `batchId` (before a write whose answer may be lost). */
  async mark(listing: string, batchId: string): Promise<void> {
    await this.redis.set(`${this.prefix}${listing}`, batchId, { PX: this.ttlMs });
  }

  /** Clears the mark if `batchId` holds it. */
  async clear(listing: string, batchId: string): Promise<void> {
    await this.redis.eval(RELEASE, { keys: [`${this.prefix}${listing}`], arguments: [batchId] });
  }
}
