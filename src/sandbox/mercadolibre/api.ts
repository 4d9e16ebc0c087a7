/**
 * Routes of the MercadoLibre sandbox's API (everything but `/oauth/token` and the
 * control endpoints), once the request got past latency, rate limit, auth and
 * injected errors: users, the seller's item search (by SKU, paged by offset, or a scan
 * followed by scroll id over the whole account), items and variations, and user
 * products' stock (`GET /user-products/{id}/stock`, `PUT …/stock/type/{type}`; the rules
 * are in user_products.ts).
 *
 * Writes are planned (validated against the item) before the write faults are drawn,
 * so an injected 409 or ignored write is only ever a write that would have applied.
 */
import {
  CONFLICT_BODY,
  FORBIDDEN_BODY,
  INVALID_SCROLL_BODY,
  itemNotFound,
  meliError,
  type MeliFailure,
  methodNotAllowed,
  routeNotFound,
  SEARCH_FORBIDDEN_BODY,
  serverErrorBody,
} from "./errors.ts";
import type { ItemState, MeliItems } from "./items.ts";
import type { MeliOrders } from "./orders.ts";
import type { Scrolls } from "./scrolls.ts";
import {
  applyStockWrite,
  parseStockWrite,
  parseVersion,
  renderStock,
  type UserProductState,
  VERSION_MISMATCH_BODY,
} from "./user_products.ts";
import {
  parseItemPatch,
  parseVariationPatch,
  type Plan,
  planItemUpdate,
  planVariationUpdate,
} from "./updates.ts";

/** What an API route answered. */
export interface Answer {
  status: number;
  body: unknown;
  /** The client sent something malformed or invalid. */
  invalid?: boolean;
  /** What the request log records as `error` (MeLi's `error` otherwise). */
  note?: string;
  /** Response headers (`x-version` of a user product's stock). */
  headers?: Record<string, string>;
}

/** What the routes need from the sandbox. */
export interface ApiContext {
  items: MeliItems;
  /** Orders (sandbox sales), ours and other sellers'. */
  orders: MeliOrders;
  /** Open scans of `GET /users/{id}/items/search?search_type=scan`. */
  scrolls: Scrolls;
  userId: number;
  userTags: readonly string[];
  /** Draws of the write faults (each consumes the PRNG only if its rate is above 0). */
  conflict(): boolean;
  ignoreWrite(): boolean;
  lostResponse(): boolean;
  staleAnswer(): boolean;
  /** A write that set stock was applied. */
  onStockApplied(keys: string[]): void;
  /** A write whose stock part a multi-origin account ignored. */
  onStockIgnored(itemId: string): void;
  /** A user product's stock was read (the race hook may move it right after). */
  onUserProductRead(up: UserProductState): void;
  /** A user product's stock was written through `/user-products/{id}/stock/type/…`. */
  onUserProductWritten(up: UserProductState): void;
}

/** A request as routes see it. */
export interface ApiRequest {
  params: string[];
  query: URLSearchParams;
  body: unknown;
  headers: Headers;
}

/** A route's handler. */
export type Handler = (ctx: ApiContext, req: ApiRequest) => Answer;

function fromFailure(f: MeliFailure): Answer {
  return { status: f.status, body: f.body, invalid: f.invalid };
}

function ok(body: unknown): Answer {
  return { status: 200, body };
}

function badRequest(message: string): Answer {
  return { status: 400, body: meliError(400, "bad_request", message), invalid: true };
}

function isFailure(x: unknown): x is MeliFailure {
  return typeof x === "object" && x !== null && "invalid" in x && "body" in x && "status" in x;
}

function ownUser(ctx: ApiContext, id: string): boolean {
  return id === "me" || id === String(ctx.userId);
}

function user(ctx: ApiContext) {
  return {
    id: ctx.userId,
    nickname: "BLEND_TIENDAS",
    site_id: "MLA",
    country_id: "AR",
    user_type: "normal",
    tags: [...ctx.userTags],
    status: { site_status: "active" },
  };
}

function includeAttributes(query: URLSearchParams): boolean {
  return query.get("include_attributes") === "all";
}

/** `?attributes=a,b` keeps only those top-level fields, as MeLi does. */
function pick(body: Record<string, unknown>, query: URLSearchParams): Record<string, unknown> {
  const wanted = query.get("attributes");
  if (!wanted) return body;
  const keys = wanted.split(",").map((k) => k.trim()).filter(Boolean);
  return Object.fromEntries(keys.filter((k) => k in body).map((k) => [k, body[k]]));
}

function intParam(query: URLSearchParams, name: string, fallback: number, min: number, max: number) {
  const raw = query.get(name);
  if (raw === null) return fallback;
  const n = Number(raw);
  return /^\d+$/.test(raw) && n >= min && n <= max ? n : undefined;
}

