/**
 * Sales reach Shopify exactly once: real RabbitMQ, Postgres and Redis, the
 * service's real dispatcher and Shopify channel, and the loopback Shopify
 * sandbox (which validates every request against the 2026-10 schema).
 */
import assert from "node:assert/strict";
import { parse, validate } from "graphql";
import type { SyncMessage } from "rabbitmq-client";
import { SHOPIFY_DOCUMENTS } from "../src/channels/shopify/documents.ts";
import { skuSearchQuery } from "../src/channels/shopify/search.ts";
import { type RunningService, startService } from "../src/main.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import type { Config } from "../src/config.ts";
import { startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { type ShopifySandbox, startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { shopifySchema } from "../src/sandbox/shopify/schema.ts";
import { type Harness, harnessFor, header, integration, testConfig, waitFor } from "./helpers.ts";
import { catalogSale } from "./pos.ts";

const catalog = defaultCatalog();
const STORES = catalog.stores.map((s) => s.tienda_id);
const product = (sku: string) => catalog.products.find((p) => p.sku === sku)!;
const TRICKY = catalog.products.find((p) => p.sku.includes('"'))!.sku;

interface Line {
  sku: string;
  qty: number;
}

function saleOf(tiendaId: string, lines: Line[], id?: string) {
  return catalogSale(catalog, tiendaId, lines, id);
}

/** Service variables that point the Shopify channel at a sandbox as if it were the real API. */
function sandboxEnv(sandbox: ShopifySandbox, extra: Record<string, string> = {}): Record<string, string> {
  return {
    CHANNELS: "shopify",
    DISPATCH_ENABLED: "true",
    SHOPIFY_URL: sandbox.url,
    SHOPIFY_TOKEN: sandbox.token,
    SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(sandbox.locations.map((l) => [l.tiendaId, l.id]))),
    ...extra,
  };
}

/** A sandbox plus a service configured against it as if it were the real API. */
async function startSyncHarness(
  sandboxOptions: Parameters<typeof startShopifySandbox>[0] = {},
  env: Record<string, string> = {},
): Promise<{ h: Harness; sandbox: ShopifySandbox; envFor: Record<string, string> }> {
  const sandbox = await startShopifySandbox({ catalog: defaultCatalog(), ...sandboxOptions });
  const envFor = sandboxEnv(sandbox, { DISPATCH_BACKOFF_BASE: "100ms", DISPATCH_BACKOFF_MAX: "1s", ...env });
  const config = testConfig(envFor);
  const service = startService(config);
  await service.started;
  const h = await harnessFor(service, config);
  return { h, sandbox, envFor: { ...envFor, ...pick(config) } };
}

function pick(config: ReturnType<typeof testConfig>): Record<string, string> {
  return { EXCHANGE: config.EXCHANGE, QUEUE: config.QUEUE, LEDGER_SCHEMA: config.LEDGER_SCHEMA };
}

async function statusCounts(h: Harness): Promise<Record<string, number>> {
  const rows = await h.sql<{ status: string; n: number }[]>`
    select status, count(*)::int as n from stock_change group by status`;
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

function availableOf(sandbox: ShopifySandbox, sku: string, tiendaId: string): number {
  return sandbox.availableFor(product(sku).producto_id, tiendaId)!;
}

/**
 * Instance A, whose dispatchers die right after each send Shopify applied: the send is
 * counted (`sends`), held until `revive`, then fails before its outcome is recorded.
 */
async function startCrashingAfterSend(config: Config) {
  const revive = Promise.withResolvers<void>();
  let sends = 0;
  // One lane: the hung send is then the whole instance's death (a second lane would be alive, and would
  // take the batch over itself once its lease ran out, as a live replica should).
  const a = startService({ ...config, DISPATCH_LANES: 1 }, {
    dispatcherHooks: {
      async afterSend() {
        sends++;
        await revive.promise;
        throw new Error("simulated crash");
      },
    },
  });
  await a.started;
  const h = await harnessFor(a, config);
  return { h, sends: () => sends, revive: () => revive.resolve() };
}

Deno.test("every GraphQL document the service sends validates against Shopify's 2026-10 schema", () => {
  const schema = shopifySchema();
  for (const [name, document] of Object.entries(SHOPIFY_DOCUMENTS)) {
    const errors = validate(schema, parse(document));
    assert.deepEqual(errors.map((e) => e.message), [], `${name} validates`);
  }
});

Deno.test("SKU search values are escaped so they cannot leave the quoted phrase", () => {
  assert.equal(skuSearchQuery("REMERA-001"), 'sku:"REMERA-001"');
  assert.equal(skuSearchQuery('A"B'), 'sku:"A\\"B"');
  assert.equal(skuSearchQuery("A:B (C) \\D"), 'sku:"A\\:B \\(C\\) \\\\D"');
  assert.equal(skuSearchQuery('X" OR sku:*'), 'sku:"X\\" OR sku\\:*"');
});

integration("sales for several SKUs and stores lower Shopify stock by exactly their sum", async () => {
  const { h, sandbox } = await startSyncHarness();
  try {
    const skus = catalog.products.filter((p) => !p.sku.startsWith("MATE-IMP")).slice(0, 12).map((p) => p.sku);
    const before = new Map<string, number>();
    for (const sku of skus) for (const t of STORES) before.set(`${sku}|${t}`, availableOf(sandbox, sku, t));
    const expected = new Map(before);
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 48271) % 2147483647) % n;
    for (let i = 0; i < 150; i++) {
      const tienda = STORES[rnd(STORES.length)];
      const lines = Array.from(
        { length: 1 + rnd(3) },
        () => ({ sku: skus[rnd(skus.length)], qty: 1 + rnd(4) }),
      );
      for (const l of lines) expected.set(`${l.sku}|${tienda}`, expected.get(`${l.sku}|${tienda}`)! - l.qty);
      const e = saleOf(tienda, lines);
      await h.publish(e, { messageId: e.event_id });
    }
    await waitFor(
      async () =>
        (await statusCounts(h)).applied > 0 && !(await statusCounts(h)).pending &&
        !(await statusCounts(h)).sending,
      "all applied",
      30_000,
    );
    const counts = await statusCounts(h);
    assert.deepEqual(Object.keys(counts), ["applied"]);
    for (const [key, qty] of expected) {
      const [sku, tienda] = key.split("|");
      assert.equal(availableOf(sandbox, sku, tienda), qty, `${sku} at ${tienda}`);
    }
    const stats = sandbox.stats();
    assert.ok(
      stats.mutationsApplied < 150,
      `coalesced into fewer calls than sales (${stats.mutationsApplied})`,
    );
    const [row] = await h.sql`select result from stock_change where status = 'applied' limit 1`;
    assert.equal(
      typeof row.result.quantity_after,
      "number",
      "the marketplace's resulting quantity is recorded",
    );
    const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
    assert.match(metrics, /changes_processed_total\{channel="shopify",outcome="applied"\} \d+/);
    assert.match(metrics, /event_applied_latency_seconds_count\{channel="shopify"\} \d+/);
    assert.match(metrics, /budget_available\{channel="shopify"\} \d+/);
  } finally {
    await h.close();
    await sandbox.close();
  }
});

