/**
 * Publishes the POS outbox (issue #14) to `blend_events` — `marketplace.sales.created` and
 * `marketplace.sales.cancelled` — with publisher confirms and each message's stable `message_id`.
 *
 * Not `mandatory`: until a POS binds a queue to these routing keys RabbitMQ confirms and drops the message
 * (nothing bounces back to retry forever), and the service never depends on the POS listening — available
 * stock (src/pos/available.ts) keeps the marketplaces right either way. A message RabbitMQ does not confirm
 * (broker down, blocked, refused) stays in the outbox and is tried again with a backoff; the
 * `pos_outbox_unpublished` gauge shows how many wait.
 */
import { Buffer } from "node:buffer";
import type { Connection, Publisher } from "rabbitmq-client";
import type { OutboxMessage, PosOutboxStore } from "../ledger/pos_outbox.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import { exponential } from "../resilience/backoff.ts";
import { exchangeDeclaration, type Topology } from "./topology.ts";

const log = logger("broker");

/** After an unconfirmed publish: 1 s, doubling to 5 min (attempts count from 1, the first claim). */
const RETRY = exponential({ baseMs: 1_000, maxMs: 300_000, firstAttempt: 1, jitter: { down: 0.2 } });

/** Options of {@link PosOutboxPublisher}. */
export interface PosOutboxOptions {
  connection: Connection;
  store: PosOutboxStore;
  topology: Topology;
  metrics: ServiceMetrics;
  /** How often the loop looks for messages when nobody woke it. */
  pollIntervalMs: number;
  /** How long one publish may wait for its confirm. */
  confirmTimeoutMs?: number;
  /** Messages per round. */
  batchSize?: number;
}

/** The outbox's publishing loop. */
export class PosOutboxPublisher {
  #publisher: Publisher;
  #running: Promise<void> | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  #woken = false;

  constructor(private readonly options: PosOutboxOptions) {
    this.#publisher = options.connection.createPublisher({
      confirm: true,
      // One attempt per round: the outbox retries with its own backoff, never in a tight loop.
      maxAttempts: 1,
      exchanges: [exchangeDeclaration(options.topology)],
    });
  }

  /** Starts the loop. */
  start(): void {
    this.#running ??= this.#loop();
  }

  /** New messages were committed: publish them now rather than at the next poll. */
  wake(): void {
    this.#woken = true;
    this.#wake?.();
  }

  /** Publishes whatever is due now, once (the loop's round; tests call it directly). */
  async publishDue(): Promise<number> {
    const { store, metrics } = this.options;
    const due = await store.claim(this.options.batchSize ?? 100, 60_000);
    const done: string[] = [];
    for (const message of due) {
      try {
        await this.#send(message);
        done.push(message.id);
        metrics.posMessagesPublished.inc({ routing_key: message.routingKey });
      } catch (error) {
        const wait = RETRY(message.attempts);
        await store.failed(message.id, (error as Error).message, wait);
        metrics.posPublishFailures.inc({ routing_key: message.routingKey });
        log.warning("POS message {message_id} not confirmed ({error}); retry in {wait_ms} ms", {
          message_id: message.messageId,
          error: (error as Error).message,
          wait_ms: wait,
        });
      }
    }
    await store.published(done);
    return done.length;
  }

  async #send(message: OutboxMessage): Promise<void> {
    const { topology } = this.options;
    const timeoutMs = this.options.confirmTimeoutMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.#publisher.send({
          exchange: topology.exchange,
          routingKey: message.routingKey,
          messageId: message.messageId,
          contentType: "application/json",
          durable: true,
          // No `mandatory`: no POS queue bound yet is not an error (see the module comment).
        }, Buffer.from(JSON.stringify(message.body))),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`not confirmed within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #loop(): Promise<void> {
    while (!this.#stopping) {
      this.#woken = false;
      try {
        // Rounds follow each other while they find work; an idle loop waits for a wake or the poll.
        if ((await this.publishDue()) > 0) continue;
      } catch (error) {
        log.warning("POS outbox: {error}", { error: (error as Error).message });
      }
      if (this.#woken || this.#stopping) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.pollIntervalMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Ends the loop after its round in flight, and closes the publisher. */
  async close(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#running;
    await this.#publisher.close();
  }
}
