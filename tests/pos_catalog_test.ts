/**
 * The POS catalog (issue #13): every product at the requested stores with its stock, read in pages against the
 * real Postgres and Redis — the products from a `producto` table through POS_CATALOG_QUERY (keyset pages),
 * each page's stock in bulk (one MGET, one stock query) with PosStockReader's semantics: the Redis key wins,
 * then the stock query; a query that does not fit the schema makes the stock unknown (reported, not dropped).
 * In sandbox mode the sandbox catalog is the POS catalog and its stock keys are seeded for every store.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import {
  ConfigError,
  DEFAULT_POS_CATALOG_QUERY,
  DEFAULT_POS_STOCK_QUERY,
  loadConfig,
} from "../src/config.ts";
import { PosCatalog, PosCatalogError, PosCatalogQuery, type PosCatalogRow } from "../src/pos/catalog.ts";
import { PosStockReader, type StockRedis, StockSourceUnavailableError } from "../src/pos/stock.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { seedPosStock } from "../src/sandbox/pos/pos.ts";
import { closeRedis, openRedis } from "../src/service/connections.ts";
import { PosSource, sandboxPos } from "../src/service/pos_source.ts";
import {
  DATABASE_URL,
  integration,
  REDIS_URL,
  startHarness,
  testConfig,
  uniqueName,
  waitFor,
} from "./helpers.ts";

type Redis = ReturnType<typeof createClient>;

const STORES = ["aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"];
/** A store the catalog has products at but the tests never ask for. */
const OTHER_STORE = "cccccccc-0000-4000-8000-000000000003";

/** One product row of the test POS's `producto` table. */
interface Producto {
  id: string;
  sku: string;
  tienda_id: string;
  stock_actual: number | null;
}

/** 2 stores × 7 SKUs (plus the other store's), stock = 10 × store number + SKU number. */
function products(): Producto[] {
  const rows: Producto[] = [];
  for (const [s, tienda_id] of [...STORES, OTHER_STORE].entries()) {
    for (let n = 1; n <= 7; n++) {
      rows.push({
        id: `${s + 1}0000000-0000-4000-8000-00000000000${n}`,
        sku: `SKU-${n}`,
        tienda_id,
        stock_actual: 10 * (s + 1) + n,
      });
    }
  }
  return rows;
}

/** A test POS: its own schema with a `producto` table (uuid ids, as the POS has them) and its own key prefix. */
interface TestPos {
  schema: string;
  prefix: string;
  keyTemplate: string;
  sql: postgres.Sql;
  redis: Redis;
  /** The stock queries and Redis round trips the reader made, in order. */
  calls: string[];
  /** The reader's Redis, counting round trips. */
  stockRedis: StockRedis;
  /** The reader's Postgres, counting stock and catalog queries. */
  countedSql: postgres.Sql;
  key(row: Producto): string;
  close(): Promise<void>;
}

async function openPos(rows: Producto[] = products()): Promise<TestPos> {
  const schema = uniqueName("pos_catalog");
  const prefix = uniqueName("poscat");
  const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {}, connection: { search_path: schema } });
  await sql.unsafe(`create schema ${schema}`);
  await sql.unsafe(
    `create table ${schema}.producto (id uuid primary key, sku text, tienda_id uuid, stock_actual integer)`,
  );
  for (const r of rows) {
    await sql`insert into producto values (${r.id}, ${r.sku}, ${r.tienda_id}, ${r.stock_actual})`;
  }
  const redis: Redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const calls: string[] = [];
  const stockRedis: StockRedis = {
    get isReady() {
      return redis.isReady;
    },
    get: (key) => {
      calls.push("redis GET");
      return redis.get(key);
    },
    mGet: (keys) => {
      calls.push(`redis MGET ${keys.length}`);
      return redis.mGet(keys);
    },
  };
  const countedSql = new Proxy(sql, {
    get(target, property, receiver) {
      if (property !== "unsafe") return Reflect.get(target, property, receiver);
      return (query: string, params: unknown[]) => {
        calls.push(
          /select c\.tienda_id/.test(query)
            ? "catalog page"
            : /marketplace_sync_product/.test(query)
            ? "stock batch"
            : "stock one",
        );
        return target.unsafe(query, params as never);
      };
    },
  });
  const keyTemplate = `${prefix}:stock:{tienda_id}:{producto_id}`;
  return {
    schema,
    prefix,
    keyTemplate,
    sql,
    redis,
    calls,
    stockRedis,
    countedSql,
    key: (row) => `${prefix}:stock:${row.tienda_id}:${row.id}`,
    async close() {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(keys);
      await redis.close();
      await sql.unsafe(`drop schema if exists ${schema} cascade`);
      await sql.end();
    },
  };
}

