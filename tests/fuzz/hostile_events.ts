/**
 * Hostile and malformed `sales.created` messages for the fuzz test (issue #7
 * item 3): one fast-check arbitrary per named kind, each sample saying what the
 * service must do with it.
 *
 * `dlq` samples break the contract (README "The event", src/events/sale_event.ts)
 * and must land in the DLQ with `reason`. `stored` samples look hostile but are
 * valid — the contract keeps unknown fields and any non-blank SKU string up to
 * 255 characters — and must reach the ledger with every SKU byte for byte.
 */
import fc from "fast-check";
import { gzipSync } from "node:zlib";
import { loadConfig } from "../../src/config.ts";
import type { EventLimits, RejectReason } from "../../src/model/sale_event.ts";
import { defaultCatalog } from "../../src/sandbox/catalog.ts";

/** AMQP properties a sample is published with (besides a unique message_id the test adds). */
export interface HostileEnvelope {
  contentEncoding?: string;
  contentType?: string;
  headers?: Record<string, unknown>;
  /** The test appends `#<unique suffix>` so every message stays traceable. */
  messageId?: string;
}

/** One generated message and its expected fate. */
export interface HostileSample {
  body: Uint8Array;
  envelope?: HostileEnvelope;
  expect: "dlq" | "stored";
  /** `dlq`: the `sync-reason` the DLQ copy must carry. */
  reason?: RejectReason | "ledger_rejected";
  /** `dlq`: the sender's headers fill the AMQP frame, so the DLQ copy drops them and names them in `sync-dropped-headers`. */
  headersDropped?: boolean;
  /** `stored`: the store and the per-SKU summed quantities the ledger must hold. */
  stored?: { tiendaId: string; skus: { sku: string; quantity: number }[] };
}

/** A named kind of hostile input. */
export interface HostileKind {
  kind: string;
  arbitrary: fc.Arbitrary<HostileSample>;
}

/** The limits of a service started with no MAX_* variables (what the harness runs with). */
export const DEFAULT_LIMITS: EventLimits = (() => {
  const config = loadConfig({});
  return {
    maxBytes: config.MAX_EVENT_BYTES,
    maxItems: config.MAX_ITEMS_PER_EVENT,
    maxQuantity: config.MAX_ITEM_QUANTITY,
  };
})();

const catalog = defaultCatalog();
/** A store every sandbox maps to a location, so valid samples can really sync. */
export const STORE = catalog.stores[0].tienda_id;
const CATALOG_SKUS = catalog.products.map((p) => p.sku);
const PRODUCT_OF = new Map(catalog.products.map((p) => [p.sku, p.producto_id]));

const encoder = new TextEncoder();
const enc = (text: string): Uint8Array => encoder.encode(text);
const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
};

/** Placeholder replaced by raw JSON text that JSON.stringify cannot produce. */
const RAW = "@@RAW@@";
const withRaw = (value: unknown, raw: string): string => JSON.stringify(value).replace(`"${RAW}"`, raw);

/** Adds an own enumerable property (works for `__proto__`, which an object literal would not create). */
function own<T extends object>(target: T, key: string, value: unknown): T {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  return target;
}

type Item = Record<string, unknown>;

function item(sku: unknown, cantidad: unknown, extra: Item = {}): Item {
  const productoId = typeof sku === "string" ? PRODUCT_OF.get(sku) : undefined;
  return {
    ...(productoId ? { producto_id: productoId } : {}),
    producto_nombre: "Producto",
    producto_sku: sku,
    cantidad,
    precio_unitario: 10,
    subtotal: 10,
    ...extra,
  };
}

function sale(items: unknown, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event_id: "00000000-0000-4000-8000-000000000000",
    tienda_id: STORE,
    total: 100,
    metodo_pago: "EFECTIVO",
    items,
    timestamp: "2024-01-15T10:30:45Z",
    ...overrides,
  };
}

const dlq = (body: Uint8Array | string, reason: HostileSample["reason"], envelope?: HostileEnvelope) => ({
  body: typeof body === "string" ? enc(body) : body,
  expect: "dlq" as const,
  reason,
  ...(envelope ? { envelope } : {}),
});

/** A valid sample; `lines` are the items as sent (the ledger sums repeated SKUs). */
function stored(
  body: Uint8Array | string,
  lines: { sku: string; quantity: number }[],
  options: { tiendaId?: string; envelope?: HostileEnvelope } = {},
): HostileSample {
  const sums = new Map<string, number>();
  for (const l of lines) sums.set(l.sku, (sums.get(l.sku) ?? 0) + l.quantity);
  return {
    body: typeof body === "string" ? enc(body) : body,
    expect: "stored",
    stored: {
      tiendaId: options.tiendaId ?? STORE,
      skus: [...sums].map(([sku, quantity]) => ({ sku, quantity })),
    },
    ...(options.envelope ? { envelope: options.envelope } : {}),
  };
}

/** One valid sale with a single SKU, as a stored sample. */
const storedSku = (sku: string, quantity: number, overrides: Record<string, unknown> = {}) =>
  stored(JSON.stringify(sale([item(sku, quantity)], overrides)), [{ sku, quantity }], {
    tiendaId: typeof overrides.tienda_id === "string" ? overrides.tienda_id : STORE,
  });

