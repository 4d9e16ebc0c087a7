/**
 * Loopback simulator of the Shopify Admin GraphQL API (version 2026-10), for running
 * the service without Shopify credentials and for injecting faults.
 *
 * It behaves like the real API rather than accepting whatever is sent: the access
 * token is checked, every document is validated against Shopify's published schema
 * (a committed subset, see scripts/extract_shopify_schema.ts) and executed with
 * graphql-js over an in-memory shop seeded from a catalog; `@idempotent` keys,
 * `changeFromQuantity`, Shopify's inventory reasons and user-error codes, search
 * syntax, calculated query cost and the leaky bucket (THROTTLED) are enforced.
 * Bulk query operations (`bulkOperationRunQuery`, ./bulk.ts) run in the background
 * and leave their JSONL on a separate listener standing in for Shopify's storage host
 * (./storage.ts): another port, URLs naming `localhost`, and no shop token accepted.
 *
 * The shop also sells (./orders.ts): an order placed at a location takes its units off
 * `available` there, a cancellation or refund with restock puts them back, and each change is
 * delivered as Shopify's webhooks (`orders/create`, `orders/cancelled`, `refunds/create`)
 * to the subscribed URLs, signed with the app's secret (./webhooks.ts); the Admin API's
 * `orders(query: "updated_at:>=…", sortKey: UPDATED_AT)` answers the same orders.
 *
 * Routes: `POST /admin/api/{version}/graphql.json` (the API), `GET /__sandbox/state`,
 * `GET|POST /__sandbox/faults` (JSON, partial updates), `POST /__sandbox/variants/delete`
 * (`{"sku"}`: the merchant deletes a variant) and `POST /__sandbox/variants` (`{"sku",
 * "producto_id"?, "title"?, "available"?: {tienda_id: n}}`: creates one with new gids);
 * orders: `GET|POST /__sandbox/orders` (`{"tienda_id"|"location_id", "source_name"?: "pos"|"web",
 * "line_items": [{"sku", "quantity"}]}`), `POST /__sandbox/orders/{id}/cancel` (`{"restock"?,
 * "reason"?}`), `POST /__sandbox/orders/{id}/refunds` (`{"restock"?, "refund_line_items":
 * [{"line_item_id", "quantity"}]}`); webhooks: `GET|POST /__sandbox/webhooks` (`{"topic",
 * "address"}` subscribes) and `POST /__sandbox/webhooks/redeliver` (`{"webhook_id"}`: the same
 * delivery again). The admin routes take no token: the sandbox only listens on 127.0.0.1.
 *
 * Run alone: `deno task sandbox` (env: SANDBOX_SHOPIFY_PORT, SANDBOX_SHOPIFY_TOKEN,
 * SANDBOX_CATALOG, SANDBOX_SEED); it prints the SHOPIFY_* settings that point the
 * service at it.
 */
import { execute } from "graphql";
import { z } from "zod";
import { type Catalog, defaultCatalog, loadCatalog } from "../catalog.ts";
import { type BucketSettings, LeakyBucket, STANDARD_PLAN_BUCKET, type ThrottleStatus } from "../cost.ts";
import { IDEMPOTENCY_TTL_MS, IdempotencyStore } from "./idempotency.ts";
import { seededRandom } from "../prng.ts";
import { NOT_FOUND_BODY, UNAUTHORIZED_BODY } from "./errors.ts";
import { runShopifyGraphQL } from "./graphql.ts";
import {
  type MutationRecord,
  type SandboxLocation,
  type SandboxVariant,
  ShopifyInventory,
} from "./inventory.ts";
import { type ShopifyContext, shopifyRoot } from "./resolvers.ts";
import { SHOPIFY_SCHEMA_VERSION, shopifySchema } from "./schema.ts";
import { type BulkOperationErrorCode, type BulkOperationRecord, BulkOperations } from "./bulk.ts";
import { type BulkStorageStats, type DownloadProgress, startBulkStorage } from "./storage.ts";
import { logger, setupLogging } from "../../log.ts";
import { OrderRefused, type OrderWebhook, ShopifyOrders } from "./orders.ts";
import { WebhookDeliveries, type WebhookDelivery, type WebhookSubscription } from "./webhooks.ts";

const log = logger("sandbox");

