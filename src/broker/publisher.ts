/**
 * A publisher that only reports success when RabbitMQ has taken the message:
 * publisher confirms, `mandatory` so an unroutable message (a wait queue or the
 * DLQ deleted by hand) is an error instead of a silent drop, and a timeout so a
 * blocked connection (memory alarm) never pins a delivery forever.
 */
import { Buffer } from "node:buffer";
import { setImmediate } from "node:timers";
import type { Connection, Envelope, Publisher, ReturnedMessage } from "rabbitmq-client";
import * as codec from "rabbitmq-client/lib/codec.js";
import { publishQueueDeclarations, type Topology } from "./topology.ts";

const PUBLISH_ID = "sync-publish-id";
/** rabbitmq-client's default frame_max (connectBroker keeps it): one header frame must fit in it. */
const FRAME_MAX = 8192;

/**
 * The envelope, with the sender's own headers dropped (and named) when they and
 * our sync-* headers do not fit one AMQP header frame together. Handed to the
 * client, such a frame fails the publish — and the publishes queued behind it —
 * so the delivery would be nacked and redelivered forever. Measured with the
 * client's own encoder (an internal of the version pinned in deno.json).
 */
function fitToFrame(envelope: Envelope): Envelope {
  // deno-lint-ignore no-explicit-any
  const { encodeFrame, FrameType } = ((codec as any).encodeFrame ? codec : (codec as any).default) as any;
  if (typeof encodeFrame !== "function") {
    throw new Error("rabbitmq-client internals changed: encodeFrame not found");
  }
  const fits = (env: Envelope) => {
    try {
      const fields = { ...env, timestamp: env.timestamp ?? 0, deliveryMode: 2 };
      encodeFrame({ type: FrameType.HEADER, channelId: 1, bodySize: 0, fields }, FRAME_MAX);
      return true;
    } catch {
      return false;
    }
  };
  const dropped = Object.keys(envelope.headers ?? {}).filter((name) => !name.startsWith("sync-"));
  if (fits(envelope) || dropped.length === 0) return envelope;
  const kept = Object.entries(envelope.headers!).filter(([name]) => name.startsWith("sync-"));
  const headers = { ...Object.fromEntries(kept), "sync-dropped-headers": dropped.join(", ").slice(0, 1000) };
  return { ...envelope, headers };
}

/** Publishes to a queue through the default exchange, with confirms. */
export interface ConfirmingPublisher {
  /** Resolves once the broker confirmed the message into `queue`. */
  toQueue(queue: string, envelope: Envelope, body: Uint8Array | string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Creates the publisher on its own connection (docs/DESIGN.md §4: memory alarms
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
      ...fitToFrame({ ...envelope, headers: { ...envelope.headers, [PUBLISH_ID]: id } }),
      exchange: "",
      routingKey: queue,
      mandatory: true,
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
