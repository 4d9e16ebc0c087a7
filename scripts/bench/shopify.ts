/**
 * Benchmark sections for the Shopify channel (run by `deno task bench`):
 *
 * - `shopify`: a burst of sales (default 20 000 over 500 SKUs × 5 stores)
 *   through the real broker, ledger, dispatcher and Shopify channel into the
 *   sandbox on the Standard budget (2 000 points, 100/s). Reports stock changes
 *   applied per second against the budget's ceiling (restore rate ÷ mutation
 *   cost × 250 changes per call), THROTTLED answers, API calls and
 *   event→applied latency, and checks every final quantity.
 * - `naive`: the original design's one-call-per-item consumer
 *   (scripts/naive_consumer.ts) on the same budget, for a bounded slice of the
 *   same burst, extrapolated to the whole burst.
 */
import { Buffer } from "node:buffer";
import postgres from "postgres";
import { loadConfig } from "../../src/config.ts";
import { startService } from "../../src/main.ts";
import { buildCatalog, type Catalog } from "../../src/sandbox/catalog.ts";
import { MUTATION_COST } from "../../src/sandbox/cost.ts";
import { startShopifySandbox } from "../../src/sandbox/shopify/sandbox.ts";
import {
  type BenchContext,
  benchServiceEnv,
  PLAN_BUCKETS,
  runResources,
  type Section,
  type SectionResult,
} from "./harness.ts";
import { startNaiveConsumer } from "../naive_consumer.ts";
import { publishSales, sampleSales } from "../publish_sample.ts";

const MAX_CHANGES_PER_CALL = 250;

const round = (n: number, digits = 0) => Number(n.toFixed(digits));
const log = (text: string) => console.error(`[bench] ${text}`);

/** The burst's sales over a generated catalog; the same for both sections. */
function burst(ctx: BenchContext): { catalog: Catalog; sales: ReturnType<typeof sampleSales> } {
  const o = ctx.options;
  const catalog = buildCatalog({
    skus: o.shopifySkus,
    stores: o.shopifyStores,
    seed: o.seed,
    maxQuantity: 100_000,
  });
  const sales = sampleSales({
    count: o.shopifySales,
    stores: o.shopifyStores,
    skus: o.shopifySkus,
    maxItems: 3,
    seed: o.seed,
    catalog,
  });
  return { catalog, sales };
}

function expectedAfter(catalog: Catalog, sales: ReturnType<typeof sampleSales>): Map<string, number> {
  const expected = new Map<string, number>();
  for (const p of catalog.products) {
    for (const s of catalog.stores) {
      expected.set(`${p.producto_id}|${s.tienda_id}`, p.stock[s.tienda_id] ?? 0);
    }
  }
  for (const sale of sales) {
    for (const item of sale.items) {
      const key = `${item.producto_id}|${sale.tienda_id}`;
      expected.set(key, expected.get(key)! - item.cantidad);
    }
  }
  return expected;
}

/** The service's batched, budgeted path on the sandbox's Standard budget. */
export const shopifyBurstSection: Section = {
  id: "shopify",
  title: "Shopify burst (service → sandbox, Standard budget)",
  async run(ctx: BenchContext): Promise<SectionResult> {
    const { catalog, sales } = burst(ctx);
    const sandbox = await shopifySandbox(ctx, catalog);
    ctx.defer("stop the Shopify sandbox", () => sandbox.close());
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
    const config = loadConfig({
      ...benchServiceEnv(id),
      CHANNELS: "shopify",
      SHOPIFY_URL: sandbox.url,
      SHOPIFY_TOKEN: sandbox.token,
      SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id]))),
      LOG_LEVEL: ctx.options.logLevel,
      SHOPIFY_BUCKET_MAX: String(PLAN_BUCKETS[ctx.options.plan].maximumAvailable),
      SHOPIFY_RESTORE_RATE: String(PLAN_BUCKETS[ctx.options.plan].restoreRate),
    });
    const { sql } = await runResources(ctx, config);

    const service = startService(config);
    ctx.defer("stop the service", () => service.close());
    await service.started;
    const cold = await runBurst(ctx, sql, sandbox, config, catalog, sales, "cold");
    // The same burst again: SKU resolutions are cached now, as in steady operation.
    const again = sampleSales({
      count: ctx.options.shopifySales,
      stores: ctx.options.shopifyStores,
      skus: ctx.options.shopifySkus,
      maxItems: 3,
      seed: ctx.options.seed + 1,
      catalog,
    });
    const warm = await runBurst(ctx, sql, sandbox, config, catalog, [...sales, ...again], "warm", again);
    // Normal trading: a steady trickle well within the budget, where latency is the figure.
    const trickle = sampleSales({
      count: 300,
      stores: ctx.options.shopifyStores,
      skus: ctx.options.shopifySkus,
      maxItems: 3,
      seed: ctx.options.seed + 2,
      catalog,
    });
    const all = [...sales, ...again, ...trickle];
    const steady = await runBurst(ctx, sql, sandbox, config, catalog, all, "trickle", trickle, 50);
    return {
      sales: sales.length,
      skus: catalog.products.length,
      stores: catalog.stores.length,
      ceiling_changes_per_s: ceiling(ctx),
      plan: ctx.options.plan,
      latency_ms: ctx.options.latencyMs,
      ...prefixed("cold_", cold),
      ...prefixed("warm_", warm),
      trickle_sales_per_s: 50,
      trickle_latency_p50_s: steady.latency_p50_s,
      trickle_latency_p95_s: steady.latency_p95_s,
      trickle_latency_p99_s: steady.latency_p99_s,
      trickle_throttled: steady.throttled,
      trickle_quantity_mismatches: steady.quantity_mismatches,
      ...await phaseMeans(service),
      throttled_after_warmup_5s: Number(cold.throttled_after_5s) + Number(warm.throttled_after_5s),
      quantity_mismatches: Number(cold.quantity_mismatches) + Number(warm.quantity_mismatches) +
        Number(steady.quantity_mismatches),
      api_calls_total: sandbox.stats().requests,
    };
  },
};

