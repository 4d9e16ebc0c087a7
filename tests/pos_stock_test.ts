/**
 * The POS stock reader against the real Postgres and Redis (issue #12 item 8): with Redis up and the stock
 * key missing, the catalog query is the only source, and a *passing* database error (the reader's backend
 * terminated, a timeout) means "unavailable now" — the MeLi change waits and converges — while only a query
 * that does not fit the schema (SQLSTATE class 42) means "stock unknown" (the change fails for good).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import { PosStockReader, StockSourceUnavailableError } from "../src/pos/stock.ts";
import { DATABASE_URL, integration, REDIS_URL, uniqueName } from "./helpers.ts";

/** A reader whose Redis is up but holds no key for the product, over this test's own Postgres pool. */
async function readerWithoutKey(query: string, statementTimeoutMs = 5_000) {
  const applicationName = uniqueName("pos-reader");
  const sql = postgres(DATABASE_URL, {
    max: 1,
    onnotice: () => {},
    backoff: () => 0.05,
    // As src/service/pos_source.ts configures the POS reader.
    connection: { application_name: applicationName, statement_timeout: statementTimeoutMs },
  });
  const redis = createClient({ url: REDIS_URL });
  redis.on("error", () => {});
  await redis.connect();
  const reader = new PosStockReader({
    redis,
    sql,
    keyTemplate: `${applicationName}:stock:{tienda_id}:{producto_id}`, // never set
    query,
  });
  return {
    reader,
    applicationName,
    async close() {
      await sql.end({ timeout: 1 });
      await redis.quit().catch(() => {});
    },
  };
}

const key = { tiendaId: "t1", productoId: "p1", sku: "REMERA-001" };

integration(
  "POS stock: the reader's backend dropped mid-query (Redis up, key missing) means 'wait', then converges",
  async () => {
    // The catalog answers 7, slowly enough for the backend to be terminated while the query runs.
    const { reader, applicationName, close } = await readerWithoutKey(
      "select 7 as stock_actual from pg_sleep(0.5) where $1::text is not null",
    );
    const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      const reading = reader.read(key);
      reading.catch(() => {});
      // Only this reader's backend, once its query is running.
      let killed = 0;
      for (let i = 0; i < 50 && killed === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
        const rows = await admin`
        select pg_terminate_backend(pid) as done from pg_stat_activity
        where application_name = ${applicationName} and state = 'active' and query like '%pg_sleep%'`;
        killed = rows.filter((r) => r.done).length;
      }
      assert.equal(killed, 1, "the reader's backend was terminated mid-query");
      await assert.rejects(
        reading,
        StockSourceUnavailableError,
        "a dropped connection is not 'stock unknown'",
      );
      // The next attempt (the dispatcher's retry) reads the stock.
      assert.deepEqual(await reader.read(key), { found: true, quantity: 7, origin: "postgres" });
    } finally {
      await admin.end();
      await close();
    }
  },
);

integration(
  "POS stock: a statement timeout (Redis up, key missing) means 'wait', not 'stock unknown'",
  async () => {
    const { reader, close } = await readerWithoutKey(
      "select 7 as stock_actual from pg_sleep(0.5) where $1::text is not null",
      50, // canceled after 50 ms: SQLSTATE 57014
    );
    try {
      await assert.rejects(reader.read(key), StockSourceUnavailableError);
    } finally {
      await close();
    }
  },
);

integration(
  "POS stock: a query that does not fit the schema (Redis up, key missing) is 'stock unknown'",
  async () => {
    const { reader, close } = await readerWithoutKey(
      `select stock_actual from ${uniqueName("no_such_table")} where tienda_id::text = $1::text`,
    );
    try {
      const reading = await reader.read(key);
      assert.equal(reading.found, false);
      assert.match((reading as { reason: string }).reason, /POS_STOCK_QUERY failed: .*does not exist/);
    } finally {
      await close();
    }
  },
);
