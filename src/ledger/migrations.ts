/**
 * Versioned ledger migrations. Kept as TypeScript strings (not .sql files) so
 * the compiled binary and the bundle carry them without read permissions.
 * Append only: never edit a migration that has shipped.
 */

/** One schema change, applied once, in order. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** All migrations, oldest first. Run with `search_path` set to the ledger schema. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "custody ledger",
    sql: `
      -- One row per sale event taken into custody; event_id is the identity rule's result.
      create table sale (
        event_id        text primary key,
        identity_source text not null,
        tienda_id       text not null,
        received_at     timestamptz not null default now(),
        body            jsonb not null
      );

      -- What each channel must do for each sale: one row per (event, channel, sku).
      -- pending -> sending (in a batch) -> applied | failed; failed rows are re-armed
      -- (back to pending) when the same event is received again (DLQ replay).
      create table stock_change (
        id              bigint generated always as identity primary key,
        event_id        text not null references sale(event_id),
        channel         text not null,
        tienda_id       text not null,
        sku             text not null,
        producto_id     text,
        delta           integer not null,
        status          text not null default 'pending'
                        check (status in ('pending', 'sending', 'applied', 'failed')),
        attempts        integer not null default 0,
        next_attempt_at timestamptz not null default now(),
        batch_id        bigint,
        result          jsonb,
        error           text,
        error_reason    text,
        created_at      timestamptz not null default now(),
        updated_at      timestamptz not null default now(),
        applied_at      timestamptz,
        unique (event_id, channel, sku)
      );
      -- The dispatcher's claim query: pending work per channel, due first.
      create index stock_change_due on stock_change (channel, next_attempt_at)
        where status = 'pending';
      create index stock_change_status on stock_change (channel, status);

      -- A batch is persisted with its idempotency key BEFORE it is sent, so a crash
      -- and re-send reuses the key and the marketplace applies it once.
      create table sync_batch (
        id              bigint generated always as identity primary key,
        channel         text not null,
        idempotency_key text not null unique,
        payload         jsonb not null,
        status          text not null default 'sending'
                        check (status in ('sending', 'done', 'failed', 'superseded')),
        attempts        integer not null default 0,
        lease_until     timestamptz,
        created_at      timestamptz not null default now(),
        sent_at         timestamptz,
        finished_at     timestamptz,
        response        jsonb
      );
      create index sync_batch_open on sync_batch (channel, lease_until) where status = 'sending';
      alter table stock_change add constraint stock_change_batch
        foreign key (batch_id) references sync_batch(id);
    `,
  },
  {
    version: 2,
    name: "dispatcher: listings, batch requests",
    sql: `
      -- The exact request a batch sends, persisted before the first send so a
      -- re-send after a crash repeats it byte for byte under the same key.
      alter table sync_batch add column request jsonb;
      alter table sync_batch add column channel_attempts integer not null default 0;
      alter table sync_batch add column error text;

      -- SKU -> marketplace listing resolutions (Shopify InventoryItem, MeLi item/variation).
      create table listing (
        channel      text not null,
        sku          text not null,
        external_id  text not null,
        variant_id   text,
        data         jsonb not null default '{}',
        resolved_at  timestamptz not null default now(),
        primary key (channel, sku)
      );
    `,
  },
  {
    version: 3,
    name: "lighter custody writes",
    sql: `
      -- Custody writes a sale and its changes in one transaction, so the foreign
      -- key only re-checked what that transaction guarantees; it cost ~20 % of
      -- Postgres time per custody batch (docs/BENCHMARKS.md).
      alter table stock_change drop constraint stock_change_event_id_fkey;
      -- Status counts only need the rows that are not applied yet (applied rows
      -- are the overwhelming majority and are counted by a metric instead).
      drop index stock_change_status;
      create index stock_change_open on stock_change (channel, status) where status <> 'applied';
    `,
  },
  {
    version: 4,
    name: "batch lease owner",
    sql: `
      -- A fencing token: each claim of a batch gets a new owner, and every later
      -- write checks it, so a replica whose lease expired cannot record, release
      -- or re-send a batch another replica has taken over.
      alter table sync_batch add column owner uuid;
    `,
  },
  {
    version: 5,
    name: "marketplace OAuth tokens",
    sql: `
      -- MercadoLibre refresh tokens are single-use: the pair a refresh returns is
      -- written here (encrypted) before it is used, so a restart or another
      -- replica continues the chain instead of replaying a spent token.
      create table oauth_token (
        channel          text primary key,
        access_token     text not null,
        refresh_token    text not null,
        expires_at       timestamptz not null,
        -- Fingerprint of the configured refresh token this chain started from: a
        -- different one in the environment means the seller authorized again.
        seed_fingerprint text not null,
        -- Seeds this chain already replaced: an instance still configured with one of
        -- them keeps using the stored chain instead of replaying a spent token.
        retired_seeds    text[] not null default '{}',
        status           text not null default 'ok' check (status in ('ok', 'invalid_grant')),
        error            text,
        user_id          text,
        refreshed_at     timestamptz not null default now()
      );
    `,
  },
  {
    version: 6,
    name: "operator surface: resync jobs, audit queries",
    sql: `
      -- Resync jobs, visible from every replica (GET /resync/{id} may hit another
      -- one). One running job per scope: a second POST for it answers 409.
      create table resync_job (
        id          uuid primary key,
        scope_key   text not null,
        request     jsonb not null,
        dry_run     boolean not null,
        state       text not null default 'running' check (state in ('running', 'done', 'failed')),
        total       integer not null default 0,
        done        integer not null default 0,
        drift_found integer not null default 0,
        written     integer not null default 0,
        errors      integer not null default 0,
        report      jsonb not null default '[]',
        unresolved  jsonb not null default '[]',
        error       text,
        owner       text not null,
        started_at  timestamptz not null default now(),
        heartbeat_at timestamptz not null default now(),
        finished_at timestamptz
      );
      create unique index resync_job_running on resync_job (scope_key) where state = 'running';
      -- Applied changes per minute (status page sparkline) without scanning history.
      create index stock_change_applied_at on stock_change (applied_at) where status = 'applied';
      -- The audit trail pages newest first.
      create index stock_change_sku on stock_change (sku, id);
    `,
  },
  {
    version: 7,
    name: "lighter custody writes: pending changes in one partial index",
    sql: `
      -- Every new change is pending, and pending changes are already in
      -- stock_change_due: indexing them a second time here cost about a tenth of
      -- Postgres's time per custody batch (docs/BENCHMARKS.md). Backlog counts
      -- read pending from stock_change_due and the rest from this one.
      drop index stock_change_open;
      create index stock_change_open on stock_change (channel, status) where status in ('sending', 'failed');
    `,
  },
  {
    version: 8,
    name: "resync jobs that resume, cancel and stream their report",
    sql: `
      -- A job's plan: one step per listing check, done in order. A replica that takes
      -- over a job whose heartbeat stopped goes on from the first step not done.
      create table resync_step (
        job_id  uuid not null references resync_job (id) on delete cascade,
        seq     integer not null,
        channel text not null,
        sku     text not null,
        stores  text[] not null,
        done    boolean not null default false,
        primary key (job_id, seq)
      );
      create index resync_step_todo on resync_step (job_id, seq) where not done;
      -- The report, a row per line: appended as the job goes, read page by page, never
      -- rewritten whole (a jsonb array grows by a full copy at every append).
      create table resync_line (
        job_id uuid not null references resync_job (id) on delete cascade,
        seq    integer not null,
        kind   text not null check (kind in ('drift', 'unresolved')),
        line   jsonb not null,
        primary key (job_id, kind, seq)
      );
      alter table resync_job drop constraint resync_job_state_check;
      alter table resync_job add constraint resync_job_state_check
        check (state in ('running', 'done', 'failed', 'cancelled'));
      -- Takes over: how many times another run of the service resumed the job.
      alter table resync_job add column resumed integer not null default 0;
      alter table resync_job add column resumed_at timestamptz;
      alter table resync_job add column done_at_resume integer not null default 0;
    `,
  },
  {
    version: 9,
    name: "whole-catalog resync: snapshots of the POS catalog and the marketplaces' listings",
    sql: `
      -- What a catalog-wide job read, page by page, before it compares: the POS's
      -- products at the mapped stores and every listing of each channel. Compared in
      -- SQL, so no replica ever holds a whole catalog in memory.
      create table resync_source (
        job_id      uuid not null references resync_job (id) on delete cascade,
        tienda_id   text not null,
        sku         text not null,
        producto_id text,
        quantity    integer,
        unknown     jsonb,
        primary key (job_id, tienda_id, sku)
      );
      -- No key: one SKU on two listings is a finding (ambiguous), not a conflict.
      create table resync_listing (
        job_id     uuid not null references resync_job (id) on delete cascade,
        channel    text not null,
        place      text not null,
        sku        text not null,
        quantity   integer not null,
        ref        jsonb,
        unwritable jsonb
      );
      create index resync_listing_sku on resync_listing (job_id, channel, sku);
      -- A step planned from the snapshots carries what they said: a dry run compares
      -- without calling the marketplace again; a write re-reads only listings with drift.
      alter table resync_step add column source_qty integer;
      alter table resync_step add column marketplace_qty integer;
    `,
  },
  {
    version: 10,
    name: "whole-catalog resync: batched writes address listings; plans marked complete",
    sql: `
      -- The listing's address from the catalog read: drifted listings are re-read and set
      -- in batches by it, not looked up by SKU one at a time.
      alter table resync_step add column if not exists ref jsonb;
      -- Set once the whole plan is stored: a job taken over before that is planned again.
      alter table resync_job add column if not exists planned_at timestamptz;
    `,
  },
  {
    version: 11,
    name: "DLQ copies due: an outbox for the copies of changes that failed for good",
    sql: `
      -- Online: the column takes an ACCESS EXCLUSIVE lock for an instant (a constant
      -- default is stored in the catalog, no table rewrite on PG >= 11). Waiting for it
      -- behind a long transaction would stall every query queued behind us: give up
      -- after 5 s instead, and the start-up retries the migration with backoff.
      set local lock_timeout = '5s';
      -- Set with status = 'failed' in the same transaction, cleared once the sale's DLQ
      -- copy is confirmed: a process killed in between leaves it set, and the next
      -- sweep publishes the copy. Rows already failed keep false: nothing is re-copied.
      alter table stock_change add column dead_letter_due boolean not null default false;
      -- The sweep's index. Built here only while the table is small (it scans the
      -- whole table under the lock taken above, and within statement_timeout); a
      -- larger table gets it built concurrently after this transaction
      -- (ONLINE_INDEXES below).
      do $$
      begin
        if (select count(*) from (select 1 from stock_change limit 100000) s) < 100000 then
          create index stock_change_dead_letter_due on stock_change (channel, updated_at)
            where dead_letter_due;
        end if;
      end
      $$;
    `,
  },
  {
    version: 12,
    name: "marketplace orders: inbound custody, effects applied once, the POS outbox, catch-up watermarks",
    sql: `
      -- An order a marketplace sold (issue #14), applied once: its units left the other channels
      -- through a sale row 'order:<origin>:<order_id>' and its stock changes.
      create table marketplace_order (
        origin      text not null,
        order_id    text not null,
        tienda_id   text not null,
        occurred_at timestamptz,
        via         text not null,
        applied_at  timestamptz not null default now(),
        primary key (origin, order_id)
      );
      -- Per line what it sold and what was put back since: a restock puts back at most
      -- sold - restocked, so a cancellation and a refund of the same line restock once.
      -- recorded: the POS has recorded the order (its sales.created with origen), so its
      -- units are in the POS's own number and leave "available stock" through it.
      create table marketplace_order_line (
        origin    text not null,
        order_id  text not null,
        line_id   text not null,
        tienda_id text not null,
        sku       text not null,
        sold      integer not null check (sold > 0),
        restocked integer not null default 0,
        recorded  boolean not null default false,
        primary key (origin, order_id, line_id),
        foreign key (origin, order_id) references marketplace_order (origin, order_id),
        check (restocked between 0 and sold)
      );
      -- Available stock subtracts the units of orders the POS has not recorded.
      create index marketplace_order_line_unrecorded on marketplace_order_line (tienda_id, sku)
        where not recorded and restocked < sold;
      -- Each restock (a refund, or 'cancel') of an order once.
      create table marketplace_restock (
        origin     text not null,
        order_id   text not null,
        restock_id text not null,
        tienda_id  text not null,
        units      integer not null,
        applied_at timestamptz not null default now(),
        primary key (origin, order_id, restock_id)
      );
      -- The POS said it recorded an order (a sales.created carrying origen): kept even when
      -- the order is not known yet, so an order applied later starts recorded.
      create table marketplace_order_echo (
        origin      text not null,
        order_id    text not null,
        event_id    text not null,
        received_at timestamptz not null default now(),
        primary key (origin, order_id)
      );
      -- Webhooks and notifications, stored before they are answered (custody first, work after).
      create table order_delivery (
        id                bigint generated always as identity primary key,
        channel           text not null,
        delivery_id       text not null,
        topic             text not null,
        body              text not null,
        received_at       timestamptz not null default now(),
        attempts          integer not null default 0,
        settled_at        timestamptz,
        quarantine_reason text,
        quarantine_error  text,
        unique (channel, delivery_id)
      );
      create index order_delivery_open on order_delivery (channel, id) where settled_at is null;
      -- Messages for the POS (marketplace.sales.created / cancelled), written in the transaction
      -- that applies the order and published with confirms afterwards.
      create table pos_outbox (
        id              bigint generated always as identity primary key,
        message_id      text not null unique,
        routing_key     text not null,
        body            jsonb not null,
        created_at      timestamptz not null default now(),
        attempts        integer not null default 0,
        next_attempt_at timestamptz not null default now(),
        lease_until     timestamptz,
        last_error      text,
        published_at    timestamptz
      );
      create index pos_outbox_unpublished on pos_outbox (next_attempt_at) where published_at is null;
      -- How far each channel's catch-up poll has read its marketplace's orders.
      create table order_watermark (
        channel    text primary key,
        since      timestamptz not null,
        updated_at timestamptz not null default now()
      );
    `,
  },
  {
    version: 13,
    name: "marketplace orders: restocks that arrive before their order wait for it",
    sql: `
      -- A restock (a refund, a cancellation) applied before its order was: kept with its lines
      -- until the order's created event applies it, in that event's transaction, and deletes it.
      -- A new table only: online-safe.
      create table marketplace_restock_pending (
        origin      text not null,
        order_id    text not null,
        restock_id  text not null,
        tienda_id   text,
        lines       jsonb not null,
        occurred_at text not null,
        via         text not null,
        received_at timestamptz not null default now(),
        primary key (origin, order_id, restock_id)
      );
    `,
  },
  {
    version: 14,
    name: "lighter custody writes and claims: a change's batch is not a foreign key",
    sql: `
      -- The foreign key checked what the dispatcher's own statements guarantee (a claim sets
      -- batch_id to the batch it inserted in the same transaction; a batch is only ever deleted
      -- in the transaction that found nothing to put in it), and it was paid on every row: a
      -- trigger per change at custody (~7 % of the custody statement, always with a null
      -- batch_id) and a lookup with a row lock on sync_batch per change at every claim, up to
      -- 20 000 per claim (docs/BENCHMARKS.md, issue #15).
      --
      -- Online: dropping a constraint only edits the catalog, but takes an ACCESS EXCLUSIVE lock
      -- on both tables for that instant. While it waits behind a long transaction, every query
      -- on them queues behind it (custody included): give up after 1 s instead, and the
      -- start-up retries the migration with backoff. Replicas of the previous version never
      -- relied on the key: they keep claiming and recording as before.
      set local lock_timeout = '1s';
      alter table stock_change drop constraint if exists stock_change_batch;
      -- Later migrations in this transaction get the connection's own lock_timeout back.
      reset lock_timeout;
    `,
  },
  {
    version: 15,
    name: "a listing's turn: where its last claim left it",
    sql: `
      -- The newest change id each listing's last claim could see. Custody takes a change's id
      -- when its statement runs and commits later, so a claim can take a listing's newer change
      -- while an older one is still in flight; ordered by that older id, the listing came first
      -- again in the next claim and was written twice in one pass (docs/BENCHMARKS.md, issue
      -- #15). A claim now orders a listing by its oldest due change or, when that change is no
      -- newer than what its last claim could see, just after that claim.
      --
      -- A new table only: online-safe. Replicas of the previous version do not keep it; a
      -- listing they claim keeps its older turn, which is the previous order.
      create table listing_turn (
        channel         text not null,
        tienda_id       text not null,
        sku             text not null,
        claimed_through bigint not null,
        primary key (channel, tienda_id, sku)
      ) with (fillfactor = 50);  -- room for HOT updates: each claim rewrites its listings' rows
    `,
  },
  {
    version: 16,
    name: "lighter custody writes and claims: a sale lists its changes",
    sql: `
      -- The widest key of stock_change, its event id (the POS's, often a UUID) with channel and SKU, was paid
      -- three times per change: at custody's insert and at the claim's and the record's row updates (an
      -- update that changes the status writes a new entry in every index). Custody only creates a sale's
      -- changes in the statement that inserts the sale, so the key checked what the sale's own primary key
      -- already guarantees, and its lookups were the rare ones: a replayed sale's changes. A sale now lists
      -- the ids of its changes, and a replay finds them by primary key; sales stored before (null) are found
      -- by SKU and event id, slower, the same rows. Without the key, custody's Postgres time per sale was
      -- ~12 % lower and the stream's WAL per sale ~29 % (docs/BENCHMARKS.md, issue #15).
      --
      -- Replicas of the previous version rely on the key (ON CONFLICT in resync writes and marketplace
      -- orders): it goes here only when none is connected (their connections carry no "[ledger N]" in
      -- application_name; the same test as src/ledger/migrate.ts's contractState), else later, by the
      -- contract step (CONTRACT_STEPS below) once the last one has gone.
      --
      -- Online: adding a nullable column and dropping a constraint only edit the catalog, under an ACCESS
      -- EXCLUSIVE lock held for that instant; give up after 1 s behind a long transaction instead of
      -- queueing every query on the table behind it (the start-up retries the migration with backoff).
      set local lock_timeout = '1s';
      alter table sale add column if not exists change_ids bigint[];
      do $$
      begin
        if not exists (
          select 1 from pg_stat_activity
           where datname = current_database() and pid <> pg_backend_pid()
             and application_name like 'marketplace-sync%'
             and coalesce(substring(application_name from '[[]ledger ([0-9]+)[]]')::int, 0) < 16) then
          alter table stock_change drop constraint if exists stock_change_event_id_channel_sku_key;
        end if;
      end
      $$;
      reset lock_timeout;
    `,
  },
];

/** An index built with CREATE INDEX CONCURRENTLY after the migrations, where a migration could not build it. */
export interface OnlineIndex {
  /** Index name (in the ledger schema). */
  name: string;
  /** The migration that needs it: nothing is built before that one is applied. */
  after: number;
  /** `create index concurrently if not exists <name> on …`. */
  sql: string;
}

