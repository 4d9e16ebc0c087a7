/**
 * Ledger upkeep (src/ledger/upkeep.ts) on a migrated ledger schema of its own: a ledger table
 * autovacuum does not look after is vacuumed once its dead rows pass autovacuum's threshold, and
 * left alone below it; the loop runs rounds and stops.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { migrate } from "../src/ledger/migrate.ts";
import { createMetrics } from "../src/metrics.ts";
import { LedgerUpkeep, type UpkeepAction, upkeepRound } from "../src/ledger/upkeep.ts";
import { DATABASE_URL, integration, uniqueName, waitFor } from "./helpers.ts";

/** A ledger schema with `changes` stock changes, each written three times (insert, claim, record) as dispatch does. */
async function ledgerWithDeadRows(changes: number, options: { wideIndex?: boolean } = {}) {
  const schema = uniqueName("msync_upkeep");
  // One connection: its statistics are flushed with pg_stat_force_next_flush() before they are read.
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {}, connection: { search_path: schema } });
  await migrate(sql, schema);
  // The test must not depend on the server's autovacuum setting: this table opts out of it,
  // which is the case the upkeep is for (the others stay with whatever the server does).
  await sql`alter table stock_change set (autovacuum_enabled = false)`;
  // More index work per dead row (a text key like the event id's), for a test that must see the index phase.
  if (options.wideIndex) await sql`create index stock_change_wide on stock_change (event_id, channel, sku)`;
  await sql`
    insert into stock_change (event_id, channel, tienda_id, sku, delta)
    select 'e-' || g, 'shopify', 't-1', 'SKU-' || g, -1 from generate_series(1, ${changes}::int) g`;
  await sql`update stock_change set status = 'sending'`;
  await sql`update stock_change set status = 'applied', applied_at = now()`;
  await sql`select pg_stat_force_next_flush()`;
  return {
    sql,
    schema,
    async stats() {
      await sql`select pg_stat_force_next_flush()`;
      const [row] = await sql<{ dead: number; vacuumed: boolean }[]>`
        select n_dead_tup::int as dead, (last_vacuum is not null) as vacuumed
          from pg_stat_user_tables where schemaname = ${schema} and relname = 'stock_change'`;
      return row;
    },
    async close() {
      await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
      await sql.end({ timeout: 2 });
    },
  };
}

integration(
  "a ledger table autovacuum does not look after is vacuumed once its dead rows pass the threshold",
  async () => {
    const ledger = await ledgerWithDeadRows(2_000);
    try {
      // 4 000 dead versions of 2 000 rows: past autovacuum's 50 + 20 % (450).
      let actions: UpkeepAction[] = [];
      await waitFor(async () => (await ledger.stats()).dead >= 4_000, "the dead rows counted");
      await waitFor(
        async () =>
          (actions = await upkeepRound(ledger.sql, ledger.schema)).some((a) => a.table === "stock_change"),
        "stock_change vacuumed",
      );
      const done = actions.find((a) => a.table === "stock_change")!;
      assert.equal(done.action, "vacuum");
      assert.ok(done.deadRows >= 4_000, `it had ${done.deadRows} dead rows`);
      // (How many dead rows VACUUM may remove is Postgres's business: a transaction open elsewhere on
      // the server keeps the ones it could still see.)
      assert.equal((await ledger.stats()).vacuumed, true, "VACUUM ran on it");
      const [paced] = await ledger.sql<{ delay: string; autovacuum: string }[]>`
        select current_setting('vacuum_cost_delay') as delay,
               current_setting('autovacuum_vacuum_cost_delay') as autovacuum`;
      if (!paced.autovacuum.startsWith("-1")) {
        assert.equal(
          paced.delay,
          paced.autovacuum,
          "paced like autovacuum, not at a manual VACUUM's full speed",
        );
      }
    } finally {
      await ledger.close();
    }
  },
);

