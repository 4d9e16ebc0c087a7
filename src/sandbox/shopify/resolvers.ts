/**
 * Field resolvers of the Shopify sandbox over {@link ShopifyInventory}: a root value
 * whose methods graphql-js's default resolver calls with (args, context, info), and
 * plain objects (with methods for fields that take arguments) below it.
 */
import { getDirectiveValues, GraphQLError, type GraphQLResolveInfo, responsePathAsArray } from "graphql";
import { fingerprint, type IdempotencyStore } from "./idempotency.ts";
import {
  filterBySearch,
  parseSearchQuery,
  type SearchQuery,
  SearchSyntaxError,
  type SearchTerm,
  textMatches,
} from "./search_query.ts";
import { internalError, sandboxUnsupported } from "./errors.ts";
import {
  type AdjustInput,
  type AdjustmentGroupRecord,
  type ChangeRecord,
  type MutationRecord,
  QUANTITY_NAMES,
  type SandboxLocation,
  SandboxUnsupportedError,
  type SandboxVariant,
  type SetInput,
  type ShopifyInventory,
} from "./inventory.ts";
import { enumValueDescription, shopifySchema } from "./schema.ts";
import type { BulkOperations } from "./bulk.ts";
import {
  graphqlTime,
  type SandboxLineItem,
  type SandboxOrder,
  type SandboxRefund,
  type SandboxRefundLine,
  type ShopifyOrders,
} from "./orders.ts";

/** Shopify's `extensions.search` entry for a query with ignored terms. */
export interface SearchWarningExtension {
  path: (string | number)[];
  query: string;
  warnings: { field: string; message: string }[];
}

/** Per-request context handed to every resolver. */
export interface ShopifyContext {
  inventory: ShopifyInventory;
  orders: ShopifyOrders;
  idempotency: IdempotencyStore<MutationRecord>;
  requestId: string;
  /** Waits the injected latency; resolves at once after the first call. */
  latency(): Promise<void>;
  /** Whether this idempotent mutation should fail inside (fault injection). */
  internalFailure(): boolean;
  searchWarnings: SearchWarningExtension[];
  onApplied(): void;
  onReplay(): void;
  /** The shop's bulk operations. */
  bulk: BulkOperations;
  /**
   * A bulk query runs with every connection whole: no `first`/`last` needed and no
   * page limit (only the bulk operation's own limits apply).
   */
  unpaged?: boolean;
}

/** Mutations that 2026-04+ refuse without `@idempotent`. */
export const IDEMPOTENT_MUTATIONS = new Set(["inventoryAdjustQuantities", "inventorySetQuantities"]);

/** Shopify's page size limit. */
const MAX_PAGE_SIZE = 250;

interface PageArgs {
  first?: number | null;
  last?: number | null;
  after?: string | null;
  before?: string | null;
  reverse?: boolean;
}

function cursorOf(legacyId: number): string {
  return btoa(JSON.stringify({ last_id: legacyId }));
}

function cursorId(cursor: string): number {
  try {
    const id = JSON.parse(atob(cursor)).last_id;
    if (typeof id === "number") return id;
  } catch { /* fall through */ }
  throw new GraphQLError(`Invalid cursor for current pagination sort.`, {
    extensions: { code: "BAD_REQUEST" },
  });
}

/**
 * A Relay connection over `items` (already filtered and sorted); `unpaged` (a bulk
 * query) needs no `first`/`last` and has no page limit.
 */
