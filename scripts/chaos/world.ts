/**
 * One chaos scenario's world: both marketplace sandboxes (started here and
 * configured into the service as if they were the real APIs), the POS's stock
 * keys in Redis, the service as real subprocesses (so they can be SIGKILLed and
 * restarted with the same configuration), optional loopback proxies in front of
 * RabbitMQ, Postgres and Redis, the burst of sales, and the end-of-scenario
 * invariant, checked SKU by SKU.
 */
import { Buffer } from "node:buffer";
import { Connection } from "rabbitmq-client";
import postgres from "postgres";
import { createClient } from "redis";
import { declareTopology, type Topology, topologyFromConfig } from "../../src/broker/topology.ts";
import { CONFIG_VARIABLES, loadConfig } from "../../src/config.ts";
import { type Catalog, defaultCatalog } from "../../src/sandbox/catalog.ts";
import { applyRule, describeRule, resolveRule, type StockRules } from "../../src/model/stock_rule.ts";
import { type MeliSandbox, startMeliSandbox } from "../../src/sandbox/mercadolibre/sandbox.ts";
import { type ShopifySandbox, startShopifySandbox } from "../../src/sandbox/shopify/sandbox.ts";
import { TcpProxy } from "../support/tcp_proxy.ts";
import { reservePosStock, type SampleSale, sampleSales } from "../publish_sample.ts";

