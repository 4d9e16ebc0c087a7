/**
 * Shopify's whole catalog for resync: `available` of every inventory item at every
 * location the configuration maps, read in bulk and handed out page by page.
 *
 * The read is one bulk query operation (`bulkOperationRunQuery`), polled by its id with
 * a bounded backoff until Shopify has written the result, then downloaded from where
 * its `url` points: a signed URL on Shopify's storage host (`SHOPIFY_BULK_HOST`), not
 * the shop, so it is fetched plainly, WITHOUT the access token. The JSONL is parsed line
 * by line from the response stream, never held whole: one line per inventory item
 * (`id`, `sku`) and one per inventory level (`location`, `quantities`, `__parentId` =
 * the item). Since 2026-01 Shopify does not group a level's line after its item's by
 * default, and a SKU is only known to be on one item once every item has been seen, so
 * the file is read twice: first the items (an index of item → SKU and of SKUs on more
 * than one item), then the levels, which become listings. Memory is the index, not
 * the file.
 *
 * When Shopify refuses to start the operation because the app already runs as many as
 * it may (another replica, a script with the same app), the catalog is read through
 * ordinary paginated queries instead: the items' SKUs 250 a page, then each mapped
 * location's levels 250 a page — never one call per SKU.
 *
 * A listing's `ref` is `{ item, location }`, what `ShopifyStock.read` (./stock.ts) returns, so
 * the resync write path can set it. Items without a SKU are skipped and counted; a SKU
 * on several items is listed for each of them, marked unwritable (`ambiguous_sku`).
 */
import { logger } from "../../log.ts";
import { type Backoff, exponential } from "../../resilience/backoff.ts";
import type { CatalogListing, ChannelCatalog } from "../../sync/channel.ts";
import { sleep } from "../../sync/cost_bucket.ts";
import type { LocationMap } from "./channel.ts";
import type { CallResult, ShopifyClient } from "./client.ts";
import {
  BULK_OPERATION_STATUS,
  BULK_QUERIES,
  INVENTORY_ITEMS_PAGE,
  LOCATION_LEVELS_PAGE,
  RUN_BULK_QUERY,
} from "./documents.ts";

const log = logger("shopify");

/** Shopify's page size limit (the paginated fallback asks for full pages). */
const PAGE_LIMIT = 250;

/** Options of {@link ShopifyCatalog}. */
export interface ShopifyCatalogOptions {
  /** Listings per page handed out (500 by default). */
  pageSize?: number;
  /** Wait before the n-th status poll of the bulk operation (1 s, doubling to 15 s, by default). */
  pollBackoff?: Backoff;
  /** How long the bulk operation may take before the read gives up, in ms (1 h by default). */
  pollTimeoutMs?: number;
  /** Wait before resending a call that failed transiently, by failures so far (1 s doubling to 30 s). */
  retryBackoff?: Backoff;
  /** Transient failures of one call before the read gives up (8 by default). */
  maxCallFailures?: number;
}

/** What the last (or current) read saw. */
export interface CatalogReadReport {
  /** `bulk`: one bulk operation; `pages`: paginated queries (a bulk operation could not start). */
  source: "bulk" | "pages";
  bulkOperationId?: string;
  /** Inventory items seen. */
  items: number;
  /** Items without a SKU: skipped. */
  itemsWithoutSku: number;
  /** SKUs found on more than one item: listed, marked unwritable. */
  ambiguousSkus: number;
  /** Inventory levels read. */
  levels: number;
  /** Levels at locations the map does not name: not listed. */
  levelsUnmapped: number;
  /** Mapped locations Shopify does not know (paginated read only; the bulk read just finds no levels there). */
  missingLocations: string[];
  /** Listings handed out. */
  listings: number;
}

