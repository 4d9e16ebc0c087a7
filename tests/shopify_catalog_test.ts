/**
 * Shopify's whole catalog read (src/channels/shopify/catalog.ts) against the sandbox: one
 * bulk operation, its JSONL streamed from the storage stand-in without the shop's token,
 * listings at the mapped locations only, handed out in pages while the download runs; the
 * paginated read when Shopify will not start another bulk operation.
 */
import assert from "node:assert/strict";
import { type LocationMap, locationMap } from "../src/channels/shopify/channel.ts";
import { ShopifyCatalog, shopifyCatalog, ShopifyCatalogError } from "../src/channels/shopify/catalog.ts";
import type { ShopifyClient } from "../src/channels/shopify/client.ts";
import { BULK_QUERIES, RUN_BULK_QUERY } from "../src/channels/shopify/documents.ts";
import type { ShopifyListings } from "../src/channels/shopify/listings.ts";
import { ShopifyStock } from "../src/channels/shopify/stock.ts";
import { createMetrics, type ServiceMetrics } from "../src/metrics.ts";
import { buildCatalog, type Catalog } from "../src/sandbox/catalog.ts";
import {
  type ShopifySandbox,
  type ShopifySandboxOptions,
  startShopifySandbox,
} from "../src/sandbox/shopify/sandbox.ts";
import type { CatalogListing } from "../src/sync/channel.ts";
import { LocalBucket } from "../src/sync/cost_bucket.ts";
import { sandboxShopifyClient } from "./helpers.ts";

/** A bucket generous enough that the paginated reads are not slowed by the Standard plan's 100 points/s. */
const WIDE_BUCKET = { maximumAvailable: 1_000_000, restoreRate: 1_000_000 };

interface Setup {
  sandbox: ShopifySandbox;
  client: ShopifyClient;
  metrics: ServiceMetrics;
  reader: ShopifyCatalog;
  /** Every store mapped to its location. */
  everyStore: LocationMap;
}

async function withCatalog(
  fn: (s: Setup) => Promise<void>,
  options: {
    catalog?: Catalog;
    sandbox?: ShopifySandboxOptions;
    map?: (sandbox: ShopifySandbox) => LocationMap;
  } = {},
): Promise<void> {
  const sandbox = await startShopifySandbox({
    catalog: options.catalog ?? buildCatalog({ stores: 3, skus: 60, seed: 7 }),
    bulkDelayMs: 20,
    bucket: WIDE_BUCKET,
    ...options.sandbox,
  });
  try {
    const metrics = createMetrics("shopify_catalog_test_", () => Promise.resolve([]));
    const client = sandboxShopifyClient(sandbox, {
      timeoutMs: 10_000,
      budget: new LocalBucket({ max: WIDE_BUCKET.maximumAvailable, restoreRate: WIDE_BUCKET.restoreRate }),
      metrics,
    });
    const everyStore = locationMap(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id])));
    const reader = shopifyCatalog(client, options.map?.(sandbox) ?? everyStore, {
      pollBackoff: () => 10,
      retryBackoff: () => 10,
    });
    await fn({ sandbox, client, metrics, reader, everyStore });
  } finally {
    await sandbox.close();
  }
}

async function readAll(reader: ShopifyCatalog, signal?: AbortSignal): Promise<CatalogListing[][]> {
  const pages: CatalogListing[][] = [];
  for await (const page of reader.listings(signal)) pages.push(page);
  return pages;
}

/** Calls the client made, by operation name. */
async function callsByOperation(metrics: ServiceMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.marketplaceCalls.get()).values) {
    const op = String(v.labels.operation);
    out[op] = (out[op] ?? 0) + v.value;
  }
  return out;
}

/** What Shopify holds: one expected listing per (item with a SKU, location), from the sandbox's state. */
function expected(sandbox: ShopifySandbox, locations: string[]) {
  return sandbox.variants.filter((v) => v.sku).flatMap((v) =>
    locations.map((location) => ({
      sku: v.sku,
      place: location,
      quantity: sandbox.available(v.inventoryItemId, location)!,
      ref: { item: v.inventoryItemId, location },
    }))
  );
}

