/**
 * The bench's paired rounds: custody/raw is reported from the round with the median ratio, never from a mix
 * of rounds, with every round's figures beside it.
 */
import assert from "node:assert/strict";
import { type CustodyRound, medianRound } from "../scripts/bench/custody.ts";

function round(raw: number, custody: number): CustodyRound {
  return {
    broker: { msgs_per_s: raw },
    custody: {
      msgs_per_s: custody,
      ratio_to_broker: Number((custody / raw).toFixed(3)),
      ratio_consuming_to_broker: Number((custody / raw + 0.01).toFixed(3)),
    },
  };
}

Deno.test("the median round of three is reported whole, with each round's figures in the order they ran", () => {
  const rounds = [round(20_000, 12_800), round(17_000, 8_500), round(15_000, 9_150)];
  const median = medianRound(rounds);
  // Ratios 0.64, 0.5, 0.61: the median is the third round, its raw and custody rates from that same round.
  assert.equal(median.broker.msgs_per_s, 15_000);
  assert.equal(median.custody.msgs_per_s, 9_150);
  assert.equal(median.custody.ratio_to_broker, 0.61);
  assert.equal(median.custody.median_round, 3);
  assert.equal(median.custody.rounds, 3);
  assert.equal(median.custody.ratio_to_broker_per_round, "0.640 / 0.500 / 0.610");
  assert.equal(median.custody.raw_msgs_per_s_per_round, "20000 / 17000 / 15000");
  assert.equal(median.custody.custody_msgs_per_s_per_round, "12800 / 8500 / 9150");
  assert.equal(median.custody.ratio_consuming_to_broker_per_round, "0.65 / 0.51 / 0.62");
});

Deno.test("an even number of rounds reports the lower of the middle two; one round is itself", () => {
  const four = [round(10_000, 7_000), round(10_000, 5_000), round(10_000, 6_000), round(10_000, 6_500)];
  assert.equal(medianRound(four).custody.ratio_to_broker, 0.6);
  assert.equal(medianRound(four).custody.median_round, 3);
  const one = [round(10_000, 5_900)];
  assert.equal(medianRound(one).custody.ratio_to_broker, 0.59);
  assert.throws(() => medianRound([]), /no rounds/);
});
