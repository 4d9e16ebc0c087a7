/**
 * Resync against both marketplace sandboxes configured as the real APIs, with
 * the POS's Redis stock keys as the source of truth: the dry-run drift report,
 * writes (Shopify compare-and-set, MercadoLibre absolute), one job per scope,
 * the scheduled reconcile on one replica at a time, and the operator CLI (scripts/resync.ts)
 * against the running service.
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import { ReconcileScheduler } from "../src/ops/reconcile.ts";
import type { DriftLine, ResyncHooks } from "../src/ops/resync.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { type ShopifySandbox, startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { OpsClient } from "../scripts/ops_client.ts";
import { main as resyncCli } from "../scripts/resync.ts";
import {
  adminApi,
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

const TOKEN = "resync-admin-token-0123";
const catalog = defaultCatalog();
const STORES = catalog.stores.map((s) => s.tienda_id);
const MELI_STORE = STORES[0];

interface World {
  h: Harness;
  shop: ShopifySandbox;
  meli: MeliSandbox;
  pos: Pos;
  env: Record<string, string>;
  close(): Promise<void>;
}

async function startWorld(hooks?: ResyncHooks, extra: Record<string, string> = {}): Promise<World> {
  const shop = await startShopifySandbox({ catalog });
  const meli = await startMeliSandbox({ catalog, tiendaId: MELI_STORE, ratePerSecond: 200 });
  const pos = await Pos.open(catalog);
  const schema = uniqueName("msync_rs");
  const env = {
    LEDGER_SCHEMA: schema,
    // The POS catalog lives next to the ledger here (dropped with it); in production it is the POS's table.
    POS_STOCK_QUERY: `select stock_actual from ${schema}.producto where tienda_id = $1 and sku = $3 limit 1`,
    POS_PRODUCT_QUERY: `select id from ${schema}.producto where tienda_id = $1 and sku = $2 limit 1`,
    CHANNELS: "shopify,mercadolibre",
    DISPATCH_ENABLED: "true",
    ADMIN_TOKEN: TOKEN,
    SHOPIFY_URL: shop.url,
    SHOPIFY_TOKEN: shop.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id]))),
    MELI_URL: meli.url,
    MELI_TOKEN: meli.staticToken,
    MELI_TIENDA_ID: MELI_STORE,
    MELI_RATE_PER_SEC: "200",
    POS_STOCK_KEY: pos.keyTemplate,
    // The POS catalog: every product at every store (the table is filled below).
    POS_CATALOG_QUERY: `select tienda_id, sku, id from ${schema}.producto where tienda_id = any($1)`,
    ...extra,
  };
  const config = testConfig(env);
  const service = startService(config, { resyncHooks: hooks });
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
    env: { ...env, EXCHANGE: config.EXCHANGE, QUEUE: config.QUEUE, LEDGER_SCHEMA: config.LEDGER_SCHEMA },
    async close() {
      await h.close();
      await shop.close();
      await meli.close();
      await pos.close();
    },
  };
}

/** Sets a Shopify quantity behind the service's back (drift), through the sandbox's own API. */
async function shopifySet(w: World, sku: string, tiendaId: string, quantity: number): Promise<void> {
  const item = w.shop.variants.find((v) => v.sku === sku)!.inventoryItemId;
  await setShopifyAvailable(w.shop, { item, location: w.shop.locationIdOf(tiendaId)! }, quantity);
}

/** Sells one `sku` at the MeLi store and waits until the live channel mirrored the sale to MeLi. */
async function meliSaleMirrored(w: World, sku: string): Promise<void> {
  const pos = await w.pos.get(MELI_STORE, sku);
  await w.pos.sell(w.h, MELI_STORE, [{ sku, qty: 1 }]);
  await waitFor(
    () => w.meli.quantityOf(w.pos.product(sku).producto_id) === pos - 1,
    "MeLi shows the sale",
  );
}

/** The Shopify location id a sandbox of this catalog gives `tiendaId` (every such sandbox agrees). */
async function sandboxLocationOf(tiendaId: string): Promise<string> {
  const probe = await startShopifySandbox({ catalog });
  const id = probe.locationIdOf(tiendaId)!;
  await probe.close();
  return id;
}

function shopifyQty(w: World, sku: string, tiendaId: string): number {
  return w.shop.availableFor(w.pos.product(sku).producto_id, tiendaId)!;
}

function api(w: World, method: string, path: string, body?: unknown) {
  return adminApi(w.h, TOKEN, method, path, body);
}

function resync(w: World, request: unknown) {
  return runResync(w.h, TOKEN, request);
}

/** The POS sells one `sku` at each of the first three stores; waits until Shopify applied all three. */
async function sellOneAtThreeStores(w: World, sku: string): Promise<number> {
  for (const store of STORES.slice(0, 3)) await w.pos.sell(w.h, store, [{ sku, qty: 1 }]);
  await waitFor(
    async () =>
      (await w.h.sql`select 1 from stock_change where channel = 'shopify' and status = 'applied'`)
        .length === 3,
    "sales applied",
  );
  let sum = 0;
  for (const store of STORES.slice(0, 3)) sum += await w.pos.get(store, sku);
  return sum; // the three stores' POS stock now
}

const SKUS = ["REMERA-002", "JEAN-RECTO-40", "GORRO-LANA"];

/** Drift in all three places it can come from. */
async function injectDrift(w: World): Promise<void> {
  const remera = w.pos.product("REMERA-002").stock[MELI_STORE];
  await w.pos.set(MELI_STORE, "REMERA-002", remera - 3); // POS sold 3 the marketplaces never heard of
  await shopifySet(w, "GORRO-LANA", STORES[2], 77); // someone edited Shopify by hand
  w.meli.setQuantity(w.pos.product("JEAN-RECTO-40").producto_id, 99); // and MercadoLibre
}

