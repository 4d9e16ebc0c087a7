/**
 * Resync of a MercadoLibre seller with stock locations (MELI_LOCATIONS): real RabbitMQ,
 * Postgres and Redis, the MeLi sandbox configured as the real API with a multi-origin seller
 * (a warehouse for each of the first three stores; MELI_LOCATIONS maps the first two), and
 * the POS's stock keys as the source of truth. Each mapped store is compared with its own
 * location of the SKU's user product and set there alone, compare-and-set on `x-version`.
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import type { DriftLine, Unresolved } from "../src/ops/resync.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { type Harness, harnessFor, integration, runResync, testConfig, uniqueName } from "./helpers.ts";
import { Pos } from "./pos.ts";

const TOKEN = "meli-locations-resync-token";
const catalog = defaultCatalog();
// Full: stocked in MercadoLibre's warehouses only (meli_facility).
catalog.products.find((p) => p.sku === "RINONERA")!.meli_logistic_type = "fulfillment";
const STORES = catalog.stores.map((s) => s.tienda_id);
const WAREHOUSES = [0, 1, 2].map((i) => ({
  store_id: `100${i + 1}`,
  network_node_id: `MLA100${i + 1}`,
  tienda_id: STORES[i],
}));
/** The first two stores' warehouses; the third store's warehouse is the seller's business, not ours. */
const MELI_LOCATIONS = JSON.stringify(Object.fromEntries(
  WAREHOUSES.slice(0, 2).map((
    w,
  ) => [w.tienda_id, { store_id: w.store_id, network_node_id: w.network_node_id }]),
));
const MAPPED = STORES.slice(0, 2);
const ONLY_MELI = ["mercadolibre"];

interface World {
  h: Harness;
  meli: MeliSandbox;
  pos: Pos;
  close(): Promise<void>;
}

async function startWorld(extra: Record<string, string> = {}): Promise<World> {
  const meli = await startMeliSandbox({
    catalog,
    tiendaId: STORES[0],
    ratePerSecond: 200,
    userTags: ["normal", "warehouse_management"],
    warehouses: WAREHOUSES,
  });
  const pos = await Pos.open(catalog);
  const schema = uniqueName("msync_ml");
  const config = testConfig({
    LEDGER_SCHEMA: schema,
    POS_STOCK_QUERY: `select stock_actual from ${schema}.producto where tienda_id = $1 and sku = $3 limit 1`,
    POS_PRODUCT_QUERY: `select id from ${schema}.producto where tienda_id = $1 and sku = $2 limit 1`,
    POS_CATALOG_QUERY: `select tienda_id, sku, id from ${schema}.producto where tienda_id = any($1)`,
    CHANNELS: "mercadolibre",
    DISPATCH_ENABLED: "true",
    ADMIN_TOKEN: TOKEN,
    MELI_URL: meli.url,
    MELI_TOKEN: meli.staticToken,
    MELI_TIENDA_ID: "",
    MELI_LOCATIONS,
    MELI_RATE_PER_SEC: "200",
    POS_STOCK_KEY: pos.keyTemplate,
    ...extra,
  });
  const service = startService(config);
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
    meli,
    pos,
    async close() {
      await h.close();
      await meli.close();
      await pos.close();
    },
  };
}

function userProductOf(w: World, sku: string): string {
  return w.meli.listingFor(w.pos.product(sku).producto_id)!.userProductId;
}

/** The quantity at a seller warehouse of a SKU's user product, as MeLi holds it. */
function at(w: World, sku: string, storeId: string): number {
  return w.meli.userProductStock(userProductOf(w, sku))!.locations.find((l) => l.store_id === storeId)!
    .quantity;
}

/** Drift behind the service's back: a MeLi-side change at one warehouse. */
function drift(w: World, sku: string, storeId: string, quantity: number): void {
  w.meli.setLocationQuantity(
    userProductOf(w, sku),
    { type: "seller_warehouse", store_id: storeId },
    quantity,
  );
}

function stockPuts(w: World) {
  return w.meli.requestLog().filter((r) => r.method === "PUT");
}

function stockGets(w: World) {
  return w.meli.requestLog().filter((r) =>
    r.method === "GET" && /^\/user-products\/[^/]+\/stock$/.test(r.path)
  );
}

function lineOf(job: { report: DriftLine[] }, sku: string, store: string): DriftLine {
  const line = job.report.find((l) => l.sku === sku && l.tienda_id === store);
  assert.ok(line, `a line for ${sku} at ${store}: ${JSON.stringify(job.report)}`);
  return line;
}

function resync(w: World, request: Record<string, unknown>) {
  return runResync(w.h, TOKEN, { channels: ONLY_MELI, ...request });
}

