/**
 * MercadoLibre stock locations (MELI_LOCATIONS) at the channel: the channel runs here
 * against the sandbox over real HTTP, with real Redis locks and a real ledger for its
 * listing cache, and batches are handed to it as the dispatcher does.
 *
 * Delta mode across sends: a stock write that landed but whose answer never came back
 * (the service died, or its lease ran out) is re-sent by whoever takes the batch over.
 * That send must find the write landed and not subtract the sale a second time.
 * Stock rules: a ruled store's location shows the rule's value of its POS stock, in
 * mirror and delta mode alike.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import { MeliChannel } from "../src/channels/mercadolibre/channel.ts";
import { MeliClient } from "../src/channels/mercadolibre/client.ts";
import { MeliListings } from "../src/channels/mercadolibre/listings.ts";
import { StaticToken } from "../src/channels/mercadolibre/tokens.ts";
import type { MeliLocation } from "../src/config.ts";
import { createMetrics } from "../src/metrics.ts";
import type { BatchOutcome, ClaimedBatch } from "../src/model/batch.ts";
import { PosStockReader } from "../src/pos/stock.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import type { BatchContext } from "../src/sync/channel.ts";
import { LocalBucket } from "../src/sync/cost_bucket.ts";
import { InDoubtMarks, ListingLocks } from "../src/sync/listing_lock.ts";
import { resolveRule, type StockRules } from "../src/model/stock_rule.ts";
import { DATABASE_URL, integration, REDIS_URL, uniqueName, waitFor } from "./helpers.ts";

const catalog = defaultCatalog();
const [STORE_A, STORE_B] = catalog.stores.map((s) => s.tienda_id);
const WAREHOUSES = [
  { store_id: "1001", network_node_id: "MLA1001", tienda_id: STORE_A },
  { store_id: "1002", network_node_id: "MLA1002", tienda_id: STORE_B },
];
const LOCATIONS: Record<string, MeliLocation> = Object.fromEntries(
  WAREHOUSES.map((
    w,
  ) => [w.tienda_id, { type: "seller_warehouse", storeId: w.store_id, networkNodeId: w.network_node_id }]),
);

interface World {
  sb: MeliSandbox;
  /** A channel as one replica builds it (each call: another replica on the same Redis and ledger). */
  replica(): MeliChannel;
  /** Sets a store's POS stock of a SKU (the Redis key the channel reads). */
  setPos(tiendaId: string, sku: string, quantity: number): Promise<void>;
}

async function withWorld(
  fn: (w: World) => Promise<void>,
  options: { mode?: "mirror" | "delta"; rules?: StockRules; timeoutMs?: number } = {},
): Promise<void> {
  const sb = await startMeliSandbox({
    catalog,
    tiendaId: STORE_A,
    userTags: ["normal", "warehouse_management"],
    warehouses: WAREHOUSES,
    ratePerSecond: 1_000,
  });
  const schema = uniqueName("meli_resend");
  const sql = postgres(DATABASE_URL, { max: 4, onnotice: () => {}, connection: { search_path: schema } });
  const redis = createClient({ url: REDIS_URL });
  await redis.connect();
  const prefix = `test:${schema}:`;
  try {
    await sql.unsafe(`create schema ${schema}`);
    const { migrate } = await import("../src/ledger/migrate.ts");
    await migrate(sql, schema);
    const replica = () => {
      const client = new MeliClient({
        baseUrl: sb.url,
        tokens: new StaticToken(sb.staticToken),
        budget: new LocalBucket({ max: 1_000, restoreRate: 1_000 }),
        timeoutMs: options.timeoutMs ?? 5_000,
        metrics: createMetrics(uniqueName("test_meli_resend_"), () => Promise.resolve([])),
      });
      return new MeliChannel({
        client,
        listings: new MeliListings(sql, client),
        tokens: new StaticToken(sb.staticToken),
        stock: new PosStockReader({
          redis,
          sql,
          keyTemplate: `${prefix}stock:{tienda_id}:{sku}`,
          query: "select 1 where false",
        }),
        locks: new ListingLocks(redis, `${prefix}lock:`, 30_000),
        mode: options.mode ?? "delta",
        tiendaId: undefined,
        locations: LOCATIONS,
        reactivate: false,
        batchSize: 1,
        doubts: new InDoubtMarks(redis, `${prefix}doubt:`),
        batchOpen: () => Promise.resolve(true),
        ruleFor: (tiendaId, sku) => resolveRule(options.rules, "mercadolibre", tiendaId, sku),
      });
    };
    const setPos = async (tiendaId: string, sku: string, quantity: number) => {
      await redis.set(`${prefix}stock:${tiendaId}:${sku}`, String(quantity));
    };
    await fn({ sb, replica, setPos });
  } finally {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(keys);
    await redis.quit();
    await sql.unsafe(`drop schema ${schema} cascade`);
    await sql.end();
    await sb.close();
  }
}

