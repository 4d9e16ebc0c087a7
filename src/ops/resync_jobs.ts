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
import type { CatalogListing } from "../sync/channel.ts";

type TransactionSql = postgres.TransactionSql;

/** One listing check of a job's plan. */
export interface ResyncStep {
  seq: number;
  channel: string;
  sku: string;
  stores: string[];
  /** From the snapshots of a catalog-wide job: the POS sum at `stores` and the marketplace's quantity. */
  source_qty?: number | null;
  marketplace_qty?: number | null;
  /** The listing's address, as the channel's `read` gives it (batched writes need no read by SKU). */
  ref?: unknown;
}

/** A POS catalog row in a job's snapshot. */
export interface SourceRow {
  tienda_id: string;
  sku: string;
  producto_id: string | null;
  quantity: number | null;
  unknown: { reason: string; error: string } | null;
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

  /** Whether the job's whole plan is stored (a job taken over while planning is planned again). */
  async planned(id: string): Promise<boolean> {
    const [row] = await this.sql<{ planned: boolean }[]>`
      select planned_at is not null as planned from resync_job where id = ${id}`;
    return row?.planned ?? false;
  }

  /** Marks the plan complete: from now on a take-over resumes it instead of planning again. */
  async planComplete(id: string): Promise<void> {
    await this.sql.begin(async (tx) => {
      await this.#owned(tx, id);
      await tx`update resync_job set planned_at = now(), heartbeat_at = now() where id = ${id}`;
    });
  }

  /** @throws JobLostError when the job was cancelled or taken over since this replica took it. */
  async stillOurs(id: string): Promise<void> {
    const [job] = await this.sql`
      select 1 from resync_job where id = ${id} and owner = ${this.owner} and state = 'running'`;
    if (!job) throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
  }

