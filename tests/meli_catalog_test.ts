/**
 * MercadoLibre's whole catalog read against the sandbox over real HTTP: the scan in
 * scroll pages, the multi-get 20 at a time, the live channel's SKU rules, flags for
 * listings MeLi would not take a write for, and what happens when the scroll expires
 * or MeLi answers 429 in the middle.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import { MeliCatalog, meliCatalog, MeliCatalogError } from "../src/channels/mercadolibre/catalog.ts";
import { MeliClient } from "../src/channels/mercadolibre/client.ts";
import { MeliListings } from "../src/channels/mercadolibre/listings.ts";
import { MeliStock } from "../src/channels/mercadolibre/stock.ts";
import { StaticToken } from "../src/channels/mercadolibre/tokens.ts";
import { createMetrics } from "../src/metrics.ts";
import { buildCatalog, type Catalog, parseCatalog } from "../src/sandbox/catalog.ts";
import {
  type MeliSandbox,
  type MeliSandboxOptions,
  startMeliSandbox,
} from "../src/sandbox/mercadolibre/sandbox.ts";
import type { CatalogListing } from "../src/sync/channel.ts";
import { type BucketShape, LocalBucket, type RateBudget } from "../src/sync/cost_bucket.ts";
import { ListingLocks } from "../src/sync/listing_lock.ts";
import { DATABASE_URL, integration, REDIS_URL, uniqueName } from "./helpers.ts";

/**
 * 260 products in blocks of 10: seven items of their own and one item with three
 * variations per block, so 208 items (three scan pages of 100) and 260 listings.
 */
function bigCatalog(): Catalog {
  const catalog = buildCatalog({ skus: 260, stores: 1, seed: 13 });
  catalog.products.forEach((p, i) => {
    if (i % 10 >= 1 && i % 10 <= 3) p.meli_item = `GROUP-${Math.floor(i / 10)}`;
  });
  return catalog;
}

/** Counts the budget's drains: what the client does on a 429 so every replica backs off. */
class WatchedBudget implements RateBudget {
  drained = 0;
  #inner = new LocalBucket({ max: 1_000, restoreRate: 1_000 });
  get level() {
    return this.#inner.level;
  }
  get shape(): BucketShape {
    return this.#inner.shape;
  }
  take(cost: number, signal?: AbortSignal) {
    return this.#inner.take(cost, signal);
  }
  observe(available: number, shape?: BucketShape) {
    if (available === 0) this.drained++;
    return this.#inner.observe(available, shape);
  }
}

interface Reader {
  sb: MeliSandbox;
  client: MeliClient;
  listings: MeliListings;
  budget: WatchedBudget;
  /** Moves the sandbox's clock forward (scroll expiry). */
  advance(ms: number): void;
}

async function withReader(
  fn: (r: Reader) => Promise<void>,
  options: MeliSandboxOptions = {},
  userId?: string,
): Promise<void> {
  let skew = 0;
  const sb = await startMeliSandbox({ ratePerSecond: 1_000, now: () => Date.now() + skew, ...options });
  // The seller lookup never touches the ledger; the handle connects only if asked a query.
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  const budget = new WatchedBudget();
  const client = new MeliClient({
    baseUrl: sb.url,
    tokens: new StaticToken(sb.staticToken),
    budget,
    timeoutMs: 5_000,
    metrics: createMetrics("test_meli_catalog_", () => Promise.resolve([])),
    rateLimitBackoffMs: 100,
  });
  try {
    await fn({
      sb,
      client,
      listings: new MeliListings(sql, client, userId),
      budget,
      advance: (ms) => (skew += ms),
    });
  } finally {
    await sql.end();
    await sb.close();
  }
}

async function readAll(catalog: MeliCatalog): Promise<CatalogListing[][]> {
  const pages: CatalogListing[][] = [];
  for await (const page of catalog.listings()) pages.push(page);
  return pages;
}