/** Mean time per dispatch step over both bursts, from the service's histogram. */
async function phaseMeans(service: ReturnType<typeof startService>): Promise<SectionResult> {
  const values = (await service.metrics.dispatchPhaseSeconds.get()).values;
  const out: SectionResult = {};
  for (const phase of ["claim", "send", "record"]) {
    const sum = values.find((v) => v.metricName?.endsWith("_sum") && v.labels.phase === phase)?.value ?? 0;
    const count = values.find((v) => v.metricName?.endsWith("_count") && v.labels.phase === phase)?.value ??
      0;
    out[`dispatch_${phase}_ms_mean`] = count ? round(sum / count * 1000, 1) : 0;
  }
  return out;
}

/** Stock changes per second the plan's budget allows: restore rate ÷ mutation cost × changes per call. */
function ceiling(ctx: BenchContext): number {
  return PLAN_BUCKETS[ctx.options.plan].restoreRate / MUTATION_COST * MAX_CHANGES_PER_CALL;
}

/** The Shopify sandbox of a run: the chosen plan's bucket and the chosen latency. */
function shopifySandbox(ctx: BenchContext, catalog: Catalog) {
  return startShopifySandbox({
    catalog,
    bucket: PLAN_BUCKETS[ctx.options.plan],
    faults: { latencyMs: ctx.options.latencyMs },
  });
}

function prefixed(prefix: string, result: SectionResult): SectionResult {
  return Object.fromEntries(Object.entries(result).map(([k, v]) => [prefix + k, v]));
}

/**
 * Publishes `burstSales` and waits until every stock change is applied.
 * `allSales` is everything published so far, for the expected quantities.
 */
