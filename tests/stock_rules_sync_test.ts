/**
 * Stock rules (STOCK_RULES) end to end: real RabbitMQ, Postgres and Redis, both marketplace sandboxes
 * configured as the real APIs, the POS's Redis stock keys as the source of truth. For each rule kind
 * (buffer, max, percent) on Shopify and MercadoLibre — mirror and delta mode — a live sale leaves the
 * listing at the rule's value of the POS stock, and a resync (dry run: the rule and the ruled target on
 * the line; write: the listing set to it) agrees with the live path.
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import type { DriftLine, ResyncHooks } from "../src/ops/resync.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { type ShopifySandbox, startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import {
  type Harness,
  harnessFor,
  integration,
  runResync,
  setShopifyAvailable,
  testConfig,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import { Pos } from "./pos.ts";

const TOKEN = "stock-rules-admin-token-01";
const catalog = defaultCatalog();
const STORES = catalog.stores.map((s) => s.tienda_id);
const MELI_STORE = STORES[0];

/** One SKU per rule kind, and one with no rule (the plain paths must not change). */
const BUFFER = "REMERA-002"; // buffer 5
const MAX = "BUZO-GRIS-L"; // max 10
const PERCENT = "JEAN-RECTO-42"; // percent 50
const PLAIN = "CAMISA-LINO-L";
const RULED = [BUFFER, MAX, PERCENT];

const SKU_RULES = {
  [BUFFER]: { buffer: 5 },
  [MAX]: { max: 10 },
  [PERCENT]: { percent: 50 },
};
const STOCK_RULES = {
  shopify: {
    skus: SKU_RULES,
    // Store + prefix beats prefix: the second store shows all of its REMERA-002 (no rule: deltas).
    stores: { [STORES[1]]: { skus: { [BUFFER]: { buffer: 0 } } } },
  },
  mercadolibre: { skus: SKU_RULES },
};

/** What a listing of `sku` should show for a POS quantity, written out per rule (not through the code under test). */
function expected(channel: "shopify" | "mercadolibre", sku: string, tiendaId: string, pos: number): number {
  if (sku === BUFFER && !(channel === "shopify" && tiendaId === STORES[1])) return Math.max(0, pos - 5);
  if (sku === MAX) return Math.min(Math.max(0, pos), 10);
  if (sku === PERCENT) return Math.max(0, Math.floor(pos / 2));
  return Math.max(0, pos);
}

const RULE_TEXT: Record<string, string> = { [BUFFER]: "buffer 5", [MAX]: "max 10", [PERCENT]: "percent 50" };

interface World {
  h: Harness;
  shop: ShopifySandbox;
  meli: MeliSandbox;
  pos: Pos;
  close(): Promise<void>;
}

async function startWorld(
  meliMode: "mirror" | "delta",
  extra: Record<string, string> = {},
  resyncHooks?: ResyncHooks,
): Promise<World> {
  const shop = await startShopifySandbox({ catalog });
  const meli = await startMeliSandbox({ catalog, tiendaId: MELI_STORE, ratePerSecond: 200 });
  const pos = await Pos.open(catalog);
  const schema = uniqueName("msync_sr");
  const config = testConfig({
    LEDGER_SCHEMA: schema,
    POS_STOCK_QUERY: `select stock_actual from ${schema}.producto where tienda_id = $1 and sku = $3 limit 1`,
    POS_PRODUCT_QUERY: `select id from ${schema}.producto where tienda_id = $1 and sku = $2 limit 1`,
    POS_CATALOG_QUERY: `select tienda_id, sku, id from ${schema}.producto where tienda_id = any($1)`,
    CHANNELS: "shopify,mercadolibre",
    DISPATCH_ENABLED: "true",
    DISPATCH_POLL_INTERVAL: "50ms",
    DISPATCH_BACKOFF_BASE: "50ms",
    DISPATCH_BACKOFF_MAX: "500ms",
    ADMIN_TOKEN: TOKEN,
    SHOPIFY_URL: shop.url,
    SHOPIFY_TOKEN: shop.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id]))),
    MELI_URL: meli.url,
    MELI_TOKEN: meli.staticToken,
    MELI_MODE: meliMode,
    MELI_TIENDA_ID: MELI_STORE,
    MELI_RATE_PER_SEC: "200",
    POS_STOCK_KEY: pos.keyTemplate,
    STOCK_RULES: JSON.stringify(STOCK_RULES),
    ...extra,
  });
  const service = startService(config, { resyncHooks });
  await service.started;
  const h = await harnessFor(service, config);
  await h.sql.unsafe(
    `create table ${schema}.producto (id text, sku text, tienda_id text, stock_actual integer)`,
  );
  for (const p of catalog.products) {
    for (const store of STORES) {
      await h.sql`insert into producto values (${p.producto_id}, ${p.sku}, ${store}, ${p.stock[store] ?? 0})`;
    }
  }
  return {
    h,
    shop,
    meli,
    pos,
    async close() {
      await h.close();
      await shop.close();
      await meli.close();
      await pos.close();
    },
  };
}

