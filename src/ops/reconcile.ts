/**
 * Scheduled reconcile (RESYNC_INTERVAL): a full resync, dry run or write
 * (RESYNC_MODE), on one replica at a time. Each replica's timer fires; the one
 * that takes the Postgres advisory lock runs the job, the others skip that
 * round. Drift shows as a metric and a log line per listing (see resync.ts).
 */
import type { Sql } from "postgres";
import { logger } from "../log.ts";
import type { Resyncer } from "./resync.ts";
import { repeatRounds, type Rounds } from "../resilience/rounds.ts";

const log = logger("resync");
// pg_try_advisory_lock key: one scheduled reconcile across replicas.
const LOCK_KEY = 0x52534e43; // "RSNC"

/** Options of {@link ReconcileScheduler}. */
export interface ReconcileOptions {
  sql: Sql;
  resyncer: Resyncer;
  intervalMs: number;
  dryRun: boolean;
}

/** Runs a full resync every interval on whichever replica gets the lock. */
export class ReconcileScheduler {
  #rounds: Rounds | undefined;

  constructor(private readonly options: ReconcileOptions) {}

  /** Schedules the first round one interval from now. */
  start(): void {
    this.#rounds ??= repeatRounds(
      this.options.intervalMs,
      () => this.runOnce(),
      (error) =>
        log.error("scheduled reconcile failed: {error}", { error: (error as Error).message, mark: "error" }),
    );
  }

  /** One round: returns the job id when this replica ran it, undefined when another one holds the lock. */
  async runOnce(): Promise<string | undefined> {
    const { sql, resyncer } = this.options;
    const connection = await sql.reserve();
    try {
      const [{ locked }] = await connection<
        { locked: boolean }[]
      >`select pg_try_advisory_lock(${LOCK_KEY}) as locked`;
      if (!locked) return undefined;
      try {
        const started = await resyncer.start({ all: true, dry_run: this.options.dryRun });
        if ("conflict" in started) {
          log.info("scheduled reconcile skipped: a full resync ({id}) is already running", {
            id: started.conflict,
          });
          return undefined;
        }
        const job = await resyncer.wait(started.id, 6 * 3_600_000);
        log.info("scheduled reconcile {id}: {drift_found} listings with drift ({mode})", {
          id: started.id,
          drift_found: job.drift_found,
          mode: this.options.dryRun ? "dry run" : "write",
        });
        return started.id;
      } finally {
        await connection`select pg_advisory_unlock(${LOCK_KEY})`;
      }
    } finally {
      connection.release();
    }
  }

  /** Stops scheduling and waits for a round in progress. */
  async stop(): Promise<void> {
    await this.#rounds?.stop();
  }
}