integration(
  "MELI_LOCATIONS, per SKU: the dry run compares each mapped store with its location; the write sets only the drifted ones",
  async () => {
    const w = await startWorld();
    try {
      const sku = "REMERA-001", calm = "REMERA-002";
      drift(w, sku, "1001", 99); // MeLi-side drift at the first store's warehouse
      await w.pos.set(STORES[1], sku, 5); // the POS sold 3 at the second store that MeLi never heard of
      drift(w, sku, "1003", 55); // the unmapped store's warehouse: not ours to compare
      const dry = await resync(w, { skus: [sku, calm], dry_run: true });
      assert.equal(dry.state, "done");
      assert.deepEqual(dry.unresolved, []);
      const pick = (
        l: DriftLine,
      ) => [l.source_qty, l.marketplace_qty, l.target, l.difference, l.action, l.rule];
      assert.deepEqual(
        dry.report.map((l: DriftLine) => `${l.sku}@${l.tienda_id}`).sort(),
        [
          `${sku}@${STORES[0]}`,
          `${sku}@${STORES[1]}`,
          `${calm}@${STORES[0]}`,
          `${calm}@${STORES[1]}`,
        ].sort(),
        "each SKU at each mapped store; the unmapped store is not compared",
      );
      assert.deepEqual(pick(lineOf(dry, sku, STORES[0])), [4, 99, 4, -95, "would_set", null]);
      assert.deepEqual(pick(lineOf(dry, sku, STORES[1])), [5, 8, 5, -3, "would_set", null]);
      assert.deepEqual(pick(lineOf(dry, calm, STORES[0])), [35, 35, 35, 0, "none", null]);
      assert.deepEqual(pick(lineOf(dry, calm, STORES[1])), [15, 15, 15, 0, "none", null]);
      assert.equal(stockPuts(w).length, 0, "a dry run writes nothing");

      const job = await resync(w, { skus: [sku, calm] });
      assert.equal(job.state, "done");
      assert.deepEqual([job.drift_found, job.written, job.errors], [2, 2, 0]);
      assert.deepEqual([at(w, sku, "1001"), at(w, sku, "1002"), at(w, sku, "1003")], [4, 5, 55]);
      assert.deepEqual([at(w, calm, "1001"), at(w, calm, "1002")], [35, 15]);
      // One PUT per drifted location, each listing that location alone, never /items.
      const up = userProductOf(w, sku);
      assert.deepEqual(
        stockPuts(w).map((r) => [r.path, r.body]),
        [
          [`/user-products/${up}/stock/type/seller_warehouse`, {
            locations: [{ store_id: "1001", network_node_id: "MLA1001", quantity: 4 }],
          }],
          [`/user-products/${up}/stock/type/seller_warehouse`, {
            locations: [{ store_id: "1002", network_node_id: "MLA1002", quantity: 5 }],
          }],
        ],
      );
      // Every resync write is in the audit trail, per store.
      const audit = await w.h.sql<{ tienda_id: string; delta: number; status: string }[]>`
        select tienda_id, delta, status from stock_change where event_id like 'resync:%' order by delta`;
      assert.deepEqual(audit.map((r) => [r.tienda_id, r.delta, r.status]), [
        [STORES[0], -95, "applied"],
        [STORES[1], -3, "applied"],
      ]);
      const again = await resync(w, { skus: [sku, calm], dry_run: true });
      assert.equal(again.drift_found, 0, "a second look finds nothing");
      assert.deepEqual(w.meli.invalidRequests(), []);
    } finally {
      await w.close();
    }
  },
);

integration(
  "MELI_LOCATIONS: a MeLi sale between the resync's read and its write loses the x-version race; the line is recomputed",
  async () => {
    const w = await startWorld();
    try {
      const sku = "REMERA-001";
      drift(w, sku, "1001", 99);
      // Right after the resync reads the stock, a sale shipped from warehouse 1001 moves it to 42.
      w.meli.raceStockWrite(userProductOf(w, sku), { type: "seller_warehouse", store_id: "1001" }, 42);
      const job = await resync(w, { skus: [sku] });
      assert.equal(job.state, "done");
      const line = lineOf(job, sku, STORES[0]);
      // Recomputed after the 409: it reports the quantity the write replaced, not the stale read.
      assert.deepEqual([line.marketplace_qty, line.target, line.outcome], [42, 4, "written"]);
      assert.equal(at(w, sku, "1001"), 4);
      assert.equal(stockPuts(w).filter((r) => r.status === 409).length, 1, "the race was lost once");
      assert.equal(stockPuts(w).filter((r) => r.status === 200).length, 1, "then written once");
      const [row] = await w.h.sql<{ delta: number }[]>`
        select delta from stock_change where event_id like 'resync:%' and tienda_id = ${STORES[0]}`;
      assert.equal(row.delta, 4 - 42, "the audit trail records the value the write replaced");
      assert.deepEqual(w.meli.invalidRequests(), []);
    } finally {
      await w.close();
    }
  },
);