const shopifyQty = (w: World, sku: string, tiendaId: string) =>
  w.shop.availableFor(w.pos.product(sku).producto_id, tiendaId)!;
const meliQty = (w: World, sku: string) => w.meli.quantityOf(w.pos.product(sku).producto_id)!;

/** Sets a Shopify quantity behind the service's back (drift), through the sandbox's own API. */
async function shopifySet(w: World, sku: string, tiendaId: string, quantity: number): Promise<void> {
  const item = w.shop.variants.find((v) => v.sku === sku)!.inventoryItemId;
  await setShopifyAvailable(w.shop, { item, location: w.shop.locationIdOf(tiendaId)! }, quantity);
}

async function settled(h: Harness, total: number): Promise<void> {
  await waitFor(
    async () => {
      const [row] = await h.sql<{ n: number }[]>`
        select count(*)::int as n from stock_change where status in ('applied', 'failed')
           and event_id not like 'resync:%'`;
      return row.n === total;
    },
    `${total} changes settled`,
    30_000,
  );
  const failed = await h
    .sql`select channel, sku, error_reason, error from stock_change where status = 'failed'`;
  assert.deepEqual([...failed], [], "no change failed");
}

/** Every line of a job's report for one channel, by "sku store". */
function linesOf(job: { report: DriftLine[] }, channel: string): Map<string, DriftLine> {
  return new Map(job.report.filter((l) => l.channel === channel).map((l) => [`${l.sku} ${l.tienda_id}`, l]));
}

