/**
 * A DLQ replay re-opens a Shopify batch whose outcome is unknown under its
 * original idempotency key (issue #12, item 5). These are the ways that re-open
 * could still take a sale off twice, each driven step by step against the
 * Shopify sandbox configured as the real API and the POS's Redis stock.
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import {
  type ShopifyFaults,
  type ShopifySandbox,
  startShopifySandbox,
} from "../src/sandbox/shopify/sandbox.ts";
import { type Harness, harnessFor, header, integration, runResync, testConfig, waitFor } from "./helpers.ts";
import { catalogSale, Pos } from "./pos.ts";

const TOKEN = "reopen-admin-token-0123";
const catalog = defaultCatalog();
const TIENDA = catalog.stores[0].tienda_id;
const SKU = "REMERA-002";

interface World {
  h: Harness;
  shop: ShopifySandbox;
  pos: Pos;
  close(): Promise<void>;
}

async function startWorld(faults: Partial<ShopifyFaults>): Promise<World> {
  const shop = await startShopifySandbox({ catalog, faults: { seed: 3, ...faults } });
  const pos = await Pos.open(catalog);
  const config = testConfig({
    CHANNELS: "shopify",
    DISPATCH_ENABLED: "true",
    DISPATCH_MAX_ATTEMPTS: "2",
    DISPATCH_BACKOFF_BASE: "100ms",
    DISPATCH_BACKOFF_MAX: "300ms",
    ADMIN_TOKEN: TOKEN,
    SHOPIFY_URL: shop.url,
    SHOPIFY_TOKEN: shop.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id]))),
    POS_STOCK_KEY: pos.keyTemplate,
  });
  const service = startService(config);
  await service.started;
  const h = await harnessFor(service, config);
  // The SKU is resolved already, as on any shop that has sold it before.
  const item = shop.variants.find((v) => v.sku === SKU)!.inventoryItemId;
  await h
    .sql`insert into listing (channel, sku, external_id, variant_id) values ('shopify', ${SKU}, ${item}, 'v')`;
  return {
    h,
    shop,
    pos,
    async close() {
      await h.close();
      await shop.close();
      await pos.close();
    },
  };
}

function shopifyQty(w: World): number {
  return w.shop.availableFor(w.pos.product(SKU).producto_id, TIENDA)!;
}

async function changeOf(w: World, eventId: string) {
  const [row] = await w.h.sql<{ status: string; error_reason: string | null }[]>`
    select status, error_reason from stock_change where event_id = ${eventId}`;
  return row ? { status: row.status, error_reason: row.error_reason } : undefined;
}

/** A sale of one unit the POS made: its stock is reserved in Redis, then the event is published. */
async function sellOne(w: World, eventId: string) {
  await w.pos.set(TIENDA, SKU, (await w.pos.get(TIENDA, SKU)) - 1);
  const sale = catalogSale(catalog, TIENDA, [{ sku: SKU, qty: 1 }], eventId);
  await w.h.publish(sale, { messageId: eventId });
  return sale;
}

integration(
  "outcome_unknown then a resync: a later replay does not re-send the delta the resync already counted",
  async () => {
    // Every send is answered 5xx before Shopify applies anything: to the service, "maybe applied".
    const w = await startWorld({ errorRate: 1 });
    try {
      const before = shopifyQty(w);
      const sale = await sellOne(w, "reopen-after-resync");
      await waitFor(
        async () => (await changeOf(w, sale.event_id))?.error_reason === "outcome_unknown",
        "the sale's change outcome_unknown",
        20_000,
      );
      assert.equal(shopifyQty(w), before, "nothing was applied");
      // Shopify recovers; the operator follows the runbook: a write resync of the SKU.
      w.shop.setFaults({ errorRate: 0 });
      const job = await runResync(w.h, TOKEN, { skus: [SKU], channels: ["shopify"] });
      assert.equal(job.state, "done", JSON.stringify(job));
      assert.equal(shopifyQty(w), before - 1, "the resync wrote the POS value, which counts the sale");
      // Later the same day the DLQ copy is replayed too (a bulk replay of outcome_unknown).
      const [copy] = await waitFor(async () => {
        const m = await w.h.takeDeadLetters();
        return m.length ? m : undefined;
      }, "the DLQ copy");
      assert.equal(header(copy, "sync-reason"), "outcome_unknown");
      await w.h.publishToQueue(sale, { messageId: sale.event_id });
      await waitFor(async () => (await w.h.queueDepth()) === 0, "replay consumed");
      await new Promise((r) => setTimeout(r, 1_500)); // a re-opened batch would be re-sent by now
      assert.equal(shopifyQty(w), before - 1, "the sale is taken off once, not twice");
      assert.deepEqual(await changeOf(w, sale.event_id), {
        status: "failed",
        error_reason: "outcome_unknown",
      });
    } finally {
      await w.close();
    }
  },
);

integration(
  "a re-opened batch refused outright stays outcome_unknown: a second replay cannot re-apply it under a new key",
  async () => {
    // Shopify applies the adjustment, but every answer is lost: applied, and nobody heard.
    const w = await startWorld({ lostResponseRate: 1 });
    try {
      const before = shopifyQty(w);
      const sale = await sellOne(w, "reopen-refused");
      await waitFor(
        async () => (await changeOf(w, sale.event_id))?.error_reason === "outcome_unknown",
        "the sale's change outcome_unknown",
        20_000,
      );
      assert.equal(shopifyQty(w), before - 1, "applied once");
      await w.h.takeDeadLetters();
      // The shop is frozen when the operator replays: the re-sent key is refused with a 402.
      w.shop.setFaults({ lostResponseRate: 0, frozen: true });
      const refusedBefore = w.shop.stats().errorsInjected;
      await w.h.publishToQueue(sale, { messageId: sale.event_id });
      await waitFor(() => w.shop.stats().errorsInjected > refusedBefore, "the re-sent key refused (402)");
      await waitFor(async () => (await changeOf(w, sale.event_id))?.status === "failed", "refusal recorded");
      // A refusal of the re-send says nothing about the first, unanswered send.
      assert.deepEqual(await changeOf(w, sale.event_id), {
        status: "failed",
        error_reason: "outcome_unknown",
      });
      // Unfrozen, the operator replays again: at most the same key goes out, answered from its record.
      w.shop.setFaults({ frozen: false });
      await w.h.takeDeadLetters();
      await w.h.publishToQueue(sale, { messageId: sale.event_id });
      await waitFor(async () => (await w.h.queueDepth()) === 0, "second replay consumed");
      await waitFor(async () => (await changeOf(w, sale.event_id))?.status !== "sending", "settled");
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(shopifyQty(w), before - 1, "the sale is taken off once, not twice");
    } finally {
      await w.close();
    }
  },
);
