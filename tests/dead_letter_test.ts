/**
 * Bad input never crashes the service and never disappears: each malformed
 * message lands in the DLQ with a machine-readable reason, its body
 * byte-for-byte intact and its properties kept, and valid events keep flowing.
 */
import assert from "node:assert/strict";
import { GENERIC_REMEDY, remedyFor } from "../src/broker/remedies.ts";
import { header, integration, sale, startHarness, waitFor } from "./helpers.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const item = (overrides: Record<string, unknown> = {}) => ({
  producto_id: "p1",
  producto_sku: "SKU-1",
  cantidad: 1,
  ...overrides,
});
const ev = (overrides: Record<string, unknown>) => JSON.stringify(sale(overrides));

/** [name, body bytes, expected reason, extra publish properties] */
const MALFORMED: [string, Uint8Array, string, Record<string, unknown>?][] = [
  ["not JSON", enc("this is not json"), "invalid_json"],
  ["truncated JSON", enc('{"tienda_id": "t", "items": [{'), "invalid_json"],
  ["empty body", enc(""), "invalid_json"],
  ["non-UTF-8 bytes", new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), "invalid_encoding"],
  ["gzip content_encoding", enc(ev({})), "invalid_encoding", { contentEncoding: "gzip" }],
  ["JSON array", enc("[1,2,3]"), "invalid_event"],
  ["JSON string", enc('"sale"'), "invalid_event"],
  ["JSON null", enc("null"), "invalid_event"],
  ["missing tienda_id", enc(ev({ tienda_id: undefined })), "invalid_event"],
  ["tienda_id wrong type", enc(ev({ tienda_id: 42 })), "invalid_event"],
  ["missing items", enc(ev({ items: undefined })), "invalid_event"],
  ["items not an array", enc(ev({ items: { producto_sku: "A" } })), "invalid_event"],
  ["empty items", enc(ev({ items: [] })), "invalid_event"],
  ["item without SKU", enc(ev({ items: [item({ producto_sku: undefined })] })), "invalid_event"],
  ["blank SKU", enc(ev({ items: [item({ producto_sku: "   " })] })), "invalid_event"],
  ["SKU wrong type", enc(ev({ items: [item({ producto_sku: 123 })] })), "invalid_event"],
  ["cantidad 0", enc(ev({ items: [item({ cantidad: 0 })] })), "invalid_event"],
  ["cantidad -1", enc(ev({ items: [item({ cantidad: -1 })] })), "invalid_event"],
  ["cantidad 1.5", enc(ev({ items: [item({ cantidad: 1.5 })] })), "invalid_event"],
  ["cantidad 1e12", enc(ev({ items: [item({ cantidad: 1e12 })] })), "invalid_event"],
  ["cantidad as string", enc(ev({ items: [item({ cantidad: "2" })] })), "invalid_event"],
  ["total wrong type", enc(ev({ total: "mucho" })), "invalid_event"],
  ["bad timestamp", enc(ev({ timestamp: "ayer a la tarde" })), "invalid_event"],
  ["NUL inside a string", enc(ev({ metodo_pago: "EFE\u0000CTIVO" })), "invalid_event"],
  ["deep nesting", enc(ev({ extra: JSON.parse("[".repeat(40) + "]".repeat(40)) })), "invalid_event"],
  ["oversized body", enc(ev({ padding: "x".repeat(300 * 1024) })), "too_large"],
  [
    "too many items",
    enc(ev({ items: Array.from({ length: 1001 }, (_, i) => item({ producto_sku: `S${i}` })) })),
    "invalid_event",
  ],
];