/** Live sales and resync, with the rules, in one MercadoLibre mode. */
async function liveAndResync(meliMode: "mirror" | "delta"): Promise<void> {
  const w = await startWorld(meliMode);
  try {
    const skus = [...RULED, PLAIN];
    const shopBefore = new Map(
      skus.flatMap((sku) => STORES.slice(0, 2).map((t) => [`${sku} ${t}`, shopifyQty(w, sku, t)])),
    );
    const meliPlainBefore = meliQty(w, PLAIN);
    // Two rounds of sales at the MeLi store and at a second store, every SKU.
    for (let round = 0; round < 2; round++) {
      for (const store of STORES.slice(0, 2)) {
        await w.pos.sell(w.h, store, skus.map((sku) => ({ sku, qty: sku === BUFFER ? 2 : 1 })));
      }
    }
    // Each sale: one change per channel and SKU (MeLi only at its store).
    await settled(w.h, 2 * (2 * skus.length) + 2 * skus.length);

    for (const sku of skus) {
      for (const store of STORES.slice(0, 2)) {
        const pos = await w.pos.get(store, sku);
        const want = sku === PLAIN || (sku === BUFFER && store === STORES[1])
          // Unruled listings keep the delta path: what Shopify had, minus the sales.
          ? shopBefore.get(`${sku} ${store}`)! - (sku === BUFFER ? 4 : 2)
          : expected("shopify", sku, store, pos);
        assert.equal(shopifyQty(w, sku, store), want, `Shopify ${sku} at ${store} (POS ${pos})`);
      }
      const pos = await w.pos.get(MELI_STORE, sku);
      const want = sku === PLAIN && meliMode === "delta"
        ? meliPlainBefore - 2
        : expected("mercadolibre", sku, MELI_STORE, pos);
      assert.equal(meliQty(w, sku), want, `MeLi (${meliMode}) ${sku} (POS ${pos})`);
    }
    // Each rule kind changed what the listing shows (so these checks can fail).
    for (const sku of RULED) {
      assert.notEqual(meliQty(w, sku), await w.pos.get(MELI_STORE, sku), `${sku}'s rule shows on MeLi`);
      assert.notEqual(
        shopifyQty(w, sku, MELI_STORE),
        await w.pos.get(MELI_STORE, sku),
        `${sku}'s rule on Shopify`,
      );
    }

    // Resync agrees with the live path: nothing to set where the sales were. A listing no sale has
    // touched since the rule was configured still shows the POS value: the resync sets it.
    const calm = await runResync(w.h, TOKEN, { skus, dry_run: true });
    assert.equal(calm.state, "done");
    const sold = (l: DriftLine) => STORES.slice(0, 2).includes(l.tienda_id);
    assert.deepEqual(
      calm.report.filter((l: DriftLine) => sold(l) && l.difference !== 0).map((l: DriftLine) =>
        `${l.channel} ${l.sku} ${l.tienda_id}`
      ),
      [],
      "no drift right after the live sales",
    );
    assert.ok(
      calm.report.some((l: DriftLine) => !sold(l) && l.difference !== 0 && l.rule),
      "listings not sold since the rule was configured wait for a resync",
    );
    await runResync(w.h, TOKEN, { skus }); // every listing under its rule from here on

    // Drift from every side: Shopify and MeLi edited by hand, the POS moved without a sale.
    await shopifySet(w, BUFFER, MELI_STORE, 50);
    w.meli.setQuantity(w.pos.product(MAX).producto_id, 3);
    await w.pos.set(MELI_STORE, PERCENT, 31); // the marketplaces should show 15
    const dry = await runResync(w.h, TOKEN, { skus, dry_run: true });
    const shop = linesOf(dry, "shopify");
    const meli = linesOf(dry, "mercadolibre");
    for (const sku of RULED) {
      const line = shop.get(`${sku} ${MELI_STORE}`)!;
      assert.equal(line.rule, RULE_TEXT[sku], `the dry run names ${sku}'s rule`);
      assert.equal(line.target, expected("shopify", sku, MELI_STORE, line.source_qty));
      assert.equal(line.in_flight, 0);
      assert.equal(meli.get(`${sku} ${MELI_STORE}`)!.rule, RULE_TEXT[sku]);
    }
    assert.equal(shop.get(`${PLAIN} ${MELI_STORE}`)!.rule, null, "an unruled line has no rule");
    assert.equal(shop.get(`${BUFFER} ${STORES[1]}`)!.rule, null, "the store's override lifts the rule");
    const drifted = dry.report.filter((l: DriftLine) => l.difference !== 0)
      .map((l: DriftLine) => `${l.channel} ${l.sku} ${l.target} ${l.action}`).sort();
    assert.deepEqual(
      drifted,
      [
        `mercadolibre ${MAX} 10 would_set`,
        `mercadolibre ${PERCENT} 15 would_set`,
        `shopify ${PERCENT} 15 would_set`,
        `shopify ${BUFFER} ${
          expected("shopify", BUFFER, MELI_STORE, await w.pos.get(MELI_STORE, BUFFER))
        } would_set`,
      ].sort(),
    );
    assert.equal(shopifyQty(w, BUFFER, MELI_STORE), 50, "a dry run writes nothing");

    // The CSV report carries the rule in its last column.
    const csv = await (await fetch(`${w.h.service.url}/resync/${dry.id}/report?format=csv`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    })).text();
    const [header, ...rows] = csv.trim().split("\r\n");
    assert.ok(header.endsWith(",error,rule"), header);
    assert.ok(
      rows.some((r) => r.startsWith(`drift,mercadolibre,${MELI_STORE},${MAX},`) && r.endsWith(",max 10")),
    );

    const written = await runResync(w.h, TOKEN, { skus });
    assert.equal(written.state, "done");
    assert.equal(
      written.errors,
      0,
      JSON.stringify(written.report.filter((l: DriftLine) => l.outcome === "error")),
    );
    assert.equal(written.written, 4);
    assert.equal(
      shopifyQty(w, BUFFER, MELI_STORE),
      expected("shopify", BUFFER, MELI_STORE, await w.pos.get(MELI_STORE, BUFFER)),
    );
    assert.equal(shopifyQty(w, PERCENT, MELI_STORE), 15);
    assert.equal(meliQty(w, MAX), 10);
    assert.equal(meliQty(w, PERCENT), 15);

    // And a sale after the resync lands on the ruled value again.
    await w.pos.sell(w.h, MELI_STORE, [{ sku: PERCENT, qty: 3 }]); // POS 28 → 14
    await waitFor(
      () => meliQty(w, PERCENT) === 14 && shopifyQty(w, PERCENT, MELI_STORE) === 14,
      "ruled sale after resync",
    );

    // The whole catalog, compared from snapshots, applies the same rules.
    const all = await runResync(w.h, TOKEN, { all: true, dry_run: true });
    assert.equal(all.state, "done", JSON.stringify(all.error));
    for (const channel of ["shopify", "mercadolibre"] as const) {
      const lines = linesOf(all, channel);
      for (const sku of RULED) {
        const line = lines.get(`${sku} ${MELI_STORE}`)!;
        assert.equal(line.rule, RULE_TEXT[sku], `${channel} ${sku}`);
        assert.equal(line.target, expected(channel, sku, MELI_STORE, await w.pos.get(MELI_STORE, sku)));
        assert.equal(line.difference, 0, `${channel} ${sku} shows its rule's value`);
      }
    }
  } finally {
    await w.close();
  }
}