function driftOnly(report: DriftLine[]) {
  return report.filter((l) => l.difference !== 0).map((l) => ({
    sku: l.sku,
    tienda_id: l.tienda_id,
    channel: l.channel,
    source_qty: l.source_qty,
    marketplace_qty: l.marketplace_qty,
    difference: l.difference,
    action: l.action,
  })).sort((a, b) =>
    `${a.channel}${a.sku}${a.tienda_id}`.localeCompare(`${b.channel}${b.sku}${b.tienda_id}`)
  );
}

integration("dry run: the exact drift report, unresolved SKUs named, and nothing written", async () => {
  const w = await startWorld();
  try {
    await injectDrift(w);
    // No Redis key for this one: the POS's Postgres catalog is read instead.
    await w.pos.delete(STORES[4], "GORRO-LANA");
    await w.h.sql`update producto set stock_actual = 4 where sku = 'GORRO-LANA' and tienda_id = ${STORES[4]}`;
    const shopWrites = w.shop.stats().mutationsApplied;
    const meliPuts = w.meli.stats().puts;
    const job = await resync(w, { skus: [...SKUS, "NO-SUCH-SKU"], dry_run: true });
    assert.equal(job.state, "done");
    const remera = w.pos.product("REMERA-002").stock[MELI_STORE];
    const gorro = w.pos.product("GORRO-LANA").stock[STORES[2]];
    const jean = w.pos.product("JEAN-RECTO-40").stock[MELI_STORE];
    assert.deepEqual(driftOnly(job.report), [
      {
        sku: "JEAN-RECTO-40",
        tienda_id: MELI_STORE,
        channel: "mercadolibre",
        source_qty: jean,
        marketplace_qty: 99,
        difference: jean - 99,
        action: "would_set",
      },
      {
        sku: "REMERA-002",
        tienda_id: MELI_STORE,
        channel: "mercadolibre",
        source_qty: remera - 3,
        marketplace_qty: remera,
        difference: -3,
        action: "would_set",
      },
      {
        sku: "GORRO-LANA",
        tienda_id: STORES[4],
        channel: "shopify",
        source_qty: 4,
        marketplace_qty: w.pos.product("GORRO-LANA").stock[STORES[4]],
        difference: 4 - w.pos.product("GORRO-LANA").stock[STORES[4]],
        action: "would_set",
      },
      {
        sku: "GORRO-LANA",
        tienda_id: STORES[2],
        channel: "shopify",
        source_qty: gorro,
        marketplace_qty: 77,
        difference: gorro - 77,
        action: "would_set",
      },
      {
        sku: "REMERA-002",
        tienda_id: MELI_STORE,
        channel: "shopify",
        source_qty: remera - 3,
        marketplace_qty: remera,
        difference: -3,
        action: "would_set",
      },
    ]);
    // 3 SKUs × (5 Shopify stores + 1 MeLi store) compared; NO-SUCH-SKU has no POS stock anywhere.
    assert.equal(job.report.length, 18);
    assert.equal(job.total, 24);
    assert.equal(job.done, 24);
    assert.equal(job.drift_found, 5);
    assert.equal(job.written, 0);
    assert.deepEqual(
      [...new Set(job.unresolved.map((u: { sku: string; reason: string }) => `${u.sku} ${u.reason}`))],
      ["NO-SUCH-SKU stock_unknown"],
    );
    assert.equal(w.shop.stats().mutationsApplied, shopWrites, "a dry run writes nothing to Shopify");
    assert.equal(w.meli.stats().puts, meliPuts, "nor to MercadoLibre");
    const metrics = await (await fetch(`${w.h.service.url}/metrics`)).text();
    assert.match(metrics, /marketplace_sync_resync_drift_total\{channel="shopify"\} 3/);
  } finally {
    await w.close();
  }
});

integration(
  "write resync: both marketplaces end at the POS value, each write is in the audit trail",
  async () => {
    const w = await startWorld();
    try {
      await injectDrift(w);
      const job = await resync(w, { skus: SKUS });
      assert.equal(job.state, "done");
      assert.equal(job.drift_found, 4);
      assert.equal(job.written, 4);
      assert.equal(job.errors, 0);
      for (const sku of SKUS) {
        for (const store of STORES) {
          assert.equal(
            shopifyQty(w, sku, store),
            Math.max(0, await w.pos.get(store, sku)),
          );
        }
        assert.equal(
          w.meli.quantityOf(w.pos.product(sku).producto_id),
          Math.max(0, await w.pos.get(MELI_STORE, sku)),
        );
      }
      const audit = await api(w, "GET", `/changes?status=applied&sku=REMERA-002`);
      const written = audit.body.changes.filter((c: { event_id: string }) =>
        c.event_id.startsWith("resync:")
      );
      assert.equal(written.length, 2, "one applied change per channel for REMERA-002");
      for (const c of written) {
        assert.equal(c.delta, -3);
        assert.equal(c.quantity_after, await w.pos.get(MELI_STORE, "REMERA-002"));
      }
      const again = await resync(w, { skus: SKUS, dry_run: true });
      assert.equal(again.drift_found, 0, "a second look finds nothing");
      assert.deepEqual(w.meli.invalidRequests(), []);
    } finally {
      await w.close();
    }
  },
);

