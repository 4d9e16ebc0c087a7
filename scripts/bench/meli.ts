/**
 * Benchmark section for the MercadoLibre channel (run by `deno task bench`):
 *
 * - `meli`: the Shopify section's burst (same catalog generator, same sales;
 *   default 20 000 sales over 500 SKUs × 5 stores, `--meli-sales` /
 *   `--meli-skus` to shrink it) through the real broker, ledger, dispatcher and
 *   MeLi channel in mirror mode into the MeLi sandbox, with the service's
 *   budget at MELI_RATE_PER_SEC (default 5 req/s) and the sandbox's own limit
 *   at twice that, so any 429 means our budget failed.
 *
 * As the POS does, every sale's stock is first reserved in Redis (a per-run
 * POS_STOCK_KEY prefix); mirror mode PUTs that value, so the expected MeLi
 * quantity of every product is max(0, its Redis value at the MeLi store).
 *
 * The burst runs twice on one service: `cold` resolves every listing for the
 * first time (a search per SKU and multi-gets of 20, or one read of the whole
 * account when that is cheaper; cached afterwards), `warm` (new sales, same
 * SKUs) is the measured one. Per phase: PUTs against the listings touched, how
 * they spread per listing and over time, 429s, requests by operation, the
 * request rate achieved against the budget, and time to converge from the last
 * publish confirm until every MeLi change is settled and every MeLi quantity
 * equals the POS value (all quantities are checked).
 */
import postgres from "postgres";
import { createClient } from "redis";
import { type Config, loadConfig } from "../../src/config.ts";
import { startService } from "../../src/main.ts";
import { buildCatalog, type Catalog } from "../../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../../src/sandbox/mercadolibre/sandbox.ts";
import {
  type BenchContext,
  benchServiceEnv,
  deleteKeys,
  REDIS_URL,
  runResources,
  type Section,
  type SectionResult,
} from "./harness.ts";
import { publishSales, reservePosStock, type SampleSale, sampleSales } from "../publish_sample.ts";
import { meliAsRealApi } from "../support/service_env.ts";

/** A phase that makes no progress for this long fails the section. */
const STALL_MS = 120_000;
/** Hard cap per phase. */
const PHASE_LIMIT_MS = 30 * 60_000;

