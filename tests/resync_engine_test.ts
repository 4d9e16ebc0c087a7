/** Review probes for the whole-catalog resync engine (scratch, not for merge). */
import assert from "node:assert/strict";
import postgres from "postgres";
import { migrate } from "../src/ledger/migrate.ts";
import type { ServiceMetrics } from "../src/metrics.ts";
import { type PosCatalogRow, type PosCatalogSource, Resyncer } from "../src/ops/resync.ts";
import type { PosStockReader } from "../src/pos/stock.ts";
import type {
  BatchSet,
  BatchSetOutcome,
  CatalogListing,
  ChannelStock,
  StockRead,
} from "../src/sync/channel.ts";
import { DATABASE_URL, integration, uniqueName, waitFor } from "./helpers.ts";

const metrics = { resyncDrift: { inc() {} }, resyncRuns: { inc() {} } } as unknown as ServiceMetrics;

async function ledger() {
  const schema = uniqueName("rv");
  const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  await migrate(admin, schema);
  const sql = postgres(DATABASE_URL, { max: 4, onnotice: () => {}, connection: { search_path: schema } });
  return {
    sql,
    async close() {
      await sql.end({ timeout: 2 });
      await admin.unsafe(`drop schema ${schema} cascade`);
      await admin.end({ timeout: 2 });
    },
  };
}

/** One Shopify-like location L1 for store S1; `shelf` is the marketplace (sku → available). */
function fakeShopify(
  shelf: Map<string, number>,
  writeMany?: (sets: readonly BatchSet[]) => BatchSetOutcome[],
): ChannelStock {
  const readOne = (sku: string): StockRead =>
    shelf.has(sku)
      ? { ok: true, quantity: shelf.get(sku)!, ref: { item: sku, location: "L1" } }
      : { ok: false, reason: "listing_gone", error: sku };
  return {
    name: "shopify",
    deltas: true,
    maxPerCall: 250,
    mappedStores: () => ["S1"],
    shows: (t) => t === "S1",
    place: () => "L1",
    catalog: {
      async *listings(): AsyncIterable<CatalogListing[]> {
        yield [...shelf].map(([sku, quantity]) => ({
          sku,
          place: "L1",
          quantity,
          ref: { item: sku, location: "L1" },
        }));
      },
    },
    read: (sku) => Promise.resolve(readOne(sku)),
    readMany: (refs) => Promise.resolve(refs.map((r) => readOne((r as { item: string }).item))),
    writeMany: (sets) =>
      Promise.resolve({
        outcomes: writeMany ? writeMany(sets) : sets.map((s) => {
          const sku = (s.ref as { item: string }).item;
          if (shelf.get(sku) !== s.from) return { kind: "stale", error: "stale" } as const;
          shelf.set(sku, s.to);
          return { kind: "written", quantityAfter: s.to } as const;
        }),
      }),
    write(read, to) {
      const sku = (read.ref as { item: string }).item;
      if (shelf.get(sku) !== read.quantity) return Promise.resolve({ kind: "stale" });
      shelf.set(sku, to);
      return Promise.resolve({ kind: "written", quantityAfter: to });
    },
  };
}

/** POS stock: `pos` maps "store|producto|sku" (or "store||sku") to a quantity. */
function fakeStock(pos: Map<string, number>, producto: (sku: string) => string | null = () => null) {
  return {
    read: ({ tiendaId, productoId, sku }: { tiendaId: string; productoId: string | null; sku: string }) => {
      const q = pos.get(`${tiendaId}|${productoId ?? ""}|${sku}`);
      return Promise.resolve(
        q === undefined ? { found: false, reason: "none" } : { found: true, quantity: q, origin: "redis" },
      );
    },
    productoId: (_t: string, sku: string) => Promise.resolve(producto(sku)),
  } as unknown as PosStockReader;
}

