/**
 * Public types of the MercadoLibre sandbox (re-exported by `mercadolibre.ts`, the
 * entry point): faults, options, counters, the request log and the running sandbox.
 */
import type { Catalog } from "../catalog.ts";
import type { MeliListing, OtherSeller } from "./items.ts";
import type { NotificationAttempt } from "./notifier.ts";
import type { MeliOrderJson, SellRequest } from "./orders.ts";

export type { MeliListing, OtherSeller } from "./items.ts";
export type { MeliNotification, NotificationAttempt } from "./notifier.ts";
export type { MeliOrderJson, SellRequest } from "./orders.ts";

/** A multi-origin seller's store (depósito) as the sandbox seeds it. */
export interface MeliWarehouseOption {
  store_id: string;
  network_node_id: string;
  /** The catalog store whose stock seeds this warehouse's quantities. */
  tienda_id: string;
}

/** A user product's stock as `GET /user-products/{id}/stock` shows it, with its `x-version`. */
export interface MeliUserProductStock {
  version: number;
  locations: { type: string; quantity: number; store_id?: string; network_node_id?: string }[];
}

/** Faults the sandbox can inject; all off by default. */
export interface MeliFaults {
  /** Fraction of API requests answered 500/502/503 before anything is applied. */
  errorRate: number;
  /** Fraction of PUTs applied in full whose answer is then replaced by a 502. */
  lostResponseRate: number;
  /** Fraction of PUTs answered 409 (optimistic locking) without applying. */
  conflictRate: number;
  /** Fraction of PUTs answered 200 with the item as it was, NOT applied ("200 OK but not applied"). */
  ignoreWritesRate: number;
  /**
   * Fraction of PUTs applied in full whose 200 answer still shows the item as
   * it was before (MeLi answering from a copy behind the write).
   */
  staleAnswerRate: number;
  /** Delay added to every API request, in ms, before it is handled. */
  latencyMs: number;
  /** Delay added to every write's answer, in ms, after it is handled (applied). */
  answerDelayMs: number;
  /** Answer every API request 429. */
  rateLimitAll: boolean;
  /** Seed of the generator that draws the faults (setting it restarts the sequence). */
  seed: number;
}

/** Options of {@link startMeliSandbox}. */
export interface MeliSandboxOptions {
  /** TCP port on 127.0.0.1; 0 (default) picks a free one. */
  port?: number;
  /** Catalog to seed the seller's items; the committed default otherwise. */
  catalog?: Catalog;
  /** Catalog store whose stock seeds available_quantity (default: the first store). */
  tiendaId?: string;
  /** App credentials `/oauth/token` accepts (random by default; the id is numeric). */
  clientId?: string;
  clientSecret?: string;
  /** Initial valid refresh token (random `TG-…` by default). */
  refreshToken?: string;
  /** `expires_in` of issued access tokens (default 21600, MeLi's 6 hours). */
  accessTokenTtlSeconds?: number;
  /** A long-lived access token that never expires (what MELI_TOKEN holds); random `APP_USR-…` by default. */
  staticToken?: string;
  /** API requests per second before 429 (default 50); `/oauth/token` is not counted. */
  ratePerSecond?: number;
  /** Seller id (default 123456789). */
  userId?: number;
  /** `GET /users/me` tags (default ["normal"]); "warehouse_management" makes a multi-origin seller. */
  userTags?: string[];
  /**
   * A multi-origin seller's stores (only read with the `warehouse_management` tag; default:
   * one store, `1001`, seeded from `tiendaId`): every user product not in Full starts with
   * one `seller_warehouse` location per store.
   */
  warehouses?: MeliWarehouseOption[];
  /**
   * Other sellers with items of their own (from their catalogs, numbered after ours): readable
   * through `/items`, never in our seller's search, and not writable with our token.
   */
  otherSellers?: OtherSeller[];
  /** Initial faults. */
  faults?: Partial<MeliFaults>;
  /** The app's notifications callback URL (orders_v2); none by default (set it later, or per test). */
  notificationUrl?: string;
  /** How long the callback may take to answer before MeLi counts a failed attempt (default 500 ms). */
  notificationTimeoutMs?: number;
  /** Pauses before the re-sends of an unanswered notification (default 1 s, 3 s, 9 s). */
  notificationRetryDelaysMs?: number[];
  /** Clock (ms), for tests: token expiry, rate limit, timestamps. */
  now?: () => number;
}

/** Counters since start. */
export interface MeliSandboxStats {
  /** Requests to any API route, `/oauth/token` included (not `/__sandbox`). */
  requests: number;
  /** Answered 401. */
  unauthorized: number;
  /** Answered 429. */
  rateLimited: number;
  /** Answered 5xx by fault injection before anything was applied. */
  errorsInjected: number;
  /** Applied, then answered 502 by fault injection. */
  lostResponses: number;
  /** Answered 409 by fault injection, nothing applied. */
  conflicts: number;
  /** Answered 200 by fault injection without applying. */
  ignoredWrites: number;
  /** Applied, but answered 200 with the item as it was before, by fault injection. */
  staleAnswers: number;
  /** Refused as malformed or invalid (see `invalidRequests()`). */
  invalid: number;
  /** Successful `/oauth/token` refreshes. */
  refreshes: number;
  /** Failed `/oauth/token` requests (any error). */
  refreshFailures: number;
  /** Applied PUTs that set stock. */
  puts: number;
  /** Applied stock writes per listing: `itemId` or `itemId/variationId`. */
  putsByListing: Record<string, number>;
  /** Applied stock writes per user product, through `/items` or `/user-products/{id}/stock`. */
  putsByUserProduct: Record<string, number>;
}

