/**
 * DLQ inspection and replay (`GET /dlq`, `POST /dlq/replay`; docs/DESIGN.md §4, §7).
 *
 * Listing peeks without losing or reordering anything. On a classic DLQ the
 * messages are taken with `basic.get` (manual ack) on a dedicated channel and
 * all put back with one requeueing nack; RabbitMQ returns requeued messages to
 * their original position. On a quorum DLQ a requeue counts as a delivery, and
 * a delivery limit (RabbitMQ 4.x's default of 20, or an operator's policy)
 * deletes the message once it is reached: so there every message is rotated
 * instead, one at a time: its copy is published to the tail of the DLQ
 * (confirmed) and only then is the original acked. A listing rotates the whole
 * DLQ, so the order is kept and no delivery count ever moves.
 * Replay publishes each matching message's ORIGINAL body bytes and
 * properties to the work queue (publisher confirms + mandatory), without our
 * `sync-*` headers and the broker's `x-death`-style headers so the event starts
 * with a fresh set of attempts, and acks the DLQ copy only after the confirm.
 * Non-matching messages are requeued at the end, in order. Replaying is safe by
 * the ledger's rules (custody re-arms failed changes, never re-applies applied
 * ones; an invalid event goes back to the DLQ with its reason).
 */
import type { Channel, Connection, Envelope, SyncMessage } from "rabbitmq-client";
import { z } from "zod";
import { bodyBytes, envelopeOf, HEADER } from "../broker/envelope.ts";
import type { ConfirmingPublisher } from "../broker/publisher.ts";
import { keepRawBodies } from "../broker/raw_body.ts";
import { remedyFor } from "../broker/remedies.ts";
import type { Topology } from "../broker/topology.ts";
import { logger } from "../log.ts";

const log = logger("dlq");

/** Most messages one listing returns. */
export const MAX_LIST_LIMIT = 1000;

/** One DLQ message as operators see it. */
export interface DeadLetterView {
  /** 0-based position in the DLQ at listing time. */
  position: number;
  /** The `sync-event-id` header, else the AMQP message_id. */
  event_id: string | null;
  message_id: string | null;
  reason: string | null;
  error: string | null;
  /** What to fix before a replay can succeed (`sync-remedy`). */
  remedy: string | null;
  attempts: number | null;
  channel: string | null;
  sku: string | null;
  first_failure: string | null;
  last_failure: string | null;
  /** Every header as received. */
  headers: Record<string, unknown>;
  content_type: string | null;
  /** Parsed JSON when the body is UTF-8 JSON, else its text (UTF-8, lossy). */
  body: unknown;
  /** The body text, present when the body is not JSON (tells `"x"` from a JSON string). */
  body_text?: string;
  /** The exact bytes, present when the body is not valid UTF-8. */
  body_base64?: string;
}

/** What the admin needs, passed in by the composition root. */
export interface DeadLetterAdminDeps {
  connection: Connection;
  publisher: ConfirmingPublisher;
  topology: Topology;
}

/** Which DLQ messages to replay. At least one criterion is required. */
export interface ReplayFilter {
  /** Every message: required when no other criterion is given (replaying everything must be explicit). */
  all?: boolean;
  /** Messages whose event_id is one of these. */
  eventIds?: string[];
  /** Messages whose `sync-reason` equals this. Criteria combine with AND (`all` restricts nothing). */
  reason?: string;
}

/** What a replay did. */
export interface ReplayResult {
  moved: number;
  kept: number;
  scanned: number;
  moved_event_ids: string[];
}

/** A bad request (the HTTP layer answers 400 with its message). */
export class DeadLetterValidationError extends Error {
  override name = "DeadLetterValidationError";
}