/** Faults the sandbox can inject; all off by default. */
export interface ShopifyFaults {
  /** Fraction of API requests answered 500/502/503 before anything is applied. */
  errorRate: number;
  /** Fraction of API requests applied in full whose answer is then replaced by a 502 (a lost response). */
  lostResponseRate: number;
  /** Fraction of idempotent mutations failing inside (INTERNAL_SERVER_ERROR; the key then reports IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED). */
  internalErrorRate: number;
  /** Delay added to every API request, in ms (a mutation holds its idempotency key meanwhile). */
  latencyMs: number;
  /** Answer every API request THROTTLED. */
  throttleAll: boolean;
  /** The shop is frozen (an unpaid bill): every API request is answered 402, nothing applied. */
  frozen: boolean;
  /** Bulk operations that finish while set end FAILED with this error code instead of completing. */
  bulkFailure: BulkOperationErrorCode | null;
  /** Fraction of webhook deliveries lost on the way (never sent, never retried): the catch-up's case. */
  webhookDropRate: number;
  /** Seed of the generator that draws the faults (set it again to replay a sequence). */
  seed: number;
}

const NO_FAULTS: ShopifyFaults = {
  errorRate: 0,
  lostResponseRate: 0,
  internalErrorRate: 0,
  latencyMs: 0,
  throttleAll: false,
  frozen: false,
  bulkFailure: null,
  webhookDropRate: 0,
  seed: 1,
};

const rate = z.number().min(0).max(1);
const faultsSchema = z.object({
  errorRate: rate,
  lostResponseRate: rate,
  internalErrorRate: rate,
  latencyMs: z.number().int().min(0).max(120_000),
  throttleAll: z.boolean(),
  frozen: z.boolean(),
  bulkFailure: z.enum(["ACCESS_DENIED", "INTERNAL_SERVER_ERROR", "TIMEOUT"]).nullable(),
  webhookDropRate: rate,
  seed: z.number().int(),
}).partial().strict();

/** Options of {@link startShopifySandbox}. */
export interface ShopifySandboxOptions {
  /** TCP port on 127.0.0.1; 0 (default) picks a free one. */
  port?: number;
  /** Access token to require; a random `shpat_…` by default. */
  token?: string;
  /** Catalog to seed the shop; the committed default otherwise. */
  catalog?: Catalog;
  /** Cost bucket; Shopify's Standard plan (2,000 points, 100/s) by default. */
  bucket?: BucketSettings;
  /** Initial faults. */
  faults?: Partial<ShopifyFaults>;
  /** Idempotency key retention (24 h by default). */
  idempotencyTtlMs?: number;
  /** How long a bulk operation runs before it completes, in ms (200 by default). */
  bulkDelayMs?: number;
  /** Port of the bulk result storage listener on localhost; 0 (default) picks a free one. */
  storagePort?: number;
  /** Pause between the chunks of a result download, in ms (0 by default). */
  downloadChunkDelayMs?: number;
  /** The app's client secret, which signs webhook deliveries; random by default. */
  webhookSecret?: string;
  /** Pauses before each webhook retry, in ms (its length is how many retries; default 200 ms, 1 s, 3 s). */
  webhookRetryDelaysMs?: number[];
  /** Clock (ms), for tests. */
  now?: () => number;
}

/** The shop's `myshopify.com` domain, as `X-Shopify-Shop-Domain` names it. */
export const SANDBOX_SHOP_DOMAIN = "marketplace-sync-sandbox.myshopify.com";

/** Webhook topics the sandbox delivers. */
export const SANDBOX_WEBHOOK_TOPICS = ["orders/create", "orders/cancelled", "refunds/create"] as const;

/** Counters since start. */
export interface ShopifySandboxStats {
  /** Requests to the GraphQL endpoint (any outcome). */
  requests: number;
  /** Rejected for a missing or wrong access token. */
  unauthorized: number;
  /** Answered 5xx by fault injection before anything was applied. */
  errorsInjected: number;
  /** Applied, then answered 502 by fault injection. */
  lostResponses: number;
  /** Idempotent mutations failed inside by fault injection. */
  internalErrors: number;
  /** Answered THROTTLED (bucket short of the requested cost, or throttleAll). */
  throttled: number;
  /** Refused because the requested cost exceeds what one query may cost or the bucket can ever hold. */
  costExceeded: number;
  /** Parse, validation, variable or Shopify request errors (nothing executed). */
  invalid: number;
  /** Executed documents. */
  executed: number;
  /** Adjustment groups created by mutations. */
  mutationsApplied: number;
  /** Idempotent duplicates answered with the original result. */
  idempotentReplays: number;
  /** Bulk query operations started. */
  bulkOperations: number;
  /** Cost points taken from the bucket and kept (each executed request's actual cost). */
  pointsSpent: number;
  /** Requests to the GraphQL endpoint by the operation name their document declares ("" for none). */
  operations: Record<string, number>;
}