const ORDERS = ["stop_time_asc", "stop_time_desc", "start_time_asc", "start_time_desc"].map((id) => ({
  id,
  name: `Order by ${id.replace(/_(asc|desc)$/, "").replace("_", " ")} ${id.endsWith("asc") ? "asc" : "desc"}`,
}));

/** Our seller's item ids matching the search's filters (`seller_sku`, `status`). */
function matching(ctx: ApiContext, query: URLSearchParams): string[] {
  const status = query.get("status");
  return ctx.items.search(query.get("seller_sku") ?? undefined)
    .filter((itemId) => status === null || ctx.items.get(itemId)!.status === status);
}

/**
 * `search_type=scan`: no offset; the first call opens a scroll, each call with its
 * `scroll_id` gets the next page, and the end is an empty page with `scroll_id: ""`.
 */
function scan(ctx: ApiContext, query: URLSearchParams, limit: number): Answer {
  if (query.has("offset")) {
    return badRequest("offset cannot be used with search_type=scan: send the scroll_id of the previous page");
  }
  const scrollId = query.get("scroll_id");
  const page = scrollId === null
    ? ctx.scrolls.open(ctx.userId, matching(ctx, query), limit)
    : ctx.scrolls.next(scrollId, ctx.userId, limit);
  if (typeof page === "string") {
    // An expired (or exhausted) scroll is time passing, not a malformed request.
    return { status: 400, body: INVALID_SCROLL_BODY, invalid: page === "unknown" };
  }
  return ok({
    scroll_id: page.scrollId,
    seller_id: String(ctx.userId),
    results: page.results,
    paging: { limit, total: page.total },
  });
}

const search: Handler = (ctx, { params: [id], query }) => {
  if (!ownUser(ctx, id)) return { status: 403, body: SEARCH_FORBIDDEN_BODY };
  const limit = intParam(query, "limit", 50, 1, 100);
  if (limit === undefined) return badRequest("Invalid limit: it must be an integer between 1 and 100");
  const searchType = query.get("search_type");
  if (searchType === "scan") return scan(ctx, query, limit);
  if (searchType !== null) return badRequest(`Invalid search_type ${JSON.stringify(searchType)}: only scan`);
  if (query.has("scroll_id")) return badRequest("scroll_id is only read with search_type=scan");
  // MeLi pages by offset up to 1,000 results; past that only a scan reads on.
  const offset = intParam(query, "offset", 0, 0, 1_000);
  if (offset === undefined) {
    return badRequest("Invalid offset: it must be an integer between 0 and 1000 (use search_type=scan)");
  }
  const found = matching(ctx, query);
  return ok({
    seller_id: String(ctx.userId),
    query: null,
    paging: { limit, offset, total: found.length },
    results: found.slice(offset, offset + limit),
    orders: [ORDERS[0]],
    available_orders: ORDERS,
  });
};

function itemOr404(ctx: ApiContext, id: string): ItemState | Answer {
  return ctx.items.get(id) ?? fromFailure(itemNotFound(id));
}

/** The item, when our seller may change it: another seller's item is readable but not writable. */
function ownItemOr404(ctx: ApiContext, id: string): ItemState | Answer {
  const item = itemOr404(ctx, id);
  return isItem(item) && item.sellerId !== ctx.userId ? { status: 403, body: FORBIDDEN_BODY } : item;
}

function isItem(x: ItemState | Answer): x is ItemState {
  return "variations" in x;
}

const getItem: Handler = (ctx, { params: [id], query }) => {
  const item = itemOr404(ctx, id);
  return isItem(item) ? ok(pick(ctx.items.render(item, includeAttributes(query)), query)) : item;
};

