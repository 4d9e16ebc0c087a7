/**
 * The `sales.created` event contract (docs/DESIGN.md §3): decoding, validation,
 * identity and the per-SKU stock items the ledger stores.
 *
 * Every way an event can be unusable maps to one machine-readable reason that
 * travels to the DLQ in a header, with a message a person can act on.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { type ChannelName, KNOWN_CHANNELS } from "./channel_name.ts";

/** Why an incoming message was refused. Stable: operators filter on these. */
export type RejectReason =
  | "too_large"
  | "invalid_encoding"
  | "invalid_json"
  | "invalid_event";

/** A refused message: the reason, a human message, and the offending field if any. */
export interface Rejection {
  reason: RejectReason;
  message: string;
  field?: string;
}

/** Where an event's identity came from (docs/DESIGN.md §3, in order of preference). */
export type IdentitySource = "message_id" | "event_id" | "venta_id" | "body_hash";

/** One SKU's share of a sale: duplicate SKUs in the event are already summed. */
export interface StockItem {
  sku: string;
  productoId: string | null;
  quantity: number;
}

/**
 * A SKU whose lines name more than one `producto_id`. The POS made the sale, so
 * it is applied by SKU (the marketplaces resolve listings by SKU) with the first
 * `producto_id` kept; the consumer counts and warns about it so the POS catalog
 * gets fixed, instead of parking a sale that no replay could ever repair.
 */
export interface ProductConflict {
  sku: string;
  /** Every distinct producto_id the SKU's lines named, in order of appearance. */
  productoIds: string[];
}

/** A validated sale, ready to be taken into custody. */
export interface SaleEvent {
  eventId: string;
  identitySource: IdentitySource;
  tiendaId: string;
  items: StockItem[];
  /** SKUs repeated under different producto_ids (empty when the sale is consistent). */
  productConflicts: ProductConflict[];
  /**
   * The body as received, as JSON text (unknown fields kept; numbers as the POS wrote them, where a
   * parse and re-serialization would round them). Custody stores it without serializing it again.
   */
  body: string;
  /**
   * Set when the POS re-publishes a marketplace order it recorded (`origen` names one of our channels, with
   * `origen_order_id`): custody applies no stock change for it and marks the order recorded (issue #14).
   */
  origin?: { channel: ChannelName; orderId: string };
}

/** Limits applied while decoding; see the MAX_* variables in config. */
export interface EventLimits {
  maxBytes: number;
  maxItems: number;
  maxQuantity: number;
}

/** What the broker hands over besides the body. */
export interface DeliveryProperties {
  messageId?: string;
  contentEncoding?: string;
}

/** The result of {@link decodeSaleEvent}. */
export type DecodeResult = { ok: true; event: SaleEvent } | { ok: false; rejection: Rejection };

const MAX_DEPTH = 32;
const ID_MAX = 200;

const text = (max: number) => z.string().max(max, `must be at most ${max} characters`);
const identifier = z.union([text(ID_MAX).trim().min(1, "must not be empty"), z.number().int()]);

function itemSchema(limits: EventLimits) {
  return z.looseObject({
    producto_id: text(ID_MAX).trim().min(1, "must not be empty").nullish(),
    producto_nombre: text(1000).nullish(),
    producto_sku: z.string({
      error: (issue) => issue.input === undefined ? "is required" : "must be a string",
    }).max(255, "must be at most 255 characters").refine(
      (sku) => sku.trim().length > 0,
      "must not be empty",
    ),
    cantidad: z.number({
      error: (issue) => issue.input === undefined ? "is required" : "must be a number",
    }).int("must be a whole number (marketplace stock is integral)")
      .positive("must be greater than 0")
      .max(limits.maxQuantity, `must be at most ${limits.maxQuantity}`),
    precio_unitario: z.number().finite().nullish(),
    subtotal: z.number().finite().nullish(),
  });
}

const timestampSchema = z.iso.datetime({ offset: true, local: true, error: "must be an ISO 8601 date-time" });
/** The pattern that schema tests, for the hand check below. */
const timestampPattern = z.regexes.datetime({ offset: true, local: true });

