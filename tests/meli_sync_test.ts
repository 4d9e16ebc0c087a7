/**
 * The MercadoLibre channel end to end: real RabbitMQ, Postgres and Redis, the
 * MeLi sandbox started here and configured as if it were the real API, and the
 * POS's stock keys in Redis as the source of truth (mirror mode).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { startService } from "../src/main.ts";
import { OAuthTokens } from "../src/channels/mercadolibre/tokens.ts";
import { buildCatalog, defaultCatalog } from "../src/sandbox/catalog.ts";
import {
  type MeliSandbox,
  type MeliSandboxOptions,
  startMeliSandbox,
} from "../src/sandbox/mercadolibre/sandbox.ts";
import {
  DATABASE_URL,
  type Harness,
  harnessFor,
  header,
  integration,
  testConfig,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import { Pos } from "./pos.ts";
import { meliAsRealApi } from "../scripts/support/service_env.ts";

const catalog = defaultCatalog();
const MELI_STORE = catalog.stores[0].tienda_id;
const OTHER_STORE = catalog.stores[1].tienda_id;

function productOf(sku: string) {
  const p = catalog.products.find((p) => p.sku === sku);
  if (!p) throw new Error(`no catalog product ${sku}`);
  return p;
}

/** Service variables that point the MeLi channel at a sandbox as if it were the real API. */
function meliEnv(
  sandbox: MeliSandbox,
  pos: Pos,
  extra: Record<string, string> = {},
  store = MELI_STORE,
): Record<string, string> {
  return {
    ...meliAsRealApi(sandbox, store),
    MELI_RATE_PER_SEC: "200",
    POS_STOCK_KEY: pos.keyTemplate,
    DISPATCH_POLL_INTERVAL: "50ms",
    DISPATCH_BACKOFF_BASE: "50ms",
    DISPATCH_BACKOFF_MAX: "500ms",
    ...extra,
  };
}

interface MeliHarness {
  h: Harness;
  sandbox: MeliSandbox;
  pos: Pos;
  /** Env of the first instance, with its names, to start more instances on the same ledger. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** A service on a MeLi sandbox; with `sandboxOptions.tiendaId` its catalog's store is the one mirrored. */
async function startMeliHarness(
  sandboxOptions: MeliSandboxOptions = {},
  extra: Record<string, string> = {},
): Promise<MeliHarness> {
  const store = sandboxOptions.tiendaId ?? MELI_STORE;
  const sandbox = await startMeliSandbox({ catalog, tiendaId: store, ...sandboxOptions });
  const pos = await Pos.open(sandboxOptions.catalog ?? catalog);
  const config = testConfig(meliEnv(sandbox, pos, extra, store));
  const service = startService(config);
  await service.started;
  const h = await harnessFor(service, config);
  const env = {
    ...meliEnv(sandbox, pos, extra, store),
    MELI_REFRESH_TOKEN: config.MELI_REFRESH_TOKEN ?? "",
    EXCHANGE: config.EXCHANGE,
    QUEUE: config.QUEUE,
    LEDGER_SCHEMA: config.LEDGER_SCHEMA,
  };
  if (extra.MELI_TOKEN) delete (env as Record<string, string | undefined>).MELI_CLIENT_ID;
  return {
    h,
    sandbox,
    pos,
    env,
    async close() {
      await h.close();
      await sandbox.close();
      await pos.close();
    },
  };
}

async function statusCounts(h: Harness): Promise<Record<string, number>> {
  const rows = await h.sql<{ status: string; n: number }[]>`
    select status, count(*)::int as n from stock_change group by status`;
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

async function settled(h: Harness, total: number, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    async () => {
      const c = await statusCounts(h);
      return (c.applied ?? 0) + (c.failed ?? 0) === total;
    },
    `${total} MeLi changes settled`,
    timeoutMs,
  );
}

/**
 * A second service instance on the harness's ledger and sandbox that uses MeLi's static token
 * (no OAuth chain of its own to refresh); the caller awaits its `started`.
 */
function startStaticTokenInstance(m: MeliHarness) {
  const env = { ...m.env, MELI_TOKEN: m.sandbox.staticToken };
  delete (env as Record<string, string | undefined>).MELI_CLIENT_ID;
  delete (env as Record<string, string | undefined>).MELI_CLIENT_SECRET;
  delete (env as Record<string, string | undefined>).MELI_REFRESH_TOKEN;
  return startService(testConfig(env));
}

function assertNoInvalidRequests(sandbox: MeliSandbox): void {
  assert.deepEqual(
    sandbox.invalidRequests().map((r) => `${r.method} ${r.path} → ${r.status} ${r.error ?? ""}`),
    [],
    "every request the service sends is one MeLi accepts",
  );
}

integration(
  "sales at the MeLi store mirror its POS stock onto items and single variations; other stores do not touch MeLi",
  async () => {
    const m = await startMeliHarness({ ratePerSecond: 100 });
    try {
      const jean38Before = m.sandbox.quantityOf(productOf("JEAN-RECTO-38").producto_id);
      const lines = [
        { sku: "REMERA-001", qty: 1 },
        { sku: "JEAN-RECTO-40", qty: 2 },
        { sku: "BUZO-GRIS-L", qty: 1 },
      ];
      for (let burst = 1; burst <= 2; burst++) {
        for (let i = 0; i < 3; i++) await m.pos.sell(m.h, MELI_STORE, lines);
        // Sales elsewhere: the POS lowers that store's stock; MeLi shows only MELI_STORE's.
        await m.pos.sell(m.h, OTHER_STORE, [{ sku: "REMERA-001", qty: 1 }]);
        await settled(m.h, burst * 9);
        for (const l of lines) {
          const expected = Math.max(0, await m.pos.get(MELI_STORE, l.sku));
          assert.equal(
            m.sandbox.quantityOf(productOf(l.sku).producto_id),
            expected,
            `${l.sku} after burst ${burst}`,
          );
        }
      }
      const rows = await m.h.sql<{ tienda_id: string }[]>`select distinct tienda_id from stock_change`;
      assert.deepEqual(rows.map((r) => r.tienda_id), [MELI_STORE], "no MeLi change for another store's sale");
      // A variation is written on its own: its siblings keep their quantity.
      assert.equal(m.sandbox.quantityOf(productOf("JEAN-RECTO-38").producto_id), jean38Before);
      const jean40 = m.sandbox.listingFor(productOf("JEAN-RECTO-40").producto_id)!;
      assert.ok(jean40.variationId !== null, "JEAN-RECTO-40 is a variation in the sandbox catalog");
      assert.ok(
        m.sandbox.requestLog().some((r) =>
          r.method === "PUT" && r.path === `/items/${jean40.itemId}/variations/${jean40.variationId}`
        ),
        "the variation was updated through PUT /items/{id}/variations/{vid}",
      );
      // Coalescing: far fewer PUTs than changes (latest wins per listing).
      assert.ok(m.sandbox.stats().puts <= 18, `PUTs: ${m.sandbox.stats().puts}`);
      assertNoInvalidRequests(m.sandbox);
      assert.equal((await m.h.takeDeadLetters()).length, 0);
    } finally {
      await m.close();
    }
  },
);

/**
 * The sandbox's requests on the stock path since `since` (an index into its request log), by
 * operation; token refreshes and the orders side (catch-up, fetches) are left out.
 */
function stockRequests(sandbox: MeliSandbox, since = 0): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of sandbox.requestLog().slice(since)) {
    if (r.path === "/oauth/token" || r.path.startsWith("/orders")) continue;
    const scan = new URLSearchParams(r.query).get("search_type") === "scan";
    const op = r.method === "PUT"
      ? "put"
      : r.path.endsWith("/items/search")
      ? scan ? "scan_page" : "sku_search"
      : r.path === "/items"
      ? "multi_get"
      : r.path.startsWith("/users/")
      ? "get_user"
      : `${r.method} ${r.path}`;
    out[op] = (out[op] ?? 0) + 1;
  }
  return out;
}

