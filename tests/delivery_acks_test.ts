/**
 * Batched acks: one frame settles a run of deliveries, never one that is still
 * being handled, requeues keep their own frame, and a slow delivery does not
 * hold the prefetch window shut. The broker side is in custody_test.ts.
 */
import assert from "node:assert/strict";
import { type AckSink, DeliveryAcks } from "../src/broker/delivery_acks.ts";

type Frame = string;

function recordingSink(): AckSink & { frames: Frame[]; active: boolean } {
  const frames: Frame[] = [];
  return {
    frames,
    active: true,
    basicAck({ deliveryTag, multiple }) {
      frames.push(`ack ${deliveryTag}${multiple ? " multiple" : ""}`);
    },
    basicNack({ deliveryTag, requeue }) {
      frames.push(`nack ${deliveryTag}${requeue ? " requeue" : ""}`);
    },
  };
}

function acksFor(tags: number[], maxHeld = 100) {
  const sink = recordingSink();
  let counted = 0;
  const acks = new DeliveryAcks(sink, maxHeld, () => counted++);
  for (const t of tags) acks.track(t);
  return { sink, acks, counted: () => counted };
}

Deno.test("a run of settled deliveries is acked with one multiple frame", () => {
  const { sink, acks, counted } = acksFor([1, 2, 3, 4, 5]);
  for (const t of [1, 2, 3, 4, 5]) acks.settle(t, "ack");
  acks.flush();
  assert.deepEqual(sink.frames, ["ack 5 multiple"]);
  assert.equal(counted(), 1);
  assert.equal(acks.outstanding, 0);
});

Deno.test("a multiple ack never covers a delivery that is still being handled", () => {
  const { sink, acks } = acksFor([1, 2, 3, 4]);
  acks.settle(2, "ack");
  acks.settle(3, "ack");
  acks.flush();
  assert.deepEqual(sink.frames, [], "1 is not settled: nothing may be acked past it");
  acks.settle(1, "ack");
  acks.flush();
  assert.deepEqual(sink.frames, ["ack 3 multiple"]);
  assert.equal(acks.outstanding, 1, "4 is still outstanding");
});

Deno.test("a requeue splits the run and keeps its own frame", () => {
  const { sink, acks } = acksFor([1, 2, 3, 4]);
  acks.settle(1, "ack");
  acks.settle(2, "requeue");
  acks.settle(3, "ack");
  acks.settle(4, "ack");
  acks.flush();
  assert.deepEqual(sink.frames, ["ack 1 multiple", "nack 2 requeue", "ack 4 multiple"]);
});

Deno.test("deliveries held behind a slow one are acked one by one once too many wait", () => {
  const { sink, acks } = acksFor([1, 2, 3, 4, 5, 6], 4);
  for (const t of [2, 3, 4]) acks.settle(t, "ack");
  acks.flush();
  assert.deepEqual(sink.frames, [], "three held is below the limit of four");
  acks.settle(5, "ack");
  acks.flush();
  assert.deepEqual(sink.frames, ["ack 2", "ack 3", "ack 4", "ack 5"]);
  assert.equal(acks.outstanding, 2);
  acks.settle(1, "ack");
  acks.settle(6, "ack");
  acks.flush();
  // 1 and 6 settle; 2..5 were sent already and are skipped, so one frame covers the rest.
  assert.deepEqual(sink.frames.slice(4), ["ack 6 multiple"]);
  assert.equal(acks.outstanding, 0);
});

Deno.test("settle() sends on the next macrotask, so one custody batch shares one frame", async () => {
  const { sink, acks } = acksFor([1, 2, 3]);
  await Promise.all([1, 2, 3].map(async (t) => {
    await Promise.resolve();
    acks.settle(t, "ack");
  }));
  assert.deepEqual(sink.frames, []);
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(sink.frames, ["ack 3 multiple"]);
});

Deno.test("a forced flush (shutdown) sends what waits behind an unsettled delivery", () => {
  const { sink, acks } = acksFor([1, 2, 3]);
  acks.settle(2, "ack");
  acks.settle(3, "requeue");
  acks.flush(true);
  assert.deepEqual(sink.frames, ["ack 2", "nack 3 requeue"]);
  assert.equal(acks.outstanding, 1, "1 goes back to the queue when the channel closes");
});

Deno.test("nothing is sent on a channel that died: the broker redelivers", () => {
  const { sink, acks } = acksFor([1, 2]);
  sink.active = false;
  acks.settle(1, "ack");
  acks.settle(2, "ack");
  acks.flush(true);
  assert.deepEqual(sink.frames, []);
});
