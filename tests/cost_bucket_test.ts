/**
 * The rate budget on its own (src/sync/cost_bucket.ts): the local bucket's
 * refill and correction, the shared bucket's fallback to a local one at a
 * reduced rate while Redis is away, and both buckets' answer to a report that
 * has not seen every call in flight (against real Redis for the shared one).
 * The shared bucket across service instances is covered in shopify_sync_test.ts.
 */
import assert from "node:assert/strict";
import { createClient } from "@redis/client";
import {
  type BucketShape,
  LocalBucket,
  type RateBudget,
  RedisBucket,
  type ScriptRunner,
  sleep,
} from "../src/sync/cost_bucket.ts";
import { REDIS_URL } from "./helpers.ts";

/** A Redis stand-in that answers the bucket's scripts from a list, recording each call. */
function scriptedRedis(replies: (unknown | Error)[], ready = true): ScriptRunner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    get isReady() {
      return ready;
    },
    eval(_script, { arguments: args }) {
      calls.push(args);
      const reply = replies.shift();
      return reply instanceof Error ? Promise.reject(reply) : Promise.resolve(reply);
    },
  };
}

/** Two buckets on one fresh key of the real Redis, as two replicas share a budget. */
async function twoReplicas(
  shape: BucketShape,
  run: (a: RedisBucket, b: RedisBucket, shape: BucketShape) => Promise<void>,
): Promise<void> {
  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const key = `marketplace-sync:test:budget:${crypto.randomUUID()}`;
  try {
    await run(new RedisBucket(redis, key, shape), new RedisBucket(redis, key, shape), shape);
  } finally {
    await redis.del(key);
    await redis.quit();
  }
}

Deno.test("a full local bucket serves at once; a short one waits for the refill", async () => {
  // 100 units/s: a busy machine's few milliseconds between the two takes cannot refill what the second needs.
  const bucket = new LocalBucket({ max: 10, restoreRate: 100 });
  assert.equal(await bucket.take(10), 0);
  // Empty now: 5 units at 100/s is at most 50 ms away (less if the clock moved on).
  const waited = await bucket.take(5);
  assert.ok(waited > 0 && waited <= 50, `waited ${waited} ms`);
});

Deno.test("a cost above the bucket's size takes the whole bucket instead of waiting forever", async () => {
  const bucket = new LocalBucket({ max: 10, restoreRate: 100 });
  assert.equal(await bucket.take(25), 0);
  assert.ok(bucket.level < 1, `level ${bucket.level}`);
  // Empty again: the next oversized take waits for a full bucket (10 units at 100/s), not for 25.
  const waited = await bucket.take(25);
  assert.ok(waited > 0 && waited <= 100, `waited ${waited} ms`);
});

Deno.test("the marketplace's report lowers the local bucket, never above our own count or its size", async () => {
  const bucket = new LocalBucket({ max: 100, restoreRate: 10 });
  await bucket.observe(40);
  assert.ok(bucket.level >= 40 && bucket.level < 41);
  // A report above our count may predate calls we still have in flight: it does not raise it.
  await bucket.observe(500);
  assert.ok(bucket.level >= 40 && bucket.level < 41, `level ${bucket.level}`);
  // What a call cost less than we took comes back (and more than we took is taken).
  await bucket.observe(500, undefined, 30);
  assert.ok(bucket.level >= 70 && bucket.level < 71, `level ${bucket.level}`);
  await bucket.observe(500, undefined, 500);
  assert.equal(bucket.level, 100);
  await bucket.observe(500, { max: 1000, restoreRate: 50 }, 0);
  assert.ok(bucket.level >= 100 && bucket.level < 101, `level ${bucket.level}`);
  assert.deepEqual(bucket.shape, { max: 1000, restoreRate: 50 });
});

/**
 * Two callers share a budget of 100 restoring 50/s: A takes 60 and B the other 40, and the marketplace
 * answers A before it has seen B's call (40 left, by its count). A third call of 40 must wait for the
 * refill: had the report replaced the shared count, it would go at once and meet THROTTLED when it
 * arrived after B's.
 */
async function reportBeforeAnotherCall(a: RateBudget, b: RateBudget, shape: BucketShape) {
  assert.equal(await a.take(60), 0);
  assert.equal(await b.take(40), 0);
  await a.observe(40, shape, 0);
  const waited = await b.take(40);
  assert.ok(waited >= 500, `the third call waited ${waited} ms; 40 units at 50/s are ~800 ms away`);
}

Deno.test("a report that has not seen another lane's call does not give its units back (one process)", async () => {
  const shape = { max: 100, restoreRate: 50 };
  const bucket = new LocalBucket(shape);
  await reportBeforeAnotherCall(bucket, bucket, shape);
});

Deno.test("a report that has not seen another replica's call does not give its units back (Redis)", async () => {
  await twoReplicas({ max: 100, restoreRate: 50 }, (a, b, shape) => reportBeforeAnotherCall(a, b, shape));
});

/**
 * On an empty budget restoring 10 units/s, A asks for 5 units and B, just after, for 1. A was first
 * and is served first, ~500 ms on, and B ~100 ms after it. A budget that lets each waiter retry after
 * its own wait serves B first (it needs less), and small calls can keep a large one waiting for ever.
 */
async function firstComeFirstServed(a: RateBudget, b: RateBudget) {
  const order: string[] = [];
  const started = performance.now();
  const first = a.take(5).then(() => order.push(`A at ${Math.round(performance.now() - started)} ms`));
  await sleep(20);
  const second = b.take(1).then(() => order.push(`B at ${Math.round(performance.now() - started)} ms`));
  await Promise.all([first, second]);
  assert.deepEqual(order.map((o) => o[0]), ["A", "B"], order.join(", "));
}