integration(
  "a job taken over while its first owner still reads the catalog is planned from the new owner's reads alone",
  async () => {
    const l = await ledger();
    const skus = ["A1", "A2", "A3", "B1", "B2", "B3"];
    const shelf = new Map(skus.map((s) => [s, 5]));
    const pos = new Map(skus.map((s) => [`S1||${s}`, 5]));
    const gates: (() => void)[] = [];
    let calls = 0;
    const catalog: PosCatalogSource = {
      async *pages(): AsyncIterable<PosCatalogRow[]> {
        const gate = new Promise<void>((r) => gates[calls] = r);
        calls++;
        const row = (sku: string) => ({ tiendaId: "S1", sku, productoId: null, quantity: 5 });
        yield ["A1", "A2", "A3"].map(row);
        await gate; // a slow POS / a bulk operation still running: no heartbeat meanwhile
        yield ["B1", "B2", "B3"].map(row);
      },
    };
    const deps = { sql: l.sql, stock: fakeStock(pos), channels: [fakeShopify(shelf)], metrics, catalog };
    const a = new Resyncer({ ...deps, owner: "A", liveIdle: () => Promise.resolve(), staleJobMs: 600_000 });
    let b: Resyncer | undefined;
    try {
      const started = await a.start({ all: true, dry_run: true, channels: ["shopify"] });
      assert.ok("id" in started);
      const id = started.id;
      const rows = async (sku: string) =>
        (await l.sql`select 1 from resync_source where job_id = ${id} and sku like ${sku + "%"}`).length;
      await waitFor(async () => calls === 1 && await rows("A") === 3, "A read its first page");
      await new Promise((r) => setTimeout(r, 1_200)); // A's heartbeat is now older than B's 1 s
      b = new Resyncer({ ...deps, owner: "B", liveIdle: () => Promise.resolve(), staleJobMs: 1_000 });
      await waitFor(async () => calls === 2 && await rows("A") === 3, "B took over and re-read page 1");
      gates[0](); // A goes on: its next page is fenced, and it learns it lost the job
      await new Promise((r) => setTimeout(r, 300));
      gates[1]();
      const job = await b.wait(id, 20_000);
      const lines = job.report as { sku: string }[];
      assert.deepEqual(
        {
          state: job.state,
          total: job.total,
          unresolved: (job.unresolved as { sku: string; reason: string }[]).map((u) =>
            `${u.sku} ${u.reason}`
          ),
          checked: lines.map((l) => l.sku).sort(),
        },
        { state: "done", total: 6, unresolved: [], checked: skus },
        "planned from B's reads alone: no SKU counted twice or taken for ambiguous",
      );
    } finally {
      gates.forEach((g) => g?.());
      await a.close();
      await b?.close();
      await l.close();
    }
  },
);

integration(
  "a batched set that landed unheard (uncertain) leaves the audit row the replay guard looks for",
  async () => {
    const l = await ledger();
    const shelf = new Map([["X", 9]]);
    const pos = new Map([["S1||X", 5]]);
    const catalog: PosCatalogSource = {
      async *pages() {
        yield [{ tiendaId: "S1", sku: "X", productoId: null, quantity: 5 }];
      },
    };
    // Shopify applied the call; the answer was lost on every send (timeouts): uncertain.
    const chan = fakeShopify(shelf, (sets) =>
      sets.map((s) => {
        shelf.set((s.ref as { item: string }).item, s.to);
        return { kind: "error", reason: "timeout", error: "no answer", uncertain: true };
      }));
    const r = new Resyncer({
      sql: l.sql,
      stock: fakeStock(pos),
      channels: [chan],
      metrics,
      catalog,
      owner: "A",
      liveIdle: () => Promise.resolve(),
    });
    try {
      const started = await r.start({ all: true, dry_run: false, channels: ["shopify"] });
      assert.ok("id" in started);
      const job = await r.wait(started.id, 20_000);
      assert.equal(shelf.get("X"), 5, "the write landed");
      const audit = await l
        .sql`select event_id, delta, status from stock_change where event_id like 'resync:%'`;
      assert.equal(audit.length, 1, "the ledger records the resync write that may have landed");
      assert.equal((job.report as { target: number }[])[0].target, 5);
    } finally {
      await r.close();
      await l.close();
    }
  },
);