integration("a batch's new SKUs are looked up 25 per call, not one call each", async () => {
  const { h, sandbox } = await startSyncHarness();
  try {
    const tienda = STORES[1];
    // Every catalog SKU but the tricky ones, in one sale: one batch with ~35 SKUs to resolve.
    const skus = [...new Set(catalog.products.map((p) => p.sku))];
    const before = new Map(skus.map((sku) => [sku, availableOf(sandbox, sku, tienda)]));
    const e = saleOf(tienda, skus.map((sku) => ({ sku, qty: 1 })));
    await h.publish(e, { messageId: e.event_id });
    await waitFor(
      async () => {
        const c = await statusCounts(h);
        return !c.pending && !c.sending && (c.applied ?? 0) > 0;
      },
      "settled",
      20_000,
    );
    const metrics = await (await fetch(`${h.service.url}/metrics`)).text();
    const calls = (operation: string) =>
      [...metrics.matchAll(
        new RegExp(
          `marketplace_calls_total\\{channel="shopify",operation="${operation}",outcome="ok"\\} (\\d+)`,
          "g",
        ),
      )]
        .reduce((n, m) => n + Number(m[1]), 0);
    assert.equal(
      calls("ItemsBySkus"),
      Math.ceil(skus.length / 25),
      `batched lookups for ${skus.length} SKUs`,
    );
    assert.equal(calls("ItemsBySku"), 0, "no SKU needed a call of its own");
    for (const sku of skus) {
      if (sku === "MATE-IMP-01") continue; // ambiguous on purpose
      assert.equal(availableOf(sandbox, sku, tienda), before.get(sku)! - 1, sku);
    }
    const [ambiguous] = await h.sql<{ error_reason: string }[]>`
      select error_reason from stock_change where sku = 'MATE-IMP-01'`;
    assert.equal(ambiguous.error_reason, "sku_ambiguous");
  } finally {
    await h.close();
    await sandbox.close();
  }
});

