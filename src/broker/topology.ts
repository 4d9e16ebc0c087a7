/**
 * RabbitMQ topology (DESIGN.md §4), declared idempotently at start and on every
 * reconnect: the POS's topic exchange, OUR work queue bound to it, retry wait
 * queues that dead-letter straight back to our work queue, and the DLQ.
 */
import type { Connection } from "rabbitmq-client";

/** Names and shapes of everything the service declares. */
export interface Topology {
  exchange: string;
  routingKey: string;
  queue: string;
  queueType: "classic" | "quorum";
  /** One wait queue per retry tier, in order. */
  retryQueues: { name: string; delayMs: number }[];
  deadLetterQueue: string;
}

/** Derives the topology from configuration values. */
export function buildTopology(options: {
  exchange: string;
  routingKey: string;
  queue: string;
  queueType: "classic" | "quorum";
  retryDelaysMs: number[];
}): Topology {
  return {
    exchange: options.exchange,
    routingKey: options.routingKey,
    queue: options.queue,
    queueType: options.queueType,
    // The delay is part of the name: changing RETRY_DELAYS declares new queues
    // instead of failing with PRECONDITION_FAILED on a changed TTL.
    retryQueues: options.retryDelaysMs.map((delayMs) => ({
      name: `${options.queue}.retry.${delayMs}ms`,
      delayMs,
    })),
    deadLetterQueue: `${options.queue}.dlq`,
  };
}

/** The topology named by a service configuration. */
export function topologyFromConfig(config: {
  EXCHANGE: string;
  ROUTING_KEY: string;
  QUEUE: string;
  QUEUE_TYPE: "classic" | "quorum";
  RETRY_DELAYS: number[];
}): Topology {
  return buildTopology({
    exchange: config.EXCHANGE,
    routingKey: config.ROUTING_KEY,
    queue: config.QUEUE,
    queueType: config.QUEUE_TYPE,
    retryDelaysMs: config.RETRY_DELAYS,
  });
}

/** Declaration of the POS's exchange, with the arguments the POS uses. */
export function exchangeDeclaration(t: Topology) {
  return { exchange: t.exchange, type: "topic", durable: true } as const;
}

/** Declaration of our durable work queue. */
export function workQueueDeclaration(t: Topology) {
  return { queue: t.queue, durable: true, arguments: { "x-queue-type": t.queueType } };
}

/** Declarations of the wait queues and the DLQ (everything we publish to). */
export function publishQueueDeclarations(t: Topology) {
  return [
    ...t.retryQueues.map((tier) => ({
      queue: tier.name,
      durable: true,
      arguments: {
        "x-queue-type": t.queueType,
        // A queue-level TTL: every message in a tier waits the same time, so no
        // head-of-line blocking. Expired messages go back to OUR queue through
        // the default exchange, never through blend_events (which would hand the
        // sale to every other service bound there again).
        "x-message-ttl": tier.delayMs,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": t.queue,
        ...(t.queueType === "quorum"
          ? { "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" as const }
          : {}),
      },
    })),
    { queue: t.deadLetterQueue, durable: true, arguments: { "x-queue-type": t.queueType } },
  ];
}

/** Declares every exchange, queue and binding. Safe to call repeatedly. */
export async function declareTopology(connection: Connection, t: Topology): Promise<void> {
  await connection.exchangeDeclare(exchangeDeclaration(t));
  await connection.queueDeclare(workQueueDeclaration(t));
  for (const q of publishQueueDeclarations(t)) await connection.queueDeclare(q);
  await connection.queueBind({ queue: t.queue, exchange: t.exchange, routingKey: t.routingKey });
}
