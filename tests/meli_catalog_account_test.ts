/**
 * MercadoLibre SKU resolution by reading the whole account (listings.ts, catalog.ts), against
 * the sandbox over real HTTP and a ledger schema of the test's own: what the read keeps, what
 * reaches `listing`, `seller_custom_field`, and the read's deadline.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { meliCatalog } from "../src/channels/mercadolibre/catalog.ts";
import { MeliClient } from "../src/channels/mercadolibre/client.ts";
import { MeliListings } from "../src/channels/mercadolibre/listings.ts";
import { StaticToken } from "../src/channels/mercadolibre/tokens.ts";
import { migrate } from "../src/ledger/migrate.ts";
import { createMetrics } from "../src/metrics.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { LocalBucket } from "../src/sync/cost_bucket.ts";
import { DATABASE_URL, integration, uniqueName } from "./helpers.ts";

interface Setup {
  sb: MeliSandbox;
  sql: postgres.Sql;
  listings: MeliListings;
}

/** A MeliListings that reads the account when worth it (at most `maxRequests`, within `deadlineMs`). */
async function withListings(
  fn: (s: Setup) => Promise<void>,
  { latencyMs = 0, deadlineMs = 10_000 }: { latencyMs?: number; deadlineMs?: number } = {},
): Promise<void> {
  const sb = await startMeliSandbox({ ratePerSecond: 1_000, faults: { latencyMs } });
  const schema = uniqueName("meli_account");
  const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  await migrate(admin, schema);
  const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {}, connection: { search_path: schema } });
  const client = new MeliClient({
    baseUrl: sb.url,
    tokens: new StaticToken(sb.staticToken),
    budget: new LocalBucket({ max: 1_000, restoreRate: 1_000 }),
    timeoutMs: 5_000,
    metrics: createMetrics("test_meli_account_", () => Promise.resolve([])),
    rateLimitBackoffMs: 100,
  });
  const listings: MeliListings = new MeliListings(sql, client, undefined, {
    reader: meliCatalog(client, { seller: (signal) => listings.seller(signal) }),
    maxRequests: 1_000,
    deadlineMs,
  });
  try {
    await fn({ sb, sql, listings });
  } finally {
    await sql.end();
    await admin.unsafe(`drop schema if exists ${schema} cascade`);
    await admin.end();
    await sb.close();
  }
}

/** The sandbox's SKU requests since `since`: scan pages, seller_sku searches, multi-gets. */
function lookups(sb: MeliSandbox, since = 0): { scan_page: number; sku_search: number; multi_get: number } {
  const out = { scan_page: 0, sku_search: 0, multi_get: 0 };
  for (const r of sb.requestLog().slice(since)) {
    if (r.path.endsWith("/items/search")) {
      if (new URLSearchParams(r.query).get("search_type") === "scan") out.scan_page++;
      else out.sku_search++;
    } else if (r.path === "/items") out.multi_get++;
  }
  return out;
}

/** SKUs on exactly one listing of our seller (one user product counting as one). */
function uniqueSkus(sb: MeliSandbox): string[] {
  const by = new Map<string, Set<string>>();
  for (const l of sb.listings) {
    const set = by.get(l.sku) ?? new Set();
    set.add(l.userProductId ?? `${l.itemId}:${l.variationId}`);
    by.set(l.sku, set);
  }
  return [...by].filter(([, s]) => s.size === 1).map(([sku]) => sku).sort();
}

async function storedSkus(sql: postgres.Sql): Promise<string[]> {
  const rows = await sql<
    { sku: string }[]
  >`select sku from listing where channel = 'mercadolibre' order by sku`;
  return rows.map((r) => r.sku);
}

const put = (sb: MeliSandbox, itemId: string, variationId: number, body: unknown) =>
  fetch(`${sb.url}/items/${itemId}/variations/${variationId}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${sb.staticToken}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  }).then(async (r) => assert.equal(r.status, 200, await r.text()));

integration(
  "a read of the account stores only the SKUs asked; another SKU it found is confirmed on its item before it is kept",
  async () => {
    await withListings(async ({ sb, sql, listings }) => {
      await listings.seller();
      const skus = uniqueSkus(sb);
      const asked = skus.slice(0, 10);
      const resolved = await listings.resolveMany(asked);
      assert.ok(lookups(sb).scan_page > 0, "the account was read");
      assert.equal(lookups(sb).sku_search, 0);
      for (const sku of asked) assert.ok(resolved.get(sku)!.ok, sku);
      assert.deepEqual(await storedSkus(sql), asked, "nothing the read found besides what was asked");
      // A SKU only the read found: one multi-get confirms it, no search; then it is stored.
      const later = skus[skus.length - 1];
      const mark = sb.requestLog().length;
      const got = await listings.resolve(later);
      assert.ok(got.ok);
      assert.deepEqual(lookups(sb, mark), { scan_page: 0, sku_search: 0, multi_get: 1 });
      assert.deepEqual(await storedSkus(sql), [...asked, later].sort());
    });
  },
);

integration(
  "a SKU set only as seller_custom_field stays sku_not_found after a read of the account, as MeLi's search finds none",
  async () => {
    await withListings(async ({ sb, listings }) => {
      const variation = sb.listings.find((l) => l.variationId !== null)!;
      await put(sb, variation.itemId, variation.variationId!, {
        attributes: [{ id: "SELLER_SKU", value_name: null }],
        seller_custom_field: "CUSTOM-ONLY-1",
      });
      await listings.seller();
      const asked = [...uniqueSkus(sb).filter((s) => s !== variation.sku), "CUSTOM-ONLY-1"];
      const resolved = await listings.resolveMany(asked);
      assert.ok(lookups(sb).scan_page > 0, "the account was read");
      const custom = resolved.get("CUSTOM-ONLY-1")!;
      assert.ok(
        !custom.ok && "outcome" in custom && custom.outcome.kind === "failed" &&
          custom.outcome.reason === "sku_not_found",
        JSON.stringify(custom),
      );
      assert.equal(lookups(sb).sku_search, 1, "only the custom field was searched");
    });
  },
);

integration(
  "a read of the account that outlasts its deadline is given up for one search per SKU",
  async () => {
    // Each request takes 100 ms: the scan page and the multi-gets of the read need more than 250 ms.
    await withListings(async ({ sb, sql, listings }) => {
      await listings.seller();
      const asked = uniqueSkus(sb).slice(0, 12);
      const started = Date.now();
      const resolved = await listings.resolveMany(asked);
      for (const sku of asked) assert.ok(resolved.get(sku)!.ok, sku);
      const counts = lookups(sb);
      assert.ok(counts.scan_page >= 1, "the read was started");
      assert.equal(counts.sku_search, asked.length, "then every SKU was searched");
      assert.deepEqual(await storedSkus(sql), asked);
      assert.ok(
        Date.now() - started < 250 + (asked.length + 3) * 100 + 1_000,
        "the read did not run to its end",
      );
      // Not tried again right away: the next SKU is searched.
      const mark = sb.requestLog().length;
      assert.ok((await listings.resolve(uniqueSkus(sb).at(-1)!)).ok);
      assert.deepEqual(lookups(sb, mark), { scan_page: 0, sku_search: 1, multi_get: 1 });
    }, { latencyMs: 100, deadlineMs: 250 });
  },
);
