/**
 * Shopify orders as stock movements (issue #14): the `POST /webhooks/shopify` route, what its
 * payloads mean as {@link OrderEvent}s, and the catch-up source that reads the same orders from
 * the Admin API.
 *
 * The route, in Shopify's order of things: the size limit, then the HMAC (base64 HMAC-SHA256 of
 * the raw bytes with SHOPIFY_WEBHOOK_SECRET, compared in constant time) — a missing or wrong one
 * is 401 and nothing else happens —, then custody (`orders.receive`, deduplicated per topic and
 * Shopify event), then 200 within Shopify's 5 s; the work (parse → events → `orders.apply` →
 * `orders.settle`) happens after the answer. A signed body that cannot be used is settled into
 * quarantine with a reason, never answered non-2xx (Shopify would retry it for hours and then
 * delete the subscription). Deliveries stored but not settled (the service stopped after
 * answering) are processed again on start and every minute.
 *
 * Which POS store an order draws from: the order's location through the location map
 * (SHOPIFY_LOCATIONS / the sandbox's), else SHOPIFY_ORDER_TIENDA_ID, else the only mapped store.
 * Shopify names a location for orders sold at a location (`location_id`, GraphQL `retailLocation`);
 * an online order names none, so it follows the configured store.
 *
 * Restocks are Shopify's own: a refund line with a restock type other than `no_restock` put its
 * units back at its location, and is a `restock` event whose `restockId` is the refund's id. A
 * restocking cancellation is such a refund too (`orders/cancelled` carries it in `refunds`, and
 * `refunds/create` delivers it again): both name the same refund, so the second is a duplicate,
 * and the ledger restocks each line at most what it sold.
 */
import { timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { logger } from "../../log.ts";
import type { OrderEvent, OrderLine, Quarantine } from "../../model/marketplace_order.ts";
import type { InboundRoute, OrderBook, OrderSource, StoredDelivery } from "../../sync/channel.ts";
import type { LocationMap } from "./channel.ts";
import type { CallResult, ShopifyClient } from "./client.ts";
import { ORDERS_UPDATED_SINCE } from "./documents.ts";
import { readCapped } from "../../sync/capped_body.ts";

const log = logger("shopify");

/** The biggest webhook body taken by default (WEBHOOK_MAX_BYTES's default). */
export const SHOPIFY_WEBHOOK_MAX_BYTES = 1024 * 1024;
/** How often deliveries stored but not settled are processed again. */
export const SWEEP_INTERVAL_MS = 60_000;
/** After this many processing attempts a delivery is quarantined rather than tried forever. */
export const MAX_PROCESSING_ATTEMPTS = 20;

/** The topics that move stock. */
export const ORDER_TOPICS = ["orders/create", "orders/cancelled", "refunds/create"] as const;

// ---- Which store an order draws from ----

/** Turns Shopify locations into POS stores (see the module's comment for the rule). */
export interface OrderStoreRule {
  /** The store of an order sold at `locationId` (a Location gid), or at no named location. */
  orderStore(locationId: string | undefined): string | undefined;
  /** The store a restock at `locationId` went back to, when the map names one. */
  mappedStore(locationId: string | undefined): string | undefined;
}

/** The store rule from the location map and SHOPIFY_ORDER_TIENDA_ID. */
export function orderStoreRule(locations: LocationMap, orderTiendaId?: string): OrderStoreRule {
  const mappedStore = (locationId: string | undefined) => {
    if (!locationId) return undefined;
    const stores = locations.stores().filter((s) => locations.locationFor(s) === locationId);
    // Stores sharing one location cannot be told apart by it.
    return stores.length === 1 ? stores[0] : undefined;
  };
  const only = () => {
    const stores = locations.stores();
    return stores.length === 1 ? stores[0] : undefined;
  };
  return {
    orderStore: (locationId) => mappedStore(locationId) ?? orderTiendaId ?? only(),
    mappedStore,
  };
}

// ---- What an order says, whichever way it came ----

/** An order's facts as both the webhook payloads and the Admin API give them. */
interface OrderFacts {
  orderId: string;
  createdAt: string;
  /** Where it was sold (Location gid), when Shopify names a place. */
  locationId?: string;
  lines: OrderLine[];
  refunds: RefundFacts[];
}

interface RefundFacts {
  refundId: string;
  createdAt: string;
  lines: { lineId: string; sku: string | null; quantity: number; restocked: boolean; locationId?: string }[];
}

const locationGid = (id: number | string | null | undefined) =>
  id === null || id === undefined
    ? undefined
    : String(id).startsWith("gid://")
    ? String(id)
    : `gid://shopify/Location/${id}`;

/** The numeric tail of a gid (`gid://shopify/LineItem/123` → `123`): the id webhooks use. */
const legacyId = (gid: string) => gid.slice(gid.lastIndexOf("/") + 1);

const iso = (text: string) => new Date(text).toISOString();

/** An order's restocks: one event per refund (per location, if a refund restocked at several). */
function restockEvents(
  orderId: string,
  refunds: RefundFacts[],
  via: OrderEvent["via"],
  rule: OrderStoreRule,
): OrderEvent[] {
  const events: OrderEvent[] = [];
  for (const refund of refunds) {
    const byLocation = new Map<string | undefined, OrderLine[]>();
    for (const line of refund.lines) {
      if (!line.restocked || !line.sku || line.quantity <= 0) continue;
      const lines = byLocation.get(line.locationId) ?? [];
      lines.push({ lineId: line.lineId, sku: line.sku, quantity: line.quantity });
      byLocation.set(line.locationId, lines);
    }
    for (const [locationId, lines] of byLocation) {
      events.push({
        kind: "restock",
        origin: "shopify",
        orderId,
        restockId: byLocation.size === 1
          ? refund.refundId
          : `${refund.refundId}@${legacyId(locationId ?? "")}`,
        tiendaId: rule.mappedStore(locationId),
        lines,
        occurredAt: refund.createdAt,
        via,
      });
    }
  }
  return events;
}

/** An order's events: it took its lines' units, and its refunds put some back. */
function orderEvents(
  facts: OrderFacts,
  via: OrderEvent["via"],
  rule: OrderStoreRule,
): { events: OrderEvent[] } | { quarantine: Quarantine } {
  const events: OrderEvent[] = [];
  if (facts.lines.length) {
    const tiendaId = rule.orderStore(facts.locationId);
    if (!tiendaId) {
      return {
        quarantine: {
          reason: "store_unknown",
          error: `Shopify order ${facts.orderId} ` +
            (facts.locationId
              ? `was sold at ${facts.locationId}, which SHOPIFY_LOCATIONS maps to no single store`
              : "names no location (an online order)") +
            ", and no store is configured for orders: set SHOPIFY_ORDER_TIENDA_ID (or map the location)",
        },
      };
    }
    events.push({
      kind: "created",
      origin: "shopify",
      orderId: facts.orderId,
      tiendaId,
      lines: facts.lines,
      occurredAt: facts.createdAt,
      via,
    });
  }
  events.push(...restockEvents(facts.orderId, facts.refunds, via, rule));
  return { events };
}

// ---- Webhook payloads (REST serialization) ----

const id = z.union([z.number().int(), z.string().regex(/^\d+$/)]).transform(String);
const time = z.string().refine((t) => !Number.isNaN(Date.parse(t)), "not a time").transform(iso);

const REFUND = z.object({
  id,
  created_at: time,
  refund_line_items: z.array(z.object({
    line_item_id: id,
    quantity: z.number().int(),
    restock_type: z.string().nullish(),
    location_id: z.union([z.number().int(), z.string()]).nullish(),
    line_item: z.object({ sku: z.string().nullish() }).nullish(),
  })),
});

const ORDER = z.object({
  id,
  created_at: time,
  location_id: z.union([z.number().int(), z.string()]).nullish(),
  line_items: z.array(z.object({ id, sku: z.string().nullish(), quantity: z.number().int() })),
  refunds: z.array(REFUND).nullish(),
});

type RefundPayload = z.infer<typeof REFUND>;

function refundFacts(refund: RefundPayload, skus: Map<string, string>): RefundFacts {
  return {
    refundId: refund.id,
    createdAt: refund.created_at,
    lines: refund.refund_line_items.map((l) => ({
      lineId: l.line_item_id,
      sku: l.line_item?.sku || skus.get(l.line_item_id) || null,
      quantity: l.quantity,
      restocked: !!l.restock_type && l.restock_type !== "no_restock",
      locationId: locationGid(l.location_id),
    })),
  };
}

/** Lines that name a SKU (a custom item without one moves no stock). */
function soldLines(lines: { id: string; sku?: string | null; quantity: number }[]): OrderLine[] {
  return lines.filter((l) => l.sku && l.quantity > 0).map((l) => ({
    lineId: l.id,
    sku: l.sku!,
    quantity: l.quantity,
  }));
}

/**
 * What one signed webhook means: its events, or why it cannot be used. `orders/create` and
 * `orders/cancelled` carry the whole order (an order seen again is a duplicate inside `apply`),
 * `refunds/create` one refund.
 */
export function parseShopifyWebhook(
  topic: string,
  body: string,
  rule: OrderStoreRule,
): { events: OrderEvent[] } | { quarantine: Quarantine } {
  if (!(ORDER_TOPICS as readonly string[]).includes(topic)) {
    return {
      quarantine: {
        reason: "topic_not_handled",
        error: `topic "${topic}" moves no stock here: subscribe only ${
          ORDER_TOPICS.join(", ")
        } to /webhooks/shopify`,
      },
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (e) {
    return { quarantine: { reason: "invalid_json", error: `the body is not JSON: ${(e as Error).message}` } };
  }
  const schema = topic === "refunds/create" ? REFUND.extend({ order_id: id }) : ORDER;
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      quarantine: {
        reason: "unexpected_payload",
        error: `${topic} payload does not have the shape Shopify documents: ${
          issue.path.join(".")
        }: ${issue.message}`,
      },
    };
  }
  if (topic === "refunds/create") {
    const refund = parsed.data as RefundPayload & { order_id: string };
    return { events: restockEvents(refund.order_id, [refundFacts(refund, new Map())], "webhook", rule) };
  }
  const order = parsed.data as z.infer<typeof ORDER>;
  const skus = new Map(order.line_items.flatMap((l) => l.sku ? [[l.id, l.sku] as const] : []));
  return orderEvents(
    {
      orderId: order.id,
      createdAt: order.created_at,
      locationId: locationGid(order.location_id),
      lines: soldLines(order.line_items),
      refunds: (order.refunds ?? []).map((r) => refundFacts(r, skus)),
    },
    "webhook",
    rule,
  );
}

// ---- The route ----

const encoder = new TextEncoder();

/** Options of {@link ShopifyOrderWebhooks}. */
export interface ShopifyOrderWebhooksOptions {
  /** SHOPIFY_WEBHOOK_SECRET (the app's client secret); undefined: every delivery is refused. */
  secret: string | undefined;
  book: OrderBook;
  rule: OrderStoreRule;
  /** WEBHOOK_MAX_BYTES. */
  maxBodyBytes?: number;
  sweepIntervalMs?: number;
}

function base64Bytes(text: string): Uint8Array | undefined {
  try {
    return Uint8Array.from(atob(text.trim()), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

/**
 * Shopify's order webhooks: the inbound route, the processing after the answer, and the sweep
 * that processes again what was taken into custody but not settled.
 */
export class ShopifyOrderWebhooks {
  readonly route: InboundRoute;
  #key: Promise<CryptoKey> | undefined;
  #working = new Map<string, Promise<void>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  readonly #maxBytes: number;

  constructor(readonly options: ShopifyOrderWebhooksOptions) {
    this.#maxBytes = options.maxBodyBytes ?? SHOPIFY_WEBHOOK_MAX_BYTES;
    if (options.secret) {
      this.#key = crypto.subtle.importKey(
        "raw",
        encoder.encode(options.secret),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign"],
      );
    }
    this.route = { method: "POST", path: "", handle: (request) => this.handle(request) };
  }

  /** Whether `signature` (the header's base64) is the HMAC of `body`, compared in constant time. */
  async #signed(body: Uint8Array, signature: string | null): Promise<boolean> {
    if (!this.#key || !signature) return false;
    const given = base64Bytes(signature);
    const expected = new Uint8Array(await crypto.subtle.sign("HMAC", await this.#key, body as BufferSource));
    // The length of an HMAC-SHA256 is public: only equal lengths are compared, in constant time.
    return given !== undefined && given.byteLength === expected.byteLength &&
      timingSafeEqual(given, expected);
  }

  /** `POST /webhooks/shopify`. */
  async handle(request: Request): Promise<Response> {
    const declared = Number(request.headers.get("content-length"));
    if (Number.isFinite(declared) && declared > this.#maxBytes) {
      await request.body?.cancel().catch(() => {});
      return json(413, { error: "payload_too_large", limit: this.#maxBytes });
    }
    const body = await readCapped(request, this.#maxBytes);
    if (!body) return json(413, { error: "payload_too_large", limit: this.#maxBytes });
    if (!await this.#signed(body, request.headers.get("x-shopify-hmac-sha256"))) {
      log.warning("refused a Shopify webhook without a valid X-Shopify-Hmac-Sha256{why}", {
        why: this.#key ? "" : " (SHOPIFY_WEBHOOK_SECRET is not set)",
      });
      return json(401, { error: "invalid_signature" });
    }
    const topic = request.headers.get("x-shopify-topic") ?? "";
    const text = new TextDecoder().decode(body);
    // Per topic: one merchant action's deliveries share an event id across topics (a cancellation's
    // orders/cancelled and refunds/create), and each must be processed.
    const eventId = request.headers.get("x-shopify-event-id") ??
      request.headers.get("x-shopify-webhook-id") ??
      `sha256:${await sha256(body)}`;
    let stored: { id: string; duplicate: boolean };
    try {
      stored = await this.options.book.receive({
        channel: "shopify",
        deliveryId: `${topic}:${eventId}`,
        topic,
        body: text,
      });
    } catch (error) {
      // Not in custody: Shopify must send it again.
      log.error("could not take a Shopify webhook ({topic}) into custody: {error}", {
        topic,
        error: (error as Error).message,
      });
      return json(503, { error: "ledger_unavailable" });
    }
    if (!stored.duplicate) {
      this.#process({ id: stored.id, deliveryId: eventId, topic, body: text, attempts: 0 });
    }
    return json(200, { received: true, duplicate: stored.duplicate });
  }

  /** Processes one stored delivery in the background (once at a time per delivery). */
  #process(delivery: StoredDelivery): Promise<void> {
    const running = this.#working.get(delivery.id);
    if (running) return running;
    const work = this.#work(delivery).finally(() => this.#working.delete(delivery.id));
    this.#working.set(delivery.id, work);
    return work;
  }

  async #work(delivery: StoredDelivery): Promise<void> {
    const { book, rule } = this.options;
    try {
      const parsed = parseShopifyWebhook(delivery.topic, delivery.body, rule);
      if ("quarantine" in parsed) {
        log.warning("Shopify webhook {topic} quarantined: {reason}: {error}", {
          topic: delivery.topic,
          ...parsed.quarantine,
        });
        await book.settle(delivery.id, { quarantine: parsed.quarantine });
        return;
      }
      for (const event of parsed.events) {
        const effect = await book.apply(event);
        // The order book logs each effect; this says which delivery brought it.
        log.debug("Shopify order {orderId} {kind} ({topic}): {outcome}, {changes} stock changes", {
          orderId: event.orderId,
          kind: event.kind,
          topic: delivery.topic,
          ...effect,
        });
      }
      await book.settle(delivery.id, { done: true });
    } catch (error) {
      // Left unsettled: the sweep tries again (a ledger outage, a deploy).
      // `attempts` counts the sweeps that handed it out (0 when processed right after the answer).
      const attempts = Math.max(1, delivery.attempts);
      log.error("processing Shopify webhook {topic} failed (attempt {attempts}), will retry: {error}", {
        topic: delivery.topic,
        attempts,
        error: (error as Error).message,
      });
      if (attempts >= MAX_PROCESSING_ATTEMPTS) {
        await book.settle(delivery.id, {
          quarantine: {
            reason: "processing_failed",
            error: `gave up after ${attempts} attempts: ${(error as Error).message}`,
          },
        }).catch(() => {});
      }
    }
  }

  /** Processes deliveries taken into custody but never settled (a stop after the 200). */
  async sweep(): Promise<number> {
    let count = 0;
    for (const delivery of await this.options.book.unsettled("shopify", 100)) {
      if (this.#stopped) break;
      if (this.#working.has(delivery.id)) continue;
      count++;
      await this.#process(delivery);
    }
    return count;
  }

  /** Sweeps now and every minute. */
  start(): void {
    const sweep = () =>
      this.sweep().catch((error) =>
        log.warning("sweeping unsettled Shopify webhooks failed: {error}", {
          error: (error as Error).message,
        })
      );
    sweep();
    this.#timer = setInterval(sweep, this.options.sweepIntervalMs ?? SWEEP_INTERVAL_MS);
  }

  /** Stops the sweep and waits (until `deadline`, epoch ms) for the work under way. */
  async stop(deadline = Date.now() + 5_000): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    const left = Math.max(0, deadline - Date.now());
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#working.values()]),
      new Promise((r) => timer = setTimeout(r, left)),
    ]);
    clearTimeout(timer);
  }
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- Catch-up: the same orders from the Admin API ----

interface OrdersPage {
  orders: {
    nodes: {
      legacyResourceId: string;
      createdAt: string;
      updatedAt: string;
      cancelledAt: string | null;
      retailLocation: { id: string } | null;
      lineItems: {
        nodes: { id: string; sku: string | null; quantity: number }[];
        pageInfo: { hasNextPage: boolean };
      };
      refunds: {
        legacyResourceId: string;
        createdAt: string | null;
        refundLineItems: {
          nodes: {
            lineItem: { id: string; sku: string | null };
            quantity: number;
            restockType: string;
            restocked: boolean;
            location: { id: string } | null;
          }[];
          pageInfo: { hasNextPage: boolean };
        };
      }[];
    }[];
    pageInfo: { hasNextPage: boolean; endCursor: string | null };
  };
}

/** The catch-up's error when Shopify cannot be read now (the poll tries again next round). */
export class OrderSourceError extends Error {
  override name = "OrderSourceError";
}

/**
 * The orders updated since a watermark, oldest update first, three per call (see
 * {@link ORDERS_UPDATED_SINCE}): each order's events as a webhook would have given them (an
 * order whose store cannot be told is left out, with an error in the log — its webhook was
 * quarantined with the same reason).
 */
export function shopifyOrderSource(client: ShopifyClient, rule: OrderStoreRule): OrderSource {
  return {
    async *updatedSince(since, signal) {
      // Quoted: a time holds colons.
      const query = `updated_at:>='${new Date(since).toISOString()}'`;
      let after: string | null = null;
      for (;;) {
        const result: CallResult<OrdersPage> = await client.call<OrdersPage>(
          "OrdersUpdatedSince",
          ORDERS_UPDATED_SINCE,
          {
            query,
            after,
          },
          signal,
        );
        if (result.kind !== "ok") {
          throw new OrderSourceError(
            `reading Shopify orders updated since ${since} failed (${result.kind}): ${result.error}`,
          );
        }
        const page: OrdersPage["orders"] = result.data.orders;
        yield page.nodes.flatMap((order) => {
          if (order.lineItems.pageInfo.hasNextPage || order.refunds.length >= 3) {
            log.warning(
              "Shopify order {orderId} is larger than one catch-up read (50 lines, 3 refunds): " +
                "the rest relies on its webhooks",
              { orderId: order.legacyResourceId },
            );
          }
          const outcome = orderEvents(
            {
              orderId: order.legacyResourceId,
              createdAt: iso(order.createdAt),
              locationId: order.retailLocation?.id,
              lines: soldLines(order.lineItems.nodes.map((l) => ({ ...l, id: legacyId(l.id) }))),
              refunds: order.refunds.map((r) => ({
                refundId: r.legacyResourceId,
                createdAt: iso(r.createdAt ?? order.updatedAt),
                lines: r.refundLineItems.nodes.map((l) => ({
                  lineId: legacyId(l.lineItem.id),
                  sku: l.lineItem.sku,
                  quantity: l.quantity,
                  restocked: l.restocked && l.restockType !== "NO_RESTOCK",
                  locationId: l.location?.id,
                })),
              })),
            },
            "catch_up",
            rule,
          );
          if ("quarantine" in outcome) {
            log.error("catch-up skipped Shopify order {orderId}: {reason}: {error}", {
              orderId: order.legacyResourceId,
              ...outcome.quarantine,
            });
            return [{ events: [], updatedAt: iso(order.updatedAt) }];
          }
          return [{ events: outcome.events, updatedAt: iso(order.updatedAt) }];
        });
        if (!page.pageInfo.hasNextPage || !page.pageInfo.endCursor) return;
        after = page.pageInfo.endCursor;
      }
    },
  };
}