integration(
  "a Shopify change between read and write: compare-and-set misses, re-reads, ends right",
  async () => {
    let interfered = 0;
    let world: World | undefined;
    const w = world = await startWorld({
      async beforeWrite(line) {
        if (line.channel === "shopify" && interfered === 0) {
          interfered++;
          // Someone sells online (or edits Shopify) right after our read.
          await shopifySet(world!, line.sku, line.tienda_id, line.marketplace_qty - 1);
        }
      },
    });
    try {
      await shopifySet(w, "GORRO-LANA", STORES[2], 77);
      const job = await resync(w, { skus: ["GORRO-LANA"], tienda_id: undefined, channels: ["shopify"] });
      assert.equal(interfered, 1);
      assert.equal(job.state, "done");
      const line = job.report.find((l: DriftLine) => l.tienda_id === STORES[2]);
      // The line is recomputed after the miss: it reports the value the write replaced.
      assert.equal(line.marketplace_qty, 76);
      assert.equal(line.outcome, "written");
      assert.equal(shopifyQty(w, "GORRO-LANA", STORES[2]), await w.pos.get(STORES[2], "GORRO-LANA"));
    } finally {
      await w.close();
    }
  },
);

integration("one resync per scope at a time (409 naming the running one); bad bodies are 400", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const w = await startWorld({ beforeWrite: () => gate }, {});
  try {
    await shopifySet(w, "GORRO-LANA", STORES[1], 50);
    const first = await api(w, "POST", "/resync", { skus: ["GORRO-LANA"], channels: ["shopify"] });
    assert.equal(first.status, 202);
    await waitFor(
      async () => (await api(w, "GET", `/resync/${first.body.id}`)).body.done >= 1,
      "job started",
    );
    const same = await api(w, "POST", "/resync", {
      skus: ["GORRO-LANA"],
      channels: ["shopify"],
      dry_run: true,
    });
    assert.equal(same.status, 409);
    assert.equal(same.body.id, first.body.id);
    assert.match(same.body.message, new RegExp(first.body.id));
    const other = await api(w, "POST", "/resync", {
      skus: ["REMERA-002"],
      channels: ["shopify"],
      dry_run: true,
    });
    assert.equal(other.status, 202);
    release();
    await waitFor(
      async () => (await api(w, "GET", `/resync/${first.body.id}`)).body.state === "done",
      "done",
    );
    for (
      const [body, pattern] of [
        [{}, /exactly one scope/],
        [{ skus: ["A"], all: true }, /exactly one scope/],
        [{ all: true, channels: ["amazon"] }, /channels/],
        [{ all: true, dryrun: true }, /dryrun/],
      ] as const
    ) {
      const bad = await api(w, "POST", "/resync", body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.match(bad.body.message, pattern);
    }
    assert.equal((await api(w, "GET", "/resync/00000000-0000-4000-8000-000000000000")).status, 404);
  } finally {
    release();
    await w.close();
  }
});

integration("scheduled reconcile: two replicas, one round runs on exactly one of them", async () => {
  const w = await startWorld();
  const second = startService(testConfig(w.env));
  try {
    await second.started;
    await shopifySet(w, "GORRO-LANA", STORES[3], 5);
    // A sale, so "all" has a mapped listing to look at besides the drifted one.
    await w.pos.sell(w.h, STORES[3], [{ sku: "GORRO-LANA", qty: 1 }]);
    await waitFor(
      async () => (await w.h.sql`select 1 from stock_change where status = 'applied'`).length >= 1,
      "sold",
    );
    const schedulers = [w.h.service, second].map((s) =>
      new ReconcileScheduler({ sql: w.h.sql, resyncer: s.resyncer()!, intervalMs: 3_600_000, dryRun: true })
    );
    const ran = await Promise.all(schedulers.map((s) => s.runOnce()));
    assert.equal(ran.filter(Boolean).length, 1, `one replica ran the round: ${JSON.stringify(ran)}`);
    const jobs = await w.h.sql<{ dry_run: boolean; drift_found: number; state: string }[]>`
      select dry_run, drift_found, state from resync_job`;
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0].dry_run, true);
    assert.equal(jobs[0].state, "done");
    assert.ok(jobs[0].drift_found >= 1, "the hand-edited listing is found");
  } finally {
    await second.close();
    await w.close();
  }
});

integration(
  "a Shopify sale applied between the resync's target read and its Shopify read is not undone",
  async () => {
    const sku = "REMERA-002", store = STORES[2];
    let world: World | undefined;
    let fired = 0;
    const w = world = await startWorld({
      async afterSource(line) {
        if (line.channel !== "shopify" || line.tienda_id !== store || fired++ > 0) return;
        // The pending sale's batch is claimed and applied right after the resync read the ledger.
        world!.shop.setFaults({ internalErrorRate: 0 });
        await waitFor(
          async () =>
            (await world!.h.sql`select 1 from stock_change where sku = ${sku} and tienda_id = ${store}
                                  and channel = 'shopify' and status = 'applied'`).length > 0,
          "the sale applied",
        );
      },
    }, { DISPATCH_BACKOFF_BASE: "2s", DISPATCH_BACKOFF_MAX: "2s" });
    try {
      const before = shopifyQty(w, sku, store);
      // Shopify fails the sale's first send: it waits pending, retried 2 s later.
      w.shop.setFaults({ internalErrorRate: 1 });
      await w.pos.sell(w.h, store, [{ sku, qty: 1 }]);
      await waitFor(
        async () =>
          (await w.h.sql`select 1 from stock_change where sku = ${sku} and tienda_id = ${store}
                           and channel = 'shopify' and status = 'pending' and attempts = 1`).length > 0,
        "the first send failed",
      );
      const job = await resync(w, { skus: [sku], channels: ["shopify"] });
      assert.ok(fired >= 1);
      assert.equal(job.state, "done");
      assert.equal(shopifyQty(w, sku, store), before - 1, "Shopify shows the sale");
      assert.equal(shopifyQty(w, sku, store), await w.pos.get(store, sku));
    } finally {
      await w.close();
    }
  },
);

