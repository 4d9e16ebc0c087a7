/**
 * Loopback simulator of the MercadoLibre REST API (site MLA), the service's embedded
 * MeLi when none is configured and the fault injector of the tests.
 *
 * It behaves like the real API rather than agreeing with whatever is sent: OAuth
 * refresh tokens are single-use and rotate, access tokens expire, only the
 * `Authorization: Bearer` header is read, requests are rate limited (429 without
 * Retry-After), item updates are validated field by field (unknown fields, types,
 * item-level stock on an item with variations) and follow MeLi's item rules (paused
 * at 0 stock, closed is final, under review is frozen, Full owns the stock,
 * multi-origin sellers' `/items` stock updates are ignored), with MeLi's error bodies.
 * Items sell user products whose stock locations carry an `x-version` (user_products.ts).
 *
 * Routes: `POST /oauth/token`; `GET /users/me`, `GET /users/{id}`,
 * `GET /users/{id}/items/search` (`seller_sku`, `status`, `limit`, `offset` up to 1,000, or
 * `search_type=scan` and `scroll_id`); `GET /items?ids=` (20 at most), `GET|PUT /items/{id}`,
 * `GET /items/{id}/variations`, `GET|PUT /items/{id}/variations/{vid}`,
 * `GET /user-products/{id}/stock`, `PUT /user-products/{id}/stock/type/{type}`. Control (no
 * auth; the sandbox only listens on 127.0.0.1): `GET /__sandbox/state`,
 * `GET|POST /__sandbox/faults`, `POST /__sandbox/authorize|revoke|expire-tokens|expire-scrolls`,
 * `POST /__sandbox/items/{id}` (`status`, `sub_status`, `logistic_type`: what MeLi decides),
 * `POST /__sandbox/user-products/{id}/race` (`{type, store_id?, quantity}`: see raceStockWrite),
 * `POST /__sandbox/orders` (`{items: [{item_id, variation_id?, quantity}], buyer_id?}`: a buyer buys,
 * the stock drops) and `POST /__sandbox/orders/{id}/cancel` (the units come back), each notified on
 * topic `orders_v2`; `POST /__sandbox/notifications` (`{callback_url?, paused?}`: where the app gets
 * them). Orders are read through `GET /orders/{id}` and `GET /orders/search` (orders.ts).
 *
 * Run alone: `deno task sandbox:meli` (env: SANDBOX_MELI_PORT, SANDBOX_CATALOG,
 * SANDBOX_SEED); it prints the MELI_* settings that point the service at it.
 */
import { z } from "zod";
import { defaultCatalog, loadCatalog } from "../catalog.ts";
import { LeakyBucket } from "../cost.ts";
import { accessTokenFormat, MeliAuth, randomDigits, randomHex } from "./auth.ts";
import { type Answer, type ApiContext, route } from "./api.ts";
import { itemNotFound, meliError, oauthError, serverErrorBody, TOO_MANY_REQUESTS_BODY } from "./errors.ts";
import { MeliItems } from "./items.ts";
import { MeliNotifier } from "./notifier.ts";
import { MeliOrders, type OrderState } from "./orders.ts";
import { Scrolls } from "./scrolls.ts";
import { renderStock } from "./user_products.ts";
import { seededRandom } from "../prng.ts";
import type {
  MeliFaults,
  MeliRequestRecord,
  MeliSandbox,
  MeliSandboxOptions,
  MeliSandboxStats,
  MeliUserProductStock,
} from "./types.ts";
import { logger, setupLogging } from "../../log.ts";

export type {
  MeliFaults,
  MeliListing,
  MeliOrderJson,
  MeliRequestRecord,
  MeliSandbox,
  MeliSandboxOptions,
  MeliSandboxStats,
  MeliUserProductStock,
  MeliWarehouseOption,
  OtherSeller,
} from "./types.ts";

const log = logger("sandbox");

