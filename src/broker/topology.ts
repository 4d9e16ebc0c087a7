/**
 * RabbitMQ topology (docs/DESIGN.md §4), declared idempotently at start and on every
 * reconnect: the POS's topic exchange, OUR work queue bound to it, retry wait
 * queues that dead-letter straight back to our work queue, and the DLQ.
 */
import type { Connection } from "rabbitmq-client";
import { logger } from "../log.ts";

const log = logger("broker");

/** Names and shapes of everything the service declares. */
export interface Topology {
  exchange: string;
  routingKey: string;
  queue: string;
  queueType: "classic" | "quorum";
  /**
   * Quorum only: returns of one delivery before the work queue dead-letters it
   * into the DLQ (reason `delivery_limit`).
   */
  deliveryLimit: number;
  /**
   * Set by {@link declareTopology} when the broker holds a work queue declared
   * by an older version (no delivery limit, no dead-letter target): we keep
   * using that declaration, and the operator's policy decides (README).
   */
  legacyWorkQueue?: boolean;
  /**
   * Set by {@link declareTopology} when the broker holds a work queue whose
   * arguments match neither this configuration nor the legacy declaration
   * (e.g. QUEUE_DELIVERY_LIMIT changed since the queue was declared): RabbitMQ
   * cannot change a queue's arguments, so the queue is only checked to exist
   * (a passive declare) and keeps its declaration; a policy changes the limit.
   */
  workQueueAsDeclared?: boolean;
  /** One wait queue per retry tier, in order. */
  retryQueues: { name: string; delayMs: number }[];
  deadLetterQueue: string;
}

/** RabbitMQ 4.x's own default for quorum queues; we declare it explicitly. */
export const DEFAULT_DELIVERY_LIMIT = 20;

/** Derives the topology from configuration values. */
export function buildTopology(options: {
  exchange: string;
  routingKey: string;
  queue: string;
  queueType: "classic" | "quorum";
  retryDelaysMs: number[];
  deliveryLimit?: number;
}): Topology {
  return {
    exchange: options.exchange,
    routingKey: options.routingKey,
    queue: options.queue,
    queueType: options.queueType,
    deliveryLimit: options.deliveryLimit ?? DEFAULT_DELIVERY_LIMIT,
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
  QUEUE_DELIVERY_LIMIT?: number;
  RETRY_DELAYS: number[];
}): Topology {
  return buildTopology({
    exchange: config.EXCHANGE,
    routingKey: config.ROUTING_KEY,
    queue: config.QUEUE,
    queueType: config.QUEUE_TYPE,
    retryDelaysMs: config.RETRY_DELAYS,
    deliveryLimit: config.QUEUE_DELIVERY_LIMIT,
  });
}

/** Declaration of the POS's exchange, with the arguments the POS uses. */
export function exchangeDeclaration(t: Topology) {
  return { exchange: t.exchange, type: "topic", durable: true } as const;
}

/**
 * Declaration of our durable work queue. A quorum work queue has an explicit
 * delivery limit and dead-letters what goes over it into our DLQ, at least
 * once (the DLQ copy is confirmed before the original is dropped): a crash loop
 * that keeps handing back the same deliveries parks them where an operator sees
 * and replays them, instead of RabbitMQ deleting them (the default with no
 * dead-letter target).
 */
export function workQueueDeclaration(t: Topology) {
  if (t.workQueueAsDeclared) return { queue: t.queue, passive: true };
  if (t.queueType !== "quorum" || t.legacyWorkQueue) return legacyWorkQueueDeclaration(t);
  return {
    queue: t.queue,
    durable: true,
    arguments: {
      "x-queue-type": t.queueType,
      "x-delivery-limit": t.deliveryLimit,
      "x-dead-letter-exchange": "",
      "x-dead-letter-routing-key": t.deadLetterQueue,
      "x-dead-letter-strategy": "at-least-once",
      // at-least-once dead-lettering requires it; with no length limit it never rejects.
      "x-overflow": "reject-publish" as const,
    },
  };
}

