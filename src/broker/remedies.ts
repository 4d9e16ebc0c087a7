/**
 * What an operator fixes before replaying a dead letter can succeed, per
 * `sync-reason`; or, for a body no replay can repair, that the POS must publish
 * a corrected sale. Travels in the `sync-remedy` header of every DLQ message
 * (README "Dead letters" shows the same table).
 */

/** For a reason without its own entry: where to look, and what a replay does. */
export const GENERIC_REMEDY =
  "sync-error says what was refused; fix that, then replay (a replay re-arms only failed changes, never re-applies an applied one)";

const BROKEN_BODY = "replaying this copy fails the same way";

const REMEDIES: Record<string, string> = {
  // The consumer: the body itself, or the ledger.
  too_large:
    `the body is over MAX_EVENT_BYTES: have the POS republish the sale smaller (or raise MAX_EVENT_BYTES if sales this size are real, then replay); until then ${BROKEN_BODY}`,
  invalid_encoding:
    `have the POS republish the sale as plain UTF-8 JSON (no content_encoding such as gzip); ${BROKEN_BODY}`,
  invalid_json: `fix the POS's serializer and have it republish the sale; ${BROKEN_BODY}`,
  invalid_event:
    `have the POS republish the sale with sync-field corrected (or, when only MAX_ITEMS_PER_EVENT / MAX_ITEM_QUANTITY was exceeded by a real sale, raise it, then replay); until then ${BROKEN_BODY}`,
  ledger_unavailable: "bring Postgres back (DATABASE_URL reachable, /readyz without postgres), then replay",
  ledger_rejected:
    `Postgres refused this event's data (its message is in sync-error): report it as a validator bug and have the POS republish a corrected sale; ${BROKEN_BODY}`,
  // The dispatcher's copies of a sale whose change on sync-channel failed for good.
  sku_not_found:
    "give exactly one sync-channel listing the SKU in sync-sku (create it or correct its SKU), wait a minute (a missing SKU is remembered 60 s), then replay",
  sku_ambiguous:
    "leave exactly one sync-channel listing with the SKU in sync-sku (sync-error lists them), wait a minute, then replay",
  store_unmapped:
    "map the store to a Shopify location (SHOPIFY_LOCATIONS or SHOPIFY_LOCATION_ID) and restart the service, then replay",
  invalid_inventory_item:
    "Shopify had no inventory item for sync-sku even after looking the SKU up again: check its variant in Shopify, then replay",
  invalid_location:
    "the Shopify location mapped to the store does not exist: correct SHOPIFY_LOCATIONS / SHOPIFY_LOCATION_ID and restart, then replay",
  item_not_stocked_at_location:
    "stock the variant of sync-sku at the store's Shopify location (Inventory → locations), then replay",
  non_mutable_inventory_item:
    "Shopify lets no app change this item's stock (e.g. a bundle's parent): give the SKU to the real variant, then replay, or set the stock by hand and discard this copy",
  invalid_quantity_too_high:
    "the adjustment would take Shopify's quantity past its limit: correct the stock in Shopify, then replay",
  invalid_quantity_too_low:
    "the adjustment would take Shopify's quantity past its limit: correct the stock in Shopify, then replay",
  stock_unknown:
    "make the POS stock of sync-sku readable (the POS_STOCK_KEY Redis key, or a POS_STOCK_QUERY row), then replay",
  listing_under_review: "settle MercadoLibre's review of the listing (sync-error), then replay",
  listing_closed:
    "a closed MercadoLibre listing cannot be reopened: relist it with this SELLER_SKU (and remove the SKU from the closed one), then replay",
  fulfillment_listing:
    "MercadoLibre Full owns this listing's stock: take it out of Full or remove the SKU from it, then replay; otherwise discard this copy",
  meli_validation: "fix on the listing what MercadoLibre's message in sync-error names, then replay",
  meli_rejected:
    "MercadoLibre refused the SKU lookup (sync-error): usually the app's access to the seller's account; fix it, then replay",
  multi_origin_unsupported:
    "no replay can succeed until multi-origin stock is supported: set the stock in MercadoLibre by hand and discard this copy",
  multi_origin_unmapped:
    "the MercadoLibre seller keeps stock per warehouse: map the POS stores to its warehouses in MELI_LOCATIONS, restart, then replay",
  user_product_unknown:
    "MercadoLibre names no user_product_id for the listing, so its stock locations cannot be set: check the listing, then replay",
  exhausted:
    "the marketplace kept failing (sync-error has its last answer): once it answers again (/readyz, marketplace_calls_total), replay",
  outcome_unknown:
    "Shopify: within 20 h of the batch's first send, and unless the listing was resynced since, a replay re-sends it under its original idempotency key (applied at most once): replay once the marketplace answers; later than that (the log says it stays outcome_unknown) check the listing's stock, then deno task resync -- --sku <sync-sku> --dry-run and without --dry-run",
  // RabbitMQ's own dead-lettering (x-first-death-reason), no sync-remedy header of ours.
  delivery_limit:
    "the quorum work queue handed it back more than QUEUE_DELIVERY_LIMIT times (consumers crashing while holding it): once the service runs steadily (/readyz, no restarts), replay",
};

/**
 * Per channel where a reason's remedy differs: MercadoLibre has no idempotency key,
 * so its `outcome_unknown` changes are never re-sent by a replay.
 */
const CHANNEL_REMEDIES: Record<string, Record<string, string>> = {
  mercadolibre: {
    outcome_unknown:
      "MercadoLibre has no idempotency key, so a replay never re-sends this change (it may have been applied): check the listing's stock, then deno task resync -- --sku <sync-sku> --channel mercadolibre --dry-run and without --dry-run",
  },
};

/** The `sync-remedy` text for a `sync-reason` (and the `sync-channel` it failed on, if any). */
export function remedyFor(reason: string, channel?: string | null): string {
  const own = channel ? CHANNEL_REMEDIES[channel] : undefined;
  if (own && Object.hasOwn(own, reason)) return own[reason];
  return Object.hasOwn(REMEDIES, reason) ? REMEDIES[reason] : GENERIC_REMEDY;
}