integration(
  "a MercadoLibre sale mirrored between the resync's POS read and its MeLi read is not undone",
  async () => {
    const sku = "REMERA-002";
    let world: World | undefined;
    let fired = 0;
    const w = world = await startWorld({
      async afterSource(line) {
        if (line.channel !== "mercadolibre" || fired++ > 0) return;
        // A sale lands (POS lowered, published) and the live channel mirrors it to MeLi.
        await meliSaleMirrored(world!, sku);
      },
    });
    try {
      const before = await w.pos.get(MELI_STORE, sku);
      const job = await resync(w, { skus: [sku], channels: ["mercadolibre"] });
      assert.ok(fired >= 1);
      assert.equal(job.state, "done");
      assert.equal(w.meli.quantityOf(w.pos.product(sku).producto_id), before - 1, "MeLi shows the sale");
    } finally {
      await w.close();
    }
  },
);

integration(
  "a MercadoLibre sale mirrored right before the resync's write: the write re-checks the POS under the listing lock",
  async () => {
    const sku = "REMERA-002";
    let world: World | undefined;
    let fired = 0;
    const w = world = await startWorld({
      async beforeWrite(line) {
        if (line.channel !== "mercadolibre" || fired++ > 0) return;
        await meliSaleMirrored(world!, sku);
      },
    });
    try {
      const before = await w.pos.get(MELI_STORE, sku);
      w.meli.setQuantity(w.pos.product(sku).producto_id, 99); // drift, so the resync writes
      const job = await resync(w, { skus: [sku], channels: ["mercadolibre"] });
      assert.ok(fired >= 1);
      assert.equal(job.state, "done");
      assert.equal(w.meli.quantityOf(w.pos.product(sku).producto_id), before - 1, "MeLi shows the sale");
    } finally {
      await w.close();
    }
  },
);

integration(
  "two stores on one Shopify location: the resync sets the sum of both stores' POS stock, once",
  async () => {
    const sku = "REMERA-002";
    const shared = await sandboxLocationOf(STORES[0]);
    // Stores 0 and 1 both stock Shopify's location of store 0 (the others keep their own).
    const w = await startWorld(undefined, {
      SHOPIFY_LOCATIONS: JSON.stringify({ [STORES[0]]: shared, [STORES[1]]: shared }),
    });
    try {
      const item = w.shop.variants.find((v) => v.sku === sku)!.inventoryItemId;
      assert.equal(w.shop.locationIdOf(STORES[0]), shared);
      const job = await resync(w, { skus: [sku], channels: ["shopify"] });
      assert.equal(job.state, "done");
      const sum = await w.pos.get(STORES[0], sku) + await w.pos.get(STORES[1], sku);
      assert.equal(w.shop.available(item, shared), sum, "the location shows both stores' stock");
      const writes = job.report.filter((l: DriftLine) => l.outcome === "written");
      assert.equal(writes.length, 1, `one write for the location: ${JSON.stringify(job.report)}`);
      const again = await resync(w, { tienda_id: STORES[1], dry_run: true });
      const lines = again.report.filter((l: DriftLine) => l.sku === sku);
      assert.deepEqual(
        lines.map((l: DriftLine) => [l.tienda_id, l.source_qty, l.difference]),
        [[`${STORES[0]},${STORES[1]}`, sum, 0]],
        "a resync of one of the stores compares the location with both",
      );
    } finally {
      await w.close();
    }
  },
);

integration(
  "SHOPIFY_LOCATION_ID alone: every store the ledger knows is summed into the one location",
  async () => {
    const sku = "REMERA-002";
    const shared = await sandboxLocationOf(STORES[0]);
    const w = await startWorld(undefined, { SHOPIFY_LOCATIONS: "{}", SHOPIFY_LOCATION_ID: shared });
    try {
      const item = w.shop.variants.find((v) => v.sku === sku)!.inventoryItemId;
      const start = w.shop.available(item, shared)!;
      // Sales at three stores: all three stock the one location.
      const sum = await sellOneAtThreeStores(w, sku);
      assert.equal(w.shop.available(item, shared), start - 3);
      const job = await resync(w, { skus: [sku], channels: ["shopify"] });
      assert.equal(job.state, "done");
      assert.equal(w.shop.available(item, shared), sum);
      assert.equal(job.report.length, 1, JSON.stringify(job.report));
      // The resync's own audit row names the group, not a store: the next resync still finds the
      // three stores (and only them), and repairs a drift on the location.
      await shopifySet(w, sku, STORES[0], sum + 5); // the location, edited by hand
      const again = await resync(w, { skus: [sku], channels: ["shopify"] });
      assert.equal(again.state, "done");
      assert.deepEqual(again.unresolved, [], JSON.stringify(again.unresolved));
      assert.equal(w.shop.available(item, shared), sum, "the second resync repaired the location");
    } finally {
      await w.close();
    }
  },
);