const byKey = (a: CatalogListing, b: CatalogListing) =>
  `${a.sku}|${a.place}|${(a.ref as { item: string }).item}`.localeCompare(
    `${b.sku}|${b.place}|${(b.ref as { item: string }).item}`,
  );

Deno.test("the whole catalog, N SKUs × M locations, comes in pages with Shopify's exact quantities", async () => {
  await withCatalog(async ({ sandbox, reader, metrics, client, everyStore }) => {
    const first = sandbox.variants[0];
    const stock = new ShopifyStock(client, undefined as unknown as ShopifyListings, everyStore, "correction");
    const pages = await readAll(reader);
    const all = pages.flat();
    assert.equal(all.length, 1_200 * 4, "every SKU at every location");
    assert.deepEqual(pages.map((p) => p.length), [...Array(9).fill(500), 300], "pages of 500");
    assert.deepEqual(
      [...all].sort(byKey),
      expected(sandbox, sandbox.locations.map((l) => l.id)).sort(byKey),
      "sku, place, quantity and ref exactly as Shopify holds them; nothing marked unwritable",
    );
    assert.equal(reader.report?.source, "bulk");
    assert.equal(reader.report?.listings, 4_800);
    assert.deepEqual(
      { items: reader.report?.items, withoutSku: reader.report?.itemsWithoutSku },
      { items: 1_200, withoutSku: 0 },
    );
    // One bulk operation, polled; no page or per-SKU query.
    const calls = await callsByOperation(metrics);
    assert.equal(calls.RunBulkQuery, 1);
    assert.ok(calls.BulkOperationStatus >= 1);
    assert.deepEqual(Object.keys(calls).sort(), ["BulkOperationStatus", "RunBulkQuery"]);
    assert.equal(sandbox.stats().bulkOperations, 1);

    // The ref is what the resync write path sets.
    const listing = all.find((l) => (l.ref as { item: string }).item === first.inventoryItemId)!;
    const written = await stock.write(
      { ok: true, quantity: listing.quantity, ref: listing.ref },
      77,
      "gid://t/R/1",
    );
    assert.deepEqual(written, { kind: "written", quantityAfter: 77 });
    assert.equal(sandbox.available(first.inventoryItemId, listing.place), 77);
  }, { catalog: buildCatalog({ stores: 4, skus: 1_200, seed: 3 }) });
});

Deno.test("levels at a location the map does not name are not returned; a default location is read", async () => {
  let mapped: string[] = [];
  await withCatalog(async ({ sandbox, reader }) => {
    const all = (await readAll(reader)).flat();
    assert.equal(all.length, 60 * 2);
    assert.deepEqual(new Set(all.map((l) => l.place)), new Set(mapped));
    assert.deepEqual(all.sort(byKey), expected(sandbox, mapped).sort(byKey));
    assert.equal(reader.report?.levels, 60 * 4, "read, then dropped");
    assert.equal(reader.report?.levelsUnmapped, 60 * 2);
  }, {
    catalog: buildCatalog({ stores: 4, skus: 60, seed: 5 }),
    map: (sb) => {
      mapped = [sb.locations[1].id, sb.locations[3].id];
      return locationMap({ [sb.locations[1].tiendaId]: mapped[0], [sb.locations[3].tiendaId]: mapped[1] });
    },
  });
  // SHOPIFY_LOCATION_ID alone: one location serves every store.
  await withCatalog(async ({ sandbox, reader }) => {
    const all = (await readAll(reader)).flat();
    assert.deepEqual(new Set(all.map((l) => l.place)), new Set([sandbox.locations[2].id]));
    assert.equal(all.length, 60);
  }, { map: (sb) => locationMap({}, sb.locations[2].id) });
});