export const RABBITMQ_URL = Deno.env.get("TEST_RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5672";
export const DATABASE_URL = Deno.env.get("TEST_DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/test";
export const REDIS_URL = Deno.env.get("TEST_REDIS_URL") ?? "redis://127.0.0.1:6379";
const ROOT = new URL("../../", import.meta.url);

type Redis = ReturnType<typeof createClient>;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until truthy or the time runs out (then throws, naming `what`). */
export async function until<T>(
  check: () => Promise<T> | T,
  what: string,
  timeoutMs: number,
  intervalMs = 100,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = (error as Error).message ?? error;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${last})`);
    }
    await sleep(intervalMs);
  }
}

/** A free loopback TCP port (for a service's HTTP server, kept across restarts). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function randomSecret(prefix: string, bytes = 24): string {
  return prefix +
    [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, "0"))
      .join("");
}

/**
 * The default sandbox catalog with more stock on three products in four, so
 * MercadoLibre shows real quantities (the rest keeps its small stock and runs
 * out: MeLi then shows 0 and Shopify goes negative, both exact).
 */
export function chaosCatalog(): Catalog {
  const catalog = defaultCatalog();
  catalog.products.forEach((p, i) => {
    if (i % 4 === 0) return;
    for (const s of catalog.stores) p.stock[s.tienda_id] = (p.stock[s.tienda_id] ?? 0) + 60;
  });
  return catalog;
}

/** The chaos POS's catalog as a query (its stock is in Redis keys; it has no producto table). */
function posCatalogQuery(catalog: ReturnType<typeof chaosCatalog>): string {
  const quote = (text: string) => `'${text.replaceAll("'", "''")}'`;
  const rows = catalog.products.flatMap((p) =>
    catalog.stores.map((s) => `(${quote(s.tienda_id)}, ${quote(p.sku)}, ${quote(p.producto_id)})`)
  );
  return `select tienda_id, sku, producto_id from (values ${rows.join(", ")}) ` +
    "as c(tienda_id, sku, producto_id) where tienda_id = any($1)";
}

/**
 * The chaos POS's product lookup (a SKU's producto_id at a store) as a query: what a marketplace order's
 * SKU needs before its POS stock key can be read, when no POS sale of it was seen yet.
 */
function posProductQuery(catalog: ReturnType<typeof chaosCatalog>): string {
  const quote = (text: string) => `'${text.replaceAll("'", "''")}'`;
  const rows = catalog.products.flatMap((p) =>
    catalog.stores.map((s) => `(${quote(s.tienda_id)}, ${quote(p.sku)}, ${quote(p.producto_id)})`)
  );
  return `select producto_id from (values ${rows.join(", ")}) ` +
    "as c(tienda_id, sku, producto_id) where tienda_id = $1 and sku = $2 limit 1";
}

/**
 * One service instance as a real process: `deno run --allow-all src/main.ts`.
 * Like the deployments' supervisors (compose `restart: unless-stopped`, a k8s
 * Deployment), it restarts a process that exits on its own, after 1 s, and
 * records the crash.
 */
export class ServiceProcess {
  #child: Deno.ChildProcess | undefined;
  #pumps: Promise<void>[] = [];
  #expectedExit = false;
  starts = 0;
  readonly crashes: string[] = [];
  /** The OS process id of every start, in order. */
  readonly pids: number[] = [];
  readonly logFiles: string[] = [];

  constructor(
    readonly name: string,
    readonly env: Record<string, string>,
    readonly logDir: string,
    readonly port: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The running process's id, if any. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Spawns the process; stdout and stderr go to files under the log dir. */
  async start(): Promise<void> {
    if (this.#child) throw new Error(`${this.name} is already running`);
    this.#expectedExit = false;
    this.starts++;
    // Only what the service reads is set here: nothing leaks in from the caller's environment.
    const inherited = Object.fromEntries(
      Object.entries(Deno.env.toObject()).filter(([k]) => !CONFIG_VARIABLES.includes(k)),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "src/main.ts"],
      cwd: ROOT,
      env: { ...inherited, ...this.env, HTTP_PORT: String(this.port) },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.pids.push(child.pid);
    const pumps: Promise<void>[] = [];
    let stderrPath = "";
    for (const [stream, kind] of [[child.stdout, "stdout"], [child.stderr, "stderr"]] as const) {
      const path = `${this.logDir}/${this.name}.${this.starts}.${kind}.log`;
      if (kind === "stderr") stderrPath = path;
      this.logFiles.push(path);
      const file = await Deno.open(path, { create: true, write: true, truncate: true });
      pumps.push(stream.pipeTo(file.writable).catch(() => {}));
    }
    this.#pumps = pumps;
    child.status.then(async (status) => {
      if (this.#child !== child || this.#expectedExit) return;
      await Promise.all(pumps);
      const stderr = await Deno.readTextFile(stderrPath).catch(() => "");
      // deno-lint-ignore no-control-regex
      const plain = stderr.replace(/\x1b\[[0-9;]*m/g, "");
      const why = plain.split("\n").filter((l) => /error|panic/i.test(l)).slice(0, 2).join(" ").trim();
      this.crashes.push(`exit ${status.code}${why ? `: ${why.slice(0, 200)}` : ""}`);
      this.#child = undefined;
      await sleep(1_000);
      if (!this.#expectedExit && !this.#child) await this.start().catch(() => {});
    });
  }

  /** Waits until `/readyz` answers 200 (broker, consumer, Postgres, Redis and both channels up). */
  async ready(timeoutMs = 30_000): Promise<void> {
    await until(
      async () => {
        const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2_000) });
        const body = await res.text();
        if (res.status !== 200) throw new Error(`readyz ${res.status}: ${body.slice(0, 200)}`);
        return true;
      },
      `${this.name} ready`,
      timeoutMs,
      100,
    );
  }

  /** Sends a signal and waits for the process to end (no supervisor restart). */
  async stop(signal: Deno.Signal = "SIGTERM", timeoutMs = 20_000): Promise<number | undefined> {
    this.#expectedExit = true;
    const child = this.#child;
    if (!child) return undefined;
    try {
      child.kill(signal);
    } catch { /* already gone */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      child.status,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (!status) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
    }
    await Promise.all(this.#pumps);
    this.#pumps = [];
    this.#child = undefined;
    return status?.code;
  }
}

/** What the scenario published on purpose that must end in the DLQ. */
export interface ExpectedDeadLetter {
  id: string;
  reason: string;
  channel?: string;
}

/** Counts the per-scenario line reports. */
export interface WorldCounts {
  sales: number;
  events: number;
  changes: number;
  applied: number;
  failed: number;
  dlq: number;
  [k: string]: number;
}

/** The outcome of the invariant check. */
export interface InvariantReport {
  ok: boolean;
  problems: string[];
  counts: WorldCounts;
  notes: string[];
}

/** Shared servers a scenario can put a proxy in front of; `pos_redis` is Redis as the POS's (POS_REDIS_URL). */
export type ProxyName = "rabbitmq" | "postgres" | "redis" | "pos_redis";

/** Options of {@link World.create}. */
export interface WorldOptions {
  name: string;
  logDir: string;
  seed: number;
  /** Put a TcpProxy in front of these shared servers (the service connects through it). */
  proxies?: ProxyName[];
  /** Extra service variables. */
  env?: Record<string, string>;
  shopifyFaults?: Parameters<ShopifySandbox["setFaults"]>[0];
  meliFaults?: Parameters<MeliSandbox["setFaults"]>[0];
  meliRatePerSecond?: number;
  /** A service process that exits on its own fails the scenario (the supervisor still restarts it). */
  crashIsFailure?: boolean;
  /**
   * A multi-origin MercadoLibre seller: the first two stores are its warehouses (`MELI_LOCATIONS`), in
   * this MeLi mode; MeLi is then checked per location.
   */
  meliLocations?: { mode: "mirror" | "delta" };
}

interface LedgerRow {
  event_id: string;
  channel: string;
  sku: string;
  status: string;
  error_reason: string | null;
}

/** A chaos scenario's world. */
/** Longest one teardown step may take before the run goes on without it. */
const TEARDOWN_STEP_MS = 10_000;

export class World {
  readonly sales: SampleSale[] = [];
  readonly bad: ExpectedDeadLetter[] = [];
  readonly services: ServiceProcess[] = [];
  /** Ledger rows that may legitimately end failed with this reason (e.g. documented outcome_unknown). */
  readonly tolerated = new Map<string, string>();
  readonly notes: string[] = [];
  /** SKUs an operator resynced: resync sets Shopify to the POS value clamped at 0 (README), not below. */
  readonly resyncedSkus = new Set<string>();
  /** The scenario's `STOCK_RULES`, as the service parsed them: a ruled listing shows the rule's value of the POS. */
  stockRules: StockRules = {};
  /**
   * Marketplace orders placed in the sandboxes (issue #14), each with what was put back since: their
   * effects join the invariant (the other channel loses the units, the origin is never lowered again,
   * MercadoLibre mirrors the POS less the orders the POS has not recorded — the chaos POS records none).
   */
  readonly orders: {
    origin: "shopify" | "mercadolibre";
    orderId: string;
    tiendaId: string;
    sku: string;
    quantity: number;
    restocked: number;
    /** The ledger's restock event ids, one per cancellation or refund that put units back. */
    restocks: string[];
  }[] = [];
  /** With `meliLocations`: the stores MercadoLibre keeps stock for → their seller_warehouse store_id. */
  meliLocations: Map<string, string> | undefined;
  #meliInitial = new Map<string, number>();
  #shopifyInitial = new Map<string, number>();
  #publisher: ReturnType<Connection["createPublisher"]>;
  #badSeq = 0;

  private constructor(
    readonly options: WorldOptions,
    readonly id: string,
    readonly catalog: Catalog,
    readonly meliStore: string,
    readonly shopify: ShopifySandbox,
    readonly meli: MeliSandbox,
    readonly redis: Redis,
    readonly rabbit: Connection,
    readonly sql: postgres.Sql,
    readonly topology: Topology,
    readonly proxies: Partial<Record<ProxyName, TcpProxy>>,
    readonly env: Record<string, string>,
    readonly posKeyTemplate: string,
  ) {
    this.#publisher = rabbit.createPublisher({ confirm: true, maxAttempts: 1 });
    for (const p of this.products()) {
      for (const s of catalog.stores) {
        this.#shopifyInitial.set(
          `${p.sku}|${s.tienda_id}`,
          shopify.availableFor(p.producto_id, s.tienda_id)!,
        );
      }
    }
  }

  /** Starts sandboxes, seeds POS stock, declares the topology; the services are not started yet. */
  static async create(options: WorldOptions): Promise<World> {
    const id = `${options.name}_${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
    const catalog = chaosCatalog();
    const meliStore = catalog.stores[0].tienda_id;
    const shopify = await startShopifySandbox({
      catalog,
      faults: { seed: options.seed, ...options.shopifyFaults },
    });
    const warehouses = options.meliLocations
      ? catalog.stores.slice(0, 2).map((st, i) => ({
        store_id: String(1001 + i),
        network_node_id: `MLA${1001 + i}`,
        tienda_id: st.tienda_id,
      }))
      : undefined;
    const meli = await startMeliSandbox({
      catalog,
      tiendaId: meliStore,
      ...(warehouses ? { userTags: ["normal", "warehouse_management"], warehouses } : {}),
      ratePerSecond: options.meliRatePerSecond ?? 80,
      faults: { seed: options.seed, ...options.meliFaults },
    });
    const redis: Redis = createClient({ url: REDIS_URL });
    redis.on("error", () => {});
    await redis.connect();
    const posKeyTemplate = `chaos:${id}:stock:{tienda_id}:{producto_id}`;
    for (const p of catalog.products) {
      for (const s of catalog.stores) {
        await redis.set(
          posKeyTemplate.replace("{tienda_id}", s.tienda_id).replace("{producto_id}", p.producto_id),
          String(p.stock[s.tienda_id] ?? 0),
        );
      }
    }
    const proxies: Partial<Record<ProxyName, TcpProxy>> = {};
    for (const name of options.proxies ?? []) {
      proxies[name] = new TcpProxy({ rabbitmq: 5672, postgres: 5432, redis: 6379, pos_redis: 6379 }[name])
        .start();
    }
    const via = (url: string, name: ProxyName) => {
      const proxy = proxies[name];
      if (!proxy) return url;
      const u = new URL(url);
      u.port = String(proxy.port);
      return u.href.replace(/\/$/, "");
    };
    const schema = `chaos_${id}`.toLowerCase();
    const env: Record<string, string> = {
      RABBITMQ_URL: via(RABBITMQ_URL, "rabbitmq"),
      DATABASE_URL: via(DATABASE_URL, "postgres"),
      REDIS_URL: via(REDIS_URL, "redis"),
      HTTP_HOST: "127.0.0.1",
      ADMIN_TOKEN: randomSecret("chaos-admin-"),
      EXCHANGE: `chaos.${id}`,
      QUEUE: `chaos.${id}.sales`,
      LEDGER_SCHEMA: schema,
      // Long enough to outlast the outages below: a sale is never dead-lettered for a short one.
      RETRY_DELAYS: "500ms,1s,2s,4s,8s",
      CHANNELS: "shopify,mercadolibre",
      SHOPIFY_URL: shopify.url,
      SHOPIFY_TOKEN: shopify.token,
      SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shopify.locations.map((l) => [l.tiendaId, l.id]))),
      // The app's secret, which the sandbox signs its order webhooks with (scenarios that take orders subscribe).
      SHOPIFY_WEBHOOK_SECRET: shopify.webhookSecret,
      MELI_URL: meli.url,
      MELI_CLIENT_ID: meli.clientId,
      MELI_CLIENT_SECRET: meli.clientSecret,
      MELI_REFRESH_TOKEN: meli.currentRefreshToken(),
      ...(warehouses
        ? {
          MELI_LOCATIONS: JSON.stringify(Object.fromEntries(
            warehouses.map((
              w,
            ) => [w.tienda_id, { store_id: w.store_id, network_node_id: w.network_node_id }]),
          )),
          MELI_MODE: options.meliLocations!.mode,
        }
        : { MELI_TIENDA_ID: meliStore }),
      MELI_RATE_PER_SEC: "60",
      POS_STOCK_KEY: posKeyTemplate,
      // The POS catalog a whole-catalog resync reads: every product at every store.
      POS_CATALOG_QUERY: posCatalogQuery(catalog),
      POS_PRODUCT_QUERY: posProductQuery(catalog),
      // The POS's own Redis (same server, its own connection) when the scenario takes it away alone.
      ...(proxies.pos_redis ? { POS_REDIS_URL: via(REDIS_URL, "pos_redis") } : {}),
      // Scenarios run side by side against one Postgres (max_connections 100 by default): a small pool each.
      DATABASE_POOL_SIZE: "4",
      DISPATCH_POLL_INTERVAL: "100ms",
      DISPATCH_BACKOFF_BASE: "200ms",
      DISPATCH_BACKOFF_MAX: "2s",
      // A copy left due by a SIGKILL reaches the DLQ within the settle time, not 30 to 60 s later.
      DLQ_COPY_SWEEP: "3s",
      // A SIGKILLed instance's batches and MeLi listing locks come back within seconds, not 30 s.
      DISPATCH_LEASE: "3s",
      MELI_LOCK_TTL: "3s",
      SHUTDOWN_TIMEOUT: "15s",
      LOG_LEVEL: Deno.env.get("CHAOS_LOG_LEVEL") ?? "info",
      LOG_FORMAT: "json",
      ...options.env,
    };
    const config = loadConfig(env); // fails fast on a bad scenario configuration
    const topology = topologyFromConfig(config);
    const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 200, retryHigh: 2_000 });
    rabbit.on("error", () => {});
    await rabbit.onConnect(10_000, true);
    await declareTopology(rabbit, topology);
    const sql = postgres(DATABASE_URL, {
      max: 2,
      onnotice: () => {},
      connect_timeout: 5,
      connection: { search_path: schema },
    });
    const world = new World(
      options,
      id,
      catalog,
      meliStore,
      shopify,
      meli,
      redis,
      rabbit,
      sql,
      topology,
      proxies,
      env,
      posKeyTemplate,
    );
    world.stockRules = config.stockRules;
    if (warehouses) {
      world.meliLocations = new Map(warehouses.map((w) => [w.tienda_id, w.store_id]));
      for (const p of world.products()) {
        const up = meli.listingFor(p.producto_id)?.userProductId;
        for (const [tiendaId, storeId] of world.meliLocations) {
          const at = up && meli.userProductStock(up)?.locations.find((l) => l.store_id === storeId);
          if (at) world.#meliInitial.set(`${p.sku}|${tiendaId}`, at.quantity);
        }
      }
    }
    return world;
  }

  /** Catalog products with a unique SKU (the ambiguous pair is left out of bursts). */
  products() {
    const count = new Map<string, number>();
    for (const p of this.catalog.products) count.set(p.sku, (count.get(p.sku) ?? 0) + 1);
    return this.catalog.products.filter((p) => count.get(p.sku) === 1);
  }

  /** Adds a service instance (not started). */
  addService(name = `svc${this.services.length + 1}`, env: Record<string, string> = {}): ServiceProcess {
    const s = new ServiceProcess(name, { ...this.env, ...env }, this.options.logDir, freePort());
    this.services.push(s);
    return s;
  }

  /** Starts every added service and waits until each is ready. */
  async startAll(): Promise<void> {
    for (const s of this.services) if (!s.running) await s.start();
    await Promise.all(this.services.map((s) => s.ready()));
  }

  /** Seeded sales over every store and every unique SKU. */
  makeSales(count: number, seed: number): SampleSale[] {
    return sampleSales({
      count,
      stores: this.catalog.stores.length,
      skus: this.catalog.products.length,
      maxItems: 3,
      seed,
      catalog: this.catalog,
    });
  }

  /** Sales at the MeLi store that together sell every unique SKU once. */
  coverAllSkus(): SampleSale[] {
    const products = this.products();
    const out: SampleSale[] = [];
    for (let i = 0; i < products.length; i += 3) out.push(this.meliSale(products.slice(i, i + 3)));
    return out;
  }

  /** A sale at the MeLi store of one unit of each of these products, at 10 each. */
  meliSale(products: ReturnType<World["products"]>): SampleSale {
    const items = products.map((p) => ({
      producto_id: p.producto_id,
      producto_nombre: p.title,
      producto_sku: p.sku,
      cantidad: 1,
      precio_unitario: 10,
      subtotal: 10,
    }));
    return {
      event_id: crypto.randomUUID(),
      tienda_id: this.meliStore,
      total: 10 * items.length,
      metodo_pago: "EFECTIVO",
      items,
      timestamp: new Date().toISOString(),
    };
  }

  /**
   * The POS's reservation, item by item; while Redis is away (a real restart) the POS waits
   * and tries again, as a till would.
   */
  async #reserve(sale: SampleSale): Promise<void> {
    for (const item of sale.items) {
      const deadline = Date.now() + 120_000;
      for (;;) {
        try {
          await reservePosStock(this.redis, this.posKeyTemplate, this.catalog, [{ ...sale, items: [item] }]);
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await sleep(250);
        }
      }
    }
  }

  async #send(body: Buffer, messageId: string): Promise<void> {
    // A publish that fails (broker restarting) is sent again: the service dedupes by event_id.
    const deadline = Date.now() + 120_000;
    for (let attempt = 1;; attempt++) {
      try {
        await this.#publisher.send({
          exchange: this.topology.exchange,
          routingKey: this.topology.routingKey,
          contentType: "application/json",
          durable: true,
          messageId,
        }, body);
        if (attempt > 1) this.counters.republished++;
        return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(250);
      }
    }
  }

  readonly counters = { republished: 0 };

  /** What the POS does for a sale: reserve its stock in Redis, then publish the event. */
  async sell(sale: SampleSale): Promise<void> {
    await this.#reserve(sale);
    this.sales.push(sale);
    await this.#send(Buffer.from(JSON.stringify(sale)), sale.event_id);
  }

  /**
   * Publishes one intentionally bad event of a kind, in rotation: a body that is
   * not JSON, a quantity of 0, and a sale at the MeLi store of an unknown SKU
   * (next to a valid line, which must still be applied).
   */
  async publishBad(): Promise<void> {
    const kind = this.#badSeq++ % 3;
    const id = `chaos-bad-${kind}-${this.id}-${this.#badSeq}`;
    if (kind === 0) {
      this.bad.push({ id, reason: "invalid_json" });
      await this.#send(Buffer.from(`{"event_id": "${id}", "items": [`), id);
    } else if (kind === 1) {
      this.bad.push({ id, reason: "invalid_event" });
      const sale = this.makeSales(1, 1 + this.#badSeq)[0];
      sale.event_id = id;
      sale.items[0].cantidad = 0;
      await this.#send(Buffer.from(JSON.stringify(sale)), id);
    } else {
      const valid = this.products()[2];
      const sale: SampleSale = {
        event_id: id,
        tienda_id: this.meliStore,
        total: 20,
        metodo_pago: "EFECTIVO",
        items: [
          {
            producto_id: crypto.randomUUID(),
            producto_nombre: "no such product",
            producto_sku: "CHAOS-NO-SUCH-SKU",
            cantidad: 1,
            precio_unitario: 10,
            subtotal: 10,
          },
          {
            producto_id: valid.producto_id,
            producto_nombre: valid.title,
            producto_sku: valid.sku,
            cantidad: 1,
            precio_unitario: 10,
            subtotal: 10,
          },
        ],
        timestamp: new Date().toISOString(),
      };
      this.bad.push({ id, reason: "sku_not_found", channel: "shopify" });
      this.bad.push({ id, reason: "sku_not_found", channel: "mercadolibre" });
      // Only the catalog line is reserved (the POS has no such product).
      await this.#reserve({ ...sale, items: [sale.items[1]] });
      this.sales.push(sale);
      await this.#send(Buffer.from(JSON.stringify(sale)), id);
    }
  }

  /**
   * Publishes `sales` (paced at `perSecond` when given) with `badEvery`-th
   * positions followed by an intentionally bad event; `onProgress` sees the count sent.
   */
  async burst(
    sales: SampleSale[],
    options: { perSecond?: number; bad?: number; onProgress?: (sent: number) => void | Promise<void> } = {},
  ): Promise<void> {
    const badAt = new Set(
      Array.from(
        { length: options.bad ?? 3 },
        (_, i) => Math.floor((sales.length * (i + 1)) / ((options.bad ?? 3) + 1)),
      ),
    );
    const started = performance.now();
    for (const [n, sale] of sales.entries()) {
      if (options.perSecond) {
        const wait = started + (n / options.perSecond) * 1000 - performance.now();
        if (wait > 0) await sleep(wait);
      }
      await this.sell(sale);
      if (badAt.has(n)) await this.publishBad();
      await options.onProgress?.(n + 1);
    }
  }

  /** (event, channel, sku) → what the ledger must end with. */
  expectedRows(): Map<string, { status: "applied" | "failed"; reason?: string }> {
    const out = new Map<string, { status: "applied" | "failed"; reason?: string }>();
    const known = new Set(this.catalog.products.map((p) => p.sku));
    for (const sale of this.sales) {
      const skus = new Set(sale.items.map((i) => i.producto_sku));
      for (const sku of skus) {
        const onMeli = this.meliLocations
          ? this.meliLocations.has(sale.tienda_id)
          : sale.tienda_id === this.meliStore;
        const channels = onMeli ? ["mercadolibre", "shopify"] : ["shopify"];
        for (const channel of channels) {
          out.set(
            `${sale.event_id}|${channel}|${sku}`,
            known.has(sku) ? { status: "applied" } : { status: "failed", reason: "sku_not_found" },
          );
        }
      }
    }
    // An order's units leave (and come back to) the OTHER channel only; MercadoLibre only at its store.
    for (const o of this.orders) {
      const other = o.origin === "shopify" ? "mercadolibre" : "shopify";
      if (other === "mercadolibre" && o.tiendaId !== this.meliStore) continue;
      // MercadoLibre's own orders also give MercadoLibre a change of 0: a re-mirror of available stock.
      for (const channel of o.origin === "mercadolibre" ? [other, o.origin] : [other]) {
        out.set(`order:${o.origin}:${o.orderId}|${channel}|${o.sku}`, { status: "applied" });
        for (const r of o.restocks) {
          out.set(`order:${o.origin}:${o.orderId}:restock:${r}|${channel}|${o.sku}`, { status: "applied" });
        }
      }
    }
    return out;
  }

  /** Units of the orders at a store and SKU not put back (what the POS has not recorded: all of them here). */
  ordersHeld(tiendaId: string, sku: string, origin?: "shopify" | "mercadolibre"): number {
    return this.orders.filter((o) =>
      o.tiendaId === tiendaId && o.sku === sku && (!origin || o.origin === origin)
    )
      .reduce((n, o) => n + o.quantity - o.restocked, 0);
  }

  async ledgerRows(): Promise<LedgerRow[]> {
    return await this.sql<LedgerRow[]>`select event_id, channel, sku, status, error_reason from stock_change`;
  }

  async queueDepth(queue: string): Promise<number> {
    return (await this.rabbit.queueDeclare({ queue, passive: true })).messageCount;
  }

  /** Ledger settled: every expected row there, none pending or sending, no batch in flight, queues empty. */
  async settled(): Promise<string | true> {
    const expected = this.expectedRows();
    const rows = await this.ledgerRows();
    const open = rows.filter((r) => r.status === "pending" || r.status === "sending").length;
    if (rows.length < expected.size) return `${rows.length}/${expected.size} ledger rows`;
    if (open > 0) return `${open} changes pending or sending`;
    const [{ n }] = await this.sql<{ n: number }[]>`
      select count(*)::int as n from sync_batch where status = 'sending'`;
    if (n > 0) return `${n} batches sending`;
    for (const q of [this.topology.queue, ...this.topology.retryQueues.map((r) => r.name)]) {
      const depth = await this.queueDepth(q);
      if (depth > 0) return `${depth} messages in ${q}`;
    }
    const dlq = await this.queueDepth(this.topology.deadLetterQueue);
    if (dlq < this.bad.length) return `${dlq}/${this.bad.length} dead letters`;
    const [orders] = await this.sql<{ unpublished: number; unsettled: number }[]>`
      select (select count(*)::int from pos_outbox where published_at is null) as unpublished,
             (select count(*)::int from order_delivery where settled_at is null) as unsettled`;
    if (orders.unpublished > 0) return `${orders.unpublished} POS messages not published`;
    if (orders.unsettled > 0) return `${orders.unsettled} order deliveries not settled`;
    return true;
  }

  /** Waits for {@link settled}; a timeout is reported by the check, not thrown. */
  async converge(timeoutMs: number): Promise<string | undefined> {
    try {
      await until(
        async () => (await this.settled()) === true ? true : undefined,
        "convergence",
        timeoutMs,
        200,
      );
      return undefined;
    } catch {
      return `did not settle within ${timeoutMs} ms: ${await this.settled().catch((e) => String(e))}`;
    }
  }

  async posStock(tiendaId: string, productoId: string): Promise<number> {
    const key = this.posKeyTemplate.replace("{tienda_id}", tiendaId).replace("{producto_id}", productoId);
    return Number(await this.redis.get(key));
  }

  /**
   * The invariant, SKU by SKU: Shopify per store == initial − sold; MeLi ==
   * max(0, POS stock) of the MeLi store; a listing with a stock rule (either
   * channel) == the rule's value of its store's POS stock; ledger: every (event, channel, sku)
   * exactly once, all applied but the intentionally bad ones; no batch left
   * sending; queues empty; the DLQ holding exactly the intentionally bad events.
   */
  async check(settleProblem?: string): Promise<InvariantReport> {
    const problems: string[] = [];
    if (settleProblem) problems.push(settleProblem);
    if (this.options.crashIsFailure) {
      for (const svc of this.services) {
        if (svc.crashes.length > 0) {
          problems.push(`${svc.name}: process ids ${svc.pids.join(" → ")} (${svc.crashes.length} crash(es))`);
        }
      }
    }
    // Shopify: initial − sold, per SKU and store.
    const sold = new Map<string, number>();
    for (const sale of this.sales) {
      for (const item of sale.items) {
        const key = `${item.producto_sku}|${sale.tienda_id}`;
        sold.set(key, (sold.get(key) ?? 0) + item.cantidad);
      }
    }
    let shopifyChecked = 0;
    for (const p of this.products()) {
      for (const s of this.catalog.stores) {
        const key = `${p.sku}|${s.tienda_id}`;
        // Its own orders lowered Shopify directly, MercadoLibre's reach it as deltas at the MeLi store;
        // cancellations and refunds put units back either way.
        const delta = this.#shopifyInitial.get(key)! - (sold.get(key) ?? 0) -
          this.ordersHeld(s.tienda_id, p.sku);
        const rule = resolveRule(this.stockRules, "shopify", s.tienda_id, p.sku);
        const expected = rule
          ? applyRule(rule, await this.posStock(s.tienda_id, p.producto_id))
          : this.resyncedSkus.has(p.sku)
          ? Math.max(0, delta)
          : delta;
        const actual = this.shopify.availableFor(p.producto_id, s.tienda_id);
        shopifyChecked++;
        if (actual !== expected) {
          problems.push(
            `shopify ${p.sku} @ ${s.name}: ${actual}, expected ${expected} (sold ${sold.get(key) ?? 0}` +
              `${rule ? `; rule ${describeRule(rule)}` : ""})`,
          );
        }
      }
    }
    // MeLi: the MeLi store's POS stock, clamped at 0 — or, for a multi-origin seller, each mapped store's
    // warehouse: its POS stock (mirror), its first quantity less that store's sales (delta), clamped at 0.
    let meliChecked = 0;
    for (const p of this.meliLocations ? [] : this.products()) {
      // Available stock: the POS less the orders it has not recorded (mirror mode writes exactly that).
      const pos = await this.posStock(this.meliStore, p.producto_id) - this.ordersHeld(this.meliStore, p.sku);
      const rule = resolveRule(this.stockRules, "mercadolibre", this.meliStore, p.sku);
      const expected = rule ? applyRule(rule, pos) : Math.max(0, pos);
      const actual = this.meli.quantityOf(p.producto_id);
      meliChecked++;
      if (actual !== expected) {
        problems.push(
          `mercadolibre ${p.sku}: ${actual}, expected ${expected} (POS ${pos}${
            rule ? `; rule ${describeRule(rule)}` : ""
          })`,
        );
      }
    }
    for (const [tiendaId, storeId] of this.meliLocations ?? []) {
      for (const p of this.products()) {
        const up = this.meli.listingFor(p.producto_id)?.userProductId;
        const actual = up &&
          this.meli.userProductStock(up)?.locations.find((l) => l.store_id === storeId)?.quantity;
        const initial = this.#meliInitial.get(`${p.sku}|${tiendaId}`);
        if (actual === undefined || initial === undefined) continue; // Full, or no listing: nothing of ours
        const key = `${p.sku}|${tiendaId}`;
        const pos = await this.posStock(tiendaId, p.producto_id);
        const rule = resolveRule(this.stockRules, "mercadolibre", tiendaId, p.sku);
        const expected = rule
          ? applyRule(rule, pos)
          : this.options.meliLocations!.mode === "mirror"
          ? Math.max(0, pos)
          : Math.max(0, initial - (sold.get(key) ?? 0));
        meliChecked++;
        if (actual !== expected) {
          problems.push(
            `mercadolibre ${p.sku} @ warehouse ${storeId}: ${actual}, expected ${expected} (first ${initial}, ` +
              `sold ${sold.get(key) ?? 0}, POS ${pos}${rule ? `; rule ${describeRule(rule)}` : ""})`,
          );
        }
      }
    }
    // The POS told once per order and once per restock, every message published.
    if (this.orders.length > 0) {
      const messages = await this.sql<{ message_id: string; published: boolean }[]>`
        select message_id, published_at is not null as published from pos_outbox`;
      const want = new Set(this.orders.flatMap((o) => [
        `order:${o.origin}:${o.orderId}`,
        ...o.restocks.map((r) => `order:${o.origin}:${o.orderId}:restock:${r}`),
      ]));
      const got = new Set(messages.map((m) => m.message_id));
      for (const id of want) if (!got.has(id)) problems.push(`POS outbox: no message ${id}`);
      for (const m of messages) {
        if (!want.has(m.message_id)) problems.push(`POS outbox: unexpected message ${m.message_id}`);
        if (!m.published) problems.push(`POS outbox: ${m.message_id} not published`);
      }
    }
    // Ledger: exactly the expected rows with the expected outcome.
    const expected = this.expectedRows();
    const rows = await this.ledgerRows();
    const seen = new Set<string>();
    let tolerated = 0;
    let resyncRows = 0;
    for (const r of rows) {
      const key = `${r.event_id}|${r.channel}|${r.sku}`;
      if (r.event_id.startsWith("resync:")) {
        // An operator's resync writes are ledger rows of their own.
        resyncRows++;
        if (r.status !== "applied") problems.push(`ledger: resync change ${key} is ${r.status}`);
        continue;
      }
      if (seen.has(key)) problems.push(`ledger: ${key} twice`);
      seen.add(key);
      const want = expected.get(key);
      if (!want) {
        problems.push(`ledger: unexpected change ${key} (${r.status})`);
        continue;
      }
      const ok = r.status === want.status && (want.reason === undefined || r.error_reason === want.reason);
      if (!ok) {
        if (r.status === "failed" && this.tolerated.get(key) === r.error_reason) {
          tolerated++;
          continue;
        }
        problems.push(
          `ledger: ${key} is ${r.status}${
            r.error_reason ? ` (${r.error_reason})` : ""
          }, expected ${want.status}${want.reason ? ` (${want.reason})` : ""}`,
        );
      }
    }
    for (const key of expected.keys()) if (!seen.has(key)) problems.push(`ledger: missing change ${key}`);
    const [{ n: events }] = await this.sql<{ n: number }[]>`
      select count(*)::int as n from sale where event_id not like 'resync:%' and event_id not like 'order:%'`;
    if (events !== this.sales.length) {
      problems.push(`ledger: ${events} sales stored, expected ${this.sales.length}`);
    }
    const [{ n: sending }] = await this.sql<{ n: number }[]>`
      select count(*)::int as n from sync_batch where status = 'sending'`;
    if (sending > 0) problems.push(`ledger: ${sending} sync_batch rows left 'sending'`);
    for (const q of [this.topology.queue, ...this.topology.retryQueues.map((r) => r.name)]) {
      const depth = await this.queueDepth(q);
      if (depth > 0) problems.push(`queue ${q} still holds ${depth}`);
    }
    // DLQ: exactly the intentionally bad events (drained: this is the end of the scenario).
    const dead: ExpectedDeadLetter[] = [];
    for (;;) {
      const msg = await this.rabbit.basicGet({ queue: this.topology.deadLetterQueue, noAck: true });
      if (!msg) break;
      const h = msg.headers ?? {};
      dead.push({
        id: String(h["sync-event-id"] ?? msg.messageId ?? "?"),
        reason: String(h["sync-reason"] ?? "?"),
        channel: h["sync-channel"] === undefined ? undefined : String(h["sync-channel"]),
      });
    }
    const label = (d: ExpectedDeadLetter) => `${d.id} ${d.reason}${d.channel ? ` ${d.channel}` : ""}`;
    const want = new Map<string, number>();
    for (const d of this.bad) want.set(label(d), (want.get(label(d)) ?? 0) + 1);
    const got = new Map<string, number>();
    for (const d of dead) got.set(label(d), (got.get(label(d)) ?? 0) + 1);
    for (const [k, n] of want) {
      const g = got.get(k) ?? 0;
      if (g === 0) problems.push(`DLQ: missing ${k}`);
      else if (g > n) this.notes.push(`DLQ: ${k} copied ${g} times (at-least-once DLQ copy)`);
    }
    for (const [k] of got) if (!want.has(k)) problems.push(`DLQ: unexpected ${k}`);
    const sh = this.shopify.stats(), ml = this.meli.stats();
    this.notes.push(
      `Shopify sandbox: ${sh.mutationsApplied} adjustments applied, ${sh.idempotentReplays} answered from an ` +
        `idempotency key, ${sh.errorsInjected + sh.lostResponses + sh.internalErrors} 5xx/lost/internal, ` +
        `${sh.throttled} THROTTLED; MeLi sandbox: ${ml.puts} stock PUTs, ${ml.rateLimited} 429, ` +
        `${ml.errorsInjected + ml.lostResponses} 5xx/lost, ${ml.refreshes} token refreshes`,
    );
    let crashes = 0;
    for (const svc of this.services) {
      crashes += svc.crashes.length;
      for (const c of svc.crashes) this.notes.push(`${svc.name} CRASHED (${c}); restarted by the supervisor`);
    }
    const statuses = rows.reduce<Record<string, number>>((acc, r) => {
      acc[r.status] = (acc[r.status] ?? 0) + 1;
      return acc;
    }, {});
    return {
      ok: problems.length === 0,
      problems,
      notes: this.notes,
      counts: {
        sales: this.sales.length - this.bad.filter((b) => b.channel === "shopify").length,
        events: this.sales.length + this.bad.filter((b) => !b.channel).length,
        changes: rows.length,
        applied: statuses.applied ?? 0,
        failed: statuses.failed ?? 0,
        tolerated,
        resync: resyncRows,
        crashes,
        dlq: dead.length,
        shopify_checked: shopifyChecked,
        meli_checked: meliChecked,
      },
    };
  }

  /** Every secret the scenario configured (and the OAuth chain it produced), for the log scan. */
  secrets(): string[] {
    return [
      this.env.ADMIN_TOKEN,
      this.env.SHOPIFY_TOKEN,
      this.env.MELI_CLIENT_SECRET,
      this.env.MELI_REFRESH_TOKEN,
      this.meli.currentRefreshToken(),
    ].filter((s): s is string => Boolean(s));
  }

  /** Stops services, sandboxes and proxies, and removes every queue, schema and key the world made. */
  /**
   * Stops the services and tears the world down, each step bounded (10 s): a step that hangs must not hang
   * the run (a whole `deno test` once waited on one for good). Returns the steps that did not finish.
   */
  async close(): Promise<string[]> {
    const stuck: string[] = [];
    const step = async (what: string, work: () => Promise<unknown>) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) =>
        timer = setTimeout(() => resolve("late"), TEARDOWN_STEP_MS)
      );
      const done = await Promise.race([work().then(() => "done", () => "done"), late]);
      clearTimeout(timer);
      if (done === "late") stuck.push(`${what} did not finish within ${TEARDOWN_STEP_MS / 1000} s`);
    };
    await step("stopping the services", () => Promise.all(this.services.map((s) => s.stop("SIGTERM"))));
    for (const p of Object.values(this.proxies)) p?.close();
    await step("closing the Shopify sandbox", () => this.shopify.close());
    await step("closing the MeLi sandbox", () => this.meli.close());
    await step("deleting the queues", async () => {
      for (
        const q of [
          this.topology.queue,
          ...this.topology.retryQueues.map((r) => r.name),
          this.topology.deadLetterQueue,
        ]
      ) {
        await this.rabbit.queueDelete({ queue: q }).catch(() => {});
      }
      await this.rabbit.exchangeDelete({ exchange: this.topology.exchange }).catch(() => {});
      await this.#publisher.close().catch(() => {});
      await this.rabbit.close().catch(() => {});
    });
    await step("dropping the ledger schema", async () => {
      await this.sql.unsafe(`drop schema if exists ${this.env.LEDGER_SCHEMA} cascade`).catch(() => {});
      await this.sql.end({ timeout: 5 }).catch(() => {});
    });
    await step("clearing Redis", async () => {
      try {
        const keys = [
          ...await this.redis.keys(`chaos:${this.id}:*`),
          ...await this.redis.keys(`marketplace-sync:*${new URL(this.shopify.url).host}*`),
          ...await this.redis.keys(`marketplace-sync:*${new URL(this.meli.url).host}*`),
        ];
        if (keys.length) await this.redis.del(keys);
        await this.redis.close();
      } catch {
        this.redis.destroy();
      }
    });
    return stuck;
  }
}