/** The catalog could not be read; `reason` is a short code, the message says what to do. */
export class ShopifyCatalogError extends Error {
  override name = "ShopifyCatalogError";
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

interface RunBulkQuery {
  bulkOperationRunQuery: {
    bulkOperation: { id: string; status: string } | null;
    userErrors: { field: string[] | null; message: string; code: string | null }[];
  } | null;
}

interface BulkOperationStatus {
  bulkOperation: {
    id: string;
    status: string;
    errorCode: string | null;
    objectCount: string;
    url: string | null;
    partialDataUrl: string | null;
  } | null;
}

interface InventoryItemsPage {
  inventoryItems: {
    nodes: { id: string; sku: string | null }[];
    pageInfo: { hasNextPage: boolean; endCursor: string | null };
  };
}

interface LocationLevelsPage {
  location: {
    id: string;
    inventoryLevels: {
      nodes: {
        item: { id: string; sku: string | null };
        quantities: { name: string; quantity: number }[];
      }[];
      pageInfo: { hasNextPage: boolean; endCursor: string | null };
    };
  } | null;
}

/** A level's line in the bulk result. */
interface LevelLine {
  location?: { id?: string };
  quantities?: { name: string; quantity: number }[];
  __parentId: string;
}

/** Why a bulk operation failed, in words an operator can act on (BulkOperationErrorCode). */
const FAILURE_HINTS: Record<string, string> = {
  ACCESS_DENIED: "the app lacks an access scope the query needs (read_inventory)",
  INTERNAL_SERVER_ERROR: "Shopify's servers failed while running it; trying again may work",
  TIMEOUT: "the query timed out inside Shopify; trying again may work",
};

/** Item → SKU, and the SKUs more than one item carries. */
class ItemIndex {
  #skuOf = new Map<string, string>();
  /** SKU → its first item; SKUs on several items move to #shared with all of them. */
  #first = new Map<string, string>();
  #shared = new Map<string, string[]>();
  items = 0;
  withoutSku = 0;

  add(item: string, sku: string | null | undefined): void {
    this.items++;
    if (!sku) {
      this.withoutSku++;
      return;
    }
    this.#skuOf.set(item, sku);
    const first = this.#first.get(sku);
    if (first === undefined) this.#first.set(sku, item);
    else this.#shared.set(sku, [...(this.#shared.get(sku) ?? [first]), item]);
  }

  sku(item: string): string | undefined {
    return this.#skuOf.get(item);
  }

  get ambiguousSkus(): number {
    return this.#shared.size;
  }

  /**
   * The items sharing `sku` when `item` carrying it makes it ambiguous: several items had it
   * when indexed, or the item got it (or appeared) after the index was made and another has it.
   */
  sharing(sku: string, item: string): string[] | undefined {
    const shared = this.#shared.get(sku);
    if (shared) return shared.includes(item) ? shared : [...shared, item];
    const first = this.#first.get(sku);
    return first !== undefined && first !== item ? [first, item] : undefined;
  }
}

/** Reads Shopify's whole catalog at the mapped locations. */
export class ShopifyCatalog implements ChannelCatalog {
  #report: CatalogReadReport | undefined;
  readonly #pageSize: number;
  readonly #pollBackoff: Backoff;
  readonly #pollTimeoutMs: number;
  readonly #retryBackoff: Backoff;
  readonly #maxCallFailures: number;

  constructor(
    private readonly client: ShopifyClient,
    private readonly locations: LocationMap,
    options: ShopifyCatalogOptions = {},
  ) {
    this.#pageSize = options.pageSize ?? 500;
    this.#pollBackoff = options.pollBackoff ??
      exponential({ baseMs: 1_000, maxMs: 15_000, firstAttempt: 1, jitter: { down: 0.2 } });
    this.#pollTimeoutMs = options.pollTimeoutMs ?? 3_600_000;
    this.#retryBackoff = options.retryBackoff ??
      exponential({ baseMs: 1_000, maxMs: 30_000, firstAttempt: 1, jitter: 0.2 });
    this.#maxCallFailures = options.maxCallFailures ?? 8;
  }