function eventSchema(limits: EventLimits) {
  return z.looseObject({
    event_id: identifier.nullish(),
    venta_id: identifier.nullish(),
    tienda_id: z.string({
      error: (issue) => issue.input === undefined ? "is required" : "must be a string",
    }).trim().min(1, "must not be empty").max(ID_MAX, `must be at most ${ID_MAX} characters`),
    total: z.number().finite().nullish(),
    metodo_pago: text(100).nullish(),
    timestamp: timestampSchema.nullish(),
    // A marketplace order the POS recorded and re-publishes (the echo of marketplace.sales.created).
    origen: text(100).nullish(),
    origen_order_id: identifier.nullish(),
    items: z.array(itemSchema(limits), {
      error: (issue) => issue.input === undefined ? "is required" : "must be an array",
    })
      .min(1, "must hold at least one item")
      .max(limits.maxItems, `must hold at most ${limits.maxItems} items`),
  });
}

type EventSchema = ReturnType<typeof eventSchema>;
const schemaCache = new Map<string, EventSchema>();

function schemaFor(limits: EventLimits): EventSchema {
  const key = `${limits.maxItems}/${limits.maxQuantity}`;
  let schema = schemaCache.get(key);
  if (!schema) schemaCache.set(key, schema = eventSchema(limits));
  return schema;
}

/** The fields of a valid sale that decoding reads, as the schema outputs them (identifiers trimmed). */
interface SaleFields {
  event_id?: string | number | null;
  venta_id?: string | number | null;
  tienda_id: string;
  origen?: string | null;
  origen_order_id?: string | number | null;
  items: { producto_sku: string; producto_id?: string | null; cantidad: number }[];
}

const absent = (value: unknown) => value === undefined || value === null;
const textWithin = (value: unknown, max: number) => typeof value === "string" && value.length <= max;
const finiteOrAbsent = (value: unknown) =>
  absent(value) || (typeof value === "number" && Number.isFinite(value));
/** A non-blank string of at most `max` characters, trimmed; undefined when it is not one. */
const trimmedWithin = (value: unknown, max: number) => {
  if (!textWithin(value, max)) return undefined;
  const trimmed = (value as string).trim();
  return trimmed.length > 0 ? trimmed : undefined;
};
/** An identifier as the schema outputs it (string trimmed, or a safe integer); null when absent, undefined when invalid. */
const identifierOf = (value: unknown) =>
  absent(value)
    ? null
    : typeof value === "number"
    ? (Number.isSafeInteger(value) ? value : undefined)
    : trimmedWithin(value, ID_MAX);

/**
 * The usual sale, checked by hand: every field the schema knows, of the expected type, within its limits.
 * Anything else (a field missing or of another type, a limit crossed, no identity but a body hash) answers
 * undefined, and the schema then accepts or refuses the body with its reason. It never accepts what the
 * schema refuses (tests/events_test.ts compares both on generated bodies). Decoding a usual sale took
 * 6.0–6.7 µs through the schema and 3.4–4.4 µs with this check (docs/BENCHMARKS.md, sixth session).
 */