integration(
  "unknown, ambiguous and metacharacter SKUs and an unmapped store: right reasons, the rest applied",
  async () => {
    const { h, sandbox } = await startSyncHarness();
    try {
      const tienda = STORES[0];
      const before = {
        ok: availableOf(sandbox, "REMERA-002", tienda),
        tricky: availableOf(sandbox, TRICKY, tienda),
      };
      const e = saleOf(tienda, [
        { sku: "REMERA-002", qty: 2 },
        { sku: TRICKY, qty: 1 },
        { sku: "NO-SUCH-SKU", qty: 1 },
        { sku: "MATE-IMP-01", qty: 1 },
      ], "bad-skus");
      const unmapped = saleOf(
        "99999999-9999-4999-8999-999999999999",
        [{ sku: "REMERA-002", qty: 5 }],
        "bad-store",
      );
      await h.publish(e, { messageId: e.event_id });
      await h.publish(unmapped, { messageId: unmapped.event_id });
      await waitFor(
        async () => {
          const c = await statusCounts(h);
          return (c.applied ?? 0) + (c.failed ?? 0) === 5;
        },
        "all settled",
        20_000,
      );
      const rows = await h.sql<
        { sku: string; status: string; error_reason: string | null; event_id: string }[]
      >`
      select sku, status, error_reason, event_id from stock_change order by event_id, sku`;
      const by = (event: string, sku: string) => rows.find((r) => r.event_id === event && r.sku === sku)!;
      assert.equal(by("bad-skus", "REMERA-002").status, "applied");
      assert.equal(by("bad-skus", TRICKY).status, "applied", "metacharacters are escaped, the SKU resolves");
      assert.deepEqual([by("bad-skus", "NO-SUCH-SKU").status, by("bad-skus", "NO-SUCH-SKU").error_reason], [
        "failed",
        "sku_not_found",
      ]);
      assert.deepEqual([by("bad-skus", "MATE-IMP-01").status, by("bad-skus", "MATE-IMP-01").error_reason], [
        "failed",
        "sku_ambiguous",
      ]);
      assert.deepEqual([by("bad-store", "REMERA-002").status, by("bad-store", "REMERA-002").error_reason], [
        "failed",
        "store_unmapped",
      ]);
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before.ok - 2);
      assert.equal(availableOf(sandbox, TRICKY, tienda), before.tricky - 1);

      const dead = await waitFor(async () => {
        const got = await h.takeDeadLetters();
        return got.length ? got : undefined;
      }, "DLQ copies");
      await new Promise((r) => setTimeout(r, 300));
      dead.push(...await h.takeDeadLetters());
      const reasons = dead.map((m) => `${header(m, "sync-sku")}:${header(m, "sync-reason")}`).sort();
      assert.deepEqual(reasons, [
        "MATE-IMP-01:sku_ambiguous",
        "NO-SUCH-SKU:sku_not_found",
        "REMERA-002:store_unmapped",
      ]);
      for (const m of dead) {
        assert.equal(header(m, "sync-channel"), "shopify");
        assert.ok(header(m, "sync-error"));
        assert.ok(["bad-skus", "bad-store"].includes(m.messageId!));
      }
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "a SKU repeated under two producto_ids lowers both channels by the sum, with a metric and no DLQ",
  async () => {
    const tienda = STORES[0];
    const meli = await startMeliSandbox({ catalog, tiendaId: tienda });
    const { h, sandbox } = await startSyncHarness({}, {
      CHANNELS: "shopify,mercadolibre",
      MELI_MODE: "delta",
      MELI_URL: meli.url,
      MELI_CLIENT_ID: meli.clientId,
      MELI_CLIENT_SECRET: meli.clientSecret,
      MELI_REFRESH_TOKEN: meli.currentRefreshToken(),
      MELI_TIENDA_ID: tienda,
      DISPATCH_POLL_INTERVAL: "50ms",
    });
    try {
      const sku = "REMERA-002";
      const { producto_id } = product(sku);
      const shopifyBefore = availableOf(sandbox, sku, tienda);
      const meliBefore = meli.quantityOf(producto_id)!;
      const e = saleOf(tienda, [{ sku, qty: 2 }, { sku, qty: 3 }], "two-products-one-sku");
      (e.items[1] as { producto_id: string }).producto_id = crypto.randomUUID(); // the POS's catalog bug
      await h.publish(e, { messageId: e.event_id });
      await waitFor(async () => (await statusCounts(h)).applied === 2, "applied on both channels", 20_000);
      assert.equal(availableOf(sandbox, sku, tienda), shopifyBefore - 5);
      assert.equal(meli.quantityOf(producto_id), meliBefore - 5);
      assert.deepEqual(await h.takeDeadLetters(), [], "nothing parked in the DLQ");
      const conflicts = await h.service.metrics.productConflicts.get();
      assert.equal(conflicts.values[0]?.value, 1);
    } finally {
      await h.close();
      await sandbox.close();
      await meli.close();
    }
  },
);

/** A change's final status and reason, once it settled (applied or failed). */
async function settledChange(
  h: Harness,
  eventId: string,
): Promise<{ status: string; error_reason: string | null }> {
  let row: { status: string; error_reason: string | null } | undefined;
  await waitFor(
    async () => {
      [row] = await h.sql<{ status: string; error_reason: string | null }[]>`
      select status, error_reason from stock_change where event_id = ${eventId}`;
      return row?.status === "applied" || row?.status === "failed";
    },
    `${eventId} settled`,
    15_000,
  );
  return row!;
}

integration(
  "a variant deleted and re-created in Shopify gets the next sale on its new inventory item, once",
  async () => {
    const { h, sandbox } = await startSyncHarness();
    try {
      const tienda = STORES[0];
      const sku = "REMERA-001";
      const first = saleOf(tienda, [{ sku, qty: 1 }], "before-delete");
      await h.publish(first, { messageId: first.event_id });
      assert.equal((await settledChange(h, first.event_id)).status, "applied"); // the listing is cached now

      // The merchant deletes the variant and creates it again: same SKU, new variant and inventory item.
      const old = sandbox.deleteVariant(sku)!;
      const fresh = sandbox.createVariant({
        sku,
        productoId: product(sku).producto_id,
        available: { [tienda]: 50 },
      });
      assert.notEqual(fresh.inventoryItemId, old.inventoryItemId);

      const second = saleOf(tienda, [{ sku, qty: 2 }], "after-recreate");
      await h.publish(second, { messageId: second.event_id });
      assert.deepEqual(await settledChange(h, second.event_id), { status: "applied", error_reason: null });
      assert.equal(
        sandbox.available(fresh.inventoryItemId, sandbox.locationIdOf(tienda)!),
        48,
        "applied once",
      );
      const [listing] = await h
        .sql`select external_id from listing where channel = 'shopify' and sku = ${sku}`;
      assert.equal(listing.external_id, fresh.inventoryItemId, "the ledger's listing follows the new item");

      const third = saleOf(tienda, [{ sku, qty: 3 }], "next-sale");
      await h.publish(third, { messageId: third.event_id });
      assert.equal((await settledChange(h, third.event_id)).status, "applied");
      assert.equal(sandbox.available(fresh.inventoryItemId, sandbox.locationIdOf(tienda)!), 45);
      assert.deepEqual(await h.takeDeadLetters(), []);
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "an inventory item that vanishes right after its SKU was looked up fails once, without a lookup loop",
  async () => {
    // Each request waits 1 s in the sandbox (a mutation before it applies): room to delete the
    // variant after Shopify answered the SKU lookup and before it applies the adjustment.
    const { h, sandbox } = await startSyncHarness({ faults: { latencyMs: 1_000 } });
    try {
      const tienda = STORES[0];
      const sku = "REMERA-002";
      const e = saleOf(tienda, [{ sku, qty: 1 }], "vanishes-in-flight");
      await h.publish(e, { messageId: e.event_id });
      await waitFor(() => sandbox.stats().requests === 2, "lookup answered, adjustment in flight", 10_000, 5);
      sandbox.deleteVariant(sku);
      assert.deepEqual(await settledChange(h, e.event_id), {
        status: "failed",
        error_reason: "invalid_inventory_item",
      });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(
        sandbox.stats().requests,
        2,
        "a listing looked up for this very request is not looked up again",
      );
      const listings = await h.sql`select 1 from listing where channel = 'shopify' and sku = ${sku}`;
      assert.equal(listings.length, 0, "the vanished item is not kept for the next sale");
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "a variant deleted with no replacement fails sku_not_found and writes to no other item",
  async () => {
    const { h, sandbox } = await startSyncHarness();
    try {
      const tienda = STORES[1];
      const sku = "REMERA-003";
      const first = saleOf(tienda, [{ sku, qty: 1 }], "before-delete");
      await h.publish(first, { messageId: first.event_id });
      assert.equal((await settledChange(h, first.event_id)).status, "applied");

      sandbox.deleteVariant(sku);
      const before = JSON.stringify(sandbox.state());
      const second = saleOf(tienda, [{ sku, qty: 2 }], "after-delete");
      await h.publish(second, { messageId: second.event_id });
      assert.deepEqual(await settledChange(h, second.event_id), {
        status: "failed",
        error_reason: "sku_not_found",
      });
      assert.equal(JSON.stringify(sandbox.state()), before, "no item's stock moved");
      let dead: Awaited<ReturnType<Harness["takeDeadLetters"]>> = [];
      await waitFor(async () => (dead = await h.takeDeadLetters()).length > 0, "the sale copied to the DLQ");
      assert.equal(header(dead[0], "sync-reason"), "sku_not_found");
      assert.equal(header(dead[0], "sync-sku"), sku);
      assert.match(header(dead[0], "sync-remedy")!, /exactly one .*listing.* then replay/);
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration("redelivered and replayed events never decrement twice", async () => {
  const { h, sandbox } = await startSyncHarness();
  try {
    const tienda = STORES[1];
    const before = availableOf(sandbox, "REMERA-003", tienda);
    const e = saleOf(tienda, [{ sku: "REMERA-003", qty: 3 }], "once-only");
    await h.publish(e, { messageId: e.event_id });
    await h.publish(e, { messageId: e.event_id });
    await waitFor(async () => (await statusCounts(h)).applied === 1, "applied");
    await h.publishToQueue(e, { messageId: e.event_id }); // a DLQ replay after it was applied
    await waitFor(async () => (await h.queueDepth()) === 0, "drained");
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(availableOf(sandbox, "REMERA-003", tienda), before - 3);
    assert.deepEqual(await statusCounts(h), { applied: 1 });
  } finally {
    await h.close();
    await sandbox.close();
  }
});

integration(
  "a crash between send and record: the batch is re-sent with the same key and applied once",
  async () => {
    const sandbox = await startShopifySandbox({ catalog: defaultCatalog() });
    const env = sandboxEnv(sandbox, { DISPATCH_LEASE: "1s" });
    const config = testConfig(env);
    // Instance A "dies" right after Shopify applied its batch: it never records the outcome.
    const { h, sends, revive } = await startCrashingAfterSend(config);
    let b: RunningService | undefined;
    try {
      const tienda = STORES[2];
      const before = availableOf(sandbox, "REMERA-002", tienda);
      const e = saleOf(tienda, [{ sku: "REMERA-002", qty: 4 }], "crash-1");
      await h.publish(e, { messageId: e.event_id });
      await waitFor(() => sends() === 1, "A sent the batch and died");
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 4, "Shopify applied it once");
      const [batch] = await h.sql`select status, idempotency_key from sync_batch`;
      assert.equal(batch.status, "sending", "the outcome was never recorded");

      // Instance B takes over the expired lease and re-sends the same request under the same key.
      b = startService(config);
      await b.started;
      await waitFor(async () => (await statusCounts(h)).applied === 1, "applied after takeover", 15_000);
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 4, "not applied a second time");
      assert.equal(
        sandbox.stats().idempotentReplays,
        1,
        "Shopify answered the re-send from its idempotency record",
      );
      const batches = await h.sql`select status, idempotency_key, channel_attempts from sync_batch`;
      assert.equal(batches.length, 1);
      assert.equal(batches[0].idempotency_key, batch.idempotency_key);
      assert.equal(batches[0].status, "done");
    } finally {
      revive();
      await b?.close();
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "20 % 5xx plus lost responses and a small bucket: exact final stock, no throttling after the first",
  async () => {
    const { h, sandbox } = await startSyncHarness(
      {
        bucket: { maximumAvailable: 60, restoreRate: 30 },
        faults: { errorRate: 0.2, lostResponseRate: 0.05, seed: 42 },
      },
      { SHOPIFY_BUCKET_MAX: "2000", SHOPIFY_RESTORE_RATE: "100" }, // a wrong guess; the first answer corrects it
    );
    try {
      const skus = ["REMERA-001", "REMERA-002", "REMERA-003", "BUZO-AZUL-M", TRICKY];
      const expected = new Map<string, number>();
      for (const sku of skus) {
        for (const t of STORES) expected.set(`${sku}|${t}`, availableOf(sandbox, sku, t));
      }
      for (let i = 0; i < 120; i++) {
        const tienda = STORES[i % STORES.length];
        const sku = skus[(i * 7) % skus.length];
        expected.set(`${sku}|${tienda}`, expected.get(`${sku}|${tienda}`)! - 1);
        const e = saleOf(tienda, [{ sku, qty: 1 }]);
        await h.publish(e, { messageId: e.event_id });
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, 50)); // several batches, not one
      }
      await waitFor(
        async () => {
          const c = await statusCounts(h);
          return c.applied === 120;
        },
        "all 120 applied",
        60_000,
      );
      for (const [key, qty] of expected) {
        const [sku, tienda] = key.split("|");
        assert.equal(availableOf(sandbox, sku, tienda), qty, `${sku} at ${tienda}`);
      }
      const stats = sandbox.stats();
      assert.ok(stats.errorsInjected + stats.lostResponses > 0, "faults were injected");
      assert.ok(stats.throttled <= 1, `at most the first request was throttled (${stats.throttled})`);
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration("two service instances on one ledger: no change sent twice, one shared bucket", async () => {
  const { h, sandbox, envFor } = await startSyncHarness({
    bucket: { maximumAvailable: 100, restoreRate: 50 },
  }, {
    SHOPIFY_BUCKET_MAX: "100",
    SHOPIFY_RESTORE_RATE: "50",
  });
  const second = startService(testConfig(envFor));
  await second.started;
  try {
    const tienda = STORES[3];
    const skus = ["REMERA-001", "REMERA-002", "REMERA-003"];
    const before = skus.map((s) => availableOf(sandbox, s, tienda));
    for (let i = 0; i < 300; i++) {
      const e = saleOf(tienda, [{ sku: skus[i % 3], qty: 1 }]);
      await h.publish(e, { messageId: e.event_id });
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 30));
    }
    await waitFor(async () => (await statusCounts(h)).applied === 300, "300 applied", 60_000);
    skus.forEach((s, i) => assert.equal(availableOf(sandbox, s, tienda), before[i] - 100, s));
    const stats = sandbox.stats();
    assert.equal(stats.idempotentReplays, 0, "no batch was sent twice");
    assert.equal(stats.throttled, 0, "the shared bucket kept both under Shopify's limit");
    const perInstance = await Promise.all([h.service, second].map(async (s) => {
      const v = await s.metrics.changesProcessed.get();
      return v.values.reduce((sum, x) => sum + x.value, 0);
    }));
    assert.equal(perInstance[0] + perInstance[1], 300);
  } finally {
    await second.close();
    await h.close();
    await sandbox.close();
  }
});

integration(
  "refused credentials: readyz names shopify, changes wait instead of failing, a fixed instance applies them",
  async () => {
    const { h, sandbox, envFor } = await startSyncHarness({}, { SHOPIFY_TOKEN: "shpat_wrong_token_value" });
    try {
      const tienda = STORES[0];
      const before = availableOf(sandbox, "REMERA-003", tienda);
      const e = saleOf(tienda, [{ sku: "REMERA-003", qty: 2 }], "auth-1");
      await h.publish(e, { messageId: e.event_id });
      await waitFor(async () => {
        const r = await fetch(`${h.service.url}/readyz`);
        const body = await r.json();
        return r.status === 503 && body.down.includes("shopify") ? body : undefined;
      }, "readyz names shopify");
      const counts = await statusCounts(h);
      assert.equal(counts.failed, undefined, "nothing failed");
      await h.service.close();
      // The operator fixes the token and restarts.
      const fixed = startService(
        testConfig({ ...envFor, SHOPIFY_TOKEN: sandbox.token, DISPATCH_LEASE: "500ms" }),
      );
      await fixed.started;
      try {
        await waitFor(async () => (await statusCounts(h)).applied === 1, "applied after the fix", 20_000);
        assert.equal(availableOf(sandbox, "REMERA-003", tienda), before - 2);
      } finally {
        await fixed.close();
      }
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "a userError naming one change settles that change; the rest of the batch is re-sent and applied",
  async () => {
    const { h, sandbox } = await startSyncHarness();
    try {
      // A stale cached listing: the SKU maps to an inventory item Shopify does not know, and no
      // variant has that SKU any more. The listing is dropped, the SKU resolved again: not found.
      await h.sql`
      insert into listing (channel, sku, external_id, variant_id)
      values ('shopify', 'GONE-001', 'gid://shopify/InventoryItem/999999999', 'gid://shopify/ProductVariant/999999999')`;
      const tienda = STORES[0];
      const before = availableOf(sandbox, "REMERA-002", tienda);
      const e = saleOf(tienda, [{ sku: "GONE-001", qty: 1 }, { sku: "REMERA-002", qty: 3 }], "user-error");
      await h.publish(e, { messageId: e.event_id });
      await waitFor(
        async () => {
          const c = await statusCounts(h);
          return c.applied === 1 && c.failed === 1;
        },
        "one failed, one applied",
        20_000,
      );
      const [failed] = await h.sql`select sku, error_reason, error from stock_change where status = 'failed'`;
      assert.equal(failed.sku, "GONE-001");
      assert.equal(failed.error_reason, "sku_not_found");
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 3);
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration("Redis down: a conservative local budget keeps syncing and nothing is lost", async () => {
  const { h, sandbox } = await startSyncHarness({}, { REDIS_URL: "redis://127.0.0.1:1" });
  try {
    const tienda = STORES[4];
    const before = availableOf(sandbox, "REMERA-002", tienda);
    for (let i = 0; i < 10; i++) {
      const e = saleOf(tienda, [{ sku: "REMERA-002", qty: 1 }]);
      await h.publish(e, { messageId: e.event_id });
    }
    await waitFor(async () => (await statusCounts(h)).applied === 10, "applied without Redis", 20_000);
    assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 10);
    const ready = await (await fetch(`${h.service.url}/readyz`)).json();
    assert.deepEqual(ready.down, ["redis"]);
  } finally {
    await h.close();
    await sandbox.close();
  }
});

integration(
  "Shopify slower than our timeout: same-key re-sends meet IDEMPOTENCY_CONCURRENT_REQUEST, applied once",
  async () => {
    const { h, sandbox } = await startSyncHarness({ faults: { latencyMs: 1_200 } }, {
      SHOPIFY_TIMEOUT: "400ms",
    });
    try {
      await knownListing(h, sandbox, "REMERA-002");
      const tienda = STORES[1];
      const before = availableOf(sandbox, "REMERA-001", tienda);
      // Warm the SKU cache first so the slow call is the adjustment itself.
      await h.sql`
      insert into listing (channel, sku, external_id, variant_id)
      values ('shopify', 'REMERA-001', ${
        sandbox.variants.find((v) => v.sku === "REMERA-001")!.inventoryItemId
      }, 'v')`;
      const e = saleOf(tienda, [{ sku: "REMERA-001", qty: 3 }], "slow-1");
      await h.publish(e, { messageId: e.event_id });
      // Our client gives up on the first call while Shopify is still working on it;
      // Shopify is quick again for the re-sends.
      await waitFor(async () => {
        const calls = (await h.service.metrics.marketplaceCalls.get()).values;
        return calls.some((v) => v.labels.outcome === "timeout");
      }, "a timed-out call");
      sandbox.setFaults({ latencyMs: 0 });
      await waitFor(async () => (await statusCounts(h)).applied === 1, "applied", 30_000);
      assert.equal(availableOf(sandbox, "REMERA-001", tienda), before - 3, "applied exactly once");
      assert.deepEqual(await statusCounts(h), { applied: 1 });
      assert.ok(sandbox.stats().idempotentReplays >= 1, "a re-send was answered from the idempotency record");
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "internal failures spend the key: the changes go again under a new key, exact stock",
  async () => {
    const { h, sandbox } = await startSyncHarness({ faults: { internalErrorRate: 0.4, seed: 9 } });
    try {
      const tienda = STORES[2];
      const before = availableOf(sandbox, "REMERA-002", tienda);
      for (let i = 0; i < 30; i++) {
        const e = saleOf(tienda, [{ sku: "REMERA-002", qty: 1 }]);
        await h.publish(e, { messageId: e.event_id });
        await new Promise((r) => setTimeout(r, 20));
      }
      await waitFor(async () => (await statusCounts(h)).applied === 30, "30 applied", 30_000);
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 30);
      assert.ok(sandbox.stats().internalErrors > 0, "internal failures were injected");
      const keys = await h
        .sql`select count(distinct idempotency_key)::int as n from sync_batch where request is not null`;
      assert.ok(keys[0].n > 1);
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration("a replica that lost its lease cannot record over the new owner's batch in flight", async () => {
  const sandbox = await startShopifySandbox({ catalog: defaultCatalog() });
  const config = testConfig(sandboxEnv(sandbox, { DISPATCH_LEASE: "1s" }));
  const resume = Promise.withResolvers<void>();
  const aRecorded = Promise.withResolvers<void>();
  let paused = 0;
  // Instance A stalls after its send was applied (a long GC pause, a frozen VM),
  // then wakes up and tries to record "applied".
  // One lane: the hung send is then the whole instance's death (a second lane would be alive, and would
  // take the batch over itself once its lease ran out, as a live replica should).
  const a = startService({ ...config, DISPATCH_LANES: 1 }, {
    dispatcherHooks: {
      async afterSend() {
        if (paused++ === 0) {
          await resume.promise;
          queueMicrotask(() => aRecorded.resolve());
        }
      },
    },
  });
  await a.started;
  const h = await harnessFor(a, config);
  let b: RunningService | undefined;
  try {
    const tienda = STORES[3];
    const before = availableOf(sandbox, "REMERA-003", tienda);
    const e = saleOf(tienda, [{ sku: "REMERA-003", qty: 2 }], "lease-1");
    await h.publish(e, { messageId: e.event_id });
    await waitFor(() => paused === 1, "A sent and stalled");
    // Shopify now answers 5xx, so B's takeover re-send leaves the batch in flight, owned by B.
    sandbox.setFaults({ errorRate: 1 });
    b = startService(config);
    await b.started;
    const [ownedByB] = await waitFor(
      async () => {
        const rows = await h
          .sql`select owner, status, channel_attempts from sync_batch where channel_attempts >= 2`;
        return rows.length ? rows : undefined;
      },
      "B took the batch over and re-sent it",
      15_000,
    );
    resume.resolve();
    await aRecorded.promise;
    await new Promise((r) => setTimeout(r, 300));
    const [now] = await h.sql`select owner, status from sync_batch`;
    assert.equal(now.status, "sending", "A's late 'applied' was refused: the batch is still B's, in flight");
    assert.equal(now.owner, ownedByB.owner);
    assert.deepEqual(await statusCounts(h), { sending: 1 });
    // Shopify recovers; the owner's same-key re-send is answered from the idempotency record.
    sandbox.setFaults({ errorRate: 0 });
    await waitFor(async () => (await statusCounts(h)).applied === 1, "applied", 15_000);
    assert.equal(availableOf(sandbox, "REMERA-003", tienda), before - 2, "applied once");
  } finally {
    resume.resolve();
    await b?.close();
    await h.close();
    await sandbox.close();
  }
});

/** Resolves a SKU's listing up front, so only the adjustment meets the faults. */
async function knownListing(h: Harness, sandbox: ShopifySandbox, sku: string): Promise<void> {
  const item = sandbox.variants.find((v) => v.sku === sku)!.inventoryItemId;
  await h
    .sql`insert into listing (channel, sku, external_id, variant_id) values ('shopify', ${sku}, ${item}, 'v')`;
}

/** Backdates the first send of every batch: as if it went out `hours` ago. */
async function ageBatches(h: Harness, hours: number): Promise<void> {
  await h
    .sql`update sync_batch set sent_at = sent_at - ${hours} * interval '1 hour' where sent_at is not null`;
}

integration(
  "sends exhausted without an answer: outcome_unknown; a replay within the key window re-opens it under its key, applied once",
  async () => {
    // Shopify applies every adjustment but every answer is lost on the way back.
    const { h, sandbox } = await startSyncHarness({ faults: { lostResponseRate: 1, seed: 3 } }, {
      DISPATCH_MAX_ATTEMPTS: "2",
    });
    try {
      await knownListing(h, sandbox, "REMERA-002");
      const tienda = STORES[0];
      const before = availableOf(sandbox, "REMERA-002", tienda);
      const e = saleOf("99999999-9999-4999-8999-999999999999", [{ sku: "REMERA-002", qty: 1 }], "exhaust-1");
      const f = saleOf(tienda, [{ sku: "REMERA-002", qty: 1 }], "exhaust-2");
      await h.publish(e, { messageId: e.event_id });
      await h.publish(f, { messageId: f.event_id });
      await waitFor(async () => (await statusCounts(h)).failed === 2, "both failed", 20_000);
      const rows = await h.sql<{ event_id: string; error_reason: string; attempts: number }[]>`
      select event_id, error_reason, attempts from stock_change order by event_id`;
      assert.deepEqual(rows.map((r) => [r.event_id, r.error_reason]), [
        ["exhaust-1", "store_unmapped"],
        ["exhaust-2", "outcome_unknown"],
      ]);
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 1, "applied, but nobody heard");
      const copies: SyncMessage[] = [];
      await waitFor(async () => copies.push(...await h.takeDeadLetters()) === 2, "two DLQ copies");
      assert.deepEqual(copies.map((m) => header(m, "sync-reason")).sort(), [
        "outcome_unknown",
        "store_unmapped",
      ]);
      const [batch] = await h.sql<{ id: string; idempotency_key: string }[]>`
        select b.id, b.idempotency_key from sync_batch b join stock_change s on s.batch_id = b.id
         where s.event_id = 'exhaust-2'`;
      // Shopify recovers and the operator replays both sales (no resync).
      sandbox.setFaults({ lostResponseRate: 0 });
      const replaysBefore = sandbox.stats().idempotentReplays;
      await h.publishToQueue(e, { messageId: e.event_id });
      await h.publishToQueue(f, { messageId: f.event_id });
      await waitFor(async () => (await statusCounts(h)).applied === 1, "the unknown change applied", 15_000);
      const after = await h.sql<
        { event_id: string; status: string; error_reason: string; batch_id: string }[]
      >`
      select event_id, status, error_reason, batch_id from stock_change order by event_id`;
      assert.equal(after[1].status, "applied");
      assert.equal(after[1].batch_id, batch.id, "re-opened, not re-armed under a new batch");
      assert.equal(
        (await h
          .sql`select count(*)::int as n from sync_batch where idempotency_key = ${batch.idempotency_key}`)[0]
          .n,
        1,
      );
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 1, "Shopify applied it once");
      assert.ok(sandbox.stats().idempotentReplays > replaysBefore, "answered from the key's record");
      await waitFor(async () => (await statusCounts(h)).failed === 1, "the unmapped store failed again");
      // Read again: `after` may have caught it re-armed and not tried yet (error_reason null).
      const [again] = await h.sql<{ error_reason: string }[]>`
        select error_reason from stock_change where event_id = 'exhaust-1'`;
      assert.equal(
        again.error_reason,
        "store_unmapped",
        "re-armed, tried again, failed again for its own reason",
      );
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "outcome_unknown past the key window: a replay leaves it failed and Shopify untouched",
  async () => {
    let skewMs = 0;
    const { h, sandbox } = await startSyncHarness({
      faults: { lostResponseRate: 1, seed: 3 },
      now: () => Date.now() + skewMs,
    }, { DISPATCH_MAX_ATTEMPTS: "2" });
    try {
      await knownListing(h, sandbox, "REMERA-002");
      const tienda = STORES[1];
      const before = availableOf(sandbox, "REMERA-002", tienda);
      const f = saleOf(tienda, [{ sku: "REMERA-002", qty: 2 }], "late-replay-1");
      await h.publish(f, { messageId: f.event_id });
      await waitFor(async () => (await statusCounts(h)).failed === 1, "outcome_unknown", 20_000);
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 2);
      // A day later Shopify has forgotten the key; the operator replays the copy.
      await ageBatches(h, 21);
      skewMs = 25 * 3600_000;
      sandbox.setFaults({ lostResponseRate: 0 });
      const requests = sandbox.stats().requests;
      await h.publishToQueue(f, { messageId: f.event_id });
      await waitFor(async () => (await h.queueDepth()) === 0, "replay consumed");
      await new Promise((r) => setTimeout(r, 1_000));
      const [row] = await h.sql`select status, error_reason from stock_change`;
      assert.deepEqual({ ...row }, { status: "failed", error_reason: "outcome_unknown" });
      assert.equal(sandbox.stats().requests, requests, "nothing sent under a forgotten key");
      assert.equal(availableOf(sandbox, "REMERA-002", tienda), before - 2, "not applied twice");
    } finally {
      await h.close();
      await sandbox.close();
    }
  },
);

integration(
  "a batch reclaimed after the key window is not re-sent: outcome_unknown, a DLQ copy, a metric",
  async () => {
    let skewMs = 0;
    const sandbox = await startShopifySandbox({ catalog: defaultCatalog(), now: () => Date.now() + skewMs });
    const config = testConfig(sandboxEnv(sandbox, { DISPATCH_LEASE: "1s" }));
    // Instance A sends the batch (Shopify applies it) and stops before recording: the
    // dispatchers stay down for a day.
    const { h, sends, revive } = await startCrashingAfterSend(config);
    let b: RunningService | undefined;
    try {
      const tienda = STORES[2];
      const before = availableOf(sandbox, "REMERA-003", tienda);
      const e = saleOf(tienda, [{ sku: "REMERA-003", qty: 3 }], "day-late-1");
      await h.publish(e, { messageId: e.event_id });
      await waitFor(() => sends() === 1, "A sent the batch and stopped");
      assert.equal(availableOf(sandbox, "REMERA-003", tienda), before - 3);
      await ageBatches(h, 21);
      skewMs = 25 * 3600_000; // Shopify has forgotten the key
      // B's catch-up poll reads orders: only the other requests could be a re-send.
      const sent = () => sandbox.stats().requests - (sandbox.stats().operations.OrdersUpdatedSince ?? 0);
      const requests = sent();
      b = startService(config);
      await b.started;
      await waitFor(
        async () => (await statusCounts(h)).sending === undefined,
        "B finished the batch",
        15_000,
      );
      assert.equal(availableOf(sandbox, "REMERA-003", tienda), before - 3, "not applied twice");
      assert.equal(sent(), requests, "not re-sent under a forgotten key");
      const [row] = await h.sql`select status, error_reason from stock_change`;
      assert.deepEqual({ ...row }, { status: "failed", error_reason: "outcome_unknown" });
      // The operator is told: a DLQ copy with the reason, and the dead-letter metric.
      const later = b;
      await waitFor(
        async () =>
          (await later.metrics.eventsDeadLettered.get()).values.find((v) =>
            v.labels.reason === "outcome_unknown"
          )
            ?.value === 1,
        "dead-lettered as outcome_unknown",
      );
      const copies = await h.takeDeadLetters();
      assert.deepEqual(copies.map((m) => [header(m, "sync-reason"), m.messageId]), [[
        "outcome_unknown",
        "day-late-1",
      ]]);
      const [batch] = await h.sql`select status from sync_batch`;
      assert.equal(batch.status, "failed");
    } finally {
      revive();
      await b?.close();
      await h.close();
      await sandbox.close();
    }
  },
);
