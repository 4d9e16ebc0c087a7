/**
 * The Shopify sandbox's orders: placed at a location (its units leave `available` for
 * `committed` there, as Shopify moves them), cancelled (a restocking cancellation is a
 * refund whose lines have restock type `cancel`, and puts the units back), refunded line
 * by line with or without restock. Each change is one "merchant action" whose webhook
 * payloads (REST serialization, as Shopify's webhooks carry them) are returned for
 * delivery. Fulfillment is not modeled: every line is unfulfilled, so a restock is a
 * `cancel` restock at the line's location.
 */
import type { SandboxVariant, ShopifyInventory } from "./inventory.ts";

/** One line of a sandbox order. */
export interface SandboxLineItem {
  legacyId: number;
  variant: SandboxVariant;
  quantity: number;
}

/** One line of a refund. */
export interface SandboxRefundLine {
  legacyId: number;
  lineItem: SandboxLineItem;
  quantity: number;
  restockType: "cancel" | "no_restock";
  /** Where the units went back (null without restock). */
  locationId: string | null;
}

/** A refund (a restocking cancellation is one too). */
export interface SandboxRefund {
  legacyId: number;
  createdAt: number;
  lines: SandboxRefundLine[];
}

/** An order as the sandbox keeps it. */
export interface SandboxOrder {
  legacyId: number;
  number: number;
  /** Where the units were taken from. */
  locationId: string;
  /** "pos": sold at the location (`location_id` / `retailLocation` name it); "web": online. */
  sourceName: "pos" | "web";
  lines: SandboxLineItem[];
  refunds: SandboxRefund[];
  createdAt: number;
  updatedAt: number;
  cancelledAt: number | null;
  cancelReason: string | null;
}

/** A request the shop refuses (answered 4xx by the admin route). */
export class OrderRefused extends Error {
  override name = "OrderRefused";
  constructor(readonly status: 404 | 422, message: string) {
    super(message);
  }
}

/** A webhook a merchant action triggers: its topic and REST payload. */
export interface OrderWebhook {
  topic: "orders/create" | "orders/cancelled" | "refunds/create";
  payload: Record<string, unknown>;
}

const ORDER_BASE = 5_900_000_000_000;
const LINE_BASE = 15_000_000_000_000;
const REFUND_BASE = 930_000_000_000;
const REFUND_LINE_BASE = 480_000_000_000;
/** The sandbox shop's time zone offset: Shopify's REST payloads carry the shop's local time. */
const SHOP_OFFSET_MINUTES = -180;

/** REST time as Shopify serializes it: the shop's local time with its offset, whole seconds. */
export function restTime(ms: number): string {
  const local = new Date(ms + SHOP_OFFSET_MINUTES * 60_000).toISOString().slice(0, 19);
  const sign = SHOP_OFFSET_MINUTES < 0 ? "-" : "+";
  const abs = Math.abs(SHOP_OFFSET_MINUTES);
  return `${local}${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${
    String(abs % 60).padStart(2, "0")
  }`;
}

/** GraphQL `DateTime`: UTC, whole seconds. */
export function graphqlTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

function legacyOf(gid: string): number {
  return Number(gid.split("/").at(-1));
}

/** The shop's orders. */
export class ShopifyOrders {
  #orders: SandboxOrder[] = [];
  #lineSeq = 0;
  #refundSeq = 0;
  #refundLineSeq = 0;

  constructor(readonly inventory: ShopifyInventory, readonly now: () => number = Date.now) {}

  /** Every order, oldest first. */
  get orders(): readonly SandboxOrder[] {
    return this.#orders;
  }

  /** The order with this legacy id. */
  get(legacyId: number): SandboxOrder | undefined {
    return this.#orders.find((o) => o.legacyId === legacyId);
  }

