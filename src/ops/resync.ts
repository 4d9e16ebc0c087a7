/**
 * Resync: compare the POS's stock (the source of truth, read like MercadoLibre's
 * mirror mode) with each marketplace's quantity and, unless it is a dry run,
 * write the source value — Shopify with compare-and-set, MercadoLibre with an
 * absolute PUT — recording each write in the ledger like any other change.
 *
 * Jobs run in the background and live in the ledger (`resync_job`), so
 * `GET /resync/{id}` answers on any replica and one scope runs once at a time.
 * Live sales go first: before each listing the job waits while the channel's
 * dispatcher has work. Both draw from the same channel budgets.
 */
import type { Sql } from "postgres";
import { z } from "zod";
import { type ChannelName, KNOWN_CHANNELS } from "../model/channel_name.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import {
  describeRules,
  placeQuantity,
  resolveRule,
  type StockRule,
  type StockRules,
} from "../model/stock_rule.ts";
import { type PosStockReader, StockSourceUnavailableError } from "../pos/stock.ts";
import type { ChannelStock } from "../sync/channel.ts";
import { JobLostError, type Progress, ResyncJobs, type ResyncStep, type StoredLine } from "./resync_jobs.ts";

const log = logger("resync");

/** `POST /resync` body. */
export const resyncRequestSchema = z.object({
  skus: z.array(z.string().min(1).max(500)).min(1).max(10_000).optional(),
  tienda_id: z.string().min(1).max(200).optional(),
  all: z.literal(true).optional(),
  channels: z.array(z.enum(KNOWN_CHANNELS)).min(1).optional(),
  dry_run: z.boolean().default(false),
}).strict().refine(
  (r) => [r.skus !== undefined, r.tienda_id !== undefined, r.all !== undefined].filter(Boolean).length === 1,
  { message: 'give exactly one scope: "skus": [...], "tienda_id": "…" or "all": true' },
);

/** A validated resync request. */
export type ResyncRequest = z.infer<typeof resyncRequestSchema>;

/** One line of the drift report. */
export interface DriftLine {
  sku: string;
  tienda_id: string;
  channel: string;
  source_qty: number;
  /** Changes not applied yet that the marketplace will still receive (Shopify deltas). */
  in_flight: number;
  marketplace_qty: number;
  /**
   * What the marketplace should show: the stock rule's value of the POS stock where the listing has
   * one, else the POS stock plus `in_flight`, clamped at 0 (a marketplace takes no negative stock).
   */
  target: number;
  /** What the marketplace should show minus what it shows. */
  difference: number;
  action: "none" | "set" | "would_set" | "skip";
  outcome?: "written" | "already_right" | "error" | "skipped";
  error?: string;
  /** The stock rule the target comes from ("buffer 2, max 40"; per store when stores differ); null: none. */
  rule: string | null;
}

/** A SKU × store × channel the job could not compare. */
export interface Unresolved {
  sku: string;
  tienda_id: string;
  channel: string;
  reason: string;
  error: string;
}

/** Dependencies of {@link Resyncer}. */
export interface ResyncDeps {
  sql: Sql;
  stock: PosStockReader;
  channels: ChannelStock[];
  metrics: ServiceMetrics;
  /** This replica's name (who runs a job). */
  owner: string;
  /** Resolves once the channel's live work is done (or after a bounded wait). */
  liveIdle(channel: ChannelName, signal: AbortSignal): Promise<void>;
  hooks?: ResyncHooks;
  /** A running job whose heartbeat is this old is taken over (default 2 minutes). */
  staleJobMs?: number;
  /** The POS's whole catalog: with it (and each channel's catalog), `all` means every product and listing. */
  catalog?: PosCatalogSource;
  /** Per-channel stock rules (`STOCK_RULES`): a ruled listing's target is the rule's value of the POS stock. */
  rules?: StockRules;
}

/** A row of the POS catalog: a product at a store, with its stock or why it is unknown. */
export type PosCatalogRow =
  & { tiendaId: string; sku: string; productoId: string | null }
  & ({ quantity: number } | { unknown: { reason: string; error: string } });

/** The POS's catalog at some stores, in pages. */
export interface PosCatalogSource {
  pages(stores: string[], signal?: AbortSignal): AsyncIterable<PosCatalogRow[]>;
}

/** Test seams; production passes none. */
export interface ResyncHooks {
  /** Runs after the POS stock was read and before the marketplace read. */
  afterSource?(line: { sku: string; tienda_id: string; channel: string }): Promise<void> | void;
  /** Runs after the marketplace quantity was read and before the write. */
  beforeWrite?(line: DriftLine): Promise<void> | void;
}

/** The service is shutting down: the job pauses and is resumed, it does not fail. */
class ShuttingDown extends Error {
  override name = "ShuttingDown";
}

const HEARTBEAT_MS = 1_000;
/** The heartbeat of a job busy with one long step (well inside STALE_JOB_MS). */
const KEEP_ALIVE_MS = 20_000;
const STALE_JOB_MS = 120_000;
const CAS_TRIES = 5;
/** How long a busy listing's check waits for a sale published but not in custody yet. */
const SETTLE_MS = 100;

