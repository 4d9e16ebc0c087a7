/**
 * The consumer of OUR queue: decode, validate, take into custody, ack.
 *
 * A delivery is acked only when its fate is settled in a durable place: the
 * ledger (custody committed), a retry wait queue, or the DLQ (both confirmed by
 * the broker). Anything else (e.g. the broker refused the republish) throws, so
 * the delivery is nacked with requeue and nothing is lost. The handler never sleeps
 * while holding a delivery; delays live in the wait queues' TTLs.
 */
import type { AsyncMessage, Connection } from "rabbitmq-client";
import { decodeSaleEvent, type EventLimits } from "../model/sale_event.ts";
import { Custody, LedgerRejectedError } from "../ledger/custody.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import { startAckingConsumer } from "./acking_consumer.ts";
import {
  attemptsSoFar,
  bodyBytes,
  deadLetterFailure,
  type FailureInfo,
  republishEnvelope,
} from "./envelope.ts";
import type { ConfirmingPublisher } from "./publisher.ts";
import { originalContentEncoding } from "./raw_body.ts";
import { exchangeDeclaration, type Topology, workQueueDeclaration } from "./topology.ts";

const log = logger("broker");

/** What the sale consumer needs, passed in by the composition root. */
export interface SaleConsumerDeps {
  connection: Connection;
  publisher: ConfirmingPublisher;
  custody: Custody;
  topology: Topology;
  limits: EventLimits;
  concurrency: number;
  prefetch: number;
  metrics: ServiceMetrics;
}

/** A running consumer. */
export interface SaleConsumer {
  /** True while the consumer is attached to the queue on a live connection. */
  readonly attached: boolean;
  /** Stops taking deliveries and waits for the ones in flight to be settled. */
  close(): Promise<void>;
}

/** Starts consuming OUR queue; declares exchange, queue and binding on every (re)connect. */
export function startSaleConsumer(deps: SaleConsumerDeps): SaleConsumer {
  const { topology, metrics, publisher } = deps;

  async function deadLetter(msg: AsyncMessage, raw: Uint8Array, failure: FailureInfo) {
    const envelope = republishEnvelope(msg, deadLetterFailure(failure));
    await publisher.toQueue(topology.deadLetterQueue, envelope, raw);
    metrics.eventsDeadLettered.inc({ reason: failure.reason });
    metrics.eventsAcked.inc({ outcome: "dead_lettered" });
    log.warning("dead-lettered message: {reason}: {error}", {
      mark: "error",
      reason: failure.reason,
      error: failure.error,
      event_id: failure.eventId,
      message_id: msg.messageId,
      attempt: failure.attempts,
    });
  }

  async function handle(msg: AsyncMessage): Promise<void> {
    metrics.eventsConsumed.inc({ queue: topology.queue });
    const raw = bodyBytes(msg.body);
    const decoded = decodeSaleEvent(raw, {
      messageId: msg.messageId,
      contentEncoding: originalContentEncoding(msg.contentEncoding),
    }, deps.limits);
    if (!decoded.ok) {
      const { reason, message, field } = decoded.rejection;
      await deadLetter(msg, raw, { reason, error: message, field, attempts: attemptsSoFar(msg) + 1 });
      return;
    }
    const event = decoded.event;
    metrics.eventIdentity.inc({ source: event.identitySource });
    if (event.identitySource === "body_hash") {
      log.warning(
        "event has no message_id, event_id or venta_id; using a body hash as identity (two identical sales would collapse)",
        { event_id: event.eventId, tienda_id: event.tiendaId },
      );
    }
    for (const conflict of event.productConflicts) {
      // Applied by SKU all the same: the POS sold it, and no replay could make the body consistent.
      metrics.productConflicts.inc();
      log.warning(
        "sale {event_id} lists SKU {sku} under several producto_ids ({producto_ids}); applied by SKU, summed — fix the POS catalog",
        {
          event_id: event.eventId,
          tienda_id: event.tiendaId,
          sku: conflict.sku,
          producto_ids: conflict.productoIds.join(", "),
        },
      );
    }
    log.debug("received sale {event_id}", {
      mark: "received",
      event_id: event.eventId,
      items: event.items.length,
    });
    try {
      const outcome = await deps.custody.accept(event);
      metrics.eventsAcked.inc({ outcome });
      // Per-sale lines are debug: at info they cost ~28 % of custody throughput
      // (docs/BENCHMARKS.md); the per-listing "applied" line of the dispatcher stays at info.
      log.debug("sale {event_id} in custody ({outcome})", {
        mark: "done",
        event_id: event.eventId,
        tienda_id: event.tiendaId,
        outcome,
        items: event.items.length,
      });
      return;
    } catch (error) {
      const message = (error as Error).message;
      const attempts = attemptsSoFar(msg) + 1;
      if (error instanceof LedgerRejectedError) {
        await deadLetter(msg, raw, {
          reason: "ledger_rejected",
          error: message,
          attempts,
          eventId: event.eventId,
        });
        return;
      }
      const tier = topology.retryQueues[attempts - 1];
      if (!tier) {
        await deadLetter(msg, raw, {
          reason: "ledger_unavailable",
          error: message,
          attempts,
          eventId: event.eventId,
        });
        return;
      }
      await publisher.toQueue(
        tier.name,
        republishEnvelope(msg, {
          reason: "ledger_unavailable",
          error: message,
          attempts,
          eventId: event.eventId,
        }),
        raw,
      );
      metrics.eventsRetried.inc({ reason: "ledger_unavailable" });
      metrics.eventsAcked.inc({ outcome: "retried" });
      log.warning("sale {event_id} not stored ({error}); retry {attempt} in {delay_ms} ms", {
        mark: "retry",
        event_id: event.eventId,
        error: message,
        attempt: attempts,
        delay_ms: tier.delayMs,
      });
      return;
    }
  }

  const consumer = startAckingConsumer(deps.connection, {
    queue: topology.queue,
    queueOptions: workQueueDeclaration(topology),
    exchanges: [exchangeDeclaration(topology)],
    queueBindings: [{ queue: topology.queue, exchange: topology.exchange, routingKey: topology.routingKey }],
    prefetch: deps.prefetch,
    concurrency: deps.concurrency,
    onReady: () => {
      metrics.componentUp.set({ component: "consumer" }, 1);
      log.info("consuming {queue} (concurrency {concurrency}, prefetch {prefetch})", {
        queue: topology.queue,
        concurrency: deps.concurrency,
        prefetch: deps.prefetch,
      });
    },
    onAckFrame: () => metrics.ackFrames.inc(),
    onError: (error) => log.error("consumer error: {error}", { mark: "error", error: error.message }),
  }, handle);
  deps.connection.on("error", () => metrics.componentUp.set({ component: "consumer" }, 0));

  return {
    get attached() {
      return consumer.ready && deps.connection.ready;
    },
    close: () => consumer.close(),
  };
}
