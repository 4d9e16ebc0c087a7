/**
 * Benchmark section `sustained`: the service as its own process, with its
 * least-privilege flags, both channels dispatching to sandboxes started here
 * (so the service's RSS is the service's alone), fed a steady stream of sales
 * (default 1 000/s for 60 s). The service gets the flags and allocator
 * environment scripts/launch.ts gives it (src/permissions.ts: permissions, V8
 * heap settings, SERVICE_ENV). Reports the service process's RSS over time
 * (sampled from /proc, idle before, peak during), the CPU time it used, whether
 * custody kept up (the queue's depth), and what the channels applied meanwhile.
 *
 * Target (issue #7): RSS ≤ 128 MiB at 1 000 sales/s sustained for 60 s.
 */
import { createClient } from "redis";
import { type Config, loadConfig } from "../../src/config.ts";
import { envText, permissionsFor, SERVICE_ENV, withV8Flags } from "../../src/permissions.ts";
import { buildCatalog } from "../../src/sandbox/catalog.ts";
import { startMeliSandbox } from "../../src/sandbox/mercadolibre/sandbox.ts";
import { startShopifySandbox } from "../../src/sandbox/shopify/sandbox.ts";
import {
  type BenchContext,
  benchServiceEnv,
  cpuSeconds,
  deleteKeys,
  freePort,
  PLAN_BUCKETS,
  REDIS_URL,
  rssMib,
  runResources,
  type Section,
  type SectionResult,
  spawnService,
} from "./harness.ts";
import { publishSales, reservePosStock, sampleSales } from "../publish_sample.ts";

const log = (text: string) => console.error(`[bench] ${text}`);
const round = (n: number, digits = 1) => Number(n.toFixed(digits));