/** What reading a whole account of `items` items costs: scan pages of 100 (and the empty last one), multi-gets of 20. */
function accountRead(items: number): { scan_page: number; multi_get: number } {
  return { scan_page: Math.ceil(items / 100) + 1, multi_get: Math.ceil(items / 20) };
}

/** Items our seller has in the sandbox (copies of one user product each count). */
function sellerItems(sandbox: MeliSandbox): number {
  return new Set(sandbox.listings.flatMap((l) => l.itemIds)).size;
}

/** `get_user` (the seller, once, cached; the orders side may have asked first) apart from the rest. */
function withoutSeller(counts: Record<string, number>): Record<string, number> {
  const { get_user = 0, ...rest } = counts;
  assert.ok(get_user <= 1, `GET /users/me at most once, got ${get_user}`);
  return rest;
}

/** Eight simple items none of which reaches 0: a cold batch big enough to pay for reading the account. */
const COLD_BATCH = [
  "REMERA-0010",
  "REMERA-002",
  "BUZO-GRIS-L",
  "BUFANDA-GRIS",
  "BILLETERA-CUERO",
  "MOCHILA-URB",
  "CAMISA-LINO-M",
  "VESTIDO-FLORAL-S",
];

integration(
  "a mirror batch of N listings costs N MeLi requests (one PUT each); cold, one read of the account resolves every SKU",
  async () => {
    // REMERA-002 is sold by three items of one user product: still one listing, one write.
    const m = await startMeliHarness({ catalog: catalogWithFamily("REMERA-002"), ratePerSecond: 100 });
    try {
      // Items without variations, enough stock that none reaches 0 (no pause, no reactivation).
      const first = COLD_BATCH;
      await m.pos.sell(m.h, MELI_STORE, first.map((sku) => ({ sku, qty: 1 })));
      await settled(m.h, first.length);
      // Cold: the SKUs are found by reading the seller's whole account once (scan, multi-gets of 20),
      // not by one search per SKU; then one PUT per listing.
      assert.deepEqual(
        withoutSeller(stockRequests(m.sandbox)),
        { ...accountRead(sellerItems(m.sandbox)), put: first.length },
        "cold mirror batch",
      );
      // Nothing the read found besides what was asked is kept in the ledger.
      const stored = await m.h.sql<{ sku: string }[]>`
        select sku from listing where channel = 'mercadolibre' order by sku`;
      assert.deepEqual(stored.map((r) => r.sku), [...first].sort(), "only the SKUs asked are stored");
      // Warm: listings written before cost one PUT each, nothing else; listings only that read found
      // are confirmed on their items first, all in one multi-get (they may have moved since the read).
      const second = [...first, "LENTES-SOL-01", "PANUELO-SEDA"];
      const mark = m.sandbox.requestLog().length;
      await m.pos.sell(m.h, MELI_STORE, second.map((sku) => ({ sku, qty: 1 })));
      await settled(m.h, first.length + second.length);
      assert.deepEqual(
        stockRequests(m.sandbox, mark),
        { multi_get: 1, put: second.length },
        "warm mirror batch",
      );
      for (const sku of second) {
        assert.equal(m.sandbox.quantityOf(productOf(sku).producto_id), await m.pos.get(MELI_STORE, sku), sku);
      }
      const family = m.sandbox.listingFor(productOf("REMERA-002").producto_id)!;
      assert.equal(family.itemIds.length, 3);
      assert.equal(m.sandbox.stats().putsByUserProduct[family.userProductId], 2, "one write per batch");
      for (const itemId of family.itemIds) {
        const item = m.sandbox.item(itemId) as { available_quantity: number };
        assert.equal(item.available_quantity, await m.pos.get(MELI_STORE, "REMERA-002"), itemId);
      }
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await m.close();
    }
  },
);