/** The ledger's side of a batch, as markSending keeps it: the first request persisted is the one kept. */
function ledger() {
  let stored: unknown = null;
  return {
    get stored() {
      return stored;
    },
    context(signal: AbortSignal): BatchContext {
      return {
        signal,
        persistRequest: (request) => {
          stored ??= JSON.parse(JSON.stringify(request));
          return Promise.resolve(JSON.parse(JSON.stringify(stored)));
        },
      };
    },
  };
}

function saleBatch(sku: string, tiendaId: string, delta: number): ClaimedBatch {
  const product = catalog.products.find((p) => p.sku === sku)!;
  return {
    id: crypto.randomUUID(),
    channel: "mercadolibre",
    idempotencyKey: crypto.randomUUID(),
    changes: [{
      tiendaId,
      sku,
      productoId: product.producto_id,
      delta,
      changeIds: [crypto.randomUUID()],
      eventIds: [crypto.randomUUID()],
      attempts: 1,
      oldestCreatedAt: new Date(),
    }],
    request: null,
    sends: 0,
    resend: false,
    owner: "replica-a",
  };
}

function firstResult(outcome: BatchOutcome) {
  assert.equal(outcome.kind, "done", JSON.stringify(outcome));
  return (outcome as Extract<BatchOutcome, { kind: "done" }>).results[0];
}

integration(
  "delta mode on stock locations: a write that landed before a crash is found landed by the re-send, not subtracted again",
  async () => {
    await withWorld(async ({ sb, replica }) => {
      const sku = "REMERA-003";
      const up = sb.listingFor(catalog.products.find((p) => p.sku === sku)!.producto_id)!.userProductId;
      const at1001 = () => sb.userProductStock(up)!.locations.find((l) => l.store_id === "1001")!.quantity;
      const before = at1001();
      const batch = saleBatch(sku, STORE_A, -2);
      const book = ledger();
      // Replica A: its write lands, the answer never reaches it, and it dies (aborted) before recording.
      const release = sb.holdStockAnswer(up);
      const dying = new AbortController();
      const first = replica().process(batch, book.context(dying.signal)).catch(() => undefined);
      await waitFor(() => Promise.resolve(at1001() === before - 2), "replica A's write landed");
      dying.abort();
      await first;
      release();
      // Replica B takes the batch over: same id, the request A persisted, one send so far.
      const outcome = await replica().process(
        { ...batch, request: book.stored, sends: 1, resend: true, owner: "replica-b" },
        book.context(new AbortController().signal),
      );
      assert.equal(at1001(), before - 2, "the sale is subtracted once");
      const result = firstResult(outcome);
      assert.equal(result.kind, "applied", JSON.stringify(result));
      assert.deepEqual(sb.invalidRequests(), []);
    });
  },
);

integration(
  "delta mode on stock locations: a re-send that finds the stock moved past its write says outcome_unknown and writes nothing",
  async () => {
    await withWorld(async ({ sb, replica }) => {
      const sku = "REMERA-003";
      const up = sb.listingFor(catalog.products.find((p) => p.sku === sku)!.producto_id)!.userProductId;
      const at1002 = () => sb.userProductStock(up)!.locations.find((l) => l.store_id === "1002")!.quantity;
      const before = at1002();
      const batch = saleBatch(sku, STORE_B, -3);
      const book = ledger();
      const release = sb.holdStockAnswer(up);
      const dying = new AbortController();
      const first = replica().process(batch, book.context(dying.signal)).catch(() => undefined);
      await waitFor(() => Promise.resolve(at1002() === before - 3), "replica A's write landed");
      dying.abort();
      await first;
      release();
      // Then a MercadoLibre-side sale ships from 1002: nobody can tell any more what A's write did.
      sb.setLocationQuantity(up, { type: "seller_warehouse", store_id: "1002" }, before - 5);
      const putsBefore = sb.stats().puts;
      const outcome = await replica().process(
        { ...batch, request: book.stored, sends: 1, resend: true, owner: "replica-b" },
        book.context(new AbortController().signal),
      );
      const result = firstResult(outcome);
      assert.deepEqual([result.kind, (result as { reason?: string }).reason], ["failed", "outcome_unknown"]);
      assert.equal(sb.stats().puts, putsBefore, "no write from a guess");
      assert.equal(at1002(), before - 5);
    });
  },
);

