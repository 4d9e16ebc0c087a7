/**
 * The per-listing lock against real Redis when the work under it outlasts its
 * TTL: it is renewed while the work runs, and a write whose lock was lost is
 * not sent.
 */
import assert from "node:assert/strict";
import { createClient } from "redis";
import {
  fenceHeldLock,
  ListingLocks,
  LockLostError,
  LockUnavailableError,
} from "../src/sync/listing_lock.ts";
import { integration, REDIS_URL, uniqueName } from "./helpers.ts";

type Redis = ReturnType<typeof createClient>;

async function withRedis(fn: (redis: Redis, prefix: string) => Promise<void>) {
  const redis: Redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const prefix = `${uniqueName("lock")}:`;
  try {
    await fn(redis, prefix);
  } finally {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(keys);
    await redis.quit();
  }
}

integration("work that outlasts MELI_LOCK_TTL keeps the lock: a second holder cannot take it", async () => {
  await withRedis(async (redis, prefix) => {
    const a = new ListingLocks(redis, prefix, 150);
    const b = new ListingLocks(redis, prefix, 150);
    const order: string[] = [];
    await a.with("MLA1", async () => {
      order.push("a:start");
      // Six TTLs of work (a 429 back-off, a refresh…), then the write.
      await new Promise((r) => setTimeout(r, 900));
      await fenceHeldLock();
      order.push("a:write");
    }).then(() => order.push("a:done"));
    assert.deepEqual(order, ["a:start", "a:write", "a:done"]);
    // And while it ran, the other holder was kept out.
    const other = a.with("MLA2", async () => {
      await new Promise((r) => setTimeout(r, 600));
    });
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(() => b.with("MLA2", () => Promise.resolve(), 300), LockUnavailableError);
    await other;
  });
});

integration("a lock taken over by another holder fences the write: it is not sent", async () => {
  await withRedis(async (redis, prefix) => {
    const locks = new ListingLocks(redis, prefix, 10_000);
    let sent = 0;
    const error = await locks.with("MLA3", async (hold) => {
      // The lock expires (a paused process) and another replica takes it.
      await redis.set(`${prefix}MLA3`, "another-holder", { PX: 10_000 });
      try {
        await fenceHeldLock();
        sent++;
      } catch (e) {
        return e;
      }
      assert.fail(`fence passed although ${hold.listing} belongs to another holder`);
    });
    assert.ok(error instanceof LockLostError, String(error));
    assert.equal(sent, 0);
    assert.equal(await redis.get(`${prefix}MLA3`), "another-holder", "the other holder's lock is untouched");
  });
});