integration(
  "a large account is searched SKU by SKU until those searches would have paid for one read of the account",
  async () => {
    // 300 items without variations: reading the account costs 4 scan pages + 15 multi-gets = 19.
    const big = buildCatalog({ skus: 300, stores: 2, seed: 15 });
    const store = big.stores[0].tienda_id;
    const skus = big.products.filter((p) => p.stock[store] >= 2).map((p) => p.sku);
    const m = await startMeliHarness({ catalog: big, tiendaId: store, ratePerSecond: 100 });
    try {
      const items = sellerItems(m.sandbox);
      assert.equal(items, 300);
      let sold = 0;
      const sell = async (batch: string[]) => {
        const mark = m.sandbox.requestLog().length;
        await m.pos.sell(m.h, store, batch.map((sku) => ({ sku, qty: 1 })));
        sold += batch.length;
        await settled(m.h, sold);
        return withoutSeller(stockRequests(m.sandbox, mark));
      };
      // 2 SKUs: the first scan page tells the account's size; 19 requests are not worth 2 searches.
      assert.deepEqual(await sell(skus.slice(0, 2)), { scan_page: 1, sku_search: 2, multi_get: 1, put: 2 });
      // 10 more: 2 searches made + 10 = 12, still under 19.
      assert.deepEqual(await sell(skus.slice(2, 12)), { sku_search: 10, multi_get: 1, put: 10 });
      // 10 more: 12 + 10 = 22 searches would cost more than reading the account: it is read.
      assert.deepEqual(await sell(skus.slice(12, 22)), { ...accountRead(items), put: 10 });
      // Every SKU of the account is known now: confirmed on its item (one multi-get), not searched.
      assert.deepEqual(await sell(skus.slice(22, 32)), { multi_get: 1, put: 10 });
      const applied = await m.h.sql<{ n: number }[]>`
        select count(*)::int as n from stock_change where status = 'applied'`;
      assert.equal(applied[0].n, sold);
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await m.close();
    }
  },
);

integration("an access token expiring mid-burst is refreshed and nothing fails", async () => {
  const m = await startMeliHarness({ accessTokenTtlSeconds: 1, ratePerSecond: 100 });
  try {
    for (let i = 0; i < 12; i++) {
      await m.pos.sell(m.h, MELI_STORE, [{ sku: i % 2 ? "REMERA-002" : "REMERA-003", qty: 1 }]);
      await new Promise((r) => setTimeout(r, 250));
    }
    await settled(m.h, 12);
    assert.deepEqual(await statusCounts(m.h), { applied: 12 });
    assert.ok(m.sandbox.stats().refreshes >= 2, `refreshes: ${m.sandbox.stats().refreshes}`);
    assert.equal(m.sandbox.stats().refreshFailures, 0);
    for (const sku of ["REMERA-002", "REMERA-003"]) {
      assert.equal(
        m.sandbox.quantityOf(productOf(sku).producto_id),
        Math.max(0, await m.pos.get(MELI_STORE, sku)),
      );
    }
    // The stored pair is encrypted at rest.
    const [row] = await m.h.sql<{ access_token: string; refresh_token: string }[]>`
      select access_token, refresh_token from oauth_token`;
    assert.match(row.access_token, /^v1:/);
    assert.ok(!row.refresh_token.includes(m.sandbox.currentRefreshToken()));
    assertNoInvalidRequests(m.sandbox);
  } finally {
    await m.close();
  }
});

integration(
  "two token holders refreshing at once make exactly one refresh call and share the token",
  async () => {
    const sandbox = await startMeliSandbox({ catalog });
    const schema = uniqueName("msync_tok");
    const sql = postgres(DATABASE_URL, { max: 4, onnotice: () => {}, connection: { search_path: schema } });
    try {
      await sql.unsafe(`create schema ${schema}`);
      const { migrate } = await import("../src/ledger/migrate.ts");
      await migrate(sql, schema);
      const make = () =>
        new OAuthTokens({
          sql,
          baseUrl: sandbox.url,
          clientId: sandbox.clientId,
          clientSecret: sandbox.clientSecret,
          refreshToken: sandbox.currentRefreshToken(),
          timeoutMs: 5_000,
        });
      const [a, b] = [make(), make()];
      const [ta, tb] = await Promise.all([a.get(), b.get()]);
      assert.equal(sandbox.stats().refreshes, 1, "one refresh for both replicas");
      assert.equal(ta, tb);
      for (const token of [ta, tb]) {
        const me = await fetch(`${sandbox.url}/users/me`, { headers: { authorization: `Bearer ${token}` } });
        assert.equal(me.status, 200);
        await me.body?.cancel();
      }
      // A restart with the same (now spent) MELI_REFRESH_TOKEN continues the stored chain.
      sandbox.expireAccessTokens();
      const c = make();
      const tc = await c.get();
      assert.notEqual(tc, ta);
      assert.equal(sandbox.stats().refreshes, 2);
      assert.equal(sandbox.stats().refreshFailures, 0, "the spent env token was never replayed");
    } finally {
      await sql.unsafe(`drop schema if exists ${schema} cascade`);
      await sql.end();
      await sandbox.close();
    }
  },
);