/** The work queue as versions before the delivery limit declared it. */
export function legacyWorkQueueDeclaration(t: Topology) {
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

/** True for the channel error RabbitMQ answers a redeclare with changed arguments with. */
function isPreconditionFailed(error: unknown): boolean {
  return (error as { code?: string })?.code === "PRECONDITION_FAILED";
}

/**
 * Declares every exchange, queue and binding. Safe to call repeatedly.
 * RabbitMQ refuses to redeclare a queue with other arguments
 * (PRECONDITION_FAILED, which also closes the channel; the connection's next
 * call opens a new one). A quorum work queue that refuses keeps its
 * declaration, and every later redeclare (reconnects, the consumer) matches it:
 * - declared by an older version (without the delivery limit and dead-letter
 *   target): `t.legacyWorkQueue` is set;
 * - declared with other arguments (e.g. QUEUE_DELIVERY_LIMIT changed since):
 *   `t.workQueueAsDeclared` is set and the queue is only checked to exist
 *   (a passive declare, which accepts any arguments).
 * Returns which of the two applies, so the caller can warn the operator.
 */
export async function declareTopology(
  connection: Connection,
  t: Topology,
): Promise<{ legacyWorkQueue: boolean; workQueueAsDeclared: boolean }> {
  await connection.exchangeDeclare(exchangeDeclaration(t));
  try {
    await connection.queueDeclare(workQueueDeclaration(t));
  } catch (error) {
    if (t.queueType !== "quorum" || t.workQueueAsDeclared || !isPreconditionFailed(error)) throw error;
    await declareAsExisting(connection, t);
  }
  for (const q of publishQueueDeclarations(t)) await connection.queueDeclare(q);
  await connection.queueBind({ queue: t.queue, exchange: t.exchange, routingKey: t.routingKey });
  return { legacyWorkQueue: t.legacyWorkQueue === true, workQueueAsDeclared: t.workQueueAsDeclared === true };
}

/** After PRECONDITION_FAILED on the quorum work queue: adopts the declaration the broker holds. */
async function declareAsExisting(connection: Connection, t: Topology): Promise<void> {
  if (!t.legacyWorkQueue) {
    try {
      await connection.queueDeclare(legacyWorkQueueDeclaration(t));
      t.legacyWorkQueue = true;
      return;
    } catch (error) {
      if (!isPreconditionFailed(error)) throw error;
    }
  }
  // Neither ours nor the legacy one: keep whatever it is (a missing queue still fails here).
  await connection.queueDeclare({ queue: t.queue, passive: true });
  t.legacyWorkQueue = false;
  t.workQueueAsDeclared = true;
}

/** Tells the operator when the work queue kept an older or different declaration than the one configured. */
export function reportDeclaration(
  t: Topology,
  declared: { legacyWorkQueue: boolean; workQueueAsDeclared: boolean },
): void {
  if (declared.workQueueAsDeclared) {
    log.warning(
      "QUEUE_DELIVERY_LIMIT={limit} (QUEUE_TYPE={queue_type}) differs from the arguments work queue {queue} " +
        "was declared with; the queue keeps its declaration (RabbitMQ cannot change a queue's arguments): " +
        "change the limit by policy (README: quorum queues, existing deployments)",
      { limit: t.deliveryLimit, queue_type: t.queueType, queue: t.queue },
    );
  } else if (declared.legacyWorkQueue) {
    log.warning(
      "work queue {queue} was declared by an older version without a delivery limit and dead-letter target: " +
        "deliveries returned more often than the broker's limit are DELETED unless a policy sets " +
        "dead-letter-exchange/dead-letter-routing-key (README: quorum queues, existing deployments)",
      { queue: t.queue, dead_letter_queue: t.deadLetterQueue },
    );
  }
}