function connection<T extends { legacyId: number }, O>(
  items: T[],
  args: PageArgs,
  toObject: (t: T) => O,
  unpaged = false,
) {
  // first/last, when a bulk query gives them, still apply; the page limit does not.
  if (!unpaged && args.first == null && args.last == null) {
    throw new GraphQLError("you must provide one of first or last", { extensions: { code: "BAD_REQUEST" } });
  }
  for (const name of ["first", "last"] as const) {
    const n = args[name];
    if (n != null && (n < 0 || (!unpaged && n > MAX_PAGE_SIZE))) {
      throw new GraphQLError(`${name} must be between 0 and ${MAX_PAGE_SIZE}`, {
        extensions: { code: "BAD_REQUEST" },
      });
    }
  }
  const list = args.reverse ? [...items].reverse() : items;
  const indexOf = (cursor: string) => {
    const id = cursorId(cursor);
    const i = list.findIndex((t) => t.legacyId === id);
    if (i < 0) throw new GraphQLError("Invalid cursor for current pagination sort.");
    return i;
  };
  let start = args.after ? indexOf(args.after) + 1 : 0;
  let end = args.before ? indexOf(args.before) : list.length;
  if (args.first != null) end = Math.min(end, start + args.first);
  if (args.last != null) start = Math.max(start, end - args.last);
  const page = list.slice(start, end);
  return {
    edges: page.map((t) => ({ cursor: cursorOf(t.legacyId), node: toObject(t) })),
    nodes: page.map(toObject),
    pageInfo: {
      hasNextPage: end < list.length,
      hasPreviousPage: start > 0,
      startCursor: page.length ? cursorOf(page[0].legacyId) : null,
      endCursor: page.length ? cursorOf(page.at(-1)!.legacyId) : null,
    },
  };
}

function parseQuery(query: string | null | undefined, ranges = false): SearchQuery {
  if (!query) return [];
  try {
    return parseSearchQuery(query, { ranges });
  } catch (e) {
    if (e instanceof SearchSyntaxError) {
      throw sandboxUnsupported(`search query ${JSON.stringify(query)}: ${e.message}`);
    }
    throw e;
  }
}

/** Shopify answers a malformed id with a coercion error, a well-formed unknown one with null. */
function checkGid(id: string): void {
  if (!/^gid:\/\/shopify\/[A-Za-z]+\/\d+(\?.*)?$/.test(id)) {
    throw new GraphQLError(`Invalid global id '${id}'`, {
      extensions: { code: "argumentLiteralsIncompatible", typeName: "CoercionError" },
    });
  }
}

function idTermMatches(legacyId: number, term: SearchTerm): boolean {
  return String(legacyId) === term.value;
}

/**
 * A time term (`updated_at:>='2026-12-04T18:00:00Z'`) against a time in ms, compared at the
 * whole second the API shows (so a watermark taken from a result finds that result again).
 */
function timeTermMatches(ms: number, term: SearchTerm): boolean {
  const value = Date.parse(term.value);
  if (Number.isNaN(value)) {
    throw sandboxUnsupported(`search value ${JSON.stringify(term.value)} is not a time`);
  }
  return compare(Math.floor(ms / 1000) * 1000, value, term);
}

function compare(actual: number, value: number, term: SearchTerm): boolean {
  switch (term.comparator) {
    case "<":
      return actual < value;
    case "<=":
      return actual <= value;
    case ">":
      return actual > value;
    case ">=":
      return actual >= value;
    default:
      return actual === value;
  }
}

function containsWord(text: string, term: SearchTerm): boolean {
  const words = text.toLowerCase().split(/\s+/);
  return textMatches(text, term) || words.some((w) => textMatches(w, term));
}

