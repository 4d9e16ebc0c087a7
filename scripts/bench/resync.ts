/**
 * Benchmark section `resync` (run by `deno task bench`): `POST /resync {"all": true}` over a
 * whole generated catalog (default 10 000 SKUs × 5 stores = 50 000 listings), Shopify only
 * (`CHANNELS=shopify`), on the plan's budget (Standard: 2 000 points, 100 restored per second).
 *
 * The service runs as its own process with the flags src/permissions.ts derives (so the RSS
 * sampled from /proc is the service's alone); the Shopify sandbox and its bulk result storage
 * run in the bench process. The POS is what a real one is to the service: a `producto` table
 * (in a schema of the run's own, read through `POS_CATALOG_QUERY`, `POS_STOCK_QUERY` and
 * `POS_PRODUCT_QUERY`) and its Redis stock keys (`POS_STOCK_KEY`, under a prefix of the run's
 * own). Four jobs run one after the other, each once the bucket is full again:
 *
 * 1. `clean`: a dry run, nothing drifted;
 * 2. `drifted`: a dry run after D % of the listings (default 5 %) drifted behind the service's
 *    back — the POS sold or received stock it never published: its keys and table changed;
 * 3. `write`: the same scope written (drifted Shopify listings re-read and set, 250 at most per call);
 * 4. `after`: a dry run again, which must find no drift.
 *
 * For each: wall time (POST → done; `plan_s` until the job had its plan: both catalogs read into
 * snapshots and paired), the sandbox's requests, bulk operations, mutations applied and cost points
 * kept, points per listing, and the time the budget alone needs for those points on the plan —
 * (points − the bucket's initial capacity) ÷ restore rate — against the wall time; the service's CPU
 * time and RSS peak during the job; and the job's counts checked against what was injected (after
 * the write, every listing's Shopify quantity is compared with the POS). With several
 * `--resync-skus` sizes each size gets a fresh sandbox, POS and service, so the RSS peaks compare.
 */
import { createClient } from "redis";
import {
  type Config,
  DEFAULT_POS_PRODUCT_QUERY,
  DEFAULT_POS_STOCK_QUERY,
  loadConfig,
} from "../../src/config.ts";
import { permissionsFor, SERVICE_ENV } from "../../src/permissions.ts";
import { buildCatalog } from "../../src/sandbox/catalog.ts";
import { randomInt, seededRandom } from "../../src/sandbox/prng.ts";
import { type ShopifySandbox, startShopifySandbox } from "../../src/sandbox/shopify/sandbox.ts";
import postgres from "postgres";
import {
  type BenchContext,
  benchServiceEnv,
  cpuSeconds,
  DATABASE_URL,
  deleteKeys,
  freePort,
  PLAN_BUCKETS,
  progress,
  REDIS_URL,
  round,
  rssMib,
  runResources,
  type Section,
  type SectionResult,
  type ServiceProcess,
  spawnService,
} from "./harness.ts";

const ADMIN_TOKEN = "bench-resync-admin-token";
/** A job still running after this long is reported as a failure of the run. */
const JOB_TIMEOUT_MS = 30 * 60_000;

type Redis = ReturnType<typeof createClient>;

/** A listing of the catalog: a product at a store (one Shopify location per store). */
interface Listing {
  productoId: string;
  sku: string;
  tiendaId: string;
}

/** What one job did, as the sandbox, /proc and the job itself saw it. */
interface JobFigures {
  wall_s: number;
  plan_s: number;
  listings_checked: number;
  drift_found: number;
  written: number;
  errors: number;
  unresolved: number;
  shopify_requests: number;
  bulk_operations: number;
  bulk_downloads: number;
  mutations_applied: number;
  throttled: number;
  points: number;
  points_per_listing: number;
  budget_bound_s: number;
  budget_share_of_wall: number;
  service_cpu_s: number;
  rss_before_mib: number;
  rss_peak_mib: number;
}