/** The listings the sandbox holds for our seller, as the reader should report them (unflagged). */
function expected(sb: MeliSandbox): Map<string, { sku: string; quantity: number; ref: unknown }> {
  return new Map(sb.listings.map((l) => {
    const item = sb.item(l.itemId) as { shipping: { logistic_type: string } };
    return [l.variationId === null ? l.itemId : `${l.itemId}:${l.variationId}`, {
      sku: l.sku,
      quantity: sb.quantityOf(l.productoId)!,
      ref: {
        itemId: l.itemId,
        variationId: l.variationId,
        logisticType: item.shipping.logistic_type,
        userProductId: l.userProductId,
      },
    }];
  }));
}

function byPlace(pages: CatalogListing[][]): Map<string, CatalogListing> {
  const out = new Map<string, CatalogListing>();
  for (const listing of pages.flat()) {
    assert.ok(!out.has(listing.place), `${listing.place} read once`);
    out.set(listing.place, listing);
  }
  return out;
}

function assertNoInvalidRequests(sb: MeliSandbox): void {
  assert.deepEqual(sb.invalidRequests().map((r) => `${r.method} ${r.path}?${r.query} → ${r.status}`), []);
}

Deno.test("the whole catalog across scroll pages: every listing once, exact quantities, 20 items a call", async () => {
  await withReader(async ({ sb, client, listings }) => {
    // Quantities as MeLi has them now, not as seeded.
    sb.setQuantity(sb.listings[0].productoId, 3);
    sb.setQuantity(sb.listings[2].productoId, 0);
    const reader = meliCatalog(client, listings);
    const pages = await readAll(reader);
    const read = byPlace(pages);
    const want = expected(sb);
    assert.equal(read.size, 260);
    for (const [place, listing] of want) {
      const got = read.get(place);
      assert.ok(got, `${place} (${listing.sku}) read`);
      assert.deepEqual(got, { sku: listing.sku, place, quantity: listing.quantity, ref: listing.ref });
    }
    assert.equal(read.get(sb.listings[0].itemId)!.quantity, 3);
    // One page per multi-get, each at most 20 items.
    assert.equal(pages.length, 11);
    assert.ok(pages.every((p) => new Set(p.map((l) => (l.ref as { itemId: string }).itemId)).size <= 20));
    assert.deepEqual(reader.lastRead, {
      items: 208,
      listings: 260,
      withoutSku: 0,
      gone: 0,
      scanRestarts: 0,
      stockReads: 0,
    });

    const log = sb.requestLog();
    const scans = log.filter((r) => r.path.endsWith("/items/search"));
    assert.equal(scans.length, 4, "three pages of 100 ids, then the empty end");
    for (const [i, scan] of scans.entries()) {
      const q = new URLSearchParams(scan.query);
      assert.equal(q.get("search_type"), "scan");
      assert.equal(q.get("limit"), "100");
      assert.equal(q.has("scroll_id"), i > 0);
      assert.equal(q.has("seller_sku"), false, "never one search per SKU");
    }
    const gets = log.filter((r) => r.path === "/items");
    assert.equal(gets.length, 2 * 11, "each item read twice: SKU places, then the pages");
    assert.ok(gets.every((r) => new URLSearchParams(r.query).get("ids")!.split(",").length <= 20));
    assert.equal(log.filter((r) => r.path.startsWith("/items/")).length, 0, "never one call per item");
    assertNoInvalidRequests(sb);
  }, { catalog: bigCatalog() });
});

