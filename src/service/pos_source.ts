/**
 * The POS's stock and catalog, read where the POS keeps them: its Redis keys, then its Postgres.
 * Opened on first use (MercadoLibre's mirror mode, resync), on the POS's own
 * connections when they are configured apart from the service's.
 */
import type postgres from "postgres";
import type { Config } from "../config.ts";
import { PosCatalog, PosCatalogQuery } from "../pos/catalog.ts";
import { PosStockReader, type StockRedis } from "../pos/stock.ts";
import { closeRedis, openPostgres, openRedis, type RedisClient } from "./connections.ts";

/** The POS stock reader, the POS catalog, and the connections they opened. */
export class PosSource {
  #reader: PosStockReader | undefined;
  #catalog: PosCatalog | undefined;
  #sql: postgres.Sql | undefined;
  #redis: RedisClient | undefined;

  /** @param sharedRedis the service's Redis, used when POS_REDIS_URL is the same or unset. */
  constructor(private readonly config: Config, private readonly sharedRedis: StockRedis) {}

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
    this.#reader = new PosStockReader({
      redis,
      sql: this.#sql,
      keyTemplate: config.POS_STOCK_KEY,
      query: config.POS_STOCK_QUERY,
      productQuery: config.POS_PRODUCT_QUERY,
    });
    return this.#reader;
  }

  /** The whole POS catalog with stock, in pages (resync of everything); opens the reader's connections. */
  catalog(): PosCatalog {
    if (this.#catalog) return this.#catalog;
    const stock = this.reader();
    this.#catalog = new PosCatalog({
      products: new PosCatalogQuery(this.#sql!, this.config.POS_CATALOG_QUERY),
      stock,
    });
    return this.#catalog;
  }

  /** Closes what {@link reader} opened. */
  async close(): Promise<void> {
    await this.#sql?.end({ timeout: 5 });
    await closeRedis(this.#redis);
  }
}