/** A running sandbox. */
export interface ShopifySandbox {
  /** Base URL, e.g. `http://127.0.0.1:41234` (what SHOPIFY_URL should be). */
  url: string;
  /** Full GraphQL endpoint for {@link apiVersion}. */
  graphqlUrl: string;
  /** Base URL of the bulk result storage stand-in (`http://localhost:<port>`): not the shop. */
  storageUrl: string;
  token: string;
  apiVersion: string;
  /** One location per catalog store. */
  locations: readonly SandboxLocation[];
  /** The shop's variants now: one (and its inventory item) per catalog product, less deleted, plus created. */
  readonly variants: readonly SandboxVariant[];
  /** A merchant deletes the variant with this SKU (and its inventory item); undefined if none. */
  deleteVariant(sku: string): SandboxVariant | undefined;
  /** A merchant creates a variant with this SKU: new gids, `available` per tienda_id (else 0). */
  createVariant(input: Parameters<ShopifyInventory["createVariant"]>[0]): SandboxVariant;
  /** Available quantity of an inventory item at a location (gids). */
  available(inventoryItemId: string, locationId: string): number | undefined;
  /** Available quantity of a catalog product at a catalog store. */
  availableFor(productoId: string, tiendaId: string): number | undefined;
  /** The location gid of a catalog store. */
  locationIdOf(tiendaId: string): string | undefined;
  /** Locations and variants with their available quantity per location. */
  state(): ReturnType<ShopifyInventory["snapshot"]>;
  stats(): ShopifySandboxStats;
  /** Every bulk operation so far, oldest first. */
  bulkOperations(): BulkOperationRecord[];
  /** Result downloads from the storage stand-in, as far as each got. */
  downloads(): DownloadProgress[];
  /** The storage stand-in's counters (downloads, requests refused for carrying the shop's token). */
  storageStats(): BulkStorageStats;
  throttleStatus(): ThrottleStatus;
  faults(): ShopifyFaults;
  /** Changes some faults (a new `seed` restarts the fault sequence). */
  setFaults(faults: Partial<ShopifyFaults>): ShopifyFaults;
  /** The app's client secret: what SHOPIFY_WEBHOOK_SECRET must be for the deliveries to verify. */
  webhookSecret: string;
  /** Subscribes a URL to a webhook topic (what `webhookSubscriptionCreate` or the app's TOML does). */
  subscribeWebhook(topic: (typeof SANDBOX_WEBHOOK_TOPICS)[number], uri: string): WebhookSubscription;
  /** Places an order at a catalog store's location (see the `/__sandbox/orders` route); its webhooks go out. */
  placeOrder(input: {
    tiendaId: string;
    lines: { sku: string; quantity: number }[];
    sourceName?: "pos" | "web";
  }): Record<string, unknown>;
  /** Cancels an order (restocking by default); its webhooks go out. */
  cancelOrder(orderId: number, options?: { restock?: boolean; reason?: string }): Record<string, unknown>;
  /** Refunds lines of an order (restocking by default); `refunds/create` goes out. */
  refundOrder(
    orderId: number,
    lines: { lineItemId: number; quantity: number }[],
    restock?: boolean,
  ): Record<string, unknown>;
  /** Every webhook delivery so far, oldest first. */
  webhookDeliveries(): WebhookDelivery[];
  /** Sends a delivery again with the same ids (a Shopify retry). */
  redeliverWebhook(webhookId: string): WebhookDelivery | undefined;
  /** Resolves once no webhook delivery is under way. */
  webhooksIdle(): Promise<void>;
  close(): Promise<void>;
}

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `shpat_${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** A 5xx as Shopify's edge sends them: JSON for 500/503, an HTML page for 502. */
function serverError(status: 500 | 502 | 503): Response {
  if (status === 502) {
    return new Response("<html><body><h1>502 Bad Gateway</h1></body></html>", {
      status,
      headers: { "content-type": "text/html" },
    });
  }
  return json(status, { errors: status === 500 ? "Internal Server Error" : "Service Unavailable" });
}

/** `POST /__sandbox/orders`: an order placed at a location. */
const NEW_ORDER = z.object({
  tienda_id: z.string().optional(),
  location_id: z.string().optional(),
  source_name: z.enum(["pos", "web"]).optional(),
  line_items: z.array(z.object({ sku: z.string(), quantity: z.number().int() })),
}).refine((o) => (o.tienda_id === undefined) !== (o.location_id === undefined), {
  message: "name the location with exactly one of tienda_id or location_id",
});

/** `POST /__sandbox/orders/{id}/cancel`. */
const CANCEL_ORDER = z.object({ restock: z.boolean().optional(), reason: z.string().optional() });

/** `POST /__sandbox/orders/{id}/refunds`. */
const NEW_REFUND = z.object({
  restock: z.boolean().optional(),
  refund_line_items: z.array(z.object({ line_item_id: z.number().int(), quantity: z.number().int() })),
});

/** `POST /__sandbox/webhooks`: a subscription. */
const NEW_WEBHOOK = z.object({ topic: z.enum(SANDBOX_WEBHOOK_TOPICS), address: z.url() });

/** `POST /__sandbox/variants`: a variant the merchant creates (e.g. re-created after a delete). */
const NEW_VARIANT = z.object({
  // "" is a variant without a SKU (Shopify shows null).
  sku: z.string(),
  producto_id: z.string().optional(),
  title: z.string().optional(),
  available: z.record(z.string(), z.number().int()).optional(),
});

/** Starts the simulator on 127.0.0.1 and resolves once it listens. */
export async function startShopifySandbox(options: ShopifySandboxOptions = {}): Promise<ShopifySandbox> {
  const now = options.now ?? Date.now;
  const token = options.token ?? randomToken();
  const apiVersion = SHOPIFY_SCHEMA_VERSION;
  const catalog = options.catalog ?? defaultCatalog();
  const inventory = new ShopifyInventory(catalog, now);
  const orders = new ShopifyOrders(inventory, now);
  const idempotency = new IdempotencyStore<MutationRecord>(
    options.idempotencyTtlMs ?? IDEMPOTENCY_TTL_MS,
    now,
  );
  const bucket = new LeakyBucket(options.bucket ?? STANDARD_PLAN_BUCKET, now);
  let faults: ShopifyFaults = { ...NO_FAULTS, ...faultsSchema.parse(options.faults ?? {}) };
  let random = seededRandom(faults.seed);
  const stats: ShopifySandboxStats = {
    requests: 0,
    unauthorized: 0,
    errorsInjected: 0,
    lostResponses: 0,
    internalErrors: 0,
    throttled: 0,
    costExceeded: 0,
    invalid: 0,
    executed: 0,
    mutationsApplied: 0,
    idempotentReplays: 0,
    bulkOperations: 0,
    pointsSpent: 0,
    operations: {},
  };
  const storage = await startBulkStorage({
    port: options.storagePort,
    chunkDelayMs: options.downloadChunkDelayMs,
    now,
  });
  // A bulk query reads the shop like any query, with every connection whole.
  const bulkContext: ShopifyContext = {
    inventory,
    orders,
    idempotency,
    requestId: "bulk",
    latency: () => Promise.resolve(),
    internalFailure: () => false,
    searchWarnings: [],
    onApplied: () => {},
    onReplay: () => {},
    get bulk() {
      return bulk;
    },
    unpaged: true,
  };
  const bulk: BulkOperations = new BulkOperations({
    storage,
    execute: async (document) =>
      await execute({
        schema: shopifySchema(),
        document,
        rootValue: shopifyRoot(bulkContext),
        contextValue: bulkContext,
      }),
    delayMs: options.bulkDelayMs ?? 200,
    failure: () => faults.bulkFailure,
    now,
  });

  const setFaults = (patch: Partial<ShopifyFaults>): ShopifyFaults => {
    const parsed = faultsSchema.parse(patch);
    faults = { ...faults, ...parsed };
    if (parsed.seed !== undefined) random = seededRandom(parsed.seed);
    log.info("Shopify sandbox faults now {faults}", { faults });
    return { ...faults };
  };

  const graphql = async (req: Request, requestId: string): Promise<Response> => {
    stats.requests++;
    if (req.headers.get("x-shopify-access-token") !== token) {
      stats.unauthorized++;
      return json(401, UNAUTHORIZED_BODY);
    }
    if (faults.frozen) {
      stats.errorsInjected++;
      return json(402, { errors: "Unavailable Shop" });
    }
    // Drawn before reading the body: a 5xx here means nothing was applied.
    if (faults.errorRate > 0 && random() < faults.errorRate) {
      stats.errorsInjected++;
      await new Promise((r) => setTimeout(r, faults.latencyMs));
      return serverError(([500, 502, 503] as const)[Math.floor(random() * 3)]);
    }
    let body: unknown;
    try {
      body = (req.headers.get("content-type") ?? "").includes("application/graphql")
        ? { query: await req.text() }
        : await req.json();
    } catch {
      body = undefined;
    }
    const text = (body as { query?: unknown } | undefined)?.query;
    const operation = typeof text === "string" ? /^\s*(?:query|mutation)\s+(\w+)/.exec(text)?.[1] ?? "" : "";
    stats.operations[operation] = (stats.operations[operation] ?? 0) + 1;
    const latencyMs = faults.latencyMs;
    let waited: Promise<void> | undefined;
    const context: ShopifyContext = {
      inventory,
      orders,
      idempotency,
      requestId,
      latency: () =>
        waited ??= latencyMs > 0 ? new Promise((r) => setTimeout(r, latencyMs)) : Promise.resolve(),
      internalFailure: () => {
        const fail = faults.internalErrorRate > 0 && random() < faults.internalErrorRate;
        if (fail) stats.internalErrors++;
        return fail;
      },
      searchWarnings: [],
      onApplied: () => stats.mutationsApplied++,
      onReplay: () => stats.idempotentReplays++,
      bulk,
    };
    const started = bulk.list().length;
    const result = await runShopifyGraphQL(body, { bucket, throttleAll: faults.throttleAll, context });
    await context.latency();
    log.debug("Shopify sandbox request {requestId}: {outcome}", { requestId, outcome: result.outcome });
    if (result.outcome === "executed") stats.executed++;
    else if (result.outcome === "throttled") stats.throttled++;
    else if (result.outcome === "cost_exceeded") stats.costExceeded++;
    else stats.invalid++;
    stats.bulkOperations += bulk.list().length - started;
    stats.pointsSpent += result.points ?? 0;
    if (result.outcome === "executed" && faults.lostResponseRate > 0 && random() < faults.lostResponseRate) {
      stats.lostResponses++;
      return serverError(502);
    }
    return json(result.status, result.body);
  };

  const webhookSecret = options.webhookSecret ??
    btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))));
  const webhooks = new WebhookDeliveries({
    secret: webhookSecret,
    shopDomain: SANDBOX_SHOP_DOMAIN,
    apiVersion,
    retryDelaysMs: options.webhookRetryDelaysMs,
    drop: () => faults.webhookDropRate > 0 && random() < faults.webhookDropRate,
    now,
  });
  /** One merchant action: its webhooks go out under one event id. */
  const act = <T>(result: T & { webhooks: OrderWebhook[] }): T => {
    webhooks.emit(result.webhooks);
    return result;
  };
  const locationFor = (tiendaId: string) => {
    const location = inventory.locationOfStore(tiendaId);
    if (!location) throw new OrderRefused(422, `no location for tienda_id "${tiendaId}"`);
    return location.id;
  };
  const ordersAdmin = async (req: Request, path: string): Promise<Response> => {
    const body = req.method === "POST" ? await req.json().catch(() => null) : undefined;
    try {
      if (path === "/__sandbox/orders" && req.method === "GET") {
        return json(200, { orders: orders.orders.map((o) => orders.orderPayload(o)) });
      }
      if (path === "/__sandbox/orders" && req.method === "POST") {
        const parsed = NEW_ORDER.safeParse(body);
        if (!parsed.success) return json(400, { errors: parsed.error.issues });
        const { order } = act(orders.place({
          locationId: parsed.data.location_id ?? locationFor(parsed.data.tienda_id!),
          lines: parsed.data.line_items,
          sourceName: parsed.data.source_name,
        }));
        return json(201, { order: orders.orderPayload(order) });
      }
      const match = path.match(/^\/__sandbox\/orders\/(\d+)\/(cancel|refunds)$/);
      if (match && req.method === "POST") {
        const id = Number(match[1]);
        if (match[2] === "cancel") {
          const parsed = CANCEL_ORDER.safeParse(body ?? {});
          if (!parsed.success) return json(400, { errors: parsed.error.issues });
          const { order } = act(orders.cancel(id, parsed.data));
          return json(200, { order: orders.orderPayload(order) });
        }
        const parsed = NEW_REFUND.safeParse(body);
        if (!parsed.success) return json(400, { errors: parsed.error.issues });
        const { order, refund } = act(orders.refund(id, {
          lines: parsed.data.refund_line_items.map((l) => ({
            lineItemId: l.line_item_id,
            quantity: l.quantity,
          })),
          restock: parsed.data.restock ?? true,
        }));
        return json(201, { refund: orders.refundPayload(order, refund) });
      }
      if (path === "/__sandbox/webhooks" && req.method === "GET") {
        return json(200, { webhooks: webhooks.subscriptions, deliveries: webhooks.deliveries() });
      }
      if (path === "/__sandbox/webhooks" && req.method === "POST") {
        const parsed = NEW_WEBHOOK.safeParse(body);
        if (!parsed.success) return json(400, { errors: parsed.error.issues });
        return json(201, { webhook: webhooks.subscribe(parsed.data.topic, parsed.data.address) });
      }
      if (path === "/__sandbox/webhooks/redeliver" && req.method === "POST") {
        const id = typeof body?.webhook_id === "string" ? body.webhook_id : "";
        const delivery = webhooks.redeliver(id);
        return delivery ? json(200, { delivery }) : json(404, { errors: `no delivery ${id}` });
      }
    } catch (e) {
      if (e instanceof OrderRefused) return json(e.status, { errors: e.message });
      throw e;
    }
    return json(404, NOT_FOUND_BODY);
  };

  const admin = async (req: Request, path: string): Promise<Response> => {
    if (path.startsWith("/__sandbox/orders") || path.startsWith("/__sandbox/webhooks")) {
      return await ordersAdmin(req, path);
    }
    if (path === "/__sandbox/state" && req.method === "GET") {
      return json(200, {
        apiVersion,
        ...inventory.snapshot(),
        orders: orders.orders.length,
        webhookDeliveries: webhooks.deliveries().length,
        stats: { ...stats },
        faults,
        throttleStatus: bucket.status(),
        idempotencyKeys: idempotency.size,
        bulkOperations: bulk.list(),
        storage: { url: storage.url, ...storage.stats() },
      });
    }
    if (path === "/__sandbox/faults" && req.method === "GET") return json(200, faults);
    if (path === "/__sandbox/faults" && req.method === "POST") {
      try {
        return json(200, setFaults(await req.json()));
      } catch (e) {
        const issues = e instanceof z.ZodError ? e.issues : String(e);
        return json(400, { errors: issues });
      }
    }
    if (path === "/__sandbox/variants/delete" && req.method === "POST") {
      const body = await req.json().catch(() => null);
      const sku = typeof body?.sku === "string" ? body.sku : undefined;
      if (!sku) return json(400, { errors: 'expected {"sku": "..."}' });
      const deleted = inventory.deleteVariant(sku);
      return deleted ? json(200, { deleted }) : json(404, { errors: `no variant has SKU "${sku}"` });
    }
    if (path === "/__sandbox/variants" && req.method === "POST") {
      const parsed = NEW_VARIANT.safeParse(await req.json().catch(() => null));
      if (!parsed.success) return json(400, { errors: parsed.error.issues });
      const { sku, producto_id, title, available } = parsed.data;
      return json(200, {
        created: inventory.createVariant({ sku, productoId: producto_id, title, available }),
      });
    }
    return json(404, NOT_FOUND_BODY);
  };

  const route = /^\/admin\/api\/([^/]+)\/graphql\.json$/;
  const { promise: listening, resolve: onListen } = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen: () => onListen() },
    async (req) => {
      const requestId = crypto.randomUUID();
      const path = new URL(req.url).pathname;
      const headers = { "x-request-id": requestId };
      let response: Response;
      const match = path.match(route);
      if (path.startsWith("/__sandbox/")) response = await admin(req, path);
      else if (!match || match[1] !== apiVersion) response = json(404, NOT_FOUND_BODY);
      else if (req.method !== "POST") {
        response = json(405, { errors: "Method Not Allowed" }, {
          allow: "POST",
        });
      } else response = await graphql(req, requestId);
      for (const [k, v] of Object.entries(headers)) response.headers.set(k, v);
      if (match) response.headers.set("x-shopify-api-version", apiVersion);
      return response;
    },
  );
  await listening;
  const url = `http://127.0.0.1:${server.addr.port}`;
  log.info("Shopify sandbox listening on {url} (API {apiVersion})", { url, apiVersion, mark: "start" });

  return {
    url,
    graphqlUrl: `${url}/admin/api/${apiVersion}/graphql.json`,
    storageUrl: storage.url,
    token,
    apiVersion,
    locations: inventory.locations,
    get variants() {
      return inventory.variants;
    },
    deleteVariant: (sku) => inventory.deleteVariant(sku),
    createVariant: (input) => inventory.createVariant(input),
    available: (itemId, locationId) => inventory.available(itemId, locationId),
    availableFor: (productoId, tiendaId) => {
      const v = inventory.variants.find((x) => x.productoId === productoId);
      const l = inventory.locationOfStore(tiendaId);
      return v && l ? inventory.available(v.inventoryItemId, l.id) : undefined;
    },
    locationIdOf: (tiendaId) => inventory.locationOfStore(tiendaId)?.id,
    state: () => inventory.snapshot(),
    stats: () => ({ ...stats, operations: { ...stats.operations } }),
    bulkOperations: () => bulk.list(),
    downloads: () => storage.downloads(),
    storageStats: () => storage.stats(),
    throttleStatus: () => bucket.status(),
    faults: () => ({ ...faults }),
    setFaults,
    webhookSecret,
    subscribeWebhook: (topic, uri) => webhooks.subscribe(topic, uri),
    placeOrder: ({ tiendaId, lines, sourceName }) =>
      orders.orderPayload(act(orders.place({ locationId: locationFor(tiendaId), lines, sourceName })).order),
    cancelOrder: (orderId, options) => orders.orderPayload(act(orders.cancel(orderId, options)).order),
    refundOrder: (orderId, lines, restock = true) => {
      const { order, refund } = act(orders.refund(orderId, { lines, restock }));
      return orders.refundPayload(order, refund);
    },
    webhookDeliveries: () => webhooks.deliveries(),
    redeliverWebhook: (id) => webhooks.redeliver(id),
    webhooksIdle: () => webhooks.idle(),
    close: async () => {
      bulk.close();
      await webhooks.close();
      await Promise.all([server.shutdown(), storage.close()]);
      log.info("Shopify sandbox on {url} stopped", { url, mark: "shutdown" });
    },
  };
}