/** The POS stock of a listing's stores: their sum, and each one's (in the order of the stores). */
interface Source {
  quantity: number;
  each: number[];
}

/** A listing's changes in the ledger: not applied yet, and counts that move when a sale lands. */
interface Flight {
  pending: number;
  pending_n: number;
  sending: number;
  applied: number;
  recent: boolean;
}

function sameFlight(a: Flight, b: Flight): boolean {
  return a.pending === b.pending && a.pending_n === b.pending_n && a.sending === b.sending &&
    a.applied === b.applied;
}

/** The canonical scope of a request: the same scope runs once at a time. */
export function scopeKey(request: ResyncRequest): string {
  return JSON.stringify({
    skus: request.skus ? [...new Set(request.skus)].sort() : undefined,
    tienda_id: request.tienda_id,
    all: request.all,
    channels: request.channels ? [...new Set(request.channels)].sort() : undefined,
  });
}

/** Runs resync jobs in the background and reports on them. */
export class Resyncer {
  #abort = new AbortController();
  #running = new Map<string, Promise<void>>();
  readonly #jobs: ResyncJobs;
  readonly #staleMs: number;
  #takeOverTimer: ReturnType<typeof setInterval> | undefined;
  /** Per running job: whether its keep-alive found it no longer ours. */
  readonly #lost = new Map<string, () => boolean>();

  constructor(private readonly deps: ResyncDeps) {
    this.#jobs = new ResyncJobs(deps.sql, deps.owner);
    this.#staleMs = deps.staleJobMs ?? STALE_JOB_MS;
    // Jobs left by a replica that stopped (or by this service's last run) go on here.
    const look = () =>
      void this.#takeOver().catch((error) =>
        log.warning("looking for resync jobs to take over failed: {error}", {
          error: (error as Error).message,
        })
      );
    look();
    const timer = setInterval(look, Math.max(1_000, Math.min(30_000, this.#staleMs / 4)));
    Deno.unrefTimer(timer as unknown as number);
    this.#takeOverTimer = timer;
  }

  /** Starts a job, or reports the running job of the same scope. */
  async start(request: ResyncRequest): Promise<{ id: string } | { conflict: string }> {
    // A job of the same scope whose replica died goes on (here) instead of blocking the scope.
    await this.#takeOver();
    const id = crypto.randomUUID();
    const created = await this.#jobs.create(id, scopeKey(request), request, request.dry_run);
    if (created.conflict) return { conflict: created.conflict };
    this.#launch(id, request, false);
    return { id };
  }

  /** A job's progress (with rate and ETA) and, unless `inline` is false, its report's first lines. */
  async get(id: string, inline = true): Promise<Record<string, unknown> | undefined> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
    return await this.#jobs.get(id, inline);
  }

  /** Every line of a job's report (`drift` or `unresolved`), page by page. */
  lines(id: string, kind: "drift" | "unresolved"): AsyncIterable<unknown[]> {
    return this.#jobs.lines(id, kind);
  }

  /** Cancels a running job: it stops at its next listing, keeping what it wrote and reported. */
  async cancel(id: string): Promise<"cancelled" | "finished" | "not_found"> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return "not_found";
    return await this.#jobs.cancel(id);
  }

