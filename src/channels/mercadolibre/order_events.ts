/**
 * A MercadoLibre order (`GET /orders/{id}`, or one result of `/orders/search`) in the ledger's
 * words: a paid order took units (`created`); a cancelled one put them back (`restock`, restockId
 * "cancel": MeLi restocks a cancelled sale itself, the other channels get the units back). Other
 * statuses (payment_required, payment_in_process, partially_paid…) take nothing yet: the
 * notification of the payment, or the catch-up, brings the paid order. Pure: no I/O.
 */
import { z } from "zod";
import type { OrderEvent, OrderLine } from "../../model/marketplace_order.ts";

const id = z.union([z.number().int().nonnegative(), z.string().regex(/^\d+$/)]).transform(String);

/** The fields of MeLi's order the service reads (the rest is ignored). */
const orderSchema = z.object({
  id,
  status: z.string().min(1),
  date_created: z.string().refine((d) => !Number.isNaN(Date.parse(d)), "not a date"),
  date_last_updated: z.string().refine((d) => !Number.isNaN(Date.parse(d)), "not a date").optional(),
  last_updated: z.string().refine((d) => !Number.isNaN(Date.parse(d)), "not a date").optional(),
  order_items: z.array(z.object({
    item: z.object({
      id: z.string().min(1),
      variation_id: z.union([z.number().int(), z.string().regex(/^\d+$/)]).nullable().optional(),
      seller_sku: z.string().nullable().optional(),
    }),
    quantity: z.number().int().positive(),
  })),
  seller: z.object({ id }),
});

/** What an order came to. */
export type ParsedOrder =
  | {
    ok: true;
    orderId: string;
    sellerId: string;
    status: string;
    /** MeLi's last update of the order, ISO 8601 UTC (the catch-up's watermark). */
    updatedAt: string;
    events: OrderEvent[];
    /** Lines without a `seller_sku`: no SKU to move stock by (named for the quarantine). */
    unmapped: string[];
  }
  | { ok: false; reason: string; error: string };

/** Order statuses whose units are sold (MercadoLibre: `paid`, and `partially_refunded` after it). */
const SOLD_STATUSES = new Set(["paid", "partially_refunded"]);

/**
 * The events of one MeLi order.
 * @param tiendaId the POS store MeLi's orders draw from.
 */
export function orderEvents(
  body: unknown,
  tiendaId: string,
  via: OrderEvent["via"],
): ParsedOrder {
  const parsed = orderSchema.safeParse(body);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; ");
    return {
      ok: false,
      reason: "unusable_order",
      error: `MercadoLibre's order could not be read: ${issues}`,
    };
  }
  const order = parsed.data;
  const byLine = new Map<string, OrderLine>();
  const unmapped: string[] = [];
  for (const { item, quantity } of order.order_items) {
    const lineId = item.variation_id == null ? item.id : `${item.id}/${item.variation_id}`;
    const sku = item.seller_sku?.trim();
    if (!sku) {
      unmapped.push(lineId);
      continue;
    }
    // The same listing twice in one order is one line of the sum (its line id is the listing).
    const line = byLine.get(lineId);
    if (line) line.quantity += quantity;
    else byLine.set(lineId, { lineId, sku, quantity });
  }
  const lines = [...byLine.values()];
  const updated = order.date_last_updated ?? order.last_updated ?? order.date_created;
  const updatedAt = new Date(updated).toISOString();
  const base = { origin: "mercadolibre" as const, orderId: order.id, tiendaId, lines, via };
  let events: OrderEvent[] = [];
  // A paid order took its units; one partly refunded since (money back, units not returned through the
  // order) still has them, and may be seen first in that state after a downtime.
  if (lines.length > 0 && SOLD_STATUSES.has(order.status)) {
    events = [{ ...base, kind: "created", occurredAt: new Date(order.date_created).toISOString() }];
  } else if (lines.length > 0 && order.status === "cancelled") {
    events = [{ ...base, kind: "restock", restockId: "cancel", occurredAt: updatedAt }];
  }
  return {
    ok: true,
    orderId: order.id,
    sellerId: order.seller.id,
    status: order.status,
    updatedAt,
    events,
    unmapped,
  };
}