integration(
  `${MALFORMED.length} kinds of malformed input each land in the DLQ with a reason; the service lives on`,
  async () => {
    const h = await startHarness();
    try {
      for (const [name, body, , props] of MALFORMED) {
        await h.publish(body, {
          messageId: `bad:${name}`,
          headers: { "x-origin": "pos-7" },
          correlationId: "corr-1",
          ...props,
        });
      }
      const good = sale();
      await h.publish(good, { messageId: "good-after-bad" });
      await waitFor(
        async () => (await h.sql`select 1 from sale where event_id = 'good-after-bad'`).length === 1,
        "valid event stored",
      );
      const dead = await waitFor(async () => {
        const got = await h.takeDeadLetters();
        return got.length > 0 ? got : undefined;
      }, "dead letters");
      // Drain any stragglers.
      await new Promise((r) => setTimeout(r, 300));
      dead.push(...await h.takeDeadLetters());
      assert.equal(dead.length, MALFORMED.length, "every malformed message is in the DLQ, none lost");
      const byId = new Map(dead.map((m) => [m.messageId, m]));
      for (const [name, body, reason, props] of MALFORMED) {
        const msg = byId.get(`bad:${name}`);
        assert.ok(msg, `${name}: in the DLQ`);
        assert.equal(header(msg, "sync-reason"), reason, `${name}: reason`);
        assert.ok((header(msg, "sync-error") ?? "").length > 5, `${name}: has a human message`);
        // What to fix before a replay can succeed; for a broken body, that a replay of it cannot.
        assert.equal(header(msg, "sync-remedy"), remedyFor(reason), `${name}: says what to fix`);
        assert.match(header(msg, "sync-remedy")!, /republish|raise/, `${name}: names the fix`);
        assert.equal(header(msg, "sync-attempts"), "1");
        assert.ok(header(msg, "sync-first-failure"));
        assert.ok(header(msg, "sync-last-failure"));
        assert.equal(header(msg, "sync-original-exchange"), h.service.topology.exchange);
        assert.equal(header(msg, "sync-original-routing-key"), "sales.created");
        assert.equal(header(msg, "x-origin"), "pos-7", `${name}: original headers kept`);
        assert.equal(msg.correlationId, "corr-1");
        assert.equal(msg.contentType, "application/json");
        assert.equal(msg.contentEncoding, props?.contentEncoding);
        const got = msg.body instanceof Uint8Array ? msg.body : new TextEncoder().encode(String(msg.body));
        assert.deepEqual(new Uint8Array(got), body, `${name}: body byte-for-byte intact`);
      }
      assert.equal(header(byId.get("bad:cantidad 1.5")!, "sync-field"), "items[0].cantidad");
      assert.equal(
        (await h.sql`select count(*)::int as n from sale`)[0].n,
        1,
        "nothing malformed was stored",
      );
      const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
      assert.match(metrics, /events_dead_lettered_total\{reason="invalid_event"\} \d+/);
      assert.match(metrics, /events_dead_lettered_total\{reason="too_large"\} 1/);
      assert.equal((await fetch(`${h.service.url}/readyz`)).status, 200);
    } finally {
      await h.close();
    }
  },
);

integration("an expiring message is dead-lettered without its expiration (so the DLQ keeps it)", async () => {
  const h = await startHarness();
  try {
    await h.publish("nope", { messageId: "exp-1", expiration: "60000" });
    const [msg] = await waitFor(async () => {
      const got = await h.takeDeadLetters();
      return got.length ? got : undefined;
    }, "dead letter");
    assert.equal(msg.expiration, undefined);
    assert.equal(header(msg, "sync-original-expiration"), "60000");
  } finally {
    await h.close();
  }
});

integration("a DLQ deleted by hand is declared again instead of looping the delivery", async () => {
  const h = await startHarness();
  try {
    await h.rabbit.queueDelete({ queue: h.service.topology.deadLetterQueue });
    await h.publish("not json", { messageId: "after-delete" });
    const [msg] = await waitFor(async () => {
      const got = await h.takeDeadLetters().catch(() => []);
      return got.length ? got : undefined;
    }, "dead letter in the re-declared DLQ");
    assert.equal(msg.messageId, "after-delete");
    assert.equal(header(msg, "sync-reason"), "invalid_json");
  } finally {
    await h.close();
  }
});

/** The reasons README's "Dead letters" tables document (first column, backticked). */
function documentedReasons(): string[] {
  const readme = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("### Dead letters"), readme.indexOf("### Dispatch"));
  const reasons = new Set<string>();
  for (const line of section.split("\n")) {
    const first = line.startsWith("| `") ? line.split("|")[1] : "";
    for (const [, name] of first.matchAll(/`([a-z0-9_]+)`/g)) reasons.add(name);
  }
  return [...reasons];
}

Deno.test("every DLQ reason says what to fix before a replay can succeed (or that none can)", () => {
  const documented = documentedReasons();
  assert.ok(documented.length >= 18, `README documents ${documented.length} reasons`);
  // Reasons the code emits that README groups under "…" or names elsewhere.
  const emitted = [
    "invalid_location",
    "item_not_stocked_at_location",
    "non_mutable_inventory_item",
    "meli_rejected",
  ];
  for (const reason of [...documented, ...emitted]) {
    const remedy = remedyFor(reason);
    assert.notEqual(remedy, GENERIC_REMEDY, `${reason} has its own remedy`);
    assert.match(remedy, /replay/i, `${reason}: says whether and when a replay succeeds`);
  }
  // A reason nobody foresaw still tells the operator where to look.
  assert.match(remedyFor("meli_http_418"), /sync-error/);
});