export const resyncSection: Section = {
  id: "resync",
  title: 'Resync of the whole catalog (POST /resync {"all": true}, Shopify, the plan\'s budget)',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const result: SectionResult = {
      plan: ctx.options.plan,
      stores: ctx.options.resyncStores,
      drift_pct: ctx.options.resyncDriftPct,
    };
    for (const skus of ctx.options.resyncSkus) {
      // Each size on a fresh world, removed before the next one starts.
      const figures = await scoped(ctx, (sub) => runSize(sub, skus));
      for (const [k, v] of Object.entries(figures)) result[`${skus}x${ctx.options.resyncStores}_${k}`] = v;
    }
    return result;
  },
};

/** Runs `body` with cleanups of its own, undone when it ends (or at the section's end, on Ctrl-C). */
async function scoped<T>(ctx: BenchContext, body: (sub: BenchContext) => Promise<T>): Promise<T> {
  const steps: { what: string; step: () => Promise<unknown> }[] = [];
  const undo = async () => {
    while (steps.length) {
      const { what, step } = steps.pop()!;
      await step().catch((error) => progress(`cleanup: ${what} failed: ${(error as Error).message}`));
    }
  };
  ctx.defer("a resync world", undo);
  try {
    return await body({ ...ctx, defer: (what, step) => void steps.push({ what, step }) });
  } finally {
    await undo();
  }
}