for (const source of ["bulk", "pages"] as const) {
  Deno.test(`${source}: a SKU on two items is listed for both, unwritable; items without a SKU are skipped and counted`, async () => {
    await withCatalog(async ({ sandbox, reader }) => {
      const original = sandbox.variants[4];
      const twin = sandbox.createVariant({
        sku: original.sku,
        available: { [sandbox.locations[0].tiendaId]: 9 },
      });
      sandbox.createVariant({ sku: "", available: { [sandbox.locations[0].tiendaId]: 4 } });
      if (source === "pages") await occupyBulkOperations(sandbox);
      const all = (await readAll(reader)).flat();
      assert.equal(reader.report?.source, source);
      assert.equal(all.length, (60 + 1) * 3, "the twin's listings too; none for the item without a SKU");
      assert.ok(all.every((l) => l.sku !== ""));
      const shared = all.filter((l) => l.sku === original.sku);
      assert.equal(shared.length, 2 * 3);
      for (const l of shared) {
        assert.equal(l.unwritable?.reason, "ambiguous_sku");
        assert.ok(l.unwritable?.error.includes(original.inventoryItemId), l.unwritable?.error);
        assert.ok(l.unwritable?.error.includes(twin.inventoryItemId), l.unwritable?.error);
      }
      assert.deepEqual(
        shared.filter((l) =>
          (l.ref as { item: string }).item === twin.inventoryItemId && l.place === sandbox.locations[0].id
        )
          .map((l) => l.quantity),
        [9],
      );
      assert.ok(all.filter((l) => l.sku !== original.sku).every((l) => l.unwritable === undefined));
      assert.equal(reader.report?.itemsWithoutSku, 1);
      assert.equal(reader.report?.ambiguousSkus, 1);
      assert.equal(reader.report?.items, 62);
    }, source === "pages" ? { sandbox: { bulkDelayMs: 60_000 } } : {});
  });
}

Deno.test("the result is downloaded from the storage host without the shop's access token", async () => {
  await withCatalog(async ({ sandbox, reader }) => {
    await readAll(reader);
    const [operation] = sandbox.bulkOperations();
    assert.equal(operation.status, "COMPLETED");
    const result = new URL(operation.url!);
    const api = new URL(sandbox.url);
    assert.equal(result.hostname, "localhost", "another host name than the API's");
    assert.notEqual(result.hostname, api.hostname);
    assert.notEqual(result.port, api.port);
    assert.deepEqual(sandbox.storageStats(), { downloads: 2, credentialsRefused: 0, refused: 0 });
    // The storage host refuses the token outright (so a client that sent it would fail here, loudly).
    const leaked = await fetch(operation.url!, { headers: { "x-shopify-access-token": sandbox.token } });
    assert.equal(leaked.status, 400);
    assert.match(await leaked.text(), /access token must not be sent/);
    assert.equal(sandbox.storageStats().credentialsRefused, 1);
    // And the URL is its only credential: without its signature nothing is served.
    const unsigned = await fetch(`${result.origin}${result.pathname}`);
    assert.equal(unsigned.status, 403);
    await unsigned.body?.cancel();
  });
});

Deno.test("a FAILED bulk operation surfaces as an error that says why", async () => {
  await withCatalog(async ({ sandbox, reader }) => {
    sandbox.setFaults({ bulkFailure: "INTERNAL_SERVER_ERROR" });
    await assert.rejects(readAll(reader), (e: unknown) => {
      assert.ok(e instanceof ShopifyCatalogError);
      assert.equal(e.reason, "bulk_operation_failed");
      assert.match(
        e.message,
        /bulk operation gid:\/\/shopify\/BulkOperation\/\d+ FAILED \(INTERNAL_SERVER_ERROR\)/,
      );
      assert.match(e.message, /trying again may work/);
      return true;
    });
    sandbox.setFaults({ bulkFailure: "ACCESS_DENIED" });
    await assert.rejects(readAll(reader), /FAILED \(ACCESS_DENIED\): the app lacks an access scope/);
    assert.equal(sandbox.storageStats().downloads, 0);
    sandbox.setFaults({ bulkFailure: null });
    assert.equal((await readAll(reader)).flat().length, 60 * 3, "the next read works");
  });
});