integration(
  "MELI_LOCATIONS, whole catalog: every user product × mapped store compared, one stock read per user product, Full reported, unmapped stores left out",
  async () => {
    const w = await startWorld();
    try {
      drift(w, "BUZO-GRIS-L", "1001", 0);
      drift(w, "CAMPERA-PUFFER-L", "1002", 70);
      drift(w, "MOCHILA-URB", "1003", 3); // unmapped: never compared
      const reads = stockGets(w).length;
      const dry = await resync(w, { all: true, dry_run: true });
      assert.equal(dry.state, "done");
      const userProducts = new Set(w.meli.listings.map((l) => l.userProductId));
      assert.equal(stockGets(w).length - reads, userProducts.size, "one stock read per user product");
      const lines: (DriftLine | Unresolved)[] = [...dry.report, ...dry.unresolved];
      assert.ok(lines.every((l) => MAPPED.includes(l.tienda_id)), "only the mapped stores");
      assert.deepEqual(
        dry.report.filter((l: DriftLine) => l.difference !== 0)
          .map((l: DriftLine) => [l.sku, l.tienda_id, l.source_qty, l.marketplace_qty, l.action])
          .sort(),
        [
          ["BUZO-GRIS-L", STORES[0], 37, 0, "would_set"],
          ["CAMPERA-PUFFER-L", STORES[1], 14, 70, "would_set"],
        ],
      );
      const reasons = (sku: string) =>
        dry.unresolved.filter((u: Unresolved) => u.sku === sku).map((
          u: Unresolved,
        ) => [u.tienda_id, u.reason])
          .sort();
      assert.deepEqual(reasons("RINONERA"), [
        [STORES[0], "managed_by_mercadolibre"],
        [STORES[1], "managed_by_mercadolibre"],
      ]);
      assert.deepEqual(reasons("MATE-IMP-01"), [[STORES[0], "ambiguous_sku"], [STORES[1], "ambiguous_sku"]]);
      // Every other SKU is compared at both mapped stores.
      const compared = new Set(dry.report.map((l: DriftLine) => l.sku));
      for (const sku of compared) {
        assert.deepEqual(
          dry.report.filter((l: DriftLine) => l.sku === sku).map((l: DriftLine) => l.tienda_id).sort(),
          [...MAPPED].sort(),
          sku as string,
        );
      }
      assert.ok(compared.size >= 30, `${compared.size} SKUs compared`);
      assert.equal(stockPuts(w).length, 0);

      const job = await resync(w, { all: true });
      assert.equal(job.state, "done");
      assert.deepEqual([job.written, job.errors], [2, 0]);
      assert.deepEqual([at(w, "BUZO-GRIS-L", "1001"), at(w, "CAMPERA-PUFFER-L", "1002")], [37, 14]);
      assert.equal(at(w, "MOCHILA-URB", "1003"), 3, "the unmapped warehouse is untouched");
      const full = userProductOf(w, "RINONERA");
      assert.ok(!stockPuts(w).some((r) => r.path.includes(full)), "Full is never written");
      const again = await resync(w, { all: true, dry_run: true });
      assert.equal(again.drift_found, 0);
      assert.deepEqual(w.meli.invalidRequests(), []);
    } finally {
      await w.close();
    }
  },
);

integration(
  "MELI_LOCATIONS with a stock rule on one mapped store: that store's location gets the rule's value, per SKU and over the whole catalog",
  async () => {
    const w = await startWorld({
      STOCK_RULES: JSON.stringify({ mercadolibre: { stores: { [STORES[1]]: { buffer: 2 } } } }),
    });
    try {
      const sku = "REMERA-001";
      const job = await resync(w, { skus: [sku] });
      assert.equal(job.state, "done");
      const pick = (l: DriftLine) => [l.source_qty, l.marketplace_qty, l.target, l.rule, l.outcome ?? null];
      assert.deepEqual(pick(lineOf(job, sku, STORES[0])), [4, 4, 4, null, null], "no rule: the POS stock");
      assert.deepEqual(pick(lineOf(job, sku, STORES[1])), [8, 8, 6, "buffer 2", "written"]);
      assert.deepEqual([at(w, sku, "1001"), at(w, sku, "1002")], [4, 6]);
      // The whole catalog pairs per store too: the ruled store's lines carry the rule.
      const all = await resync(w, { all: true, dry_run: true });
      assert.equal(all.state, "done");
      assert.deepEqual(pick(lineOf(all, sku, STORES[1])), [8, 6, 6, "buffer 2", null]);
      const ruled = all.report.filter((l: DriftLine) => l.tienda_id === STORES[1]);
      assert.ok(ruled.length > 0 && ruled.every((l: DriftLine) => l.rule === "buffer 2"));
      assert.ok(
        all.report.filter((l: DriftLine) => l.tienda_id === STORES[0]).every((l: DriftLine) => !l.rule),
      );
      // Every other SKU at the ruled store shows 2 more than the rule allows: that is the drift found.
      for (const l of ruled as DriftLine[]) {
        assert.equal(l.target, Math.max(0, l.source_qty - 2), l.sku);
      }
      assert.deepEqual(w.meli.invalidRequests(), []);
    } finally {
      await w.close();
    }
  },
);