integration(
  "a store map plus SHOPIFY_LOCATION_ID: stores on the default location are summed with the mapped one",
  async () => {
    const sku = "REMERA-002";
    const shared = await sandboxLocationOf(STORES[0]);
    const w = await startWorld(undefined, {
      SHOPIFY_LOCATIONS: JSON.stringify({ [STORES[0]]: shared }),
      SHOPIFY_LOCATION_ID: shared,
    });
    try {
      const item = w.shop.variants.find((v) => v.sku === sku)!.inventoryItemId;
      const sum = await sellOneAtThreeStores(w, sku);
      const job = await resync(w, { skus: [sku], channels: ["shopify"] });
      assert.equal(job.state, "done");
      assert.equal(w.shop.available(item, shared), sum, "the mapped store and the two on the default");
    } finally {
      await w.close();
    }
  },
);

integration(
  "a job stopped by a shutdown resumes on the next instance from where it was: every listing once, none twice",
  async () => {
    let stopAt: (() => void) | undefined;
    const paused = new Promise<void>((r) => stopAt = r);
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    let checks = 0;
    // The third listing check holds until the first instance has begun shutting down.
    const w = await startWorld({
      afterSource: async () => {
        if (++checks === 3) {
          stopAt!();
          await gate;
        }
      },
    });
    let next: ReturnType<typeof startService> | undefined;
    try {
      await injectDrift(w);
      const started = await adminApi(w.h, TOKEN, "POST", "/resync", { skus: SKUS, dry_run: true });
      assert.equal(started.status, 202);
      const id = started.body.id;
      await paused;
      const closing = w.h.service.close();
      release();
      await closing;
      const [left] = await w.h.sql<{ state: string; done: number; total: number }[]>`
        select state, done, total from resync_job where id = ${id}`;
      assert.equal(left.state, "running", "a shutdown pauses the job, it does not fail it");
      // The listing in progress when the shutdown began is not counted: the next instance checks it again.
      assert.ok(left.done === 2 && left.done < left.total, `paused part way: ${left.done} of ${left.total}`);

      let resumedChecks = 0;
      next = startService(testConfig(w.env), { resyncHooks: { afterSource: () => void resumedChecks++ } });
      await next.started;
      const job = await next.resyncer()!.wait(id, 30_000);
      assert.equal(job.state, "done");
      assert.equal(job.resumed, 1);
      assert.equal(job.done, job.total);
      const lines = [...job.report as DriftLine[], ...job.unresolved as { sku: string }[]];
      assert.equal(lines.length, job.total, "one line per listing check");
      const keys = lines.map((l) => `${(l as DriftLine).channel}|${l.sku}|${(l as DriftLine).tienda_id}`);
      assert.equal(new Set(keys).size, keys.length, `no listing checked twice: ${keys.join(" ")}`);
      assert.equal(resumedChecks, left.total - left.done, "the resumed run checks only what was left");
      assert.deepEqual(
        driftOnly(job.report as DriftLine[]).map((l) => `${l.channel} ${l.sku}`).sort(),
        ["mercadolibre JEAN-RECTO-40", "mercadolibre REMERA-002", "shopify GORRO-LANA", "shopify REMERA-002"],
      );
    } finally {
      release();
      await next?.close();
      await w.close();
    }
  },
);

integration(
  "DELETE /resync/{id} cancels a running job at its next listing; progress shows a rate and an ETA",
  async () => {
    let entered!: () => void;
    const inside = new Promise<void>((r) => entered = r);
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    let checks = 0;
    const w = await startWorld({
      afterSource: async () => {
        if (++checks === 2) {
          entered();
          await gate;
        }
      },
    });
    try {
      await injectDrift(w);
      const started = await adminApi(w.h, TOKEN, "POST", "/resync", { skus: SKUS });
      const id = started.body.id;
      await inside;
      const running = await adminApi(w.h, TOKEN, "GET", `/resync/${id}`);
      assert.equal(running.body.state, "running");
      assert.equal(running.body.progress.done, 1);
      assert.ok(running.body.progress.per_second > 0, JSON.stringify(running.body.progress));
      assert.ok(running.body.progress.eta_seconds >= 1, JSON.stringify(running.body.progress));

      const cancelled = await adminApi(w.h, TOKEN, "DELETE", `/resync/${id}`);
      assert.equal(cancelled.status, 200);
      assert.equal(cancelled.body.state, "cancelled");
      release();
      const job = await waitFor(async () => {
        const j = await adminApi(w.h, TOKEN, "GET", `/resync/${id}`);
        return j.body.done >= 2 ? j.body : undefined;
      }, "the listing in progress at the cancel stored");
      assert.equal(job.state, "cancelled");
      // The listing in progress when it was cancelled may finish; nothing after it starts.
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(checks <= 2, `no listing checked after the cancel (${checks} checks)`);
      assert.ok(job.done < job.total);
      assert.equal(job.report.length + job.unresolved.length, job.done, "every listing checked has its line");
      assert.equal((await adminApi(w.h, TOKEN, "DELETE", `/resync/${id}`)).status, 409);
      assert.equal((await adminApi(w.h, TOKEN, "DELETE", `/resync/${crypto.randomUUID()}`)).status, 404);
      // The scope is free again.
      assert.equal(
        (await adminApi(w.h, TOKEN, "POST", "/resync", { skus: SKUS, dry_run: true })).status,
        202,
      );
    } finally {
      release();
      await w.close();
    }
  },
);

/** The header of the report download (src/ops/resync_report.ts). */
const REPORT_HEADER =
  "kind,channel,tienda_id,sku,source_qty,in_flight,marketplace_qty,target,difference,action,outcome,reason,error,rule";

