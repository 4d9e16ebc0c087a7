/**
 * Reads a store's current stock from the POS, the source of truth for
 * MercadoLibre's mirror mode and for resync (docs/DESIGN.md §3): the Redis key the
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
  /** SELECT returning a SKU's producto_id at a store: $1 tienda_id, $2 sku. */
  productQuery?: string;
}

/** Thrown when neither source could be asked (both down): the caller retries later. */
export class StockSourceUnavailableError extends Error {
  override name = "StockSourceUnavailableError";
}

/**
 * Renumbers a query's `$n` placeholders to the ones it uses, with their values:
 * Postgres cannot type a parameter the query never mentions, and operators
 * write queries that need only the SKU or only the id.
 */
export function bindUsed(query: string, values: unknown[]): { query: string; params: unknown[] } {
  const used = [...new Set([...query.matchAll(/\$(\d+)\b/g)].map((m) => Number(m[1])))]
    .filter((n) => n >= 1 && n <= values.length).sort((a, b) => a - b);
  const renumber = new Map(used.map((n, i) => [n, i + 1]));
  return {
    query: query.replace(
      /\$(\d+)\b/g,
      (all, n) => renumber.has(Number(n)) ? `$${renumber.get(Number(n))}` : all,
    ),
    params: used.map((n) => values[n - 1]),
  };
}

/**
 * Whether a query error says the query does not fit the database (SQLSTATE class 42, "syntax error or
 * access rule violation"), as opposed to a passing failure (connection, timeout, shutdown).
 */
export function isSchemaMisfit(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^42[0-9A-Z]{3}$/.test(code);
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

  /** The POS's producto_id of a SKU at a store (resync knows SKUs, the Redis key wants ids). */
  async productoId(tiendaId: string, sku: string): Promise<string | null> {
    if (!this.options.productQuery) return null;
    try {
      const bound = bindUsed(this.options.productQuery, [tiendaId, sku]);
      const rows = await this.options.sql.unsafe(bound.query, bound.params as string[]);
      const value = rows[0] ? Object.values(rows[0])[0] : null;
      return value == null ? null : String(value);
    } catch {
      return null; // no catalog table: the stock query's SKU fallback still applies
    }
  }

  /**
   * Current stock of one product at one store.
   * @throws StockSourceUnavailableError when Redis and Postgres both failed.
   */
  async read(key: StockKey): Promise<StockReading> {
    const redisKey = this.keyFor(key);
    let redisError: string | undefined;
    // Redis could not be asked at all (as opposed to answering with a missing or bad key).
    let redisDown = false;
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
        redisDown = true;
      }
    } else if (redisKey) {
      redisError = "Redis not connected";
      redisDown = true;
    }
    let rows: Record<string, unknown>[];
    try {
      const bound = bindUsed(this.options.query, [key.tiendaId, key.productoId, key.sku]);
      rows = await this.options.sql.unsafe(bound.query, bound.params as string[]);
    } catch (error) {
      const message = (error as Error).message;
      // Only a query that does not fit the POS schema (SQLSTATE class 42: no such table or column,
      // a syntax error, an untyped parameter) makes the stock unknown — a configuration problem a
      // person must fix. Anything else (a dropped connection, a timeout, Postgres restarting) passes:
      // the stock is unreadable now and the change waits. With Redis (the source of truth) down
      // even a misfit query only means "unreadable now".
      if (!redisDown && isSchemaMisfit(error)) {
        return { found: false, reason: `POS_STOCK_QUERY failed: ${message}` };
      }
      throw new StockSourceUnavailableError(
        `${redisError ?? "Redis has no stock key"}; Postgres: ${message}`,
      );
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
