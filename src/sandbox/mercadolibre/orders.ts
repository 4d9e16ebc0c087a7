/**
 * Orders of the MercadoLibre sandbox: a buyer buys units of a listing (the control route
 * `POST /__sandbox/orders`), and MeLi lowers the stock of the user product the item sells, as
 * it does for a sale (taken from the fullest location first); a cancellation
 * (`POST /__sandbox/orders/{id}/cancel`) puts the units back. The API reads them as MeLi's
 * "Gestionar órdenes" page shows them: `GET /orders/{id}` (the seller's, or the buyer's own
 * purchase; anyone else's is 403) and `GET /orders/search?seller=…` with MeLi's filters
 * `order.date_last_updated.from|to`, `order.status`, `sort=date_asc|date_desc` (by creation
 * date) and offset paging. Each change is notified on topic `orders_v2` (notifier.ts).
 */
import { meliError, type MeliFailure } from "./errors.ts";
import type { ItemState, MeliItems, VariationState } from "./items.ts";
import { skuOf } from "./items.ts";
import { changeTotal, totalOf } from "./user_products.ts";

/** Order statuses the sandbox produces (MeLi has more: payment_required, partially_paid, …). */
export type OrderStatus = "paid" | "cancelled";

/** One line of an order. */
export interface OrderLineState {
  itemId: string;
  variationId: number | null;
  title: string;
  sellerSku: string | null;
  quantity: number;
  unitPrice: number;
  userProductId: string;
}

/** An order in the store. */
export interface OrderState {
  id: number;
  sellerId: number;
  buyerId: number;
  status: OrderStatus;
  lines: OrderLineState[];
  dateCreated: number;
  dateLastUpdated: number;
}

/** An order as `GET /orders/{id}` shows it (the fields the sandbox keeps). */
export interface MeliOrderJson {
  id: number;
  status: "paid" | "cancelled";
  date_created: string;
  date_last_updated: string;
  order_items: {
    item: { id: string; variation_id: number | null; seller_sku: string | null; title: string };
    quantity: number;
    unit_price: number;
  }[];
  buyer: { id: number; nickname: string };
  seller: { id: number };
}

/** What `POST /__sandbox/orders` asks for: the lines a buyer buys. */
export interface SellRequest {
  items: { item_id: string; variation_id?: number | null; quantity: number }[];
  /** The buyer (default: a buyer of the sandbox's own); our seller's id makes it a purchase of ours. */
  buyer_id?: number;
}

// Order ids look like MeLi's (16 digits) and stay below 2^53, so JSON numbers keep them exact.
const ORDER_BASE = 2_000_009_000_000_000;
/** A buyer the sandbox invents for orders that do not name one. */
export const SANDBOX_BUYER_ID = 987_654_321;

/** MeLi's dates: milliseconds and the site's offset (Argentina, -03:00), e.g. `2026-12-04T15:02:45.000-03:00`. */
export function meliDate(ms: number): string {
  return new Date(ms - 3 * 3_600_000).toISOString().replace("Z", "-03:00");
}

function fail(status: number, error: string, message: string, invalid = true): MeliFailure {
  return { status, body: meliError(status, error, message), invalid };
}

/** Every order of the sandbox, ours and other sellers'. */
export class MeliOrders {
  #orders = new Map<number, OrderState>();

  constructor(private readonly items: MeliItems, private readonly now: () => number) {}

  /** An order by id. */
  get(id: number): OrderState | undefined {
    return this.#orders.get(id);
  }

