/**
 * The POS's whole catalog at a set of stores — every product it sells there, with its current stock — read
 * in pages, for a resync of everything (`{"all": true}`). The products come from the POS database
 * (`POS_CATALOG_QUERY`, paged by keyset: each page is one short query, so no transaction or cursor stays open
 * on the POS while the pages are used) or, in sandbox mode, from the sandbox catalog. Each page's stock is
 * read the way {@link PosStockReader} reads one product, in bulk: one Redis MGET, one stock query.
 * Read only: the service never writes POS data.
 */
import type { Sql } from "postgres";
import { textArrayLiteral } from "./pg_array.ts";
import {
  isSchemaMisfit,
  type PosStockReader,
  type StockKey,
  type StockOrigin,
  StockSourceUnavailableError,
} from "./stock.ts";

/** A product at a store, as the POS lists it. */
export type PosProduct = StockKey;

/** Why a product's stock is unknown: reported by resync, never guessed. */
export interface UnknownStock {
  reason: "stock_unknown";
  /** A sentence a person can act on (which key was missing, how the stock query failed). */
  error: string;
}

/** One catalog row: a product at a store with its stock, or why its stock is unknown. */
export type PosCatalogRow =
  | PosProduct & { quantity: number; origin: StockOrigin }
  | PosProduct & { unknown: UnknownStock };

/** Where the catalog's products come from: the POS database, or the sandbox catalog. */
export interface PosProductSource {
  /** The products at `stores`, in pages of at most `size`, each (store, SKU, producto_id) once, in a stable order. */
  products(stores: string[], size: number, signal?: AbortSignal): AsyncIterable<PosProduct[]>;
}

/** Thrown when `POS_CATALOG_QUERY` does not fit the POS database (a configuration problem a person must fix). */
export class PosCatalogError extends Error {
  override name = "PosCatalogError";
}

/** Products per page when the caller does not say. */
export const DEFAULT_CATALOG_PAGE_SIZE = 500;

/** Options of {@link PosCatalog}. */
export interface PosCatalogOptions {
  products: PosProductSource;
  stock: PosStockReader;
  /** Products per page (default {@link DEFAULT_CATALOG_PAGE_SIZE}). */
  pageSize?: number;
}

/** The POS catalog with its stock, page by page. */
export class PosCatalog {
  readonly pageSize: number;

  constructor(private readonly options: PosCatalogOptions) {
    this.pageSize = options.pageSize ?? DEFAULT_CATALOG_PAGE_SIZE;
    if (!Number.isInteger(this.pageSize) || this.pageSize < 1) throw new RangeError("pageSize must be ≥ 1");
  }

  /**
   * Every product at `stores` with its stock, a page at a time (only one page is held). A product whose stock
   * is unknown (no Redis key and no stock query row, or a stock query that does not fit the POS schema) is
   * yielded with the reason, not dropped.
   * @throws StockSourceUnavailableError when the POS cannot be read now (Redis and Postgres down, a dropped
   *   connection, a timeout): the caller tries again later.
   * @throws PosCatalogError when `POS_CATALOG_QUERY` does not fit the POS database.
   */
  async *pages(stores: string[], signal?: AbortSignal): AsyncIterable<PosCatalogRow[]> {
    const wanted = [...new Set(stores)];
    if (wanted.length === 0) return;
    for await (const products of this.options.products.products(wanted, this.pageSize, signal)) {
      signal?.throwIfAborted();
      const readings = await this.options.stock.readMany(products);
      yield products.map(({ tiendaId, sku, productoId }, i): PosCatalogRow => {
        const reading = readings[i];
        return reading.found
          ? { tiendaId, sku, productoId, quantity: reading.quantity, origin: reading.origin }
          : { tiendaId, sku, productoId, unknown: { reason: "stock_unknown", error: reading.reason } };
      });
    }
  }
}

/**
 * One page of the operator's catalog query (config-validated, never input; it goes where the comment is),
 * its first three columns renamed (tienda_id, sku, producto_id) and compared as text in byte order: $1 the
 * stores, $2–$4 the last row of the page before (null on the first page), $5 the page size. A missing
 * producto_id is '' here, so the keyset comparison never meets a null.
 */
const CATALOG_PAGE_QUERY = `
  select c.tienda_id, c.sku, c.producto_id
    from (select distinct q.tienda_id::text collate "C" as tienda_id, q.sku::text collate "C" as sku,
                 coalesce(q.producto_id::text, '') collate "C" as producto_id
            from (/* POS_CATALOG_QUERY */) as q(tienda_id, sku, producto_id)
           where q.tienda_id::text = any($1::text[]) and q.sku is not null) as c
   where $2::text is null or (c.tienda_id, c.sku, c.producto_id) > ($2::text, $3::text, $4::text)
   order by c.tienda_id, c.sku, c.producto_id
   limit $5::int`;

/** The page query around an operator's `POS_CATALOG_QUERY`. */
export function catalogPageQuery(query: string): string {
  const inner = query.trim().replace(/;\s*$/, "");
  return CATALOG_PAGE_QUERY.replace("/* POS_CATALOG_QUERY */", () => inner);
}

/** The POS database's products: `POS_CATALOG_QUERY`, a page per query (keyset pagination). */
export class PosCatalogQuery implements PosProductSource {
  readonly #page: string;

  /** @param query `POS_CATALOG_QUERY`: a SELECT of (tienda_id, sku, producto_id) with $1 the store ids. */
  constructor(private readonly sql: Sql, query: string) {
    this.#page = catalogPageQuery(query);
  }

  async *products(stores: string[], size: number, signal?: AbortSignal): AsyncIterable<PosProduct[]> {
    if (stores.length === 0) return;
    let after: [string, string, string] | null = null;
    for (;;) {
      signal?.throwIfAborted();
      const params = [textArrayLiteral(stores), ...(after ?? [null, null, null]), size];
      let rows: string[][];
      try {
        rows = await this.sql.unsafe(this.#page, params as never).values() as string[][];
      } catch (error) {
        const message = (error as Error).message;
        if (isSchemaMisfit(error)) throw new PosCatalogError(`POS_CATALOG_QUERY failed: ${message}`);
        throw new StockSourceUnavailableError(`the POS catalog cannot be read now: ${message}`);
      }
      if (rows.length > 0) {
        yield rows.map(([tiendaId, sku, productoId]) => ({ tiendaId, sku, productoId: productoId || null }));
      }
      if (rows.length < size) return;
      const [tiendaId, sku, productoId] = rows[rows.length - 1];
      after = [tiendaId, sku, productoId];
    }
  }
}