if (import.meta.main) {
  await setupLogging({ level: "info", format: "auto" });
  const env = (name: string) => Deno.env.get(name);
  const catalogPath = env("SANDBOX_CATALOG");
  const sandbox = await startShopifySandbox({
    port: Number(env("SANDBOX_SHOPIFY_PORT") ?? 0),
    token: env("SANDBOX_SHOPIFY_TOKEN"),
    catalog: catalogPath ? await loadCatalog(catalogPath) : undefined,
    faults: env("SANDBOX_SEED") ? { seed: Number(env("SANDBOX_SEED")) } : undefined,
  });
  // Printed, not logged: the log redacts tokens, and this is what a person copies.
  const locations = Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id]));
  console.log(`Shopify Admin API sandbox (${sandbox.apiVersion})`);
  console.log(`  GraphQL: ${sandbox.graphqlUrl}`);
  console.log(`  state:   GET ${sandbox.url}/__sandbox/state   faults: POST ${sandbox.url}/__sandbox/faults`);
  console.log(`  bulk results: ${sandbox.storageUrl} (stands in for Shopify's storage host)`);
  console.log("  locations:");
  for (const l of sandbox.locations) console.log(`    ${l.tiendaId} → ${l.id}  (${l.name})`);
  console.log("Point the service at it with:");
  console.log(`  SHOPIFY_URL=${sandbox.url}`);
  console.log(`  SHOPIFY_TOKEN=${sandbox.token}`);
  console.log(`  SHOPIFY_API_VERSION=${sandbox.apiVersion}`);
  console.log(`  SHOPIFY_LOCATIONS='${JSON.stringify(locations)}'`);
  console.log(`  SHOPIFY_WEBHOOK_SECRET=${sandbox.webhookSecret}`);
  console.log(`Deliver its order webhooks with: POST ${sandbox.url}/__sandbox/webhooks {"topic","address"}`);
  const stop = async () => {
    await sandbox.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
