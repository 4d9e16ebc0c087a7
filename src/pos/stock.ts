/**
 * Reads a store's current stock from the POS, the source of truth for
 * MercadoLibre's mirror mode and for resync (docs/DESIGN.md §3): the Redis key the
 * POS reserves against (freshest), then its Postgres catalog (may lag a moment).
 * Read only: the service never writes POS data.
 */
import type { Sql } from "postgres";
import { textArrayLiteral } from "./pg_array.ts";

/** The part of a node-redis client the reader uses. */
export interface StockRedis {
  readonly isReady: boolean;
  get(key: string): Promise<string | null>;
  /** Many keys in one round trip (a catalog page); read one by one when absent. */
  mGet?(keys: string[]): Promise<(string | null)[]>;
}

/** Where a stock value came from, for the audit trail. */
export type StockOrigin = "redis" | "postgres";

/** A stock reading; `quantity` is what the POS holds, possibly negative (oversold). */
export type StockReading =
  | {
    found: true;
    quantity: number;
    origin: StockOrigin;
    key?: string;
    /** Units taken off the POS's number for marketplace orders the POS has not recorded (available stock). */
    heldByOrders?: number;
  }
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

/**
 * The stock query's shape for many products: the operator's query (config-validated, never input) goes
 * where the comment is; the products are bound as three parallel text[] parameters.
 */
const BATCHED_STOCK_QUERY = "select marketplace_sync_product.n, stock.* " +
  "from unnest($1::text[], $2::text[], $3::text[]) " +
  "with ordinality as marketplace_sync_product(tienda_id, producto_id, sku, n) " +
  "left join lateral (/* POS_STOCK_QUERY */) as stock on true";

/**
 * The stock query run once for many products: its `$1` (tienda_id), `$2` (producto_id) and `$3` (sku) become
 * the columns of the product list it is joined to laterally. The result's first column is the product's
 * position in the list (1-based); the query's own columns follow.
 */
export function batchedStockQuery(query: string): string {
  const columns = ["tienda_id", "producto_id", "sku"];
  const inner = query.trim().replace(/;\s*$/, "").replace(/\$(\d+)\b/g, (all, n) => {
    const column = columns[Number(n) - 1];
    return column ? `marketplace_sync_product.${column}` : all;
  });
  return BATCHED_STOCK_QUERY.replace("/* POS_STOCK_QUERY */", () => inner);
}

/** What Redis said of one product. */
interface RedisAnswer {
  raw?: string | null;
  /** Why Redis gave no usable value, when it gave none for a reason other than a missing key. */
  error?: string;
  /** Redis could not be asked at all (as opposed to answering with a missing or bad key). */
  down: boolean;
}

/** The stock query's first column for one product (undefined: no row), or the error the query failed with. */
type QueryAnswer = { value: unknown } | { error: unknown };

/** Reads POS stock: Redis first, the Postgres query as fallback. */
export class PosStockReader {
  /** Whether the stock query runs once for many products; false once only its one-product form proved to fit. */
  #batched = true;

  constructor(private readonly options: PosStockReaderOptions) {}

  /** The Redis key for a product at a store, or undefined when the template needs a missing producto_id. */
  keyFor(key: StockKey): string | undefined {
    return stockKey(this.options.keyTemplate, key);
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
    return (await this.readMany([key]))[0];
  }

  /**
   * Current stock of many products (a catalog page), each read as {@link read} reads one, in bulk: one Redis
   * MGET for their keys, then one stock query for the products Redis did not answer (one query per product
   * when the stock query does not fit a batch).
   * @throws StockSourceUnavailableError when a product's stock cannot be read now (Redis and Postgres both failed).
   */
  async readMany(keys: StockKey[]): Promise<StockReading[]> {
    const redisKeys = keys.map((key) => this.keyFor(key));
    const answers = await this.#fromRedis(redisKeys);
    const readings: StockReading[] = new Array(keys.length);
    const left: number[] = [];
    keys.forEach((_, i) => {
      const { raw } = answers[i];
      if (raw != null) {
        const quantity = Number(raw);
        if (Number.isInteger(quantity)) {
          readings[i] = { found: true, quantity, origin: "redis", key: redisKeys[i] };
          return;
        }
        answers[i].error = `Redis key ${redisKeys[i]} holds "${raw.slice(0, 40)}", not an integer`;
      }
      left.push(i);
    });
    if (left.length === 0) return readings;
    const queried = await this.#fromQuery(left.map((i) => keys[i]));
    left.forEach((i, j) => readings[i] = settle(keys[i], redisKeys[i], answers[i], queried[j]));
    return readings;
  }