/**
 * Indexes on tables too big to index inside the migration transaction (writes wait
 * for a plain CREATE INDEX, and the whole build would have to fit the pool's
 * statement_timeout): built concurrently, never blocking reads or writes.
 */
export const ONLINE_INDEXES: readonly OnlineIndex[] = [
  {
    name: "stock_change_dead_letter_due",
    after: 11,
    sql: `create index concurrently if not exists stock_change_dead_letter_due
            on stock_change (channel, updated_at) where dead_letter_due`,
  },
];

/**
 * The ledger version this code writes, part of its connections' `application_name`
 * (`marketplace-sync [ledger 16]`), so that a replica can tell whether others of an older version are
 * still at work (a rolling deploy).
 */
export const LEDGER_VERSION: number = MIGRATIONS[MIGRATIONS.length - 1].version;

/**
 * What a migration made unnecessary but replicas of the previous version still use: removed once no
 * connection of a version older than `after` is open on the database (a rolling deploy has ended).
 */
export interface ContractStep {
  /** What it removes, for log lines. */
  name: string;
  /** The migration that made it unnecessary. */
  after: number;
  /** The constraint it removes: the step is pending while the table has it. */
  constraint: { table: string; name: string };
  /** Removes it (idempotent; with the ledger schema on the search path). */
  sql: string;
}

/** See {@link ContractStep}. */
export const CONTRACT_STEPS: readonly ContractStep[] = [
  {
    // Migration 16: a sale lists its changes. The previous version's resync writes and order applications
    // name this key in ON CONFLICT, which fails without it.
    name: "the (event_id, channel, sku) key of stock_change",
    after: 16,
    constraint: { table: "stock_change", name: "stock_change_event_id_channel_sku_key" },
    sql: `alter table stock_change drop constraint if exists stock_change_event_id_channel_sku_key`,
  },
];
