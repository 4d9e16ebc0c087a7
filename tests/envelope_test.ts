/** The envelopes we publish: the same failure headers on a failed change's DLQ copy and on a republished delivery. */
import assert from "node:assert/strict";
import type { AsyncMessage } from "rabbitmq-client";
import { deadLetterFailure, failedChangeEnvelope, republishEnvelope } from "../src/broker/envelope.ts";
import { remedyFor } from "../src/broker/remedies.ts";
import type { FailedChange } from "../src/model/batch.ts";

const NOW = new Date("2024-01-15T10:30:45.000Z");

Deno.test("a failed change's DLQ copy: JSON, its event id as message id, and every failure header", () => {
  const failed: FailedChange = {
    eventId: "evt-1",
    channel: "mercadolibre",
    sku: "SKU-1",
    tiendaId: "T1",
    reason: "outcome_unknown",
    error: "x".repeat(1_500),
    attempts: 4,
    body: { venta_id: 1 },
  };
  assert.deepEqual(failedChangeEnvelope(failed, NOW), {
    contentType: "application/json",
    durable: true,
    messageId: "evt-1",
    headers: {
      "sync-attempts": 4,
      "sync-reason": "outcome_unknown",
      "sync-error": "x".repeat(1_000),
      "sync-first-failure": NOW.toISOString(),
      "sync-last-failure": NOW.toISOString(),
      "sync-remedy": remedyFor("outcome_unknown", "mercadolibre"),
      "sync-event-id": "evt-1",
      "sync-channel": "mercadolibre",
      "sync-sku": "SKU-1",
    },
  });
  assert.notEqual(remedyFor("outcome_unknown", "mercadolibre"), remedyFor("outcome_unknown"));
});

Deno.test("a republished delivery keeps its first failure and origin, and moves expiration and user id into headers", () => {
  const msg = {
    body: new Uint8Array(),
    headers: { "x-origin": "pos-7", "x-death": [], "sync-first-failure": "earlier", "sync-attempts": 1 },
    exchange: "pos.sales",
    routingKey: "venta.creada",
    contentType: "application/json",
    messageId: "m-1",
    expiration: "60000",
    userId: "pos",
  } as unknown as AsyncMessage;
  const envelope = republishEnvelope(
    msg,
    deadLetterFailure({ reason: "invalid_json", error: "bad", attempts: 2, field: "f".repeat(300) }),
    NOW,
  );
  assert.deepEqual(envelope, {
    durable: true,
    contentType: "application/json",
    messageId: "m-1",
    headers: {
      "x-origin": "pos-7",
      "sync-first-failure": "earlier",
      "sync-attempts": 2,
      "sync-reason": "invalid_json",
      "sync-error": "bad",
      "sync-last-failure": NOW.toISOString(),
      "sync-field": "f".repeat(200),
      "sync-remedy": remedyFor("invalid_json"),
      "sync-original-exchange": "pos.sales",
      "sync-original-routing-key": "venta.creada",
      "sync-original-expiration": "60000",
      "sync-original-user-id": "pos",
    },
  });
});
