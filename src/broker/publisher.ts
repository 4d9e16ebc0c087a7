/**
 * A publisher that only reports success when RabbitMQ has taken the message:
 * publisher confirms, `mandatory` so an unroutable message (a wait queue or the
 * DLQ deleted by hand) is an error instead of a silent drop, and a timeout so a
 * blocked connection (memory alarm) never pins a delivery forever.
 */
import { Buffer } from "node:buffer";
import { setImmediate } from "node:timers";
import type { Connection, Envelope, Publisher, ReturnedMessage } from "rabbitmq-client";
import { publishQueueDeclarations, type Topology } from "./topology.ts";

const PUBLISH_ID = "sync-publish-id";

/** Publishes to a queue through the default exchange, with confirms. */
export interface ConfirmingPublisher {
  /** Resolves once the broker confirmed the message into `queue`. */
  toQueue(queue: string, envelope: Envelope, body: Uint8Array | string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Creates the publisher on its own connection (DESIGN.md §4: memory alarms
 * block publishers, not consumers). Re-declares the wait queues and the DLQ on
 * every reconnect.
 */
export function createConfirmingPublisher(
  connection: Connection,
  topology: Topology,
  timeoutMs = 10_000,
): ConfirmingPublisher {
  const returned = new Set<string>();
  const publisher: Publisher = connection.createPublisher({
    confirm: true,
    maxAttempts: 3,
    queues: publishQueueDeclarations(topology),
  });
  // RabbitMQ sends basic.return before the confirm (see sendOnce for when the
  // client reports it).
  publisher.on("basic.return", (msg: ReturnedMessage) => {
    const id = msg.headers?.[PUBLISH_ID];
    if (typeof id === "string") returned.add(id);
  });
  let counter = 0;

  async function sendOnce(queue: string, envelope: Envelope, body: Uint8Array | string): Promise<boolean> {
    const id = `${Date.now().toString(36)}-${(counter++).toString(36)}`;
    const send = publisher.send({
      ...envelope,
      exchange: "",
      routingKey: queue,
      mandatory: true,
      headers: { ...envelope.headers, [PUBLISH_ID]: id },
      // The client JSON-encodes anything that is not a Buffer or a string.
    }, typeof body === "string" ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`publish to ${queue} not confirmed within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([send, timeout]);
    } finally {
      clearTimeout(timer);
    }
    // rabbitmq-client emits basic.return one macrotask after the confirm settles the
    // send: without this turn an unroutable message would look delivered.
    await new Promise((resolve) => setImmediate(resolve));
    return !returned.delete(id);
  }

  return {
    async toQueue(queue, envelope, body) {
      if (await sendOnce(queue, envelope, body)) return;
      // Unroutable: someone deleted the queue. Declare it again (we own it) and
      // retry once, instead of nacking the delivery into a redelivery loop.
      const declaration = publishQueueDeclarations(topology).find((q) => q.queue === queue);
      if (declaration) {
        await connection.queueDeclare(declaration);
        if (await sendOnce(queue, envelope, body)) return;
      }
      throw new Error(`queue "${queue}" does not exist; message returned unroutable`);
    },
    close: () => publisher.close(),
  };
}