integration(
  "stock rules, MeLi mirror mode: live sales and resync show each rule's value on both channels",
  () => liveAndResync("mirror"),
);

integration(
  "stock rules, MeLi delta mode: ruled listings are written absolutely; the rest stays delta",
  () => liveAndResync("delta"),
);

integration(
  "stock rules, two stores on one Shopify location: each store's rule on its own stock, summed, live and whole-catalog resync",
  async () => {
    const shared = await startShopifySandbox({ catalog });
    const location = shared.locationIdOf(STORES[0])!;
    await shared.close();
    const w = await startWorld("mirror", {
      // Both stores' stock is kept at the first store's location.
      SHOPIFY_LOCATIONS: JSON.stringify({ [STORES[0]]: location, [STORES[1]]: location }),
      STOCK_RULES: JSON.stringify({
        shopify: { stores: { [STORES[0]]: { buffer: 5 }, [STORES[1]]: { skus: { [MAX]: { max: 10 } } } } },
      }),
    });
    try {
      await w.pos.sell(w.h, STORES[1], [{ sku: MAX, qty: 1 }, { sku: PLAIN, qty: 1 }]);
      await settled(w.h, 2 + 0); // MeLi shows only STORES[0]: no MeLi change for STORES[1]'s sale
      const [pos0, pos1] = [await w.pos.get(STORES[0], MAX), await w.pos.get(STORES[1], MAX)];
      assert.equal(
        shopifyQty(w, MAX, STORES[0]),
        Math.max(0, pos0 - 5) + Math.min(pos1, 10),
        "buffer 5 + max 10",
      );
      const [plain0, plain1] = [await w.pos.get(STORES[0], PLAIN), await w.pos.get(STORES[1], PLAIN)];
      assert.equal(shopifyQty(w, PLAIN, STORES[0]), Math.max(0, plain0 - 5) + plain1, "buffer 5 + no rule");

      // The whole catalog, from snapshots: the shared location's ruled lines are checked store by store.
      const dry = await runResync(w.h, TOKEN, { all: true, channels: ["shopify"], dry_run: true });
      assert.equal(dry.state, "done", JSON.stringify(dry.error));
      const lines = linesOf(dry, "shopify");
      const both = `${STORES[0]},${STORES[1]}`;
      assert.equal(lines.get(`${MAX} ${both}`)?.difference, 0, JSON.stringify(lines.get(`${MAX} ${both}`)));
      assert.equal(lines.get(`${MAX} ${both}`)?.rule, `${STORES[0]}: buffer 5; ${STORES[1]}: max 10`);
      const gorro = lines.get(`GORRO-LANA ${both}`)!;
      const g = [await w.pos.get(STORES[0], "GORRO-LANA"), await w.pos.get(STORES[1], "GORRO-LANA")];
      assert.equal(gorro.target, Math.max(0, g[0] - 5) + g[1]);
      assert.equal(gorro.action, "would_set", "a listing no sale touched since the rule waits for a resync");
    } finally {
      await w.close();
    }
  },
);

for (const scope of [{ skus: [MAX] }, { all: true }]) {
  integration(
    `a ruled resync write whose POS reading a sale made stale before it landed is set again (${
      "all" in scope ? "whole catalog" : "per SKU"
    })`,
    async () => {
      const pos: { of?: World["pos"] } = {};
      let armed = true;
      const store = STORES[0];
      const w = await startWorld("mirror", {}, {
        async beforeWrite(line) {
          if (!armed || line.channel !== "shopify" || line.sku !== MAX || line.tienda_id !== store) return;
          armed = false;
          // After the resync's last POS read, before its write: a sale reserved at the POS, whose own
          // batch will find Shopify already at its new target and send nothing.
          await pos.of!.set(store, MAX, 5);
        },
      });
      pos.of = w.pos;
      try {
        await w.pos.set(store, MAX, 8); // the rule (max 10) shows 8
        await shopifySet(w, MAX, store, 3);
        const job = await runResync(w.h, TOKEN, { ...scope, channels: ["shopify"] });
        assert.equal(job.state, "done", JSON.stringify(job));
        assert.equal(armed, false, "the sale landed between the resync's reads and its write");
        assert.equal(shopifyQty(w, MAX, store), 5, "Shopify shows the rule's value of the POS now");
      } finally {
        await w.close();
      }
    },
  );
}