  async #fromRedis(redisKeys: (string | undefined)[]): Promise<RedisAnswer[]> {
    const answers: RedisAnswer[] = redisKeys.map(() => ({ down: false }));
    const asked = redisKeys.flatMap((key, i) => key ? [i] : []);
    if (asked.length === 0) return answers;
    const { redis } = this.options;
    const fail = (error: string) => asked.forEach((i) => Object.assign(answers[i], { error, down: true }));
    if (!redis.isReady) {
      fail("Redis not connected");
      return answers;
    }
    const keys = asked.map((i) => redisKeys[i]!);
    try {
      const raws = keys.length > 1 && redis.mGet
        ? await redis.mGet(keys)
        : await Promise.all(keys.map((key) => redis.get(key)));
      asked.forEach((i, j) => answers[i].raw = raws[j]);
    } catch (error) {
      fail(`Redis: ${(error as Error).message}`);
    }
    return answers;
  }

  async #fromQuery(keys: StockKey[]): Promise<QueryAnswer[]> {
    if (keys.length > 1 && this.#batched) {
      try {
        return await this.#queryBatch(keys);
      } catch (error) {
        if (!isSchemaMisfit(error)) return keys.map(() => ({ error }));
        // Either the query does not fit the schema at all, or only its batched form does not (a
        // parameter Postgres typed from a column is a text column of the join there): one product
        // asked alone tells which.
        const [first] = await this.#queryEach(keys.slice(0, 1));
        if ("error" in first) return keys.map(() => first);
        this.#batched = false;
        return [first, ...await this.#queryEach(keys.slice(1))];
      }
    }
    return await this.#queryEach(keys);
  }

  async #queryBatch(keys: StockKey[]): Promise<QueryAnswer[]> {
    const batched = batchedStockQuery(this.options.query);
    const params = [
      textArrayLiteral(keys.map((k) => k.tiendaId)),
      textArrayLiteral(keys.map((k) => k.productoId)),
      textArrayLiteral(keys.map((k) => k.sku)),
    ];
    const rows = await this.options.sql.unsafe(batched, params as never).values();
    const answers: QueryAnswer[] = keys.map(() => ({ value: undefined }));
    const seen = new Set<number>();
    for (const row of rows) {
      const n = Number(row[0]) - 1;
      // The first row of each product, as a one-product query's first row.
      if (!seen.has(n)) answers[n] = { value: row[1] };
      seen.add(n);
    }
    return answers;
  }

  /** One query per product; the first failure stands for the rest (the same statement fails alike). */
  async #queryEach(keys: StockKey[]): Promise<QueryAnswer[]> {
    const answers: QueryAnswer[] = [];
    for (const key of keys) {
      try {
        const bound = bindUsed(this.options.query, [key.tiendaId, key.productoId, key.sku]);
        const rows = await this.options.sql.unsafe(bound.query, bound.params as string[]);
        answers.push({ value: rows[0] ? Object.values(rows[0])[0] : undefined });
      } catch (error) {
        while (answers.length < keys.length) answers.push({ error });
        break;
      }
    }
    return answers;
  }
}

/** The Redis key of a product at a store, or undefined when the template needs a producto_id the key lacks. */
export function stockKey(template: string, key: StockKey): string | undefined {
  if (template.includes("{producto_id}") && !key.productoId) return undefined;
  return template.replaceAll("{tienda_id}", key.tiendaId)
    .replaceAll("{producto_id}", key.productoId ?? "")
    .replaceAll("{sku}", key.sku);
}

/** A product's reading from what Redis and the stock query said. */
function settle(
  key: StockKey,
  redisKey: string | undefined,
  redis: RedisAnswer,
  queried: QueryAnswer,
): StockReading {
  if ("error" in queried) {
    const message = (queried.error as Error).message;
    // Only a query that does not fit the POS schema (SQLSTATE class 42: no such table or column,
    // a syntax error, an untyped parameter) makes the stock unknown — a configuration problem a
    // person must fix. Anything else (a dropped connection, a timeout, Postgres restarting) passes:
    // the stock is unreadable now and the change waits. With Redis (the source of truth) down
    // even a misfit query only means "unreadable now".
    if (!redis.down && isSchemaMisfit(queried.error)) {
      return { found: false, reason: `POS_STOCK_QUERY failed: ${message}` };
    }
    throw new StockSourceUnavailableError(`${redis.error ?? "Redis has no stock key"}; Postgres: ${message}`);
  }
  const { value } = queried;
  if (value === undefined || value === null) {
    return {
      found: false,
      reason: `no stock for SKU ${key.sku} at store ${key.tiendaId}: ` +
        `${
          redisKey
            ? `Redis key ${redisKey} ${redis.error ?? "is missing"}`
            : "no producto_id for the Redis key"
        }` +
        " and POS_STOCK_QUERY returned no row",
    };
  }
  const quantity = Number(value);
  if (!Number.isFinite(quantity)) {
    return {
      found: false,
      reason: `POS_STOCK_QUERY returned "${String(value)}", not a number`,
    };
  }
  return { found: true, quantity: Math.trunc(quantity), origin: "postgres" };
}