async function runSize(ctx: BenchContext, skus: number): Promise<SectionResult> {
  const o = ctx.options;
  const bucket = PLAN_BUCKETS[o.plan];
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  progress(`resync ${skus} SKUs × ${o.resyncStores} stores: building the catalog, sandbox and POS`);
  const catalog = buildCatalog({ skus, stores: o.resyncStores, seed: o.seed });
  const listings: Listing[] = catalog.products.flatMap((p) =>
    catalog.stores.map((s) => ({ productoId: p.producto_id, sku: p.sku, tiendaId: s.tienda_id }))
  );
  const shop = await startShopifySandbox({ catalog, bucket, faults: { latencyMs: o.latencyMs } });
  ctx.defer("Shopify sandbox", () => shop.close());

  // The POS: its table, and its stock keys in Redis (what the service reads first).
  const posSchema = `bench_pos_${id}`;
  const keyTemplate = `bench_${id}:stock:{tienda_id}:{producto_id}`;
  const pos = postgres(DATABASE_URL, { max: 2, onnotice: () => {} });
  ctx.defer("the bench POS", async () => {
    await pos.unsafe(`drop schema if exists ${posSchema} cascade`);
    await pos.end();
  });
  const redis: Redis = createClient({ url: REDIS_URL });
  await redis.connect();
  ctx.defer("POS stock keys", async () => {
    await deleteKeys(redis, `bench_${id}:*`);
    await redis.close();
  });
  const productOf = new Map(catalog.products.map((p) => [p.producto_id, p]));
  const stock = new Map(listings.map((l) => [l, productOf.get(l.productoId)!.stock[l.tiendaId] ?? 0]));
  await createPos(pos, posSchema, listings, stock);
  await setPosStock(redis, keyTemplate, listings, stock);

  const port = freePort();
  const env: Record<string, string> = {
    ...benchServiceEnv(id),
    HTTP_PORT: String(port),
    LOG_LEVEL: o.logLevel,
    LOG_FORMAT: "json",
    CHANNELS: "shopify",
    DISPATCH_ENABLED: "true",
    ADMIN_TOKEN,
    SHOPIFY_URL: shop.url,
    SHOPIFY_TOKEN: shop.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id]))),
    SHOPIFY_BUCKET_MAX: String(bucket.maximumAvailable),
    SHOPIFY_RESTORE_RATE: String(bucket.restoreRate),
    // Where the bulk operation's result is downloaded from: the sandbox's storage stand-in.
    SHOPIFY_BULK_HOST: new URL(shop.storageUrl).host,
    POS_STOCK_KEY: keyTemplate,
    POS_CATALOG_QUERY: `select tienda_id, sku, id from ${posSchema}.producto where tienda_id = any($1)`,
    POS_STOCK_QUERY: DEFAULT_POS_STOCK_QUERY.replace("from producto", `from ${posSchema}.producto`),
    POS_PRODUCT_QUERY: DEFAULT_POS_PRODUCT_QUERY.replace("from producto", `from ${posSchema}.producto`),
  };
  const config: Config = loadConfig(env);
  // Declared first, so cleanup (last in, first out) stops the service before its schema is dropped.
  await runResources(ctx, config);
  const service = await spawnService(ctx, {
    flags: permissionsFor(config).flags,
    env,
    serviceEnv: SERVICE_ENV,
    // One warning per drifted listing is the service's behaviour; thousands of them are not shown.
    onStderrLine: (line) => {
      if (line.trim() && !line.includes("drift on shopify")) console.error(line);
    },
  });
  await new Promise((r) => setTimeout(r, 2_000)); // let start-up allocations settle
  const idle = (await rssMib(service.pid))!;
  progress(`resync ${skus} SKUs: service up, idle RSS ${round(idle.rss, 1)} MiB`);

  const jobs = { service, shop, bucket, listings: listings.length };
  const clean = await runJob(jobs, "clean", { all: true, channels: ["shopify"], dry_run: true });

  // Drift behind the service's back: the POS sold (or received) stock it never published.
  const drifted = pickDrift(listings, o.resyncDriftPct, o.seed);
  const random = seededRandom(o.seed + 1);
  const changed = drifted.map((l) => {
    const was = stock.get(l)!;
    const k = randomInt(random, 1, 5);
    return { listing: l, quantity: was >= k ? was - k : was + k };
  });
  for (const c of changed) stock.set(c.listing, c.quantity);
  await updatePos(pos, posSchema, changed);
  await setPosStock(redis, keyTemplate, drifted, stock);
  progress(`resync ${skus} SKUs: ${drifted.length} listings drifted (${o.resyncDriftPct} %)`);

  const dry = await runJob(jobs, "drifted", { all: true, channels: ["shopify"], dry_run: true });
  const write = await runJob(jobs, "write", { all: true, channels: ["shopify"], dry_run: false });
  const mismatches = shopifyMismatches(shop, listings, stock);
  const after = await runJob(jobs, "after", { all: true, channels: ["shopify"], dry_run: true });
  const end = (await rssMib(service.pid))!;

  const checks: string[] = [];
  const expect = (what: string, got: number, want: number) => {
    if (got !== want) checks.push(`${what} ${got} (expected ${want})`);
  };
  for (const [name, f] of [["clean", clean], ["drifted", dry], ["write", write], ["after", after]] as const) {
    expect(`${name}: listings checked`, f.listings_checked, listings.length);
    expect(`${name}: errors`, f.errors, 0);
    expect(`${name}: unresolved`, f.unresolved, 0);
  }
  expect("clean: drift", clean.drift_found, 0);
  expect("drifted: drift", dry.drift_found, drifted.length);
  expect("drifted: mutations", dry.mutations_applied, 0);
  expect("write: drift", write.drift_found, drifted.length);
  expect("write: written", write.written, drifted.length);
  expect("after the write: Shopify listings different from the POS", mismatches, 0);
  expect("after: drift", after.drift_found, 0);
  const perWritten = write.written ? round(write.points / write.written, 2) : 0;
  const summary: SectionResult = {
    skus,
    listings: listings.length,
    drifted_listings: drifted.length,
    rss_idle_mib: round(idle.rss, 1),
    ...prefixed("clean_", clean),
    ...prefixed("drifted_", dry),
    ...prefixed("write_", write),
    write_points_per_written: perWritten,
    write_listings_per_set_call: write.mutations_applied
      ? round(write.written / write.mutations_applied, 1)
      : 0,
    ...prefixed("after_", after),
    rss_high_water_mib: round(end.hwm, 1),
    quantity_mismatches: mismatches,
    checks: checks.length ? checks.join("; ") : "ok",
  };
  progress(
    `resync ${skus} SKUs: dry run ${clean.wall_s} s, with drift ${dry.wall_s} s, write ${write.wall_s} s ` +
      `(${write.points} points, ${write.mutations_applied} set calls), after ${after.wall_s} s; RSS peak ` +
      `${Math.max(clean.rss_peak_mib, dry.rss_peak_mib, write.rss_peak_mib, after.rss_peak_mib)} MiB; ` +
      `checks: ${summary.checks}`,
  );
  return summary;
}