  /** The next steps not done after step `after`, in plan order. */
  async nextSteps(id: string, after: number, limit: number): Promise<ResyncStep[]> {
    return await this.sql<ResyncStep[]>`
      select seq, channel, sku, stores, source_qty, marketplace_qty, ref from resync_step
       where job_id = ${id} and not done and seq > ${after} order by seq limit ${limit}`;
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
      if (final) await this.#forgetWork(tx, id);
    });
  }

  /**
   * Stores what a job cancelled under it still did (its last lines and counts, writes included):
   * only while this replica is still its owner, so a job taken over is never written twice.
   */
  async settleCancelled(id: string, progress: Progress, lines: StoredLine[]): Promise<void> {
    await this.sql.begin(async (tx) => {
      const [job] = await tx`
        update resync_job set done = done + ${progress.done}, drift_found = drift_found + ${progress.drift},
               written = written + ${progress.written}, errors = errors + ${progress.errors}
         where id = ${id} and owner = ${this.owner} and state = 'cancelled'
        returning id`;
      if (!job) return;
      await this.#insertLines(tx, id, lines);
      await this.#forgetWork(tx, id);
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
    if (!row.cancelled) return "finished";
    // Its snapshots and plan go now (the owner's writes to them are fenced by state): the report stays.
    await this.sql.begin((tx) => this.#forgetWork(tx, id));
    return "cancelled";
  }

  /**
   * The job with its progress (rate and ETA) and, unless `inline` is false (polling), the first
   * {@link INLINE_LINES} lines of each kind.
   */
  async get(id: string, inline = true): Promise<Record<string, unknown> | undefined> {
    const { sql } = this;
    const [row] = await sql<Record<string, unknown>[]>`
      select id, request, dry_run, state, total, done, drift_found, written, errors, error, owner,
             started_at, heartbeat_at, finished_at, resumed, resumed_at, done_at_resume,
             report as old_report, unresolved as old_unresolved,
             (select count(*) from resync_line l where l.job_id = j.id and kind = 'drift')::int as report_lines,
             (select count(*) from resync_line l where l.job_id = j.id and kind = 'unresolved')::int
               as unresolved_lines,
             extract(epoch from now() - coalesce(resumed_at, started_at))::float8 as running_seconds
        from resync_job j where id = ${id}`;
    if (!row) return undefined;
    const lines = async (kind: string) =>
      (await sql<{ line: unknown }[]>`
        select line from resync_line where job_id = ${id} and kind = ${kind} order by seq limit ${INLINE_LINES}`)
        .map((r) => r.line);
    const { old_report, old_unresolved, running_seconds, done_at_resume, ...job } = row;
    const [report, unresolved] = inline ? await Promise.all([lines("drift"), lines("unresolved")]) : [[], []];
    // Counts first: lines by action (and outcome) and by reason, per channel, over the whole report.
    const counts = await sql<{ kind: string; channel: string; what: string; n: number }[]>`
      select kind, line ->> 'channel' as channel,
             case when kind = 'drift'
                  then coalesce(line ->> 'action', '?') || coalesce(':' || (line ->> 'outcome'), '')
                  else coalesce(line ->> 'reason', '?') end as what,
             count(*)::int as n
        from resync_line where job_id = ${id}
       group by 1, 2, 3 order by 1, 2, 3`;
    const summary: Record<string, Record<string, Record<string, number>>> = { actions: {}, unresolved: {} };
    for (const c of counts) {
      (summary[c.kind === "drift" ? "actions" : "unresolved"][c.channel] ??= {})[c.what] = c.n;
    }
    const done = job.done as number, total = job.total as number;
    const rate = job.state === "running" && (running_seconds as number) > 0
      ? (done - (done_at_resume as number)) / (running_seconds as number)
      : undefined;
    return {
      ...job,
      // Jobs of versions before the report moved to rows keep theirs in the job row.
      ...(inline
        ? {
          report: [...old_report as unknown[], ...report],
          unresolved: [...old_unresolved as unknown[], ...unresolved],
        }
        : {}),
      summary,
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

  /**
   * Adds a page of the POS catalog to the job's snapshot. A SKU the POS lists under two products at
   * one store cannot be compared (which product's stock is the listing's?): it is kept as unknown,
   * with the reason, and never written. @throws JobLostError when the job is no longer ours.
   */
  async addSource(id: string, page: SourceRow[]): Promise<void> {
    const merged = new Map<string, SourceRow>();
    for (const row of page) {
      const key = JSON.stringify([row.tienda_id, row.sku]);
      merged.set(key, merged.has(key) ? twoProducts(row) : row);
    }
    const rows = [...merged.values()];
    if (!rows.length) return;
    const [{ inserted }] = await this.sql<{ inserted: number }[]>`
      with owned as (
        select 1 from resync_job where id = ${id} and owner = ${this.owner} and state = 'running'),
      added as (
        insert into resync_source (job_id, tienda_id, sku, producto_id, quantity, unknown)
        select ${id}, r.tienda_id, r.sku, r.producto_id, r.quantity, r.unknown
          from jsonb_to_recordset(${this.sql.json(rows as never)}::jsonb)
               as r(tienda_id text, sku text, producto_id text, quantity integer, unknown jsonb)
         where exists (select 1 from owned)
        on conflict (job_id, tienda_id, sku) do update
          set quantity = null,
              unknown = jsonb_build_object('reason', 'stock_unknown', 'error',
                'the POS lists ' || excluded.sku || ' under two products at store ' || excluded.tienda_id ||
                ': which one a listing shows is unknown')
        returning 1)
      select count(*)::int as inserted from added`;
    if (inserted === 0) {
      throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
    }
  }

  /** Adds a page of a channel's listings to the job's snapshot. */
  async addListings(id: string, channel: string, listings: CatalogListing[]): Promise<void> {
    if (!listings.length) return;
    const rows = listings.map((l) => ({
      place: l.place,
      sku: l.sku,
      quantity: l.quantity,
      ref: l.ref ?? null,
      unwritable: l.unwritable ?? null,
    }));
    const [{ inserted }] = await this.sql<{ inserted: number }[]>`
      with owned as (
        select 1 from resync_job where id = ${id} and owner = ${this.owner} and state = 'running'),
      added as (
        insert into resync_listing (job_id, channel, place, sku, quantity, ref, unwritable)
        select ${id}, ${channel}, r.place, r.sku, r.quantity, r.ref, r.unwritable
          from jsonb_to_recordset(${this.sql.json(rows as never)}::jsonb)
               as r(place text, sku text, quantity integer, ref jsonb, unwritable jsonb)
         where exists (select 1 from owned)
        returning 1)
      select count(*)::int as inserted from added`;
    if (inserted === 0) {
      throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
    }
  }

  /**
   * Keeps the job's heartbeat fresh while it works on something long (a catalog read, a wait for
   * live sales); false when the job is no longer ours.
   */
  async touch(id: string): Promise<boolean> {
    const rows = await this.sql`
      update resync_job set heartbeat_at = now()
       where id = ${id} and owner = ${this.owner} and state = 'running' returning 1`;
    return rows.length > 0;
  }

  /** Drops what only a running job needs (snapshots, plan): a finished job keeps its report. */
  async #forgetWork(tx: TransactionSql, id: string): Promise<void> {
    await tx`delete from resync_source where job_id = ${id}`;
    await tx`delete from resync_listing where job_id = ${id}`;
    await tx`delete from resync_step where job_id = ${id}`;
  }

  /** Forgets a job's snapshots (planning starts again after a take-over mid-read). */
  async clearSnapshots(id: string): Promise<void> {
    await this.sql.begin(async (tx) => {
      await this.#owned(tx, id);
      await tx`delete from resync_source where job_id = ${id}`;
      await tx`delete from resync_listing where job_id = ${id}`;
      await tx`delete from resync_step where job_id = ${id}`;
      await tx`delete from resync_line where job_id = ${id}`;
      await tx`update resync_job set total = 0, done = 0, drift_found = 0, written = 0, errors = 0 where id = ${id}`;
    });
  }

  /**
   * Plans one channel's part of a catalog-wide job from the snapshots, in SQL: a step per SKU
   * and place the POS and the marketplace both have, and an unresolved line for each SKU only
   * one side has, each SKU on several listings, each listing the marketplace will not take
   * writes for, and each POS stock that could not be read. `places` maps every store the
   * channel shows to where its stock is kept (stores of one place are compared summed; a place
   * of "*" matches every listing of the channel). Unresolved lines are numbered below -`lineBase`.
   * Returns the next free step number.
   */
  async planChannel(
    id: string,
    channel: string,
    places: { tienda_id: string; place: string }[],
    firstSeq: number,
    lineBase: number,
  ): Promise<number> {
    const { sql } = this;
    return await sql.begin(async (tx) => {
      await this.#owned(tx, id);
      const map = tx.json(places as never);
      const [{ planned }] = await tx<{ planned: number }[]>`
        with map as (select * from jsonb_to_recordset(${map}::jsonb) as m(tienda_id text, place text)),
        stores as (select place, array_agg(tienda_id order by tienda_id) as stores from map group by place),
        src as (
          select m.place, s.sku, sum(s.quantity)::int as qty,
                 (array_agg(s.unknown) filter (where s.unknown is not null))[1] as unknown
            from resync_source s join map m using (tienda_id)
           where s.job_id = ${id}
           group by m.place, s.sku),
        lst as (
          select case when exists (select 1 from map where place = '*') then '*' else l.place end as place,
                 l.sku, count(*)::int as n, min(l.quantity)::int as qty, (array_agg(l.ref))[1] as ref,
                 (array_agg(l.unwritable) filter (where l.unwritable is not null))[1] as unwritable
            from resync_listing l
           where l.job_id = ${id} and l.channel = ${channel}
             and (exists (select 1 from map where place = '*') or l.place in (select place from map))
           group by 1, l.sku),
        paired as (
          select coalesce(src.place, lst.place) as place, coalesce(src.sku, lst.sku) as sku,
                 src.qty as source_qty, src.unknown, src.sku is not null as in_pos,
                 lst.qty as marketplace_qty, lst.n, lst.unwritable, lst.ref, lst.sku is not null as listed
            from src full join lst on lst.place = src.place and lst.sku = src.sku),
        judged as (
          select p.*, st.stores,
                 case when not p.listed then 'no_listing'
                      when not p.in_pos then 'not_in_pos'
                      when p.n > 1 then 'ambiguous_sku'
                      when p.unwritable is not null then coalesce(p.unwritable ->> 'reason', 'unwritable')
                      when p.unknown is not null then 'stock_unknown'
                 end as reason
            from paired p join stores st using (place)),
        steps as (
          insert into resync_step (job_id, seq, channel, sku, stores, source_qty, marketplace_qty, ref)
          select ${id}, ${firstSeq}::int + row_number() over (order by sku, place) - 1, ${channel}, sku, stores,
                 source_qty, marketplace_qty, case when place = '*' then null else ref end
            from judged where reason is null
          returning 1),
        unresolved as (
          insert into resync_line (job_id, seq, kind, line)
          select ${id}, -(${lineBase}::int + row_number() over (order by sku, place)), 'unresolved',
                 jsonb_build_object(
                   'sku', sku, 'tienda_id', array_to_string(stores, ','), 'channel', ${channel}::text,
                   'reason', reason,
                   'error', case reason
                     when 'no_listing' then 'the POS has this SKU; ' || ${channel}::text || ' has no listing for it here'
                     when 'not_in_pos' then ${channel}::text || ' lists this SKU; the POS has no such product here'
                     when 'ambiguous_sku' then n || ' listings carry this SKU: none is written'
                     when 'stock_unknown' then coalesce(unknown ->> 'error', 'the POS stock could not be read')
                     else coalesce(unwritable ->> 'error', ${channel}::text || ' does not take stock writes for it')
                   end)
            from judged where reason is not null
          returning 1)
        select (select count(*) from steps)::int as planned`;
      await tx`update resync_job set total = total + ${planned}, heartbeat_at = now() where id = ${id}`;
      return firstSeq + planned;
    });
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

/** A POS row for a SKU listed under two products at one store: unknown, with why. */
function twoProducts(row: SourceRow): SourceRow {
  return {
    ...row,
    quantity: null,
    unknown: {
      reason: "stock_unknown",
      error:
        `the POS lists ${row.sku} under two products at store ${row.tienda_id}: which one a listing shows is unknown`,
    },
  };
}
