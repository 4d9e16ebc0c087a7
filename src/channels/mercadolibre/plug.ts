/**
 * The MercadoLibre plug: builds everything the MercadoLibre channel needs from the
 * configuration — the access-token chain (OAuth refresh, a static token, or the
 * built-in sandbox's own OAuth chain), the rate budget and listing locks shared
 * through Redis, the client, the dispatcher adapter, resync's stock reader/writer,
 * the status probe, and MeLi's orders (the `orders_v2` notifications route, the
 * deliveries sweep and the catch-up source) when the service lends an order book.
 */
import { meliConfigured, type MeliLocation } from "../../config.ts";
import { resolveRule } from "../../model/stock_rule.ts";
import { logger } from "../../log.ts";
import type { MeliSandbox } from "../../sandbox/mercadolibre/sandbox.ts";
import type { ChannelPlug, ChannelPlugin, PlugContext } from "../../sync/channel.ts";
import { RedisBucket } from "../../sync/cost_bucket.ts";
import { InDoubtMarks, ListingLocks } from "../../sync/listing_lock.ts";
import { meliCatalog } from "./catalog.ts";
import { FetchCap } from "./fetch_cap.ts";
import { MeliOrders } from "./orders.ts";
import { MeliChannel } from "./channel.ts";
import { MeliClient } from "./client.ts";
import { MeliListings } from "./listings.ts";
import { MeliStock } from "./stock.ts";
import { type AccessTokens, OAuthTokens, StaticToken } from "./tokens.ts";

const log = logger("mercadolibre");

/** The MercadoLibre channel, plugged; `sandbox` is set when it talks to the built-in sandbox. */
export interface MeliPlug extends ChannelPlug {
  readonly sandbox?: MeliSandbox;
}

/**
 * The store whose stock MeLi mirrors: MELI_TIENDA_ID, or in sandbox mode the
 * catalog's first store. Undefined in delta mode without MELI_TIENDA_ID (every store),
 * and with MELI_LOCATIONS (each mapped store has its own location).
 */
export async function mirroredStore(context: Pick<PlugContext, "config" | "sandboxCatalog">) {
  const { config } = context;
  if (config.MELI_TIENDA_ID) return config.MELI_TIENDA_ID;
  if (config.MELI_LOCATIONS || config.MELI_MODE === "delta" || meliConfigured(config)) return undefined;
  return (await context.sandboxCatalog()).stores[0].tienda_id;
}

/** The stores whose sales reach MeLi: MELI_LOCATIONS' stores, else the mirrored one; undefined: every store. */
export async function meliStores(context: Pick<PlugContext, "config" | "sandboxCatalog">) {
  const locations = context.config.MELI_LOCATIONS;
  if (locations) return Object.keys(locations);
  const store = await mirroredStore(context);
  return store === undefined ? undefined : [store];
}

/**
 * The built-in sandbox's seller for MELI_LOCATIONS: multi-origin with those warehouses
 * when they are seller warehouses, seeded from the first mapped store otherwise.
 */
function sandboxSeller(locations: Record<string, MeliLocation> | undefined) {
  if (!locations) return {};
  const warehouses = Object.entries(locations).flatMap(([tienda_id, l]) =>
    l.type === "seller_warehouse"
      ? [{ tienda_id, store_id: l.storeId, network_node_id: l.networkNodeId }]
      : []
  );
  return {
    tiendaId: Object.keys(locations)[0],
    ...(warehouses.length ? { userTags: ["normal", "warehouse_management"], warehouses } : {}),
  };
}