integration("the report downloads whole as CSV or NDJSON, drift lines then unresolved ones", async () => {
  const w = await startWorld();
  try {
    await injectDrift(w);
    const job = await resync(w, { skus: [...SKUS, "NO-SUCH-SKU"], dry_run: true });
    const lines = (job.report as DriftLine[]).length + (job.unresolved as unknown[]).length;
    const csv = await fetch(`${w.h.service.url}/resync/${job.id}/report?format=csv`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get("content-type")!, /text\/csv/);
    const rows = (await csv.text()).trimEnd().split("\r\n");
    assert.equal(
      rows[0],
      "kind,channel,tienda_id,sku,source_qty,in_flight,marketplace_qty,target,difference,action,outcome,reason,error,rule",
    );
    assert.equal(rows.length, 1 + lines);
    assert.ok(rows.some((r) => r.startsWith("unresolved,") && r.includes("NO-SUCH-SKU")));
    const gorro = rows.find((r) =>
      r.startsWith("drift,shopify,") && r.includes(`,GORRO-LANA,`) && r.includes(",77,")
    );
    assert.ok(gorro, "the hand-edited Shopify listing is a row with its 77");

    const nd = await fetch(`${w.h.service.url}/resync/${job.id}/report?format=ndjson`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const parsed = (await nd.text()).trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(parsed.length, lines);
    assert.deepEqual(
      parsed.slice(0, (job.report as unknown[]).length).map((l) => l.kind),
      (job.report as unknown[]).map(() => "drift"),
    );
    assert.equal((await adminApi(w.h, TOKEN, "GET", `/resync/${job.id}/report?format=xml`)).status, 400);
    assert.equal(
      (await fetch(`${w.h.service.url}/resync/${job.id}/report`)).status,
      401,
      "the report needs the admin token like the job",
    );
  } finally {
    await w.close();
  }
});

/** Runs `deno task resync` against the world's service; what it printed and its exit code. */
async function cli(w: World, args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const client = new OpsClient({ baseUrl: w.h.service.url, token: TOKEN });
  const code = await resyncCli(args, client, {
    sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 50))),
    out: (t) => out.push(t),
    err: (t) => err.push(t),
  });
  return { code, out: out.join("\n"), err };
}

integration(
  "CLI: the summary counts every line, --csv writes a row per line, --follow re-reads an ended job",
  async () => {
    const w = await startWorld();
    const dir = await Deno.makeTempDir();
    try {
      await injectDrift(w);
      const csv = `${dir}/resync.csv`;
      const run = await cli(w, [
        ...SKUS.flatMap((sku) => ["--sku", sku]),
        "--sku",
        "NO-SUCH-SKU",
        "--dry-run",
        "--csv",
        csv,
      ]);
      assert.equal(run.code, 0, run.err.join("\n"));
      const id = /^resync (\S+) started/.exec(run.err[0])![1];
      // 3 SKUs × (5 Shopify stores + 1 MeLi store) compared, 4 of them drifted; NO-SUCH-SKU unresolved on all 6.
      assert.ok(
        run.out.startsWith([
          "ACTION     MERCADOLIBRE  SHOPIFY  TOTAL",
          "none                  1       13     14",
          "would_set             2        2      4",
          "total                 3       15     18",
          "",
          "UNRESOLVED     MERCADOLIBRE  SHOPIFY  TOTAL",
          "stock_unknown             1        5      6",
          "total                     1        5      6",
          "",
          "SKU ",
        ].join("\n")),
        run.out,
      );
      assert.match(run.out, /\ndone \(dry run: nothing written\): drift_found 4, written 0, errors 0$/);
      assert.ok(run.err.includes(`report: 24 lines written to ${csv} (csv)`), run.err.join("\n"));

      const rows = (await Deno.readTextFile(csv)).trimEnd().split("\r\n");
      assert.equal(rows[0], REPORT_HEADER);
      const job = (await api(w, "GET", `/resync/${id}`)).body;
      assert.equal(
        rows.length - 1,
        job.report_lines + job.unresolved_lines,
        "one row per line of the report",
      );
      assert.equal(rows.length - 1, 24);
      const jean = w.pos.product("JEAN-RECTO-40").stock[MELI_STORE];
      assert.ok(
        rows.includes(
          `drift,mercadolibre,${MELI_STORE},JEAN-RECTO-40,${jean},0,99,${jean},${jean - 99},would_set,,,,`,
        ),
        rows.join("\n"),
      );
      assert.equal(rows.filter((r) => r.startsWith("unresolved,")).length, 6);

      // Re-attached to the ended job: the same summary, the report as NDJSON this time.
      const ndjson = `${dir}/resync.ndjson`;
      const again = await cli(w, ["--follow", id, "--ndjson", ndjson]);
      assert.equal(again.code, 0, again.err.join("\n"));
      assert.equal(again.out.split("\n\nSKU ")[0], run.out.split("\n\nSKU ")[0]);
      const lines = (await Deno.readTextFile(ndjson)).trimEnd().split("\n").map((l) => JSON.parse(l));
      assert.equal(lines.length, 24);
      assert.equal(lines.filter((l) => l.kind === "drift" && l.action === "would_set").length, 4);

      const late = await cli(w, ["--cancel", id]);
      assert.equal(late.code, 1);
      assert.match(late.err[0], /has already ended: nothing to cancel/);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await w.close();
    }
  },
);