/** Builds the resolver objects for one request. */
export function shopifyRoot(ctx: ShopifyContext): Record<string, unknown> {
  const inv = ctx.inventory;

  const locationObject = (l: SandboxLocation): Record<string, unknown> => ({
    id: l.id,
    name: l.name,
    isActive: l.isActive,
    // Every item's level at this location, in the order the items were created.
    inventoryLevels: (args: PageArgs & { query?: string | null }) => {
      if (args.query) throw sandboxUnsupported("inventoryLevels query");
      const items = inv.variants.map((v) => ({ legacyId: v.inventoryItemLegacyId, v }));
      return connection(items, args, ({ v }) => levelObject(v, l), ctx.unpaged);
    },
  });

  const levelObject = (v: SandboxVariant, l: SandboxLocation) => ({
    id: `gid://shopify/InventoryLevel/${l.legacyId}?inventory_item_id=${v.inventoryItemLegacyId}`,
    isActive: true,
    item: () => itemObject(v),
    location: () => locationObject(l),
    quantities: ({ names }: { names: string[] }) =>
      names.map((name) => {
        if (!QUANTITY_NAMES.includes(name)) {
          throw new GraphQLError(`'${name}' is not a valid inventory quantity name`, {
            extensions: { code: "BAD_REQUEST" },
          });
        }
        return {
          id:
            `gid://shopify/InventoryQuantity/${l.legacyId}?inventory_item_id=${v.inventoryItemLegacyId}&name=${name}`,
          name,
          quantity: inv.quantity(v.inventoryItemId, l.id, name),
          updatedAt: inv.updatedAt(v.inventoryItemId, l.id),
        };
      }),
  });

  // A SKU-less variant (sku "") reads as Shopify shows it: null.
  const itemObject = (v: SandboxVariant): Record<string, unknown> => ({
    id: v.inventoryItemId,
    sku: v.sku || null,
    tracked: true,
    inventoryLevel: ({ locationId }: { locationId: string }) => {
      checkGid(locationId);
      const l = inv.location(locationId);
      return l ? levelObject(v, l) : null;
    },
    // Every item is stocked at every location (the sandbox's model).
    inventoryLevels: (args: PageArgs & { query?: string | null }) => {
      if (args.query) throw sandboxUnsupported("inventoryLevels query");
      return connection([...inv.locations], args, (l) => levelObject(v, l), ctx.unpaged);
    },
  });

  const variantObject = (v: SandboxVariant) => ({
    id: v.id,
    sku: v.sku || null,
    title: "Default Title",
    displayName: `${v.productTitle} - Default Title`,
    inventoryQuantity: inv.totalAvailable(v.inventoryItemId),
    inventoryItem: () => itemObject(v),
  });

  const lineItemObject = (l: SandboxLineItem) => ({
    id: `gid://shopify/LineItem/${l.legacyId}`,
    name: `${l.variant.productTitle} - Default Title`,
    quantity: l.quantity,
    sku: l.variant.sku || null,
  });

  const refundLineObject = (l: SandboxRefundLine) => ({
    lineItem: () => lineItemObject(l.lineItem),
    location: () => {
      const at = l.locationId ? inv.location(l.locationId) : undefined;
      return at ? locationObject(at) : null;
    },
    quantity: l.quantity,
    restockType: l.restockType.toUpperCase(),
    restocked: l.restockType !== "no_restock",
  });

  const refundObject = (r: SandboxRefund) => ({
    id: `gid://shopify/Refund/${r.legacyId}`,
    legacyResourceId: String(r.legacyId),
    createdAt: graphqlTime(r.createdAt),
    refundLineItems: (args: PageArgs) => connection(r.lines, args, refundLineObject, ctx.unpaged),
  });

  const orderObject = (o: SandboxOrder) => ({
    id: `gid://shopify/Order/${o.legacyId}`,
    legacyResourceId: String(o.legacyId),
    name: `#${1000 + o.number}`,
    createdAt: graphqlTime(o.createdAt),
    updatedAt: graphqlTime(o.updatedAt),
    cancelledAt: o.cancelledAt === null ? null : graphqlTime(o.cancelledAt),
    // The POS location an order was sold at; null for online orders.
    retailLocation: () => {
      const at = o.sourceName === "pos" ? inv.location(o.locationId) : undefined;
      return at ? locationObject(at) : null;
    },
    lineItems: (args: PageArgs) => connection(o.lines, args, lineItemObject, ctx.unpaged),
    refunds: ({ first }: { first?: number | null }) =>
      o.refunds.slice(0, first ?? undefined).map(refundObject),
  });

  const changeObject = (c: ChangeRecord) => ({
    name: c.name,
    delta: c.delta,
    quantityAfterChange: c.quantityAfterChange,
    ledgerDocumentUri: c.ledgerDocumentUri,
    item: () => {
      const v = inv.variantOfItem(c.inventoryItemId);
      return v ? itemObject(v) : null;
    },
    location: () => {
      const l = inv.location(c.locationId);
      return l ? locationObject(l) : null;
    },
  });

  const groupObject = (g: AdjustmentGroupRecord) => ({
    id: g.id,
    createdAt: g.createdAt,
    reason: g.reason,
    referenceDocumentUri: g.referenceDocumentUri,
    changes: (
      a: {
        inventoryItemIds?: string[] | null;
        locationIds?: string[] | null;
        quantityNames?: string[] | null;
      },
    ) =>
      g.changes
        .filter((c) => !a.inventoryItemIds || a.inventoryItemIds.includes(c.inventoryItemId))
        .filter((c) => !a.locationIds || a.locationIds.includes(c.locationId))
        .filter((c) => !a.quantityNames || a.quantityNames.includes(c.name))
        .map(changeObject),
  });

  const payloadObject = (r: MutationRecord) => ({
    inventoryAdjustmentGroup: r.group ? groupObject(r.group) : null,
    userErrors: r.userErrors,
  });

  /** Runs an `@idempotent` mutation under its key (presence checked before execution). */
  const idempotent = async (
    info: GraphQLResolveInfo,
    args: Record<string, unknown>,
    codes: string,
    apply: () => MutationRecord,
  ) => {
    const directive = shopifySchema().getDirective("idempotent")!;
    const key = String(getDirectiveValues(directive, info.fieldNodes[0], info.variableValues)?.key);
    const admission = ctx.idempotency.begin(key, fingerprint(info.fieldName, args));
    if (admission.kind === "replay") {
      ctx.onReplay();
      return payloadObject(admission.result);
    }
    if (admission.kind !== "new") {
      return payloadObject({
        group: null,
        userErrors: [{
          field: null,
          code: admission.kind,
          message: enumValueDescription(codes, admission.kind),
        }],
      });
    }
    try {
      // The key is held while the (injected) latency runs: a duplicate sent meanwhile
      // sees IDEMPOTENCY_CONCURRENT_REQUEST, as on Shopify.
      await ctx.latency();
      if (ctx.internalFailure()) throw internalError(ctx.requestId);
      const record = apply();
      ctx.idempotency.complete(key, record);
      if (record.group) ctx.onApplied();
      return payloadObject(record);
    } catch (e) {
      ctx.idempotency.fail(key);
      if (e instanceof SandboxUnsupportedError) throw sandboxUnsupported(e.message);
      throw e;
    }
  };

  return {
    productVariants: (
      args: PageArgs & { query?: string | null; sortKey?: string; savedSearchId?: string | null },
      _ctx: unknown,
      info: GraphQLResolveInfo,
    ) => {
      if (args.savedSearchId) throw sandboxUnsupported("savedSearchId");
      const query = parseQuery(args.query);
      const { items, warnings } = filterBySearch(inv.variants, query, (v, term) => {
        switch (term.field) {
          case "sku":
            return textMatches(v.sku, term);
          case "title":
            return textMatches("Default Title", term);
          case "id":
            return idTermMatches(v.legacyId, term);
          case undefined:
            return [v.sku, v.productTitle].some((text) => containsWord(text, term));
          default:
            return undefined;
        }
      });
      if (warnings.length) {
        ctx.searchWarnings.push({ path: responsePathAsArray(info.path), query: args.query!, warnings });
      }
      const sortKey = args.sortKey ?? "ID";
      const by: Record<string, (v: SandboxVariant) => string | number> = {
        ID: (v) => v.legacyId,
        POSITION: (v) => v.legacyId,
        RELEVANCE: (v) => v.legacyId,
        SKU: (v) => v.sku,
        TITLE: () => "Default Title",
        FULL_TITLE: (v) => v.productTitle,
        NAME: (v) => v.productTitle,
        INVENTORY_QUANTITY: (v) => inv.totalAvailable(v.inventoryItemId),
      };
      const key = by[sortKey];
      if (!key) throw sandboxUnsupported(`productVariants sortKey ${sortKey}`);
      const sorted = [...items].sort((a, b) => {
        const x = key(a), y = key(b);
        return x < y ? -1 : x > y ? 1 : a.legacyId - b.legacyId;
      });
      return connection(sorted, args, variantObject, ctx.unpaged);
    },

    inventoryItems: (
      args: PageArgs & { query?: string | null },
      _ctx: unknown,
      info: GraphQLResolveInfo,
    ) => {
      const query = parseQuery(args.query);
      const { items, warnings } = filterBySearch(inv.variants, query, (v, term) => {
        switch (term.field) {
          case "sku":
            return textMatches(v.sku, term);
          case "id":
            return idTermMatches(v.inventoryItemLegacyId, term);
          default:
            return undefined;
        }
      });
      if (warnings.length) {
        ctx.searchWarnings.push({ path: responsePathAsArray(info.path), query: args.query!, warnings });
      }
      const byItem = items.map((v) => ({ legacyId: v.inventoryItemLegacyId, v }))
        .sort((a, b) => a.legacyId - b.legacyId);
      return connection(byItem, args, ({ v }) => itemObject(v), ctx.unpaged);
    },

    orders: (
      args: PageArgs & { query?: string | null; sortKey?: string; savedSearchId?: string | null },
      _ctx: unknown,
      info: GraphQLResolveInfo,
    ) => {
      if (args.savedSearchId) throw sandboxUnsupported("savedSearchId");
      const query = parseQuery(args.query, true);
      const { items, warnings } = filterBySearch(ctx.orders.orders, query, (o, term) => {
        switch (term.field) {
          case "updated_at":
            return timeTermMatches(o.updatedAt, term);
          case "created_at":
          case "processed_at":
            return timeTermMatches(o.createdAt, term);
          case "id":
            return compare(o.legacyId, Number(term.value), term);
          case "name":
            return textMatches(`#${1000 + o.number}`, term) || textMatches(String(1000 + o.number), term);
          default:
            return undefined;
        }
      });
      if (warnings.length) {
        ctx.searchWarnings.push({ path: responsePathAsArray(info.path), query: args.query!, warnings });
      }
      const by: Record<string, (o: SandboxOrder) => number> = {
        UPDATED_AT: (o) => o.updatedAt,
        CREATED_AT: (o) => o.createdAt,
        PROCESSED_AT: (o) => o.createdAt,
        ID: (o) => o.legacyId,
        ORDER_NUMBER: (o) => o.number,
        RELEVANCE: (o) => o.legacyId,
      };
      const sortKey = args.sortKey ?? "PROCESSED_AT";
      const key = by[sortKey];
      if (!key) throw sandboxUnsupported(`orders sortKey ${sortKey}`);
      const sorted = [...items].sort((a, b) => key(a) - key(b) || a.legacyId - b.legacyId);
      return connection(sorted, args, orderObject, ctx.unpaged);
    },

    productVariant: ({ id }: { id: string }) => {
      checkGid(id);
      const v = inv.variant(id);
      return v ? variantObject(v) : null;
    },

    inventoryItem: ({ id }: { id: string }) => {
      checkGid(id);
      const v = inv.variantOfItem(id);
      return v ? itemObject(v) : null;
    },

    location: ({ id }: { id?: string | null }) => {
      // Without an id Shopify returns the shop's primary location.
      if (id == null) return locationObject(inv.locations[0]);
      checkGid(id);
      const l = inv.location(id);
      return l ? locationObject(l) : null;
    },

    locations: (
      args: PageArgs & { query?: string | null; sortKey?: string },
      _ctx: unknown,
      info: GraphQLResolveInfo,
    ) => {
      const query = parseQuery(args.query);
      const { items, warnings } = filterBySearch(inv.locations, query, (l, term) => {
        switch (term.field) {
          case "name":
            return containsWord(l.name, term);
          case "id":
          case "location_id":
            return idTermMatches(l.legacyId, term);
          case "active":
            return String(l.isActive) === term.value.toLowerCase();
          case undefined:
            return containsWord(l.name, term);
          default:
            return undefined;
        }
      });
      if (warnings.length) {
        ctx.searchWarnings.push({ path: responsePathAsArray(info.path), query: args.query!, warnings });
      }
      const sortKey = args.sortKey ?? "NAME";
      const sorted = [...items].sort((a, b) =>
        sortKey === "ID" ? a.legacyId - b.legacyId : a.name.localeCompare(b.name) || a.legacyId - b.legacyId
      );
      return connection(sorted, args, locationObject, ctx.unpaged);
    },

    bulkOperationRunQuery: (args: { query: string; groupObjects: boolean }) =>
      ctx.bulk.run(args.query, args.groupObjects),

    bulkOperation: ({ id }: { id: string }) => {
      checkGid(id);
      return ctx.bulk.get(id) ?? null;
    },

    currentBulkOperation: ({ type }: { type: "QUERY" | "MUTATION" }) => ctx.bulk.current(type) ?? null,

    inventoryAdjustQuantities: (args: { input: AdjustInput }, _ctx: unknown, info: GraphQLResolveInfo) =>
      idempotent(info, args, "InventoryAdjustQuantitiesUserErrorCode", () => inv.adjust(args.input)),

    inventorySetQuantities: (args: { input: SetInput }, _ctx: unknown, info: GraphQLResolveInfo) =>
      idempotent(info, args, "InventorySetQuantitiesUserErrorCode", () => inv.set(args.input)),
  };
}
