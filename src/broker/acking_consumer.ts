/**
 * A queue consumer that survives reconnects and acks in batches.
 *
 * rabbitmq-client's `Consumer` acks every delivery with its own frame; at
 * custody rates that doubled RabbitMQ's CPU per event (docs/BENCHMARKS.md). This
 * keeps its contract (declare on every (re)connect, bounded concurrency, nack
 * with requeue when the handler throws, drain on close) and acks through
 * {@link DeliveryAcks}. Deliveries of a channel that died are never acked on
 * another one: the broker redelivers them.
 */
import type { AsyncMessage, Channel, Connection, ConsumerProps } from "rabbitmq-client";
import { exponential } from "../resilience/backoff.ts";
import { DeliveryAcks } from "./delivery_acks.ts";

/** Where to consume from and what to declare first. */
export interface AckingConsumerOptions {
  queue: string;
  queueOptions: ConsumerProps["queueOptions"];
  exchanges?: ConsumerProps["exchanges"];
  queueBindings?: ConsumerProps["queueBindings"];
  /** Deliveries the broker may have outstanding on our channel. */
  prefetch: number;
  /** Handlers running at once; further deliveries wait in arrival order. */
  concurrency: number;
  onReady?: () => void;
  /** Called for every ack or nack frame sent. */
  onAckFrame?: () => void;
  onError?: (error: Error) => void;
}

/**
 * Handles one delivery. Resolving acks it; throwing nacks it with requeue (the
 * handler settles every fate it can itself: ledger, retry tier or DLQ).
 */
export type DeliveryHandler = (msg: AsyncMessage) => Promise<void>;

/** A running consumer. */
export interface AckingConsumer {
  /** True while subscribed on a live channel. */
  readonly ready: boolean;
  /** Stops taking deliveries, waits for the ones in flight and sends their acks. */
  close(): Promise<void>;
}

/**
 * Wait before re-subscribing, by failed setups in a row (from 0): the numbers and spread of
 * rabbitmq-client's own reconnects (retryLow/retryHigh, src/service/connections.ts), 250 ms doubling to 10 s,
 * drawn from the upper half so a broker restart is not met by every consumer at once.
 */
const resubscribeBackoff = exponential({
  baseMs: 250,
  maxMs: 10_000,
  firstAttempt: 0,
  jitter: { down: 0.5 },
});

interface Subscription {
  channel: Channel;
  acks: DeliveryAcks;
  consumerTag?: string;
}

/** Starts consuming `options.queue` with `handler`. */
export function startAckingConsumer(
  connection: Connection,
  options: AckingConsumerOptions,
  handler: DeliveryHandler,
): AckingConsumer {
  let current: Subscription | undefined;
  let ready = false;
  let closing = false;
  let retries = 0;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let pendingSetup: Promise<void> | undefined;
  const processing = new Set<Promise<void>>();
  let waiting: { msg: AsyncMessage; sub: Subscription }[] = [];

  const report = (error: unknown) =>
    options.onError?.(error instanceof Error ? error : new Error(String(error)));

  function run(msg: AsyncMessage, sub: Subscription): void {
    const job = handler(msg).then(
      () => sub.acks.settle(msg.deliveryTag, "ack"),
      (error) => {
        sub.acks.settle(msg.deliveryTag, "requeue");
        report(error);
      },
    ).finally(() => {
      processing.delete(job);
      const next = waiting.shift();
      if (next) run(next.msg, next.sub);
    });
    processing.add(job);
  }

  function resubscribeLater(): void {
    ready = false;
    if (closing || retryTimer || pendingSetup) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      subscribe();
    }, resubscribeBackoff(retries++));
  }

  function subscribe(): void {
    pendingSetup = setup().catch((error) => {
      report(new Error(`consumer setup failed; ${(error as Error).message}`));
      current?.channel.close().catch(() => {});
      pendingSetup = undefined;
      resubscribeLater();
    }).finally(() => pendingSetup = undefined);
  }

  async function setup(): Promise<void> {
    // Handlers of the previous channel finish first (their acks are dropped).
    await Promise.allSettled(processing);
    if (closing) return;
    const channel = await connection.acquire({ emitErrorsFromChannel: true });
    const sub: Subscription = {
      channel,
      // Half the window may wait behind a slow delivery before being acked one by one.
      acks: new DeliveryAcks(channel, Math.max(1, Math.floor(options.prefetch / 2)), options.onAckFrame),
    };
    current = sub;
    channel.on("error", report);
    channel.once("close", () => {
      // Deliveries still waiting can never be acked now; the broker redelivers them.
      waiting = waiting.filter((w) => w.sub !== sub);
      if (current === sub) resubscribeLater();
    });
    await channel.queueDeclare({ ...options.queueOptions, queue: options.queue });
    for (const exchange of options.exchanges ?? []) await channel.exchangeDeclare(exchange);
    for (const binding of options.queueBindings ?? []) await channel.queueBind(binding);
    await channel.basicQos({ prefetchCount: options.prefetch });
    const { consumerTag } = await channel.basicConsume({ queue: options.queue }, (msg) => {
      sub.acks.track(msg.deliveryTag);
      // Closing: start nothing new; the broker gets it back when the channel closes.
      if (closing) return;
      if (waiting.length > 0 || processing.size >= options.concurrency) waiting.push({ msg, sub });
      else run(msg, sub);
    });
    sub.consumerTag = consumerTag;
    channel.once("basic.cancel", () => {
      // The queue was deleted or the broker cancelled us. The channel still works:
      // let the deliveries in hand settle and be acked on it, then subscribe anew.
      if (closing) return;
      report(new Error(`the broker cancelled our subscription to ${options.queue}`));
      ready = false;
      waiting = waiting.filter((w) => w.sub !== sub);
      void Promise.allSettled(processing).then(() => {
        sub.acks.flush(true);
        return channel.close();
      }).catch(() => {});
    });
    // A channel that closed while we set it up would never be resubscribed.
    if (!channel.active) throw new Error("the channel closed during setup");
    retries = 0;
    if (closing) return;
    ready = true;
    queueMicrotask(() => options.onReady?.());
  }

  subscribe();

  let closed: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing = true;
    ready = false;
    clearTimeout(retryTimer);
    await pendingSetup;
    const sub = current;
    if (sub?.channel.active && sub.consumerTag) {
      await sub.channel.basicCancel({ consumerTag: sub.consumerTag }).catch(() => {});
    }
    // Deliveries not started are returned to the queue by closing the channel.
    waiting = [];
    while (processing.size > 0) await Promise.allSettled(processing);
    if (sub) {
      sub.acks.flush(true);
      current = undefined;
      await sub.channel.close().catch(() => {});
    }
  }

  return {
    get ready() {
      return ready && current !== undefined && current.channel.active;
    },
    close() {
      // A second call waits for the same drain.
      return closed ??= close();
    },
  };
}