integration("CLI: --cancel stops a followed job, which then exits 1 saying it was cancelled", async () => {
  let entered!: () => void;
  const inside = new Promise<void>((r) => entered = r);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let checks = 0;
  const w = await startWorld({
    afterSource: async () => {
      if (++checks === 2) {
        entered();
        await gate;
      }
    },
  });
  try {
    const following = cli(w, SKUS.flatMap((sku) => ["--sku", sku]));
    await inside;
    const id =
      (await w.h.sql<{ id: string }[]>`select id::text from resync_job where state = 'running'`)[0].id;
    const cancelled = await cli(w, ["--cancel", id]);
    assert.equal(cancelled.code, 0, cancelled.err.join("\n"));
    assert.match(
      cancelled.err[0],
      new RegExp(`^resync ${id} cancelled: it stops after the listing it is checking`),
    );
    release();
    const followed = await following;
    assert.equal(followed.code, 1);
    assert.equal(
      followed.err.at(-1),
      `error: resync ${id} was cancelled (cancelled by an operator): it did not finish`,
    );
    // 1 or 2: the listing in progress at the cancel is stored when it ends, maybe after the CLI looked.
    assert.match(
      followed.out,
      /\ncancelled: .*; CANCELLED at [12]\/18 listings checked \(cancelled by an operator\)/,
    );
  } finally {
    release();
    await w.close();
  }
});

