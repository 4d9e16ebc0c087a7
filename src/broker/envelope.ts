/**
 * Envelopes for what we publish besides the POS's sales: a delivery republished
 * (retry tier, DLQ, replay, a DLQ copy kept in place) with its body and
 * properties intact, and the DLQ copy of a sale whose change failed for good.
 * The headers that describe a failure (`sync-reason`, `sync-error`, `sync-remedy`, …)
 * are built by one function, {@link failureHeaders}, for all of them.
 */
import type { AsyncMessage, Envelope, HeaderFields } from "rabbitmq-client";
import type { FailedChange } from "../model/batch.ts";
import { originalContentEncoding } from "./raw_body.ts";
import { remedyFor } from "./remedies.ts";

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

/** The failure as it goes to the DLQ: with what to fix before a replay can succeed. */
export function deadLetterFailure(failure: FailureInfo): FailureInfo {
  return { ...failure, remedy: remedyFor(failure.reason, failure.channel) };
}

/**
 * Our `sync-*` headers for a failure, in whole: the same words on every wait-queue and
 * DLQ copy. `firstFailure` carries over from an earlier failure of the same delivery.
 */
function failureHeaders(
  failure: FailureInfo,
  now = new Date(),
  firstFailure?: unknown,
): Record<string, unknown> {
  const headers: Record<string, unknown> = {
    [HEADER.attempts]: failure.attempts,
    [HEADER.reason]: failure.reason,
    [HEADER.error]: failure.error.slice(0, 1000),
    [HEADER.firstFailure]: firstFailure ?? now.toISOString(),
    [HEADER.lastFailure]: now.toISOString(),
  };
  const optional: Record<string, string | undefined> = {
    // A field path can be as long as a JSON key; unbounded, it no longer fits an AMQP frame.
    [HEADER.field]: failure.field?.slice(0, 200),
    [HEADER.remedy]: failure.remedy,
    [HEADER.eventId]: failure.eventId,
    [HEADER.channel]: failure.channel,
    [HEADER.sku]: failure.sku,
  };
  for (const [key, value] of Object.entries(optional)) if (value !== undefined) headers[key] = value;
  return headers;
}

/**
 * The DLQ copy of the sale behind a change that failed for good on a channel: the
 * sale as JSON, its event id as message id, and the failure headers with the remedy.
 */
export function failedChangeEnvelope(failed: FailedChange, now = new Date()): Envelope {
  const failure = deadLetterFailure({
    reason: failed.reason,
    error: failed.error,
    attempts: failed.attempts,
    eventId: failed.eventId,
    channel: failed.channel,
    sku: failed.sku,
  });
  return {
    contentType: "application/json",
    durable: true,
    messageId: failed.eventId,
    headers: failureHeaders(failure, now),
  };
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
    ...failureHeaders(failure, now, kept[HEADER.firstFailure]),
    [HEADER.originalExchange]: kept[HEADER.originalExchange] ?? msg.exchange,
    [HEADER.originalRoutingKey]: kept[HEADER.originalRoutingKey] ?? msg.routingKey,
  };
  if (msg.expiration !== undefined) headers[HEADER.originalExpiration] = msg.expiration;
  if (msg.userId !== undefined) headers[HEADER.originalUserId] = msg.userId;
  return envelopeOf(msg, headers);
}

/**
 * A durable envelope with `headers` and the message's own properties (content
 * encoding restored from the raw-body marker); absent properties stay absent.
 * `expiration` and `user_id` are never copied (see {@link republishEnvelope}).
 */
export function envelopeOf(msg: HeaderFields, headers: Record<string, unknown>): Envelope {
  const envelope: Envelope = { durable: true, headers };
  const props = {
    contentType: msg.contentType,
    contentEncoding: originalContentEncoding(msg.contentEncoding),
    messageId: msg.messageId,
    correlationId: msg.correlationId,
    replyTo: msg.replyTo,
    timestamp: msg.timestamp,
    type: msg.type,
    appId: msg.appId,
    priority: msg.priority,
  };
  for (const [key, value] of Object.entries(props)) {
    if (value !== undefined) (envelope as Record<string, unknown>)[key] = value;
  }
  return envelope;
}

/** The body as bytes, whatever shape the client library handed over. */
export function bodyBytes(body: unknown): Uint8Array {
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return new TextEncoder().encode(body);
  if (body === undefined || body === null) return new Uint8Array();
  return new TextEncoder().encode(JSON.stringify(body));
}
