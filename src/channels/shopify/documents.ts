/**
 * Every GraphQL document the Shopify channel sends. Tests validate each one
 * against Shopify's published schema of the pinned API version.
 */

/** SKU → variant → InventoryItem. `first: 2` is enough to detect ambiguity. */
export const VARIANTS_BY_SKU = `query VariantsBySku($query: String!) {
  productVariants(first: 2, query: $query) {
    nodes { id sku inventoryItem { id } }
  }
}`;

/**
 * Many SKUs → variants in one call: the SKUs' terms OR'ed in `$query`. `hasNextPage` says the page was too
 * small to see every match (then each SKU is asked alone, where `first: 2` settles ambiguity).
 */
export const VARIANTS_BY_SKUS = `query VariantsBySkus($query: String!, $first: Int!) {
  productVariants(first: $first, query: $query) {
    nodes { id sku inventoryItem { id } }
    pageInfo { hasNextPage }
  }
}`;

/** Sales are deltas on `available`, applied once per idempotency key. */
export const ADJUST_AVAILABLE =
  `mutation AdjustAvailable($input: InventoryAdjustQuantitiesInput!, $key: String!) {
  inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup {
      id
      changes { name delta quantityAfterChange item { id } location { id } }
    }
    userErrors { field message code }
  }
}`;

/** Resync: absolute quantities with compare-and-set on the value just read. */
export const SET_AVAILABLE = `mutation SetAvailable($input: InventorySetQuantitiesInput!, $key: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id changes { name delta quantityAfterChange item { id } location { id } } }
    userErrors { field message code }
  }
}`;

/** Current `available` of one item at one location (resync, drift report). */
export const AVAILABLE_AT_LOCATION = `query AvailableAtLocation($item: ID!, $location: ID!) {
  inventoryItem(id: $item) {
    id
    sku
    inventoryLevel(locationId: $location) { quantities(names: ["available"]) { name quantity } }
  }
}`;

/** Every document above, by operation name. */
export const SHOPIFY_DOCUMENTS: Record<string, string> = {
  VariantsBySku: VARIANTS_BY_SKU,
  VariantsBySkus: VARIANTS_BY_SKUS,
  AdjustAvailable: ADJUST_AVAILABLE,
  SetAvailable: SET_AVAILABLE,
  AvailableAtLocation: AVAILABLE_AT_LOCATION,
};
