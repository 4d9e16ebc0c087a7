/** Ledger migrations: versioned, applied once, safe when replicas start together. */
import assert from "node:assert/strict";
import postgres from "postgres";
import { Custody } from "../src/ledger/custody.ts";
import { DispatchStore } from "../src/ledger/dispatch_store.ts";
import { contractLedger, migrate } from "../src/ledger/migrate.ts";
import { LEDGER_VERSION, MIGRATIONS } from "../src/ledger/migrations.ts";
import type { ClaimedBatch, LogicalChange } from "../src/model/batch.ts";
import { decodeSaleEvent } from "../src/model/sale_event.ts";
import { changesQuerySchema, listChanges } from "../src/ops/changes.ts";
import { DATABASE_URL, integration, sale, uniqueName, waitFor } from "./helpers.ts";

integration("five replicas migrating at once: each migration applied exactly once", async () => {
  const schema = uniqueName("msync_mig");
  const clients = Array.from({ length: 5 }, () => postgres(DATABASE_URL, { max: 1, onnotice: () => {} }));
  try {
    const results = await Promise.all(clients.map((sql) => migrate(sql, schema)));
    const applied = results.flat();
    assert.deepEqual(
      applied.sort(),
      MIGRATIONS.map((m) => m.version).sort(),
      "each version applied by one replica",
    );
    const rows = await clients[0].unsafe(`select version from ${schema}.schema_migration order by version`);
    assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
    assert.deepEqual(await migrate(clients[0], schema), [], "a restart applies nothing");
  } finally {
    await clients[0].unsafe(`drop schema if exists ${schema} cascade`);
    await Promise.all(clients.map((c) => c.end()));
  }
});

integration("a failing migration leaves nothing half-applied", async () => {
  const schema = uniqueName("msync_mig");
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const broken = [...MIGRATIONS, {
      version: 999,
      name: "broken",
      sql: "create table ok_table (id int); select 1/0;",
    }];
    await assert.rejects(migrate(sql, schema, broken), /division by zero/);
    const [{ exists }] =
      await sql`select exists (select 1 from pg_namespace where nspname = ${schema}) as exists`;
    assert.equal(exists, false, "the whole transaction rolled back");
  } finally {
    await sql.unsafe(`drop schema if exists ${schema} cascade`);
    await sql.end();
  }
});

/** Runs `test` on a ledger schema of its own migrated up to `version`, dropped afterwards. */
async function withLedgerAt(
  version: number,
  test: (sql: postgres.Sql, schema: string) => Promise<void>,
): Promise<void> {
  const schema = uniqueName(`msync_mig${version + 1}`);
  const sql = postgres(DATABASE_URL, { max: 4, onnotice: () => {}, connection: { search_path: schema } });
  try {
    await migrate(sql, schema, MIGRATIONS.filter((m) => m.version <= version));
    await test(sql, schema);
  } finally {
    await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
    await sql.end({ timeout: 2 });
  }
}

/** Runs `during` while a long transaction that has read `table` holds its lock. */
async function whileReading(sql: postgres.Sql, table: string, during: () => Promise<void>): Promise<void> {
  const reader = await sql.reserve();
  try {
    await reader`begin`;
    await reader.unsafe(`select count(*) from ${table}`);
    await during();
  } finally {
    await reader`rollback`;
    reader.release();
  }
}

/** The ledger's latest applied migration. */
async function appliedVersion(sql: postgres.Sql): Promise<number> {
  const [{ version }] = await sql<
    { version: number }[]
  >`select max(version) as version from schema_migration`;
  return version;
}

/** A sale of `cantidad` of `sku`, decoded as the consumer decodes it. */
function saleEvent(sku: string, cantidad: number) {
  const body = new TextEncoder().encode(JSON.stringify(sale({ items: [{ producto_sku: sku, cantidad }] })));
  const decoded = decodeSaleEvent(body, {}, { maxBytes: 1 << 20, maxItems: 10, maxQuantity: 100 });
  assert.ok(decoded.ok);
  return decoded.event;
}

/**
 * A sale taken into custody as versions up to 15 did: its row, which does not list its changes, and one
 * change per channel and item. This version's custody needs the column of its own migration 16.
 */