const qty = fc.integer({ min: 1, max: 5 });
const plainSku = fc.oneof(fc.constantFrom(...CATALOG_SKUS), fc.stringMatching(/^[A-Z]{3,8}-[0-9]{2,4}$/));
const goodItem = fc.tuple(plainSku, qty).map(([sku, q]) => item(sku, q));
const goodSale = fc.array(goodItem, { minLength: 1, maxLength: 3 }).map((items) => sale(items));
/** A valid sale as JSON text with ASCII only (so byte-level surgery stays simple). */
const goodSaleText = goodSale.map((s) => JSON.stringify(s));
/** A valid sale body plus what the ledger must hold for it. */
const goodStored = fc.array(fc.tuple(plainSku, qty), { minLength: 1, maxLength: 3 }).map((lines) => ({
  text: JSON.stringify(sale(lines.map(([sku, q]) => item(sku, q)))),
  lines: lines.map(([sku, quantity]) => ({ sku, quantity })),
}));
/** A sale whose one item gets `cantidad` spelled as raw JSON text. */
const rawQuantity = (raw: fc.Arbitrary<string>) =>
  fc.tuple(plainSku, raw).map(([sku, r]) => dlq(withRaw(sale([item(sku, RAW)]), r), "invalid_event"));
/** A sale whose one item gets `cantidad` = value. */
const badQuantity = (value: fc.Arbitrary<unknown>) =>
  fc.tuple(plainSku, value).map(([sku, v]) => dlq(JSON.stringify(sale([item(sku, v)])), "invalid_event"));

/** Nested arrays/objects as JSON text, `depth` levels deep. */
function nested(depth: number, objects: boolean): string {
  if (!objects) return "[".repeat(depth) + "]".repeat(depth);
  let open = "";
  let close = "";
  for (let i = 0; i < depth; i++) {
    if (i % 2 === 0) {
      open += '{"n":';
      close = "}" + close;
    } else {
      open += "[";
      close = "]" + close;
    }
  }
  return open + "1" + close;
}

const SEARCH_SKUS = [
  'sku:"x" OR sku:*',
  'REMERA-001" OR sku:"REMERA-002',
  "REMERA-00*",
  "sku:REMERA-001",
  "(REMERA-001 OR MATE-IMP-01)",
  "NOT REMERA-001",
  "-REMERA-001",
  "\\",
  'a\\"b',
  "x:y:z",
  '"quoted"',
  "'single'",
  "tag:sale AND sku:*",
  "inventory_quantity:>0",
  "REMERA-001\\",
  "\\\\\\",
  "*",
  ":",
  "()",
  '"',
  "REMERA-001 OR *",
  'sku:"REMERA-001"',
];
const SEARCH_PARTS = [
  '"',
  "\\",
  ":",
  "(",
  ")",
  "*",
  " OR ",
  " AND ",
  "NOT ",
  "-",
  "'",
  "sku",
  "x",
  ">",
  "<",
  "=",
];

const GRAPHQL_SKUS = [
  '"}) { id } mutation { inventoryAdjustQuantities(input: {}) { userErrors { message } } } query q { shop(id: "',
  '\\"){ nodes { id } } }#',
  "$query",
  '@idempotent(key: "x")',
  "... on ProductVariant { id }",
  "__schema { types { name } }",
  '") { nodes { id sku } } } mutation m { productDelete(input: {id: "gid://shopify/Product/1"}) { deletedProductId } } #',
  '{"query": "mutation { shopUpdate }"}',
];
const GRAPHQL_PARTS = [
  "{",
  "}",
  "(",
  ")",
  '"',
  "$",
  "@",
  "#",
  "...",
  "mutation",
  "query",
  "__typename",
  "\n",
  ":",
  "!",
];

const JSON_SKUS = [
  '","cantidad":999,"producto_sku":"X',
  '"}],"items":[{"producto_sku":"Y","cantidad":1000000}],"x":"',
  '{"$ne":null}',
  "\\u0000",
  '\\"',
  "</script><script>alert(1)</script>",
  "${jndi:ldap://x}",
  "{{7*7}}",
  "%00",
  "..%2f..%2fetc/passwd",
  "__proto__",
  "constructor",
];

const SQL_SKUS = [
  "'; drop table sale;--",
  "' OR '1'='1",
  "1; select pg_sleep(10)--",
  "$1",
  "$$; drop table stock_change; $$",
  "\\'; --",
  "E'\\x41'",
  "%' --",
  "'||(select version())||'",
  "REMERA-001'--",
  '"; drop schema marketplace_sync cascade; --',
  "');\ndelete from sale where ('1'='1",
];