  /**
   * A buyer buys: every line must name an active item (and a live variation where the item has
   * them) of one seller, with the stock for it; then each user product loses the units.
   */
  sell(request: SellRequest): OrderState | MeliFailure {
    if (request.items.length === 0) return fail(400, "bad_request", "An order needs at least one item");
    const lines: { line: OrderLineState; item: ItemState; variation: VariationState | null }[] = [];
    const wanted = new Map<string, number>();
    for (const [i, l] of request.items.entries()) {
      const item = this.items.get(l.item_id);
      if (!item) return fail(404, "not_found", `items[${i}]: Item with id ${l.item_id} not found`);
      if (!Number.isInteger(l.quantity) || l.quantity < 1) {
        return fail(400, "bad_request", `items[${i}].quantity must be an integer of at least 1`);
      }
      if (item.status !== "active") {
        return fail(
          400,
          "item.not_active",
          `items[${i}]: item ${item.id} is ${item.status}: it cannot be bought`,
        );
      }
      let variation: VariationState | null = null;
      if (item.hasVariations) {
        variation = this.items.variationsOf(item).find((v) => v.id === l.variation_id) ?? null;
        if (!variation) {
          return fail(400, "bad_request", `items[${i}]: item ${item.id} has no variation ${l.variation_id}`);
        }
      } else if (l.variation_id != null) {
        return fail(400, "bad_request", `items[${i}]: item ${item.id} has no variations`);
      }
      const up = this.items.userProductOf(item, variation);
      wanted.set(up.id, (wanted.get(up.id) ?? 0) + l.quantity);
      if (wanted.get(up.id)! > totalOf(up)) {
        return fail(
          400,
          "item.out_of_stock",
          `items[${i}]: only ${totalOf(up)} units of ${item.id} available`,
        );
      }
      lines.push({
        item,
        variation,
        line: {
          itemId: item.id,
          variationId: variation?.id ?? null,
          title: item.title,
          sellerSku: skuOf(variation?.attributes ?? item.attributes) ?? null,
          quantity: l.quantity,
          unitPrice: variation?.price ?? item.price,
          userProductId: up.id,
        },
      });
    }
    const sellers = new Set(lines.map((l) => l.item.sellerId));
    if (sellers.size > 1) return fail(400, "bad_request", "An order's items must all be of one seller");
    for (const { item, variation, line } of lines) {
      const up = this.items.userProductOf(item, variation);
      changeTotal(up, totalOf(up) - line.quantity);
      (variation ?? item).soldQuantity += line.quantity;
      if (variation) item.soldQuantity += line.quantity;
      this.items.propagate(up);
    }
    const at = this.now();
    const order: OrderState = {
      id: ORDER_BASE + this.#orders.size + 1,
      sellerId: lines[0].item.sellerId,
      buyerId: request.buyer_id ?? SANDBOX_BUYER_ID,
      status: "paid",
      lines: lines.map((l) => l.line),
      dateCreated: at,
      dateLastUpdated: at,
    };
    this.#orders.set(order.id, order);
    return order;
  }

  /** The order is cancelled: its units go back to the user products (MeLi restocks a cancelled sale). */
  cancel(id: number): OrderState | MeliFailure {
    const order = this.#orders.get(id);
    if (!order) return fail(404, "not_found", `Order ${id} not found`, false);
    if (order.status === "cancelled") return fail(400, "order.already_cancelled", `Order ${id} is cancelled`);
    for (const line of order.lines) {
      const up = this.items.userProduct(line.userProductId)!;
      changeTotal(up, totalOf(up) + line.quantity);
      const item = this.items.get(line.itemId)!;
      const variation = item.variations.find((v) => v.id === line.variationId);
      if (variation) variation.soldQuantity -= line.quantity;
      item.soldQuantity -= line.quantity;
      this.items.propagate(up);
    }
    order.status = "cancelled";
    order.dateLastUpdated = this.now();
    return order;
  }

  /** Orders of a seller, filtered and sorted as `/orders/search` does. */
  search(
    sellerId: number,
    filter: { updatedFrom?: number; updatedTo?: number; status?: string; sort: "date_asc" | "date_desc" },
  ): OrderState[] {
    const found = [...this.#orders.values()].filter((o) =>
      o.sellerId === sellerId &&
      (filter.updatedFrom === undefined || o.dateLastUpdated >= filter.updatedFrom) &&
      (filter.updatedTo === undefined || o.dateLastUpdated <= filter.updatedTo) &&
      (filter.status === undefined || o.status === filter.status)
    );
    // MeLi's date sorts are by creation date (ties by id), not by last update.
    found.sort((a, b) => a.dateCreated - b.dateCreated || a.id - b.id);
    return filter.sort === "date_desc" ? found.reverse() : found;
  }

  /** The order JSON of `GET /orders/{id}` (the fields the sandbox keeps, in MeLi's shape). */
  render(order: OrderState): MeliOrderJson & Record<string, unknown> {
    const total = order.lines.reduce((s, l) => s + l.unitPrice * l.quantity, 0);
    return {
      id: order.id,
      status: order.status,
      status_detail: null,
      date_created: meliDate(order.dateCreated),
      date_closed: meliDate(order.dateCreated),
      last_updated: meliDate(order.dateLastUpdated),
      date_last_updated: meliDate(order.dateLastUpdated),
      pack_id: null,
      fulfilled: null,
      tags: order.status === "paid" ? ["paid", "not_delivered"] : ["not_delivered"],
      order_items: order.lines.map((l) => ({
        item: {
          id: l.itemId,
          title: l.title,
          category_id: "MLA109027",
          variation_id: l.variationId,
          seller_custom_field: null,
          variation_attributes: [],
          warranty: null,
          condition: "new",
          seller_sku: l.sellerSku,
        },
        quantity: l.quantity,
        requested_quantity: { value: l.quantity, measure: "unit" },
        unit_price: l.unitPrice,
        full_unit_price: l.unitPrice,
        currency_id: "ARS",
      })),
      total_amount: total,
      paid_amount: total,
      currency_id: "ARS",
      buyer: { id: order.buyerId, nickname: `COMPRADOR${order.buyerId}` },
      seller: { id: order.sellerId },
      payments: [],
      shipping: { id: null },
      cancel_detail: order.status === "cancelled"
        ? { group: "buyer", code: "buyer_cancel_express", description: "Cancelled by the buyer" }
        : null,
    };
  }
}