const multiGet: Handler = (ctx, { query }) => {
  const ids = (query.get("ids") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (ids.length === 0) return badRequest("Query parameter ids is required");
  if (ids.length > 20) return badRequest("Too many ids: at most 20 per request");
  return ok(ids.map((id) => {
    const item = ctx.items.get(id);
    return item
      ? { code: 200, body: pick(ctx.items.render(item, includeAttributes(query)), query) }
      : { code: 404, body: itemNotFound(id).body };
  }));
};

function variationOr404(ctx: ApiContext, item: ItemState, vid: string) {
  const variation = ctx.items.variationsOf(item).find((v) => String(v.id) === vid);
  if (variation) return variation;
  return {
    status: 404,
    body: meliError(404, "not_found", `Variation with id ${vid} not found in item ${item.id}`),
  } satisfies Answer;
}

const listVariations: Handler = (ctx, { params: [id], query }) => {
  const item = itemOr404(ctx, id);
  if (!isItem(item)) return item;
  return ok(ctx.items.variationsOf(item).map((v) => ctx.items.renderVariation(v, includeAttributes(query))));
};

const getVariation: Handler = (ctx, { params: [id, vid], query }) => {
  const item = itemOr404(ctx, id);
  if (!isItem(item)) return item;
  const v = variationOr404(ctx, item, vid);
  return "status" in v ? v : ok(ctx.items.renderVariation(v, includeAttributes(query)));
};

/** Faults and effects of an accepted write; `render` gives the answer body before or after applying. */
function write(ctx: ApiContext, itemId: string, plan: Plan, render: () => unknown): Answer {
  if (ctx.conflict()) return { status: 409, body: CONFLICT_BODY, note: "injected_conflict" };
  if (ctx.ignoreWrite()) return { status: 200, body: render(), note: "injected_ignored_write" };
  const stale = ctx.staleAnswer() ? render() : undefined;
  plan.apply();
  if (plan.stockKeys.length > 0) ctx.onStockApplied(plan.stockKeys);
  if (plan.stockIgnored) ctx.onStockIgnored(itemId);
  if (ctx.lostResponse()) return { status: 502, body: serverErrorBody(502), note: "injected_lost_response" };
  if (stale !== undefined) return { status: 200, body: stale, note: "injected_stale_answer" };
  return ok(render());
}

function multiOrigin(ctx: ApiContext): boolean {
  return ctx.userTags.includes("warehouse_management");
}

const putItem: Handler = (ctx, { params: [id], body }) => {
  const item = ownItemOr404(ctx, id);
  if (!isItem(item)) return item;
  const patch = parseItemPatch(body);
  if (isFailure(patch)) return fromFailure(patch);
  const plan = planItemUpdate(ctx.items, item, patch, multiOrigin(ctx));
  if (isFailure(plan)) return fromFailure(plan);
  return write(ctx, item.id, plan, () => ctx.items.render(item, false));
};

const putVariation: Handler = (ctx, { params: [id, vid], body }) => {
  const item = ownItemOr404(ctx, id);
  if (!isItem(item)) return item;
  const variation = variationOr404(ctx, item, vid);
  if ("status" in variation) return variation;
  const patch = parseVariationPatch(body);
  if (isFailure(patch)) return fromFailure(patch);
  const plan = planVariationUpdate(ctx.items, item, variation, patch, multiOrigin(ctx));
  if (isFailure(plan)) return fromFailure(plan);
  return write(ctx, item.id, plan, () => ctx.items.renderVariation(variation, false));
};

function userProductOr404(ctx: ApiContext, id: string): UserProductState | Answer {
  const up = ctx.items.userProduct(id);
  if (!up) return { status: 404, body: meliError(404, "not_found", `User product with id ${id} not found`) };
  return up.sellerId === ctx.userId ? up : { status: 403, body: FORBIDDEN_BODY };
}

function isUserProduct(x: UserProductState | Answer): x is UserProductState {
  return "members" in x;
}

const getStock: Handler = (ctx, { params: [id] }) => {
  const up = userProductOr404(ctx, id);
  if (!isUserProduct(up)) return up;
  const answer = { status: 200, body: renderStock(up), headers: { "x-version": String(up.version) } };
  ctx.onUserProductRead(up);
  return answer;
};

const putStock: Handler = (ctx, { params: [id, type], body, headers }) => {
  const up = userProductOr404(ctx, id);
  if (!isUserProduct(up)) return up;
  const version = parseVersion(headers.get("x-version"));
  if (isFailure(version)) return fromFailure(version);
  const warehouses = multiOrigin(ctx) ? ctx.items.warehouses ?? [] : null;
  const write = parseStockWrite(up, type, body, warehouses);
  if (isFailure(write)) return fromFailure(write);
  if (version !== up.version) return { status: 409, body: VERSION_MISMATCH_BODY };
  if (ctx.conflict()) return { status: 409, body: VERSION_MISMATCH_BODY, note: "injected_conflict" };
  applyStockWrite(up, write, warehouses);
  ctx.items.propagate(up);
  ctx.onUserProductWritten(up);
  if (ctx.lostResponse()) return { status: 502, body: serverErrorBody(502), note: "injected_lost_response" };
  return ok({ user_id: up.sellerId, product_release_date: null, ...renderStock(up) });
};

/** `GET /orders/{id}`: the seller's order, or the caller's own purchase; anyone else's is 403. */
const getOrder: Handler = (ctx, { params: [id] }) => {
  if (!/^\d{1,16}$/.test(id)) {
    return badRequest(`Invalid order id ${JSON.stringify(id)}: it must be a number`);
  }
  const order = ctx.orders.get(Number(id));
  if (!order) return { status: 404, body: meliError(404, "not_found", `Order ${id} not found`) };
  if (order.sellerId !== ctx.userId && order.buyerId !== ctx.userId) {
    return { status: 403, body: ORDER_FORBIDDEN_BODY };
  }
  return ok(ctx.orders.render(order));
};

/** 403 for another user's order (the caller is neither its seller nor its buyer). */
const ORDER_FORBIDDEN_BODY = meliError(
  403,
  "forbidden",
  "Invalid caller.id: the order belongs to another user",
);

const ORDER_SORTS = [
  { id: "date_asc", name: "Date ascending" },
  { id: "date_desc", name: "Date descending" },
];
const ORDER_FILTERS = new Set([
  "seller",
  "order.date_last_updated.from",
  "order.date_last_updated.to",
  "order.status",
  "sort",
  "offset",
  "limit",
]);

/** An ISO 8601 date-time with an offset (MeLi's filters want one); undefined when absent, NaN when bad. */
function dateParam(query: URLSearchParams, name: string): number | undefined {
  const raw = query.get(name);
  if (raw === null) return undefined;
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:\d{2})$/.test(raw)
    ? Date.parse(raw)
    : NaN;
}