/** A catalog over the test POS: the default queries unless given. */
function catalogOf(
  pos: TestPos,
  options: { stockQuery?: string; catalogQuery?: string; pageSize?: number } = {},
) {
  const stock = new PosStockReader({
    redis: pos.stockRedis,
    sql: pos.countedSql,
    keyTemplate: pos.keyTemplate,
    query: options.stockQuery ?? DEFAULT_POS_STOCK_QUERY,
  });
  return new PosCatalog({
    products: new PosCatalogQuery(pos.countedSql, options.catalogQuery ?? DEFAULT_POS_CATALOG_QUERY),
    stock,
    pageSize: options.pageSize,
  });
}

async function collect(catalog: PosCatalog, stores: string[]): Promise<PosCatalogRow[][]> {
  const pages: PosCatalogRow[][] = [];
  for await (const page of catalog.pages(stores)) pages.push(page);
  return pages;
}

/** What a row says, compactly: `SKU-1@a 11 redis`, `SKU-2@b unknown: …`. */
function shown(row: PosCatalogRow): string {
  const at = `${row.sku}@${row.tiendaId[0]}`;
  return "quantity" in row ? `${at} ${row.quantity} ${row.origin}` : `${at} unknown: ${row.unknown.error}`;
}

integration(
  "POS catalog: pages across the catalog with exact quantities, one MGET and one stock query a page",
  async () => {
    const pos = await openPos();
    try {
      const rows = products();
      // Some keys in Redis (fresher than the table), the rest from the table.
      for (const r of rows.filter((_, i) => i % 3 === 0)) {
        await pos.redis.set(pos.key(r), String(100 + r.stock_actual!));
      }
      const pages = await collect(catalogOf(pos, { pageSize: 4 }), STORES);
      // 14 products at the two stores: pages of 4, 4, 4, 2; the other store is never listed.
      assert.deepEqual(pages.map((p) => p.length), [4, 4, 4, 2]);
      const expected = rows.filter((r) => STORES.includes(r.tienda_id)).map((r) => {
        const keyed = rows.indexOf(r) % 3 === 0;
        const quantity = keyed ? 100 + r.stock_actual! : r.stock_actual;
        return `${r.sku}@${r.tienda_id[0]} ${quantity} ${keyed ? "redis" : "postgres"}`;
      });
      assert.deepEqual(pages.flat().map(shown), expected);
      assert.deepEqual(pages.flat()[0], {
        tiendaId: STORES[0],
        sku: "SKU-1",
        productoId: rows[0].id,
        quantity: 111,
        origin: "redis",
      });
      // Per page: the catalog query, one MGET, one stock query for the products Redis did not answer
      // (the last page has one such product: the one-product query).
      assert.deepEqual(pos.calls, [
        ...["catalog page", "redis MGET 4", "stock batch"],
        ...["catalog page", "redis MGET 4", "stock batch"],
        ...["catalog page", "redis MGET 4", "stock batch"],
        ...["catalog page", "redis MGET 2", "stock one"],
      ]);
    } finally {
      await pos.close();
    }
  },
);

integration("POS catalog: the Redis key wins over the stock query", async () => {
  const pos = await openPos();
  try {
    const [first] = products();
    await pos.redis.set(pos.key(first), "3");
    const [page] = await collect(catalogOf(pos), [STORES[0]]);
    assert.equal(shown(page[0]), `SKU-1@a 3 redis`, "the table says 11; the key says 3");
    assert.equal(shown(page[1]), `SKU-2@a 12 postgres`);
  } finally {
    await pos.close();
  }
});

