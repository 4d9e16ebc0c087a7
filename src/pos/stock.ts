/**
 * Reads a store's current stock from the POS, the source of truth for
 * MercadoLibre's mirror mode and for resync (DESIGN.md §3): the Redis key the
 * POS reserves against (freshest), then its Postgres catalog (may lag a moment).
 * Read only: the service never writes POS data.
 */
import type { Sql } from "postgres";

/** The part of a node-redis client the reader uses. */
export interface StockRedis {
  readonly isReady: boolean;
  get(key: string): Promise<string | null>;
}

/** Where a stock value came from, for the audit trail. */
export type StockOrigin = "redis" | "postgres";

/** A stock reading; `quantity` is what the POS holds, possibly negative (oversold). */
export type StockReading =
  | { found: true; quantity: number; origin: StockOrigin; key?: string }
  | { found: false; reason: string };

/** What identifies one product at one store. */
export interface StockKey {
  tiendaId: string;
  productoId: string | null;
  sku: string;
}

/** Options of {@link PosStockReader}. */
export interface PosStockReaderOptions {
  redis: StockRedis;
  sql: Sql;
  /** Key template with `{tienda_id}`, `{producto_id}` and/or `{sku}`. */
  keyTemplate: string;
  /** SELECT returning one row whose first column is the stock: $1 tienda_id, $2 producto_id, $3 sku. */
  query: string;
}

/** Thrown when neither source could be asked (both down): the caller retries later. */
export class StockSourceUnavailableError extends Error {
  override name = "StockSourceUnavailableError";
}

/** Reads POS stock: Redis first, the Postgres query as fallback. */
export class PosStockReader {
  constructor(private readonly options: PosStockReaderOptions) {}

  /** The Redis key for a product at a store, or undefined when the template needs a missing producto_id. */
  keyFor(key: StockKey): string | undefined {
    const template = this.options.keyTemplate;
    if (template.includes("{producto_id}") && !key.productoId) return undefined;
    return template.replaceAll("{tienda_id}", key.tiendaId)
      .replaceAll("{producto_id}", key.productoId ?? "")
      .replaceAll("{sku}", key.sku);
  }

  /**
   * Current stock of one product at one store.
   * @throws StockSourceUnavailableError when Redis and Postgres both failed.
   */
  async read(key: StockKey): Promise<StockReading> {
    const redisKey = this.keyFor(key);
    let redisError: string | undefined;
    if (redisKey && this.options.redis.isReady) {
      try {
        const raw = await this.options.redis.get(redisKey);
        if (raw !== null) {
          const quantity = Number(raw);
          if (Number.isInteger(quantity)) return { found: true, quantity, origin: "redis", key: redisKey };
          redisError = `Redis key ${redisKey} holds "${raw.slice(0, 40)}", not an integer`;
        }
      } catch (error) {
        redisError = `Redis: ${(error as Error).message}`;
      }
    } else if (redisKey) {
      redisError = "Redis not connected";
    }
    let rows: Record<string, unknown>[];
    try {
      rows = await this.options.sql.unsafe(this.options.query, [key.tiendaId, key.productoId, key.sku]);
    } catch (error) {
      const message = (error as Error).message;
      // A query that does not fit the POS schema is a configuration problem, not an outage.
      if (/does not exist|syntax error|could not determine/i.test(message) || !redisError) {
        return { found: false, reason: `POS_STOCK_QUERY failed: ${message}` };
      }
      throw new StockSourceUnavailableError(`${redisError}; Postgres: ${message}`);
    }
    const value = rows[0] ? Object.values(rows[0])[0] : undefined;
    if (value === undefined || value === null) {
      return {
        found: false,
        reason: `no stock for SKU ${key.sku} at store ${key.tiendaId}: ` +
          `${
            redisKey
              ? `Redis key ${redisKey} ${redisError ?? "is missing"}`
              : "no producto_id for the Redis key"
          }` +
          " and POS_STOCK_QUERY returned no row",
      };
    }
    const quantity = Number(value);
    if (!Number.isFinite(quantity)) {
      return { found: false, reason: `POS_STOCK_QUERY returned "${String(value)}", not a number` };
    }
    return { found: true, quantity: Math.trunc(quantity), origin: "postgres" };
  }
}
