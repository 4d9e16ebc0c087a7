/**
 * Applies pending ledger migrations inside one transaction that holds a
 * transaction-scoped advisory lock, so replicas starting together queue up
 * instead of colliding, and a failed migration leaves nothing half-applied.
 * Then builds, concurrently, the online indexes a migration left to it.
 */
import type { Sql } from "postgres";
import { logger } from "../log.ts";
import {
  CONTRACT_STEPS,
  type ContractStep,
  type Migration,
  MIGRATIONS,
  ONLINE_INDEXES,
  type OnlineIndex,
} from "./migrations.ts";

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
  const applied = await applyMigrations(sql, schema, migrations).catch(async (error) => {
    throw (error as { code?: string }).code === "55P03" ? await withLockHolders(sql, schema, error) : error;
  });
  for (const index of ONLINE_INDEXES) {
    if (!migrations.some((m) => m.version === index.after)) continue;
    try {
      await buildOnlineIndex(sql, schema, index);
    } catch (error) {
      // The index only makes a query cheaper: never keep the service down for it. The next start tries again.
      log.error("could not build index {index}: {error}; going on without it", {
        mark: "error",
        index: index.name,
        schema,
        error: (error as Error).message,
      });
    }
  }
  return applied;
}

/**
 * Takes the {@link CONTRACT_STEPS} whose migration is applied, once no replica of an older version is
 * connected; called after every start's migration (in the background: a start does not wait for it) and by
 * the upkeep's rounds, so the last replica of a rolling deploy to go lets the next call take them. Never
 * fails: a step not taken now is taken later.
 * Returns the names of the steps taken.
 */