integration("two service instances on one ledger: one refresh, both sync, quantities exact", async () => {
  const m = await startMeliHarness({ ratePerSecond: 100 });
  const second = startService(testConfig(m.env));
  try {
    await second.started;
    for (let i = 0; i < 20; i++) {
      await m.pos.sell(m.h, MELI_STORE, [{ sku: ["REMERA-001", "REMERA-002", "GORRO-LANA"][i % 3], qty: 1 }]);
    }
    await settled(m.h, 20);
    assert.deepEqual(await statusCounts(m.h), { applied: 20 });
    assert.equal(m.sandbox.stats().refreshes, 1);
    for (const sku of ["REMERA-001", "REMERA-002", "GORRO-LANA"]) {
      assert.equal(
        m.sandbox.quantityOf(productOf(sku).producto_id),
        Math.max(0, await m.pos.get(MELI_STORE, sku)),
      );
    }
  } finally {
    await second.close();
    await m.close();
  }
});

integration(
  "invalid_grant: readyz 503 with the fix, changes wait, a new refresh token recovers them",
  async () => {
    const m = await startMeliHarness({ ratePerSecond: 100 });
    let restarted: Awaited<ReturnType<typeof harnessFor>> | undefined;
    try {
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-001", qty: 1 }]);
      await settled(m.h, 1);
      m.sandbox.revokeTokens();
      m.sandbox.expireAccessTokens();
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-002", qty: 1 }]);
      const body = await waitFor(async () => {
        const res = await fetch(`${m.h.service.url}/readyz`);
        const json = await res.json();
        return res.status === 503 && json.checks?.mercadolibre?.ok === false ? json : undefined;
      }, "readyz 503 naming mercadolibre");
      assert.match(body.checks.mercadolibre.detail, /invalid_grant/);
      assert.match(body.checks.mercadolibre.detail, /authorize the app again/);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(
        await statusCounts(m.h),
        { applied: 1, pending: 1 },
        "the change waits, it does not fail",
      );

      // The seller authorizes again; the operator sets the new token and restarts.
      await m.h.service.close();
      const fresh = m.sandbox.authorize();
      const config = testConfig({ ...m.env, MELI_REFRESH_TOKEN: fresh });
      const service = startService(config);
      await service.started;
      restarted = await harnessFor(service, config);
      await settled(restarted, 2);
      assert.deepEqual(await statusCounts(restarted), { applied: 2 });
      assert.equal(
        m.sandbox.quantityOf(productOf("REMERA-002").producto_id),
        Math.max(0, await m.pos.get(MELI_STORE, "REMERA-002")),
      );
      assert.equal((await fetch(`${service.url}/readyz`)).status, 200);
    } finally {
      await restarted?.service.close();
      await m.close();
    }
  },
);

integration(
  "a listing MeLi paused at 0 is reactivated when stock is back (MELI_REACTIVATE=true)",
  async () => {
    const m = await startMeliHarness({ ratePerSecond: 100 }, { MELI_REACTIVATE: "true" });
    try {
      const sku = "GORRA-O'NEILL";
      const listing = m.sandbox.listingFor(productOf(sku).producto_id)!;
      await m.pos.set(MELI_STORE, sku, 1);
      await m.pos.sell(m.h, MELI_STORE, [{ sku, qty: 1 }]);
      await settled(m.h, 1);
      const paused = m.sandbox.item(listing.itemId) as {
        status: string;
        sub_status: string[];
        available_quantity: number;
      };
      assert.equal(paused.available_quantity, 0);
      assert.equal(paused.status, "paused");
      assert.deepEqual(paused.sub_status, ["out_of_stock"]);
      await m.pos.set(MELI_STORE, sku, 6); // restocked at the POS
      await m.pos.sell(m.h, MELI_STORE, [{ sku, qty: 1 }]);
      await settled(m.h, 2);
      const active = m.sandbox.item(listing.itemId) as { status: string; available_quantity: number };
      assert.equal(active.available_quantity, 5);
      assert.equal(active.status, "active");
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await m.close();
    }
  },
);