export const sustainedSection: Section = {
  id: "sustained",
  title: "Sustained sales stream: the service process's memory (RSS) and whether custody keeps up",
  async run(ctx: BenchContext): Promise<SectionResult> {
    const o = ctx.options;
    const rate = o.sustainedRate;
    const seconds = o.sustainedSeconds;
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 8);
    const catalog = buildCatalog({
      skus: o.shopifySkus,
      stores: o.shopifyStores,
      seed: o.seed,
      maxQuantity: 1e6,
    });
    const shop = await startShopifySandbox({
      catalog,
      bucket: PLAN_BUCKETS[o.plan],
      faults: { latencyMs: o.latencyMs },
    });
    ctx.defer("Shopify sandbox", () => shop.close());
    const meliStore = catalog.stores[0].tienda_id;
    const meli = await startMeliSandbox({
      catalog,
      tiendaId: meliStore,
      ratePerSecond: o.meliRate * 2,
      faults: { latencyMs: o.latencyMs },
    });
    ctx.defer("MeLi sandbox", () => meli.close());
    const port = freePort();
    const env: Record<string, string> = {
      ...benchServiceEnv(id),
      HTTP_PORT: String(port),
      LOG_LEVEL: "warning",
      LOG_FORMAT: "json",
      SHOPIFY_URL: shop.url,
      SHOPIFY_TOKEN: shop.token,
      SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shop.locations.map((l) => [l.tiendaId, l.id]))),
      MELI_URL: meli.url,
      MELI_TOKEN: meli.staticToken,
      MELI_TIENDA_ID: meliStore,
      MELI_RATE_PER_SEC: String(o.meliRate),
      POS_STOCK_KEY: `bench_${id}:stock:{tienda_id}:{producto_id}`,
    };
    const config: Config = loadConfig(env);
    // To measure what the service's runtime settings change (docs/BENCHMARKS.md, "Sustained stream"):
    // BENCH_SUSTAINED_RUNTIME=defaults runs it with V8's and glibc's own defaults instead;
    // BENCH_SUSTAINED_V8_FLAGS=--a,--b replaces the V8 flags only (as `launch.ts --v8-flags=…` would).
    const runtimeDefaults = Deno.env.get("BENCH_SUSTAINED_RUNTIME") === "defaults";
    const v8Override = Deno.env.get("BENCH_SUSTAINED_V8_FLAGS");
    const derived = permissionsFor(config).flags;
    const flags = runtimeDefaults
      ? withV8Flags(derived, null)
      : v8Override !== undefined
      ? withV8Flags(derived, `--v8-flags=${v8Override}`)
      : derived;
    const serviceEnv = runtimeDefaults ? {} : SERVICE_ENV;
    const runtime = runtimeDefaults
      ? "v8_glibc_defaults"
      : v8Override !== undefined
      ? `v8_flags:${v8Override}`
      : "service_settings";
    log(
      `sustained: service process with ${flags.join(" ")}` +
        (runtimeDefaults ? "" : ` ${envText(serviceEnv)}`) + ` (${runtime})`,
    );
    // Declared first, so cleanup (last in, first out) stops the service before it drops its schema.
    const { sql } = await runResources(ctx, config);
    // As scripts/launch.ts starts it: the allocator defaults of SERVICE_ENV next to the configuration.
    const child = await spawnService(ctx, { flags, env, serviceEnv });
    await new Promise((r) => setTimeout(r, 3_000)); // let start-up allocations settle
    const idle = (await rssMib(child.pid))!;
    log(`sustained: idle RSS ${round(idle.rss)} MiB; publishing ${rate} sales/s for ${seconds} s`);

    const sales = sampleSales({
      count: rate * seconds,
      stores: o.shopifyStores,
      skus: o.shopifySkus,
      maxItems: 3,
      seed: o.seed,
      catalog,
    });
    const redis = createClient({ url: REDIS_URL });
    await redis.connect();
    ctx.defer("POS keys", async () => {
      await deleteKeys(redis, `bench_${id}:*`);
      await redis.close();
    });
    await reservePosStock(redis, env.POS_STOCK_KEY, catalog, sales);

    const samples: { t: number; rss: number; depth: number }[] = [];
    let sampling = true;
    const started = performance.now();
    const cpuBefore = await cpuSeconds(child.pid);
    const sampler = (async () => {
      while (sampling && !child.exited()) {
        const m = await rssMib(child.pid);
        const depth = (await ctx.rabbit.queueDeclare({ queue: config.QUEUE, passive: true })).messageCount;
        if (m) samples.push({ t: (performance.now() - started) / 1000, rss: m.rss, depth });
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    await publishSales(ctx.rabbit, config.EXCHANGE, config.ROUTING_KEY, sales, { perSecond: rate });
    const publishSeconds = (performance.now() - started) / 1000;
    // Custody drains what is left; the channels keep dispatching (MeLi is budget-bound and far behind).
    for (let i = 0; i < 600; i++) {
      const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from sale`;
      if (n >= sales.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const custodySeconds = (performance.now() - started) / 1000;
    const cpuUsed = (await cpuSeconds(child.pid) ?? NaN) - (cpuBefore ?? NaN);
    await new Promise((r) => setTimeout(r, 2_000));
    sampling = false;
    await sampler;
    const end = (await rssMib(child.pid))!;
    const counts = await sql<{ channel: string; status: string; n: number }[]>`
      select channel, status, count(*)::int as n from stock_change group by 1, 2 order by 1, 2`;
    const during = samples.filter((s) => s.t <= publishSeconds);
    const peakDuring = Math.max(...during.map((s) => s.rss));
    const peakDepth = Math.max(...samples.map((s) => s.depth));
    const result = {
      sales: sales.length,
      target_rate_per_s: rate,
      achieved_publish_rate_per_s: round(sales.length / publishSeconds, 0),
      seconds: round(publishSeconds),
      custody_done_after_s: round(custodySeconds),
      peak_queue_depth: peakDepth,
      rss_idle_mib: round(idle.rss),
      rss_peak_during_mib: round(peakDuring),
      rss_high_water_mib: round(end.hwm),
      rss_end_mib: round(end.rss),
      // CPU the service process used from the first publish until custody was done (1.0 s/s = one core).
      service_cpu_s: round(cpuUsed),
      service_cpu_cores: round(cpuUsed / custodySeconds, 2),
      // "t s: MiB" every 5 s, as one string (results are flat).
      rss_timeline_mib: samples.filter((_, i) => i % 10 === 0).map((s) =>
        `${round(s.t, 0)}s:${round(s.rss, 0)}`
      )
        .join(" "),
      ...Object.fromEntries(counts.map((c) => [`changes_${c.channel}_${c.status}`, c.n])),
      runtime,
      target_rss_le_128_mib: end.hwm <= 128,
    };
    log(
      `sustained: ${result.achieved_publish_rate_per_s} sales/s for ${result.seconds} s; custody done after ` +
        `${result.custody_done_after_s} s (peak queue ${peakDepth}); RSS idle ${result.rss_idle_mib} MiB, ` +
        `peak ${result.rss_high_water_mib} MiB`,
    );
    return result;
  },
};