/** One API request as the sandbox saw it. */
export interface MeliRequestRecord {
  /** When it arrived (ms, the sandbox clock). */
  at: number;
  method: string;
  path: string;
  /** The raw query string, without `?`. */
  query: string;
  /** Parsed JSON or form body (text if unparseable, null if none). */
  body: unknown;
  status: number;
  /** MeLi's `error` code of the answer, or `injected_*` for a fault that answered. */
  error?: string;
}

/** A running sandbox. */
export interface MeliSandbox {
  /** Base URL, e.g. `http://127.0.0.1:41234` (what MELI_URL should be). */
  url: string;
  clientId: string;
  clientSecret: string;
  userId: number;
  staticToken: string;
  tiendaId: string;
  /** One per catalog product: its item and variation. */
  listings: readonly MeliListing[];
  /** The one refresh token valid now (after revokeTokens(): the last one, no longer valid). */
  currentRefreshToken(): string;
  /** The seller re-authorizes the app: a NEW valid refresh token, every older one invalid. */
  authorize(): string;
  /** The seller revoked the app: refresh token and issued access tokens invalid until authorize(). */
  revokeTokens(): void;
  /** Every issued (non-static) access token expires now. */
  expireAccessTokens(): void;
  /** Every open scan's scroll id expires now (as five idle minutes would). */
  expireScrolls(): void;
  /** Item ids of a seller (ours, or one of `otherSellers`), in id order. */
  itemsOf(sellerId: number): string[];
  /** A user product's stock locations and version (undefined if unknown). */
  userProductStock(userProductId: string): MeliUserProductStock | undefined;
  /** A MeLi-side change at one location (`store_id` for a seller warehouse): the version moves. */
  setLocationQuantity(
    userProductId: string,
    location: { type: string; store_id?: string },
    quantity: number,
  ): void;
  /**
   * Arms a race, once: right after the next `GET /user-products/{id}/stock` of this user
   * product is answered, the location changes to `quantity` (a sale elsewhere), so a
   * write with the version just read is stale (409).
   */
  raceStockWrite(
    userProductId: string,
    location: { type: string; store_id?: string },
    quantity: number,
  ): void;
  /**
   * The next stock write of the user product that MeLi applies is answered only once
   * the returned function is called: the caller sees no answer (as after a crash or a
   * timeout) although the write landed.
   */
  holdStockAnswer(userProductId: string): () => void;
  /**
   * The next stock write of the user product is held before MeLi handles it (a request
   * still on its way, or queued at MeLi, after the caller gave up on it) and is handled
   * right after the user product's next stock read is answered: that read shows the
   * stock before the write, and a write sent with its version finds it stale (409).
   */
  delayStockWrite(userProductId: string): void;
  /** available_quantity of a catalog product's item/variation (undefined if unknown or deleted). */
  quantityOf(productoId: string): number | undefined;
  listingFor(productoId: string): MeliListing | undefined;
  listingsForSku(sku: string): MeliListing[];
  /** The item JSON as `GET /items/{id}?include_attributes=all` returns it (undefined if unknown). */
  item(itemId: string): unknown;
  /** Changes what MeLi decides about an item (moderation, Full). */
  setItem(itemId: string, patch: { status?: string; sub_status?: string[]; logistic_type?: string }): void;
  /** The seller deletes a catalog product's variation (as a `PUT /items/{id}` leaving it out does). */
  deleteVariation(productoId: string): void;
  /** A MeLi-side change (an online sale), applying MeLi's status rules. */
  setQuantity(productoId: string, quantity: number): void;
  /** A buyer buys (as `POST /__sandbox/orders`): the stock drops, `orders_v2` is notified; throws if refused. */
  sell(request: SellRequest): MeliOrderJson;
  /** The order is cancelled: its units come back, `orders_v2` is notified; throws if refused. */
  cancelOrder(orderId: number): MeliOrderJson;
  /** An order as `GET /orders/{id}` shows it to its seller (undefined if unknown). */
  order(orderId: number): MeliOrderJson | undefined;
  /** Where notifications go (undefined: nowhere). */
  setNotificationUrl(url: string | undefined): void;
  /** While paused, notifications are dropped (never sent): only the orders search finds the change. */
  pauseNotifications(paused: boolean): void;
  /** Every notification delivery attempt, oldest first. */
  notifications(): NotificationAttempt[];
  stats(): MeliSandboxStats;
  /** Every API request, newest last, the latest 10,000. */
  requestLog(): readonly MeliRequestRecord[];
  /** Requests refused as malformed or invalid; a correct client leaves this empty. */
  invalidRequests(): readonly MeliRequestRecord[];
  faults(): MeliFaults;
  /** Changes some faults (a new `seed` restarts the fault sequence); throws a ZodError on bad input. */
  setFaults(faults: Partial<MeliFaults>): MeliFaults;
  close(): Promise<void>;
}
