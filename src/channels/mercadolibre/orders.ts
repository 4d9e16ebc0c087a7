/**
 * MercadoLibre's orders reaching the service (issue #14): the `orders_v2` notifications at
 * `POST /webhooks/mercadolibre`, the sweep of deliveries kept but not settled, and the
 * catch-up's {@link OrderSource} (`/orders/search` by last update).
 *
 * A notification carries no signature, so nothing in it is believed: it is only a hint that
 * `/orders/{id}` changed. The route checks what it can without spending anything (size, shape,
 * topic `orders_v2`, `user_id` our seller, a `/orders/<digits>` resource), takes the delivery into
 * custody (`orders.receive`, which also drops a re-delivery), answers 200 at once (MeLi wants an
 * answer within 500 ms, and re-sends otherwise), and only then fetches the order with our token —
 * within a per-minute cap ({@link FetchCap}), since those fetches share the seller's rate budget
 * with stock writes. The order MeLi returns is the truth: it must be our seller's, and its status
 * makes the events (order_events.ts), applied once by the ledger.
 */
import { z } from "zod";
import { logger } from "../../log.ts";
import type { OrderEvent, Quarantine } from "../../model/marketplace_order.ts";
import type { InboundRoute, OrderBook, OrderSource, StoredDelivery } from "../../sync/channel.ts";
import type { MeliClient } from "./client.ts";
import type { FetchCap } from "./fetch_cap.ts";
import { orderEvents, type ParsedOrder } from "./order_events.ts";
import { readCapped } from "../../sync/capped_body.ts";

const log = logger("mercadolibre");

/** MeLi's page of `/orders/search`. */
const SEARCH_PAGE = 50;
/** How many of one search MeLi pages through by offset. */
const SEARCH_MAX_OFFSET = 10_000;

const notificationSchema = z.object({
  _id: z.string().min(1).max(200),
  resource: z.string().min(1).max(200),
  user_id: z.union([z.number().int(), z.string().regex(/^\d+$/)]).transform(String),
  topic: z.string().min(1).max(100),
  attempts: z.number().int().optional(),
  sent: z.string().optional(),
  received: z.string().optional(),
});

/** Options of {@link MeliOrders}. */
export interface MeliOrdersOptions {
  client: MeliClient;
  book: OrderBook;
  /** Our seller's user id (MELI_USER_ID, the sandbox's, or `GET /users/me`). */
  sellerId(signal?: AbortSignal): Promise<string | undefined>;
  /** The POS store MeLi's orders draw from. */
  tiendaId: string;
  cap: FetchCap;
  /** Largest body taken (WEBHOOK_MAX_BYTES); a notification is about 250 bytes. */
  maxBytes: number;
  /** How often unsettled deliveries are re-processed (default 60 s). */
  sweepIntervalMs?: number;
}

/** What processing one delivery came to (for tests and logs). */
export type DeliveryOutcome = "settled" | "quarantined" | "capped" | "retry_later";

/** MeLi's orders: the notifications route, the deliveries sweep and the catch-up source. */
export class MeliOrders implements OrderSource {
  readonly route: InboundRoute;
  readonly #inFlight = new Map<string, Promise<DeliveryOutcome>>();
  readonly #stop = new AbortController();
  #sweeping: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly options: MeliOrdersOptions) {
    this.route = { method: "POST", path: "", handle: (request) => this.#notified(request) };
  }