/**
 * `GET /orders/search?seller=…`: a seller's orders (the caller's own only), filtered by last
 * update and status, sorted by creation date, paged by offset (limit up to 51, MeLi's page).
 */
const searchOrders: Handler = (ctx, { query }) => {
  const unknown = [...query.keys()].filter((k) => !ORDER_FILTERS.has(k));
  if (unknown.length > 0) return badRequest(`Unknown or unsupported filters: ${unknown.join(", ")}`);
  const seller = query.get("seller");
  if (seller === null) return badRequest("A filter is required: seller");
  if (seller !== String(ctx.userId)) return { status: 403, body: ORDER_FORBIDDEN_BODY };
  const updatedFrom = dateParam(query, "order.date_last_updated.from");
  const updatedTo = dateParam(query, "order.date_last_updated.to");
  for (const [name, value] of [["from", updatedFrom], ["to", updatedTo]] as const) {
    if (Number.isNaN(value)) {
      return badRequest(
        `Invalid order.date_last_updated.${name}: an ISO 8601 date-time with offset is expected, ` +
          `e.g. 2026-12-01T00:00:00.000-03:00`,
      );
    }
  }
  const sort = query.get("sort") ?? "date_asc";
  if (sort !== "date_asc" && sort !== "date_desc") return badRequest(`Invalid sort ${JSON.stringify(sort)}`);
  const status = query.get("order.status") ?? undefined;
  const limit = intParam(query, "limit", 50, 1, 51);
  if (limit === undefined) return badRequest("Invalid limit: it must be an integer between 1 and 51");
  const offset = intParam(query, "offset", 0, 0, 10_000);
  if (offset === undefined) return badRequest("Invalid offset: it must be an integer between 0 and 10000");
  const found = ctx.orders.search(ctx.userId, { updatedFrom, updatedTo, status, sort });
  return ok({
    query: null,
    display: "complete",
    paging: { total: found.length, offset, limit },
    results: found.slice(offset, offset + limit).map((o) => ctx.orders.render(o)),
    sort: ORDER_SORTS.find((s) => s.id === sort),
    available_sorts: ORDER_SORTS.filter((s) => s.id !== sort),
    filters: [],
    available_filters: [],
  });
};

const ROUTES: [RegExp, Partial<Record<string, Handler>>][] = [
  [/^\/orders\/search$/, { GET: searchOrders }],
  [/^\/orders\/([^/]+)$/, { GET: getOrder }],
  [/^\/user-products\/([^/]+)\/stock$/, { GET: getStock }],
  [/^\/user-products\/([^/]+)\/stock\/type\/([^/]+)$/, { PUT: putStock }],
  [/^\/users\/([^/]+)$/, {
    GET: (ctx, { params: [id] }) => ownUser(ctx, id) ? ok(user(ctx)) : { status: 403, body: FORBIDDEN_BODY },
  }],
  [/^\/users\/([^/]+)\/items\/search$/, { GET: search }],
  [/^\/items$/, { GET: multiGet }],
  [/^\/items\/([^/]+)$/, { GET: getItem, PUT: putItem }],
  [/^\/items\/([^/]+)\/variations$/, { GET: listVariations }],
  [/^\/items\/([^/]+)\/variations\/([^/]+)$/, { GET: getVariation, PUT: putVariation }],
];

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The handler of a path and method, or the 404/405 to answer (before auth, as MeLi's router does). */
export function route(
  method: string,
  path: string,
): { handler: Handler; params: string[] } | (MeliFailure & { allow?: string }) {
  const clean = path.length > 1 ? path.replace(/\/+$/, "") : path;
  for (const [pattern, methods] of ROUTES) {
    const m = clean.match(pattern);
    if (!m) continue;
    const handler = methods[method];
    if (!handler) return { ...methodNotAllowed(method, clean), allow: Object.keys(methods).join(", ") };
    return { handler, params: m.slice(1).map(safeDecode) };
  }
  return routeNotFound(method, clean);
}