integration(
  "a SKU under two products at one store is reported as unknown stock and never written",
  async () => {
    const l = await ledger();
    const shelf = new Map([["X", 5]]);
    // P1 has 3, P2 has 4: live sales of either take from the one listing, which should show 7.
    const pos = new Map([["S1|P1|X", 3], ["S1|P2|X", 4]]);
    const catalog: PosCatalogSource = {
      async *pages() {
        yield [
          { tiendaId: "S1", sku: "X", productoId: "P1", quantity: 3 },
          { tiendaId: "S1", sku: "X", productoId: "P2", quantity: 4 },
        ];
      },
    };
    const r = new Resyncer({
      sql: l.sql,
      stock: fakeStock(pos, () => "P1"),
      channels: [fakeShopify(shelf)],
      metrics,
      catalog,
      owner: "A",
      liveIdle: () => Promise.resolve(),
    });
    try {
      const dry = await r.start({ all: true, dry_run: true, channels: ["shopify"] });
      assert.ok("id" in dry);
      const seen = await r.wait(dry.id, 20_000);
      const wet = await r.start({ all: true, dry_run: false, channels: ["shopify"] });
      assert.ok("id" in wet);
      const done = await r.wait(wet.id, 20_000);
      const unresolved = (j: Record<string, unknown>) =>
        (j.unresolved as { sku: string; reason: string; error: string }[]).map((u) =>
          `${u.sku} ${u.reason}: ${u.error}`
        );
      const expected = [
        "X stock_unknown: the POS lists X under two products at store S1: which one a listing shows is unknown",
      ];
      assert.deepEqual(
        {
          dry: unresolved(seen),
          dryLines: (seen.report as unknown[]).length,
          write: unresolved(done),
          shelf: shelf.get("X"),
        },
        { dry: expected, dryLines: 0, write: expected, shelf: 5 },
      );
    } finally {
      await r.close();
      await l.close();
    }
  },
);

integration("a shutdown while the POS catalog is read pauses the job (it is not failed)", async () => {
  const { PosCatalog } = await import("../src/pos/catalog.ts");
  const l = await ledger();
  const shelf = new Map([["X", 5], ["Y", 5]]);
  const stock = {
    readMany: (keys: unknown[]) =>
      Promise.resolve(keys.map(() => ({ found: true, quantity: 5, origin: "redis" }))),
  } as unknown as PosStockReader;
  const catalog = new PosCatalog({
    stock,
    products: {
      async *products() {
        yield [{ tiendaId: "S1", sku: "X", productoId: null }];
        await new Promise((r) => setTimeout(r, 500)); // the next page's query
        yield [{ tiendaId: "S1", sku: "Y", productoId: null }];
      },
    },
  });
  const r = new Resyncer({
    sql: l.sql,
    stock: fakeStock(new Map()),
    channels: [fakeShopify(shelf)],
    metrics,
    catalog,
    owner: "A",
    liveIdle: () => Promise.resolve(),
  });
  try {
    const started = await r.start({ all: true, dry_run: true, channels: ["shopify"] });
    assert.ok("id" in started);
    await waitFor(
      async () => (await l.sql`select 1 from resync_source where job_id = ${started.id}`).length === 1,
      "first page stored",
    );
    await r.close(); // SIGTERM (a rolling deploy) while the catalog is read
    const [job] = await l.sql`select state, error from resync_job where id = ${started.id}`;
    assert.deepEqual({ ...job }, { state: "running", error: null });
  } finally {
    await r.close();
    await l.close();
  }
});

integration(
  "SHOPIFY_LOCATION_ID alone on a fresh ledger: all says which stores to map instead of comparing nothing",
  async () => {
    const l = await ledger();
    const shelf = new Map([["X", 9]]);
    const catalog: PosCatalogSource = {
      async *pages(stores) {
        if (stores.length) yield [{ tiendaId: "S1", sku: "X", productoId: null, quantity: 5 }];
      },
    };
    const chan = { ...fakeShopify(shelf), mappedStores: () => [], showsUnmapped: true, shows: () => true };
    const r = new Resyncer({
      sql: l.sql,
      stock: fakeStock(new Map([["S1||X", 5]])),
      channels: [chan],
      metrics,
      catalog,
      owner: "A",
      liveIdle: () => Promise.resolve(),
    });
    try {
      const started = await r.start({ all: true, dry_run: true, channels: ["shopify"] });
      assert.ok("id" in started);
      const job = await r.wait(started.id, 20_000);
      assert.deepEqual((job.unresolved as { reason: string }[]).map((u) => u.reason), ["no_mapped_stores"]);
    } finally {
      await r.close();
      await l.close();
    }
  },
);
