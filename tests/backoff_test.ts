/** Retry delay policies: growth, cap, attempt numbering and jitter bounds, with the random draw pinned. */
import assert from "node:assert/strict";
import { exponential, inSeconds, jittered } from "../src/resilience/backoff.ts";

/** Draws at the low end, the middle and just under the top of [0, 1). */
const LOW = () => 0;
const MID = () => 0.5;
const HIGH = () => 1 - Number.EPSILON;

Deno.test("doubles from the base at the first attempt up to the cap", () => {
  const wait = exponential({ baseMs: 250, maxMs: 10_000, firstAttempt: 0 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(wait), [
    250,
    500,
    1_000,
    2_000,
    4_000,
    8_000,
    10_000,
    10_000,
  ]);
});

Deno.test("attempt numbering is the caller's: attempts at or below the first wait the base", () => {
  const fromOne = exponential({ baseMs: 1_000, maxMs: 60_000, firstAttempt: 1 });
  assert.deepEqual([0, 1, 2, 3, 7, 8].map(fromOne), [1_000, 1_000, 2_000, 4_000, 60_000, 60_000]);
  const fromZero = exponential({ baseMs: 1_000, maxMs: 60_000, firstAttempt: 0 });
  assert.equal(fromZero(1), 2_000, "the same attempt number waits twice as long when counting from 0");
});

Deno.test("without a cap the delay keeps doubling", () => {
  const wait = exponential({ baseMs: 1_000, firstAttempt: 0 });
  assert.deepEqual([0, 1, 2, 3, 4].map(wait), [1_000, 2_000, 4_000, 8_000, 16_000]);
});

Deno.test("a huge attempt number stays at the cap (no overflow to Infinity or NaN)", () => {
  const wait = exponential({ baseMs: 250, maxMs: 10_000, firstAttempt: 0 });
  assert.equal(wait(5_000), 10_000);
  assert.equal(exponential({ baseMs: 0, maxMs: 10, firstAttempt: 0 })(5_000), 0);
});

Deno.test("symmetric jitter spreads the capped delay over [1 − j, 1 + j), in whole ms", () => {
  const at = (random: () => number) =>
    exponential({ baseMs: 1_000, maxMs: 60_000, firstAttempt: 1, jitter: 0.2, random });
  assert.equal(at(LOW)(1), 800);
  assert.equal(at(MID)(1), 1_000);
  assert.equal(at(HIGH)(1), 1_200);
  // Jitter applies after the cap: at the cap a retry can wait up to 20 % more.
  assert.equal(at(HIGH)(10), 72_000);
  assert.equal(at(LOW)(10), 48_000);
  assert.ok(Number.isInteger(at(() => 0.123456)(3)));
});

Deno.test("down-only jitter only ever shortens: [1 − d, 1)", () => {
  const at = (random: () => number) =>
    exponential({ baseMs: 250, maxMs: 10_000, firstAttempt: 0, jitter: { down: 0.5 }, random });
  assert.equal(at(LOW)(2), 500);
  assert.equal(at(MID)(2), 750);
  assert.equal(at(HIGH)(2), 1_000);
  assert.equal(at(HIGH)(20), 10_000, "never above the cap");
});

Deno.test("every draw stays within bounds", () => {
  for (let i = 0; i < 1_000; i++) {
    const r = i / 1_000;
    const random = () => r;
    for (let attempt = 0; attempt < 12; attempt++) {
      const nominal = Math.min(30_000, 1_000 * 2 ** Math.max(0, attempt - 1));
      const sym = exponential({ baseMs: 1_000, maxMs: 30_000, firstAttempt: 1, jitter: 0.25, random })(
        attempt,
      );
      assert.ok(sym >= nominal * 0.75 && sym <= nominal * 1.25, `${sym} for ${nominal}`);
      const down = exponential({
        baseMs: 1_000,
        maxMs: 30_000,
        firstAttempt: 1,
        jitter: { down: 0.25 },
        random,
      })(
        attempt,
      );
      assert.ok(down >= nominal * 0.75 && down <= nominal, `${down} for ${nominal}`);
    }
  }
});

Deno.test("jittered: a fixed delay with the same spread", () => {
  assert.equal(jittered(2_000, 0.25, LOW), 1_500);
  assert.equal(jittered(2_000, 0.25, HIGH), 2_500);
  assert.equal(jittered(2_000, { down: 0.5 }, LOW), 1_000);
});

Deno.test("inSeconds: the same policy for callbacks that count seconds (postgres.js)", () => {
  const wait = inSeconds(
    exponential({ baseMs: 100, maxMs: 2_000, firstAttempt: 0, jitter: { down: 0.25 }, random: HIGH }),
  );
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(wait), [0.1, 0.2, 0.4, 0.8, 1.6, 2, 2]);
  const low = inSeconds(
    exponential({ baseMs: 100, maxMs: 2_000, firstAttempt: 0, jitter: { down: 0.25 }, random: LOW }),
  );
  assert.equal(low(5), 1.5);
});

Deno.test("nonsense options are refused when the policy is made, not at the first retry", () => {
  assert.throws(() => exponential({ baseMs: -1, firstAttempt: 0 }), RangeError);
  assert.throws(() => exponential({ baseMs: 1, firstAttempt: 0, jitter: 1.5 }), RangeError);
  assert.throws(() => exponential({ baseMs: 1, firstAttempt: 0, jitter: { down: -0.1 } }), RangeError);
  assert.throws(() => jittered(1, Number.NaN), RangeError);
});
