/**
 * Marketplace orders as stock movements (issue #14): the words every part of the order flow shares —
 * a channel's inbound side (webhooks, notifications, catch-up polling) turns what its marketplace says
 * into an {@link OrderEvent}; the ledger applies each event's effect exactly once (the other channels
 * lowered or restocked, the POS told through an outbox). Pure words: no I/O.
 */
import type { ChannelName } from "./channel_name.ts";

/** One line of an order as the marketplace sold it (or, for a restock, the units put back). */
export interface OrderLine {
  /** The marketplace's own id of the line (Shopify `line_item.id`; MeLi item id + variation), stable. */
  lineId: string;
  sku: string;
  /** Units (> 0). */
  quantity: number;
}

/** What happened to an order, in the ledger's terms. */
export type OrderEvent =
  /**
   * The order took units: the other channels lose them, the POS is told (`marketplace.sales.created`).
   * Seen again (a re-delivery, the catch-up finding it too): no second effect.
   */
  | {
    kind: "created";
    origin: ChannelName;
    orderId: string;
    /** The POS store the order draws from (configured per channel; see README). */
    tiendaId: string;
    lines: OrderLine[];
    /** When the marketplace says the order was placed (ISO 8601). */
    occurredAt: string;
    /** How it reached us. */
    via: "webhook" | "notification" | "catch_up";
  }
  /**
   * Units of an order put back (a cancellation, or a refund with restock): the other channels get them
   * back, the POS is told (`marketplace.sales.cancelled`). Each line is restocked at most what it sold,
   * however many cancellations and refunds name it; `restockId` (the refund's id, or "cancel") makes a
   * re-delivered one a no-op.
   */
  | {
    kind: "restock";
    origin: ChannelName;
    orderId: string;
    restockId: string;
    /** The store, when the marketplace names one; else the order's. */
    tiendaId?: string;
    lines: OrderLine[];
    occurredAt: string;
    via: "webhook" | "notification" | "catch_up";
  };

/** What applying an order event did. */
export interface OrderEffect {
  /**
   * applied: stock changes (and a POS message) were recorded; duplicate: nothing new (seen before);
   * nothing_to_restock: every named line was already put back in full; deferred: a restock of an order not
   * applied yet (deliveries out of order) — kept, and applied in the order's own transaction when it comes
   * (nothing is put back that was never taken off).
   */
  outcome: "applied" | "duplicate" | "nothing_to_restock" | "deferred";
  /** Stock changes recorded for the other channels. */
  changes: number;
}

/** Why a delivery that was signed and stored could not be used (kept for inspection, never retried blindly). */
export interface Quarantine {
  reason: string;
  /** A sentence a person can act on. */
  error: string;
}