function usualSale(
  body: Record<string, unknown>,
  limits: EventLimits,
  messageId?: string,
): SaleFields | undefined {
  const tiendaId = trimmedWithin(body.tienda_id, ID_MAX);
  const eventId = identifierOf(body.event_id);
  const ventaId = identifierOf(body.venta_id);
  const orderId = identifierOf(body.origen_order_id);
  if (tiendaId === undefined || eventId === undefined || ventaId === undefined || orderId === undefined) {
    return;
  }
  // A body-hashed identity hashes the schema's whole output: left to the schema.
  if (!messageId?.trim() && eventId === null && ventaId === null) return;
  if (!finiteOrAbsent(body.total)) return;
  if (!absent(body.metodo_pago) && !textWithin(body.metodo_pago, 100)) return;
  if (!absent(body.origen) && !textWithin(body.origen, 100)) return;
  if (
    !absent(body.timestamp) && !(typeof body.timestamp === "string" && timestampPattern.test(body.timestamp))
  ) {
    return;
  }
  const lines = body.items;
  if (!Array.isArray(lines) || lines.length < 1 || lines.length > limits.maxItems) return;
  const items: SaleFields["items"] = [];
  for (const line of lines) {
    if (line === null || typeof line !== "object" || Array.isArray(line)) return;
    const { producto_sku: sku, producto_id: id, cantidad, producto_nombre: name } = line as Record<
      string,
      unknown
    >;
    if (!textWithin(sku, 255) || (sku as string).trim().length === 0) return;
    const productoId = absent(id) ? null : trimmedWithin(id, ID_MAX);
    if (productoId === undefined) return;
    if (
      !Number.isSafeInteger(cantidad) || (cantidad as number) <= 0 ||
      (cantidad as number) > limits.maxQuantity
    ) {
      return;
    }
    if (!absent(name) && !textWithin(name, 1000)) return;
    const { precio_unitario: price, subtotal } = line as Record<string, unknown>;
    if (!finiteOrAbsent(price) || !finiteOrAbsent(subtotal)) return;
    items.push({ producto_sku: sku as string, producto_id: productoId, cantidad: cantidad as number });
  }
  return {
    event_id: eventId,
    venta_id: ventaId,
    tienda_id: tiendaId,
    origen: body.origen as string | null | undefined,
    origen_order_id: orderId,
    items,
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Turns a raw AMQP body into a {@link SaleEvent}, or says precisely why not.
 * Never throws.
 * @param options.schemaOnly skip the hand check of the usual sale (tests compare both paths).
 */
export function decodeSaleEvent(
  raw: Uint8Array,
  properties: DeliveryProperties,
  limits: EventLimits,
  options: { schemaOnly?: boolean } = {},
): DecodeResult {
  const reject = (reason: RejectReason, message: string, field?: string): DecodeResult => ({
    ok: false,
    rejection: { reason, message, ...(field ? { field } : {}) },
  });
  if (raw.byteLength > limits.maxBytes) {
    return reject("too_large", `body is ${raw.byteLength} bytes; the limit is ${limits.maxBytes}`);
  }
  const encoding = properties.contentEncoding?.toLowerCase();
  if (encoding && !["identity", "utf-8", "utf8"].includes(encoding)) {
    return reject(
      "invalid_encoding",
      `content_encoding "${encoding}" is not supported; send plain UTF-8 JSON`,
    );
  }
  let textBody: string;
  try {
    textBody = utf8.decode(raw);
  } catch {
    return reject("invalid_encoding", "body is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(textBody);
  } catch (error) {
    return reject("invalid_json", `body is not JSON: ${(error as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    const kind = parsed === null ? "null" : Array.isArray(parsed) ? "an array" : typeof parsed;
    return reject("invalid_event", `body must be a JSON object, got ${kind}`);
  }
  const unsafe = mayBeUnstorable(textBody) ? findUnstorableValue(parsed, "", 0) : undefined;
  if (unsafe) return reject("invalid_event", unsafe.message, unsafe.field);

  let data: SaleFields | undefined = options.schemaOnly
    ? undefined
    : usualSale(parsed as Record<string, unknown>, limits, properties.messageId);
  if (!data) {
    const result = schemaFor(limits).safeParse(parsed);
    if (!result.success) {
      const issue = result.error.issues[0];
      const field = formatPath(issue.path);
      const more = result.error.issues.length > 1 ? ` (+${result.error.issues.length - 1} more)` : "";
      return reject("invalid_event", `${field || "body"} ${issue.message}${more}`, field || undefined);
    }
    data = result.data;
  }
  const items = new Map<string, StockItem>();
  const conflicts = new Map<string, ProductConflict>();
  for (const [index, item] of data.items.entries()) {
    const productoId = item.producto_id ?? null;
    const existing = items.get(item.producto_sku);
    if (!existing) {
      items.set(item.producto_sku, { sku: item.producto_sku, productoId, quantity: item.cantidad });
      continue;
    }
    if (productoId !== null && existing.productoId !== null && existing.productoId !== productoId) {
      const conflict = conflicts.get(item.producto_sku) ??
        { sku: item.producto_sku, productoIds: [existing.productoId] };
      if (!conflict.productoIds.includes(productoId)) conflict.productoIds.push(productoId);
      conflicts.set(item.producto_sku, conflict);
    }
    existing.productoId ??= productoId;
    existing.quantity += item.cantidad;
    if (existing.quantity > limits.maxQuantity) {
      return reject(
        "invalid_event",
        `SKU "${item.producto_sku}" sums to ${existing.quantity}; the limit is ${limits.maxQuantity}`,
        `items[${index}].cantidad`,
      );
    }
  }
  // Only an origin we sell on is an echo; another one (a channel this service does not keep) is a sale the
  // POS made like any other, and lowers every channel.
  const echoed = typeof data.origen === "string" &&
    (KNOWN_CHANNELS as readonly string[]).includes(data.origen.trim().toLowerCase());
  if (echoed && data.origen_order_id == null) {
    return reject(
      "invalid_event",
      `origen_order_id is required with origen "${data.origen}" (which order the POS recorded)`,
      "origen_order_id",
    );
  }
  const identity = eventIdentity(properties.messageId, data as unknown as Record<string, unknown>);
  return {
    ok: true,
    event: {
      eventId: identity.eventId,
      identitySource: identity.source,
      tiendaId: data.tienda_id,
      items: [...items.values()],
      productConflicts: [...conflicts.values()],
      body: textBody,
      ...(echoed
        ? {
          origin: {
            channel: data.origen!.trim().toLowerCase() as ChannelName,
            orderId: String(data.origen_order_id).trim(),
          },
        }
        : {}),
    },
  };
}

/**
 * The event's identity: AMQP message_id, else event_id / venta_id in the body,
 * else a hash of the canonical body (two identical sales in one second collapse,
 * which is why the caller counts and warns about it).
 */
export function eventIdentity(
  messageId: string | undefined,
  body: Record<string, unknown>,
): { eventId: string; source: IdentitySource } {
  if (messageId && messageId.trim()) return { eventId: messageId.trim(), source: "message_id" };
  for (const key of ["event_id", "venta_id"] as const) {
    const value = body[key];
    if ((typeof value === "string" && value.trim()) || typeof value === "number") {
      return { eventId: String(value).trim(), source: key };
    }
  }
  const digest = createHash("sha256").update(canonicalJson(body)).digest("hex");
  return { eventId: `sha256:${digest}`, source: "body_hash" };
}

/** JSON with object keys sorted at every level, so equal bodies hash equally. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value).sort().map((key) =>
      `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`
    );
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * Whether a JSON text could hold what {@link findUnstorableValue} refuses; false means it cannot, and the
 * walk (a path string for every value) is skipped: decoding the bench's sales took 4.3–4.7 µs with it and
 * 3.4–3.6 µs without (docs/BENCHMARKS.md, seventh session). The text is valid UTF-8, which has no lone
 * surrogates, and JSON refuses raw control characters in strings, so a NUL or a lone surrogate can only come
 * in as a `\u` escape; and a value nested deeper than MAX_DEPTH has more than MAX_DEPTH brackets around it.
 * An escaped backslash before a `u` only sends the body to the walk, which decides.
 */
function mayBeUnstorable(text: string): boolean {
  if (text.includes("\\u")) return true;
  let opened = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c === 0x7b || c === 0x5b) && ++opened > MAX_DEPTH) return true; // { [
  }
  return false;
}

/**
 * Postgres jsonb cannot hold NUL characters or lone UTF-16 surrogates, and very
 * deep nesting is a denial-of-service shape. Finding them here keeps one bad
 * event from failing a whole custody batch.
 */
function findUnstorableValue(
  value: unknown,
  path: string,
  depth: number,
): { field: string; message: string } | undefined {
  if (depth > MAX_DEPTH) {
    return { field: path, message: `body is nested deeper than ${MAX_DEPTH} levels` };
  }
  if (typeof value === "string") {
    if (value.includes("\u0000")) {
      return { field: path, message: `${path || "value"} contains a NUL character` };
    }
    if (!value.isWellFormed()) {
      return { field: path, message: `${path || "value"} contains an unpaired UTF-16 surrogate` };
    }
    return undefined;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findUnstorableValue(value[i], `${path}[${i}]`, depth + 1);
      if (found) return found;
    }
  } else if (value !== null && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) {
      const childPath = path ? `${path}.${key}` : key;
      const bad = findUnstorableValue(key, childPath, depth + 1);
      if (bad) {
        return { field: childPath, message: `a key in ${path || "body"} is not storable: ${bad.message}` };
      }
      const found = findUnstorableValue(child, childPath, depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}

function formatPath(path: PropertyKey[]): string {
  return path.reduce<string>(
    (acc, key) => typeof key === "number" ? `${acc}[${key}]` : acc ? `${acc}.${String(key)}` : String(key),
    "",
  );
}
