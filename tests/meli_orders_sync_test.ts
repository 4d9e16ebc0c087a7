/**
 * MercadoLibre orders end to end: the whole service (real RabbitMQ, Postgres, Redis, its
 * dispatchers), the Shopify sandbox and the MeLi sandbox configured as the real APIs, MeLi
 * notifying the service's `/webhooks/mercadolibre` as it notifies an app's callback URL. A MeLi
 * sale lowers Shopify and never MeLi again; its cancellation puts the units back once; an order
 * sold while the service was down is found by the catch-up; the POS is told once per order.
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { type ShopifySandbox, startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { type Harness, harnessFor, integration, testConfig, waitFor } from "./helpers.ts";

const catalog = defaultCatalog();
const STORE = catalog.stores[0].tienda_id;

interface Rig {
  h: Harness;
  shopify: ShopifySandbox;
  meli: MeliSandbox;
  env: Record<string, string>;
}

function envFor(shopify: ShopifySandbox, meli: MeliSandbox): Record<string, string> {
  return {
    CHANNELS: "shopify,mercadolibre",
    DISPATCH_ENABLED: "true",
    DISPATCH_POLL_INTERVAL: "50ms",
    SHOPIFY_URL: shopify.url,
    SHOPIFY_TOKEN: shopify.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shopify.locations.map((l) => [l.tiendaId, l.id]))),
    MELI_URL: meli.url,
    MELI_TOKEN: meli.staticToken,
    MELI_MODE: "delta",
    MELI_TIENDA_ID: STORE,
  };
}

async function start(env: Record<string, string>, meli: MeliSandbox): Promise<Harness> {
  const config = testConfig(env);
  const service = startService(config);
  await service.started;
  // The app's callback URL, as the seller's app is configured on MeLi.
  meli.setNotificationUrl(`${service.url}/webhooks/mercadolibre`);
  return await harnessFor(service, config);
}

async function withRig(fn: (rig: Rig) => Promise<void>): Promise<void> {
  const shopify = await startShopifySandbox({ catalog });
  const meli = await startMeliSandbox({ catalog, tiendaId: STORE, notificationRetryDelaysMs: [100, 300] });
  const base = envFor(shopify, meli);
  const config = testConfig(base);
  const env = {
    ...base,
    EXCHANGE: config.EXCHANGE,
    QUEUE: config.QUEUE,
    LEDGER_SCHEMA: config.LEDGER_SCHEMA,
  };
  const h = await start(env, meli);
  const rig = { h, shopify, meli, env };
  try {
    await fn(rig);
  } finally {
    await rig.h.close();
    await meli.close();
    await shopify.close();
  }
}

function plainListing(meli: MeliSandbox) {
  return meli.listings.find((l) => l.variationId === null && (meli.quantityOf(l.productoId) ?? 0) >= 5)!;
}

async function changes(h: Harness): Promise<string[]> {
  const rows = await h.sql<{ channel: string; delta: number; status: string }[]>`
    select channel, delta, status from stock_change where delta <> 0 order by id`;
  return rows.map((r) => `${r.channel} ${r.delta} ${r.status}`);
}

async function outbox(h: Harness): Promise<string[]> {
  const rows = await h.sql<{ message_id: string; routing_key: string }[]>`
    select message_id, routing_key from pos_outbox`;
  return rows.map((r) => `${r.routing_key} ${r.message_id}`).sort();
}

integration(
  "a MeLi sale lowers Shopify, never MeLi again; its cancellation restocks Shopify once; the POS is told once each",
  async () => {
    await withRig(async ({ h, shopify, meli }) => {
      const l = plainListing(meli);
      const shopifyBefore = shopify.availableFor(l.productoId, STORE)!;
      const meliBefore = meli.quantityOf(l.productoId)!;
      const order = meli.sell({ items: [{ item_id: l.itemId, quantity: 2 }] });
      await waitFor(
        () => shopify.availableFor(l.productoId, STORE) === shopifyBefore - 2,
        "Shopify lowered by 2",
      );
      assert.equal(meli.quantityOf(l.productoId), meliBefore - 2, "MeLi lowered itself, once");
      await waitFor(
        async () => (await h.sql`select 1 from stock_change where status <> 'applied'`).length === 0,
        "every change applied (MeLi's own: a re-mirror of available stock, delta 0)",
      );
      assert.equal(meli.quantityOf(l.productoId), meliBefore - 2, "the service never lowered MeLi again");
      assert.deepEqual(await changes(h), ["shopify -2 applied"]);

      // MeLi re-sends the same notification, and a new one of the same order comes: no second effect.
      const [first] = meli.notifications();
      await fetch(`${h.service.url}/webhooks/mercadolibre`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...first.notification, attempts: 2 }),
      }).then((r) => r.body?.cancel());

      meli.cancelOrder(order.id);
      await waitFor(() => shopify.availableFor(l.productoId, STORE) === shopifyBefore, "Shopify restocked");
      assert.equal(meli.quantityOf(l.productoId), meliBefore);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(shopify.availableFor(l.productoId, STORE), shopifyBefore, "restocked once");
      assert.deepEqual(await changes(h), ["shopify -2 applied", "shopify 2 applied"]);
      await waitFor(
        async () => (await h.sql`select 1 from stock_change where status <> 'applied'`).length === 0,
        "every change applied (MeLi's own: a re-mirror of available stock, delta 0)",
      );
      assert.equal(meli.quantityOf(l.productoId), meliBefore, "nor raised it twice");
      assert.deepEqual(await outbox(h), [
        `marketplace.sales.cancelled order:mercadolibre:${order.id}:restock:cancel`,
        `marketplace.sales.created order:mercadolibre:${order.id}`,
      ]);
      const deliveries = await h.sql<{ n: number }[]>`
      select count(*)::int as n from order_delivery where settled_at is null`;
      assert.equal(deliveries[0].n, 0, "every notification settled");
      assert.deepEqual(meli.invalidRequests(), []);
    });
  },
);

integration("a MeLi order sold while the service is down is found by the catch-up on start", async () => {
  await withRig(async (rig) => {
    const { shopify, meli } = rig;
    const l = plainListing(meli);
    const shopifyBefore = shopify.availableFor(l.productoId, STORE)!;
    const meliBefore = meli.quantityOf(l.productoId)!;
    // The first start set the catch-up's watermark; the service stops; MeLi's notification never comes.
    await waitFor(
      async () =>
        (await rig.h.sql`select 1 from order_watermark where channel = 'mercadolibre'`).length === 1,
      "the first watermark",
    );
    await rig.h.service.close();
    meli.pauseNotifications(true);
    const order = meli.sell({ items: [{ item_id: l.itemId, quantity: 3 }] });
    const config = testConfig(rig.env);
    const service = startService(config);
    await service.started;
    rig.h = await harnessFor(service, config);
    await waitFor(
      () => shopify.availableFor(l.productoId, STORE) === shopifyBefore - 3,
      "Shopify lowered by 3",
    );
    const [row] = await rig.h.sql<{ via: string }[]>`
      select via from marketplace_order where origin = 'mercadolibre' and order_id = ${String(order.id)}`;
    assert.equal(row.via, "catch_up");
    await waitFor(
      async () => (await rig.h.sql`select 1 from stock_change where status <> 'applied'`).length === 0,
      "every change applied",
    );
    assert.equal(meli.quantityOf(l.productoId), meliBefore - 3, "MeLi lowered by its own order only");
  });
});

integration(
  "sandbox mode: the built-in MeLi sandbox notifies the service's own /webhooks/mercadolibre",
  async () => {
    const config = testConfig({
      CHANNELS: "shopify,mercadolibre",
      DISPATCH_ENABLED: "true",
      DISPATCH_POLL_INTERVAL: "50ms",
    });
    const service = startService(config);
    await service.started;
    const h = await harnessFor(service, config);
    try {
      const meli = service.meliSandbox()!;
      const shopify = service.shopifySandbox()!;
      const store = meli.tiendaId;
      const l = plainListing(meli);
      const before = shopify.availableFor(l.productoId, store)!;
      meli.sell({ items: [{ item_id: l.itemId, quantity: 1 }] });
      await waitFor(() => shopify.availableFor(l.productoId, store) === before - 1, "Shopify lowered by 1");
      assert.equal(meli.notifications()[0].notification.resource.startsWith("/orders/"), true);
      assert.equal(meli.notifications()[0].status, 200);
    } finally {
      await h.close();
    }
  },
);