/** Builds the MercadoLibre channel: the real API when configured, else the built-in sandbox. */
export async function plugMercadoLibre(context: PlugContext): Promise<MeliPlug> {
  const { config, sql, redis, metrics } = context;
  let baseUrl = config.MELI_URL;
  let tokens: AccessTokens;
  let sandbox: MeliSandbox | undefined;
  const tiendaId = await mirroredStore(context);
  const onRefresh = (outcome: string) => metrics.tokenRefreshes.inc({ channel: "mercadolibre", outcome });
  if (config.MELI_CLIENT_ID && config.MELI_CLIENT_SECRET && config.MELI_REFRESH_TOKEN) {
    tokens = new OAuthTokens({
      sql,
      baseUrl,
      clientId: config.MELI_CLIENT_ID,
      clientSecret: config.MELI_CLIENT_SECRET,
      refreshToken: config.MELI_REFRESH_TOKEN,
      timeoutMs: config.MELI_TIMEOUT,
      onRefresh,
    });
  } else if (config.MELI_TOKEN) {
    tokens = new StaticToken(config.MELI_TOKEN);
  } else {
    // Loaded only here: a live instance never loads the simulator (docs/DECISIONS.md, "Memory").
    const { startMeliSandbox } = await import("../../sandbox/mercadolibre/sandbox.ts");
    sandbox = await startMeliSandbox({
      port: config.SANDBOX_MELI_PORT,
      catalog: await context.sandboxCatalog(),
      tiendaId,
      ...sandboxSeller(config.MELI_LOCATIONS),
      accessTokenTtlSeconds: config.SANDBOX_MELI_TOKEN_TTL,
    });
    baseUrl = sandbox.url;
    // The sandbox goes through the real OAuth chain, so the refresh path runs every day.
    tokens = new OAuthTokens({
      sql,
      baseUrl,
      clientId: sandbox.clientId,
      clientSecret: sandbox.clientSecret,
      refreshToken: sandbox.currentRefreshToken(),
      timeoutMs: config.MELI_TIMEOUT,
      onRefresh,
    });
    log.warning(
      "MELI_TOKEN / MELI_CLIENT_ID not set: syncing to the built-in MercadoLibre SANDBOX at {url} " +
        "(no real listing is touched); it mirrors store {tienda_id}",
      { url: sandbox.url, tienda_id: tiendaId, mark: "start" },
    );
  }
  const host = new URL(baseUrl).host;
  const budget = new RedisBucket(redis, `marketplace-sync:budget:mercadolibre:${host}`, {
    max: Math.max(1, config.MELI_RATE_PER_SEC),
    restoreRate: config.MELI_RATE_PER_SEC,
  });
  const client = new MeliClient({ baseUrl, tokens, budget, timeoutMs: config.MELI_TIMEOUT, metrics });
  // SKUs are resolved by reading the whole account when that is cheaper than a search per SKU. The
  // read runs while a batch is planned, so it may cost at most half the batch's lease at the budget,
  // and is given up for the search once it has taken half the lease.
  const catalog = meliCatalog(client, { seller: (signal) => listings.seller(signal) }, config.MELI_LOCATIONS);
  const listings: MeliListings = new MeliListings(sql, client, config.MELI_USER_ID, {
    reader: catalog,
    maxRequests: Math.floor(config.MELI_RATE_PER_SEC * config.DISPATCH_LEASE / 1000 / 2),
    deadlineMs: Math.floor(config.DISPATCH_LEASE / 2),
  });
  const locks = new ListingLocks(redis, `marketplace-sync:lock:mercadolibre:${host}:`, config.MELI_LOCK_TTL);
  const channel = new MeliChannel({
    client,
    listings,
    tokens,
    stock: context.posStock(),
    locks,
    mode: config.MELI_MODE,
    tiendaId,
    locations: config.MELI_LOCATIONS,
    reactivate: config.MELI_REACTIVATE,
    batchSize: config.MELI_BATCH_SIZE,
    doubts: new InDoubtMarks(redis, `marketplace-sync:doubt:mercadolibre:${host}:`),
    batchOpen: context.batchSending,
    // A rule resolves against the store whose stock the listing (or the location) shows.
    ruleFor: (store, sku) => resolveRule(config.stockRules, "mercadolibre", store, sku),
  });
  const store = orderStore(config, tiendaId);
  let orders: MeliOrders | undefined;
  if (store) {
    const knownSeller = config.MELI_USER_ID ?? (sandbox ? String(sandbox.userId) : undefined);
    orders = new MeliOrders({
      client,
      book: context.orders,
      sellerId: async (signal) => {
        if (knownSeller) return knownSeller;
        const seller = await listings.seller(signal);
        return "id" in seller ? seller.id : undefined;
      },
      tiendaId: store,
      cap: new FetchCap(
        redis,
        `marketplace-sync:order-fetches:mercadolibre:${host}`,
        config.MELI_ORDER_FETCHES_PER_MINUTE,
      ),
      maxBytes: config.WEBHOOK_MAX_BYTES,
    });
    orders.start();
    // The built-in sandbox notifies this service, as MeLi notifies the app's callback URL.
    if (sandbox) sandbox.setNotificationUrl(`${context.selfUrl()}/webhooks/mercadolibre`);
  } else {
    log.warning(
      "MercadoLibre orders are not taken: no store to count them at (set MELI_TIENDA_ID or MELI_LOCATIONS)",
      { mark: "start" },
    );
  }
  return {
    name: "mercadolibre",
    adapter: channel,
    routes: orders ? [orders.route] : [],
    orders,
    stock: new MeliStock(
      client,
      listings,
      locks,
      tiendaId,
      config.MELI_MODE === "delta",
      catalog,
      config.MELI_LOCATIONS,
    ),
    probe: {
      health: () => channel.health(),
      budget: () => ({ level: budget.level, max: budget.shape.max }),
      tokenExpiresAt: () => tokens.expiresAt(),
    },
    sandbox,
    finish: async (deadline) => {
      // The sweep and the deliveries in flight end while the ledger is still open.
      await orders?.stop();
      await tokens.close?.(deadline);
    },
    close: async () => {
      await sandbox?.close();
    },
  };
}

/**
 * The POS store MeLi's orders draw from: MELI_TIENDA_ID (or, in sandbox mode, the mirrored
 * store). With MELI_LOCATIONS, the first mapped store: an order does not say which of the
 * seller's warehouses ships it (that is in the shipment, not the order), so the units are
 * counted at the first store listed — list the store MeLi sells from first. Undefined (delta mode
 * without MELI_TIENDA_ID): no store to count MeLi's orders at, so they are not taken.
 */
export function orderStore(config: PlugContext["config"], mirrored: string | undefined): string | undefined {
  if (config.MELI_TIENDA_ID) return config.MELI_TIENDA_ID;
  if (config.MELI_LOCATIONS) return Object.keys(config.MELI_LOCATIONS)[0];
  return mirrored;
}

/** MercadoLibre as the root plugs it in. */
export const mercadolibre: ChannelPlugin<MeliPlug> = {
  name: "mercadolibre",
  onlyStores: meliStores,
  plug: plugMercadoLibre,
};
