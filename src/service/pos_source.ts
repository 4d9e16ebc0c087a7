/**
 * The POS's stock and catalog, read where the POS keeps them: its Redis keys, then its Postgres.
 * Opened on first use (MercadoLibre's mirror mode, resync), on the POS's own
 * connections when they are configured apart from the service's.
 *
 * In sandbox mode with no POS configured (no POS_REDIS_URL, no POS_DATABASE_URL) the POS is the
 * sandbox's: its catalog lists the products, and its stock keys are seeded in Redis before the
 * first read (src/sandbox/pos/pos.ts).
 */
import type postgres from "postgres";
import { type Config, sandboxMode } from "../config.ts";
import { logger } from "../log.ts";
import { PosCatalog, PosCatalogQuery, type PosProduct, type PosProductSource } from "../pos/catalog.ts";
import { AvailableStockReader, type UnrecordedUnits } from "../pos/available.ts";
import { PosStockReader, type StockRedis } from "../pos/stock.ts";
import type { Catalog } from "../sandbox/catalog.ts";
import { closeRedis, openPostgres, openRedis, type RedisClient } from "./connections.ts";
import { sandboxCatalogLoader } from "./sandbox_catalog.ts";

const log = logger("sandbox");

/**
 * Whether the POS is the sandbox's: sandbox mode (no marketplace configured) and no POS of its own
 * configured. A configured POS is never written to, not even in sandbox mode.
 */
export function sandboxPos(config: Config): boolean {
  return sandboxMode(config) && !config.POS_REDIS_URL && !config.POS_DATABASE_URL;
}

/** The POS stock reader, the POS catalog, and the connections they opened. */
export class PosSource {
  #reader: PosStockReader | undefined;
  #catalog: PosCatalog | undefined;
  #sql: postgres.Sql | undefined;
  #redis: RedisClient | undefined;
  /** The sandbox POS's stock keys, seeded (sandbox mode only). */
  #seeded: Promise<void> | undefined;

  /**
   * @param sharedRedis the service's Redis, used when POS_REDIS_URL is the same or unset.
   * @param sandboxCatalog the sandbox catalog (sandbox mode only); loaded here when not given.
   * @param unrecorded units of marketplace orders the POS has not recorded: given, the reader answers
   *   available stock (the POS's number less them), as every absolute write needs (issue #14).
   */
  constructor(
    private readonly config: Config,
    private readonly sharedRedis: RedisClient,
    private readonly sandboxCatalog: () => Promise<Catalog> = sandboxCatalogLoader(config),
    private readonly unrecorded?: UnrecordedUnits,
  ) {}

  /** The reader, opening its connections the first time. */
  reader(): PosStockReader {
    if (this.#reader) return this.#reader;
    const { config } = this;
    this.#sql = openPostgres(config.POS_DATABASE_URL ?? config.DATABASE_URL, {
      max: 2,
      name: "marketplace-sync pos-reader",
      statementTimeoutMs: 5_000,
    });
    let redis = this.sharedRedis;
    if (config.POS_REDIS_URL && config.POS_REDIS_URL !== config.REDIS_URL) {
      // Silent: a POS key that cannot be read is reported where it is read (stock unknown, retried).
      redis = this.#redis = openRedis(config.POS_REDIS_URL);
    }
    const options = {
      redis: sandboxPos(config) ? this.#afterSeed(redis) : redis,
      sql: this.#sql,
      keyTemplate: config.POS_STOCK_KEY,
      query: config.POS_STOCK_QUERY,
      productQuery: config.POS_PRODUCT_QUERY,
    };
    this.#reader = this.unrecorded
      ? new AvailableStockReader(options, this.unrecorded)
      : new PosStockReader(options);
    return this.#reader;
  }

  /** The whole POS catalog with stock, in pages (resync of everything); opens the reader's connections. */
  catalog(): PosCatalog {
    if (this.#catalog) return this.#catalog;
    const stock = this.reader();
    const products: PosProductSource = sandboxPos(this.config)
      ? { products: (stores, size, signal) => this.#sandboxProducts(stores, size, signal) }
      : new PosCatalogQuery(this.#sql!, this.config.POS_CATALOG_QUERY);
    this.#catalog = new PosCatalog({ products, stock });
    return this.#catalog;
  }

  /** Closes what {@link reader} opened. */
  async close(): Promise<void> {
    await this.#sql?.end({ timeout: 5 });
    await closeRedis(this.#redis);
  }

  /** The sandbox catalog's products (the sandbox code is loaded only here, in sandbox mode). */
  async *#sandboxProducts(stores: string[], size: number, signal?: AbortSignal): AsyncIterable<PosProduct[]> {
    const [{ SandboxProducts }, catalog] = await Promise.all([
      import("../sandbox/pos/pos.ts"),
      this.sandboxCatalog(),
    ]);
    yield* new SandboxProducts(catalog).products(stores, size, signal);
  }

  /** Seeds the sandbox POS's stock keys, once; never rejects. */
  #seed(redis: RedisClient): Promise<void> {
    return this.#seeded ??= (async () => {
      try {
        const [{ seedPosStock }, catalog] = await Promise.all([
          import("../sandbox/pos/pos.ts"),
          this.sandboxCatalog(),
        ]);
        // Each SET waits for Redis to be ready: a command queued on a client that is not connected would
        // hold up its graceful close at shutdown.
        let readyAgain: Promise<unknown> | undefined;
        const whenReady = {
          set: async (key: string, value: string, options: { NX: true }) => {
            if (!redis.isReady) {
              await (readyAgain ??= new Promise((resolve) => redis.once("ready", resolve))
                .finally(() => readyAgain = undefined));
            }
            return await redis.set(key, value, options);
          },
        };
        const created = await seedPosStock(whenReady, this.config.POS_STOCK_KEY, catalog);
        log.info(
          "sandbox POS: stock keys {template} for {stores} stores × {products} products ({created} set now, " +
            "the rest kept)",
          {
            template: this.config.POS_STOCK_KEY,
            stores: catalog.stores.length,
            products: catalog.products.length,
            created,
          },
        );
      } catch (error) {
        log.warning("sandbox POS: could not seed the stock keys: {error}", {
          error: (error as Error).message,
        });
      }
    })();
  }

  /**
   * The POS Redis as the reader sees it in sandbox mode: a read waits for the seed. (The reader asks Redis
   * only when it is ready, and the seed goes on whenever Redis is ready: a read never waits on an outage
   * it would not have waited on anyway.)
   */
  #afterSeed(redis: RedisClient): StockRedis {
    // Started now, so the keys are there by the time the first sale or resync reads them.
    const seeded = this.#seed(redis);
    return {
      get isReady() {
        return redis.isReady;
      },
      get: async (key) => {
        await seeded;
        return await redis.get(key);
      },
      mGet: async (keys) => {
        await seeded;
        return await redis.mGet(keys);
      },
    };
  }
}