  /** What the last (or current) read saw; undefined before the first. */
  get report(): Readonly<CatalogReadReport> | undefined {
    return this.#report;
  }

  async *listings(signal?: AbortSignal): AsyncGenerator<CatalogListing[]> {
    const places = new Set(this.locations.locations());
    const report: CatalogReadReport = this.#report = {
      source: "bulk",
      items: 0,
      itemsWithoutSku: 0,
      ambiguousSkus: 0,
      levels: 0,
      levelsUnmapped: 0,
      missingLocations: [],
      listings: 0,
    };
    if (places.size === 0) return;
    const started = await this.#startBulk(signal);
    if (started.kind === "busy") {
      log.warning(
        "Shopify would not start another bulk operation ({error}): reading the catalog page by page instead",
        { error: started.error },
      );
      report.source = "pages";
      yield* this.#pages(places, report, signal);
    } else {
      report.bulkOperationId = started.id;
      yield* this.#bulk(started.id, places, report, signal);
    }
    log.info(
      "Shopify catalog read ({source}): {listings} listings at {locations} location(s); " +
        "{itemsWithoutSku} item(s) without a SKU skipped, {ambiguousSkus} SKU(s) on several items",
      { ...report, locations: places.size },
    );
  }

  /** Starts the bulk operation, or says Shopify is busy with others of this app. */
  async #startBulk(
    signal?: AbortSignal,
  ): Promise<{ kind: "started"; id: string } | { kind: "busy"; error: string }> {
    // A resend after a lost answer may leave an operation of ours running unpolled: it
    // completes on its own and only counts against the app's limit meanwhile.
    const data = await this.#ask(
      () =>
        this.client.call<RunBulkQuery>(
          "RunBulkQuery",
          RUN_BULK_QUERY,
          { query: BULK_QUERIES.InventoryLevels },
          signal,
        ),
      signal,
    );
    const payload = data.bulkOperationRunQuery;
    const errors = payload?.userErrors ?? [];
    const summary = errors.map((e) => `${e.code ?? "ERROR"}: ${e.message}`).join("; ");
    const busy = errors.some((e) =>
      e.code === "OPERATION_IN_PROGRESS" || e.code === "LIMIT_REACHED" ||
      /already in progress/i.test(e.message)
    );
    if (busy) return { kind: "busy", error: summary };
    if (errors.length > 0 || !payload?.bulkOperation) {
      throw new ShopifyCatalogError(
        "bulk_query_refused",
        `Shopify would not start the catalog's bulk operation: ${summary || "no operation returned"}`,
      );
    }
    return { kind: "started", id: payload.bulkOperation.id };
  }

  /** Polls the operation until Shopify has written its result: its URL, or null when it found nothing. */
  async #result(id: string, signal?: AbortSignal): Promise<string | null> {
    const deadline = Date.now() + this.#pollTimeoutMs;
    for (let poll = 1;; poll++) {
      const wait = Math.min(this.#pollBackoff(poll), Math.max(0, deadline - Date.now()));
      await sleep(wait, signal);
      signal?.throwIfAborted();
      const data = await this.#ask(
        () =>
          this.client.call<BulkOperationStatus>("BulkOperationStatus", BULK_OPERATION_STATUS, { id }, signal),
        signal,
      );
      const operation = data.bulkOperation;
      if (!operation) {
        throw new ShopifyCatalogError("bulk_operation_missing", `Shopify has no bulk operation ${id}`);
      }
      if (operation.status === "COMPLETED") return operation.url;
      if (operation.status === "FAILED") {
        const code = operation.errorCode ?? "no error code";
        throw new ShopifyCatalogError(
          "bulk_operation_failed",
          `Shopify bulk operation ${id} FAILED (${code}): ${FAILURE_HINTS[code] ?? "see Shopify's status"}` +
            (operation.partialDataUrl ? "; its partial result is not used" : ""),
        );
      }
      if (operation.status !== "CREATED" && operation.status !== "RUNNING") {
        throw new ShopifyCatalogError(
          "bulk_operation_ended",
          `Shopify bulk operation ${id} ended ${operation.status} (someone canceled it, or its result expired)`,
        );
      }
      if (Date.now() >= deadline) {
        throw new ShopifyCatalogError(
          "bulk_operation_timeout",
          `Shopify bulk operation ${id} still ${operation.status} after ${
            Math.round(this.#pollTimeoutMs / 1000)
          } s (${operation.objectCount} objects so far)`,
        );
      }
    }
  }

  async *#bulk(
    id: string,
    places: Set<string>,
    report: CatalogReadReport,
    signal?: AbortSignal,
  ): AsyncGenerator<CatalogListing[]> {
    const url = await this.#result(id, signal);
    if (url === null) return; // completed with nothing found: the shop has no inventory items
    // Pass 1: the items. A line is a level's when it names its parent (checked before parsing:
    // `"__parentId"` cannot occur unescaped inside a string value).
    const index = new ItemIndex();
    for await (const line of jsonLines(url, (raw) => !raw.includes('"__parentId"'), signal)) {
      index.add(line.id as string, line.sku as string | null);
    }
    report.items = index.items;
    report.itemsWithoutSku = index.withoutSku;
    report.ambiguousSkus = index.ambiguousSkus;
    // Pass 2: the levels, as listings.
    let page: CatalogListing[] = [];
    for await (const raw of jsonLines(url, (text) => text.includes('"__parentId"'), signal)) {
      const line = raw as unknown as LevelLine;
      report.levels++;
      const location = line.location?.id;
      if (!location || !places.has(location)) {
        report.levelsUnmapped++;
        continue;
      }
      const item = line.__parentId;
      const sku = index.sku(item);
      if (sku === undefined) continue; // an item without a SKU, counted in pass 1
      page.push(listingOf(item, sku, location, available(line.quantities), index));
      if (page.length >= this.#pageSize) {
        report.listings += page.length;
        yield page;
        page = [];
      }
    }
    if (page.length > 0) {
      report.listings += page.length;
      yield page;
    }
  }

  /** The same listings through paginated queries: item SKUs first, then each location's levels. */
  async *#pages(
    places: Set<string>,
    report: CatalogReadReport,
    signal?: AbortSignal,
  ): AsyncGenerator<CatalogListing[]> {
    const index = new ItemIndex();
    for (let after: string | null = null, more = true; more;) {
      const cursor: string | null = after;
      const data: InventoryItemsPage = await this.#ask(
        () =>
          this.client.call<InventoryItemsPage>(
            "InventoryItemsPage",
            INVENTORY_ITEMS_PAGE,
            { first: PAGE_LIMIT, after: cursor },
            signal,
          ),
        signal,
      );
      for (const node of data.inventoryItems.nodes) index.add(node.id, node.sku);
      ({ hasNextPage: more, endCursor: after } = data.inventoryItems.pageInfo);
    }
    report.items = index.items;
    report.itemsWithoutSku = index.withoutSku;
    report.ambiguousSkus = index.ambiguousSkus;
    let page: CatalogListing[] = [];
    for (const location of places) {
      for (let after: string | null = null, more = true; more;) {
        const cursor: string | null = after;
        const data: LocationLevelsPage = await this.#ask(
          () =>
            this.client.call<LocationLevelsPage>(
              "LocationLevelsPage",
              LOCATION_LEVELS_PAGE,
              { location, first: PAGE_LIMIT, after: cursor },
              signal,
            ),
          signal,
        );
        if (!data.location) {
          log.warning("Shopify has no location {location}: check SHOPIFY_LOCATIONS / SHOPIFY_LOCATION_ID", {
            location,
          });
          report.missingLocations.push(location);
          break;
        }
        for (const level of data.location.inventoryLevels.nodes) {
          report.levels++;
          const { id: item, sku } = level.item;
          if (!sku) continue; // without a SKU: counted by the items pass (or new since, skipped all the same)
          page.push(listingOf(item, sku, location, available(level.quantities), index));
          if (page.length >= this.#pageSize) {
            report.listings += page.length;
            yield page;
            page = [];
          }
        }
        ({ hasNextPage: more, endCursor: after } = data.location.inventoryLevels.pageInfo);
      }
    }
    if (page.length > 0) {
      report.listings += page.length;
      yield page;
    }
  }

  /**
   * Sends one call until Shopify answers it: transient failures wait (Shopify's own hint, or the
   * retry backoff) and are retried up to the limit; throttling does not count against it.
   */
  async #ask<T>(send: () => Promise<CallResult<T>>, signal?: AbortSignal): Promise<T> {
    for (let failures = 0;;) {
      const result = await send();
      if (result.kind === "ok") return result.data;
      signal?.throwIfAborted();
      if (result.kind === "retry") {
        if (result.countsAsAttempt) failures++;
        if (failures < this.#maxCallFailures) {
          await sleep(result.waitMs ?? this.#retryBackoff(Math.max(1, failures)), signal);
          signal?.throwIfAborted();
          continue;
        }
        throw new ShopifyCatalogError("shopify_unavailable", `Shopify did not answer: ${result.error}`);
      }
      throw new ShopifyCatalogError(
        result.kind === "unauthorized" ? "unauthorized" : result.reason,
        `Shopify refused the catalog read: ${result.error}`,
      );
    }
  }
}

