/**
 * Applies pending ledger migrations inside one transaction that holds a
 * transaction-scoped advisory lock, so replicas starting together queue up
 * instead of colliding, and a failed migration leaves nothing half-applied.
 */
import type { Sql } from "postgres";
import { logger } from "../log.ts";
import { type Migration, MIGRATIONS } from "./migrations.ts";

const log = logger("ledger");

/**
 * Brings `schema` up to the latest migration. Returns the versions it applied.
 * @param sql a postgres.js client (any search_path; this sets its own).
 */
export async function migrate(
  sql: Sql,
  schema: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number[]> {
  return await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${"marketplace-sync:migrate:" + schema}))`;
    await tx`create schema if not exists ${tx(schema)}`;
    await tx`set local search_path to ${tx(schema)}`;
    await tx`
      create table if not exists schema_migration (
        version    integer primary key,
        name       text not null,
        applied_at timestamptz not null default now()
      )`;
    const done = new Set(
      (await tx<{ version: number }[]>`select version from schema_migration`).map((r) => r.version),
    );
    const applied: number[] = [];
    for (const migration of migrations) {
      if (done.has(migration.version)) continue;
      await tx.unsafe(migration.sql);
      await tx`insert into schema_migration (version, name) values (${migration.version}, ${migration.name})`;
      applied.push(migration.version);
      log.info("applied ledger migration {version} ({name})", {
        version: migration.version,
        name: migration.name,
        schema,
      });
    }
    return applied;
  });
}