const round = (n: number, digits = 0) => Number.isFinite(n) ? Number(n.toFixed(digits)) : 0;
const log = (text: string) => console.error(`[bench] ${text}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Redis = ReturnType<typeof createClient>;

/** What a phase needs. */
interface Phase {
  ctx: BenchContext;
  sql: postgres.Sql;
  redis: Redis;
  sandbox: MeliSandbox;
  config: Config;
  catalog: Catalog;
  /** The store MeLi mirrors. */
  store: string;
  rate: number;
}

/** Listing key as the sandbox counts PUTs: `itemId` or `itemId/variationId`. */
function listingKeyOf(sandbox: MeliSandbox, productoId: string): string {
  const l = sandbox.listingFor(productoId);
  if (!l) throw new Error(`the MeLi sandbox has no listing for product ${productoId}`);
  return l.variationId === null ? l.itemId : `${l.itemId}/${l.variationId}`;
}

/** The POS key of one product at one store (the template the service reads). */
function posKey(template: string, tiendaId: string, productoId: string, sku: string): string {
  return template.replaceAll("{tienda_id}", tiendaId).replaceAll("{producto_id}", productoId)
    .replaceAll("{sku}", sku);
}

/** What every catalog product should show on MeLi: max(0, POS stock at the MeLi store). */
async function expectedQuantities(p: Phase): Promise<Map<string, number>> {
  const expected = new Map<string, number>();
  for (const product of p.catalog.products) {
    const raw = await p.redis.get(posKey(p.config.POS_STOCK_KEY, p.store, product.producto_id, product.sku));
    // A key the POS never touched: the sandbox still holds the catalog's stock.
    const pos = raw === null ? product.stock[p.store] ?? 0 : Number(raw);
    expected.set(product.producto_id, Math.max(0, pos));
  }
  return expected;
}

function mismatchesOf(sandbox: MeliSandbox, expected: Map<string, number>): number {
  let n = 0;
  for (const [productoId, qty] of expected) if (sandbox.quantityOf(productoId) !== qty) n++;
  return n;
}

/** Which API operation a request was (from the sandbox's request log). */
function operationOf(method: string, path: string, query: string): string {
  if (path === "/oauth/token") return "oauth_token";
  if (method === "PUT") return path.includes("/variations/") ? "put_variation" : "put_item";
  if (path.endsWith("/items/search")) {
    return new URLSearchParams(query).get("search_type") === "scan" ? "scan_items" : "search_items";
  }
  if (path === "/items") return "get_items";
  if (path.startsWith("/users/")) return "get_user";
  if (path.startsWith("/items")) return "get_item";
  return "other";
}

/**
 * Reserves the burst's stock in the POS keys, publishes it, and waits until
 * MeLi converged: every MeLi change settled and every quantity equal to the POS.
 */
async function runPhase(p: Phase, sales: SampleSale[], label: string): Promise<SectionResult> {
  const { sql, sandbox } = p;
  const atStore = sales.filter((s) => s.tienda_id === p.store);
  // Custody merges repeated SKUs of one sale: one change per (sale, SKU).
  const meliChanges = atStore.reduce((n, s) => n + new Set(s.items.map((i) => i.producto_sku)).size, 0);
  const touched = new Set(atStore.flatMap((s) => s.items.map((i) => listingKeyOf(sandbox, i.producto_id))));

  log(`meli ${label}: reserving POS stock for ${sales.length} sales`);
  await reservePosStock(p.redis, p.config.POS_STOCK_KEY, p.catalog, sales);
  const expected = await expectedQuantities(p);

  const before = sandbox.stats();
  const [{ change_before, batch_before }] = await sql<{ change_before: number; batch_before: number }[]>`
    select (select coalesce(max(id), 0)::int from stock_change) as change_before,
           (select coalesce(max(id), 0)::int from sync_batch) as batch_before`;
  log(
    `meli ${label}: publishing ${sales.length} sales (${atStore.length} at the MeLi store: ` +
      `${meliChanges} MeLi changes over ${touched.size} listings), budget ${p.rate} req/s`,
  );
  const t0Wall = Date.now();
  const t0 = performance.now();
  await publishSales(p.ctx.rabbit, p.config.EXCHANGE, p.config.ROUTING_KEY, sales);
  const published = performance.now();

  let settledAt = 0;
  let last = -1;
  let lastChange = performance.now();
  let lastReport = performance.now();
  let mismatches = 0;
  for (;;) {
    const [row] = await sql<{ total: number; settled: number }[]>`
      select count(*)::int as total,
             count(*) filter (where status in ('applied', 'failed'))::int as settled
        from stock_change where channel = 'mercadolibre' and id > ${change_before}`;
    const settled = row.total === meliChanges && row.settled === row.total;
    if (settled && !settledAt) settledAt = performance.now();
    mismatches = mismatchesOf(sandbox, expected);
    const now = performance.now();
    if (settled && mismatches === 0) break;
    // Everything settled but some quantity is off: nothing else will move it.
    if (settled && now - settledAt > 5_000) break;
    const progress = row.total + row.settled + (expected.size - mismatches);
    if (progress !== last) {
      last = progress;
      lastChange = now;
    } else if (now - lastChange > STALL_MS) {
      throw new Error(
        `meli ${label}: no progress for ${
          STALL_MS / 1000
        } s (${row.settled}/${meliChanges} changes settled, ` +
          `${mismatches} quantities off)`,
      );
    }
    if (now - t0 > PHASE_LIMIT_MS) throw new Error(`meli ${label}: did not converge in ${PHASE_LIMIT_MS} ms`);
    if (now - lastReport > 5_000) {
      log(
        `meli ${label}: ${row.settled}/${meliChanges} changes settled, ${mismatches} quantities off, ` +
          `${sandbox.stats().requests - before.requests} requests`,
      );
      lastReport = now;
    }
    await sleep(100);
  }
  const done = performance.now();
  const doneWall = t0Wall + (done - t0);
  const after = sandbox.stats();

  // Requests of this phase, from the sandbox's log (its clock is Date.now()).
  const requests = sandbox.requestLog().filter((r) => r.at >= t0Wall);
  const byOperation: Record<string, number> = {};
  for (const r of requests) {
    const op = operationOf(r.method, r.path, r.query);
    byOperation[op] = (byOperation[op] ?? 0) + 1;
  }
  const apiRequests = requests.filter((r) => r.path !== "/oauth/token");
  const firstAt = apiRequests[0]?.at ?? t0Wall;
  const lastAt = apiRequests.at(-1)?.at ?? t0Wall;
  const busySeconds = Math.max(0.001, (lastAt - firstAt) / 1000);
  const limited = requests.filter((r) => r.status === 429);

  // PUTs per listing in this phase, from the sandbox's counters.
  const putsByListing = new Map<string, number>();
  for (const [key, n] of Object.entries(after.putsByListing)) {
    const d = n - (before.putsByListing[key] ?? 0);
    if (d > 0) putsByListing.set(key, d);
  }
  const puts = after.puts - before.puts;
  const perListing = [...putsByListing.values()];
  const untouchedPut = [...putsByListing.keys()].filter((k) => !touched.has(k)).length;

  // Ingest overlap: the dispatcher starts on the first custody batch, so a listing
  // written while its sales were still arriving is written again later. After the
  // last MeLi change reached custody, one pass over the backlog should write each
  // listing at most once.
  const [ledger] = await sql<
    {
      last_custody_ms: number;
      failed: number;
      p50: number;
      p99: number;
      batches: number;
      sent_batches: number;
      entries: number;
      released: number;
    }[]
  >`
    select (select extract(epoch from max(created_at)) * 1000 from stock_change
             where channel = 'mercadolibre' and id > ${change_before})::float8 as last_custody_ms,
           (select count(*)::int from stock_change
             where channel = 'mercadolibre' and id > ${change_before} and status = 'failed') as failed,
           (select percentile_cont(0.5) within group (order by extract(epoch from applied_at - created_at))
              from stock_change where channel = 'mercadolibre' and id > ${change_before}
               and status = 'applied')::float8 as p50,
           (select percentile_cont(0.99) within group (order by extract(epoch from applied_at - created_at))
              from stock_change where channel = 'mercadolibre' and id > ${change_before}
               and status = 'applied')::float8 as p99,
           (select count(*)::int from sync_batch where channel = 'mercadolibre' and id > ${batch_before}) as batches,
           (select count(*)::int from sync_batch where channel = 'mercadolibre' and id > ${batch_before}
               and request is not null) as sent_batches,
           (select coalesce(sum(jsonb_array_length(request->'entries')), 0)::int from sync_batch
             where channel = 'mercadolibre' and id > ${batch_before} and request is not null) as entries,
           (select count(*)::int from sync_batch where channel = 'mercadolibre' and id > ${batch_before}
               and status = 'superseded') as released`;
  const failedReasons = await sql<{ reason: string; n: number }[]>`
    select coalesce(error_reason, '?') as reason, count(*)::int as n from stock_change
     where channel = 'mercadolibre' and id > ${change_before} and status = 'failed' group by 1 order by 2 desc`;
  // Every sent batch: when it was claimed and which listings it wrote.
  const sent = await sql<{ claimed_ms: number; entries: { itemId: string; variationId: number | null }[] }[]>`
    select (extract(epoch from created_at) * 1000)::float8 as claimed_ms, request->'entries' as entries
      from sync_batch where channel = 'mercadolibre' and id > ${batch_before} and request is not null
     order by id`;
  const claimedDuringIngest = new Set<string>();
  for (const b of sent) {
    if (b.claimed_ms > ledger.last_custody_ms) continue;
    for (const e of b.entries) {
      claimedDuringIngest.add(e.variationId === null ? e.itemId : `${e.itemId}/${e.variationId}`);
    }
  }
  // A listing written twice: did the second PUT carry a different quantity?
  const putValues = new Map<string, number[]>();
  for (const r of apiRequests) {
    if (r.method !== "PUT" || r.status !== 200) continue;
    const key = decodeURIComponent(r.path.replace(/^\/items\//, "").replace("/variations/", "/"));
    const value = (r.body as { available_quantity?: number } | null)?.available_quantity ?? -1;
    putValues.set(key, [...putValues.get(key) ?? [], value]);
  }
  // A listing claimed only after ingest ended should be written once; more is a coalescing failure.
  let repeatUnexplained = 0;
  for (const [key, n] of putsByListing) if (!claimedDuringIngest.has(key)) repeatUnexplained += n - 1;
  let repeatSameValue = 0;
  for (const values of putValues.values()) {
    for (let i = 1; i < values.length; i++) if (values[i] === values[i - 1]) repeatSameValue++;
  }

  const totalSeconds = (done - t0) / 1000;
  // The brief's window: one pass over every touched listing at the budget's rate.
  const windows = Math.max(1, Math.ceil(totalSeconds * p.rate / Math.max(1, touched.size)));
  const maxPerListing = perListing.length ? Math.max(...perListing) : 0;
  return {
    sales: sales.length,
    sales_at_meli_store: atStore.length,
    meli_changes: meliChanges,
    listings_touched: touched.size,
    publish_s: round((published - t0) / 1000, 2),
    settled_after_publish_s: round((settledAt - published) / 1000, 2),
    converge_after_publish_s: round((done - published) / 1000, 2),
    total_s: round(totalSeconds, 2),
    ingest_end_s: round((ledger.last_custody_ms - t0Wall) / 1000, 2),
    requests: after.requests - before.requests,
    requests_by_operation: Object.entries(byOperation).sort().map(([k, v]) => `${k}=${v}`).join(" "),
    requests_per_s_busy: round(apiRequests.length / busySeconds, 2),
    requests_per_s_overall: round(apiRequests.length / totalSeconds, 2),
    rate_limited: after.rateLimited - before.rateLimited,
    rate_limited_after_5s: limited.filter((r) => r.at - t0Wall > 5_000).length,
    puts,
    listings_put: putsByListing.size,
    puts_per_listing: round(puts / Math.max(1, touched.size), 3),
    puts_per_listing_max: maxPerListing,
    listings_put_more_than_once: perListing.filter((n) => n > 1).length,
    puts_on_untouched_listings: untouchedPut,
    repeat_puts: puts - putsByListing.size,
    repeat_puts_same_value: repeatSameValue,
    listings_claimed_during_ingest: claimedDuringIngest.size,
    repeat_puts_unexplained: repeatUnexplained,
    windows,
    puts_within_listings_x_windows: puts <= touched.size * windows,
    batches: ledger.batches,
    batches_sent: ledger.sent_batches,
    listing_writes_planned: ledger.entries,
    one_put_per_listing_per_batch: puts === ledger.entries,
    batches_released: ledger.released,
    listings_per_sent_batch: round(ledger.entries / Math.max(1, ledger.sent_batches), 2),
    changes_failed: ledger.failed,
    failed_reasons: failedReasons.map((r) => `${r.reason}=${r.n}`).join(" ") || "none",
    latency_p50_s: round(ledger.p50 ?? 0, 2),
    latency_p99_s: round(ledger.p99 ?? 0, 2),
    invalid_requests: after.invalid - before.invalid,
    quantity_mismatches: mismatches,
    // Kept for the summary: when the phase ended on the sandbox clock.
    done_at_ms: Math.round(doneWall),
  };
}

function prefixed(prefix: string, result: SectionResult): SectionResult {
  return Object.fromEntries(
    Object.entries(result).filter(([k]) => k !== "done_at_ms").map(([k, v]) => [prefix + k, v]),
  );
}

/** Mean time per MeLi dispatch step over both phases, from the service's histogram. */
async function phaseMeans(service: ReturnType<typeof startService>): Promise<SectionResult> {
  const values = (await service.metrics.dispatchPhaseSeconds.get()).values
    .filter((v) => v.labels.channel === "mercadolibre");
  const out: SectionResult = {};
  for (const phase of ["claim", "send", "record"]) {
    const pick = (suffix: string) =>
      values.find((v) => v.metricName?.endsWith(suffix) && v.labels.phase === phase)?.value ?? 0;
    const count = pick("_count");
    out[`dispatch_${phase}_ms_mean`] = count ? round(pick("_sum") / count * 1000, 1) : 0;
  }
  return out;
}

/** The MeLi channel's batched, budgeted mirror path on the sandbox. */
export const meliBurstSection: Section = {
  id: "meli",
  title: "MercadoLibre burst (service → sandbox, mirror mode, MELI_RATE_PER_SEC budget)",
  async run(ctx: BenchContext): Promise<SectionResult> {
    const o = ctx.options;
    const rate = o.meliRate;
    const catalog = buildCatalog({
      skus: o.meliSkus,
      stores: o.shopifyStores,
      seed: o.seed,
      maxQuantity: 100_000,
    });
    const sample = (seed: number) =>
      sampleSales({
        count: o.meliSales,
        stores: o.shopifyStores,
        skus: o.meliSkus,
        maxItems: 3,
        seed,
        catalog,
      });
    const coldSales = sample(o.seed);
    // The same SKUs again with new sales: every listing is cached by now.
    const warmSales = sample(o.seed + 1);
    const store = catalog.stores[0].tienda_id;
    // A real limit above ours: a 429 means our budget failed, not that MeLi is stingy.
    const sandboxLimit = rate * 2;
    const sandbox = await startMeliSandbox({
      catalog,
      tiendaId: store,
      ratePerSecond: sandboxLimit,
      faults: { latencyMs: o.latencyMs },
    });
    ctx.defer("stop the MeLi sandbox", () => sandbox.close());
    const host = new URL(sandbox.url).host;

    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
    const redis: Redis = createClient({ url: REDIS_URL });
    redis.on("error", () => {});
    await redis.connect();
    ctx.defer("close the bench Redis client", () => redis.close());
    ctx.defer("delete the bench Redis keys", async () => {
      const n = await deleteKeys(redis, `bench_${id}:*`) +
        await deleteKeys(redis, `marketplace-sync:*:mercadolibre:${host}*`);
      log(`meli: deleted ${n} Redis keys`);
    });

    const config = loadConfig({
      ...benchServiceEnv(id),
      ...meliAsRealApi(sandbox, store),
      MELI_RATE_PER_SEC: String(rate),
      POS_STOCK_KEY: `bench_${id}:stock:{tienda_id}:{producto_id}`,
      LOG_LEVEL: o.logLevel,
    });
    const { sql } = await runResources(ctx, config);

    log(
      `meli: starting the service (mirror of store ${store.slice(0, 8)}…, MELI_RATE_PER_SEC ${rate}, ` +
        `MELI_BATCH_SIZE ${config.MELI_BATCH_SIZE}, sandbox limit ${sandboxLimit} req/s)`,
    );
    const service = startService(config);
    ctx.defer("stop the service", () => service.close());
    await service.started;
    const phase: Phase = { ctx, sql, redis, sandbox, config, catalog, store, rate };
    const cold = await runPhase(phase, coldSales, "cold");
    const warm = await runPhase(phase, warmSales, "warm");
    const warmListings = Number(warm.listings_touched);
    return {
      sales: coldSales.length,
      skus: catalog.products.length,
      stores: catalog.stores.length,
      meli_store: store,
      rate_per_s: rate,
      sandbox_limit_per_s: sandboxLimit,
      batch_size: config.MELI_BATCH_SIZE,
      ...prefixed("cold_", cold),
      ...prefixed("warm_", warm),
      target_puts_le_listings_per_window: Number(warm.puts) <= warmListings * Number(warm.windows) &&
        Boolean(warm.one_put_per_listing_per_batch) && Number(warm.repeat_puts_unexplained) === 0,
      ...await phaseMeans(service),
      rate_limited_after_warmup: Number(cold.rate_limited_after_5s) + Number(warm.rate_limited),
      quantity_mismatches: Number(cold.quantity_mismatches) + Number(warm.quantity_mismatches),
      api_requests_total: sandbox.stats().requests,
    };
  },
};
