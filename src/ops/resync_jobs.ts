/**
 * A resync job's life in the ledger, so it outlives the process that started it: its plan
 * (one step per listing check), its report (a row per line, appended, read page by page),
 * its counts, and who runs it. A job whose heartbeat stops is taken over by whichever
 * replica looks next and goes on from its first step not done; every write of progress is
 * fenced by the owner, so a replica that lost the job (taken over, or cancelled by an
 * operator) learns it at its next heartbeat and stops.
 */
import type postgres from "postgres";
import type { Sql } from "postgres";

type TransactionSql = postgres.TransactionSql;

/** One listing check of a job's plan. */
export interface ResyncStep {
  seq: number;
  channel: string;
  sku: string;
  stores: string[];
}

/** A report line, by the step that produced it (negative: found while planning). */
export interface StoredLine {
  seq: number;
  kind: "drift" | "unresolved";
  line: unknown;
}

/** Counts a heartbeat adds to the job's. */
export interface Progress {
  done: number;
  drift: number;
  written: number;
  errors: number;
}

/** The job is no longer this replica's: cancelled, or taken over after a missed heartbeat. */
export class JobLostError extends Error {
  override name = "JobLostError";
}

/** How many lines of each kind `GET /resync/{id}` shows inline; the rest are paged. */
export const INLINE_LINES = 1_000;

const JOB_COLUMNS = `id, request, dry_run, state, total, done, drift_found, written, errors, error, owner,
  started_at, heartbeat_at, finished_at, resumed, resumed_at, done_at_resume`;

/** Resync jobs in the ledger. */
export class ResyncJobs {
  constructor(private readonly sql: Sql, private readonly owner: string) {}

  /** Creates a running job, or answers the id of the running job of the same scope. */
  async create(id: string, scope: string, request: unknown, dryRun: boolean): Promise<{ conflict?: string }> {
    const { sql } = this;
    const inserted = await sql`
      insert into resync_job (id, scope_key, request, dry_run, owner)
      values (${id}, ${scope}, ${sql.json(request as never)}, ${dryRun}, ${this.owner})
      on conflict (scope_key) where state = 'running' do nothing
      returning id`;
    if (inserted.length) return {};
    const [running] = await sql<{ id: string }[]>`
      select id from resync_job where scope_key = ${scope} and state = 'running'`;
    return { conflict: running?.id ?? "unknown" };
  }

  /** Takes over running jobs whose heartbeat is older than `staleMs`; their ids and requests. */
  async takeOver(staleMs: number): Promise<{ id: string; request: unknown }[]> {
    return await this.sql<{ id: string; request: unknown }[]>`
      update resync_job set owner = ${this.owner}, heartbeat_at = now(), resumed = resumed + 1,
             resumed_at = now(), done_at_resume = done
       where id in (
         select id from resync_job
          where state = 'running' and heartbeat_at < now() - ${staleMs} * interval '1 millisecond'
          for update skip locked)
      returning id::text, request`;
  }

  /** Stores the plan in one go (replacing a partial one), with what planning could not check. */
  async plan(id: string, steps: ResyncStep[], unresolved: unknown[]): Promise<void> {
    const { sql } = this;
    await sql.begin(async (tx) => {
      await this.#owned(tx, id);
      await tx`delete from resync_step where job_id = ${id}`;
      await tx`delete from resync_line where job_id = ${id} and seq < 0`;
      for (let i = 0; i < steps.length; i += 1_000) {
        const chunk = steps.slice(i, i + 1_000);
        await tx`
          insert into resync_step (job_id, seq, channel, sku, stores)
          select ${id}, s.seq, s.channel, s.sku, s.stores
            from jsonb_to_recordset(${tx.json(chunk as never)}::jsonb)
                 as s(seq integer, channel text, sku text, stores text[])`;
      }
      const lines = unresolved.map((line, i) => ({ seq: -(i + 1), kind: "unresolved", line }));
      await this.#insertLines(tx, id, lines as StoredLine[]);
      await tx`update resync_job set total = ${steps.length}, heartbeat_at = now() where id = ${id}`;
    });
  }

  /** Whether the job has a plan (a job taken over while planning has none). */
  async planned(id: string): Promise<boolean> {
    const [row] = await this.sql<{ planned: boolean }[]>`
      select exists (select 1 from resync_step where job_id = ${id}) or total > 0 as planned
        from resync_job where id = ${id}`;
    return row?.planned ?? false;
  }

  /** @throws JobLostError when the job was cancelled or taken over since this replica took it. */
  async stillOurs(id: string): Promise<void> {
    const [job] = await this.sql`
      select 1 from resync_job where id = ${id} and owner = ${this.owner} and state = 'running'`;
    if (!job) throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
  }

  /** The next steps not done, in plan order. */
  async nextSteps(id: string, limit: number): Promise<ResyncStep[]> {
    return await this.sql<ResyncStep[]>`
      select seq, channel, sku, stores from resync_step
       where job_id = ${id} and not done order by seq limit ${limit}`;
  }

