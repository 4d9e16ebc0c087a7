/** Repeated rounds (src/resilience/rounds.ts): never overlapping, kept going after a failure, stopped cleanly. */
import assert from "node:assert/strict";
import { waitFor } from "./helpers.ts";
import { repeatRounds } from "../src/resilience/rounds.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("a round slower than the interval is never overlapped by the next", async () => {
  let running = 0;
  let most = 0;
  let rounds = 0;
  const r = repeatRounds(5, async () => {
    running++;
    most = Math.max(most, running);
    await sleep(30);
    running--;
    rounds++;
  }, (error) => assert.fail(String(error)));
  await waitFor(() => rounds >= 3, "three rounds");
  await r.stop();
  assert.equal(most, 1);
});

Deno.test("a failed round is reported and the next one still runs", async () => {
  const errors: unknown[] = [];
  let calls = 0;
  const r = repeatRounds(5, () => {
    calls++;
    return calls === 1 ? Promise.reject(new Error("Postgres down")) : Promise.resolve();
  }, (error) => errors.push(error));
  await waitFor(() => calls >= 3, "rounds after the failure");
  await r.stop();
  assert.equal(errors.length, 1);
  assert.equal((errors[0] as Error).message, "Postgres down");
});

Deno.test("stop() waits for the round in progress and schedules no more", async () => {
  let started = 0;
  let ended = 0;
  const r = repeatRounds(5, async () => {
    started++;
    await sleep(50);
    ended++;
  }, (error) => assert.fail(String(error)));
  await waitFor(() => started === 1, "a round under way");
  await r.stop();
  assert.equal(ended, 1, "the round in progress ended before stop() resolved");
  await sleep(40);
  assert.equal(started, 1, "no round after stop()");
});