/** Someone else's bulk operations: as many as Shopify lets the app run at once, still running. */
async function occupyBulkOperations(sandbox: ShopifySandbox): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const res = await fetch(sandbox.graphqlUrl, {
      method: "POST",
      headers: { "content-type": "application/json", "x-shopify-access-token": sandbox.token },
      body: JSON.stringify({ query: RUN_BULK_QUERY, variables: { query: BULK_QUERIES.InventoryLevels } }),
    });
    const body = await res.json();
    assert.deepEqual(body.data.bulkOperationRunQuery.userErrors, []);
  }
}

Deno.test("with the app's bulk operations all running, the catalog is read in pages, never per SKU", async () => {
  await withCatalog(async ({ sandbox, reader, metrics }) => {
    await occupyBulkOperations(sandbox);
    const pages = await readAll(reader);
    const all = pages.flat();
    assert.equal(reader.report?.source, "pages");
    assert.deepEqual(all.sort(byKey), expected(sandbox, sandbox.locations.map((l) => l.id)).sort(byKey));
    assert.ok(pages.every((p) => p.length <= 500));
    const calls = await callsByOperation(metrics);
    assert.deepEqual(calls, {
      RunBulkQuery: 1, // refused: OPERATION_IN_PROGRESS
      InventoryItemsPage: 3, // 600 items, 250 a page
      LocationLevelsPage: 3 * 3, // 3 locations, 250 levels a page
    });
    assert.equal(sandbox.bulkOperations().length, 5, "no operation of ours was started");
  }, { catalog: buildCatalog({ stores: 3, skus: 600, seed: 11 }), sandbox: { bulkDelayMs: 60_000 } });
});

Deno.test("pages are handed out while the result is still downloading (the file is never held whole)", async () => {
  await withCatalog(async ({ sandbox, reader }) => {
    const sizes: number[] = [];
    let firstPageDownload: { sent: number; size: number; done: boolean } | undefined;
    for await (const page of reader.listings()) {
      if (sizes.length === 0) firstPageDownload = sandbox.downloads().at(-1);
      sizes.push(page.length);
    }
    assert.equal(sizes.reduce((a, b) => a + b, 0), 5_000 * 3);
    assert.ok(sizes.slice(0, -1).every((n) => n === 500), "full pages until the last");
    assert.equal(sandbox.downloads().length, 2, "items, then levels");
    assert.ok(firstPageDownload, "a download was under way");
    assert.equal(firstPageDownload.done, false, "the first page came before the download ended");
    assert.ok(
      firstPageDownload.sent < firstPageDownload.size / 2,
      `only ${firstPageDownload.sent} of ${firstPageDownload.size} bytes sent when the first page came`,
    );
    assert.ok(sandbox.downloads().every((d) => d.done && d.sent === d.size));
  }, { catalog: buildCatalog({ stores: 3, skus: 5_000, seed: 13 }), sandbox: { downloadChunkDelayMs: 2 } });
});

Deno.test("an empty shop is an empty catalog; an aborted read stops", async () => {
  await withCatalog(async ({ sandbox, reader }) => {
    for (const v of [...sandbox.variants]) sandbox.deleteVariant(v.sku);
    assert.deepEqual(await readAll(reader), []);
    assert.equal(sandbox.bulkOperations()[0].url, null, "Shopify gives no URL when it found nothing");
  });
  await withCatalog(async ({ reader }) => {
    const controller = new AbortController();
    const reading = readAll(reader, controller.signal);
    controller.abort(new Error("stop"));
    await assert.rejects(reading, /stop/);
  }, { sandbox: { bulkDelayMs: 60_000 } });
});