/** `available` among a level's quantities (0 when Shopify leaves it out). */
function available(quantities: { name: string; quantity: number }[] | undefined): number {
  return quantities?.find((q) => q.name === "available")?.quantity ?? 0;
}

function listingOf(item: string, sku: string, location: string, quantity: number, index: ItemIndex) {
  const listing: CatalogListing = { sku, place: location, quantity, ref: { item, location } };
  const sharing = index.sharing(sku, item);
  if (sharing) {
    listing.unwritable = {
      reason: "ambiguous_sku",
      error: `several Shopify inventory items have SKU "${sku}" (${sharing.join(", ")}); make it unique`,
    };
  }
  return listing;
}

/**
 * The JSON objects of a JSONL download, one per line, parsed as the body streams in; only
 * lines `keep` accepts are parsed. The URL is signed and carries its own credentials: the
 * request sends no others (never the shop's access token), and errors name only its host.
 */
async function* jsonLines(
  url: string,
  keep: (line: string) => boolean,
  signal?: AbortSignal,
): AsyncGenerator<Record<string, unknown>> {
  const host = new URL(url).host;
  let response: Response;
  try {
    response = await fetch(url, { signal });
  } catch (error) {
    signal?.throwIfAborted();
    throw new ShopifyCatalogError(
      "bulk_download_failed",
      `downloading the bulk result from ${host}: ${(error as Error).message}`,
    );
  }
  if (!response.ok || !response.body) {
    const text = await response.text().catch(() => "");
    throw new ShopifyCatalogError(
      "bulk_download_failed",
      `downloading the bulk result from ${host}: HTTP ${response.status} ${text.slice(0, 200)}`,
    );
  }
  let rest = "";
  let number = 0;
  const parse = (line: string) => {
    number++;
    if (!line.trim() || !keep(line)) return undefined;
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new ShopifyCatalogError("bulk_result_malformed", `line ${number} of the bulk result is not JSON`);
    }
  };
  for await (const chunk of response.body.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      const parsed = parse(line);
      if (parsed) yield parsed;
    }
  }
  const last = parse(rest);
  if (last) yield last;
}

/** The Shopify catalog reader, as the plug builds it: `shopifyCatalog(client, locations)`. */
export function shopifyCatalog(
  client: ShopifyClient,
  locations: LocationMap,
  options?: ShopifyCatalogOptions,
): ShopifyCatalog {
  return new ShopifyCatalog(client, locations, options);
}
