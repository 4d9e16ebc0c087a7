/**
 * Shopify search syntax for `inventoryItems(query:)` (and the other `query:` arguments with a `sku` field).
 *
 * The SKU is always sent as a quoted phrase of the `sku` field, with every
 * character that has a meaning in the syntax backslash-escaped, so a SKU like
 * `A:B "C" (D)\E` can neither break out of the phrase nor turn into an
 * operator. The variables carry the string; it is never spliced into GraphQL.
 */
const SPECIAL = /[\\":()]/g;

/** The `query` argument that finds the inventory items with exactly this SKU. */
export function skuSearchQuery(sku: string): string {
  return `sku:"${sku.replace(SPECIAL, (ch) => `\\${ch}`)}"`;
}
