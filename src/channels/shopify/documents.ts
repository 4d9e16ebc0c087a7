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

/** An inventory item at a location: where one listing's quantity lives. */
export interface ItemAtLocation {
  item: string;
  location: string;
}

/**
 * Current `available` of many listings in one query, each at its own location: one aliased
 * `inventoryItem` per listing (`l0`, `l1`, … in the order given), items and locations as
 * variables (each location once). Aliases rather than `nodes(ids:)`: `inventoryLevel` takes one
 * location per selection, so listings at different locations cannot share one `nodes` selection,
 * and the schema the service validates against serves `inventoryItem` (not `nodes`). By the
 * published cost rules a listing costs 3 points (the item, its level and the quantities list, an
 * object each): 250 listings are 750, under the 1,000 one query may cost. The client learns the
 * price per listing from Shopify's answers, so a store that prices it otherwise is followed.
 */
export function availableAtLocations(
  refs: readonly ItemAtLocation[],
): { query: string; variables: Record<string, string> } {
  const locations = new Map<string, string>();
  const variables: Record<string, string> = {};
  const fields = refs.map((ref, i) => {
    let location = locations.get(ref.location);
    if (!location) {
      location = `loc${locations.size}`;
      locations.set(ref.location, location);
      variables[location] = ref.location;
    }
    variables[`item${i}`] = ref.item;
    return `  l${i}: inventoryItem(id: $item${i}) { id inventoryLevel(locationId: $${location}) ` +
      `{ quantities(names: ["available"]) { name quantity } } }`;
  });
  const declared = [
    ...refs.map((_, i) => `$item${i}: ID!`),
    ...[...locations.values()].map((name) => `$${name}: ID!`),
  ];
  return {
    query: `query AvailableAtLocations(${declared.join(", ")}) {\n${fields.join("\n")}\n}`,
    variables,
  };
}

/** Every document above, by operation name (built documents as a two-listing example). */
export const SHOPIFY_DOCUMENTS: Record<string, string> = {
  VariantsBySku: VARIANTS_BY_SKU,
  VariantsBySkus: VARIANTS_BY_SKUS,
  AdjustAvailable: ADJUST_AVAILABLE,
  SetAvailable: SET_AVAILABLE,
  AvailableAtLocation: AVAILABLE_AT_LOCATION,
  AvailableAtLocations: availableAtLocations([
    { item: "gid://shopify/InventoryItem/1", location: "gid://shopify/Location/1" },
    { item: "gid://shopify/InventoryItem/2", location: "gid://shopify/Location/2" },
  ]).query,
};