  /** Waits for a job to finish (tests, the scheduler); gives up when the service shuts down. */
  async wait(id: string, timeoutMs = 600_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await this.get(id);
      if (job && job.state !== "running") return job;
      if (this.#abort.signal.aborted) {
        throw new Error(`resync ${id} left running: the service is shutting down`);
      }
      if (Date.now() > deadline) throw new Error(`resync ${id} still running after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Stops running jobs after their current listing, keeps their progress, and leaves them to
   * whichever replica looks next (or this service when it starts again): a restart resumes a job.
   */
  async close(): Promise<void> {
    clearInterval(this.#takeOverTimer);
    this.#abort.abort();
    const ids = [...this.#running.keys()];
    await Promise.all([...this.#running.values()]);
    await this.#jobs.release(ids).catch((error) =>
      log.warning("resync jobs {ids} not released ({error}); another replica takes them over later", {
        ids: ids.join(","),
        error: (error as Error).message,
      })
    );
  }

  /** Takes over stale running jobs and runs them here. */
  async #takeOver(): Promise<void> {
    if (this.#abort.signal.aborted) return;
    for (const job of await this.#jobs.takeOver(this.#staleMs)) {
      if (this.#running.has(job.id)) continue;
      log.warning("resync {id} resumed here: the replica running it stopped", { id: job.id, mark: "retry" });
      this.#launch(job.id, job.request as ResyncRequest, true);
    }
  }

  #launch(id: string, request: ResyncRequest, resumed: boolean): void {
    const run = this.#run(id, request, resumed).catch((error) =>
      log.error("resync {id} crashed: {error}", { id, error: (error as Error).message })
    ).finally(() => this.#running.delete(id));
    this.#running.set(id, run);
  }

  /**
   * The stores a channel shows: the mapped ones, plus — when nothing is mapped, or a default place
   * serves unmapped stores — every store the ledger has seen sold on it. A resync's own audit rows
   * are left out: they name a group of stores sharing a place, not a store.
   */
  async #knownStores(channel: ChannelStock): Promise<string[]> {
    const mapped = channel.mappedStores();
    if (mapped.length && !channel.showsUnmapped) return mapped;
    const seen = await this.deps.sql<{ tienda_id: string }[]>`
      select distinct tienda_id from stock_change
       where channel = ${channel.name} and event_id not like 'resync:%'`;
    return [...new Set([...mapped, ...seen.map((r) => r.tienda_id).filter((t) => channel.shows(t))])];
  }

  async #targets(request: ResyncRequest, channel: ChannelStock): Promise<
    { skus: string[]; stores: string[]; unresolved: Unresolved[] }
  > {
    const { sql } = this.deps;
    const unresolved: Unresolved[] = [];
    let stores: string[];
    if (request.tienda_id) {
      stores = channel.shows(request.tienda_id) ? [request.tienda_id] : [];
      if (!stores.length) {
        unresolved.push({
          sku: "*",
          tienda_id: request.tienda_id,
          channel: channel.name,
          reason: "store_not_on_channel",
          error: `${channel.name} does not show store ${request.tienda_id}`,
        });
      }
    } else {
      stores = await this.#knownStores(channel);
    }
    if (request.tienda_id && stores.length && channel.place) {
      // A store that shares its place (location) with others is compared with all of them.
      const place = channel.place(request.tienda_id);
      const known = await this.#knownStores(channel);
      stores = [...new Set([request.tienda_id, ...known.filter((t) => channel.place!(t) === place)])];
    }
    let skus: string[];
    if (request.skus) skus = [...new Set(request.skus)];
    else {
      // "All mapped listings": every SKU the channel resolved or the service saw sold.
      skus = (await sql<{ sku: string }[]>`
        select sku from listing where channel = ${channel.name}
        union
        select distinct sku from stock_change where channel = ${channel.name} and tienda_id = any(${stores})
        order by 1`).map((r) => r.sku);
    }
    return { skus, stores, unresolved };
  }

  /** The job's plan: a step per channel × SKU × place, and what cannot be checked at all. */
  async #plan(request: ResyncRequest): Promise<{ steps: ResyncStep[]; unresolved: Unresolved[] }> {
    const wanted = request.channels ?? KNOWN_CHANNELS;
    const channels = this.deps.channels.filter((c) => wanted.includes(c.name));
    const unresolved: Unresolved[] = [];
    for (const name of wanted) {
      if (!channels.some((c) => c.name === name)) {
        unresolved.push({
          sku: "*",
          tienda_id: request.tienda_id ?? "*",
          channel: name,
          reason: "channel_not_dispatched",
          error: `${name} is not enabled (CHANNELS) or not dispatched by this instance`,
        });
      }
    }
    const steps: ResyncStep[] = [];
    for (const channel of channels) {
      const t = await this.#targets(request, channel);
      unresolved.push(...t.unresolved);
      // Stores that share a place are one marketplace quantity: one check (and write) for them all.
      const places = new Map<string, string[]>();
      for (const tiendaId of t.stores) {
        const place = channel.place?.(tiendaId) ?? `store:${tiendaId}`;
        places.set(place, [...places.get(place) ?? [], tiendaId]);
      }
      for (const sku of t.skus) {
        for (const stores of places.values()) {
          steps.push({ seq: steps.length, channel: channel.name, sku, stores: stores.toSorted() });
        }
      }
    }
    return { steps, unresolved };
  }

  /**
   * Plans a whole-catalog job: reads the POS catalog at every store the channels show and each
   * channel's listings into the job's snapshots, page by page, then pairs them in SQL.
   */
  async #planCatalog(id: string, request: ResyncRequest, catalog: PosCatalogSource): Promise<void> {
    const jobs = this.#jobs;
    const signal = this.#abort.signal;
    const { steps: _none, unresolved } = await this.#plan({ ...request, skus: [], all: undefined });
    await jobs.clearSnapshots(id);
    const wanted = request.channels ?? KNOWN_CHANNELS;
    const channels = this.deps.channels.filter((c) => wanted.includes(c.name));
    const places = new Map<string, { tienda_id: string; place: string }[]>();
    for (const channel of channels) {
      const stores = await this.#knownStores(channel);
      if (!stores.length) {
        unresolved.push({
          sku: "*",
          tienda_id: "*",
          channel: channel.name,
          reason: "no_mapped_stores",
          error: `no store is mapped to ${channel.name} and the ledger has seen none sold there yet: ` +
            "map the stores (SHOPIFY_LOCATIONS, MELI_TIENDA_ID or MELI_LOCATIONS) to compare the whole catalog",
        });
      }
      places.set(
        channel.name,
        stores.map((tienda_id) => ({ tienda_id, place: channel.place?.(tienda_id) ?? "*" })),
      );
    }
    await jobs.plan(id, [], unresolved);
    const stores = [...new Set([...places.values()].flat().map((p) => p.tienda_id))].sort();
    let read = 0;
    const lost = this.#lost.get(id) ?? (() => false);
    for await (const page of catalog.pages(stores, signal)) {
      if (signal.aborted) throw new ShuttingDown();
      if (lost()) throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
      await jobs.addSource(
        id,
        page.map((r) => ({
          tienda_id: r.tiendaId,
          sku: r.sku,
          producto_id: r.productoId,
          quantity: "quantity" in r ? r.quantity : null,
          unknown: "unknown" in r ? r.unknown : null,
        })),
      );
      read += page.length;
    }
    log.info("resync {id}: {count} POS products at {stores} stores read", {
      id,
      count: read,
      stores: stores.length,
    });
    let seq = 0;
    for (const [index, channel] of channels.entries()) {
      let listings = 0;
      for await (const page of channel.catalog!.listings(signal)) {
        if (signal.aborted) throw new ShuttingDown();
        if (lost()) throw new JobLostError(`resync ${id} is no longer run here (cancelled or taken over)`);
        await jobs.addListings(id, channel.name, page);
        listings += page.length;
      }
      log.info("resync {id}: {count} {channel} listings read", {
        id,
        count: listings,
        channel: channel.name,
      });
      seq = await jobs.planChannel(
        id,
        channel.name,
        places.get(channel.name)!,
        seq,
        (index + 1) * 100_000_000,
      );
    }
    log.info("resync {id} started: {total} listing checks over the whole catalog ({mode})", {
      id,
      total: seq,
      mode: request.dry_run ? "dry run" : "write",
    });
  }

  /**
   * A line from a catalog-wide job's snapshots, with the ledger's changes not applied yet; undefined
   * when the snapshot cannot tell (stores sharing a place with a stock rule: the snapshot has their sum,
   * the rule wants each one's stock), and the listing is checked on its own.
   */
  async #snapshotLine(
    step: ResyncStep,
    channel: ChannelStock,
    dryRun: boolean,
  ): Promise<DriftLine | undefined> {
    const rules = this.#rules(channel, step.stores, step.sku);
    if (rules && step.stores.length > 1) return undefined;
    const flight = channel.deltas && !rules
      ? await this.#flight(channel.name, step.stores, step.sku)
      : undefined;
    const { target, inFlight, rule } = this.#expected(
      step.stores,
      { quantity: step.source_qty!, each: [step.source_qty!] },
      rules,
      flight,
    );
    const shown = step.marketplace_qty!;
    return {
      sku: step.sku,
      tienda_id: step.stores.join(","),
      channel: channel.name,
      source_qty: step.source_qty!,
      in_flight: inFlight,
      marketplace_qty: shown,
      target,
      difference: target - shown,
      action: shown === target ? "none" : dryRun ? "would_set" : "set",
      rule,
    };
  }

  /** The stock rule of each of a listing's stores, or undefined when none of them has one. */
  #rules(channel: ChannelStock, stores: string[], sku: string): (StockRule | undefined)[] | undefined {
    const rules = stores.map((tiendaId) => resolveRule(this.deps.rules, channel.name, tiendaId, sku));
    return rules.some((r) => r !== undefined) ? rules : undefined;
  }

  /**
   * What a listing should show. With a stock rule: each store's rule applied to its POS stock, summed
   * (nothing in flight counts: a ruled listing's live writes are absolute, computed from the POS at send
   * time, so changes not applied yet will write this same value). Without: the POS sum plus what the
   * ledger will still take off (delta channels), clamped at 0.
   */
  #expected(
    stores: string[],
    source: Source,
    rules: (StockRule | undefined)[] | undefined,
    flight: Flight | undefined,
  ): { target: number; inFlight: number; rule: string | null } {
    if (rules) {
      return {
        target: placeQuantity(stores.map((_, i) => ({ rule: rules[i], quantity: source.each[i] }))),
        inFlight: 0,
        rule: describeRules(stores.map((tiendaId, i) => ({ tiendaId, rule: rules[i] }))),
      };
    }
    const inFlight = flight ? -flight.pending : 0;
    return { target: Math.max(0, source.quantity + inFlight), inFlight, rule: null };
  }

  async #run(id: string, request: ResyncRequest, resumed: boolean): Promise<void> {
    const { metrics } = this.deps;
    const signal = this.#abort.signal;
    const jobs = this.#jobs;
    const mode = request.dry_run ? "dry_run" : "write";
    /** Progress and lines not stored yet: stored (and dropped here) at each heartbeat. */
    let progress: Progress = { done: 0, drift: 0, written: 0, errors: 0 };
    let lines: StoredLine[] = [];
    const beat = async (final?: { state: "done" | "failed"; error?: string }) => {
      const [p, l] = [progress, lines];
      progress = { done: 0, drift: 0, written: 0, errors: 0 };
      lines = [];
      try {
        await jobs.beat(id, p, l, final);
      } catch (error) {
        // Not stored: kept for the next heartbeat (a lost job stops at once, below).
        for (const k of Object.keys(p) as (keyof Progress)[]) progress[k] += p[k];
        lines.unshift(...l);
        throw error;
      }
    };
    // The heartbeat also beats while the job works on something long (a catalog read, waits for
    // live sales), so no other replica takes over a job that is alive; a job lost is noticed here.
    let lost = false;
    const keepAlive = setInterval(() => {
      jobs.touch(id).then((ours) => lost ||= !ours, () => {});
    }, KEEP_ALIVE_MS);
    this.#lost.set(id, () => lost);
    try {
      if (!resumed || !await jobs.planned(id)) {
        const wanted = request.channels ?? KNOWN_CHANNELS;
        const catalog = this.deps.catalog;
        const whole = request.all && catalog &&
          this.deps.channels.filter((c) => wanted.includes(c.name)).every((c) => c.catalog);
        if (whole) {
          await this.#planCatalog(id, request, catalog);
          await jobs.planComplete(id);
        } else {
          const { steps, unresolved } = await this.#plan(request);
          await jobs.plan(id, steps, unresolved);
          await jobs.planComplete(id);
          log.info("resync {id} started: {total} listing checks ({mode})", {
            id,
            total: steps.length,
            mode: request.dry_run ? "dry run" : "write",
          });
        }
      }
      let lastBeat = 0; // the first listing's line is stored at once: progress shows from the start
      const channels = new Map(this.deps.channels.map((c) => [c.name as string, c]));
      /** Counts a listing's line and keeps it for the next heartbeat. */
      const tally = (step: ResyncStep, line: DriftLine | Unresolved) => {
        progress.done++;
        if ("reason" in line) {
          lines.push({ seq: step.seq, kind: "unresolved", line });
          return;
        }
        lines.push({ seq: step.seq, kind: "drift", line });
        if (line.difference !== 0) {
          progress.drift++;
          metrics.resyncDrift.inc({ channel: line.channel });
          log.warning(
            "drift on {channel} {sku} at {tienda_id}: POS {source} → should show {expected}, shows {shown}",
            {
              channel: line.channel,
              sku: line.sku,
              tienda_id: line.tienda_id,
              source: line.source_qty,
              expected: line.target,
              shown: line.marketplace_qty,
              resync_id: id,
              action: line.action,
            },
          );
        }
        if (line.outcome === "written") progress.written++;
        if (line.outcome === "error") progress.errors++;
      };
      /**
       * Drifted listings of a batching channel, gathered across pages and written a full call at a
       * time (their steps stay to do until their lines are stored: a resume checks them again).
       */
      const batches = new Map<ChannelStock, ResyncStep[]>();
      const flush = async (channel: ChannelStock, all: boolean) => {
        const size = Math.max(1, channel.maxPerCall ?? 1);
        const drifted = batches.get(channel) ?? [];
        while (drifted.length >= size || (all && drifted.length)) {
          if (signal.aborted) throw new ShuttingDown();
          await jobs.stillOurs(id);
          await this.deps.liveIdle(channel.name, signal);
          const chunk = drifted.splice(0, size);
          const checked = await this.#writeChunk(id, channel, chunk, signal);
          // Writes already made are in the ledger; their steps are checked again on resume (as "none").
          if (signal.aborted) throw new ShuttingDown();
          for (const [step, line] of checked) tally(step, line);
        }
      };
      let after = -1;
      for (;;) {
        const steps = await jobs.nextSteps(id, after, 200);
        if (!steps.length) break;
        after = steps[steps.length - 1].seq;
        for (const step of steps) {
          if (signal.aborted) throw new ShuttingDown();
          // An operator's cancel (or another replica's take-over) stops the job before its next listing.
          await jobs.stillOurs(id);
          const channel = channels.get(step.channel);
          let line: DriftLine | Unresolved;
          if (!channel) {
            line = {
              sku: step.sku,
              tienda_id: step.stores.join(","),
              channel: step.channel,
              reason: "channel_not_dispatched",
              error: `${step.channel} is not dispatched by the instance that resumed this job`,
            };
          } else {
            await this.deps.liveIdle(channel.name, signal);
            // A catalog-wide job compares its snapshots; it reads the marketplace again (and
            // compares-and-sets) only for a listing that drifted, and only to write it.
            const snapshot = step.marketplace_qty != null && step.source_qty != null
              ? await this.#snapshotLine(step, channel, request.dry_run)
              : undefined;
            if (snapshot?.action === "set" && step.ref != null && channel.readMany && channel.writeMany) {
              batches.set(channel, [...batches.get(channel) ?? [], step]);
              await flush(channel, false);
              continue;
            }
            line = snapshot && snapshot.action !== "set"
              ? snapshot
              : await this.#check(id, channel, step.sku, step.stores, request.dry_run, signal);
          }
          // A line finished after the shutdown began may rest on an aborted read: the step stays to do.
          if (signal.aborted) throw new ShuttingDown();
          tally(step, line);
          if (Date.now() - lastBeat > HEARTBEAT_MS) {
            lastBeat = Date.now();
            await beat();
          }
        }
        // The page's lines are stored (and its steps marked done) before the next page is read.
        await beat();
      }
      for (const channel of batches.keys()) await flush(channel, true);
      await beat();
      await beat({ state: "done" });
      metrics.resyncRuns.inc({ mode, state: "done" });
      const [job] = [await jobs.get(id)];
      log.info("resync {id} done: {done} checked, {drift} with drift, {written} written, {errors} errors", {
        id,
        done: job?.done,
        drift: job?.drift_found,
        written: job?.written,
        errors: job?.errors,
        mark: "done",
      });
    } catch (error) {
      if (error instanceof ShuttingDown || (signal.aborted && !(error instanceof JobLostError))) {
        // Progress so far is kept; the job stays running and is resumed (close() releases it).
        await beat().catch(() => {});
        log.info("resync {id} paused: the service is shutting down; it resumes on the next replica to look", {
          id,
          mark: "shutdown",
        });
        return;
      }
      if (error instanceof JobLostError) {
        await jobs.settleCancelled(id, progress, lines).catch(() => {});
        log.warning("resync {id} stopped here: {error}", { id, error: error.message });
        metrics.resyncRuns.inc({ mode, state: "cancelled" });
        return;
      }
      progress.errors++;
      await beat({ state: "failed", error: (error as Error).message }).catch(() => {});
      metrics.resyncRuns.inc({ mode, state: "failed" });
      log.error("resync {id} failed: {error}", { id, error: (error as Error).message, mark: "error" });
    } finally {
      clearInterval(keepAlive);
      this.#lost.delete(id);
    }
  }

  /**
   * Writes drifted listings of a batching channel (Shopify: up to 250 per call), re-checked
   * first as {@link #check} does one listing — the POS, then the marketplace (one read for the
   * chunk), then the ledger, then the POS again — and set with one compare-and-set call. A
   * listing the chunk cannot settle (the POS moved, a stale or refused set, an unheard answer)
   * goes through {@link #check} on its own, which reads and computes it again.
   */
  async #writeChunk(
    id: string,
    channel: ChannelStock,
    steps: ResyncStep[],
    signal: AbortSignal,
  ): Promise<[ResyncStep, DriftLine | Unresolved][]> {
    const done: [ResyncStep, DriftLine | Unresolved][] = [];
    const alone: ResyncStep[] = [];
    const entries: {
      step: ResyncStep;
      ids: Map<string, string | null>;
      source: Source;
      rules: (StockRule | undefined)[] | undefined;
    }[] = [];
    for (const step of steps) {
      const ids = new Map<string, string | null>();
      for (const store of step.stores) ids.set(store, await this.#productoId(store, step.sku));
      const source = await this.#source(step.stores, ids, step.sku);
      if ("reason" in source) alone.push(step);
      else entries.push({ step, ids, source, rules: this.#rules(channel, step.stores, step.sku) });
    }
    const reads = entries.length ? await channel.readMany!(entries.map((e) => e.step.ref), signal) : [];
    const flights = await Promise.all(
      entries.map((e) => this.#flight(channel.name, e.step.stores, e.step.sku)),
    );
    if (flights.some((f) => f.recent)) await new Promise((r) => setTimeout(r, SETTLE_MS));
    const sets: { entry: (typeof entries)[number]; read: number; line: DriftLine }[] = [];
    for (const [i, entry] of entries.entries()) {
      const read = reads[i];
      const flight = channel.deltas && !entry.rules
        ? await this.#flight(channel.name, entry.step.stores, entry.step.sku)
        : undefined;
      const again = await this.#source(entry.step.stores, entry.ids, entry.step.sku);
      if (!read?.ok || "reason" in again || !sameSource(again, entry.source)) {
        alone.push(entry.step);
        continue;
      }
      const { target, inFlight, rule } = this.#expected(entry.step.stores, entry.source, entry.rules, flight);
      const line: DriftLine = {
        sku: entry.step.sku,
        tienda_id: entry.step.stores.join(","),
        channel: channel.name,
        source_qty: entry.source.quantity,
        in_flight: inFlight,
        marketplace_qty: read.quantity,
        target,
        difference: target - read.quantity,
        action: read.quantity === target ? "none" : "set",
        rule,
      };
      if (line.action === "none") done.push([entry.step, line]);
      else if (flight && flight.sending > 0) {
        done.push([entry.step, {
          ...line,
          action: "skip",
          outcome: "skipped",
          error: "a batch for this listing is in flight; run again",
        }]);
      } else sets.push({ entry, read: read.quantity, line });
    }
    for (const set of sets) await this.deps.hooks?.beforeWrite?.(set.line);
    if (sets.length) {
      const { outcomes } = await channel.writeMany!(
        sets.map((s) => ({ ref: s.entry.step.ref, from: s.read, to: s.line.target })),
        `gid://marketplace-sync/Resync/${id}`,
        signal,
      );
      for (const [i, set] of sets.entries()) {
        const outcome = outcomes[i];
        const { step } = set.entry;
        /** The write in the audit trail, as every resync write is. */
        const record = (to: number, failure: { reason: string; error: string } | null) =>
          this.#record(
            id,
            channel.name,
            step.stores.join(","),
            step.sku,
            set.entry.ids.get(step.stores[0]) ?? null,
            set.read,
            to,
            failure,
          );
        if (outcome?.kind === "written" && set.entry.rules && await this.#moved(set.entry, step)) {
          // A ruled value from a POS reading a sale made stale meanwhile (see #check): set it again.
          alone.push(step);
        } else if (outcome?.kind === "written") {
          await record(outcome.quantityAfter, null);
          done.push([step, { ...set.line, outcome: "written" }]);
        } else if (outcome?.kind === "error" && !outcome.uncertain) {
          await record(set.line.target, outcome);
          done.push([step, { ...set.line, outcome: "error", error: `${outcome.reason}: ${outcome.error}` }]);
        } else {
          // Unheard, it may have landed: the ledger says so before the listing is looked at again, so a
          // replay never re-opens a sale batch beneath a resync value that already counts the sale.
          if (outcome?.kind === "error") await record(set.line.target, null);
          alone.push(step);
        }
      }
    }
    for (const step of alone) {
      done.push([step, await this.#check(id, channel, step.sku, step.stores, false, signal)]);
    }
    return done;
  }

  /** Compares (and maybe sets) one SKU at one store on one channel. */
  async #check(
    id: string,
    channel: ChannelStock,
    sku: string,
    stores: string[],
    dryRun: boolean,
    signal: AbortSignal,
  ): Promise<DriftLine | Unresolved> {
    const tiendaId = stores[0]; // the place (location) all of `stores` share
    const label = stores.join(",");
    const base = { sku, tienda_id: label, channel: channel.name };
    const productoIds = new Map<string, string | null>();
    for (const store of stores) productoIds.set(store, await this.#productoId(store, sku));
    const productoId = productoIds.get(tiendaId) ?? null;
    const rules = this.#rules(channel, stores, sku);
    // A ruled listing is written absolutely by the live channel too: the ledger's deltas do not count.
    const deltaChannel = channel.deltas && !rules;
    let line: DriftLine | undefined;
    for (let attempt = 1; attempt <= CAS_TRIES; attempt++) {
      // The POS, then the marketplace, then the ledger, then the POS again.
      const source = await this.#source(stores, productoIds, sku);
      if ("reason" in source) return { ...base, ...source };
      await this.deps.hooks?.afterSource?.(base);
      const read = await channel.read(sku, tiendaId, signal);
      if (!read.ok) return { ...base, reason: read.reason, error: read.error };
      // The ledger after the marketplace: a batch applied before our read is applied here too,
      // and one applied after it fails the compare-and-set. A sale already in the POS may not
      // be in custody yet (published a moment ago): on a busy listing, give it time to arrive.
      const before = deltaChannel ? await this.#flight(channel.name, stores, sku) : undefined;
      if (before?.recent) await new Promise((r) => setTimeout(r, SETTLE_MS));
      const flight = deltaChannel ? await this.#flight(channel.name, stores, sku) : undefined;
      // The POS again: a sale reserved while we read would be in the ledger but not in our POS value.
      const again = await this.#source(stores, productoIds, sku);
      if ("reason" in again) return { ...base, ...again };
      if (!sameSource(again, source)) continue;

      // Delta channels (Shopify, MeLi delta mode) still receive changes not applied yet, so
      // until they land the marketplace should show the POS value plus what they will take off;
      // a stock rule makes it the rule's value of the POS stock.
      const { target, inFlight, rule } = this.#expected(stores, source, rules, flight);
      line = {
        ...base,
        source_qty: source.quantity,
        in_flight: inFlight,
        marketplace_qty: read.quantity,
        target,
        difference: target - read.quantity,
        action: read.quantity === target ? "none" : dryRun ? "would_set" : "set",
        rule,
      };
      if (line.action !== "set") return line;
      await this.deps.hooks?.beforeWrite?.(line);
      if (flight && flight.sending > 0) {
        // A batch in flight may or may not be in the marketplace's number yet: do not guess.
        return {
          ...line,
          action: "skip",
          outcome: "skipped",
          error: "a batch for this listing is in flight; run again",
        };
      }
      // A channel without compare-and-set asks for the value again under its listing lock, where
      // the live channel reads the POS too: mirror mode sets the POS value of that moment; delta
      // mode writes only if no sale moved the POS or the ledger since (undefined: look again).
      const retarget = async (): Promise<number | undefined> => {
        const now = await this.#source(stores, productoIds, sku);
        if ("reason" in now) return undefined;
        if (!flight) return this.#expected(stores, now, rules, undefined).target;
        const f = await this.#flight(channel.name, stores, sku);
        return now.quantity === source.quantity && sameFlight(f, flight) ? target : undefined;
      };
      const written = await channel.write(
        read,
        target,
        `gid://marketplace-sync/Resync/${id}`,
        signal,
        retarget,
      );
      // The marketplace (or the source) moved between our reads and our write: the whole
      // line is recomputed, never the old target written again.
      if (written.kind === "stale") continue;
      // A ruled value is absolute and compare-and-set is by value: a sale reserved after our last POS
      // read, whose own batch found the listing already at its new target (nothing to send), cannot
      // stop this older value from landing. The POS once more: moved, the line is computed again.
      if (written.kind === "written" && rules && channel.deltas) {
        const now = await this.#source(stores, productoIds, sku);
        if (!("reason" in now) && !sameSource(now, source)) continue;
      }
      const failure = written.kind === "error" ? written : null;
      const sent = written.kind === "written" ? written.quantityAfter : target;
      await this.#record(id, channel.name, label, sku, productoId, read.quantity, sent, failure);
      return failure
        ? { ...line, outcome: "error", error: `${failure.reason}: ${failure.error}` }
        : { ...line, outcome: "written" };
    }
    const error = `the stock kept changing (${CAS_TRIES} tries); run again`;
    return line ? { ...line, outcome: "error", error } : { ...base, reason: "stock_kept_changing", error };
  }

  /** Whether the POS stock of a chunk entry's stores moved since the entry read it. */
  async #moved(
    entry: { step: ResyncStep; ids: Map<string, string | null>; source: Source },
    step: ResyncStep,
  ) {
    const now = await this.#source(step.stores, entry.ids, step.sku);
    return !("reason" in now) && !sameSource(now, entry.source);
  }

  /** The store's producto_id, which the POS's Redis key wants. */
  async #productoId(tiendaId: string, sku: string): Promise<string | null> {
    // The ledger's sales at this store, the POS catalog, then a sale of the SKU at another
    // store (ids are usually shared).
    const [known] = await this.deps.sql<{ producto_id: string; same_store: boolean }[]>`
      select producto_id, tienda_id = ${tiendaId} as same_store from stock_change
       where sku = ${sku} and producto_id is not null
       order by (tienda_id = ${tiendaId}) desc, id desc limit 1`;
    return known?.same_store
      ? known.producto_id
      : await this.deps.stock.productoId(tiendaId, sku) ?? known?.producto_id ?? null;
  }

  /** The POS value of the stores (summed: they share one marketplace quantity), or why there is none. */
  async #source(
    stores: string[],
    productoIds: Map<string, string | null>,
    sku: string,
  ): Promise<Source | { reason: string; error: string }> {
    let quantity = 0;
    const each: number[] = [];
    for (const tiendaId of stores) {
      try {
        const source = await this.deps.stock.read({
          tiendaId,
          productoId: productoIds.get(tiendaId) ?? null,
          sku,
        });
        if (!source.found) return { reason: "stock_unknown", error: source.reason };
        quantity += source.quantity;
        each.push(source.quantity);
      } catch (error) {
        if (!(error instanceof StockSourceUnavailableError)) throw error;
        return { reason: "stock_source_unavailable", error: error.message };
      }
    }
    return { quantity, each };
  }

  /** The listing's changes not applied yet (at any of the stores), and counts that move when a sale lands. */
  async #flight(channel: string, stores: string[], sku: string): Promise<Flight> {
    const [flight] = await this.deps.sql<Flight[]>`
      select coalesce(sum(delta) filter (where status = 'pending'), 0)::int as pending,
             count(*) filter (where status = 'pending')::int as pending_n,
             count(*) filter (where status = 'sending')::int as sending,
             count(*) filter (where status = 'applied')::int as applied,
             coalesce(bool_or(created_at > now() - interval '1 minute'), false) as recent
        from stock_change
       where channel = ${channel} and tienda_id = any(${stores}) and sku = ${sku}`;
    return flight;
  }

  /** A resync write is a stock change like any other in the audit trail. */
  async #record(
    id: string,
    channel: string,
    tiendaId: string,
    sku: string,
    productoId: string | null,
    from: number,
    to: number,
    failure: { reason: string; error: string } | null,
  ): Promise<void> {
    const eventId = `resync:${id}:${tiendaId}`;
    await this.deps.sql.begin(async (tx) => {
      await tx`
        insert into sale (event_id, identity_source, tienda_id, body)
        values (${eventId}, 'resync', ${tiendaId}, ${tx.json({ resync_id: id, tienda_id: tiendaId })})
        on conflict (event_id) do nothing`;
      // One row per (job, store, channel, SKU), however often its step runs (a job taken over runs its step
      // again). Under the job's sale row lock, so two runs cannot both find none; found by SKU, as the
      // step's in-flight check reads it (a resync's sale row does not list its changes: they come one by one).
      await tx`select 1 from sale where event_id = ${eventId} for update`;
      const [written] = await tx`
        select 1 from stock_change where sku = ${sku} and channel = ${channel} and event_id = ${eventId}`;
      if (written) return;
      await tx`
        insert into stock_change (event_id, channel, tienda_id, sku, producto_id, delta, status, attempts,
                                  result, error, error_reason, applied_at)
        values (${eventId}, ${channel}, ${tiendaId}, ${sku}, ${productoId}, ${to - from},
                ${failure ? "failed" : "applied"}, 1,
                ${
        tx.json({ quantity_after: failure ? null : to, detail: { resync_id: id, from, sent: to } })
      },
                ${failure?.error ?? null}, ${failure?.reason ?? null}, ${failure ? null : tx`now()`})`;
    });
  }
}

/** Whether two readings of the same stores' POS stock agree store by store. */
function sameSource(a: Source, b: Source): boolean {
  return a.quantity === b.quantity && a.each.every((q, i) => q === b.each[i]);
}