async function previousVersionCustody(
  sql: postgres.Sql,
  event: ReturnType<typeof saleEvent>,
  channels: string[],
): Promise<"stored"> {
  await sql.begin(async (tx) => {
    await tx`
      insert into sale (event_id, identity_source, tienda_id, body)
      values (${event.eventId}, ${event.identitySource}, ${event.tiendaId}, ${event.body}::jsonb)`;
    for (const channel of channels) {
      for (const item of event.items) {
        await tx`
          insert into stock_change (event_id, channel, tienda_id, sku, producto_id, delta)
          values (${event.eventId}, ${channel}, ${event.tiendaId}, ${item.sku}, ${item.productoId},
                  ${-item.quantity})`;
      }
    }
  });
  return "stored";
}

/**
 * A batch of one listing claimed as versions up to 14 did (a batch row with its key, then its changes marked
 * sending), for upgrade tests whose previous version had work in flight: this version's claim needs the
 * tables of its own migrations.
 */
async function previousVersionClaim(sql: postgres.Sql, channel: string, sku: string): Promise<ClaimedBatch> {
  const key = crypto.randomUUID();
  const owner = crypto.randomUUID();
  return await sql.begin(async (tx) => {
    const [{ id }] = await tx<{ id: string }[]>`
      insert into sync_batch (channel, idempotency_key, payload, status, lease_until, owner)
      values (${channel}, ${key}, '[]', 'sending', now() + interval '60 seconds', ${owner})
      returning id::text`;
    const rows = await tx<
      {
        tienda_id: string;
        sku: string;
        producto_id: string | null;
        delta: number;
        attempts: number;
        ids: string[];
      }[]
    >`
      with claimed as (
        update stock_change set status = 'sending', batch_id = ${id}, attempts = attempts + 1, updated_at = now()
         where channel = ${channel} and sku = ${sku} and status = 'pending'
        returning id, tienda_id, sku, producto_id, delta, attempts
      )
      select tienda_id, sku, min(producto_id) as producto_id, sum(delta)::int as delta, max(attempts) as attempts,
             array_agg(id order by id)::text[] as ids
        from claimed group by tienda_id, sku`;
    const changes: LogicalChange[] = rows.map((r) => ({
      tiendaId: r.tienda_id,
      sku: r.sku,
      productoId: r.producto_id,
      delta: r.delta,
      changeIds: r.ids,
      attempts: r.attempts,
      oldestCreatedAt: new Date(),
    }));
    await tx`update sync_batch set payload = ${
      tx.json(changes as unknown as postgres.JSONValue)
    } where id = ${id}`;
    return { id, channel, idempotencyKey: key, changes, request: null, sends: 0, resend: false, owner };
  });
}