async function runBurst(
  ctx: BenchContext,
  sql: postgres.Sql,
  sandbox: Awaited<ReturnType<typeof startShopifySandbox>>,
  config: ReturnType<typeof loadConfig>,
  catalog: Catalog,
  allSales: ReturnType<typeof sampleSales>,
  label: string,
  burstSales = allSales,
  perSecond?: number,
): Promise<SectionResult> {
  const totalChanges = burstSales.reduce((n, s) => n + new Set(s.items.map((i) => i.producto_sku)).size, 0);
  log(
    `shopify ${label}: publishing ${burstSales.length} sales (${totalChanges} stock changes) over ${catalog.products.length} SKUs`,
  );
  const before = sandbox.stats();
  const [{ max_batch: batchBefore }] = await sql<{ max_batch: number }[]>`
    select coalesce(max(id), 0)::int as max_batch from sync_batch`;
  const [{ max_change: changeBefore }] = await sql<{ max_change: number }[]>`
    select coalesce(max(id), 0)::int as max_change from stock_change`;
  // Throttle answers over time, to tell warm-up from steady state.
  const throttleTimes: number[] = [];
  let lastThrottled = before.throttled;
  const t0 = performance.now();
  const watcher = setInterval(() => {
    const t = sandbox.stats().throttled;
    for (let i = lastThrottled; i < t; i++) throttleTimes.push(performance.now() - t0);
    lastThrottled = t;
  }, 50);
  await publishSales(ctx.rabbit, config.EXCHANGE, config.ROUTING_KEY, burstSales, { perSecond });
  const published = performance.now();
  let firstApplied = 0;
  for (;;) {
    const [{ applied, other }] = await sql<{ applied: number; other: number }[]>`
      select count(*) filter (where status = 'applied')::int as applied,
             count(*) filter (where status <> 'applied')::int as other
        from stock_change where id > ${changeBefore}`;
    if (applied > 0 && !firstApplied) firstApplied = performance.now();
    if (applied + other === totalChanges && other === 0) break;
    if (performance.now() - t0 > 600_000) {
      throw new Error(`burst did not finish: ${applied}/${totalChanges} applied`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const done = performance.now();
  clearInterval(watcher);

  const expected = expectedAfter(catalog, allSales);
  let mismatches = 0;
  for (const [key, qty] of expected) {
    const [productoId, tiendaId] = key.split("|");
    if (sandbox.availableFor(productoId, tiendaId) !== qty) mismatches++;
  }
  const [lat] = await sql<{ p50: number; p95: number; p99: number }[]>`
    select percentile_cont(0.5) within group (order by extract(epoch from applied_at - created_at)) as p50,
           percentile_cont(0.95) within group (order by extract(epoch from applied_at - created_at)) as p95,
           percentile_cont(0.99) within group (order by extract(epoch from applied_at - created_at)) as p99
      from stock_change where status = 'applied' and id > ${changeBefore}`;
  const [calls] = await sql<{ batches: number; listing_changes: number }[]>`
    select count(*)::int as batches,
           coalesce(sum(jsonb_array_length(request->'variables'->'input'->'changes')), 0)::int as listing_changes
      from sync_batch where request is not null and id > ${batchBefore}`;
  const after = sandbox.stats();
  const seconds = (done - t0) / 1000;
  return {
    stock_changes: totalChanges,
    publish_s: round((published - t0) / 1000, 2),
    first_applied_s: round((firstApplied - t0) / 1000, 2),
    total_s: round(seconds, 2),
    stock_changes_applied_per_s: round(totalChanges / seconds),
    ratio_to_ceiling: round(totalChanges / seconds / ceiling(ctx), 2),
    listing_adjustments_sent: calls.listing_changes,
    adjust_calls: calls.batches,
    api_calls: after.requests - before.requests,
    sku_lookups: after.requests - before.requests - calls.batches,
    throttled: after.throttled - before.throttled,
    throttled_after_5s: throttleTimes.filter((t) => t > 5_000).length,
    latency_p50_s: round(lat.p50, 3),
    latency_p95_s: round(lat.p95, 3),
    latency_p99_s: round(lat.p99, 3),
    quantity_mismatches: mismatches,
  };
}

/** The one-call-per-item baseline on the same budget, for a bounded slice. */
export const naiveSection: Section = {
  id: "naive",
  title: "Naive baseline (one call per item, sleep on throttle) on the same budget",
  async run(ctx: BenchContext): Promise<SectionResult> {
    const { catalog, sales } = burst(ctx);
    const sandbox = await shopifySandbox(ctx, catalog);
    ctx.defer("stop the naive sandbox", () => sandbox.close());
    const queue = `marketplace-sync.naive_${crypto.randomUUID().slice(0, 8)}`;
    await ctx.rabbit.queueDeclare({ queue, durable: false, autoDelete: false });
    ctx.defer("delete the naive queue", () => ctx.rabbit.queueDelete({ queue }));
    const publisher = ctx.rabbit.createPublisher({ confirm: true });
    // Only a slice: at Shopify's budget the whole burst would take hours this way.
    const slice = sales.slice(0, Math.min(sales.length, 2_000));
    for (const sale of slice) {
      await publisher.send(
        { exchange: "", routingKey: queue, contentType: "application/json" },
        Buffer.from(JSON.stringify(sale)),
      );
    }
    await publisher.close();
    const locations = new Map(sandbox.locations.map((l) => [l.tiendaId, l.id]));
    const t0 = performance.now();
    const naive = startNaiveConsumer(ctx.rabbit, queue, {
      graphqlUrl: sandbox.graphqlUrl,
      token: sandbox.token,
      locationOf: (t) => locations.get(t),
    });
    const limitMs = ctx.options.naiveSeconds * 1000;
    while (performance.now() - t0 < limitMs) await new Promise((r) => setTimeout(r, 200));
    await naive.stop();
    const elapsed = (performance.now() - t0) / 1000;
    const s = naive.stats;
    // Steady state: after the bucket's initial 2 000 points are spent (first throttle).
    const steadyFrom = s.appliedAt.findIndex((t) => t - t0 > limitMs / 2);
    const steadyItems = steadyFrom >= 0 ? s.appliedAt.length - steadyFrom : 0;
    const steadyRate = steadyItems / (limitMs / 2 / 1000);
    const totalItems = sales.reduce((n, sale) => n + sale.items.length, 0);
    // The same burst through the service: cold (SKU lookups included) and warm.
    const coldCalls = Number(ctx.results.shopify?.cold_api_calls ?? 0);
    const warmCalls = Number(ctx.results.shopify?.warm_api_calls ?? 0);
    const naiveCallsFull = totalItems + catalog.products.length;
    return {
      ran_s: round(elapsed, 1),
      items_applied: s.items,
      api_calls: s.calls,
      throttled: s.throttled,
      slept_in_handler_s: round(s.sleptMs / 1000, 1),
      steady_items_per_s: round(steadyRate, 1),
      burst_items: totalItems,
      extrapolated_burst_s: steadyRate > 0 ? round(totalItems / steadyRate) : "n/a",
      extrapolated_calls: naiveCallsFull,
      service_calls_cold: coldCalls || "n/a",
      calls_ratio_naive_to_service_cold: coldCalls ? round(naiveCallsFull / coldCalls) : "n/a",
      service_calls_warm: warmCalls || "n/a",
      calls_ratio_naive_to_service_warm: warmCalls ? round(totalItems / warmCalls) : "n/a",
    };
  },
};
