/**
 * Ledger upkeep: VACUUM and ANALYZE of the ledger's own tables when the database does not do it.
 *
 * Every stock change is written three times (custody's insert, the claim, the record), and the two
 * updates leave dead row versions and index entries behind. Postgres's autovacuum removes them and
 * keeps the planner's statistics current; a server (or table) with autovacuum off keeps all of them,
 * and at 1 000 sales/s the ledger outgrows its buffers within minutes: Shopify's lag went from under
 * 1 s to a minute (docs/BENCHMARKS.md, issue #15). So when autovacuum is off for a ledger table, the
 * service does what autovacuum would have done, at autovacuum's own thresholds as the server sets
 * them, and nothing otherwise: a database that vacuums is left to it.
 *
 * It runs on a connection of its own (VACUUM cannot run in a transaction and outlasts the ledger
 * pool's statement timeout), with a short lock timeout: another replica vacuuming the same table
 * holds the lock, and this round leaves that table to it.
 */
import type { Sql } from "postgres";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import { repeatRounds, type Rounds } from "../resilience/rounds.ts";
import { contractLedger } from "./migrate.ts";

const log = logger("ledger");

/** What one round did to one table. */
export interface UpkeepAction {
  table: string;
  action: "vacuum" | "analyze";
  /** Dead row versions the table had before (the statistics' figure). */
  deadRows: number;
  ms: number;
}

/** Autovacuum's switches and thresholds as the server is configured (postgresql.conf). */
interface Thresholds {
  autovacuum: boolean;
  vacuumThreshold: number;
  vacuumScale: number;
  insertThreshold: number;
  insertScale: number;
  analyzeThreshold: number;
  analyzeScale: number;
}

interface TableStats {
  table: string;
  /** The table's own `autovacuum_enabled` storage parameter; null when not set. */
  enabled: boolean | null;
  /** The planner's row estimate as of the last VACUUM or ANALYZE (0 before the first), as autovacuum uses it. */
  rows: number;
  dead: number;
  insertedSinceVacuum: number;
  modifiedSinceAnalyze: number;
  /** The table's own thresholds (storage parameters), where set: they win over the server's. */
  own: Partial<Omit<Thresholds, "autovacuum">>;
}

/** The table's own autovacuum storage parameters, by the {@link Thresholds} field each overrides. */
const TABLE_THRESHOLDS = {
  vacuumThreshold: "autovacuum_vacuum_threshold",
  vacuumScale: "autovacuum_vacuum_scale_factor",
  insertThreshold: "autovacuum_vacuum_insert_threshold",
  insertScale: "autovacuum_vacuum_insert_scale_factor",
  analyzeThreshold: "autovacuum_analyze_threshold",
  analyzeScale: "autovacuum_analyze_scale_factor",
} as const;

/**
 * One upkeep round over the tables of `schema`: each table autovacuum does not look after and
 * that is past one of autovacuum's thresholds is vacuumed (and analyzed) or analyzed. Smallest
 * tables first: a long VACUUM of `stock_change` must not keep the small, busy `sync_batch` waiting
 * (autovacuum has several workers for that; the upkeep has one connection).
 * Returns what it did; an empty list when the database looks after the ledger itself.
 */
export async function upkeepRound(sql: Sql, schema: string): Promise<UpkeepAction[]> {
  const [t] = await sql<Thresholds[]>`
    select current_setting('autovacuum')::boolean as autovacuum,
           current_setting('autovacuum_vacuum_threshold')::float8 as "vacuumThreshold",
           current_setting('autovacuum_vacuum_scale_factor')::float8 as "vacuumScale",
           current_setting('autovacuum_vacuum_insert_threshold')::float8 as "insertThreshold",
           current_setting('autovacuum_vacuum_insert_scale_factor')::float8 as "insertScale",
           current_setting('autovacuum_analyze_threshold')::float8 as "analyzeThreshold",
           current_setting('autovacuum_analyze_scale_factor')::float8 as "analyzeScale"`;
  const stats = await sql<(Omit<TableStats, "own"> & { options: Record<string, number> })[]>`
    select s.relname as table,
           (select option_value::boolean from pg_options_to_table(c.reloptions)
             where option_name = 'autovacuum_enabled') as enabled,
           (select coalesce(jsonb_object_agg(option_name, option_value::float8), '{}')
              from pg_options_to_table(c.reloptions)
             where option_name = any(${Object.values(TABLE_THRESHOLDS)})) as options,
           greatest(c.reltuples, 0)::float8 as rows,
           s.n_dead_tup::float8 as dead,
           s.n_ins_since_vacuum::float8 as "insertedSinceVacuum",
           s.n_mod_since_analyze::float8 as "modifiedSinceAnalyze"
      from pg_stat_user_tables s join pg_class c on c.oid = s.relid
     where s.schemaname = ${schema}
     order by pg_relation_size(c.oid), s.relname`;
  const tables: TableStats[] = stats.map(({ options, ...table }) => ({
    ...table,
    own: Object.fromEntries(
      Object.entries(TABLE_THRESHOLDS).filter(([, name]) => name in options).map((
        [field, name],
      ) => [field, options[name]]),
    ),
  }));
  const done: UpkeepAction[] = [];
  for (const table of tables) {
    // Autovacuum looks after a table when the server runs it and the table does not opt out
    // (autovacuum_enabled = false); a table's `true` cannot turn on what the server has off.
    if (t.autovacuum && table.enabled !== false) continue;
    const th = { ...t, ...table.own };
    // A threshold of -1 for inserts disables insert-driven vacuums, as it does for autovacuum.
    const vacuum = table.dead > th.vacuumThreshold + th.vacuumScale * table.rows ||
      (th.insertThreshold >= 0 &&
        table.insertedSinceVacuum > th.insertThreshold + th.insertScale * table.rows);
    const analyze = table.modifiedSinceAnalyze > th.analyzeThreshold + th.analyzeScale * table.rows;
    if (!vacuum && !analyze) continue;
    if (done.length === 0) await sessionLikeAutovacuum(sql);
    const started = performance.now();
    try {
      // Identifiers escaped by the driver; VACUUM cannot run in a transaction, which a tagged query is not.
      const target = sql`${sql(schema)}.${sql(table.table)}`;
      if (vacuum) await sql`vacuum (analyze) ${target}`;
      else await sql`analyze ${target}`;
    } catch (error) {
      // 55P03 lock_not_available: another replica is vacuuming it now.
      if ((error as { code?: string }).code === "55P03") continue;
      throw error;
    }
    done.push({
      table: table.table,
      action: vacuum ? "vacuum" : "analyze",
      deadRows: table.dead,
      ms: Math.round(performance.now() - started),
    });
  }
  return done;
}