Deno.test("callers waiting for the local budget are served in the order they asked", async () => {
  const bucket = new LocalBucket({ max: 10, restoreRate: 10 });
  await bucket.take(10);
  await firstComeFirstServed(bucket, bucket);
});

Deno.test("replicas waiting for the shared budget are served in the order they asked (Redis)", async () => {
  await twoReplicas({ max: 10, restoreRate: 10 }, async (a, b) => {
    await a.take(10);
    await firstComeFirstServed(a, b);
  });
});

/**
 * A stream of writes that leaves 50 of 100 units (restoring 50/s) for the others has taken 25 twice
 * and waits to take 25 more; a read of 50 then goes at once, and the write after it. Taking its
 * units while it waited, the write would have made the read wait for them (~500 ms): the stall
 * Shopify's stock writes met behind every orders poll.
 */
async function streamLeavesRoom(writes: RateBudget, read: RateBudget) {
  assert.equal(await writes.take(25, undefined, 50), 0);
  assert.equal(await writes.take(25, undefined, 50), 0);
  const third = writes.take(25, undefined, 50);
  await sleep(10);
  const readWaited = await read.take(50);
  assert.ok(readWaited < 100, `the read waited ${readWaited} ms behind the stream`);
  assert.ok(await third > 0, "the stream's write waited for its room to come back");
}

/**
 * With 100 units restoring 10/s, a stream keeping 50 has taken 25 and a read 50: the stream's next write
 * yields (it needs 75). The read's answer gives its 50 back; the write goes then, not 5 s later when
 * the refill alone would have made the room.
 */
async function streamSeesRefund(writes: RateBudget, read: RateBudget) {
  assert.equal(await writes.take(25, undefined, 50), 0);
  assert.equal(await read.take(50), 0);
  const started = performance.now();
  const next = writes.take(25, undefined, 50);
  await sleep(50);
  await read.observe(100, undefined, 50);
  await next;
  const waited = performance.now() - started;
  assert.ok(waited < 1000, `the write waited ${Math.round(waited)} ms; the room came back after 50 ms`);
}

Deno.test("a stream's write goes as soon as a read gives back what it did not use (one process)", async () => {
  const bucket = new LocalBucket({ max: 100, restoreRate: 10 });
  await streamSeesRefund(bucket, bucket);
});

Deno.test("a stream's write goes as soon as a read gives back what it did not use (Redis)", async () => {
  await twoReplicas({ max: 100, restoreRate: 10 }, streamSeesRefund);
});

Deno.test("a stream that keeps room for others lets a read go at once (one process)", async () => {
  const bucket = new LocalBucket({ max: 100, restoreRate: 50 });
  await streamLeavesRoom(bucket, bucket);
});

Deno.test("a stream that keeps room for others lets a read go at once (Redis)", async () => {
  await twoReplicas({ max: 100, restoreRate: 50 }, streamLeavesRoom);
});

Deno.test("an aborted take returns at once, even from an empty bucket", async () => {
  const bucket = new LocalBucket({ max: 10, restoreRate: 1 });
  await bucket.take(10);
  const stop = new AbortController();
  stop.abort();
  assert.equal(await bucket.take(10, stop.signal), 0);
});

Deno.test("sleep ends early on abort and clears its timer", async () => {
  const stop = new AbortController();
  await sleep(1, stop.signal);
  const started = performance.now();
  const long = sleep(60_000, stop.signal);
  stop.abort();
  await long;
  // Deno's sanitizer fails this test if the 60 s timer were still pending.
  assert.ok(performance.now() - started < 1000);
});

Deno.test("the shared bucket takes at once and waits as long as Redis says", async () => {
  const redis = scriptedRedis([[30, "-1.5", 1], [0, "12.5", 1]]);
  const bucket = new RedisBucket(redis, "budget:test", { max: 100, restoreRate: 50 });
  // The units are taken with the first call: the wait pays them back, nothing is asked again.
  assert.equal(await bucket.take(20), 30);
  assert.equal(bucket.level, 0);
  assert.equal(await bucket.take(20), 0);
  assert.equal(bucket.level, 12.5);
  assert.deepEqual(redis.calls, [["20", "100", "50", "0"], ["20", "100", "50", "0"]]);
});

Deno.test("Redis not ready: the shared bucket draws from a local one at half the size and rate", async () => {
  const redis = scriptedRedis([], false);
  const bucket = new RedisBucket(redis, "budget:test", { max: 100, restoreRate: 1000 });
  // The fallback holds 50: the first take is free, the next one waits for its refill.
  assert.equal(await bucket.take(50), 0);
  assert.ok(await bucket.take(10) > 0);
  assert.equal(redis.calls.length, 0);
  // A report still corrects the fallback (at half) without touching Redis.
  const slow = new RedisBucket(redis, "budget:test", { max: 100, restoreRate: 100 });
  await slow.observe(20);
  assert.ok(slow.level >= 10 && slow.level < 11, `level ${slow.level}`);
  assert.equal(await slow.take(10), 0);
  assert.ok(await slow.take(10) > 0, "the report left 10 units, at half the rate");
  assert.equal(redis.calls.length, 0);
});

Deno.test("a failing Redis call falls back to the local bucket; the next take uses Redis again", async () => {
  const redis = scriptedRedis([new Error("connection reset"), [0, "7"]]);
  const bucket = new RedisBucket(redis, "budget:test", { max: 100, restoreRate: 1000 });
  assert.equal(await bucket.take(10), 0);
  assert.equal(redis.calls.length, 1);
  assert.equal(await bucket.take(10), 0);
  assert.equal(redis.calls.length, 2);
  assert.equal(bucket.level, 7);
});
