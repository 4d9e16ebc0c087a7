/**
 * Reasons Shopify accepts for inventory changes. The schema types `reason` as a
 * bare String; this is the documented list ("possible reasons", shopify.dev
 * inventory-management-apps quantities-states). There is no `sale`.
 */
export const INVENTORY_REASONS = [
  "correction",
  "cycle_count_available",
  "damaged",
  "movement_created",
  "movement_updated",
  "movement_received",
  "movement_canceled",
  "other",
  "promotion",
  "quality_control",
  "received",
  "reservation_created",
  "reservation_deleted",
  "reservation_updated",
  "restock",
  "safety_stock",
  "shrinkage",
] as const;