const NO_FAULTS: MeliFaults = {
  errorRate: 0,
  lostResponseRate: 0,
  conflictRate: 0,
  ignoreWritesRate: 0,
  staleAnswerRate: 0,
  latencyMs: 0,
  answerDelayMs: 0,
  rateLimitAll: false,
  seed: 1,
};

const rate = z.number().min(0).max(1);
const faultsSchema = z.object({
  errorRate: rate,
  lostResponseRate: rate,
  conflictRate: rate,
  ignoreWritesRate: rate,
  staleAnswerRate: rate,
  latencyMs: z.number().int().min(0).max(120_000),
  answerDelayMs: z.number().int().min(0).max(120_000),
  rateLimitAll: z.boolean(),
  seed: z.number().int(),
}).partial().strict();

// What `POST /__sandbox/items/{id}` may change: what MeLi decides about an item.
const itemPatchSchema = z.object({
  status: z.string().optional(),
  sub_status: z.array(z.string()).optional(),
  logistic_type: z.string().min(1).optional(),
}).strict();

/** A bad control request, in a line. */
function describe(e: unknown): string {
  return e instanceof z.ZodError
    ? e.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; ")
    : `body: ${e instanceof Error ? e.message : String(e)}`;
}

// What `POST /__sandbox/orders` takes: what a buyer buys.
const sellSchema = z.object({
  items: z.array(
    z.object({
      item_id: z.string().min(1),
      variation_id: z.number().int().nullable().optional(),
      quantity: z.number().int().min(1),
    }).strict(),
  ).min(1),
  buyer_id: z.number().int().positive().optional(),
}).strict();

// What `POST /__sandbox/notifications` takes: the app's callback URL (null: none), and a pause.
const notificationsSchema = z.object({
  callback_url: z.string().url().nullable().optional(),
  paused: z.boolean().optional(),
}).strict();

// What `POST /__sandbox/user-products/{id}/race` takes: the location a sale moves, and to what.
const raceSchema = z.object({
  type: z.string().min(1),
  store_id: z.string().min(1).optional(),
  quantity: z.number().int().min(0),
}).strict();

const LOG_CAP = 10_000;
const OAUTH_PARAMS = ["grant_type", "client_id", "client_secret", "refresh_token", "code"];

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json;charset=UTF-8", ...headers },
  });
}