integration("under_review, Full and unknown SKUs fail with MeLi's message and reach the DLQ", async () => {
  const m = await startMeliHarness({ ratePerSecond: 100 });
  try {
    const review = m.sandbox.listingFor(productOf("MOCHILA-URB").producto_id)!;
    m.sandbox.setItem(review.itemId, { status: "under_review" });
    const full = m.sandbox.listingFor(productOf("RINONERA").producto_id)!;
    m.sandbox.setItem(full.itemId, { logistic_type: "fulfillment" });
    await m.pos.sell(m.h, MELI_STORE, [
      { sku: "MOCHILA-URB", qty: 1 },
      { sku: "RINONERA", qty: 1 },
      { sku: "MATE-IMP-01", qty: 1 },
      { sku: "NO-SUCH-SKU", qty: 1 },
      { sku: "REMERA-001", qty: 1 },
    ]);
    await settled(m.h, 5);
    const rows = await m.h.sql<{ sku: string; status: string; error_reason: string; error: string }[]>`
      select sku, status, error_reason, error from stock_change order by sku`;
    const by = Object.fromEntries(rows.map((r) => [r.sku, r]));
    assert.equal(by["REMERA-001"].status, "applied");
    assert.equal(by["MOCHILA-URB"].error_reason, "listing_under_review");
    assert.match(by["MOCHILA-URB"].error, /review/i);
    assert.equal(by["RINONERA"].error_reason, "fulfillment_listing");
    assert.equal(by["MATE-IMP-01"].error_reason, "sku_ambiguous");
    assert.equal(by["NO-SUCH-SKU"].error_reason, "sku_not_found");
    // Five SKUs cost more to search than the whole account to read: what the read could not
    // resolve to one listing (ambiguous, unknown) still got the search's outcome.
    assert.ok(stockRequests(m.sandbox).scan_page, "the SKUs were resolved by reading the account");
    // The copies are published after each batch is recorded: collect until all four are there.
    const dead: Awaited<ReturnType<typeof m.h.takeDeadLetters>> = [];
    await waitFor(async () => {
      dead.push(...await m.h.takeDeadLetters());
      return dead.length >= 4;
    }, "4 DLQ copies");
    const reasons = dead.map((d) => header(d, "sync-reason")).sort();
    assert.deepEqual(reasons, [
      "fulfillment_listing",
      "listing_under_review",
      "sku_ambiguous",
      "sku_not_found",
    ]);
    assertNoInvalidRequests(m.sandbox);
  } finally {
    await m.close();
  }
});

integration(
  "a variation deleted after its SKU was resolved fails sku_not_found and writes to no other variation",
  async () => {
    const m = await startMeliHarness();
    try {
      const sku = "CINTURON-CUERO-90";
      const sibling = productOf("CINTURON-CUERO-100").producto_id;
      await m.pos.sell(m.h, MELI_STORE, [{ sku, qty: 1 }]);
      await settled(m.h, 1); // resolved and cached
      m.sandbox.deleteVariation(productOf(sku).producto_id);
      const siblingBefore = m.sandbox.quantityOf(sibling);
      await m.pos.sell(m.h, MELI_STORE, [{ sku, qty: 1 }]);
      await settled(m.h, 2);
      const [last] = await m.h.sql<{ status: string; error_reason: string }[]>`
        select status, error_reason from stock_change order by id desc limit 1`;
      assert.deepEqual({ ...last }, { status: "failed", error_reason: "sku_not_found" });
      assert.equal(m.sandbox.quantityOf(sibling), siblingBefore, "the item's other variation is untouched");
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await m.close();
    }
  },
);

integration(
  "each listing of a batch is applied when MeLi answered for it, not when the last one of the batch is done",
  async () => {
    const m = await startMeliHarness({ ratePerSecond: 100 });
    try {
      // Every write is answered 300 ms after it is applied: the batch's four listings are answered ≥ 300 ms apart.
      m.sandbox.setFaults({ answerDelayMs: 300 });
      const skus = ["REMERA-001", "JEAN-RECTO-40", "BUZO-GRIS-L", "BUFANDA-GRIS"];
      const logged = m.sandbox.requestLog().length;
      await m.pos.sell(m.h, MELI_STORE, skus.map((sku) => ({ sku, qty: 1 })));
      await settled(m.h, skus.length);
      const rows = await m.h.sql<{ sku: string; applied_ms: number; batch_id: string }[]>`
        select sku, extract(epoch from applied_at)::float8 * 1000 as applied_ms, batch_id::text
          from stock_change where status = 'applied' order by applied_at`;
      assert.equal(new Set(rows.map((r) => r.batch_id)).size, 1, "one batch carried the four listings");
      const puts = m.sandbox.requestLog().slice(logged).filter((r) => r.method === "PUT");
      assert.equal(puts.length, skus.length);
      const putOf = (sku: string) => {
        const listing = m.sandbox.listingFor(productOf(sku).producto_id)!;
        return puts.find((p) => p.path.startsWith(`/items/${listing.itemId}`))!;
      };
      // Differences only: the sandbox's clock (this process) and Postgres's need not agree.
      const first = { applied: rows[0].applied_ms, put: putOf(rows[0].sku).at };
      for (const row of rows) {
        const sincePut = putOf(row.sku).at - first.put;
        const sinceApplied = row.applied_ms - first.applied;
        assert.ok(
          Math.abs(sinceApplied - sincePut) < 150,
          `${row.sku}: written ${sincePut} ms after the first listing, applied ${
            sinceApplied.toFixed(0)
          } ms after it`,
        );
      }
      const span = putOf(rows.at(-1)!.sku).at - first.put;
      assert.ok(span >= 900, `the writes themselves were answered one after another (${span} ms)`);
    } finally {
      await m.close();
    }
  },
);

integration(
  "a multi-origin seller without MELI_LOCATIONS fails with a clear reason, not a silent success",
  async () => {
    const m = await startMeliHarness({ userTags: ["normal", "warehouse_management"] });
    try {
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-001", qty: 1 }]);
      await settled(m.h, 1);
      const [row] = await m.h.sql<
        { error_reason: string; error: string }[]
      >`select error_reason, error from stock_change`;
      assert.equal(row.error_reason, "multi_origin_unmapped");
      assert.match(row.error, /MELI_LOCATIONS/);
      assert.equal(m.sandbox.stats().puts, 0);
    } finally {
      await m.close();
    }
  },
);