integration(
  "POS catalog: a product whose stock is unknown is yielded with the reason, not dropped",
  async () => {
    const rows = products();
    rows[1].stock_actual = null; // listed by the catalog, but no stock anywhere
    const pos = await openPos(rows);
    try {
      await pos.redis.set(pos.key(rows[2]), "not a number");
      const [page] = await collect(catalogOf(pos), [STORES[0]]);
      assert.equal(page.length, 7);
      assert.deepEqual(page[1], {
        tiendaId: STORES[0],
        sku: "SKU-2",
        productoId: rows[1].id,
        unknown: {
          reason: "stock_unknown",
          error: `no stock for SKU SKU-2 at store ${STORES[0]}: Redis key ${pos.key(rows[1])} is missing ` +
            "and POS_STOCK_QUERY returned no row",
        },
      });
      // A key that is not a number falls back to the table, as one product's read does.
      assert.equal(shown(page[2]), "SKU-3@a 13 postgres");

      // A stock query that does not fit the schema (SQLSTATE class 42): every product Redis did not answer is
      // unknown with Postgres's words; the keyed one still has its stock.
      await pos.redis.set(pos.key(rows[0]), "5");
      const misfit = catalogOf(pos, { stockQuery: "select stock_actual from no_such_table where sku = $3" });
      const [misfitPage] = await collect(misfit, [STORES[0]]);
      assert.equal(shown(misfitPage[0]), "SKU-1@a 5 redis");
      for (const row of misfitPage.slice(1)) {
        assert.ok("unknown" in row, shown(row));
        assert.equal(row.unknown.reason, "stock_unknown");
        assert.match(row.unknown.error, /^POS_STOCK_QUERY failed: relation "no_such_table" does not exist$/);
      }
    } finally {
      await pos.close();
    }
  },
);

integration(
  "POS catalog: a stock query that only fits one product at a time is asked per product",
  async () => {
    const pos = await openPos();
    try {
      // Untyped parameters compared with uuid columns: Postgres types them uuid alone, but in the batched
      // form they are text columns (uuid = text does not exist, SQLSTATE 42883).
      const stockQuery = "select stock_actual from producto where tienda_id = $1 and id = $2";
      const pages = await collect(catalogOf(pos, { stockQuery, pageSize: 5 }), [STORES[1]]);
      assert.deepEqual(
        pages.flat().map(shown),
        [1, 2, 3, 4, 5, 6, 7].map((n) => `SKU-${n}@b ${20 + n} postgres`),
      );
      // The batch was tried once; after the first product proved the query fits alone, no batch again.
      assert.equal(pos.calls.filter((c) => c === "stock batch").length, 1);
    } finally {
      await pos.close();
    }
  },
);

integration(
  "POS catalog: Redis down and a stock query that does not fit means 'unreadable now', not unknown",
  async () => {
    const pos = await openPos();
    try {
      const stock = new PosStockReader({
        redis: { isReady: false, get: () => Promise.reject(new Error("not connected")) },
        sql: pos.sql,
        keyTemplate: pos.keyTemplate,
        query: "select stock_actual from no_such_table where sku = $3",
      });
      const catalog = new PosCatalog({
        products: new PosCatalogQuery(pos.sql, DEFAULT_POS_CATALOG_QUERY),
        stock,
      });
      await assert.rejects(collect(catalog, STORES), StockSourceUnavailableError);
    } finally {
      await pos.close();
    }
  },
);

integration(
  "POS catalog: a POS_CATALOG_QUERY that does not fit the POS database is an error naming it",
  async () => {
    const pos = await openPos();
    try {
      const catalog = catalogOf(pos, {
        catalogQuery: "select tienda_id, sku, id from productos where $1 is not null",
      });
      await assert.rejects(collect(catalog, STORES), (error: Error) => {
        assert.ok(error instanceof PosCatalogError);
        assert.match(error.message, /^POS_CATALOG_QUERY failed: relation "productos" does not exist/);
        return true;
      });
    } finally {
      await pos.close();
    }
  },
);