export async function contractLedger(
  sql: Sql,
  schema: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<string[]> {
  const taken: string[] = [];
  for (const step of CONTRACT_STEPS) {
    if (!migrations.some((m) => m.version === step.after)) continue;
    try {
      if (await takeContractStep(sql, schema, step)) taken.push(step.name);
    } catch (error) {
      log.warning("could not remove {step} yet: {error}; trying again later", {
        step: step.name,
        schema,
        error: (error as Error).message,
      });
    }
  }
  return taken;
}

/**
 * Whether `step` is still to take, and the connections of this service of a ledger version older than its
 * migration: `marketplace-sync…` application names without a `[ledger N]` mark of N ≥ `step.after` (the
 * previous versions had none). Ledgers may share a database, so an older replica of another schema counts too:
 * it only delays the step. One round trip: every start and every upkeep round asks.
 */
async function contractState(
  sql: Sql,
  schema: string,
  step: ContractStep,
): Promise<{ pending: boolean; older: string[] }> {
  const [state] = await sql<{ pending: boolean; older: string[] }[]>`
    select exists (
             select 1 from pg_constraint c join pg_class t on t.oid = c.conrelid
              where t.relnamespace = ${schema}::regnamespace and t.relname = ${step.constraint.table}
                and c.conname = ${step.constraint.name}) as pending,
           array(select 'pid ' || pid || ' ' || application_name from pg_stat_activity
                  where datname = current_database() and pid <> pg_backend_pid()
                    and application_name like 'marketplace-sync%'
                    and coalesce(substring(application_name from '[[]ledger ([0-9]+)[]]')::int, 0) < ${step.after}
                  order by pid) as older`;
  return state;
}

async function takeContractStep(sql: Sql, schema: string, step: ContractStep): Promise<boolean> {
  const { pending, older } = await contractState(sql, schema, step);
  if (!pending) return false;
  if (older.length > 0) {
    log.info("keeping {step} while replicas of an older version are connected ({replicas})", {
      step: step.name,
      schema,
      replicas: older.join(", "),
    });
    return false;
  }
  await sql.begin(async (tx) => {
    // A catalog edit under an ACCESS EXCLUSIVE lock held for an instant: not queued behind a long transaction.
    await tx`
      select set_config('search_path', quote_ident(${schema}), true), set_config('lock_timeout', '1s', true)`;
    await tx.unsafe(step.sql);
  });
  log.info("removed {step}: no replica of an older version is connected", { step: step.name, schema });
  return true;
}

async function applyMigrations(
  sql: Sql,
  schema: string,
  migrations: readonly Migration[],
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
      // Sent together (one round trip: a start through a slow link pays each one); Postgres runs them in
      // order, and an error in the first aborts the transaction before the second counts.
      await Promise.all([
        tx.unsafe(migration.sql),
        tx`insert into schema_migration (version, name) values (${migration.version}, ${migration.name})`,
      ]);
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

/**
 * A migration gave up waiting for a lock (lock_timeout): says who holds locks on the ledger's tables, so an
 * operator can find the long transaction that keeps the start-up retrying. Process ids, application names,
 * states and ages only: another session's query text may hold data.
 */
async function withLockHolders(sql: Sql, schema: string, error: Error): Promise<Error> {
  try {
    const holders = await sql<{ pid: number; app: string; state: string | null; age_s: number | null }[]>`
      select a.pid, a.application_name as app, a.state,
             extract(epoch from now() - a.xact_start)::int as age_s
        from pg_stat_activity a
       where a.pid <> pg_backend_pid() and a.pid in (
               select l.pid from pg_locks l
                 join pg_class c on c.oid = l.relation
                 join pg_namespace n on n.oid = c.relnamespace
                where n.nspname = ${schema} and l.granted)
       order by a.xact_start nulls last
       limit 5`;
    if (holders.length === 0) return error;
    const who = holders.map((h) =>
      `pid ${h.pid} (${h.app || "no application_name"}, ${h.state ?? "?"}` +
      `${h.age_s === null ? "" : `, in a transaction for ${h.age_s} s`})`
    ).join("; ");
    return Object.assign(new Error(`${error.message}; locks on schema ${schema} are held by ${who}`), {
      code: "55P03",
      cause: error,
    });
  } catch {
    return error;
  }
}

/** Whether `schema` holds the index: absent, valid, or left invalid by an interrupted build. */
async function indexState(sql: Sql, schema: string, name: string): Promise<"absent" | "valid" | "invalid"> {
  const [row] = await sql<{ valid: boolean }[]>`
    select i.indisvalid as valid from pg_index i
      join pg_class c on c.oid = i.indexrelid
      join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = ${schema} and c.relname = ${name}`;
  return row ? (row.valid ? "valid" : "invalid") : "absent";
}

/**
 * Builds `index` with CREATE INDEX CONCURRENTLY (reads and writes go on) unless it is
 * there and valid: one cheap catalog read on every start. One replica builds; one that
 * finds the build taken goes on without the index (it only makes a query cheaper). A
 * build killed midway leaves an invalid index, dropped and built again here.
 */
async function buildOnlineIndex(sql: Sql, schema: string, index: OnlineIndex): Promise<void> {
  if (await indexState(sql, schema, index.name) === "valid") return;
  const session = await sql.reserve();
  const lock = `marketplace-sync:online-index:${schema}.${index.name}`;
  try {
    const [{ locked }] = await session<{ locked: boolean }[]>`
      select pg_try_advisory_lock(hashtext(${lock})) as locked`;
    if (!locked) {
      log.info("index {index} is being built by another replica; starting without it", {
        index: index.name,
        schema,
      });
      return;
    }
    try {
      const state = await indexState(session, schema, index.name);
      if (state === "valid") return;
      log.info("building index {index} concurrently (reads and writes go on meanwhile)", {
        index: index.name,
        schema,
      });
      const started = Date.now();
      // The build may take longer than the pool's statement_timeout; this session only.
      await session`set statement_timeout = 0`;
      await session`set search_path to ${session(schema)}`;
      if (state === "invalid") await session`drop index concurrently if exists ${session(index.name)}`;
      await session.unsafe(index.sql);
      log.info("index {index} built in {duration_ms} ms", {
        index: index.name,
        schema,
        duration_ms: Date.now() - started,
      });
    } finally {
      await session`select pg_advisory_unlock(hashtext(${lock}))`;
    }
  } finally {
    // Back to the pool as it was lent: its own statement_timeout and search_path.
    await session`reset statement_timeout`.catch(() => {});
    await session`reset search_path`.catch(() => {});
    session.release();
  }
}