/** The body as the API reads it: JSON if it parses, form fields for a form, text otherwise. */
async function readBody(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text === "") return null;
  const type = req.headers.get("content-type") ?? "";
  if (type.includes("application/x-www-form-urlencoded")) {
    return Object.fromEntries(new URLSearchParams(text));
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Starts the simulator on 127.0.0.1 and resolves once it listens. */
export async function startMeliSandbox(options: MeliSandboxOptions = {}): Promise<MeliSandbox> {
  const now = options.now ?? Date.now;
  const catalog = options.catalog ?? defaultCatalog();
  const tiendaId = options.tiendaId ?? catalog.stores[0].tienda_id;
  if (!catalog.stores.some((s) => s.tienda_id === tiendaId)) throw new Error(`unknown tiendaId ${tiendaId}`);
  const userId = options.userId ?? 123456789;
  const userTags = [...(options.userTags ?? ["normal"])];
  const clientId = options.clientId ?? randomDigits(16);
  const clientSecret = options.clientSecret ?? randomHex(32);
  const staticToken = options.staticToken ?? accessTokenFormat(clientId, userId, now());
  const auth = new MeliAuth({
    clientId,
    clientSecret,
    userId,
    staticToken,
    refreshToken: options.refreshToken ?? `TG-${randomHex(24)}-${userId}`,
    accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 21_600,
    now,
  });
  const others = options.otherSellers ?? [];
  if (others.some((o) => o.userId === userId)) throw new Error("otherSellers must not include the seller");
  const warehouses = userTags.includes("warehouse_management")
    ? (options.warehouses ?? [{ store_id: "1001", network_node_id: "MLA1001", tienda_id: tiendaId }]).map(
      (w) => {
        if (!catalog.stores.some((s) => s.tienda_id === w.tienda_id)) {
          throw new Error(`warehouse ${w.store_id}: unknown tienda_id ${w.tienda_id}`);
        }
        return { storeId: w.store_id, networkNodeId: w.network_node_id, tiendaId: w.tienda_id };
      },
    )
    : null;
  const items = new MeliItems(catalog, tiendaId, userId, now, others, warehouses);
  const orders = new MeliOrders(items, now);
  const notifier = new MeliNotifier({
    userId,
    applicationId: clientId,
    timeoutMs: options.notificationTimeoutMs,
    retryDelaysMs: options.notificationRetryDelaysMs,
  });
  notifier.callbackUrl = options.notificationUrl;
  /** A change of an order: our app hears of our seller's orders only (another seller's app hears of theirs). */
  const orderChanged = (order: OrderState) => {
    if (order.sellerId === userId) notifier.notify("orders_v2", `/orders/${order.id}`);
  };
  const sell = (request: z.infer<typeof sellSchema>) => {
    const outcome = orders.sell(request);
    if ("status" in outcome && "body" in outcome) return outcome;
    log.info("MercadoLibre sandbox sold order {id}", { id: outcome.id });
    orderChanged(outcome);
    return outcome;
  };
  const cancelOrder = (id: number) => {
    const outcome = orders.cancel(id);
    if ("status" in outcome && "body" in outcome) return outcome;
    log.info("MercadoLibre sandbox cancelled order {id}", { id: outcome.id });
    orderChanged(outcome);
    return outcome;
  };
  /** Armed races: user product id → the MeLi-side change to make after its next stock read. */
  const races = new Map<string, { location: { type: string; storeId?: string }; quantity: number }>();
  /** Held answers: user product id → the gate its next applied stock write's answer waits at. */
  const holds = new Map<string, Promise<void>>();
  /** Delayed writes: user product id → the gate its next stock write waits at (opened by its next read). */
  const delays = new Map<string, PromiseWithResolvers<void> & { waiting: boolean }>();
  const scrolls = new Scrolls(now);
  const perSecond = options.ratePerSecond ?? 50;
  const bucket = new LeakyBucket({ maximumAvailable: perSecond, restoreRate: perSecond }, now);
  let faults: MeliFaults = { ...NO_FAULTS, ...faultsSchema.parse(options.faults ?? {}) };
  let random = seededRandom(faults.seed);
  const stats: MeliSandboxStats = {
    requests: 0,
    unauthorized: 0,
    rateLimited: 0,
    errorsInjected: 0,
    lostResponses: 0,
    conflicts: 0,
    ignoredWrites: 0,
    staleAnswers: 0,
    invalid: 0,
    refreshes: 0,
    refreshFailures: 0,
    puts: 0,
    putsByListing: {},
    putsByUserProduct: {},
  };
  const requestLog: MeliRequestRecord[] = [];
  const invalidLog: MeliRequestRecord[] = [];

  const setFaults = (patch: Partial<MeliFaults>): MeliFaults => {
    const parsed = faultsSchema.parse(patch);
    faults = { ...faults, ...parsed };
    if (parsed.seed !== undefined) random = seededRandom(parsed.seed);
    log.info("MercadoLibre sandbox faults now {faults}", { faults });
    return { ...faults };
  };
  // Draws only when the rate is above 0, so turning one fault on leaves the others' sequence alone.
  const draw = (rate: number) => rate > 0 && random() < rate;
  const counted = (hit: boolean, stat: "conflicts" | "ignoredWrites" | "lostResponses" | "staleAnswers") => {
    if (hit) stats[stat]++;
    return hit;
  };

  const ctx: ApiContext = {
    items,
    orders,
    scrolls,
    userId,
    userTags,
    conflict: () => counted(draw(faults.conflictRate), "conflicts"),
    ignoreWrite: () => counted(draw(faults.ignoreWritesRate), "ignoredWrites"),
    lostResponse: () => counted(draw(faults.lostResponseRate), "lostResponses"),
    staleAnswer: () => counted(draw(faults.staleAnswerRate), "staleAnswers"),
    onStockApplied: (keys) => {
      stats.puts++;
      for (const k of keys) {
        stats.putsByListing[k] = (stats.putsByListing[k] ?? 0) + 1;
        const [itemId, vid] = k.split("/");
        const item = items.get(itemId)!;
        const up = items.userProductOf(item, vid ? item.variations.find((v) => String(v.id) === vid)! : null);
        stats.putsByUserProduct[up.id] = (stats.putsByUserProduct[up.id] ?? 0) + 1;
      }
    },
    onUserProductRead: (up) => {
      const delayed = delays.get(up.id);
      if (delayed?.waiting) {
        delays.delete(up.id);
        delayed.resolve();
      }
      const race = races.get(up.id);
      if (!race) return;
      races.delete(up.id);
      items.setLocationQuantity(up.id, race.location, race.quantity);
      log.info("MercadoLibre sandbox moved {id}'s stock right after a read (armed race)", { id: up.id });
    },
    onUserProductWritten: (up) => {
      stats.puts++;
      stats.putsByUserProduct[up.id] = (stats.putsByUserProduct[up.id] ?? 0) + 1;
    },
    onStockIgnored: (itemId) =>
      log.warn("MercadoLibre sandbox ignored a stock update of {itemId}: multi-origin seller", { itemId }),
  };

  const oauth = (req: Request, query: URLSearchParams, body: unknown): Answer => {
    if (req.method !== "POST") {
      return {
        status: 405,
        body: meliError(405, "method_not_allowed", "Use POST /oauth/token"),
        invalid: true,
      };
    }
    // Secrets in a URL end up in access logs; the sandbox wants them in the body.
    if (OAUTH_PARAMS.some((p) => query.has(p))) {
      return oauthError(
        400,
        "invalid_request",
        "send the parameters in the request body, not the query string",
        true,
      );
    }
    const params = typeof body === "object" && body !== null && !Array.isArray(body) ? body : {};
    const outcome = auth.token(params as Record<string, unknown>);
    if (outcome.ok) {
      stats.refreshes++;
      return { status: 200, body: outcome.body };
    }
    return { status: outcome.status, body: outcome.body, invalid: outcome.invalid };
  };

  const api = (req: Request, path: string, query: URLSearchParams, body: unknown): Answer => {
    if (faults.rateLimitAll || !bucket.tryTake(1)) return { status: 429, body: TOO_MANY_REQUESTS_BODY };
    const routed = route(req.method, path);
    if ("invalid" in routed) return routed;
    const denied = auth.check(req.headers.get("authorization"), query);
    if (denied) return denied;
    // Drawn before the route runs: a 5xx here means nothing was applied.
    if (draw(faults.errorRate)) {
      stats.errorsInjected++;
      const status = ([500, 502, 503] as const)[Math.floor(random() * 3)];
      return { status, body: serverErrorBody(status), note: "injected_error" };
    }
    return routed.handler(ctx, { params: routed.params, query, body, headers: req.headers });
  };

  const record = (entry: MeliRequestRecord, invalid: boolean) => {
    requestLog.push(entry);
    if (requestLog.length > LOG_CAP) requestLog.shift();
    if (invalid) {
      stats.invalid++;
      invalidLog.push(entry);
      if (invalidLog.length > LOG_CAP) invalidLog.shift();
    }
  };

  const state = () => ({
    userId,
    userTags,
    tiendaId,
    listings: items.listings.map((l) => {
      const { item } = items.ofProduct(l.productoId)!;
      return {
        ...l,
        available_quantity: items.quantityOf(l.productoId) ?? null,
        status: item.status,
        sub_status: item.subStatus,
        logistic_type: item.logisticType,
      };
    }),
    userProducts: items.userProducts().filter((up) => up.sellerId === userId).map((up) => ({
      id: up.id,
      version: up.version,
      locations: renderStock(up).locations,
      items: [...new Set(up.members.map((m) => m.item.id))],
    })),
    notifications: { callback_url: notifier.callbackUrl ?? null, paused: notifier.paused },
    stats: structuredClone(stats),
    faults,
    liveAccessTokens: auth.liveTokens(),
  });

  const admin = async (req: Request, path: string): Promise<Response> => {
    const is = (method: string, p: string) => req.method === method && path === `/__sandbox/${p}`;
    if (is("GET", "state")) return json(200, state());
    if (is("GET", "faults")) return json(200, faults);
    if (is("POST", "faults")) {
      try {
        return json(200, setFaults(await req.json()));
      } catch (e) {
        return json(400, meliError(400, "bad_request", `invalid faults: ${describe(e)}`));
      }
    }
    if (is("POST", "authorize")) return json(200, { refresh_token: auth.authorize() });
    if (is("POST", "revoke")) {
      auth.revoke();
      return json(200, { revoked: true });
    }
    if (is("POST", "expire-tokens")) {
      auth.expireAll();
      return json(200, { expired: true });
    }
    if (is("POST", "expire-scrolls")) {
      scrolls.expireAll();
      return json(200, { expired: true });
    }
    const itemPath = path.match(/^\/__sandbox\/items\/([^/]+)$/);
    if (req.method === "POST" && itemPath) {
      try {
        const itemId = decodeURIComponent(itemPath[1]);
        if (!items.get(itemId)) return json(404, itemNotFound(itemId).body);
        items.setItem(itemId, itemPatchSchema.parse(await req.json()));
        return json(200, items.render(items.get(itemId)!, true));
      } catch (e) {
        return json(400, meliError(400, "bad_request", `invalid item change: ${describe(e)}`));
      }
    }
    if (is("POST", "orders")) {
      try {
        const outcome = sell(sellSchema.parse(await req.json()));
        return "body" in outcome ? json(outcome.status, outcome.body) : json(201, orders.render(outcome));
      } catch (e) {
        return json(400, meliError(400, "bad_request", `invalid order: ${describe(e)}`));
      }
    }
    const cancelPath = path.match(/^\/__sandbox\/orders\/(\d{1,16})\/cancel$/);
    if (req.method === "POST" && cancelPath) {
      const outcome = cancelOrder(Number(cancelPath[1]));
      return "body" in outcome ? json(outcome.status, outcome.body) : json(200, orders.render(outcome));
    }
    if (is("POST", "notifications")) {
      try {
        const patch = notificationsSchema.parse(await req.json());
        if (patch.callback_url !== undefined) notifier.callbackUrl = patch.callback_url ?? undefined;
        if (patch.paused !== undefined) notifier.paused = patch.paused;
        return json(200, { callback_url: notifier.callbackUrl ?? null, paused: notifier.paused });
      } catch (e) {
        return json(400, meliError(400, "bad_request", `invalid notifications: ${describe(e)}`));
      }
    }
    const racePath = path.match(/^\/__sandbox\/user-products\/([^/]+)\/race$/);
    if (req.method === "POST" && racePath) {
      try {
        const id = decodeURIComponent(racePath[1]);
        if (!items.userProduct(id)) return json(404, meliError(404, "not_found", `No user product ${id}`));
        const race = raceSchema.parse(await req.json());
        raceStockWrite(id, { type: race.type, store_id: race.store_id }, race.quantity);
        return json(200, { armed: true });
      } catch (e) {
        return json(400, meliError(400, "bad_request", `invalid race: ${describe(e)}`));
      }
    }
    return json(404, meliError(404, "not_found", `Route not found: ${req.method} ${path}`));
  };

  function raceStockWrite(id: string, location: { type: string; store_id?: string }, quantity: number) {
    const up = items.userProduct(id);
    if (!up) throw new Error(`no user product ${id}`);
    const at = { type: location.type, storeId: location.store_id };
    if (!up.locations.some((l) => l.type === at.type && l.storeId === at.storeId)) {
      throw new Error(`user product ${id} has no location ${JSON.stringify(location)}`);
    }
    if (!Number.isInteger(quantity) || quantity < 0) throw new RangeError(`quantity ${quantity}`);
    races.set(id, { location: at, quantity });
  }

  function holdStockAnswer(id: string): () => void {
    if (!items.userProduct(id)) throw new Error(`no user product ${id}`);
    const gate = Promise.withResolvers<void>();
    holds.set(id, gate.promise);
    return () => gate.resolve();
  }

  function delayStockWrite(id: string): void {
    if (!items.userProduct(id)) throw new Error(`no user product ${id}`);
    delays.set(id, { ...Promise.withResolvers<void>(), waiting: false });
  }

  const { promise: listening, resolve: onListen } = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen: () => onListen() },
    async (req) => {
      const url = new URL(req.url);
      const path = url.pathname;
      if (path.startsWith("/__sandbox/")) return await admin(req, path);
      const requestId = crypto.randomUUID();
      stats.requests++;
      const at = now();
      const body = await readBody(req);
      const delayedId = req.method === "PUT"
        ? /^\/user-products\/([^/]+)\/stock\//.exec(path)?.[1]
        : undefined;
      const delayed = delayedId === undefined ? undefined : delays.get(delayedId);
      if (delayed && !delayed.waiting) {
        delayed.waiting = true;
        await delayed.promise;
      }
      if (faults.latencyMs > 0) await new Promise((r) => setTimeout(r, faults.latencyMs));
      const answer = path === "/oauth/token"
        ? oauth(req, url.searchParams, body)
        : api(req, path, url.searchParams, body);
      const held = req.method === "PUT" && answer.status === 200
        ? holds.get(/^\/user-products\/([^/]+)\/stock\//.exec(path)?.[1] ?? "")
        : undefined;
      if (faults.answerDelayMs > 0 && req.method !== "GET") {
        // Handled (and applied) already: a caller killed meanwhile never learns it landed.
        await new Promise((r) => setTimeout(r, faults.answerDelayMs));
      }
      if (held) {
        // Applied already; the answer waits (a response lost in a crash, as far as the caller can tell).
        holds.delete(/^\/user-products\/([^/]+)\//.exec(path)![1]);
        await held;
      }
      if (answer.status === 401) stats.unauthorized++;
      if (answer.status === 429) stats.rateLimited++;
      if (path === "/oauth/token" && answer.status !== 200) stats.refreshFailures++;
      const errorCode = (answer.body as { error?: unknown })?.error;
      record({
        at,
        method: req.method,
        path,
        query: url.search.replace(/^\?/, ""),
        body,
        status: answer.status,
        ...(answer.note || answer.status >= 400 ? { error: answer.note ?? String(errorCode) } : {}),
      }, answer.invalid === true);
      log.debug("MercadoLibre sandbox {method} {path}: {status}", {
        method: req.method,
        path,
        status: answer.status,
        requestId,
      });
      const allow = (answer as { allow?: string }).allow;
      return json(answer.status, answer.body, {
        "x-request-id": requestId,
        ...(allow ? { allow } : {}),
        ...answer.headers,
      });
    },
  );
  await listening;
  const url = `http://127.0.0.1:${server.addr.port}`;
  log.info("MercadoLibre sandbox listening on {url}", { url, mark: "start" });

  return {
    url,
    clientId,
    clientSecret,
    userId,
    staticToken,
    tiendaId,
    listings: items.listings,
    currentRefreshToken: () => auth.currentRefreshToken(),
    authorize: () => auth.authorize(),
    revokeTokens: () => auth.revoke(),
    expireAccessTokens: () => auth.expireAll(),
    expireScrolls: () => scrolls.expireAll(),
    itemsOf: (sellerId) => items.ofSeller(sellerId),
    quantityOf: (productoId) => items.quantityOf(productoId),
    listingFor: (productoId) => items.listings.find((l) => l.productoId === productoId),
    listingsForSku: (sku) => items.listings.filter((l) => l.sku === sku),
    item: (itemId) => {
      const item = items.get(itemId);
      return item ? items.render(item, true) : undefined;
    },
    setItem: (itemId, patch) => items.setItem(itemId, patch),
    deleteVariation: (productoId) => {
      const found = items.ofProduct(productoId);
      if (!found?.variation) throw new Error(`producto_id ${productoId} is not a variation`);
      found.variation.deleted = true;
    },
    setQuantity: (productoId, quantity) => items.setQuantity(productoId, quantity),
    userProductStock: (id) => {
      const up = items.userProduct(id);
      return up
        ? { version: up.version, locations: renderStock(up).locations as MeliUserProductStock["locations"] }
        : undefined;
    },
    setLocationQuantity: (id, location, quantity) =>
      items.setLocationQuantity(id, { type: location.type, storeId: location.store_id }, quantity),
    raceStockWrite,
    holdStockAnswer,
    delayStockWrite,
    sell: (request) => {
      const outcome = sell(sellSchema.parse(request));
      if ("body" in outcome) throw new Error(`order refused: ${outcome.body.message}`);
      return orders.render(outcome);
    },
    cancelOrder: (id) => {
      const outcome = cancelOrder(id);
      if ("body" in outcome) throw new Error(`cancellation refused: ${outcome.body.message}`);
      return orders.render(outcome);
    },
    order: (id) => {
      const order = orders.get(id);
      return order ? orders.render(order) : undefined;
    },
    setNotificationUrl: (url) => {
      notifier.callbackUrl = url;
    },
    pauseNotifications: (paused) => {
      notifier.paused = paused;
    },
    notifications: () => notifier.attempts(),
    stats: () => structuredClone(stats),
    requestLog: () => [...requestLog],
    invalidRequests: () => [...invalidLog],
    faults: () => ({ ...faults }),
    setFaults,
    close: async () => {
      await notifier.close();
      await server.shutdown();
      log.info("MercadoLibre sandbox on {url} stopped", { url, mark: "shutdown" });
    },
  };
}

if (import.meta.main) {
  await setupLogging({ level: "info", format: "auto" });
  const env = (name: string) => Deno.env.get(name);
  const catalogPath = env("SANDBOX_CATALOG");
  const sandbox = await startMeliSandbox({
    port: Number(env("SANDBOX_MELI_PORT") ?? 0),
    catalog: catalogPath ? await loadCatalog(catalogPath) : undefined,
    faults: env("SANDBOX_SEED") ? { seed: Number(env("SANDBOX_SEED")) } : undefined,
  });
  // Printed, not logged: the log redacts tokens, and this is what a person copies.
  console.log("MercadoLibre API sandbox (site MLA)");
  console.log(`  API:     ${sandbox.url}   token: POST ${sandbox.url}/oauth/token`);
  console.log(`  state:   GET ${sandbox.url}/__sandbox/state   faults: POST ${sandbox.url}/__sandbox/faults`);
  console.log(`  seller:  user id ${sandbox.userId}, stock of store ${sandbox.tiendaId}`);
  console.log(`  app:     client id ${sandbox.clientId}, client secret ${sandbox.clientSecret}`);
  console.log(`  refresh token (single use, rotates): ${sandbox.currentRefreshToken()}`);
  console.log(`  static access token (never expires): ${sandbox.staticToken}`);
  console.log("Point the service at it with OAuth (refresh tokens rotate):");
  console.log(`  MELI_URL=${sandbox.url}`);
  console.log(`  MELI_CLIENT_ID=${sandbox.clientId}`);
  console.log(`  MELI_CLIENT_SECRET=${sandbox.clientSecret}`);
  console.log(`  MELI_REFRESH_TOKEN=${sandbox.currentRefreshToken()}`);
  console.log(`  MELI_USER_ID=${sandbox.userId}`);
  console.log("or with the static token instead of the three OAuth settings:");
  console.log(`  MELI_TOKEN=${sandbox.staticToken}`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await sandbox.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