Deno.test("SKUs follow the live channel's rules; listings without one are skipped and counted", async () => {
  await withReader(async ({ sb, client, listings }) => {
    const [first, second, third] = sb.listings.filter((l) => l.variationId !== null);
    assert.equal(first.itemId, second.itemId);
    const put = (l: typeof first, body: unknown) =>
      fetch(`${sb.url}/items/${l.itemId}/variations/${l.variationId}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${sb.staticToken}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      }).then((r) => r.body?.cancel());
    // No SELLER_SKU: seller_custom_field is the SKU; neither: no SKU at all.
    await put(first, {
      attributes: [{ id: "SELLER_SKU", value_name: null }],
      seller_custom_field: "CUSTOM-1",
    });
    await put(second, { attributes: [{ id: "SELLER_SKU", value_name: null }] });
    // The SELLER_SKU attribute wins over seller_custom_field.
    await put(third, { seller_custom_field: "IGNORED" });
    const reader = meliCatalog(client, listings);
    const read = byPlace(await readAll(reader));
    assert.equal(read.get(`${first.itemId}:${first.variationId}`)?.sku, "CUSTOM-1");
    assert.equal(read.has(`${second.itemId}:${second.variationId}`), false);
    assert.equal(read.get(`${third.itemId}:${third.variationId}`)?.sku, third.sku);
    // An item with variations is only its variations.
    assert.equal(read.has(first.itemId), false);
    assert.equal(reader.lastRead.withoutSku, 1);
    assert.equal(reader.lastRead.listings, 39);
    assertNoInvalidRequests(sb);
  });
});

Deno.test("Full, under review and closed listings are flagged, never dropped; a shared SKU is flagged everywhere", async () => {
  const catalog = bigCatalog();
  // A plain item and a whole item with variations are Full; one item is under review.
  catalog.products[0].meli_logistic_type = "fulfillment";
  catalog.products[11].meli_logistic_type = "fulfillment";
  catalog.products[4].meli_status = "under_review";
  // One SKU on an item of its own far down the scan and on a variation near the top.
  catalog.products[255].sku = catalog.products[2].sku;
  await withReader(async ({ sb, client, listings }) => {
    const of = (n: number) => sb.listingFor(catalog.products[n].producto_id)!;
    const placeOf = (n: number) =>
      of(n).variationId === null ? of(n).itemId : `${of(n).itemId}:${of(n).variationId}`;
    sb.setItem(of(5).itemId, { status: "closed" });
    sb.setItem(of(6).itemId, { status: "paused" });
    const reader = meliCatalog(client, listings);
    const read = byPlace(await readAll(reader));
    assert.equal(read.size, 260);
    const reasons = new Map(
      [...read].filter(([, l]) => l.unwritable).map(([p, l]) => [p, l.unwritable!.reason]),
    );
    assert.deepEqual(
      Object.fromEntries(reasons),
      Object.fromEntries([
        [placeOf(0), "managed_by_mercadolibre"],
        [placeOf(11), "managed_by_mercadolibre"],
        [placeOf(12), "managed_by_mercadolibre"],
        [placeOf(13), "managed_by_mercadolibre"],
        [placeOf(4), "under_review"],
        [placeOf(5), "closed"],
        [placeOf(2), "ambiguous_sku"],
        [placeOf(255), "ambiguous_sku"],
      ]),
    );
    // Flagged listings still say where they are and how many MeLi shows.
    const full = read.get(placeOf(12))!;
    assert.equal(full.quantity, sb.quantityOf(catalog.products[12].producto_id));
    assert.deepEqual(full.ref, {
      itemId: of(12).itemId,
      variationId: of(12).variationId,
      logisticType: "fulfillment",
      userProductId: of(12).userProductId,
    });
    assert.match(read.get(placeOf(2))!.unwritable!.error, new RegExp(`${placeOf(2)}, ${placeOf(255)}`));
    assert.equal(read.get(placeOf(6))!.unwritable, undefined, "paused listings take writes");
    assertNoInvalidRequests(sb);
  }, { catalog: parseCatalog(catalog) });
});

Deno.test("only the seller's own items: other sellers' never come back, even with our SKUs", async () => {
  const theirs = buildCatalog({ skus: 30, stores: 1, seed: 4 });
  const ours = buildCatalog({ skus: 12, stores: 1, seed: 5 });
  theirs.products[0].sku = ours.products[0].sku;
  await withReader(async ({ sb, client, listings }) => {
    const read = byPlace(await readAll(meliCatalog(client, listings)));
    assert.deepEqual([...read.keys()].sort(), sb.itemsOf(sb.userId).sort());
    assert.equal(sb.itemsOf(777).some((id) => read.has(id)), false);
    assert.equal(
      read.get(sb.listings[0].itemId)?.unwritable,
      undefined,
      "a SKU shared with another seller is ours alone",
    );
    assertNoInvalidRequests(sb);
  }, { catalog: ours, otherSellers: [{ userId: 777, catalog: theirs }] });
  // MELI_USER_ID naming someone else: MeLi refuses it, and the read says so rather than read nothing.
  await withReader(
    async ({ sb, client, listings }) => {
      try {
        await readAll(meliCatalog(client, listings));
        assert.fail("the read should fail");
      } catch (error) {
        assert.ok(error instanceof MeliCatalogError);
        assert.deepEqual([error.reason, error.transient], ["meli_rejected", false]);
        assert.match(error.message, /forbidden/);
      }
      assert.equal(sb.requestLog().some((r) => r.path === "/items"), false);
    },
    { catalog: ours, otherSellers: [{ userId: 777, catalog: theirs }] },
    "777",
  );
});

Deno.test("a multi-origin seller without MELI_LOCATIONS: every listing flagged, as the live channel does", async () => {
  await withReader(async ({ client, listings }) => {
    const read = [...byPlace(await readAll(meliCatalog(client, listings))).values()];
    assert.equal(read.length, 40);
    const reasons = new Set(read.map((l) => l.unwritable?.reason));
    // The default catalog's MATE-IMP-01 is on two items: the more specific reason wins there.
    assert.deepEqual([...reasons].sort(), ["ambiguous_sku", "multi_origin_unmapped"]);
    assert.match(
      read.find((l) => l.unwritable?.reason === "multi_origin_unmapped")!.unwritable!.error,
      /MELI_LOCATIONS/,
    );
  }, { userTags: ["normal", "warehouse_management"] });
});

/** A multi-origin seller with a warehouse per first three stores; MELI_LOCATIONS maps the first two. */
function multiOrigin(catalog: Catalog) {
  const stores = catalog.stores.map((s) => s.tienda_id);
  const warehouses = [0, 1, 2].map((i) => ({
    store_id: `100${i + 1}`,
    network_node_id: `MLA100${i + 1}`,
    tienda_id: stores[i],
  }));
  const locations = Object.fromEntries(
    warehouses.slice(0, 2).map((w) => [w.tienda_id, {
      type: "seller_warehouse" as const,
      storeId: w.store_id,
      networkNodeId: w.network_node_id,
    }]),
  );
  return { stores, warehouses, locations };
}

integration(
  "MELI_LOCATIONS: a listing per user product × mapped store at its location, one stock read per user product, and a write through its ref changes that location only",
  async () => {
    const catalog = parseCatalog(buildCatalog({ skus: 30, stores: 3, seed: 21 }));
    catalog.products[3].meli_logistic_type = "fulfillment";
    catalog.products[7].meli_items = 2; // two items of one user product: one listing per store
    const { stores, warehouses, locations } = multiOrigin(catalog);
    await withReader(async ({ sb, client, listings }) => {
      const redis = createClient({ url: REDIS_URL });
      await redis.connect();
      const prefix = `${uniqueName("meli_catalog")}:`;
      try {
        const reader = meliCatalog(client, listings, locations);
        const read = (await readAll(reader)).flat();
        const ups = new Set(sb.listings.map((l) => l.userProductId));
        assert.equal(ups.size, 30, "one user product per product");
        assert.equal(
          read.length,
          30 * 2,
          "each user product at each mapped store; the third store is not mapped",
        );
        assert.deepEqual(new Set(read.map((l) => l.place)), new Set(stores.slice(0, 2)));
        const stockReads = sb.requestLog().filter((r) => r.method === "GET" && r.path.endsWith("/stock"));
        assert.equal(stockReads.length, 30, "one GET per user product, not per store or per item");
        assert.equal(reader.lastRead.stockReads, 30);
        for (const l of read) {
          const product = catalog.products.find((p) => p.sku === l.sku)!;
          const up = sb.listingFor(product.producto_id)!.userProductId;
          const stock = sb.userProductStock(up)!;
          const w = warehouses.find((w) => w.tienda_id === l.place)!;
          if (product === catalog.products[3]) {
            assert.equal(l.unwritable?.reason, "managed_by_mercadolibre", "Full: only meli_facility");
            continue;
          }
          assert.equal(l.unwritable, undefined, `${l.sku} at ${l.place}`);
          assert.equal(l.quantity, stock.locations.find((x) => x.store_id === w.store_id)!.quantity);
          assert.deepEqual(
            { ...(l.ref as Record<string, unknown>), version: undefined },
            {
              itemId: sb.listingFor(product.producto_id)!.itemId,
              variationId: sb.listingFor(product.producto_id)!.variationId,
              userProductId: up,
              tiendaId: l.place,
              location: locations[l.place],
              version: undefined,
            },
          );
        }
        // The ref is what resync's writer sets the location with: that location only.
        const stock = new MeliStock(
          client,
          listings as MeliListings,
          new ListingLocks(redis, prefix, 5_000),
          undefined,
          false,
          undefined,
          locations,
        );
        const target = read.find((l) => l.place === stores[1] && !l.unwritable)!;
        const up = (target.ref as { userProductId: string }).userProductId;
        const before = sb.userProductStock(up)!;
        const to = target.quantity + 5;
        const written = await stock.write(
          { ok: true, quantity: target.quantity, ref: target.ref },
          to,
          "test",
        );
        assert.deepEqual(written, { kind: "written", quantityAfter: to });
        const after = sb.userProductStock(up)!;
        const at = (s: typeof after, store: string) =>
          s.locations.find((x) => x.store_id === store)!.quantity;
        assert.equal(at(after, "1002"), to);
        assert.equal(at(after, "1001"), at(before, "1001"), "the other mapped store's location is untouched");
        assert.equal(at(after, "1003"), at(before, "1003"), "the unmapped store's location is untouched");
        const put = sb.requestLog().filter((r) => r.method === "PUT");
        assert.deepEqual(put.map((r) => [r.path, r.body]), [[
          `/user-products/${up}/stock/type/seller_warehouse`,
          { locations: [{ store_id: "1002", network_node_id: "MLA1002", quantity: to }] },
        ]]);
        // The version read is spent: the same ref again is stale, never a blind overwrite.
        assert.deepEqual(
          await stock.write({ ok: true, quantity: target.quantity, ref: target.ref }, to + 1, "test"),
          { kind: "stale" },
        );
        assert.equal(at(sb.userProductStock(up)!, "1002"), to);
        assertNoInvalidRequests(sb);
      } finally {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length) await redis.del(keys);
        await redis.quit();
      }
    }, { catalog, userTags: ["normal", "warehouse_management"], warehouses });
  },
);

Deno.test("an expired scroll: the scan starts over as MeLi says, and every item is still read once", async () => {
  await withReader(async ({ sb, client, listings, advance }) => {
    let scanPages = 0;
    // Six idle minutes after the second scan page: the scroll id is gone.
    const slow = {
      request: ((method, path, request) => {
        if (path.endsWith("/items/search") && ++scanPages === 3) advance(6 * 60_000);
        return client.request(method, path, request);
      }) as MeliClient["request"],
    };
    const reader = new MeliCatalog({ client: slow, listings });
    const read = byPlace(await readAll(reader));
    assert.equal(read.size, 260);
    assert.equal(reader.lastRead.scanRestarts, 1);
    assert.equal(reader.lastRead.items, 208);
    const scans = sb.requestLog().filter((r) => r.path.endsWith("/items/search"));
    assert.deepEqual(scans.map((r) => r.status), [200, 200, 400, 200, 200, 200, 200]);
    assert.equal(scans[2].error, "invalid.scroll.id");
    assert.equal(new URLSearchParams(scans[3].query).has("scroll_id"), false, "a new scan, not a retry");
    assertNoInvalidRequests(sb);
  }, { catalog: bigCatalog() });
});

Deno.test("a scroll that keeps expiring ends the read with a clear error, not a partial catalog", async () => {
  await withReader(async ({ client, listings, advance }) => {
    const slow = {
      request: ((method, path, request) => {
        if (path.endsWith("/items/search") && request.query?.scroll_id) advance(6 * 60_000);
        return client.request(method, path, request);
      }) as MeliClient["request"],
    };
    const reader = new MeliCatalog({ client: slow, listings, scanRestarts: 2 });
    const pages: CatalogListing[][] = [];
    await assert.rejects(async () => {
      for await (const page of reader.listings()) pages.push(page);
    }, MeliCatalogError);
    assert.deepEqual(pages, [], "nothing is handed out before the scan is complete");
    assert.equal(reader.lastRead.scanRestarts, 2);
  }, { catalog: bigCatalog() });
  await withReader(async ({ client, listings, advance }) => {
    const slow = {
      request: ((method, path, request) => {
        if (path.endsWith("/items/search") && request.query?.scroll_id) advance(6 * 60_000);
        return client.request(method, path, request);
      }) as MeliClient["request"],
    };
    try {
      await readAll(new MeliCatalog({ client: slow, listings, scanRestarts: 1 }));
      assert.fail("the read should fail");
    } catch (error) {
      assert.ok(error instanceof MeliCatalogError);
      assert.equal(error.reason, "scroll_expired");
      assert.equal(error.transient, true);
      assert.match(error.message, /invalid\.scroll\.id/);
    }
  }, { catalog: bigCatalog() });
});

Deno.test("429 in the middle of the scan: the client drains the shared budget, backs off and goes on", async () => {
  await withReader(async ({ sb, client, listings, budget }) => {
    // The seller is known (cached) already, so the scan is the first call to meet the 429s.
    await listings.seller();
    sb.setFaults({ rateLimitAll: true });
    const lift = setTimeout(() => sb.setFaults({ rateLimitAll: false }), 400);
    try {
      const reader = meliCatalog(client, listings);
      const read = byPlace(await readAll(reader));
      assert.equal(read.size, 260);
    } finally {
      clearTimeout(lift);
    }
    const scans = sb.requestLog().filter((r) => r.path.endsWith("/items/search"));
    assert.equal(scans[0].status, 429);
    assert.ok(scans.filter((r) => r.status === 429).length >= 2);
    assert.equal(scans.filter((r) => r.status === 200).length, 4);
    assert.ok(budget.drained >= 2, "each 429 empties the budget every replica shares");
    assertNoInvalidRequests(sb);
  }, { catalog: bigCatalog() });
});

Deno.test("MeLi down for longer than the retries: the read fails transient, with the reason", async () => {
  await withReader(async ({ sb, client, listings }) => {
    await listings.seller();
    sb.setFaults({ errorRate: 1 });
    try {
      await readAll(new MeliCatalog({ client, listings, tries: 2, retryBaseMs: 10 }));
      assert.fail("the read should fail");
    } catch (error) {
      assert.ok(error instanceof MeliCatalogError);
      assert.deepEqual([error.reason, error.transient], ["meli_unavailable", true]);
    }
    assert.equal(sb.stats().errorsInjected, 2);
  });
});

integration("a listing's ref is what resync's MeLi writer addresses the item or variation with", async () => {
  await withReader(async ({ sb, client, listings }) => {
    const redis = createClient({ url: REDIS_URL });
    await redis.connect();
    const prefix = `${uniqueName("meli_catalog")}:`;
    try {
      const stock = new MeliStock(
        client,
        listings as MeliListings,
        new ListingLocks(redis, prefix, 5_000),
        sb.tiendaId,
      );
      const read = byPlace(await readAll(meliCatalog(client, listings)));
      const plain = sb.listings.find((l) => l.variationId === null)!;
      const variation = sb.listings.find((l) => l.variationId !== null)!;
      for (const [l, to] of [[plain, 17], [variation, 23]] as const) {
        const listing = read.get(l.variationId === null ? l.itemId : `${l.itemId}:${l.variationId}`)!;
        const written = await stock.write(
          { ok: true, quantity: listing.quantity, ref: listing.ref },
          to,
          "test",
        );
        assert.deepEqual(written, { kind: "written", quantityAfter: to });
        assert.equal(sb.quantityOf(l.productoId), to);
      }
      assert.deepEqual(sb.stats().putsByListing, {
        [plain.itemId]: 1,
        [`${variation.itemId}/${variation.variationId}`]: 1,
      });
      assertNoInvalidRequests(sb);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(keys);
      await redis.quit();
    }
  });
});