integration(
  "upgrade to 14 (no batch foreign key) is online: pending work kept, a long transaction not waited for, " +
    "a batch the previous version claimed still records",
  () =>
    withLedgerAt(13, async (sql, schema) => {
      // The previous version at work: sales in custody, and a Shopify batch claimed and sent.
      const sell = (sku: string, cantidad: number) =>
        previousVersionCustody(sql, saleEvent(sku, cantidad), ["mercadolibre", "shopify"]);
      for (const sku of ["A", "B", "C"]) await sell(sku, 2);
      const store = new DispatchStore(sql, {
        maxAttempts: 5,
        leaseMs: 60_000,
        backoffBaseMs: 1_000,
        backoffMaxMs: 5_000,
      });
      // Its claim, as it wrote it (this version's claim keeps listing turns, a table of migration 15).
      const inFlight = await previousVersionClaim(sql, "shopify", "A");
      assert.deepEqual(inFlight.changes.map((c) => [c.sku, c.delta]), [["A", -2]]);
      await store.markSending(inFlight, { mutation: "adjust" });
      const ledger = () =>
        sql<{ channel: string; sku: string; status: string; delta: number; batch_id: string | null }[]>`
          select channel, sku, status, delta, batch_id::text from stock_change order by channel, sku`;
      assert.equal((await ledger()).length, 6);

      // A long transaction that has read the ledger: the migration gives up instead of queueing every
      // later query behind its lock, and leaves nothing applied.
      await whileReading(sql, "stock_change", async () => {
        const started = Date.now();
        const migrating = migrate(sql, schema);
        await waitFor(async () => {
          const [{ waiting }] = await sql<{ waiting: boolean }[]>`
            select exists (select 1 from pg_locks
                            where not granted and relation = ${`${schema}.stock_change`}::regclass) as waiting`;
          return waiting;
        }, "the migration waiting for its lock");
        // A sale arriving while the migration waits queues behind its lock request, for no longer.
        const stored = sell("D", 1).then((outcome) => ({
          outcome,
          at: Date.now() - started,
        }));
        await assert.rejects(migrating, (error: Error) => {
          assert.match(error.message, /lock timeout/);
          assert.match(
            error.message,
            /locks on schema msync_mig14\w* are held by pid \d+ \(.*in a transaction for \d+ s\)/,
          );
          return true;
        });
        const waited = Date.now() - started;
        assert.ok(waited >= 900 && waited < 10_000, `gave up after the lock timeout (${waited} ms)`);
        const custodyDone = await stored;
        assert.equal(custodyDone.outcome, "stored");
        assert.ok(custodyDone.at < waited + 2_000, `custody went on once it gave up (${custodyDone.at} ms)`);
        assert.equal(await appliedVersion(sql), 13, "nothing half-applied");
      });

      const before = await ledger();
      assert.equal(before.length, 8, "the sale stored during the wait is in the ledger");
      // 15 (listing turns, a new table) and 16 come with it: the claims below are this version's.
      assert.deepEqual(await migrate(sql, schema), [14, 15, 16], "the start-up's retry applies it");
      const [{ keys }] = await sql<{ keys: number }[]>`
        select count(*)::int as keys from pg_constraint
         where conrelid = 'stock_change'::regclass and contype = 'f'`;
      assert.equal(keys, 0, "no foreign key left on stock_change");
      assert.deepEqual(await ledger(), before, "every change as it was, the batch in flight included");

      // The batch claimed before the upgrade records, and the rest is claimed and recorded as before.
      await store.record(inFlight, {
        kind: "done",
        response: {},
        results: [{ kind: "applied", quantityAfter: 8 }],
      });
      const next = (await store.claimBatch("shopify", 10))!;
      assert.deepEqual(next.changes.map((c) => c.sku), ["B", "C", "D"]);
      await store.markSending(next, { mutation: "adjust" });
      await store.record(next, {
        kind: "done",
        response: {},
        results: next.changes.map(() => ({ kind: "applied" as const, quantityAfter: 8 })),
      });
      const meli = (await store.claimBatch("mercadolibre", 10))!;
      assert.deepEqual(meli.changes.map((c) => c.sku), ["A", "B", "C", "D"]);
      const after = await ledger();
      assert.deepEqual(
        after.map((c) => [c.channel, c.sku, c.status, c.delta]),
        [
          ["mercadolibre", "A", "sending", -2],
          ["mercadolibre", "B", "sending", -2],
          ["mercadolibre", "C", "sending", -2],
          ["mercadolibre", "D", "sending", -1],
          ["shopify", "A", "applied", -2],
          ["shopify", "B", "applied", -2],
          ["shopify", "C", "applied", -2],
          ["shopify", "D", "applied", -1],
        ],
      );
      assert.ok(after.filter((c) => c.channel === "mercadolibre").every((c) => c.batch_id === meli.id));
    }),
);

