/** Ledger migrations: versioned, applied once, safe when replicas start together. */
import assert from "node:assert/strict";
import postgres from "postgres";
import { migrate } from "../src/ledger/migrate.ts";
import { MIGRATIONS } from "../src/ledger/migrations.ts";
import { DATABASE_URL, integration, uniqueName } from "./helpers.ts";

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