Deno.test("POS_CATALOG_QUERY: a bad value is a start-up error naming the variable", async () => {
  const problems = (value: string) => {
    try {
      loadConfig({ POS_CATALOG_QUERY: value });
      return "";
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.message;
    }
  };
  assert.equal(problems(DEFAULT_POS_CATALOG_QUERY), "");
  assert.equal(loadConfig({}).POS_CATALOG_QUERY, DEFAULT_POS_CATALOG_QUERY);
  for (const bad of ["delete from producto", "select tienda_id, sku, id from producto", "select $1, $2"]) {
    assert.match(
      problems(bad),
      /POS_CATALOG_QUERY: must be a SELECT of \(tienda_id, sku, producto_id\)/,
      bad,
    );
  }
  // The launcher stops before anything starts, with the same message.
  const launched = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-run=deno", "scripts/launch.ts", "--print-flags"],
    cwd: new URL("../", import.meta.url).pathname,
    env: { POS_CATALOG_QUERY: "delete from producto" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(launched.code, 2);
  assert.match(new TextDecoder().decode(launched.stderr), /POS_CATALOG_QUERY: must be a SELECT/);
});

Deno.test("sandbox POS: only in sandbox mode with no POS configured", () => {
  assert.equal(sandboxPos(testConfig()), true);
  assert.equal(sandboxPos(testConfig({ POS_REDIS_URL: REDIS_URL })), false);
  assert.equal(sandboxPos(testConfig({ POS_DATABASE_URL: DATABASE_URL })), false);
  assert.equal(sandboxPos(testConfig({ SHOPIFY_URL: "http://127.0.0.1:1", SHOPIFY_TOKEN: "t" })), false);
});

integration(
  "sandbox POS: every catalog product at every store gets its stock key; keys already there are kept",
  async () => {
    const catalog = defaultCatalog();
    const prefix = uniqueName("poscat_sandbox");
    const keyTemplate = `${prefix}:stock:{tienda_id}:{producto_id}`;
    const redis = openRedis(REDIS_URL);
    const [first] = catalog.products;
    const lowered = `${prefix}:stock:${catalog.stores[3].tienda_id}:${first.producto_id}`;
    try {
      await waitFor(() => redis.isReady, "Redis");
      // A sale already lowered one key: seeding keeps it.
      await redis.set(lowered, "-2");
      const source = new PosSource(testConfig({ POS_STOCK_KEY: keyTemplate }), redis);
      try {
        const stores = catalog.stores.map((s) => s.tienda_id);
        const rows = (await collect(source.catalog(), stores)).flat();
        assert.equal(rows.length, catalog.stores.length * catalog.products.length);
        for (const store of catalog.stores) {
          for (const p of catalog.products) {
            const key = `${prefix}:stock:${store.tienda_id}:${p.producto_id}`;
            const want = key === lowered ? -2 : p.stock[store.tienda_id] ?? 0;
            assert.equal(Number(await redis.get(key)), want, key);
            const row = rows.find((r) => r.tiendaId === store.tienda_id && r.productoId === p.producto_id);
            assert.ok(row && "quantity" in row, `${p.sku} at ${store.name}: ${row && shown(row)}`);
            assert.deepEqual([row.quantity, row.origin], [want, "redis"]);
          }
        }
        // Stock reads see the seeded keys too (MercadoLibre's mirror mode, resync by SKU).
        const last = catalog.products.at(-1)!;
        assert.deepEqual(
          await source.reader().read({
            tiendaId: catalog.stores[4].tienda_id,
            productoId: last.producto_id,
            sku: "x",
          }),
          {
            found: true,
            quantity: last.stock[catalog.stores[4].tienda_id] ?? 0,
            origin: "redis",
            key: `${prefix}:stock:${catalog.stores[4].tienda_id}:${last.producto_id}`,
          },
        );
        // Seeding again (another start) changes nothing.
        assert.equal(await seedPosStock(redis, keyTemplate, catalog), 0);
      } finally {
        await source.close();
      }
    } finally {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(keys);
      await closeRedis(redis);
    }
  },
);

integration(
  "sandbox POS: a service started in sandbox mode seeds the stock keys of every store",
  async () => {
    const catalog = defaultCatalog();
    const prefix = uniqueName("poscat_service");
    const h = await startHarness({ POS_STOCK_KEY: `${prefix}:stock:{tienda_id}:{producto_id}` });
    const redis: Redis = createClient({ url: REDIS_URL });
    await redis.connect();
    try {
      const expected = catalog.stores.length * catalog.products.length;
      const keys = await waitFor(async () => {
        const keys = await redis.keys(`${prefix}:stock:*`);
        return keys.length === expected ? keys : undefined;
      }, `${expected} stock keys`);
      const stores = new Set(keys.map((k) => k.split(":")[2]));
      assert.deepEqual([...stores].sort(), catalog.stores.map((s) => s.tienda_id).sort());
    } finally {
      await h.close();
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(keys);
      await redis.close();
    }
  },
);

integration("live POS: reading the catalog never writes a stock key", async () => {
  const pos = await openPos();
  try {
    await collect(catalogOf(pos), STORES);
    assert.deepEqual(await pos.redis.keys(`${pos.prefix}:*`), []);
  } finally {
    await pos.close();
  }
});