integration(
  "upgrade to 16 (a sale lists its changes) is online: a long transaction not waited for, the event key kept " +
    "until the previous version's replicas are gone, a sale stored before replayed by SKU, new sales list " +
    "their changes, the audit trail finds both",
  () =>
    withLedgerAt(15, async (sql, schema) => {
      const channels = ["mercadolibre", "shopify"];
      // The previous version at work: two sales in custody, one of whose Shopify change failed for good.
      const failedBefore = saleEvent("A", 2);
      const appliedBefore = saleEvent("B", 1);
      await previousVersionCustody(sql, failedBefore, channels);
      await previousVersionCustody(sql, appliedBefore, channels);
      await sql`
        update stock_change set status = 'failed', error_reason = 'rejected', error = 'unknown SKU'
         where event_id = ${failedBefore.eventId} and channel = 'shopify'`;
      await sql`update stock_change set status = 'applied' where event_id = ${appliedBefore.eventId}`;
      const ledger = () =>
        sql<{ event_id: string; channel: string; sku: string; status: string; delta: number }[]>`
          select event_id, channel, sku, status, delta from stock_change order by id`;
      const before = await ledger();

      // A long transaction that has read the sales: the migration gives up after its lock timeout.
      await whileReading(sql, "sale", async () => {
        await assert.rejects(migrate(sql, schema), /lock timeout/);
        assert.equal(await appliedVersion(sql), 15, "nothing half-applied");
      });
      // A replica of the previous version is still at work (its connections carry no ledger mark), and one
      // of this version: the key the previous version's statements name stays while the older one is there.
      const older = postgres(DATABASE_URL, { max: 1, connection: { application_name: "marketplace-sync" } });
      const newer = postgres(DATABASE_URL, {
        max: 1,
        connection: { application_name: `marketplace-sync [ledger ${LEDGER_VERSION}]` },
      });
      const keys = async () =>
        (await sql<{ keys: number }[]>`
          select count(*)::int as keys from pg_constraint
           where conrelid = 'stock_change'::regclass and contype = 'u'`)[0].keys;
      try {
        await Promise.all([older`select 1`, newer`select 1`]);
        assert.deepEqual(await migrate(sql, schema), [16], "the start-up's retry applies it");
        assert.equal(await keys(), 1, "the key kept while a replica of the previous version is connected");
        assert.deepEqual(await contractLedger(sql, schema), [], "a later round keeps it too");
        await older.end();
        assert.deepEqual(await contractLedger(sql, schema), [
          "the (event_id, channel, sku) key of stock_change",
        ], "the round after it has gone takes it");
      } finally {
        await older.end();
        await newer.end();
      }
      assert.equal(await keys(), 0, "no (event, channel, sku) key left");
      assert.deepEqual(await contractLedger(sql, schema), [], "nothing left to take");
      assert.deepEqual(await ledger(), before, "every change as it was");

      const custody = new Custody(sql, channels as ("mercadolibre" | "shopify")[], {
        batchSize: 10,
        maxWaitMs: 1,
      });
      // The DLQ replay of the sale stored before: its failed change found by SKU and re-armed, nothing created.
      assert.equal(await custody.accept(failedBefore), "rearmed");
      assert.equal(await custody.accept(appliedBefore), "duplicate");
      const replayed = await ledger();
      assert.equal(replayed.length, before.length, "no change created by the replays");
      assert.deepEqual(
        replayed.filter((c) => c.event_id === failedBefore.eventId).map((c) => [c.channel, c.status]),
        [["mercadolibre", "pending"], ["shopify", "pending"]],
      );

      // A new sale lists its changes; its replay finds them by id (the failed one re-armed, and only it).
      const after = saleEvent("C", 3);
      assert.equal(await custody.accept(after), "stored");
      const [{ change_ids }] = await sql<{ change_ids: string[] }[]>`
        select change_ids::text[] from sale where event_id = ${after.eventId}`;
      const own = await sql<{ id: string; channel: string }[]>`
        select id::text, channel from stock_change where event_id = ${after.eventId} order by stock_change.id`;
      assert.deepEqual(change_ids, own.map((c) => c.id));
      await sql`
        update stock_change set status = 'failed', error_reason = 'rejected' where id = ${own[0].id}`;
      assert.equal(await custody.accept(after), "rearmed");
      assert.deepEqual(
        (await ledger()).filter((c) => c.event_id === after.eventId).map((
          c,
        ) => [c.channel, c.status, c.delta]),
        [["mercadolibre", "pending", -3], ["shopify", "pending", -3]],
      );

      // The audit trail finds a sale's changes either way, and none for an event it has not seen.
      for (const event of [failedBefore, after]) {
        const { changes } = await listChanges(sql, changesQuerySchema.parse({ event_id: event.eventId }));
        assert.deepEqual(changes.map((c) => c.channel).sort(), channels);
      }
      const { changes: none } = await listChanges(sql, changesQuerySchema.parse({ event_id: "never-seen" }));
      assert.deepEqual(none, []);
    }),
);