/** The default catalog with one product sold by three MercadoLibre items of one user product. */
function catalogWithFamily(sku: string) {
  const c = defaultCatalog();
  c.products.find((p) => p.sku === sku)!.meli_items = 3;
  return c;
}

integration("a user product sold by three items is written once, and all three items show it", async () => {
  const m = await startMeliHarness({ catalog: catalogWithFamily("REMERA-002"), ratePerSecond: 100 });
  try {
    const family = m.sandbox.listingFor(productOf("REMERA-002").producto_id)!;
    assert.equal(family.itemIds.length, 3);
    await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-002", qty: 2 }]);
    await settled(m.h, 1);
    const [row] = await m.h.sql<{ status: string }[]>`select status from stock_change`;
    assert.equal(
      row.status,
      "applied",
      "three items with one SELLER_SKU are one user product, not ambiguous",
    );
    const want = await m.pos.get(MELI_STORE, "REMERA-002");
    for (const itemId of family.itemIds) {
      assert.equal(
        (m.sandbox.item(itemId) as { available_quantity: number }).available_quantity,
        want,
        itemId,
      );
    }
    const stats = m.sandbox.stats();
    assert.equal(stats.puts, 1, "one stock write for the whole family");
    assert.deepEqual(stats.putsByUserProduct, { [family.userProductId]: 1 });
    assertNoInvalidRequests(m.sandbox);
  } finally {
    await m.close();
  }
});

const WAREHOUSES = [
  { store_id: "1001", network_node_id: "MLA1001", tienda_id: MELI_STORE },
  { store_id: "1002", network_node_id: "MLA1002", tienda_id: OTHER_STORE },
];
const MELI_LOCATIONS = JSON.stringify(Object.fromEntries(
  WAREHOUSES.map((w) => [w.tienda_id, { store_id: w.store_id, network_node_id: w.network_node_id }]),
));

integration(
  "a multi-origin seller is synced per location; a lost x-version race is read again; Full is never written",
  async () => {
    const catalog = defaultCatalog();
    catalog.products.find((p) => p.sku === "RINONERA")!.meli_logistic_type = "fulfillment";
    const m = await startMeliHarness(
      { catalog, userTags: ["normal", "warehouse_management"], warehouses: WAREHOUSES, ratePerSecond: 100 },
      { MELI_TIENDA_ID: "", MELI_LOCATIONS },
    );
    try {
      const remera = m.sandbox.listingFor(productOf("REMERA-001").producto_id)!;
      const full = m.sandbox.listingFor(productOf("RINONERA").producto_id)!;
      const fullBefore = m.sandbox.userProductStock(full.userProductId);
      // A sale shipped from warehouse 1001 lands right after the service reads the stock.
      m.sandbox.raceStockWrite(remera.userProductId, { type: "seller_warehouse", store_id: "1001" }, 0);
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-001", qty: 1 }, { sku: "RINONERA", qty: 1 }]);
      await m.pos.sell(m.h, OTHER_STORE, [{ sku: "REMERA-001", qty: 2 }]);
      // A store MELI_LOCATIONS does not map is no MercadoLibre stock: no change at all.
      await m.pos.sell(m.h, catalog.stores[2].tienda_id, [{ sku: "REMERA-001", qty: 1 }]);
      await settled(m.h, 3);
      const rows = await m.h.sql<{ sku: string; tienda_id: string; status: string; error_reason: string }[]>`
        select sku, tienda_id, status, error_reason from stock_change order by sku, tienda_id`;
      assert.equal(rows.length, 3, "the unmapped store's sale made no change");
      const remeraRows = rows.filter((r) => r.sku === "REMERA-001");
      assert.deepEqual(remeraRows.map((r) => r.status), ["applied", "applied"]);
      const [raced] = await m.h.sql<
        { attempts: number; result: { detail?: { version_conflicts?: number } } }[]
      >`
        select attempts, result from stock_change
         where sku = 'REMERA-001' and result->'detail' ? 'version_conflicts'`;
      assert.ok(raced, "the write that lost the race says so");
      assert.deepEqual(
        [raced.attempts, raced.result.detail?.version_conflicts],
        [1, 1],
        "recovered in one send",
      );
      const stock = m.sandbox.userProductStock(remera.userProductId)!;
      const at = (store: string) => stock.locations.find((l) => l.store_id === store)?.quantity;
      assert.equal(at("1001"), await m.pos.get(MELI_STORE, "REMERA-001"), "warehouse 1001 shows its store");
      assert.equal(at("1002"), await m.pos.get(OTHER_STORE, "REMERA-001"), "warehouse 1002 shows its store");
      const item = m.sandbox.item(remera.itemId) as { available_quantity: number };
      assert.equal(item.available_quantity, at("1001")! + at("1002")!, "the item shows the locations' total");
      const puts = m.sandbox.requestLog().filter((r) => r.method === "PUT");
      assert.equal(puts.filter((r) => r.status === 409).length, 1, "the race was lost once");
      assert.ok(puts.every((r) => r.path.endsWith("/stock/type/seller_warehouse")), "never /items");
      // Full: reported, never written.
      const rinonera = rows.find((r) => r.sku === "RINONERA")!;
      assert.deepEqual([rinonera.status, rinonera.error_reason], ["failed", "fulfillment_listing"]);
      assert.ok(!puts.some((r) => r.path.includes(full.userProductId)), "no write to the Full user product");
      assert.deepEqual(m.sandbox.userProductStock(full.userProductId), fullBefore);
      assert.equal(m.sandbox.stats().putsByUserProduct[full.userProductId], undefined);
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await m.close();
    }
  },
);