/** Listings on one side only, a SKU on two Shopify items, and a Full MercadoLibre listing. */
async function unmappedListings(w: World) {
  const products = catalog.products;
  const gone = products[products.length - 1].sku; // the POS has it; Shopify no longer does
  const twice = products[products.length - 2].sku; // two Shopify items carry it
  const full = products[products.length - 3].sku; // MercadoLibre stocks it in its own warehouse
  assert.ok(w.shop.deleteVariant(gone));
  w.shop.createVariant({ sku: "ONLINE-ONLY", available: Object.fromEntries(STORES.map((s) => [s, 12])) });
  w.shop.createVariant({ sku: twice, available: Object.fromEntries(STORES.map((s) => [s, 3])) });
  const [fullListing] = w.meli.listingsForSku(full);
  const patched = await fetch(`${w.meli.url}/__sandbox/items/${fullListing.itemId}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ logistic_type: "fulfillment" }),
  });
  assert.equal(patched.status, 200, await patched.text());
  return { gone, twice, full, fullItem: fullListing.itemId };
}

integration(
  "all on a fresh ledger: the dry run names every drifted listing of the whole catalog and both unmapped sides",
  async () => {
    const w = await startWorld();
    try {
      await injectDrift(w);
      const odd = await unmappedListings(w);
      const before = w.shop.stats();
      const puts = w.meli.stats().puts;
      const job = await resync(w, { all: true, dry_run: true });
      assert.equal(job.state, "done", JSON.stringify(job.error));
      const drift = driftOnly(job.report).map((l) => `${l.channel} ${l.sku} ${l.tienda_id} ${l.difference}`);

      const jean = w.pos.product("JEAN-RECTO-40").stock[MELI_STORE];
      const gorro = w.pos.product("GORRO-LANA").stock[STORES[2]];
      assert.ok(drift.includes(`mercadolibre JEAN-RECTO-40 ${MELI_STORE} ${jean - 99}`), drift.join("\n"));
      assert.ok(drift.includes(`mercadolibre REMERA-002 ${MELI_STORE} -3`), drift.join("\n"));
      assert.ok(drift.includes(`shopify GORRO-LANA ${STORES[2]} ${gorro - 77}`), drift.join("\n"));
      const reasons = (job.unresolved as { channel: string; sku: string; reason: string }[])
        .map((u) => `${u.channel} ${u.sku} ${u.reason}`);
      assert.ok(reasons.includes(`shopify ${odd.gone} no_listing`), reasons.join("\n"));
      assert.ok(reasons.includes("shopify ONLINE-ONLY not_in_pos"), reasons.join("\n"));
      assert.ok(reasons.includes(`shopify ${odd.twice} ambiguous_sku`), reasons.join("\n"));
      assert.ok(reasons.includes(`mercadolibre ${odd.full} managed_by_mercadolibre`), reasons.join("\n"));
      // Counts first, over the whole report: by action per channel, by reason per channel.
      assert.equal(job.summary.unresolved.shopify.not_in_pos, STORES.length, "ONLINE-ONLY at each location");
      assert.equal(job.summary.unresolved.mercadolibre.managed_by_mercadolibre, 1);
      assert.equal(
        Object.values(job.summary.actions.shopify as Record<string, number>).reduce((a, b) => a + b, 0),
        (job.report as DriftLine[]).filter((l) => l.channel === "shopify").length,
      );
      assert.equal(
        job.summary.actions.shopify.would_set,
        drift.filter((d) => d.startsWith("shopify")).length,
      );
      // Every product the POS has at a mapped store is accounted for, on each channel.
      const lines = [...job.report as DriftLine[], ...job.unresolved as DriftLine[]];
      for (const p of catalog.products) {
        assert.ok(lines.some((l) => l.channel === "shopify" && l.sku === p.sku), `shopify ${p.sku}`);
        assert.ok(
          lines.some((l) => l.channel === "mercadolibre" && l.sku === p.sku),
          `mercadolibre ${p.sku}`,
        );
      }
      // Read in bulk, not one call per SKU; nothing written.
      const after = w.shop.stats();
      assert.ok(after.bulkOperations > before.bulkOperations, "Shopify was read with a bulk operation");
      assert.ok(
        after.requests - before.requests < catalog.products.length,
        `${after.requests - before.requests} calls`,
      );
      assert.equal(after.mutationsApplied, before.mutationsApplied);
      assert.equal(w.meli.stats().puts, puts);
    } finally {
      await w.close();
    }
  },
);

integration(
  "all, written: every mapped listing equals the POS, Shopify's in one call; every unmapped listing is untouched",
  async () => {
    const w = await startWorld();
    try {
      await injectDrift(w);
      // More drift on Shopify: a whole store's listings, so the write is one batch of many.
      for (const p of catalog.products.slice(0, 6)) await shopifySet(w, p.sku, STORES[1], 1);
      const odd = await unmappedListings(w);
      const onlineOnly = w.shop.variants.filter((v) => v.sku === "ONLINE-ONLY").map((v) => v.productoId);
      const twins = w.shop.variants.filter((v) => v.sku === odd.twice).map((v) => v.productoId);
      const untouched = () =>
        JSON.stringify([
          onlineOnly.map((id) => STORES.map((s) => w.shop.availableFor(id, s))),
          twins.map((id) => STORES.map((s) => w.shop.availableFor(id, s))),
          w.meli.quantityOf(w.pos.product(odd.full).producto_id),
        ]);
      const before = untouched();
      const mutations = w.shop.stats().mutationsApplied;
      const job = await resync(w, { all: true });
      assert.equal(job.state, "done", JSON.stringify(job.error));
      assert.equal(job.errors, 0, JSON.stringify(job.report.filter((l: DriftLine) => l.outcome === "error")));
      // A SKU two products carry (MATE-IMP-01 in the default catalog) is ambiguous: never written.
      const shared = new Set(
        catalog.products.filter((p, i, all) => all.findIndex((q) => q.sku === p.sku) !== i).map((p) => p.sku),
      );
      for (const p of catalog.products) {
        if (p.sku === odd.gone || p.sku === odd.twice || shared.has(p.sku)) continue;
        for (const store of STORES) {
          const pos = await w.pos.get(store, p.sku);
          assert.equal(
            w.shop.availableFor(p.producto_id, store),
            Math.max(0, pos),
            `shopify ${p.sku} at ${store}`,
          );
        }
        if (p.sku !== odd.full) {
          const pos = await w.pos.get(MELI_STORE, p.sku);
          assert.equal(w.meli.quantityOf(p.producto_id), Math.max(0, pos), `mercadolibre ${p.sku}`);
        }
      }
      assert.equal(untouched(), before, "unmapped, ambiguous and Full listings are never written");
      const written = (job.report as DriftLine[]).filter((l) =>
        l.channel === "shopify" && l.outcome === "written"
      );
      assert.ok(written.length >= 7, `${written.length} Shopify listings written`);
      assert.equal(
        w.shop.stats().mutationsApplied - mutations,
        1,
        "Shopify's drifted listings set in one call",
      );
      // Run again: nothing left to do.
      const again = await resync(w, { all: true, dry_run: true });
      assert.deepEqual(driftOnly(again.report), []);
    } finally {
      await w.close();
    }
  },
);

integration(
  "a job whose replica died (its heartbeat stopped) is taken over by the next replica to look, and finishes",
  async () => {
    const w = await startWorld();
    try {
      await injectDrift(w);
      // A replica took a whole-catalog dry run and died before it stored its plan.
      const id = crypto.randomUUID();
      const request = { all: true, dry_run: true };
      await w.h.sql`
        insert into resync_job (id, scope_key, request, dry_run, owner, heartbeat_at)
        values (${id}, ${JSON.stringify(request)}, ${w.h.sql.json(request)}, true, 'dead-replica:1',
                now() - interval '10 minutes')`;
      // Any request makes this replica look for abandoned jobs first.
      const other = await adminApi(w.h, TOKEN, "POST", "/resync", { skus: ["GORRO-LANA"], dry_run: true });
      assert.equal(other.status, 202);
      const job = await w.h.service.resyncer()!.wait(id, 30_000);
      assert.equal(job.state, "done", JSON.stringify(job.error));
      assert.equal(job.resumed, 1);
      assert.notEqual(job.owner, "dead-replica:1");
      assert.equal(job.done, job.total);
      assert.ok((job.total as number) >= catalog.products.length, `${job.total} listings planned`);
      assert.ok(
        driftOnly(job.report as DriftLine[]).some((l) => l.channel === "shopify" && l.sku === "GORRO-LANA"),
        "the job found the drift",
      );
    } finally {
      await w.close();
    }
  },
);

integration(
  "a shutdown during a listing's check pauses the job without marking that listing checked",
  async () => {
    const sku = "GORRO-LANA";
    let world: World | undefined;
    let closing: Promise<void> | undefined;
    const w = world = await startWorld({
      afterSource(line) {
        if (line.channel !== "shopify" || !line.tienda_id.split(",").includes(STORES[2]) || closing) return;
        closing = world!.h.service.resyncer()!.close(); // SIGTERM arrives while this listing is checked
      },
    });
    let second: ReturnType<typeof startService> | undefined;
    try {
      await shopifySet(w, sku, STORES[2], 77);
      const started = await adminApi(w.h, TOKEN, "POST", "/resync", { skus: [sku], channels: ["shopify"] });
      assert.equal(started.status, 202);
      const id = started.body.id as string;
      await waitFor(() => closing !== undefined, "shutdown began");
      await closing;
      const lines = await w.h.sql`select line from resync_line where job_id = ${id} and kind = 'unresolved'`;
      // The next replica resumes the job from its first step not done.
      second = startService(testConfig(w.env));
      await second.started;
      const job = await second.resyncer()!.wait(id, 30_000);
      assert.deepEqual(
        {
          state: job.state,
          lines: lines.map((l) => `${l.line.reason}: ${l.line.error}`),
          shopify: shopifyQty(w, sku, STORES[2]),
        },
        { state: "done", lines: [], shopify: await w.pos.get(STORES[2], sku) },
      );
    } finally {
      await second?.close();
      await w.close();
    }
  },
);