for (const mode of ["mirror", "delta"] as const) {
  integration(
    `stock rules on stock locations (${mode} mode): a ruled store's warehouse shows the rule's value, the other its own`,
    async () => {
      await withWorld(async ({ sb, replica, setPos }) => {
        const sku = "REMERA-003";
        const up = sb.listingFor(catalog.products.find((p) => p.sku === sku)!.producto_id)!.userProductId;
        const at = (storeId: string) =>
          sb.userProductStock(up)!.locations.find((l) => l.store_id === storeId)!.quantity;
        const before1002 = at("1002");
        // The POS after the sale: 31 at A (ruled: 50 % − 2, at most 12), B as the sandbox had it less 1.
        await setPos(STORE_A, sku, 31);
        await setPos(STORE_B, sku, before1002 - 1);
        const batch = saleBatch(sku, STORE_A, -1);
        batch.changes.push({ ...batch.changes[0], tiendaId: STORE_B, changeIds: [crypto.randomUUID()] });
        const book = ledger();
        const outcome = await replica().process(batch, book.context(new AbortController().signal));
        assert.equal(outcome.kind, "done", JSON.stringify(outcome));
        const results = (outcome as Extract<BatchOutcome, { kind: "done" }>).results;
        assert.deepEqual(results.map((r) => r.kind), ["applied", "applied"], JSON.stringify(results));
        assert.equal(at("1001"), 12, "floor(31 × 50 %) − 2 = 13, at most 12");
        assert.equal(
          at("1002"),
          before1002 - 1,
          "the unruled store: its POS (mirror) or less its sale (delta)",
        );
        assert.deepEqual(sb.invalidRequests(), []);
      }, { mode, rules: { mercadolibre: { stores: { [STORE_A]: { percent: 50, buffer: 2, max: 12 } } } } });
    },
  );
}

integration(
  "delta mode on stock locations: a timed-out write that lands just after the settling read is not subtracted again",
  async () => {
    await withWorld(async ({ sb, replica }) => {
      const sku = "REMERA-003";
      const up = sb.listingFor(catalog.products.find((p) => p.sku === sku)!.producto_id)!.userProductId;
      const at1001 = () => sb.userProductStock(up)!.locations.find((l) => l.store_id === "1001")!.quantity;
      sb.setLocationQuantity(up, { type: "seller_warehouse", store_id: "1001" }, 10);
      const before = at1001();
      // The PUT is still on its way when the client gives up (timeout); it lands right after the
      // channel's settling read, so the re-send carrying that read's version gets a 409 — caused by
      // our own write, not by anybody else's.
      sb.delayStockWrite(up);
      const book = ledger();
      const batch = saleBatch(sku, STORE_A, -2);
      let outcome = await replica().process(batch, book.context(new AbortController().signal));
      await waitFor(() => Promise.resolve(at1001() === before - 2), "the delayed write landed");
      // What the dispatcher does next: a re-send of the same batch, or (done) each change's own outcome —
      // a retry goes back to pending and is planned again in a new batch.
      for (let round = 0; round < 5; round++) {
        if (outcome.kind === "resend") {
          outcome = await replica().process(
            { ...batch, request: book.stored, sends: round + 1, resend: true },
            book.context(new AbortController().signal),
          );
          continue;
        }
        const result = firstResult(outcome);
        if (result.kind !== "retry") break;
        const again = ledger();
        outcome = await replica().process(
          saleBatch(sku, STORE_A, -2),
          again.context(new AbortController().signal),
        );
      }
      assert.equal(at1001(), before - 2, "the sale is subtracted once");
      assert.deepEqual(sb.invalidRequests(), []);
    }, { timeoutMs: 1_000 });
  },
);

integration(
  "stock locations (mirror): a store whose POS stock is unknown keeps its warehouse and fails its own change; the others are written",
  async () => {
    await withWorld(async ({ sb, replica, setPos }) => {
      const sku = "REMERA-003";
      const up = sb.listingFor(catalog.products.find((p) => p.sku === sku)!.producto_id)!.userProductId;
      const at = (storeId: string) =>
        sb.userProductStock(up)!.locations.find((l) => l.store_id === storeId)!.quantity;
      const before1002 = at("1002");
      await setPos(STORE_A, sku, 17); // STORE_B has no POS stock for the SKU at all
      const batch = saleBatch(sku, STORE_A, -1);
      batch.changes.push({ ...batch.changes[0], tiendaId: STORE_B, changeIds: [crypto.randomUUID()] });
      const outcome = await replica().process(batch, ledger().context(new AbortController().signal));
      assert.equal(outcome.kind, "done", JSON.stringify(outcome));
      const results = (outcome as Extract<BatchOutcome, { kind: "done" }>).results;
      assert.deepEqual(
        results.map((r) => [r.kind, (r as { reason?: string }).reason]),
        [["applied", undefined], ["failed", "stock_unknown"]],
        JSON.stringify(results),
      );
      assert.equal(at("1001"), 17, "the known store's warehouse is written");
      assert.equal(at("1002"), before1002, "the unknown store's warehouse is left as it was");
    }, { mode: "mirror" });
  },
);