const EMOJI = ["🧉", "👨‍👩‍👧‍👦", "🇦🇷", "👍🏽", "1️⃣", "🏳️‍🌈", "😀", "🔥", "🧵"];
const UNICODE_EDGES = [
  "\u202e",
  "\u200e",
  "\u200f",
  "\u200d",
  "e\u0301",
  "𝔘𝔫𝔦",
  "\uffff",
  "\ufdd0",
  "\ufffe",
  "\ufffd",
  "\u3164",
  "مرحبا",
  "שלום",
  "Z̴̡̛a̷l̸g̶o̵",
  "İ",
  "ß",
  "ﬃ",
];
/** Every character String#trim removes: a SKU of these is blank. */
const TRIMMED = [
  " ",
  "\t",
  "\n",
  "\r",
  "\v",
  "\f",
  "\u00a0",
  "\u1680",
  "\u2000",
  "\u2003",
  "\u200a",
  "\u2028",
  "\u2029",
  "\u202f",
  "\u205f",
  "\u3000",
  "\ufeff",
];
const ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060"];
const INVALID_UTF8 = [
  [0xff],
  [0xfe],
  [0xc0, 0x80], // overlong NUL
  [0xed, 0xa0, 0x80], // an encoded surrogate (CESU-8)
  [0xf5, 0x80, 0x80, 0x80],
  [0xe2, 0x82], // truncated sequence
  [0x80], // lone continuation byte
  [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
];
const LONE_SURROGATES = ["\\ud800", "\\udfff", "\\udc00\\ud800", "\\ud83d"];

/** A non-blank SKU made of `parts`, at most 255 characters. */
const joinedSku = (parts: readonly string[], maxLength = 10) =>
  fc.array(fc.constantFrom(...parts), { minLength: 1, maxLength }).map((p) => p.join(""))
    .filter((s) => s.trim().length > 0 && s.length <= 255);

/** Every kind, for services with `limits`. */
export function hostileKinds(limits: EventLimits = DEFAULT_LIMITS): HostileKind[] {
  const { maxBytes, maxItems, maxQuantity } = limits;
  const kinds: HostileKind[] = [];
  const add = (kind: string, arbitrary: fc.Arbitrary<HostileSample>) => kinds.push({ kind, arbitrary });

  // --- not JSON ------------------------------------------------------------------
  add(
    "not JSON at all",
    fc.oneof(
      fc.string().map((s) => `sale ${s}`),
      fc.constantFrom("<sale><sku>A</sku></sale>", "tienda_id=t&items=1", "SELECT * FROM sale", "undefined"),
    ).map((s) => dlq(s, "invalid_json")),
  );
  add(
    "truncated JSON",
    fc.tuple(goodSaleText, fc.double({ min: 0, max: 0.999, noNaN: true }))
      .map(([text, at]) => dlq(text.slice(0, Math.floor(text.length * at)), "invalid_json")),
  );
  add(
    "empty or whitespace-only body",
    fc.constantFrom("", " ", "\n", "\t\r\n ").map((s) => dlq(s, "invalid_json")),
  );
  add(
    "trailing garbage after the JSON",
    fc.tuple(goodSaleText, fc.constantFrom(" x", "}", "{}", ",", "\u0000", "]", " null"))
      .map(([text, tail]) => dlq(text + tail, "invalid_json")),
  );
  add(
    "JavaScript, not JSON (quotes, comments, trailing commas, NaN)",
    fc.constantFrom(
      "{'tienda_id': 't', 'items': [{'producto_sku': 'A', 'cantidad': 1}]}",
      '{"tienda_id": "t", "items": [{"producto_sku": "A", "cantidad": 1},]}',
      '{"tienda_id": "t", /* c */ "items": [{"producto_sku": "A", "cantidad": 1}]}',
      '{"tienda_id": "t", "items": [{"producto_sku": "A", "cantidad": NaN}]}',
      '{"tienda_id": "t", "items": [{"producto_sku": "A", "cantidad": Infinity}]}',
      '{tienda_id: "t", items: [{producto_sku: "A", cantidad: 1}]}',
      '{"tienda_id": "t", "items": [{"producto_sku": `A`, "cantidad": 1}]}',
    ).map((s) => dlq(s, "invalid_json")),
  );
  add(
    "raw control character inside a JSON string",
    fc.tuple(plainSku, fc.integer({ min: 0, max: 0x1f }))
      .map(([sku, c]) =>
        dlq(withRaw(sale([item(RAW, 1)]), `"${sku}${String.fromCharCode(c)}x"`), "invalid_json")
      ),
  );
  add(
    "numbers JSON cannot spell (leading zeros, hex, +1, .5)",
    rawQuantity(fc.constantFrom("01", "0x10", "+1", ".5", "1.", "1e", "--1", "1_000")).map((s) => ({
      ...s,
      reason: "invalid_json" as const,
    })),
  );

  // --- encodings -------------------------------------------------------------------
  add(
    "invalid UTF-8 bytes",
    fc.tuple(plainSku, fc.constantFrom(...INVALID_UTF8)).map(([sku, bad]) => {
      const [before, after] = JSON.stringify(sale([item(`${sku}${RAW}`, 1)])).split(RAW);
      return dlq(concat(enc(before), new Uint8Array(bad), enc(after)), "invalid_encoding");
    }),
  );
  add(
    "Latin-1 encoded body",
    fc.constantFrom("Córdoba", "Peñalolén", "Año", "Camión", "Pequeño").map((word) => {
      const text = JSON.stringify(sale([item(`SKU-${word}`, 1)], { metodo_pago: word }));
      return dlq(Uint8Array.from(text, (ch) => ch.charCodeAt(0)), "invalid_encoding");
    }),
  );
  add(
    "UTF-16 encoded body with a byte-order mark",
    fc.tuple(goodSaleText, fc.boolean()).map(([text, little]) => {
      const bytes = new Uint8Array(2 + text.length * 2);
      bytes.set(little ? [0xff, 0xfe] : [0xfe, 0xff]);
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        bytes[2 + 2 * i + (little ? 0 : 1)] = c & 0xff;
        bytes[2 + 2 * i + (little ? 1 : 0)] = c >> 8;
      }
      return dlq(bytes, "invalid_encoding");
    }),
  );
  add(
    "UTF-8 byte-order mark before a valid sale (RFC 8259 lets parsers ignore it)",
    goodStored.map(({ text, lines }) => stored(concat(new Uint8Array([0xef, 0xbb, 0xbf]), enc(text)), lines)),
  );
  add(
    "two UTF-8 byte-order marks",
    goodSaleText.map((text) =>
      dlq(concat(new Uint8Array([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), enc(text)), "invalid_json")
    ),
  );
  add(
    "gzip-compressed body (content_encoding gzip)",
    goodSaleText.map((text) =>
      dlq(new Uint8Array(gzipSync(enc(text))), "invalid_encoding", { contentEncoding: "gzip" })
    ),
  );
  add(
    "unsupported content_encoding on a valid body",
    fc.tuple(
      goodSaleText,
      fc.constantFrom("br", "deflate", "compress", "x-gzip", "base64", "UTF-16", "GZIP", "identity, gzip"),
    ).map(([text, contentEncoding]) => dlq(text, "invalid_encoding", { contentEncoding })),
  );
  add(
    "content_encoding identity / UTF-8 (accepted)",
    fc.tuple(goodStored, fc.constantFrom("identity", "UTF-8", "utf8", "Identity"))
      .map(([{ text, lines }, contentEncoding]) => stored(text, lines, { envelope: { contentEncoding } })),
  );

  // --- size, arrays, nesting ----------------------------------------------------
  add(
    "body over MAX_EVENT_BYTES",
    fc.tuple(goodSaleText, fc.integer({ min: 1, max: 4096 }), fc.boolean()).map(([text, over, json]) => {
      if (!json) return dlq(new Uint8Array(maxBytes + over).fill(0x78), "too_large");
      const base = text.length + ',"padding":""'.length;
      return dlq(text.slice(0, -1) + `,"padding":"${"x".repeat(maxBytes + over - base)}"}`, "too_large");
    }),
  );
  add(
    "more items than MAX_ITEMS_PER_EVENT",
    fc.integer({ min: 1, max: 50 }).map((extra) => {
      const items = Array.from(
        { length: maxItems + extra },
        (_, i) => ({ producto_sku: `S${i}`, cantidad: 1 }),
      );
      const body = enc(JSON.stringify(sale(items)));
      return dlq(body, body.byteLength > maxBytes ? "too_large" : "invalid_event");
    }),
  );
  add(
    "huge unknown array within the size limit (kept)",
    fc.tuple(goodStored, fc.integer({ min: 10_000, max: Math.floor((maxBytes - 2048) / 2) }))
      .map(([{ text, lines }, n]) => stored(text.slice(0, -1) + `,"extra":[${"0,".repeat(n - 1)}0]}`, lines)),
  );
  add(
    "nesting deeper than 32 levels",
    fc.tuple(goodSaleText, fc.integer({ min: 33, max: 200 }), fc.boolean(), fc.boolean())
      .map(([text, depth, objects, inItem]) => {
        const deep = nested(depth, objects);
        const body = inItem
          ? text.replace('"producto_sku"', `"extra":${deep},"producto_sku"`)
          : text.slice(0, -1) + `,"extra":${deep}}`;
        return dlq(body, "invalid_event");
      }),
  );
  add(
    "pathologically deep nesting (tens of thousands of levels)",
    fc.tuple(goodSaleText, fc.integer({ min: 20_000, max: Math.floor((maxBytes - 4096) / 2) }))
      .map(([text, depth]) => dlq(text.slice(0, -1) + `,"extra":${nested(depth, false)}}`, "invalid_event")),
  );
  add(
    "nesting within the limit in an unknown field (kept)",
    fc.tuple(goodStored, fc.integer({ min: 1, max: 30 }), fc.boolean())
      .map(([{ text, lines }, depth, objects]) =>
        stored(text.slice(0, -1) + `,"extra":${nested(depth, objects)}}`, lines)
      ),
  );

  // --- cantidad ----------------------------------------------------------------------
  add("cantidad 0", badQuantity(fc.constant(0)));
  add(
    "cantidad negative or -0",
    fc.oneof(
      badQuantity(fc.integer({ min: -1_000_000_000, max: -1 })),
      rawQuantity(fc.constantFrom("-0", "-0.0", "-1e3")),
    ),
  );
  add(
    "cantidad fractional",
    badQuantity(
      fc.double({ min: 0.0001, max: 1000, noNaN: true, noDefaultInfinity: true }).filter((n) =>
        !Number.isInteger(n)
      ),
    ),
  );
  add(
    "cantidad over MAX_ITEM_QUANTITY (1e12, 2^53+1, 1e308, 1e999)",
    fc.oneof(
      rawQuantity(fc.constantFrom("1e12", "9007199254740993", "1e308", "1e999", String(maxQuantity + 1))),
      badQuantity(fc.integer({ min: maxQuantity + 1, max: Number.MAX_SAFE_INTEGER })),
    ),
  );
  add(
    'cantidad as a string ("2", "NaN", "Infinity", "1e3")',
    badQuantity(fc.constantFrom("2", "NaN", "Infinity", "-Infinity", "1e3", "", " 1", "uno")),
  );
  add("cantidad null", badQuantity(fc.constant(null)));
  add("cantidad boolean, array or object", badQuantity(fc.constantFrom(true, false, [1], {}, { n: 1 })));
  add(
    "cantidad missing",
    plainSku.map((sku) => dlq(JSON.stringify(sale([{ producto_sku: sku }])), "invalid_event")),
  );
  add(
    "cantidad whole but spelled 2.0, 2e0, 20E-1 (accepted)",
    fc.tuple(
      plainSku,
      qty,
      fc.constantFrom(
        (q: number) => `${q}.0`,
        (q: number) => `${q}e0`,
        (q: number) => `${q}0E-1`,
        (q: number) => `${q}00e-2`,
      ),
    )
      .map(([sku, q, spell]) => stored(withRaw(sale([item(sku, RAW)]), spell(q)), [{ sku, quantity: q }])),
  );
  add(
    "cantidad overflow to Infinity (1e999) in total / precio_unitario",
    fc.tuple(
      plainSku,
      fc.constantFrom("total", "precio_unitario", "subtotal"),
      fc.constantFrom("1e999", "-1e999"),
    )
      .map(([sku, field, raw]) => {
        const body = field === "total"
          ? withRaw(sale([item(sku, 1)], { total: RAW }), raw)
          : withRaw(sale([item(sku, 1, { [field]: RAW })]), raw);
        return dlq(body, "invalid_event");
      }),
  );

  // --- repeated SKUs -----------------------------------------------------------------
  add(
    "repeated SKU summing over MAX_ITEM_QUANTITY",
    plainSku.map((sku) => {
      const half = Math.floor(maxQuantity / 2) + 1;
      return dlq(JSON.stringify(sale([item(sku, half), item(sku, half)])), "invalid_event");
    }),
  );
  add(
    // The POS made the sale: applied by SKU, summed (and counted as a catalog inconsistency).
    "repeated SKU with conflicting producto_id (summed, accepted)",
    fc.tuple(plainSku, qty, qty).map(([sku, a, b]) =>
      stored(
        JSON.stringify(sale([item(sku, a, { producto_id: "p-1" }), item(sku, b, { producto_id: "p-2" })])),
        [{ sku, quantity: a }, { sku, quantity: b }],
      )
    ),
  );
  add(
    "repeated SKU, same product (summed, accepted)",
    fc.tuple(plainSku, fc.array(qty, { minLength: 2, maxLength: 4 })).map(([sku, qs]) =>
      stored(JSON.stringify(sale(qs.map((q) => item(sku, q)))), qs.map((quantity) => ({ sku, quantity })))
    ),
  );

  // --- producto_sku ------------------------------------------------------------------
  add(
    "producto_sku missing",
    qty.map((q) => dlq(JSON.stringify(sale([{ producto_id: "p", cantidad: q }])), "invalid_event")),
  );
  add("producto_sku empty", qty.map((q) => dlq(JSON.stringify(sale([item("", q)])), "invalid_event")));
  add(
    "producto_sku whitespace only (spaces, tabs, NBSP, ideographic space, U+FEFF)",
    fc.tuple(fc.array(fc.constantFrom(...TRIMMED), { minLength: 1, maxLength: 8 }), qty)
      .map(([ws, q]) => dlq(JSON.stringify(sale([item(ws.join(""), q)])), "invalid_event")),
  );
  add(
    "producto_sku longer than 255 characters",
    fc.tuple(fc.integer({ min: 256, max: 4000 }), fc.constantFrom("A", "é", "-"))
      .map(([n, ch]) => dlq(JSON.stringify(sale([item(ch.repeat(n), 1)])), "invalid_event")),
  );
  add(
    "producto_sku exactly 255 characters (accepted)",
    fc.tuple(fc.string({ minLength: 255, maxLength: 255 }).filter((s) => s.trim().length > 0), qty)
      .map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "producto_sku of the wrong type (number, array, object, boolean, null)",
    fc.constantFrom(123, 0, [], ["A"], {}, { sku: "A" }, true, null)
      .map((v) => dlq(JSON.stringify(sale([item(v, 1)])), "invalid_event")),
  );
  add(
    "Shopify search syntax in the SKU (quotes, backslashes, parens, colons, OR, *)",
    fc.tuple(fc.oneof(fc.constantFrom(...SEARCH_SKUS), joinedSku(SEARCH_PARTS)), qty)
      .map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "catalog SKUs full of search metacharacters (must be found, not injected)",
    fc.tuple(
      fc.constantFrom(
        'TAZA "BLEND": (XL) \\ NEGRA',
        "GORRA-O'NEILL",
        "REMERA-0010",
        "buzo-azul-m",
        "MATE-IMP-01",
      ),
      qty,
    ).map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "GraphQL injection in the SKU",
    fc.tuple(fc.oneof(fc.constantFrom(...GRAPHQL_SKUS), joinedSku(GRAPHQL_PARTS)), qty)
      .map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "JSON injection in the SKU",
    fc.tuple(fc.constantFrom(...JSON_SKUS), qty).map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "SQL injection in the SKU",
    fc.tuple(fc.constantFrom(...SQL_SKUS), qty).map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "SQL injection in tienda_id and producto_id",
    fc.tuple(fc.constantFrom(...SQL_SKUS), plainSku, qty).map(([evil, sku, q]) =>
      stored(JSON.stringify(sale([item(sku, q, { producto_id: evil })], { tienda_id: evil })), [
        { sku, quantity: q },
      ], { tiendaId: evil })
    ),
  );
  add(
    "emoji SKUs (ZWJ sequences, flags, skin tones)",
    fc.tuple(joinedSku(EMOJI, 6), qty).map(([sku, q]) => storedSku(sku, q)),
  );
  add(
    "unicode edge cases in the SKU (RTL override, combining marks, non-BMP, noncharacters)",
    fc.tuple(fc.array(fc.constantFrom(...UNICODE_EDGES, "A", "1", "-"), { minLength: 1, maxLength: 8 }), qty)
      .map(([parts, q]) => storedSku(`X${parts.join("")}`, q)),
  );
  add(
    "escaped control characters in the SKU (\\u0001-\\u001f, DEL, C1)",
    fc.tuple(
      fc.oneof(fc.integer({ min: 1, max: 0x1f }), fc.integer({ min: 0x7f, max: 0x9f })),
      plainSku,
      qty,
    ).map(([c, sku, q]) => storedSku(`${sku}${String.fromCharCode(c)}B`, q)),
  );
  add(
    "SKU of zero-width characters only (not blank per the contract)",
    fc.tuple(fc.array(fc.constantFrom(...ZERO_WIDTH), { minLength: 1, maxLength: 5 }), qty)
      .map(([parts, q]) => storedSku(parts.join(""), q)),
  );
  add(
    "SKU and keys spelled with \\u escapes (a catalog SKU in disguise)",
    fc.tuple(fc.constantFrom(...CATALOG_SKUS), qty).map(([sku, q]) => {
      const esc = (s: string) =>
        [...s].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("");
      const text = `{"${esc("tienda_id")}":"${esc(STORE)}","${esc("items")}":[{"${esc("producto_sku")}":"${
        esc(sku)
      }","cantidad":${q}}]}`;
      return stored(text, [{ sku, quantity: q }]);
    }),
  );

  // --- NUL, surrogates, keys -------------------------------------------------------
  add(
    "NUL characters (escaped) in values and keys",
    fc.tuple(
      plainSku,
      fc.constantFrom("tienda_id", "producto_sku", "metodo_pago", "unknown", "key", "nombre"),
    )
      .map(([sku, where]) => {
        const nul = "a\u0000b";
        const body = where === "tienda_id"
          ? sale([item(sku, 1)], { tienda_id: nul })
          : where === "producto_sku"
          ? sale([item(`${sku}\u0000`, 1)])
          : where === "metodo_pago"
          ? sale([item(sku, 1)], { metodo_pago: nul })
          : where === "unknown"
          ? sale([item(sku, 1)], { notas: nul })
          : where === "key"
          ? sale([item(sku, 1)], { [nul]: 1 })
          : sale([item(sku, 1, { producto_nombre: nul })]);
        return dlq(JSON.stringify(body), "invalid_event");
      }),
  );
  add(
    "lone UTF-16 surrogate escapes in values or keys",
    fc.tuple(
      plainSku,
      fc.constantFrom(...LONE_SURROGATES),
      fc.constantFrom("sku", "tienda", "key", "unknown"),
    )
      .map(([sku, s, where]) => {
        const body = where === "sku"
          ? withRaw(sale([item(RAW, 1)]), `"${sku}${s}"`)
          : where === "tienda"
          ? withRaw(sale([item(sku, 1)], { tienda_id: RAW }), `"T${s}"`)
          : where === "key"
          ? JSON.stringify(sale([item(sku, 1)])).replace('"items"', `"k${s}":1,"items"`)
          : withRaw(sale([item(sku, 1)], { notas: RAW }), `"${s}"`);
        return dlq(body, "invalid_event");
      }),
  );
  add(
    "NUL or lone surrogate in a very long key (a field path bigger than an AMQP frame)",
    fc.tuple(goodSaleText, fc.integer({ min: 9_000, max: 60_000 }), fc.constantFrom("\\u0000", "\\ud800"))
      .map(([text, n, bad]) => dlq(text.slice(0, -1) + `,"${"k".repeat(n)}${bad}":1}`, "invalid_event")),
  );
  add(
    "prototype-pollution keys next to a valid sale (kept as plain data)",
    fc.tuple(plainSku, qty).map(([sku, q]) => {
      const it = own(item(sku, q), "__proto__", { cantidad: 0, isAdmin: true });
      const body = own(own(sale([it]), "__proto__", { polluted: true, items: [] }), "constructor", {
        prototype: { polluted: true },
      });
      return stored(JSON.stringify(body), [{ sku, quantity: q }]);
    }),
  );
  add(
    "required fields only under __proto__ / constructor.prototype",
    fc.tuple(goodSale, fc.constantFrom("__proto__", "constructor")).map(([s, key]) => {
      const hidden = key === "__proto__" ? s : { prototype: s };
      return dlq(JSON.stringify(own({ metodo_pago: "EFECTIVO" }, key, hidden)), "invalid_event");
    }),
  );
  add(
    "duplicated keys, the last one invalid",
    fc.tuple(plainSku, fc.constantFrom("tienda_id", "items", "cantidad")).map(([sku, key]) => {
      const text = key === "tienda_id"
        ? `{"tienda_id":"${STORE}","items":[{"producto_sku":"${sku}","cantidad":1}],"tienda_id":5}`
        : key === "items"
        ? `{"tienda_id":"${STORE}","items":[{"producto_sku":"${sku}","cantidad":1}],"items":[]}`
        : `{"tienda_id":"${STORE}","items":[{"producto_sku":"${sku}","cantidad":1,"cantidad":0}]}`;
      return dlq(text, "invalid_event");
    }),
  );
  add(
    "duplicated keys, the last one valid (last wins, as JSON.parse)",
    fc.tuple(plainSku, qty).map(([sku, q]) =>
      stored(
        `{"tienda_id":5,"items":[],"tienda_id":"${STORE}","items":[{"producto_sku":"IGNORED","cantidad":0,` +
          `"producto_sku":${JSON.stringify(sku)},"cantidad":${q}}]}`,
        [{ sku, quantity: q }],
      )
    ),
  );

  // --- shapes and types --------------------------------------------------------------
  add(
    "numbers as strings in typed fields (total, precio_unitario, subtotal)",
    fc.tuple(
      plainSku,
      fc.constantFrom("total", "precio_unitario", "subtotal"),
      fc.constantFrom("1250.5", "500", "0"),
    )
      .map(([sku, field, value]) => {
        const body = field === "total"
          ? sale([item(sku, 1)], { total: value })
          : sale([item(sku, 1, { [field]: value })]);
        return dlq(JSON.stringify(body), "invalid_event");
      }),
  );
  add(
    "body is an array, a scalar or null",
    fc.oneof(
      goodSale.map((s) => JSON.stringify([s])),
      fc.constantFrom("[]", "[{}]", "null", "true", "false", "0", "-1", '"sale"', "1e999"),
    ).map((s) => dlq(s, "invalid_event")),
  );
  add(
    "items entries that are arrays, strings, numbers or null",
    fc.constantFrom<unknown>([], ["A", 1], "A", 1, null, true).map((v) =>
      dlq(JSON.stringify(sale([v])), "invalid_event")
    ),
  );
  add(
    "tienda_id missing",
    goodSale.map((s) => dlq(JSON.stringify({ ...s, tienda_id: undefined }), "invalid_event")),
  );
  add(
    "tienda_id of the wrong type, blank or longer than 200",
    fc.tuple(
      goodSale,
      fc.constantFrom<unknown>(42, true, null, [], {}, ["t"], "", "   ", "\u3000", "t".repeat(201)),
    )
      .map(([s, t]) => dlq(JSON.stringify({ ...s, tienda_id: t }), "invalid_event")),
  );
  add("items empty", fc.constant(dlq(JSON.stringify(sale([])), "invalid_event")));
  add(
    "items not an array (object, string, number, null) or missing",
    fc.tuple(plainSku, fc.constantFrom("object", "string", "number", "null", "missing", "map")).map(
      ([sku, how]) => {
        const value = how === "object"
          ? item(sku, 1)
          : how === "string"
          ? sku
          : how === "number"
          ? 1
          : how === "null"
          ? null
          : how === "missing"
          ? undefined
          : { "0": item(sku, 1) };
        return dlq(JSON.stringify(sale(value)), "invalid_event");
      },
    ),
  );
  add(
    "timestamp garbage",
    fc.tuple(
      goodSale,
      fc.oneof(
        fc.string().map((s) => `ts ${s}`),
        fc.constantFrom<unknown>(
          "",
          "ayer a la tarde",
          "2024-13-45T99:99:99Z",
          "2024-02-30T10:00:00Z",
          "2024-01-15 10:30:45",
          "2024-01-15",
          "15/01/2024",
          "1705314645",
          "2024-01-15T10:30:45+25:00",
        ),
        fc.integer(),
        fc.boolean(),
        fc.constantFrom({}, []),
      ),
    ).map(([s, ts]) => dlq(JSON.stringify({ ...s, timestamp: ts }), "invalid_event")),
  );
  add(
    "extremely long strings in known fields (producto_nombre, metodo_pago, producto_id, event_id)",
    fc.tuple(
      plainSku,
      fc.constantFrom("producto_nombre", "metodo_pago", "producto_id", "event_id"),
      fc.integer({
        min: 1_001,
        max: 100_000,
      }),
    ).map(([sku, field, n]) => {
      const long = "x".repeat(n);
      const body = field === "metodo_pago" || field === "event_id"
        ? sale([item(sku, 1)], { [field]: long })
        : sale([item(sku, 1, { [field]: long })]);
      return dlq(JSON.stringify(body), "invalid_event");
    }),
  );
  add(
    "extremely long string in an unknown field (kept)",
    fc.tuple(goodStored, fc.integer({ min: 10_000, max: maxBytes - 4096 }))
      .map(([{ text, lines }, n]) =>
        stored(text.slice(0, -1) + `,"notas":"${"ñ".repeat(Math.floor(n / 2))}"}`, lines)
      ),
  );
  add(
    "unknown fields of any type, top level and in items (kept)",
    fc.tuple(
      plainSku,
      qty,
      fc.dictionary(fc.string().map((k) => `x_${k}`), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 5 }),
      fc.dictionary(fc.string().map((k) => `y_${k}`), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 3 }),
    ).filter(([, , a, b]) => !/\\u0000|\\ud[89a-f]/i.test(JSON.stringify([a, b])))
      .map(([sku, q, top, inner]) =>
        stored(JSON.stringify(sale([item(sku, q, inner)], top)), [{ sku, quantity: q }])
      ),
  );
  add(
    "optional fields of the wrong type (metodo_pago, producto_id, producto_nombre)",
    fc.tuple(
      plainSku,
      fc.constantFrom("metodo_pago", "producto_id", "producto_nombre"),
      fc.constantFrom<unknown>(
        1,
        true,
        [],
        { a: 1 },
      ),
    ).map(([sku, field, v]) => {
      const body = field === "metodo_pago"
        ? sale([item(sku, 1)], { metodo_pago: v })
        : sale([item(sku, 1, { [field]: v })]);
      return dlq(JSON.stringify(body), "invalid_event");
    }),
  );
  add(
    "event_id / venta_id of the wrong type (fraction, object, boolean, blank, unsafe integer)",
    fc.tuple(
      goodSale,
      fc.constantFrom("event_id", "venta_id"),
      fc.constantFrom<unknown>(1.5, {}, [], true, "", "  ", 1e300, -0.5),
    )
      .map(([s, field, v]) => dlq(JSON.stringify({ ...s, [field]: v }), "invalid_event")),
  );

  // --- envelope ----------------------------------------------------------------------
  add(
    "AMQP headers filling a whole frame on a malformed body (no room for the sync-* headers)",
    // rabbitmq-client's default frame is 8 KiB; these fill it but for ~100 bytes (our sync-* need ~500).
    fc.integer({ min: 7_900, max: 8_050 }).map((n) => ({
      ...dlq("not json", "invalid_json", { headers: { "x-pos-trace": "t".repeat(n) } }),
      headersDropped: true,
    })),
  );
  add(
    "forged sync-* and x-death headers on a malformed body",
    fc.constantFrom<unknown>("999", -5, "NaN", 1e9, "1; drop table").map((attempts) =>
      dlq("{", "invalid_json", {
        headers: {
          "sync-attempts": attempts,
          "sync-reason": "all_good",
          "sync-error": "nothing to see",
          "sync-first-failure": "garbage",
          "sync-original-exchange": "evil",
          "x-death": "forged",
          "x-delivery-count": 99,
        },
      })
    ),
  );
  add(
    "hostile AMQP message_id on a valid sale (it becomes the event_id)",
    fc.tuple(
      goodStored,
      fc.constantFrom(
        ...SQL_SKUS.slice(0, 6),
        ...GRAPHQL_SKUS.slice(1, 4),
        "ñandú 🧉",
        "\u202eevil",
        "../../x",
      ),
    )
      .map(([{ text, lines }, messageId]) => stored(text, lines, { envelope: { messageId } })),
  );
  add(
    "NUL in the AMQP message_id (Postgres text cannot hold it)",
    goodSaleText.map((text) => dlq(text, "ledger_rejected", { messageId: "nul\u0000id" })),
  );
  add(
    "unusual content_type on a valid sale",
    fc.tuple(
      goodStored,
      fc.constantFrom(
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin1",
        "text/html",
      ),
    )
      .map(([{ text, lines }, contentType]) => stored(text, lines, { envelope: { contentType } })),
  );
  add(
    "whitespace around a valid JSON body",
    fc.tuple(goodStored, fc.constantFrom(" ", "\n", "\t", "\r\n", "  \n\t "))
      .map(([{ text, lines }, ws]) => stored(`${ws}${text}${ws}`, lines)),
  );
  return kinds;
}

/** Every kind, for a service with the default limits. */
export const HOSTILE_KINDS: HostileKind[] = hostileKinds();