  /**
   * Places an order at a location: each line's units leave `available` there (inventory policy
   * "deny", Shopify's default: a line short of stock refuses the whole order).
   */
  place(input: {
    locationId: string;
    lines: { sku: string; quantity: number }[];
    sourceName?: "pos" | "web";
  }): { order: SandboxOrder; webhooks: OrderWebhook[] } {
    const location = this.inventory.location(input.locationId);
    if (!location) throw new OrderRefused(422, `location ${input.locationId} does not exist`);
    if (!input.lines.length) throw new OrderRefused(422, "line_items: must have at least one line");
    const wanted = new Map<string, number>();
    const lines = input.lines.map(({ sku, quantity }) => {
      if (!Number.isInteger(quantity) || quantity < 1) {
        throw new OrderRefused(422, `line_items: quantity of ${sku} must be a whole number > 0`);
      }
      const variant = this.inventory.variants.find((v) => v.sku === sku);
      if (!variant) throw new OrderRefused(422, `line_items: no variant has SKU "${sku}"`);
      const total = (wanted.get(variant.inventoryItemId) ?? 0) + quantity;
      wanted.set(variant.inventoryItemId, total);
      const available = this.inventory.available(variant.inventoryItemId, location.id) ?? 0;
      if (total > available) {
        throw new OrderRefused(422, `line_items: ${sku} has ${available} available at ${location.name}`);
      }
      return { legacyId: LINE_BASE + ++this.#lineSeq, variant, quantity };
    });
    for (const line of lines) {
      this.inventory.commitToOrder(line.variant.inventoryItemId, location.id, line.quantity);
    }
    const at = this.now();
    const number = this.#orders.length + 1;
    const order: SandboxOrder = {
      legacyId: ORDER_BASE + number,
      number,
      locationId: location.id,
      sourceName: input.sourceName ?? "pos",
      lines,
      refunds: [],
      createdAt: at,
      updatedAt: at,
      cancelledAt: null,
      cancelReason: null,
    };
    this.#orders.push(order);
    return { order, webhooks: [{ topic: "orders/create", payload: this.orderPayload(order) }] };
  }

  /**
   * Cancels an order. With `restock`, a refund puts every line's units not yet put back
   * (restock type `cancel`): Shopify sends `orders/cancelled` (its `refunds` include that
   * refund) and `refunds/create`.
   */
  cancel(legacyId: number, options: { restock?: boolean; reason?: string } = {}): {
    order: SandboxOrder;
    webhooks: OrderWebhook[];
  } {
    const order = this.#order(legacyId);
    if (order.cancelledAt !== null) throw new OrderRefused(422, "Order has already been cancelled");
    const lines = order.lines
      .map((line) => ({ lineItemId: line.legacyId, quantity: line.quantity - this.#refunded(order, line) }))
      .filter((l) => l.quantity > 0);
    const webhooks: OrderWebhook[] = [];
    let refund: SandboxRefund | undefined;
    if (lines.length) refund = this.#refund(order, lines, options.restock ?? true);
    order.cancelledAt = this.now();
    order.cancelReason = options.reason ?? "customer";
    order.updatedAt = order.cancelledAt;
    webhooks.push({ topic: "orders/cancelled", payload: this.orderPayload(order) });
    if (refund) webhooks.push({ topic: "refunds/create", payload: this.refundPayload(order, refund) });
    return { order, webhooks };
  }

  /** Refunds lines (each at most what it has not been refunded yet), restocking them or not. */
  refund(legacyId: number, input: { lines: { lineItemId: number; quantity: number }[]; restock: boolean }): {
    order: SandboxOrder;
    refund: SandboxRefund;
    webhooks: OrderWebhook[];
  } {
    const order = this.#order(legacyId);
    if (!input.lines.length) throw new OrderRefused(422, "refund_line_items: must have at least one line");
    const refund = this.#refund(order, input.lines, input.restock);
    order.updatedAt = refund.createdAt;
    return {
      order,
      refund,
      webhooks: [{ topic: "refunds/create", payload: this.refundPayload(order, refund) }],
    };
  }

  #order(legacyId: number): SandboxOrder {
    const order = this.get(legacyId);
    if (!order) throw new OrderRefused(404, "Not Found");
    return order;
  }

  #refunded(order: SandboxOrder, line: SandboxLineItem): number {
    return order.refunds.flatMap((r) => r.lines).filter((l) => l.lineItem === line)
      .reduce((sum, l) => sum + l.quantity, 0);
  }

  #refund(
    order: SandboxOrder,
    lines: { lineItemId: number; quantity: number }[],
    restock: boolean,
  ): SandboxRefund {
    const wanted = new Map<SandboxLineItem, number>();
    for (const { lineItemId, quantity } of lines) {
      const line = order.lines.find((l) => l.legacyId === lineItemId);
      if (!line) {
        throw new OrderRefused(422, `refund_line_items: line_item_id ${lineItemId} is not in the order`);
      }
      if (!Number.isInteger(quantity) || quantity < 1) {
        throw new OrderRefused(422, "refund_line_items: quantity must be a whole number > 0");
      }
      const total = (wanted.get(line) ?? 0) + quantity;
      if (total > line.quantity - this.#refunded(order, line)) {
        throw new OrderRefused(422, `refund_line_items: cannot refund more items than were purchased`);
      }
      wanted.set(line, total);
    }
    const refundLines: SandboxRefundLine[] = [...wanted].map(([lineItem, quantity]) => ({
      legacyId: REFUND_LINE_BASE + ++this.#refundLineSeq,
      lineItem,
      quantity,
      restockType: restock ? "cancel" : "no_restock",
      locationId: restock ? order.locationId : null,
    }));
    for (const l of refundLines) {
      if (l.locationId) {
        this.inventory.commitToOrder(l.lineItem.variant.inventoryItemId, l.locationId, -l.quantity);
      }
    }
    const refund = { legacyId: REFUND_BASE + ++this.#refundSeq, createdAt: this.now(), lines: refundLines };
    order.refunds.push(refund);
    return refund;
  }

  #linePayload(line: SandboxLineItem, order: SandboxOrder): Record<string, unknown> {
    const current = line.quantity - this.#refunded(order, line);
    return {
      id: line.legacyId,
      admin_graphql_api_id: `gid://shopify/LineItem/${line.legacyId}`,
      variant_id: line.variant.legacyId,
      product_id: null,
      sku: line.variant.sku || null,
      name: `${line.variant.productTitle} - Default Title`,
      title: line.variant.productTitle,
      variant_title: "Default Title",
      quantity: line.quantity,
      current_quantity: current,
      fulfillable_quantity: order.cancelledAt === null ? current : 0,
      fulfillment_status: null,
      fulfillment_service: "manual",
      requires_shipping: true,
      variant_inventory_management: "shopify",
      gift_card: false,
      price: "0.00",
    };
  }

  /** The order as the `orders/*` topics carry it (REST Order). */
  orderPayload(order: SandboxOrder): Record<string, unknown> {
    const location = this.inventory.location(order.locationId);
    return {
      id: order.legacyId,
      admin_graphql_api_id: `gid://shopify/Order/${order.legacyId}`,
      name: `#${1000 + order.number}`,
      number: order.number,
      order_number: 1000 + order.number,
      created_at: restTime(order.createdAt),
      updated_at: restTime(order.updatedAt),
      processed_at: restTime(order.createdAt),
      cancelled_at: order.cancelledAt === null ? null : restTime(order.cancelledAt),
      cancel_reason: order.cancelReason,
      closed_at: null,
      confirmed: true,
      test: false,
      currency: "ARS",
      financial_status: order.refunds.length ? "refunded" : "paid",
      fulfillment_status: null,
      source_name: order.sourceName,
      // The POS location the order was sold at; Shopify sends null for online orders.
      location_id: order.sourceName === "pos" && location ? location.legacyId : null,
      line_items: order.lines.map((l) => this.#linePayload(l, order)),
      fulfillments: [],
      refunds: order.refunds.map((r) => this.refundPayload(order, r)),
    };
  }

  /** A refund as `refunds/create` carries it (REST Refund). */
  refundPayload(order: SandboxOrder, refund: SandboxRefund): Record<string, unknown> {
    return {
      id: refund.legacyId,
      admin_graphql_api_id: `gid://shopify/Refund/${refund.legacyId}`,
      order_id: order.legacyId,
      created_at: restTime(refund.createdAt),
      processed_at: restTime(refund.createdAt),
      note: null,
      restock: refund.lines.some((l) => l.restockType !== "no_restock"),
      user_id: null,
      refund_line_items: refund.lines.map((l) => ({
        id: l.legacyId,
        line_item_id: l.lineItem.legacyId,
        location_id: l.locationId ? legacyOf(l.locationId) : null,
        quantity: l.quantity,
        restock_type: l.restockType,
        subtotal: 0,
        total_tax: 0,
        line_item: this.#linePayload(l.lineItem, order),
      })),
      transactions: [],
      order_adjustments: [],
      duties: [],
    };
  }
}