integration(
  "delta mode on a multi-origin seller subtracts each store's sale from its own location",
  async () => {
    const m = await startMeliHarness(
      { userTags: ["normal", "warehouse_management"], warehouses: WAREHOUSES, ratePerSecond: 100 },
      { MELI_TIENDA_ID: "", MELI_LOCATIONS, MELI_MODE: "delta" },
    );
    try {
      const remera = m.sandbox.listingFor(productOf("REMERA-003").producto_id)!;
      const before = m.sandbox.userProductStock(remera.userProductId)!;
      const at = (s: typeof before, store: string) => s.locations.find((l) => l.store_id === store)!.quantity;
      m.sandbox.raceStockWrite(remera.userProductId, { type: "seller_warehouse", store_id: "1002" }, 40);
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-003", qty: 2 }]);
      await settled(m.h, 1);
      await m.pos.sell(m.h, OTHER_STORE, [{ sku: "REMERA-003", qty: 3 }]);
      await settled(m.h, 2);
      const after = m.sandbox.userProductStock(remera.userProductId)!;
      assert.equal(at(after, "1001"), at(before, "1001") - 2);
      // A MeLi-side sale set 1002 to 40 right after the first read (a 409, read again); 1002's sale then
      // subtracts from the 40 MeLi holds, not from what the POS or an older read said.
      assert.equal(at(after, "1002"), 40 - 3);
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await m.close();
    }
  },
);

integration(
  "200 OK but not applied is not 'applied': the write is repeated until MeLi shows it",
  async () => {
    const m = await startMeliHarness({ ratePerSecond: 100, faults: { ignoreWritesRate: 1 } });
    try {
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "REMERA-003", qty: 2 }]);
      await waitFor(async () => {
        const [r] = await m.h.sql<{ error_reason: string | null }[]>`select error_reason from stock_change`;
        return r.error_reason === "not_applied";
      }, "change sent back with not_applied");
      assert.equal((await statusCounts(m.h)).applied, undefined);
      m.sandbox.setFaults({ ignoreWritesRate: 0 });
      await settled(m.h, 1);
      assert.deepEqual(await statusCounts(m.h), { applied: 1 });
      assert.equal(
        m.sandbox.quantityOf(productOf("REMERA-003").producto_id),
        Math.max(0, await m.pos.get(MELI_STORE, "REMERA-003")),
      );
    } finally {
      await m.close();
    }
  },
);

integration("a 429 storm and 20 % 5xx still end at the exact POS quantities", async () => {
  const m = await startMeliHarness(
    { ratePerSecond: 8, faults: { errorRate: 0.2, lostResponseRate: 0.1, conflictRate: 0.05, seed: 7 } },
    { MELI_RATE_PER_SEC: "40", DISPATCH_MAX_ATTEMPTS: "1000" },
  );
  try {
    const skus = ["REMERA-001", "REMERA-002", "REMERA-003", "BUZO-GRIS-L", "JEAN-RECTO-42", "ZAPA-URB-41"];
    for (let i = 0; i < 30; i++) await m.pos.sell(m.h, MELI_STORE, [{ sku: skus[i % skus.length], qty: 1 }]);
    await settled(m.h, 30, 60_000);
    assert.deepEqual(await statusCounts(m.h), { applied: 30 });
    const stats = m.sandbox.stats();
    assert.ok(stats.rateLimited > 0, "the storm happened");
    assert.ok(stats.errorsInjected + stats.lostResponses > 0, "5xx happened");
    for (const sku of skus) {
      assert.equal(
        m.sandbox.quantityOf(productOf(sku).producto_id),
        Math.max(0, await m.pos.get(MELI_STORE, sku)),
        sku,
      );
    }
    assertNoInvalidRequests(m.sandbox);
  } finally {
    await m.close();
  }
});

integration(
  "delta mode with two instances and lost responses: no lost update, no double decrement",
  async () => {
    const m = await startMeliHarness(
      { ratePerSecond: 200, faults: { lostResponseRate: 0.2, conflictRate: 0.3, seed: 3 } },
      // No MELI_TIENDA_ID: in delta mode every store's sales count.
      { MELI_MODE: "delta", MELI_TIENDA_ID: "", DISPATCH_MAX_ATTEMPTS: "1000" },
    );
    const second = startStaticTokenInstance(m);
    try {
      await second.started;
      const sku = "CAMPERA-PUFFER-L";
      const id = productOf(sku).producto_id;
      m.sandbox.setQuantity(id, 500);
      let sold = 0;
      for (let i = 0; i < 40; i++) {
        const qty = 1 + (i % 3);
        sold += qty;
        // Sales at every store count in delta mode.
        await m.pos.sell(m.h, catalog.stores[i % catalog.stores.length].tienda_id, [{ sku, qty }]);
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, 200)); // waves: more separate writes
      }
      await settled(m.h, 40, 60_000);
      const counts = await statusCounts(m.h);
      const failures = await m.h.sql<{ error_reason: string; error: string }[]>`
      select distinct error_reason, error from stock_change where status = 'failed'`;
      assert.equal(counts.failed ?? 0, 0, JSON.stringify({ counts, failures }));
      assert.equal(m.sandbox.quantityOf(id), 500 - sold);
      assert.ok(m.sandbox.stats().lostResponses > 0, "some PUTs landed without an answer");
      assert.ok(m.sandbox.stats().conflicts > 0, `some PUTs met 409 (PUTs: ${m.sandbox.stats().puts})`);
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await second.close();
      await m.close();
    }
  },
);