function prefixed(prefix: string, figures: JobFigures): SectionResult {
  return Object.fromEntries(Object.entries(figures).map(([k, v]) => [prefix + k, v]));
}

/** Starts a resync job, waits for it, and measures it; the bucket is full before it starts. */
async function runJob(
  world: {
    service: ServiceProcess;
    shop: ShopifySandbox;
    bucket: { maximumAvailable: number; restoreRate: number };
    listings: number;
  },
  label: string,
  request: Record<string, unknown>,
): Promise<JobFigures> {
  const { service, shop, bucket } = world;
  await bucketFull(shop);
  const before = { ...shop.stats(), downloads: shop.storageStats().downloads };
  const rssBefore = (await rssMib(service.pid))!;
  const cpuBefore = await cpuSeconds(service.pid) ?? NaN;
  let peak = rssBefore.rss;
  let sampling = true;
  const sampler = (async () => {
    while (sampling && !service.exited()) {
      const m = await rssMib(service.pid);
      if (m) peak = Math.max(peak, m.rss);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const started = performance.now();
  let planned = 0;
  let job: Record<string, unknown>;
  try {
    const answer = await admin(service, "POST", "/resync", request);
    if (answer.status !== 202) {
      throw new Error(
        `resync ${label}: POST /resync answered ${answer.status}: ${JSON.stringify(answer.body)}`,
      );
    }
    const id = (answer.body as { id: string }).id;
    let lastReport = performance.now();
    for (;;) {
      const got = await admin(service, "GET", `/resync/${id}?lines=0`);
      job = got.body as Record<string, unknown>;
      if (!planned && Number(job.total) > 0) planned = performance.now();
      if (job.state !== "running") break;
      if (service.exited()) throw new Error(`resync ${label}: the service process ended`);
      if (performance.now() - started > JOB_TIMEOUT_MS) throw new Error(`resync ${label}: still running`);
      if (performance.now() - lastReport > 5_000) {
        progress(`resync ${label}: ${job.done}/${job.total} checked, ${job.written} written`);
        lastReport = performance.now();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    sampling = false;
    await sampler;
  }
  const done = performance.now();
  if (job.state !== "done") throw new Error(`resync ${label} ended ${job.state}: ${job.error}`);
  const cpuAfter = await cpuSeconds(service.pid) ?? NaN;
  const after = { ...shop.stats(), downloads: shop.storageStats().downloads };
  const wall = (done - started) / 1000;
  const points = after.pointsSpent - before.pointsSpent;
  // The budget alone: the bucket's first points are there at once, the rest come at the restore rate.
  const budget = Math.max(0, points - bucket.maximumAvailable) / bucket.restoreRate;
  const figures: JobFigures = {
    wall_s: round(wall, 2),
    plan_s: round(((planned || done) - started) / 1000, 2),
    listings_checked: Number(job.done),
    drift_found: Number(job.drift_found),
    written: Number(job.written),
    errors: Number(job.errors),
    unresolved: Number(job.unresolved_lines),
    shopify_requests: after.requests - before.requests,
    bulk_operations: after.bulkOperations - before.bulkOperations,
    bulk_downloads: after.downloads - before.downloads,
    mutations_applied: after.mutationsApplied - before.mutationsApplied,
    throttled: after.throttled - before.throttled,
    points,
    points_per_listing: round(points / world.listings, 3),
    budget_bound_s: round(budget, 1),
    budget_share_of_wall: round(budget / wall, 2),
    service_cpu_s: round(cpuAfter - cpuBefore, 1),
    rss_before_mib: round(rssBefore.rss, 1),
    rss_peak_mib: round(peak, 1),
  };
  progress(
    `resync ${label}: ${figures.wall_s} s (plan ${figures.plan_s} s), ${figures.listings_checked} checked, ` +
      `${figures.drift_found} drifted, ${figures.written} written, ${figures.shopify_requests} requests, ` +
      `${points} points; RSS peak ${figures.rss_peak_mib} MiB`,
  );
  return figures;
}

/** Waits until the sandbox's bucket is full again (each job starts from the same budget). */
async function bucketFull(shop: ShopifySandbox): Promise<void> {
  for (;;) {
    const s = shop.throttleStatus();
    if (s.currentlyAvailable >= s.maximumAvailable) return;
    const missing = s.maximumAvailable - s.currentlyAvailable;
    await new Promise((r) => setTimeout(r, Math.min(5_000, 50 + 1000 * missing / s.restoreRate)));
  }
}

/** An operator API call with the admin token. */
async function admin(
  service: ServiceProcess,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${service.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

/** `pct` % of the listings (rounded), drawn with a seed: a partial Fisher–Yates shuffle. */
function pickDrift(listings: readonly Listing[], pct: number, seed: number): Listing[] {
  const n = Math.round(listings.length * pct / 100);
  const pool = [...listings];
  const random = seededRandom(seed);
  for (let i = 0; i < n; i++) {
    const j = randomInt(random, i, pool.length - 1);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, n);
}

/** The POS's product table, as a POS keeps it: a row per product and store, indexed as lookups need. */
async function createPos(
  sql: postgres.Sql,
  schema: string,
  listings: readonly Listing[],
  stock: Map<Listing, number>,
): Promise<void> {
  await sql.unsafe(`create schema ${schema}`);
  await sql.unsafe(`
    create table ${schema}.producto (
      id text not null, sku text not null, tienda_id text not null, stock_actual integer not null,
      primary key (tienda_id, sku))`);
  await sql.unsafe(`create index on ${schema}.producto (tienda_id, id)`);
  for (let i = 0; i < listings.length; i += 10_000) {
    const chunk = listings.slice(i, i + 10_000);
    await sql.unsafe(
      `insert into ${schema}.producto (id, sku, tienda_id, stock_actual)
       select * from unnest($1::text[], $2::text[], $3::text[], $4::int[])`,
      [
        chunk.map((l) => l.productoId),
        chunk.map((l) => l.sku),
        chunk.map((l) => l.tiendaId),
        chunk.map((l) => stock.get(l)!),
      ] as never,
    );
  }
  await sql.unsafe(`analyze ${schema}.producto`);
}

async function updatePos(
  sql: postgres.Sql,
  schema: string,
  changed: readonly { listing: Listing; quantity: number }[],
): Promise<void> {
  for (let i = 0; i < changed.length; i += 10_000) {
    const chunk = changed.slice(i, i + 10_000);
    await sql.unsafe(
      `update ${schema}.producto p set stock_actual = c.quantity
         from unnest($1::text[], $2::text[], $3::int[]) as c(tienda_id, sku, quantity)
        where p.tienda_id = c.tienda_id and p.sku = c.sku`,
      [
        chunk.map((c) => c.listing.tiendaId),
        chunk.map((c) => c.listing.sku),
        chunk.map((c) => c.quantity),
      ] as never,
    );
  }
}

/** Sets the POS's stock keys of `listings` (MSET, 1 000 at a time). */
async function setPosStock(
  redis: Redis,
  template: string,
  listings: readonly Listing[],
  stock: Map<Listing, number>,
): Promise<void> {
  const keyOf = (l: Listing) =>
    template.replaceAll("{tienda_id}", l.tiendaId).replaceAll("{producto_id}", l.productoId);
  for (let i = 0; i < listings.length; i += 1_000) {
    const chunk = listings.slice(i, i + 1_000);
    await redis.mSet(chunk.map((l) => [keyOf(l), String(stock.get(l))] as [string, string]));
  }
}

/** Listings whose Shopify quantity is not what the POS has (never below 0). */
function shopifyMismatches(shop: ShopifySandbox, listings: readonly Listing[], stock: Map<Listing, number>) {
  const items = new Map(shop.variants.map((v) => [v.productoId, v.inventoryItemId]));
  const locations = new Map(shop.locations.map((l) => [l.tiendaId, l.id]));
  let n = 0;
  for (const l of listings) {
    const shown = shop.available(items.get(l.productoId)!, locations.get(l.tiendaId)!);
    if (shown !== Math.max(0, stock.get(l)!)) n++;
  }
  return n;
}