  /** Sweeps unsettled deliveries now and every sweep interval, until {@link stop}. */
  start(): void {
    const sweep = () => {
      this.#sweeping ??= this.sweep().catch((error) => {
        log.warning("MercadoLibre deliveries sweep failed: {error}", { error: (error as Error).message });
      }).finally(() => this.#sweeping = undefined);
    };
    sweep();
    this.#timer = setInterval(sweep, this.options.sweepIntervalMs ?? 60_000);
  }

  /** Stops the sweep and waits for the deliveries being processed (the ledger must still be open). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#stop.abort();
    await this.#sweeping;
    await Promise.allSettled([...this.#inFlight.values()]);
  }

  /** The deliveries being processed now (tests wait for them). */
  settled(): Promise<unknown> {
    return Promise.allSettled([...this.#inFlight.values()]);
  }

  async #notified(request: Request): Promise<Response> {
    const { maxBytes } = this.options;
    const declared = Number(request.headers.get("content-length") ?? 0);
    if (declared > maxBytes) {
      await request.body?.cancel().catch(() => {});
      return answer(413, "too large for a notification");
    }
    // Read up to the limit only: anyone can POST here, and a chunked body has no length to check first.
    const bytes = await readCapped(request, maxBytes);
    if (!bytes) return answer(413, "too large for a notification");
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return answer(400, "not JSON");
    }
    const parsed = notificationSchema.safeParse(body);
    if (!parsed.success) return answer(400, "not a MercadoLibre notification");
    const notification = parsed.data;
    // Not ours to act on: answered 200 so MeLi does not re-send it, and nothing is stored or fetched.
    if (notification.topic !== "orders_v2") return answer(200, `topic ${notification.topic} is not taken`);
    if (!/^\/orders\/\d{1,20}$/.test(notification.resource)) return answer(200, "not an order resource");
    const seller = await this.options.sellerId().catch(() => undefined);
    // Our seller unknown (MeLi unreachable): a 5xx makes MeLi send it again later.
    if (seller === undefined) return answer(503, "our seller is not known yet; send it again later");
    if (notification.user_id !== seller) {
      log.info("MercadoLibre notification for user {user} ignored: not our seller", {
        user: notification.user_id,
      });
      return answer(200, "not our seller");
    }
    const stored = await this.options.book.receive({
      channel: "mercadolibre",
      // A re-send of one notification keeps its _id; a new change of the order gets a new one.
      deliveryId: `${notification.resource}#${notification._id}`,
      topic: notification.topic,
      body: JSON.stringify(notification),
    });
    if (stored.duplicate) return answer(200, "already received");
    this.#process({ id: stored.id, body: JSON.stringify(notification) });
    return answer(200, "received");
  }

  /** Processes a stored delivery in the background, once at a time per delivery. */
  #process(delivery: Pick<StoredDelivery, "id" | "body">): Promise<DeliveryOutcome> {
    const running = this.#inFlight.get(delivery.id);
    if (running) return running;
    const work = this.#settle(delivery).catch((error) => {
      // The ledger failed (Postgres away): the delivery stays unsettled; the sweep comes back to it.
      log.warning("MercadoLibre delivery {id} not processed: {error}", {
        id: delivery.id,
        error: (error as Error).message,
      });
      return "retry_later" as const;
    }).finally(() => this.#inFlight.delete(delivery.id));
    this.#inFlight.set(delivery.id, work);
    return work;
  }

  async #settle(delivery: Pick<StoredDelivery, "id" | "body">): Promise<DeliveryOutcome> {
    const { book } = this.options;
    const quarantine = async (q: Quarantine) => {
      log.warning("MercadoLibre delivery {id} quarantined ({reason}): {error}", { id: delivery.id, ...q });
      await book.settle(delivery.id, { quarantine: q });
      return "quarantined" as const;
    };
    const notification = notificationSchema.safeParse(JSON.parse(delivery.body));
    const orderId = notification.success
      ? /^\/orders\/(\d+)$/.exec(notification.data.resource)?.[1]
      : undefined;
    if (!orderId) {
      return await quarantine({ reason: "unusable_notification", error: "no order resource in it" });
    }
    if (!await this.options.cap.tryTake()) {
      log.info(
        "MercadoLibre order {orderId}: notification fetch cap reached; the sweep or catch-up takes it",
        {
          orderId,
        },
      );
      return "capped";
    }
    const fetched = await this.#fetch(orderId, "notification", this.#stop.signal);
    if (fetched.kind === "retry_later") return "retry_later";
    if (fetched.kind === "refused") return await quarantine(fetched);
    let applied: Quarantine | undefined;
    try {
      applied = await this.#apply(fetched.order);
    } catch (error) {
      // An event the ledger refuses as impossible (no retry can change it), unlike a ledger outage.
      if ((error as Error).name !== "InvalidOrderEventError") throw error;
      applied = { reason: "invalid_order", error: (error as Error).message };
    }
    if (applied) return await quarantine(applied);
    await book.settle(delivery.id, { done: true });
    return "settled";
  }

  /** `GET /orders/{id}` with our token, checked to be our seller's order. */
  async #fetch(
    orderId: string,
    via: OrderEvent["via"],
    signal: AbortSignal,
  ): Promise<
    | { kind: "order"; order: Extract<ParsedOrder, { ok: true }> }
    | { kind: "refused"; reason: string; error: string }
    | { kind: "retry_later" }
  > {
    const result = await this.options.client.request<unknown>("GET", `/orders/${orderId}`, {
      operation: "get_order",
      signal,
    });
    if (result.kind === "rejected") {
      const reason = result.status === 404
        ? "order_not_found"
        : result.status === 403
        ? "not_our_order"
        : "order_refused";
      return {
        kind: "refused",
        reason,
        error: `GET /orders/${orderId}: HTTP ${result.status}: ${result.error}`,
      };
    }
    if (result.kind !== "ok") {
      log.info("MercadoLibre order {orderId} not fetched now ({kind}: {error}); tried again later", {
        orderId,
        kind: result.kind,
        error: result.error,
      });
      return { kind: "retry_later" };
    }
    const order = orderEvents(result.data, this.options.tiendaId, via);
    if (!order.ok) return { kind: "refused", reason: order.reason, error: order.error };
    const seller = await this.options.sellerId(signal);
    if (seller === undefined) return { kind: "retry_later" };
    // Readable is not ours: our seller may be the buyer of another seller's order.
    if (order.sellerId !== seller) {
      return {
        kind: "refused",
        reason: "not_our_seller",
        error: `order ${orderId} is seller ${order.sellerId}'s, not ours (${seller}): nothing applied`,
      };
    }
    return { kind: "order", order };
  }

  /** Applies an order's events; a quarantine when some lines could not be used. */
  async #apply(order: Extract<ParsedOrder, { ok: true }>): Promise<Quarantine | undefined> {
    for (const event of order.events) {
      const effect = await this.options.book.apply(event);
      log.info("MercadoLibre order {orderId} ({kind}, via {via}): {outcome}, {changes} stock changes", {
        orderId: order.orderId,
        kind: event.kind,
        via: event.via,
        outcome: effect.outcome,
        changes: effect.changes,
      });
    }
    if (order.unmapped.length === 0) return undefined;
    return {
      reason: "unmapped_lines",
      error:
        `order ${order.orderId}: lines ${order.unmapped.join(", ")} have no seller_sku, so no SKU to move ` +
        "stock by (the other lines were applied); set the listing's SKU on MercadoLibre",
    };
  }

  /** Re-processes deliveries kept but not settled (the service stopped after answering, or the cap). */
  async sweep(limit = 100): Promise<void> {
    const pending = await this.options.book.unsettled("mercadolibre", limit);
    for (const delivery of pending) {
      if (this.#stop.signal.aborted) return;
      if (await this.#process(delivery) === "capped") return; // the rest waits for the next minute
    }
  }

  /**
   * Our seller's orders updated since `since`, oldest update first. MeLi's search sorts by creation
   * date only, so the whole window is read before anything is yielded; the window is the time
   * since the last watermark (minutes, or the time the service was down).
   */
  async *updatedSince(
    since: string,
    signal: AbortSignal,
  ): AsyncIterable<{ events: OrderEvent[]; updatedAt: string }[]> {
    const seller = await this.options.sellerId(signal);
    if (seller === undefined) throw new Error("MercadoLibre seller unknown: orders not searched");
    const from = new Date(since).toISOString().replace("Z", "-00:00");
    const found = new Map<string, Extract<ParsedOrder, { ok: true }>>();
    for (let offset = 0;; offset += SEARCH_PAGE) {
      const result = await this.options.client.request<{ paging: { total: number }; results: unknown[] }>(
        "GET",
        "/orders/search",
        {
          operation: "search_orders",
          query: {
            seller,
            "order.date_last_updated.from": from,
            sort: "date_asc",
            offset: String(offset),
            limit: String(SEARCH_PAGE),
          },
          signal,
        },
      );
      if (result.kind !== "ok") throw new Error(`GET /orders/search: ${result.kind}: ${result.error}`);
      for (const body of result.data.results) {
        const order = orderEvents(body, this.options.tiendaId, "catch_up");
        if (!order.ok) {
          log.warning("MercadoLibre order in the search not usable: {error}", { error: order.error });
          continue;
        }
        if (order.sellerId !== seller) continue;
        if (order.unmapped.length > 0) {
          log.warning("MercadoLibre order {orderId}: lines {lines} have no seller_sku; not applied", {
            orderId: order.orderId,
            lines: order.unmapped.join(", "),
          });
        }
        found.set(order.orderId, order);
      }
      const total = result.data.paging.total;
      if (result.data.results.length === 0 || offset + SEARCH_PAGE >= total) break;
      if (offset + SEARCH_PAGE >= SEARCH_MAX_OFFSET) {
        log.warning("MercadoLibre order search since {since} stops at {max} orders (MeLi's paging limit)", {
          since,
          max: SEARCH_MAX_OFFSET,
        });
        break;
      }
    }
    const orders = [...found.values()].sort((a, b) => a.updatedAt.localeCompare(b.updatedAt));
    for (let i = 0; i < orders.length; i += SEARCH_PAGE) {
      yield orders.slice(i, i + SEARCH_PAGE).map((o) => ({ events: o.events, updatedAt: o.updatedAt }));
    }
  }
}

function answer(status: number, message: string): Response {
  return new Response(JSON.stringify({ status, message }), {
    status,
    headers: { "content-type": "application/json" },
  });
}
