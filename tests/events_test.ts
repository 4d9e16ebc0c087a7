/** The event contract (docs/DESIGN.md §3): identity rule, summing, rejection reasons. */
import assert from "node:assert/strict";
import { canonicalJson, decodeSaleEvent, eventIdentity } from "../src/model/sale_event.ts";
import { sale } from "./helpers.ts";

const LIMITS = { maxBytes: 4096, maxItems: 5, maxQuantity: 1000 };
const decode = (body: unknown, props = {}) =>
  decodeSaleEvent(
    new TextEncoder().encode(typeof body === "string" ? body : JSON.stringify(body)),
    props,
    LIMITS,
  );

Deno.test("identity prefers AMQP message_id, then event_id, then venta_id, then a body hash", () => {
  assert.deepEqual(eventIdentity("m-1", { event_id: "e", venta_id: "v" }), {
    eventId: "m-1",
    source: "message_id",
  });
  assert.deepEqual(eventIdentity(undefined, { event_id: "e", venta_id: "v" }), {
    eventId: "e",
    source: "event_id",
  });
  assert.deepEqual(eventIdentity("  ", { venta_id: 42 }), { eventId: "42", source: "venta_id" });
  const a = eventIdentity(undefined, { b: 1, a: [1, { y: 2, x: 1 }] });
  const b = eventIdentity(undefined, { a: [1, { x: 1, y: 2 }], b: 1 });
  assert.equal(a.source, "body_hash");
  assert.equal(a.eventId, b.eventId, "key order does not change the hash");
  assert.notEqual(a.eventId, eventIdentity(undefined, { b: 2, a: [1, { y: 2, x: 1 }] }).eventId);
  assert.equal(canonicalJson({ b: 1, a: { d: null, c: "x" } }), '{"a":{"c":"x","d":null},"b":1}');
});

Deno.test("duplicate SKUs are summed; unknown fields are kept", () => {
  const result = decode(sale({
    extra_field: { nested: true },
    items: [
      { producto_id: "p1", producto_sku: "A", cantidad: 2, color: "rojo" },
      { producto_id: "p2", producto_sku: "B", cantidad: 1 },
      { producto_sku: "A", cantidad: 3 },
    ],
  }));
  assert.ok(result.ok);
  assert.deepEqual(result.event.items, [
    { sku: "A", productoId: "p1", quantity: 5 },
    { sku: "B", productoId: "p2", quantity: 1 },
  ]);
  const body = JSON.parse(result.event.body);
  assert.deepEqual(body.extra_field, { nested: true });
  assert.equal(body.items[0].color, "rojo");
});

Deno.test("a SKU repeated under two producto_ids is still applied by SKU (summed) and reported", () => {
  const result = decode(sale({
    items: [
      { producto_id: "p1", producto_sku: "A", cantidad: 2 },
      { producto_id: "p2", producto_sku: "A", cantidad: 3 },
      { producto_sku: "A", cantidad: 1 },
      { producto_id: "p3", producto_sku: "B", cantidad: 1 },
      { producto_id: "p3", producto_sku: "B", cantidad: 1 },
    ],
  }));
  assert.ok(result.ok, JSON.stringify(result));
  assert.deepEqual(result.event.items, [
    { sku: "A", productoId: "p1", quantity: 6 },
    { sku: "B", productoId: "p3", quantity: 2 },
  ]);
  assert.deepEqual(result.event.productConflicts, [{ sku: "A", productoIds: ["p1", "p2"] }]);
});

Deno.test("optional descriptive fields may be null or absent", () => {
  const result = decode({
    tienda_id: "t",
    items: [{ producto_sku: "A", cantidad: 1, precio_unitario: null, producto_id: null }],
  });
  assert.ok(result.ok, JSON.stringify(result));
  assert.equal(result.event.items[0].productoId, null);
});

Deno.test("timestamps with offset or local time are accepted", () => {
  for (const timestamp of ["2024-01-15T10:30:45Z", "2024-01-15T10:30:45.123-03:00", "2024-01-15T10:30:45"]) {
    assert.ok(decode(sale({ timestamp })).ok, timestamp);
  }
});

const REJECTIONS: [string, unknown, string, string?][] = [
  [
    "summed quantity over the limit",
    sale({ items: [{ producto_sku: "A", cantidad: 600 }, { producto_sku: "A", cantidad: 600 }] }),
    "invalid_event",
    "items[1].cantidad",
  ],
  [
    "too many items",
    sale({ items: Array.from({ length: 6 }, (_, i) => ({ producto_sku: `S${i}`, cantidad: 1 })) }),
    "invalid_event",
    "items",
  ],
  [
    "lone surrogate",
    `{"tienda_id":"t\\ud800","items":[{"producto_sku":"A","cantidad":1}]}`,
    "invalid_event",
    "tienda_id",
  ],
  [
    "NUL in a key",
    `{"tienda_id":"t","a\\u0000":1,"items":[{"producto_sku":"A","cantidad":1}]}`,
    "invalid_event",
  ],
  [
    "NaN-like quantity",
    `{"tienda_id":"t","items":[{"producto_sku":"A","cantidad":"NaN"}]}`,
    "invalid_event",
    "items[0].cantidad",
  ],
  [
    "boolean quantity",
    sale({ items: [{ producto_sku: "A", cantidad: true }] }),
    "invalid_event",
    "items[0].cantidad",
  ],
  ["item is not an object", sale({ items: ["A"] }), "invalid_event", "items[0]"],
  ["empty tienda_id", sale({ tienda_id: "  " }), "invalid_event", "tienda_id"],
  ["event_id of the wrong type", sale({ event_id: { id: 1 } }), "invalid_event", "event_id"],
  ["a number body", "42", "invalid_event"],
  ["trailing garbage", '{"tienda_id":"t"} x', "invalid_json"],
];

for (const [name, body, reason, field] of REJECTIONS) {
  Deno.test(`rejects ${name} as ${reason}`, () => {
    const result = decode(body);
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.rejection.reason, reason);
    assert.ok(result.rejection.message.length > 10, result.rejection.message);
    if (field) assert.equal(result.rejection.field, field);
  });
}

Deno.test("size is checked on the raw bytes before parsing", () => {
  const result = decodeSaleEvent(new Uint8Array(LIMITS.maxBytes + 1), {}, LIMITS);
  assert.deepEqual(result, {
    ok: false,
    rejection: {
      reason: "too_large",
      message: `body is ${LIMITS.maxBytes + 1} bytes; the limit is ${LIMITS.maxBytes}`,
    },
  });
});
