/**
 * The lease keeper (src/sync/lease_keeper.ts) on its own: it renews on its interval, stops at the
 * first renewal that finds the lease gone, after its longest hold, on abort and on stop, and keeps
 * trying through failed renewals.
 */
import assert from "node:assert/strict";
import { waitFor } from "./helpers.ts";
import { keepLease, type LeaseKeeping } from "../src/sync/lease_keeper.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A keeper whose renewals answer from `answers` (true once it runs out), recording what it was told. */
function keeper(options: Partial<LeaseKeeping> & { answers?: (boolean | Error)[] } = {}) {
  const seen = { renewals: 0, errors: 0, lost: [] as string[] };
  const answers = [...(options.answers ?? [])];
  const k = keepLease({
    everyMs: 20,
    maxHoldMs: 10_000,
    renew: () => {
      seen.renewals++;
      const next = answers.shift() ?? true;
      return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
    },
    onError: () => seen.errors++,
    onLost: (why) => seen.lost.push(why),
    ...options,
  });
  return { k, seen };
}

Deno.test("renews on its interval until stopped, then never again", async () => {
  const { k, seen } = keeper();
  await waitFor(() => seen.renewals >= 3, "three renewals");
  await k.stop();
  const renewals = seen.renewals;
  await sleep(60);
  assert.equal(seen.renewals, renewals, "none after stop()");
  assert.deepEqual(seen.lost, []);
});

Deno.test("a renewal that finds the lease taken over says so once and stops renewing", async () => {
  const { k, seen } = keeper({ answers: [true, false] });
  await waitFor(() => seen.lost.length > 0, "the lease lost");
  await sleep(60);
  assert.equal(seen.renewals, 2, "none after the one that found it gone");
  assert.deepEqual(seen.lost, ["taken_over"]);
  await k.stop();
});

Deno.test("a failed renewal is reported and the next one is tried", async () => {
  const { k, seen } = keeper({ answers: [new Error("connection lost"), true] });
  await waitFor(() => seen.renewals >= 3, "renewals after the failure");
  await k.stop();
  assert.equal(seen.errors, 1);
  assert.ok(seen.renewals >= 3, `${seen.renewals} renewals`);
  assert.deepEqual(seen.lost, []);
});

Deno.test("past its longest hold it stops renewing and says the work held the lease too long", async () => {
  const { k, seen } = keeper({ maxHoldMs: 70 });
  await waitFor(() => seen.lost.length > 0, "the hold ended");
  const renewals = seen.renewals;
  assert.ok(renewals <= 3, `${renewals} renewals: at most one per 20 ms within 70 ms`);
  assert.deepEqual(seen.lost, ["held_too_long"]);
  await sleep(50);
  assert.equal(seen.renewals, renewals, "no renewal after the hold ended");
  await k.stop();
});

Deno.test("an abort (shutdown) ends the renewals without calling the lease lost", async () => {
  const abort = new AbortController();
  const { k, seen } = keeper({ signal: abort.signal });
  await waitFor(() => seen.renewals >= 1, "a renewal");
  abort.abort();
  const renewals = seen.renewals;
  await sleep(60);
  assert.equal(seen.renewals, renewals);
  assert.deepEqual(seen.lost, []);
  await k.stop();
});
