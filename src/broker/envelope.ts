/**
 * Envelopes for republishing a delivery (retry tier or DLQ) with its body and
 * properties intact, plus our own `sync-*` headers.
 */
import type { AsyncMessage, Envelope } from "rabbitmq-client";
import { originalContentEncoding } from "./raw_body.ts";

/** Our headers. Not `x-` headers: RabbitMQ ≥ 3.13 ignores client-set x-death. */
export const HEADER = {
  attempts: "sync-attempts",
  reason: "sync-reason",
  error: "sync-error",
  /** What to fix before a replay can succeed (or that the POS must republish): src/broker/remedies.ts. */
  remedy: "sync-remedy",
  field: "sync-field",
  firstFailure: "sync-first-failure",
  lastFailure: "sync-last-failure",
  eventId: "sync-event-id",
  channel: "sync-channel",
  sku: "sync-sku",
  originalExchange: "sync-original-exchange",
  originalRoutingKey: "sync-original-routing-key",
  originalExpiration: "sync-original-expiration",
  originalUserId: "sync-original-user-id",
} as const;

const BROKER_HEADERS = /^(x-death|x-first-death-.*|x-last-death-.*|x-delivery-count|sync-publish-id)$/;

/** What went wrong, for the DLQ headers. */
export interface FailureInfo {
  reason: string;
  error: string;
  attempts: number;
  field?: string;
  /** Set on the way to the DLQ (not to a wait queue): see {@link HEADER}.remedy. */
  remedy?: string;
  eventId?: string;
  channel?: string;
  sku?: string;
}

/** How many times this delivery has already failed (our own counter). */
export function attemptsSoFar(msg: Pick<AsyncMessage, "headers">): number {
  const value = Number(msg.headers?.[HEADER.attempts] ?? 0);
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

/**
 * Copies a delivery's properties for republishing, adding failure headers.
 * `expiration` and `user_id` move into headers: an expiration would let the
 * broker drop the message from the DLQ, and a user_id that is not ours makes
 * RabbitMQ refuse the publish.
 */
export function republishEnvelope(msg: AsyncMessage, failure: FailureInfo, now = new Date()): Envelope {
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(msg.headers ?? {})) {
    if (!BROKER_HEADERS.test(key)) kept[key] = value;
  }
  const headers: Record<string, unknown> = {
    ...kept,
    [HEADER.attempts]: failure.attempts,
    [HEADER.reason]: failure.reason,
    [HEADER.error]: failure.error.slice(0, 1000),
    [HEADER.firstFailure]: kept[HEADER.firstFailure] ?? now.toISOString(),
    [HEADER.lastFailure]: now.toISOString(),
    [HEADER.originalExchange]: kept[HEADER.originalExchange] ?? msg.exchange,
    [HEADER.originalRoutingKey]: kept[HEADER.originalRoutingKey] ?? msg.routingKey,
  };
  const optional: Record<string, string | undefined> = {
    // A field path can be as long as a JSON key; unbounded, it no longer fits an AMQP frame.
    [HEADER.field]: failure.field?.slice(0, 200),
    [HEADER.remedy]: failure.remedy,
    [HEADER.eventId]: failure.eventId,
    [HEADER.channel]: failure.channel,
    [HEADER.sku]: failure.sku,
    [HEADER.originalExpiration]: msg.expiration,
    [HEADER.originalUserId]: msg.userId,
  };
  for (const [key, value] of Object.entries(optional)) if (value !== undefined) headers[key] = value;
  return {
    contentType: msg.contentType,
    contentEncoding: originalContentEncoding(msg.contentEncoding),
    headers,
    durable: true,
    priority: msg.priority,
    correlationId: msg.correlationId,
    replyTo: msg.replyTo,
    messageId: msg.messageId,
    timestamp: msg.timestamp,
    type: msg.type,
    appId: msg.appId,
  };
}

/** The body as bytes, whatever shape the client library handed over. */
export function bodyBytes(body: unknown): Uint8Array {
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return new TextEncoder().encode(body);
  if (body === undefined || body === null) return new Uint8Array();
  return new TextEncoder().encode(JSON.stringify(body));
}
