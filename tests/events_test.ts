/** The event contract (docs/DESIGN.md §3): identity rule, summing, rejection reasons. */
import assert from "node:assert/strict";
import { canonicalJson, decodeSaleEvent, eventIdentity } from "../src/model/sale_event.ts";
import { randomInt, seededRandom } from "../src/sandbox/prng.ts";
import { sale, SALE_ITEM_FIELDS } from "./helpers.ts";

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

Deno.test("what Postgres cannot store is refused however it is written, and only that", () => {
  // A sale with `extra` spliced in as JSON text, so escapes and nesting are exactly as the POS wrote them.
  const withExtra = (json: string) =>
    `{"event_id":"e","tienda_id":"t","items":[{"producto_sku":"A","cantidad":1}],"extra":${json}}`;
  const nested = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
  const refused = (json: string) => {
    const result = decode(withExtra(json));
    return result.ok ? null : result.rejection.message;
  };
  // The body is level 0 and `extra` level 1: 32 arrays reach level 32, the deepest allowed.
  assert.equal(refused(nested(32)), null);
  assert.match(refused(nested(33)) ?? "", /nested deeper than 32 levels/);
  assert.match(refused(`{"k":${nested(32)}}`) ?? "", /nested deeper/);
  assert.match(refused('"a\\u0000b"') ?? "", /NUL/);
  assert.match(refused('{"a\\u0000":1}') ?? "", /NUL/);
  assert.match(refused('["ok","\\udc00"]') ?? "", /unpaired UTF-16 surrogate/);
  assert.equal(refused('"\\ud83d\\ude00 \\u00e9"'), null, "a surrogate pair and an accent are fine");
  assert.equal(refused('"C:\\\\u0000"'), null, "an escaped backslash before u0000 is text, not a NUL");
  assert.equal(refused(`"${"[".repeat(40)}"`), null, "brackets in a string are not nesting");
});

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

Deno.test("the hand check of the usual sale never accepts what the schema refuses, nor decodes it otherwise", () => {
  // Decoding checks the usual sale by hand and leaves everything else to the zod schema. On bodies
  // one field away from valid, or several, both paths must give the same result: the same event, or
  // the same refusal with the same reason.
  const random = seededRandom(15);
  const pick = <T>(values: readonly T[]): T => values[randomInt(random, 0, values.length - 1)];
  const x = (n: number) => "x".repeat(n);
  const edges: unknown[] = [
    undefined,
    null,
    true,
    {},
    [],
    "",
    " ",
    "  x  ",
    "x",
    x(100),
    x(101),
    x(200),
    x(201),
    ` ${x(199)} `,
    x(255),
    x(256),
    ` ${x(254)} `,
    x(1000),
    x(1001),
    "mercadolibre",
    " Shopify ",
    "tienda-nube",
    "2026-12-05T10:00:00Z",
    "2026-12-05T10:00:00.123-03:00",
    "2026-12-05T10:00:00",
    "2026-13-05T10:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-12-05",
    0,
    1,
    -1,
    1.5,
    7,
    1000,
    1001,
    2 ** 53,
    2 ** 53 - 1,
    1e308,
  ];
  const topFields = [
    "event_id",
    "venta_id",
    "tienda_id",
    "total",
    "metodo_pago",
    "timestamp",
    "origen",
    "origen_order_id",
  ];
  const itemFields = [...SALE_ITEM_FIELDS];
  const limits = { maxBytes: 65_536, maxItems: 3, maxQuantity: 1000 };
  const mutate = (target: Record<string, unknown>, fields: string[], chance: number) => {
    for (const field of fields) {
      if (random() >= chance) continue;
      const value = pick(edges);
      if (value === undefined) delete target[field];
      else target[field] = value;
    }
  };
  let accepted = 0;
  for (let i = 0; i < 4000; i++) {
    const body = sale({ event_id: `sale-${i}` });
    const chance = pick([0.02, 0.05, 0.15, 0.4]);
    mutate(body, topFields, chance);
    const lines = Array.from({ length: pick([0, 1, 1, 2, 3, 4]) }, () => {
      const line = { ...(sale().items as Record<string, unknown>[])[0] };
      mutate(line, itemFields, chance);
      return random() < 0.03 ? pick(edges) : line;
    });
    if (random() < 0.97) body.items = lines;
    else body.items = pick(edges);
    if (random() < 0.1) body.extra = { nested: pick(edges) };
    const raw = new TextEncoder().encode(JSON.stringify(body));
    const props = random() < 0.3 ? { messageId: pick(["m-1", " m-2 ", "", "  "]) } : {};
    const usual = decodeSaleEvent(raw, props, limits);
    const schema = decodeSaleEvent(raw, props, limits, { schemaOnly: true });
    assert.deepEqual(usual, schema, JSON.stringify(body).slice(0, 500));
    if (usual.ok) accepted++;
  }
  // Both kinds are well represented: the comparison covers acceptance as well as refusal.
  assert.ok(accepted > 500 && accepted < 3500, `${accepted} of 4000 accepted`);
});