/** A replay stopped because a publish failed; `moved` messages had already gone back. */
export class DeadLetterReplayError extends Error {
  override name = "DeadLetterReplayError";
  constructor(
    message: string,
    readonly moved: number,
    readonly movedEventIds: string[],
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Query of `GET /dlq`. */
export const dlqListQuerySchema = z.object({
  limit: z.coerce.number().int().min(0).max(MAX_LIST_LIMIT).default(50),
}).strict();

/**
 * Body of `POST /dlq/replay`: `{ "all": true }`, `{ "event_ids": [...] }`,
 * `{ "reason": "..." }` (event_ids and reason together = both must match).
 * Parses to a {@link ReplayFilter}.
 */
export const replayRequestSchema = z.object({
  all: z.literal(true).optional(),
  event_ids: z.array(z.string().min(1).max(500)).min(1).max(10_000).optional(),
  reason: z.string().min(1).max(200).optional(),
}).strict()
  .refine((b) => b.all || b.event_ids || b.reason, {
    message: 'say what to replay: {"all": true}, {"event_ids": [...]} or {"reason": "..."}',
  })
  .transform((b): ReplayFilter => ({
    ...(b.all ? { all: true } : {}),
    ...(b.event_ids ? { eventIds: b.event_ids } : {}),
    ...(b.reason ? { reason: b.reason } : {}),
  }));

/** Headers the broker adds on dead-lettering / quorum redelivery; never replayed. */
const BROKER_HEADER = /^(x-death|x-first-death-.*|x-last-death-.*|x-delivery-count|x-received-from)$/;
/** Our own failure bookkeeping (attempts, reason, original exchange, publish id, …). */
const SYNC_HEADER = /^sync-/;
/** Headers a quorum queue sets on each delivery; a rotated copy starts without them. */
const DELIVERY_HEADER = /^(x-delivery-count|x-acquired-count|sync-publish-id)$/;

/** Serializes list/replay per DLQ in this process so two operators never interleave. */
const locks = new Map<string, Promise<unknown>>();

async function exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const previous = locks.get(key) ?? Promise.resolve();
  const run = previous.catch(() => {}).then(fn);
  const tail = run.catch(() => {});
  locks.set(key, tail);
  try {
    return await run;
  } finally {
    if (locks.get(key) === tail) locks.delete(key);
  }
}

function str(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  return String(value);
}

function num(value: unknown): number | null {
  if (value === undefined || value === null || value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The event identity a DLQ message carries: `sync-event-id`, else message_id. */
export function deadLetterEventId(msg: Pick<SyncMessage, "headers" | "messageId">): string | null {
  return str(msg.headers?.[HEADER.eventId]) ?? msg.messageId ?? null;
}

/**
 * Why a message is in the DLQ: our `sync-reason`, else the reason RabbitMQ
 * gave when it dead-lettered the message itself (e.g. `delivery_limit` for a
 * delivery of the work queue returned more often than its delivery limit).
 */
export function deadLetterReason(msg: Pick<SyncMessage, "headers">): string | null {
  return str(msg.headers?.[HEADER.reason]) ?? str(msg.headers?.["x-first-death-reason"]);
}

/** A sentence for a message RabbitMQ dead-lettered itself (no `sync-error`). */
function brokerDeathError(headers: Record<string, unknown>): string | null {
  const reason = str(headers["x-first-death-reason"]);
  if (reason === null) return null;
  const queue = str(headers["x-first-death-queue"]) ?? "a queue";
  return reason === "delivery_limit"
    ? `RabbitMQ dead-lettered it from ${queue}: returned more times than the queue's delivery limit (consumer crashes or requeues); replay it`
    : `RabbitMQ dead-lettered it from ${queue} (${reason})`;
}

/** How a DLQ message is shown to operators. */
export function viewDeadLetter(msg: SyncMessage, position: number): DeadLetterView {
  const headers: Record<string, unknown> = { ...(msg.headers ?? {}) };
  const h = (name: string) => str(headers[name]);
  const bytes = bodyBytes(msg.body);
  const body: Pick<DeadLetterView, "body" | "body_text" | "body_base64"> = { body: null };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = new TextDecoder("utf-8").decode(bytes);
    body.body_base64 = base64(bytes);
  }
  try {
    if (body.body_base64 !== undefined) throw new Error("not UTF-8");
    body.body = JSON.parse(text);
  } catch {
    body.body = text;
    body.body_text = text;
  }
  return {
    position,
    event_id: deadLetterEventId(msg),
    message_id: msg.messageId ?? null,
    reason: deadLetterReason(msg),
    error: h(HEADER.error) ?? brokerDeathError(headers),
    remedy: h(HEADER.remedy) ?? remedyFor(deadLetterReason(msg) ?? "", h(HEADER.channel)),
    attempts: num(headers[HEADER.attempts]),
    channel: h(HEADER.channel),
    sku: h(HEADER.sku),
    first_failure: h(HEADER.firstFailure),
    last_failure: h(HEADER.lastFailure),
    headers,
    content_type: msg.contentType ?? null,
    ...body,
  };
}

/**
 * The envelope a replay publishes: the original properties (content encoding
 * restored from the raw-body marker) and headers minus `sync-*` and broker
 * `x-death`-style headers. `expiration` and `user_id` (kept by the DLQ in
 * `sync-original-*` headers) are not restored: an expiration may have passed
 * already and a foreign user_id makes RabbitMQ refuse the publish.
 */
export function replayEnvelope(msg: SyncMessage): Envelope {
  const headers: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(msg.headers ?? {})) {
    if (!SYNC_HEADER.test(key) && !BROKER_HEADER.test(key)) headers[key] = value;
  }
  return envelopeOf(msg, headers);
}

function validateFilter(filter: ReplayFilter): (msg: SyncMessage) => boolean {
  const { all, eventIds, reason } = filter ?? {};
  if (all !== undefined && typeof all !== "boolean") {
    throw new DeadLetterValidationError('"all" must be true or absent');
  }
  if (eventIds !== undefined && (!Array.isArray(eventIds) || eventIds.length === 0)) {
    throw new DeadLetterValidationError("event ids must be a non-empty list");
  }
  if (reason !== undefined && (typeof reason !== "string" || reason === "")) {
    throw new DeadLetterValidationError("reason must be a non-empty string");
  }
  if (!all && eventIds === undefined && reason === undefined) {
    throw new DeadLetterValidationError(
      "say what to replay: all (explicitly), event ids or a reason; replaying everything must be explicit",
    );
  }
  const ids = eventIds ? new Set(eventIds) : undefined;
  return (msg) => {
    if (ids && !ids.has(deadLetterEventId(msg) ?? "")) return false;
    if (reason !== undefined && deadLetterReason(msg) !== reason) return false;
    return true;
  };
}

/**
 * The copy of a quorum DLQ message that takes its place at the tail: the same
 * bytes, properties and headers, minus what the queue sets per delivery. A
 * reason RabbitMQ gave (`x-first-death-reason`) is kept as `sync-reason` and
 * `sync-error`: RabbitMQ ≥ 3.13 does not keep `x-death` headers a client
 * publishes. `expiration` and `user_id` move into headers, as on the way in.
 */
export function rotationEnvelope(msg: SyncMessage): Envelope {
  const headers: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(msg.headers ?? {})) {
    if (!DELIVERY_HEADER.test(key)) headers[key] = value;
  }
  if (headers[HEADER.reason] === undefined) {
    const reason = deadLetterReason(msg);
    const error = brokerDeathError(headers);
    if (reason !== null) headers[HEADER.reason] = reason;
    if (error !== null && headers[HEADER.error] === undefined) headers[HEADER.error] = error;
  }
  if (msg.expiration !== undefined) headers[HEADER.originalExpiration] ??= msg.expiration;
  if (msg.userId !== undefined) headers[HEADER.originalUserId] ??= msg.userId;
  return envelopeOf(msg, headers);
}