/**
 * Paces this session's VACUUM as autovacuum's are (its cost delay and limit, as the server sets them;
 * -1 means "the plain VACUUM setting", as for autovacuum), and keeps it to this one backend, as
 * autovacuum's are. A manual VACUUM is not paced by default, and on a machine whose cores dispatch sales
 * an unpaced one competes with them for its whole run. Nor is it alone by default: it hands every index
 * past `min_parallel_index_scan_size` to parallel workers (`max_parallel_maintenance_workers`, 2 by
 * default): three processes vacuuming `stock_change` beside the dispatcher on a two-core machine, seen in
 * the bench's 1 000 sales/s stream (docs/BENCHMARKS.md, issue #15).
 */
async function sessionLikeAutovacuum(sql: Sql): Promise<void> {
  // A backend busy in VACUUM does not notice that its client has gone (shutdown ends the connection):
  // from Postgres 14 on, it looks every second and stops, instead of vacuuming on after we have exited.
  await sql`
    select set_config('client_connection_check_interval', '1s', false)
     where current_setting('server_version_num')::int >= 140000`;
  await sql`
    select set_config('vacuum_cost_delay', d, false), set_config('vacuum_cost_limit', l, false),
           set_config('max_parallel_maintenance_workers', '0', false)
      from (select case when current_setting('autovacuum_vacuum_cost_delay') in ('-1', '-1ms')
                        then current_setting('vacuum_cost_delay')
                        else current_setting('autovacuum_vacuum_cost_delay') end as d,
                   case when current_setting('autovacuum_vacuum_cost_limit') = '-1'
                        then current_setting('vacuum_cost_limit')
                        else current_setting('autovacuum_vacuum_cost_limit') end as l) s`;
}

/** What the upkeep loop needs. */
export interface LedgerUpkeepDeps {
  /**
   * A connection of its own, which the upkeep owns and ends on close: no statement timeout (a
   * VACUUM takes what it takes), a short lock timeout (a table another replica vacuums now is
   * left to it).
   */
  sql: Sql;
  schema: string;
  /** Time between rounds (LEDGER_UPKEEP_INTERVAL). */
  intervalMs: number;
  metrics: Pick<ServiceMetrics, "ledgerUpkeep">;
}

/** Runs {@link upkeepRound} every interval until closed; logs what each round did. */
export class LedgerUpkeep {
  #rounds: Rounds | undefined;
  #closed = false;
  #told = false;

  constructor(private readonly deps: LedgerUpkeepDeps) {}

  start(): void {
    this.#rounds ??= repeatRounds(this.deps.intervalMs, () => this.#round(), (error) => {
      if (this.#closed) return; // a VACUUM cut short by the shutdown
      log.warning("ledger upkeep failed: {error}; trying again in {interval_ms} ms", {
        error: (error as Error).message,
        interval_ms: this.deps.intervalMs,
      });
    });
  }

  async #round(): Promise<void> {
    // What a rolling deploy's older replicas still used goes once they are gone.
    await contractLedger(this.deps.sql, this.deps.schema);
    const actions = await upkeepRound(this.deps.sql, this.deps.schema);
    if (actions.length > 0 && !this.#told) {
      this.#told = true;
      log.warning(
        "autovacuum is off for the ledger's tables: the service vacuums and analyzes them itself " +
          "(LEDGER_UPKEEP_INTERVAL=0 stops it; turning autovacuum on is better)",
      );
    }
    for (const a of actions) {
      this.deps.metrics.ledgerUpkeep.inc({ table: a.table, action: a.action });
      log.info("ledger upkeep: {action} {table} ({dead_rows} dead rows) in {ms} ms", {
        action: a.action,
        table: a.table,
        dead_rows: a.deadRows,
        ms: a.ms,
      });
    }
  }

  /**
   * Stops scheduling rounds and ends the connection. A VACUUM in progress stops within a second of it
   * (Postgres 14 and later notice the client has gone: `client_connection_check_interval`); Postgres
   * keeps what it had cleaned, and the next round, or autovacuum, finishes it.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const inProgress = this.#rounds?.stop();
    await this.deps.sql.end({ timeout: 1 });
    await inProgress;
  }
}