integration(
  "delta mode: MeLi slower than MELI_LOCK_TTL with two instances still ends at the exact quantity",
  async () => {
    // Every MeLi call takes 400 ms, the listing lock lives 150 ms: a read → PUT outlasts the TTL
    // several times over, so the lock must be renewed while the work runs or the other instance
    // reads the same quantity and one sale is lost.
    const m = await startMeliHarness(
      { ratePerSecond: 200, faults: { latencyMs: 400 } },
      { MELI_MODE: "delta", MELI_TIENDA_ID: "", MELI_LOCK_TTL: "150ms", DISPATCH_MAX_ATTEMPTS: "1000" },
    );
    const second = startStaticTokenInstance(m);
    try {
      await second.started;
      const sku = "CAMPERA-PUFFER-L";
      const id = productOf(sku).producto_id;
      m.sandbox.setQuantity(id, 100);
      const sales = 8;
      for (let i = 0; i < sales; i++) {
        await m.pos.sell(m.h, catalog.stores[i % catalog.stores.length].tienda_id, [{ sku, qty: 1 }]);
        await new Promise((r) => setTimeout(r, 150)); // separate batches, picked up by both instances
      }
      await settled(m.h, sales, 90_000);
      const failures = await m.h.sql<{ error_reason: string; error: string }[]>`
        select distinct error_reason, error from stock_change where status = 'failed'`;
      assert.deepEqual([...failures], []);
      assert.equal(m.sandbox.quantityOf(id), 100 - sales, "every sale subtracted exactly once");
      assertNoInvalidRequests(m.sandbox);
    } finally {
      await second.close();
      await m.close();
    }
  },
);

integration(
  "delta mode: a 200 that does not show the quantity yet is settled by reading, not re-planned into a second decrement",
  async () => {
    // MeLi applies every PUT but answers with the item as it was (a copy behind the write).
    const m = await startMeliHarness(
      { ratePerSecond: 200, faults: { staleAnswerRate: 1 } },
      { MELI_MODE: "delta", MELI_TIENDA_ID: "", DISPATCH_MAX_ATTEMPTS: "1000" },
    );
    try {
      const sku = "CAMPERA-PUFFER-L";
      const id = productOf(sku).producto_id;
      m.sandbox.setQuantity(id, 100);
      await m.pos.sell(m.h, MELI_STORE, [{ sku, qty: 1 }]);
      await waitFor(
        async () => (await statusCounts(m.h)).applied === 1 || m.sandbox.stats().puts >= 3,
        "the sale applied (or decremented again)",
      );
      assert.equal(m.sandbox.quantityOf(id), 99, "the sale subtracted once");
      assert.equal(m.sandbox.stats().puts, 1, "one PUT");
      assert.deepEqual(await statusCounts(m.h), { applied: 1 });
    } finally {
      await m.close();
    }
  },
);

integration(
  "a SKU moved to another variation after the account was read is written where it is now, as a search finds it",
  async () => {
    const m = await startMeliHarness({ ratePerSecond: 100 });
    try {
      // A cold batch of other SKUs: enough to pay for reading the account (on a branch that reads it).
      const first = COLD_BATCH;
      await m.pos.sell(m.h, MELI_STORE, first.map((sku) => ({ sku, qty: 1 })));
      await settled(m.h, first.length);
      // The seller swaps the SKUs of two variations of one item on MeLi (nothing was sold of either yet).
      const v38 = m.sandbox.listingFor(productOf("JEAN-RECTO-38").producto_id)!;
      const v40 = m.sandbox.listingFor(productOf("JEAN-RECTO-40").producto_id)!;
      assert.equal(v38.itemId, v40.itemId, "two variations of one item");
      for (
        const [vid, sku] of [[v38.variationId, "JEAN-RECTO-40"], [v40.variationId, "JEAN-RECTO-38"]] as const
      ) {
        const res = await fetch(`${m.sandbox.url}/items/${v38.itemId}/variations/${vid}`, {
          method: "PUT",
          headers: { authorization: `Bearer ${m.sandbox.staticToken}`, "content-type": "application/json" },
          body: JSON.stringify({ attributes: [{ id: "SELLER_SKU", value_name: sku }] }),
        });
        assert.equal(res.status, 200, await res.text());
      }
      const mark = m.sandbox.requestLog().length;
      await m.pos.sell(m.h, MELI_STORE, [{ sku: "JEAN-RECTO-38", qty: 1 }]);
      await settled(m.h, first.length + 1);
      const puts = m.sandbox.requestLog().slice(mark).filter((r) => r.method === "PUT").map((r) => r.path);
      assert.deepEqual(
        puts,
        [`/items/${v40.itemId}/variations/${v40.variationId}`],
        "JEAN-RECTO-38's stock goes to the variation that carries JEAN-RECTO-38 now",
      );
    } finally {
      await m.close();
    }
  },
);