integration(
  "a table under the vacuum threshold is not vacuumed, only analyzed once its writes pass ANALYZE's",
  async () => {
    const ledger = await ledgerWithDeadRows(20); // 40 dead versions: under the 50 rows autovacuum starts at
    try {
      await waitFor(async () => (await ledger.stats()).dead >= 40, "the dead rows counted");
      const actions = await upkeepRound(ledger.sql, ledger.schema);
      // Its 60 writes are past ANALYZE's threshold (50 + 10 %), not VACUUM's: statistics only.
      assert.deepEqual(
        actions.filter((a) => a.table === "stock_change").map((a) => a.action),
        ["analyze"],
      );
      assert.equal((await ledger.stats()).vacuumed, false);
      // A table's own threshold wins over the server's, as it does for autovacuum.
      await ledger.sql`alter table stock_change set (autovacuum_vacuum_threshold = 10)`;
      const again = await upkeepRound(ledger.sql, ledger.schema);
      assert.deepEqual(again.filter((a) => a.table === "stock_change").map((a) => a.action), ["vacuum"]);
    } finally {
      await ledger.close();
    }
  },
);

integration(
  "the upkeep vacuums a table's indexes with its own backend only, as autovacuum does, not with parallel workers",
  async () => {
    // A plain VACUUM gives every index past min_parallel_index_scan_size (512 kB) to parallel workers
    // (max_parallel_maintenance_workers, 2 by default): on a two-core machine, three processes vacuuming
    // beside the dispatcher. Autovacuum never does: it is the background work the upkeep stands in for.
    // The wide index keeps the index phase long enough to be seen while the suite runs beside it.
    const ledger = await ledgerWithDeadRows(60_000, { wideIndex: true });
    const watch = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      await waitFor(async () => (await ledger.stats()).dead >= 120_000, "the dead rows counted");
      const [{ pid }] = await ledger.sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
      let indexPhases = 0;
      let workers = 0;
      let done = false;
      const round = upkeepRound(ledger.sql, ledger.schema).finally(() => done = true);
      while (!done) {
        const [seen] = await watch<{ phase: string | null; workers: number }[]>`
          select (select phase from pg_stat_progress_vacuum where pid = ${pid}) as phase,
                 (select count(*)::int from pg_stat_activity
                   where leader_pid = ${pid} and backend_type = 'parallel worker') as workers`;
        if (seen.phase === "vacuuming indexes") indexPhases += 1;
        // While it vacuums only: the round's own catalog query may run in parallel on a database with
        // many schemas (this one's, after the whole suite), and that is not the VACUUM's doing.
        if (seen.phase !== null) workers = Math.max(workers, seen.workers);
      }
      const actions = await round;
      assert.deepEqual(actions.filter((a) => a.table === "stock_change").map((a) => a.action), ["vacuum"]);
      assert.ok(indexPhases > 0, "the VACUUM was seen vacuuming the indexes");
      assert.equal(workers, 0, "no parallel worker vacuumed beside it");
    } finally {
      await watch.end();
      await ledger.close();
    }
  },
);

integration("the upkeep loop vacuums on its interval and close() ends it and its connection", async () => {
  const ledger = await ledgerWithDeadRows(2_000);
  const own = postgres(DATABASE_URL, {
    max: 1,
    onnotice: () => {},
    connection: { search_path: ledger.schema },
  });
  const metrics = createMetrics(`${uniqueName("upkeep_test")}_`, () => Promise.resolve([]));
  const upkeep = new LedgerUpkeep({ sql: own, schema: ledger.schema, intervalMs: 100, metrics });
  try {
    upkeep.start();
    await waitFor(async () => (await ledger.stats()).vacuumed, "vacuumed by the loop");
    await waitFor(
      async () =>
        (await metrics.ledgerUpkeep.get()).values.some((v) =>
          v.labels.table === "stock_change" && v.labels.action === "vacuum" && v.value >= 1
        ),
      "counted in ledger_upkeep_total",
    );
    await upkeep.close();
    await assert.rejects(own`select 1`, "the upkeep's connection is ended");
  } finally {
    await upkeep.close();
    await ledger.close();
  }
});
