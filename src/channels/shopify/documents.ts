/**
 * Every GraphQL document the Shopify channel sends. Tests validate each one
 * against Shopify's published schema of the pinned API version.
 */

/**
 * SKU → InventoryItem: the item is what a stock write addresses, and asked for directly it costs one
 * point (an item), not two (a variant and its item). `first: 2` is enough to detect ambiguity.
 */
export const ITEMS_BY_SKU = `query ItemsBySku($query: String!) {
  inventoryItems(first: 2, query: $query) {
    nodes { id sku }
  }
}`;

/**
 * Many SKUs → inventory items in one call: the SKUs' terms OR'ed in `$query`. `hasNextPage` says the page
 * was too small to see every match (then each SKU is asked alone, where `first: 2` settles ambiguity).
 */
export const ITEMS_BY_SKUS = `query ItemsBySkus($query: String!, $first: Int!) {
  inventoryItems(first: $first, query: $query) {
    nodes { id sku }
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

/** Whole-catalog read: starts a bulk query operation (`$query` is one of {@link BULK_QUERIES}). */
export const RUN_BULK_QUERY = `mutation RunBulkQuery($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}`;

/** Whole-catalog read: how our bulk operation is doing (by id: other operations of the app may run too). */
export const BULK_OPERATION_STATUS = `query BulkOperationStatus($id: ID!) {
  bulkOperation(id: $id) { id status errorCode objectCount url partialDataUrl }
}`;

/**
 * Whole-catalog read without a bulk operation: every inventory item's SKU, a page at a time
 * (cost 2 + 250 × 1 points).
 */
export const INVENTORY_ITEMS_PAGE = `query InventoryItemsPage($first: Int!, $after: String) {
  inventoryItems(first: $first, after: $after) {
    nodes { id sku }
    pageInfo { hasNextPage endCursor }
  }
}`;

/**
 * Whole-catalog read without a bulk operation: `available` of every item at one location, a page
 * at a time (cost 1 + 2 + 250 × 3 points, within the 1,000 one query may cost; nested under
 * `inventoryItems` instead, 250 items with even one level each would cost 1,502).
 */
export const LOCATION_LEVELS_PAGE = `query LocationLevelsPage($location: ID!, $first: Int!, $after: String) {
  location(id: $location) {
    id
    inventoryLevels(first: $first, after: $after) {
      nodes { item { id sku } quantities(names: ["available"]) { name quantity } }
      pageInfo { hasNextPage endCursor }
    }
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

/**
 * The catch-up poll (issue #14): orders updated since a watermark (`$query` is
 * `updated_at:>='…'`), oldest update first, with the lines they sold and the refunds that put
 * units back. Page sizes keep the requested cost under the 1,000 points one query may cost even
 * if Shopify priced the `refunds` list per element (3 × (1 + 1 + 52 + 3 × 63) = 729); an order
 * past them (over 50 lines, 3 refunds, or 20 lines in one refund) is read as far as they go.
 */
export const ORDERS_UPDATED_SINCE = `query OrdersUpdatedSince($query: String!, $after: String) {
  orders(first: 3, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes {
      legacyResourceId
      createdAt
      updatedAt
      cancelledAt
      retailLocation { id }
      lineItems(first: 50) { nodes { id sku quantity } pageInfo { hasNextPage } }
      refunds(first: 3) {
        legacyResourceId
        createdAt
        refundLineItems(first: 20) {
          nodes { lineItem { id sku } quantity restockType restocked location { id } }
          pageInfo { hasNextPage }
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}`;

/** Every document above, by operation name (built documents as a two-listing example). */
export const SHOPIFY_DOCUMENTS: Record<string, string> = {
  ItemsBySku: ITEMS_BY_SKU,
  ItemsBySkus: ITEMS_BY_SKUS,
  AdjustAvailable: ADJUST_AVAILABLE,
  SetAvailable: SET_AVAILABLE,
  AvailableAtLocation: AVAILABLE_AT_LOCATION,
  RunBulkQuery: RUN_BULK_QUERY,
  BulkOperationStatus: BULK_OPERATION_STATUS,
  InventoryItemsPage: INVENTORY_ITEMS_PAGE,
  LocationLevelsPage: LOCATION_LEVELS_PAGE,
  OrdersUpdatedSince: ORDERS_UPDATED_SINCE,
  AvailableAtLocations: availableAtLocations([
    { item: "gid://shopify/InventoryItem/1", location: "gid://shopify/Location/1" },
    { item: "gid://shopify/InventoryItem/2", location: "gid://shopify/Location/2" },
  ]).query,
};

/**
 * Queries Shopify runs inside a bulk operation: sent as the `query` variable of
 * {@link RUN_BULK_QUERY}, never as an operation of their own, so they take no variables.
 * Connections are read through `edges { node }` (bulk queries refuse `nodes`), the
 * nested one's parent selects `id` (its nodes' `__parentId` in the JSONL).
 */
export const BULK_QUERIES = {
  /** Every inventory item's SKU and its `available` at every location it is stocked at. */
  InventoryLevels: `{
  inventoryItems {
    edges {
      node {
        id
        sku
        inventoryLevels {
          edges { node { location { id } quantities(names: ["available"]) { name quantity } } }
        }
      }
    }
  }
}`,
} as const;