  /**
   * A heartbeat: adds the counts, appends the lines and marks their steps done, all at once;
   * with `final`, ends the job. @throws JobLostError when the job is no longer ours.
   */
  async beat(
    id: string,
    progress: Progress,
    lines: StoredLine[],
    final?: { state: "done" | "failed"; error?: string },
  ): Promise<void> {
    await this.sql.begin(async (tx) => {
      const [job] = await tx`
        update resync_job set done = done + ${progress.done}, drift_found = drift_found + ${progress.drift},
               written = written + ${progress.written}, errors = errors + ${progress.errors},
               heartbeat_at = now(), state = ${final?.state ?? "running"}, error = ${final?.error ?? null},
               finished_at = ${final ? tx`now()` : null}
         where id = ${id} and owner = ${this.owner} and state = 'running'
        returning id`;
      if (!job) throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
      await this.#insertLines(tx, id, lines);
      const seqs = lines.filter((l) => l.seq >= 0).map((l) => l.seq);
      if (seqs.length) {
        await tx`update resync_step set done = true where job_id = ${id} and seq = any(${seqs})`;
      }
    });
  }

  /** Leaves this replica's running jobs to whoever looks next (shutdown): no wait for a stale heartbeat. */
  async release(ids: string[]): Promise<void> {
    if (!ids.length) return;
    await this.sql`
      update resync_job set heartbeat_at = '-infinity'
       where id = any(${ids}) and owner = ${this.owner} and state = 'running'`;
  }

  /** Cancels a running job; what it found. */
  async cancel(id: string): Promise<"cancelled" | "finished" | "not_found"> {
    const [row] = await this.sql<{ state: string; cancelled: boolean }[]>`
      with cancelled as (
        update resync_job set state = 'cancelled', finished_at = now(), error = 'cancelled by an operator'
         where id = ${id} and state = 'running' returning id)
      select j.state, exists (select 1 from cancelled) as cancelled from resync_job j where j.id = ${id}`;
    if (!row) return "not_found";
    return row.cancelled ? "cancelled" : "finished";
  }

  /** The job with its progress (rate and ETA) and the first {@link INLINE_LINES} lines of each kind. */
  async get(id: string): Promise<Record<string, unknown> | undefined> {
    const { sql } = this;
    const [row] = await sql.unsafe<Record<string, unknown>[]>(
      `select ${JOB_COLUMNS}, report as old_report, unresolved as old_unresolved,
              (select count(*) from resync_line l where l.job_id = j.id and kind = 'drift')::int as report_lines,
              (select count(*) from resync_line l where l.job_id = j.id and kind = 'unresolved')::int
                as unresolved_lines,
              extract(epoch from now() - coalesce(resumed_at, started_at))::float8 as running_seconds
         from resync_job j where id = $1`,
      [id],
    );
    if (!row) return undefined;
    const lines = async (kind: string) =>
      (await sql<{ line: unknown }[]>`
        select line from resync_line where job_id = ${id} and kind = ${kind} order by seq limit ${INLINE_LINES}`)
        .map((r) => r.line);
    const { old_report, old_unresolved, running_seconds, done_at_resume, ...job } = row;
    const [report, unresolved] = await Promise.all([lines("drift"), lines("unresolved")]);
    const done = job.done as number, total = job.total as number;
    const rate = job.state === "running" && (running_seconds as number) > 0
      ? (done - (done_at_resume as number)) / (running_seconds as number)
      : undefined;
    return {
      ...job,
      // Jobs of versions before the report moved to rows keep theirs in the job row.
      report: [...old_report as unknown[], ...report],
      unresolved: [...old_unresolved as unknown[], ...unresolved],
      progress: {
        done,
        total,
        per_second: rate === undefined ? null : Math.round(rate * 10) / 10,
        eta_seconds: rate ? Math.ceil((total - done) / rate) : null,
      },
    };
  }

  /** Every line of a job's report, in order, page by page. */
  async *lines(id: string, kind: "drift" | "unresolved", pageSize = 500): AsyncIterable<unknown[]> {
    let after = -2_147_483_648; // the smallest integer seq: planning's lines are negative
    for (;;) {
      const rows = await this.sql<{ seq: number; line: unknown }[]>`
        select seq, line from resync_line where job_id = ${id} and kind = ${kind} and seq > ${after}
         order by seq limit ${pageSize}`;
      if (!rows.length) return;
      yield rows.map((r) => r.line);
      after = rows[rows.length - 1].seq;
    }
  }

  async #owned(tx: TransactionSql, id: string): Promise<void> {
    const [job] = await tx`
      select 1 from resync_job where id = ${id} and owner = ${this.owner} and state = 'running' for update`;
    if (!job) throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
  }

  async #insertLines(tx: TransactionSql, id: string, lines: StoredLine[]): Promise<void> {
    for (let i = 0; i < lines.length; i += 1_000) {
      const chunk = lines.slice(i, i + 1_000);
      await tx`
        insert into resync_line (job_id, seq, kind, line)
        select ${id}, l.seq, l.kind, l.line
          from jsonb_to_recordset(${tx.json(chunk as never)}::jsonb) as l(seq integer, kind text, line jsonb)
        on conflict do nothing`;
    }
  }
}