/**
 * Requeues every unacked delivery up to `tag` with one nack; RabbitMQ puts them
 * back at their original positions. A closed channel already requeued them.
 */
function requeueUpTo(ch: Channel, tag: number): void {
  try {
    ch.basicNack({ deliveryTag: tag, multiple: true, requeue: true });
  } catch { /* channel gone: the broker requeued everything unacked */ }
}

/** Messages a quorum DLQ listing takes before it copies them (see `list`). */
const ROTATION_WINDOW = 64;

/** DLQ inspection and replay for one service's topology. */
export class DeadLetterAdmin {
  constructor(private readonly deps: DeadLetterAdminDeps) {
    // Bodies must stay the exact bytes that were published (idempotent, process-wide).
    keepRawBodies();
  }

  /**
   * Runs `fn` on a dedicated channel and closes it. Once the close is
   * confirmed the channel has handed every ack and requeue to the queue, so a
   * later `basic.get` sees the messages back in place (closing also requeues
   * anything still unacked, in order).
   */
  async #onChannel<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
    const ch = await this.deps.connection.acquire({ emitErrorsFromChannel: true });
    let channelError: Error | undefined;
    ch.on("error", (error: Error) => {
      channelError ??= error;
      log.error("DLQ channel error: {error}", { mark: "error", error: error.message });
    });
    let result: T;
    try {
      result = await fn(ch);
    } finally {
      await ch.close().catch(() => {});
    }
    if (channelError) throw channelError;
    return result;
  }

  /**
   * Best effort: waits (at most 2 s) until the queue's reported depth shows the
   * requeued messages again. RabbitMQ answers a depth query ahead of pending
   * requeues, so without this a `/status` read right after a listing could show
   * a DLQ that looks shorter than it is. Never fails.
   */
  async #settle(expected: number): Promise<void> {
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline) {
      const depth = await this.deps.connection
        .queueDeclare({ queue: this.deps.topology.deadLetterQueue, passive: true })
        .then((ok) => ok.messageCount, () => Infinity);
      if (depth >= expected) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** True when peeking must rotate (quorum: a requeue counts towards the delivery limit). */
  get #rotates(): boolean {
    return this.deps.topology.queueType === "quorum";
  }

  /**
   * Replaces a window of quorum DLQ messages (taken in order) by their copies
   * at the tail: each copy is confirmed before its original is acked, so a
   * crash in between leaves a duplicate (harmless: replay is idempotent by
   * event id), never a loss. Copies are published one by one (concurrent
   * sends on a publisher still setting up its channel can overtake each
   * other), then one multiple ack (an ack frame between publishes stalls each
   * on TCP's delayed ACK, ~40 ms). On a failure the confirmed ones are acked
   * and the rest are left to the channel's close, which requeues them.
   */
  async #rotateAll(ch: Channel, msgs: SyncMessage[]): Promise<void> {
    const queue = this.deps.topology.deadLetterQueue;
    let confirmed = 0;
    try {
      for (const msg of msgs) {
        await this.deps.publisher.toQueue(queue, rotationEnvelope(msg), bodyBytes(msg.body));
        confirmed++;
      }
    } catch (error) {
      for (const msg of msgs.slice(0, confirmed)) ch.basicAck({ deliveryTag: msg.deliveryTag });
      const msg = msgs[confirmed];
      throw new Error(
        `keeping ${deadLetterEventId(msg) ?? "a message"} in ${queue} failed: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (msgs.length > 0) ch.basicAck({ deliveryTag: msgs[msgs.length - 1].deliveryTag, multiple: true });
  }

  /**
   * Peeks at up to `limit` messages from the head of the DLQ; they stay in the
   * DLQ, in order. `total` is the DLQ depth before listing, as the first
   * `basic.get` reports it (a passive declare may be answered ahead of requeues
   * still in flight; a `basic.get` never is). A quorum DLQ is rotated whole
   * (see the module comment), so listing it costs one confirmed publish per
   * message in it, whatever the limit.
   */
  async list(limit: number): Promise<{ total: number; messages: DeadLetterView[] }> {
    if (!Number.isFinite(limit) || limit < 0) {
      throw new DeadLetterValidationError("limit must be a number ≥ 0");
    }
    const wanted = Math.min(Math.floor(limit), MAX_LIST_LIMIT);
    const queue = this.deps.topology.deadLetterQueue;
    const rotates = this.#rotates;
    return await exclusive(queue, async () => {
      const messages: DeadLetterView[] = [];
      let total = 0;
      if (rotates && wanted === 0) {
        // Nothing to show: count without touching (no requeues are ever in flight here).
        const ok = await this.deps.connection.queueDeclare({ queue, passive: true });
        return { total: ok.messageCount, messages };
      }
      await this.#onChannel(async (ch) => {
        let lastTag: number | undefined;
        let scanned = 0;
        // Taken a window at a time, then copied and acked together (see #rotateAll).
        const window: SyncMessage[] = [];
        const rotateWindow = () => this.#rotateAll(ch, window.splice(0));
        try {
          for (;;) {
            const msg = await ch.basicGet({ queue, noAck: false });
            if (!msg) break;
            if (scanned === 0) total = msg.messageCount + 1;
            scanned++;
            if (messages.length < wanted) messages.push(viewDeadLetter(msg, messages.length));
            if (rotates) {
              window.push(msg);
              if (window.length >= ROTATION_WINDOW) await rotateWindow();
              // Every message that was there goes round once: the order is kept.
              if (scanned >= total) break;
            } else {
              lastTag = msg.deliveryTag;
              if (messages.length >= Math.min(wanted, total) || wanted === 0) break;
            }
          }
          await rotateWindow();
        } finally {
          // (A failure before a window was copied leaves it unacked: closing the channel requeues it.)
          // One requeueing nack for all: RabbitMQ puts them back where they were.
          if (lastTag !== undefined) requeueUpTo(ch, lastTag);
        }
      });
      if (total > 0) await this.#settle(total);
      return { total, messages };
    });
  }

  /** Moves matching messages back to the work queue (publisher confirms before each ack); others stay, in order. */
  async replay(filter: ReplayFilter): Promise<ReplayResult> {
    const matches = validateFilter(filter);
    const { topology, publisher } = this.deps;
    const queue = topology.deadLetterQueue;
    return await exclusive(queue, async () => {
      const result: ReplayResult = { moved: 0, kept: 0, scanned: 0, moved_event_ids: [] };
      // A work queue deleted by hand would swallow the replays (the default exchange drops
      // them; `mandatory` should catch that, but check before touching anything).
      await this.deps.connection.queueDeclare({ queue: topology.queue, passive: true }).catch(
        (error: Error) => {
          throw new DeadLetterReplayError(
            `replay not started: the work queue ${topology.queue} is not there (${error.message}); nothing was moved`,
            0,
            [],
            { cause: error },
          );
        },
      );
      // Only what is there at the start (as the first basic.get counts it):
      // messages dead-lettered again during the replay are not rescanned.
      let depth = 0;
      try {
        await this.#onChannel(async (ch) => {
          // The newest delivery not acked: a multiple nack up to it requeues every kept one.
          let lastKeptTag: number | undefined;
          // Quorum: every delivery is either moved or copied to the tail, both confirmed, so acks
          // can wait and go as one multiple ack per window (an ack frame before each basic.get
          // stalls it on TCP's delayed ACK, ~40 ms). Classic: kept ones stay unacked, ack one by one.
          const rotates = this.#rotates;
          let ackUpTo: number | undefined;
          let pendingAcks = 0;
          const flushAcks = () => {
            if (ackUpTo === undefined) return;
            ch.basicAck({ deliveryTag: ackUpTo, multiple: true });
            ackUpTo = undefined;
            pendingAcks = 0;
          };
          const done = (tag: number) => {
            if (!rotates) return ch.basicAck({ deliveryTag: tag });
            ackUpTo = tag;
            if (++pendingAcks >= ROTATION_WINDOW) flushAcks();
          };
          try {
            for (;;) {
              const msg = await ch.basicGet({ queue, noAck: false });
              if (!msg) break;
              if (result.scanned === 0) depth = msg.messageCount + 1;
              result.scanned++;
              if (!matches(msg)) {
                if (rotates) {
                  // To the tail: after `depth` messages the kept ones are back in their order.
                  try {
                    await publisher.toQueue(queue, rotationEnvelope(msg), bodyBytes(msg.body));
                  } catch (error) {
                    flushAcks();
                    lastKeptTag = msg.deliveryTag;
                    const message = `replay stopped after moving ${result.moved} message(s): keeping ${
                      deadLetterEventId(msg) ?? "a message"
                    } in ${queue} failed: ${(error as Error).message}; the rest stays in the DLQ`;
                    log.error(message, { mark: "error", moved: result.moved });
                    throw new DeadLetterReplayError(message, result.moved, result.moved_event_ids, {
                      cause: error,
                    });
                  }
                  done(msg.deliveryTag);
                } else {
                  lastKeptTag = msg.deliveryTag;
                }
                result.kept++;
              } else {
                const eventId = deadLetterEventId(msg);
                try {
                  await publisher.toQueue(topology.queue, replayEnvelope(msg), bodyBytes(msg.body));
                } catch (error) {
                  // Everything not acked yet (this message included) goes back, in order.
                  flushAcks();
                  lastKeptTag = msg.deliveryTag;
                  const message = `replay stopped after moving ${result.moved} message(s): publishing ${
                    eventId ?? "a message"
                  } to ${topology.queue} failed: ${(error as Error).message}; the rest stays in the DLQ`;
                  log.error(message, { mark: "error", moved: result.moved, event_id: eventId });
                  throw new DeadLetterReplayError(message, result.moved, result.moved_event_ids, {
                    cause: error,
                  });
                }
                // Confirmed in the work queue: now the DLQ copy can go.
                done(msg.deliveryTag);
                result.moved++;
                if (eventId !== null) result.moved_event_ids.push(eventId);
              }
              if (result.scanned >= depth) break;
            }
          } finally {
            flushAcks();
            if (lastKeptTag !== undefined) requeueUpTo(ch, lastKeptTag);
          }
        });
      } finally {
        if (depth > result.moved) await this.#settle(depth - result.moved);
      }
      log.info("replayed {moved} of {scanned} DLQ message(s) into {queue}", {
        mark: "done",
        moved: result.moved,
        scanned: result.scanned,
        kept: result.kept,
        queue: topology.queue,
      });
      return result;
    });
  }
}
