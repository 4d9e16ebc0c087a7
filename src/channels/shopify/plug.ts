/**
 * The Shopify plug: builds everything the Shopify channel needs from the
 * configuration — the rate budget shared through Redis, the Admin GraphQL client,
 * the dispatcher adapter, resync's stock reader/writer, the status probe and, when the
 * service lends an order book, Shopify's orders (the `/webhooks/shopify` route, the
 * deliveries sweep and the catch-up source) — and, when no store is configured, the
 * built-in sandbox it talks to instead (its webhooks subscribed to this service).
 */
import { logger } from "../../log.ts";
import type { ShopifySandbox } from "../../sandbox/shopify/sandbox.ts";
import type { ChannelPlug, ChannelPlugin, PlugContext } from "../../sync/channel.ts";
import { RedisBucket } from "../../sync/cost_bucket.ts";
import { shopifyCatalog } from "./catalog.ts";
import { locationMap, ShopifyChannel } from "./channel.ts";
import { ShopifyClient } from "./client.ts";
import { ShopifyStock } from "./stock.ts";
import { hasRules } from "../../model/stock_rule.ts";
import { ORDER_TOPICS, orderStoreRule, shopifyOrderSource, ShopifyOrderWebhooks } from "./orders.ts";

const log = logger("shopify");

/** The Shopify channel, plugged; `sandbox` is set when it talks to the built-in sandbox. */
export interface ShopifyPlug extends ChannelPlug {
  readonly sandbox?: ShopifySandbox;
}

/** Builds the Shopify channel: the real API when configured, else the built-in sandbox. */
export async function plugShopify(context: PlugContext): Promise<ShopifyPlug> {
  const { config, sql, redis, metrics } = context;
  let baseUrl = config.SHOPIFY_URL;
  let token = config.SHOPIFY_TOKEN;
  let locations = locationMap(config.SHOPIFY_LOCATIONS ?? {}, config.SHOPIFY_LOCATION_ID);
  let sandbox: ShopifySandbox | undefined;
  // The sandbox signs its webhooks with the configured secret, or one made up for this run.
  let webhookSecret = config.SHOPIFY_WEBHOOK_SECRET;
  if (!baseUrl || !token) {
    // Loaded only here: a live instance never loads graphql-js and the schema (docs/DECISIONS.md, "Memory").
    const { startShopifySandbox } = await import("../../sandbox/shopify/sandbox.ts");
    sandbox = await startShopifySandbox({
      port: config.SANDBOX_SHOPIFY_PORT,
      catalog: await context.sandboxCatalog(),
      webhookSecret: webhookSecret ??= btoa(
        String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))),
      ),
    });
    baseUrl = sandbox.url;
    token = sandbox.token;
    locations = locationMap(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id])));
    log.warning(
      "SHOPIFY_URL/SHOPIFY_TOKEN not set: syncing to the built-in Shopify SANDBOX at {url} (no real store is touched)",
      { url: sandbox.url, mark: "start" },
    );
  } else if (!config.SHOPIFY_LOCATION_ID && !config.SHOPIFY_LOCATIONS) {
    log.warning(
      "neither SHOPIFY_LOCATION_ID nor SHOPIFY_LOCATIONS is set: every Shopify change will fail store_unmapped",
    );
  }
  const budget = new RedisBucket(redis, `marketplace-sync:budget:shopify:${new URL(baseUrl).host}`, {
    max: config.SHOPIFY_BUCKET_MAX,
    restoreRate: config.SHOPIFY_RESTORE_RATE,
  });
  const client = new ShopifyClient({
    baseUrl,
    token,
    apiVersion: config.SHOPIFY_API_VERSION,
    timeoutMs: config.SHOPIFY_TIMEOUT,
    budget,
    metrics,
  });
  const channel = new ShopifyChannel({
    client,
    sql,
    locations,
    reason: config.SHOPIFY_REASON,
    // The POS reader is opened only when a Shopify listing is ruled (its stock is read at send time).
    rules: hasRules(config.stockRules, "shopify")
      ? { rules: config.stockRules, pos: () => context.posStock() }
      : undefined,
  });
  let webhooks: ShopifyOrderWebhooks | undefined;
  const rule = orderStoreRule(locations, config.SHOPIFY_ORDER_TIENDA_ID);
  if (context.orders) {
    webhooks = new ShopifyOrderWebhooks({
      secret: webhookSecret,
      book: context.orders,
      rule,
      maxBodyBytes: config.WEBHOOK_MAX_BYTES,
    });
    webhooks.start();
    if (sandbox && context.selfUrl) {
      // As the app's subscriptions would: the sandbox delivers its order webhooks to this service.
      for (const topic of ORDER_TOPICS) {
        sandbox.subscribeWebhook(topic, `${context.selfUrl()}/webhooks/shopify`);
      }
    }
    if (!webhookSecret) {
      log.warning(
        "SHOPIFY_WEBHOOK_SECRET is not set: /webhooks/shopify refuses every delivery (401), so Shopify orders " +
          "arrive only through the catch-up poll; set it to the app's API secret key",
        { mark: "start" },
      );
    }
  }
  return {
    name: "shopify",
    adapter: channel,
    routes: webhooks ? [webhooks.route] : [],
    orders: context.orders ? shopifyOrderSource(client, rule) : undefined,
    stock: new ShopifyStock(
      client,
      channel.listings,
      locations,
      config.SHOPIFY_REASON,
      shopifyCatalog(client, locations),
    ),
    probe: {
      health: () => channel.health(),
      budget: () => ({ level: budget.level, max: budget.shape.max }),
    },
    sandbox,
    finish: async (deadline) => {
      // The sweep and the deliveries in flight end while the ledger is still open.
      await webhooks?.stop(deadline);
    },
    close: async () => {
      await sandbox?.close();
    },
  };
}

/** Shopify as the root plugs it in. */
export const shopify: ChannelPlugin<ShopifyPlug> = { name: "shopify", plug: plugShopify };
