/**
 * The bounded chaos suite (`deno task chaos --bounded --parallel`) as a test:
 * every scenario runs the service as real processes against both sandboxes,
 * takes a dependency away through its own loopback proxy (the shared servers
 * keep running), and must end with the invariant holding SKU by SKU. The full
 * suite, with real restarts of RabbitMQ, Postgres and Redis, is `deno task chaos`
 * (docs/RELIABILITY.md).
 */
import assert from "node:assert/strict";
import { plan, resultDetails, resultLine, runScenario, type ScenarioResult } from "../scripts/chaos/main.ts";
import { PosStockReader, StockSourceUnavailableError } from "../src/pos/stock.ts";
import type { Sql } from "postgres";

/** A POS reader over a Redis that is down and a catalog query that does not fit the schema. */
function readerWithRedisDown(sqlError: string): PosStockReader {
  const sql = {
    unsafe: () => Promise.reject(new Error(sqlError)),
  } as unknown as Sql;
  return new PosStockReader({
    redis: { isReady: false, get: () => Promise.reject(new Error("not connected")) },
    sql,
    keyTemplate: "stock:{tienda_id}:{producto_id}",
    query: "select stock_actual from producto where tienda_id::text = $1::text",
  });
}

Deno.test("POS stock: Redis down and an unusable fallback query means 'wait', not 'stock unknown'", async () => {
  // Found by redis_restart (pos_proxy): these MeLi changes used to fail stock_unknown and reach the DLQ.
  const reader = readerWithRedisDown('relation "producto" does not exist');
  await assert.rejects(
    reader.read({ tiendaId: "t1", productoId: "p1", sku: "REMERA-001" }),
    StockSourceUnavailableError,
  );
});

Deno.test("POS stock: Redis up without the key and a query that does not fit is still 'stock unknown'", async () => {
  // As postgres.js rejects it: the message and the SQLSTATE (42P01 undefined_table).
  const misfit = Object.assign(new Error('relation "producto" does not exist'), { code: "42P01" });
  const sql = { unsafe: () => Promise.reject(misfit) } as unknown as Sql;
  const reader = new PosStockReader({
    redis: { isReady: true, get: () => Promise.resolve(null) },
    sql,
    keyTemplate: "stock:{tienda_id}:{producto_id}",
    query: "select stock_actual from producto where tienda_id::text = $1::text",
  });
  const reading = await reader.read({ tiendaId: "t1", productoId: "p1", sku: "REMERA-001" });
  assert.equal(reading.found, false);
});

Deno.test({
  name: "chaos (bounded): every scenario ends with exact quantities, each change once, DLQ = the bad events",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const logRoot = await Deno.makeTempDir({ prefix: "marketplace-sync-chaos-test-" });
    const opts = { bounded: true, sales: 60, seed: 11 };
    // The scenarios' outages are their own proxies, so they can run at the same time — in two waves:
    // fourteen service processes at once, beside the rest of the suite, outgrow a default Postgres's 100
    // connections and two cores (start-up timeouts, "too many clients"), which tests nothing of ours.
    const runs = plan(undefined, true);
    const results: ScenarioResult[] = [];
    const wave = Math.ceil(runs.length / 2);
    for (let i = 0; i < runs.length; i += wave) {
      results.push(
        ...await Promise.all(
          runs.slice(i, i + wave).map(([scenario, variant]) => runScenario(scenario, variant, opts, logRoot)),
        ),
      );
    }
    const failed = results.filter((r) => !r.ok);
    const report = results.map((r) => [resultLine(r), ...resultDetails(r)].join("\n")).join("\n");
    console.log(report);
    assert.equal(failed.length, 0, `chaos scenarios failed (logs kept in ${logRoot}):\n${report}`);
    await Deno.remove(logRoot, { recursive: true }).catch(() => {});
  },
});
