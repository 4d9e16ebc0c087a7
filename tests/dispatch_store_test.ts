/**
 * The ledger's dispatch side on its own (src/ledger/dispatch_store.ts), against
 * the real Postgres: claims coalesce a listing's changes under a key persisted
 * before any send and never hand a change to two replicas, a re-send repeats the
 * first request under the same key (never past the key window, never by a
 * replica whose lease was taken over), outcomes land on the changes, and an
 * unsent batch goes back untouched. The dispatcher driving it against the
 * marketplaces is covered in shopify_sync_test.ts and meli_sync_test.ts.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { Custody } from "../src/ledger/custody.ts";
import { type DispatchPolicy, DispatchStore } from "../src/ledger/dispatch_store.ts";
import { migrate } from "../src/ledger/migrate.ts";
import {
  type ClaimedBatch,
  IDEMPOTENCY_SAFE_HOURS,
  KeyWindowPassedError,
  LeaseLostError,
  OUTCOME_UNKNOWN,
} from "../src/model/batch.ts";
import { KNOWN_CHANNELS } from "../src/model/channel_name.ts";
import { decodeSaleEvent } from "../src/model/sale_event.ts";
import { DATABASE_URL, integration, sale, uniqueName, waitFor } from "./helpers.ts";

const STORE = "11111111-1111-4111-8111-111111111111";
const LIMITS = { maxBytes: 1 << 20, maxItems: 100, maxQuantity: 10_000 };
const POLICY: DispatchPolicy = { maxAttempts: 5, leaseMs: 60_000, backoffBaseMs: 1_000, backoffMaxMs: 5_000 };

/** A migrated ledger schema of this test's own, with custody writing sales into it. */
async function freshLedger(policy: DispatchPolicy = POLICY) {
  const schema = uniqueName("msync_store");
  const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await migrate(admin, schema);
  } finally {
    await admin.end();
  }
  // Several connections: parallel claims and a replica holding row locks need their own.
  const sql = postgres(DATABASE_URL, { max: 10, onnotice: () => {}, connection: { search_path: schema } });
  // A fresh client whose very first query binds an array (custody's does) now and then sends it
  // before the driver has learnt the array types ("malformed array literal"); the service's
  // client runs its migration first. So does this one, in effect.
  await sql`select 1`;
  const custody = new Custody(sql, KNOWN_CHANNELS, { batchSize: 500, maxWaitMs: 1 });
  return {
    sql,
    store: new DispatchStore(sql, policy),
    /** Takes sales into custody, in order: one per entry, each a list of [sku, quantity] at `store`. */
    async sell(sales: [string, number][][], store = STORE): Promise<Record<string, unknown>[]> {
      const bodies = sales.map((items) =>
        sale({
          tienda_id: store,
          items: items.map(([sku, cantidad]) => ({ producto_id: `p-${sku}`, producto_sku: sku, cantidad })),
        })
      );
      // One after another, so the ledger holds them in the order given (a batch lists its listings by
      // their oldest change, and custody orders the sales of one transaction by event id).
      for (const body of bodies) {
        const decoded = decodeSaleEvent(new TextEncoder().encode(JSON.stringify(body)), {}, LIMITS);
        if (!decoded.ok) throw new Error(decoded.rejection.message);
        await custody.accept(decoded.event);
      }
      return bodies;
    },
    /** The channel's changes by SKU, with the wait before each is due again (ms). */
    async changes(channel = "shopify") {
      return await sql<
        {
          id: string;
          sku: string;
          status: string;
          attempts: number;
          batch_id: string | null;
          error: string | null;
          error_reason: string | null;
          result: { quantity_after: number | null } | null;
          wait_ms: number;
        }[]
      >`
        select id::text, sku, status, attempts, batch_id::text, error, error_reason, result,
               extract(epoch from next_attempt_at - updated_at)::float8 * 1000 as wait_ms
          from stock_change where channel = ${channel} order by sku, id`;
    },
    async batchRow(id: string) {
      const [row] = await sql<
        {
          idempotency_key: string;
          status: string;
          payload: { sku: string; delta: number; changeIds: string[] }[];
          request: unknown;
          sent_at: Date | null;
          channel_attempts: number;
          lease_ms: number;
        }[]
      >`
        select idempotency_key, status, payload, request, sent_at, channel_attempts,
               extract(epoch from lease_until - now())::float8 * 1000 as lease_ms
          from sync_batch where id = ${id}`;
      return row;
    },
    /** Ends the batch's lease, as if its replica had stopped renewing it. */
    async expireLease(batch: ClaimedBatch) {
      await sql`update sync_batch set lease_until = now() - interval '1 second' where id = ${batch.id}`;
    },
    async close() {
      await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
      await sql.end({ timeout: 2 });
    },
  };
}

integration(
  "a claim coalesces a listing's changes into one with the sum of their deltas, its key stored before any send",
  async () => {
    const ledger = await freshLedger();
    try {
      await ledger.sell([[["A", 2], ["B", 1]], [["A", 3]]]);
      await ledger.sell([[["A", 4]]], "another-store");
      const batch = await ledger.store.claimBatch("shopify", 10);
      assert.ok(batch, "pending changes are claimed");
      assert.deepEqual(
        batch.changes.map((c) => ({ store: c.tiendaId, sku: c.sku, delta: c.delta, n: c.changeIds.length })),
        [
          { store: STORE, sku: "A", delta: -5, n: 2 },
          { store: STORE, sku: "B", delta: -1, n: 1 },
          { store: "another-store", sku: "A", delta: -4, n: 1 },
        ],
        "one logical change per store and SKU, in a stable order",
      );
      assert.ok(batch.changes.every((c) => c.attempts === 1), "claiming counts an attempt");
      // Nothing has been sent, and the key and the changes it carries are already in the ledger.
      const row = await ledger.batchRow(batch.id);
      assert.equal(row.idempotency_key, batch.idempotencyKey);
      assert.equal(row.status, "sending");
      assert.equal(row.sent_at, null);
      assert.equal(row.request, null);
      assert.deepEqual(row.payload.map((c) => [c.sku, c.delta]), batch.changes.map((c) => [c.sku, c.delta]));
      const changes = await ledger.changes();
      assert.ok(changes.every((c) => c.status === "sending" && c.batch_id === batch.id));
      assert.equal(batch.sends, 0);
      assert.equal(batch.resend, false);
      // MercadoLibre's changes of the same sales are its own; Shopify has nothing left.
      assert.equal(await ledger.store.claimBatch("shopify", 10), null);
      assert.equal((await ledger.store.claimBatch("mercadolibre", 10))?.changes.length, 3);
    } finally {
      await ledger.close();
    }
  },
);

integration(
  "a claim that skips the look for due work still claims everything due, and leaves no batch when nothing is",
  async () => {
    // A busy loop claims without the `exists` look first (one statement less per batch under load): the
    // claim itself must then find nothing as cleanly as the look would have, with no batch row left behind.
    const ledger = await freshLedger();
    try {
      await ledger.sell([[["A", 2], ["B", 1]]]);
      const batch = await ledger.store.claimBatch("shopify", 10, { look: false });
      assert.deepEqual(batch?.changes.map((c) => [c.sku, c.delta]), [["A", -2], ["B", -1]]);
      assert.equal(await ledger.store.claimBatch("shopify", 10, { look: false }), null);
      const [{ n }] = await ledger.sql<{ n: number }[]>`select count(*)::int as n from sync_batch`;
      assert.equal(n, 1, "only the batch that carries changes");
    } finally {
      await ledger.close();
    }
  },
);

integration("a claim takes at most maxListings listings, each with all its due changes", async () => {
  const ledger = await freshLedger();
  try {
    // One at a time: the oldest listings go first.
    for (const sku of ["A", "B", "A", "C", "A"]) await ledger.sell([[[sku, 1]]]);
    const first = await ledger.store.claimBatch("shopify", 2);
    assert.deepEqual(first?.changes.map((c) => [c.sku, c.changeIds.length]), [["A", 3], ["B", 1]]);
    const second = await ledger.store.claimBatch("shopify", 2);
    assert.deepEqual(second?.changes.map((c) => [c.sku, c.changeIds.length]), [["C", 1]]);
    assert.notEqual(second?.idempotencyKey, first?.idempotencyKey, "every batch gets its own key");
  } finally {
    await ledger.close();
  }
});

integration("a batch lists its listings oldest first, the order MercadoLibre writes them in", async () => {
  // MercadoLibre writes a batch's listings one at a time at 5 writes/s. A listing claimed for its old sale
  // waited a whole pass already: written after the younger ones claimed with it, it waited up to a batch of
  // writes more (the bench's MeLi bound, issue #15). Store and SKU order put the youngest here first.
  const ledger = await freshLedger();
  try {
    for (const sku of ["ZETA", "MEDIO", "ALFA"]) await ledger.sell([[[sku, 1]]]);
    await ledger.sell([[["ZETA", 1]]], "another-store");
    await ledger.sell([[["MEDIO", 1]]]);
    const batch = await ledger.store.claimBatch("mercadolibre", 10);
    assert.deepEqual(
      batch?.changes.map((c) => [c.tiendaId === STORE ? "store" : "another", c.sku, c.changeIds.length]),
      [["store", "ZETA", 1], ["store", "MEDIO", 2], ["store", "ALFA", 1], ["another", "ZETA", 1]],
      "by each listing's oldest change",
    );
    const row = await ledger.batchRow(batch!.id);
    assert.deepEqual(
      row.payload.map((c) => c.sku),
      ["ZETA", "MEDIO", "ALFA", "ZETA"],
      "stored in that order",
    );
  } finally {
    await ledger.close();
  }
});

integration(
  "a change committed after its listing's claim waits its turn behind the listings that were waiting then",
  async () => {
    // Custody's two writers take their change ids when their statement runs and commit them later, so
    // a claim can see a listing's newer change but not an older one still in flight. Ordered by its id
    // alone, that straggler put its listing first in the next claim: written twice in one pass, every
    // other listing waited one write more (MercadoLibre's bound, missed by up to 7 writes, issue #15).
    const ledger = await freshLedger();
    const committing = Promise.withResolvers<void>();
    const inFlight = Promise.withResolvers<void>();
    try {
      await ledger.sell([[["ALFA", 1]]]);
      // A custody transaction that has written BETA's change (its id taken) and not committed yet.
      const straggler = ledger.sql.begin(async (tx) => {
        // Custody's own statement, run in a transaction this test commits when it chooses.
        const custody = new Custody(tx as unknown as postgres.Sql, KNOWN_CHANNELS, {
          batchSize: 1,
          maxWaitMs: 0,
        });
        const body = sale({
          tienda_id: STORE,
          items: [{ producto_id: "p-BETA", producto_sku: "BETA", cantidad: 1 }],
        });
        const decoded = decodeSaleEvent(new TextEncoder().encode(JSON.stringify(body)), {}, LIMITS);
        if (!decoded.ok) throw new Error(decoded.rejection.message);
        assert.equal(await custody.accept(decoded.event), "stored");
        inFlight.resolve();
        await committing.promise;
      });
      await inFlight.promise;
      await ledger.sell([[["BETA", 1]], [["GAMA", 1]], [["DELTA", 1]]]);

      const turns = { turns: true }; // as MercadoLibre's dispatcher claims (it writes listings one at a time)
      const first = await ledger.store.claimBatch("mercadolibre", 2, turns);
      assert.deepEqual(first?.changes.map((c) => [c.sku, c.changeIds.length]), [["ALFA", 1], ["BETA", 1]]);
      committing.resolve();
      await straggler;

      const second = await ledger.store.claimBatch("mercadolibre", 2, turns);
      assert.deepEqual(
        second?.changes.map((c) => c.sku),
        ["GAMA", "DELTA"],
        "GAMA and DELTA were waiting when BETA was claimed: their turn comes first",
      );
      const third = await ledger.store.claimBatch("mercadolibre", 2, turns);
      assert.deepEqual(third?.changes.map((c) => [c.sku, c.changeIds.length]), [["BETA", 1]], "then BETA's");
      assert.equal(await ledger.store.claimBatch("mercadolibre", 2, turns), null);

      // Shopify writes a batch in one call: its claims keep no turns (a row update per listing for nothing).
      assert.equal((await ledger.store.claimBatch("shopify", 10))?.changes.length, 4);
      const kept = await ledger.sql<{ channel: string; n: number }[]>`
        select channel, count(*)::int as n from listing_turn group by channel`;
      assert.deepEqual(kept.map((r) => [r.channel, r.n]), [["mercadolibre", 4]]);
    } finally {
      committing.resolve();
      await ledger.close();
    }
  },
);

integration(
  "a listing another lane is claiming right now waits its turn: its newer change is not claimed first",
  async () => {
    // MercadoLibre claims in two lanes. While one lane's claim held a listing's changes (locked, not yet
    // committed), the other saw them still pending: the listing looked as old as its oldest change, came
    // first, and its one newer change went out in a batch of its own, ahead of every listing waiting. In
    // a 300 s bench run one listing was written twice so, 3 s apart (docs/BENCHMARKS.md, issue #15).
    const ledger = await freshLedger();
    const turns = { turns: true };
    try {
      await ledger.sell([[["BETA", 1]]]);
      // BETA has a turn from an earlier claim; it is written again below, so the first lane's claim of
      // BETA will wait at its turn's row while this test holds it: that lane is mid-claim, its locks taken.
      assert.deepEqual((await ledger.store.claimBatch("mercadolibre", 1, turns))?.changes.map((c) => c.sku), [
        "BETA",
      ]);
      await ledger.sell([[["BETA", 1]], [["ALFA", 1]], [["GAMA", 1]], [["DELTA", 1]]]);
      const holder = await ledger.sql.reserve();
      let firstLane: Promise<ClaimedBatch | null> | undefined;
      let secondLane: Promise<ClaimedBatch | null> | undefined;
      try {
        await holder`begin`;
        await holder`select 1 from listing_turn where channel = 'mercadolibre' and sku = 'BETA' for update`;
        firstLane = ledger.store.claimBatch("mercadolibre", 2, turns);
        await waitFor(async () => {
          const [{ waiting }] = await ledger.sql<{ waiting: boolean }[]>`
            select exists (select 1 from pg_stat_activity
                            where wait_event_type = 'Lock' and query like '%with horizon as%') as waiting`;
          return waiting;
        }, "the first lane's claim waiting at BETA's turn");
        await ledger.sell([[["BETA", 1]]]); // committed while the first lane's claim is under way
        let secondDone = false;
        secondLane = ledger.store.claimBatch("mercadolibre", 2, turns).finally(() => secondDone = true);
        // The second lane either waits (for the first lane's claim to commit, or at a lock the first holds) or
        // claims at once from what it sees now: either way it has chosen before the first lane goes on.
        await waitFor(async () => {
          if (secondDone) return true;
          const [{ waiting }] = await ledger.sql<{ waiting: number }[]>`
            select count(*)::int as waiting from pg_stat_activity
             where wait_event_type = 'Lock'
               and (query like '%with horizon as%' or query like '%pg_advisory_xact_lock%')`;
          return waiting >= 2;
        }, "the second lane's claim waiting or done");
      } finally {
        await holder`rollback`;
        holder.release();
      }
      assert.deepEqual((await firstLane)?.changes.map((c) => c.sku), ["BETA", "ALFA"]);
      assert.deepEqual(
        (await secondLane)?.changes.map((c) => c.sku),
        ["GAMA", "DELTA"],
        "BETA's newest change waits behind GAMA and DELTA, which were waiting when BETA was claimed",
      );
    } finally {
      await ledger.close();
    }
  },
);

integration(
  "a listing with many due changes is claimed whole, so one write carries them all and it waits a whole pass",
  async () => {
    // MercadoLibre claims 10 listings a batch, and at 1 000 sales/s each has ~80 changes due by its turn. A
    // listing claimed in part stays the oldest and is written again at once: a second request of the rate
    // limit spent on it, and every other listing's turn comes later (the bench's MeLi lag was 1.27 passes).
    const ledger = await freshLedger();
    try {
      await ledger.sell(Array.from({ length: 150 }, () => [["HOT", 1]]));
      await ledger.sell([[["COLD", 1]]]);
      const batch = await ledger.store.claimBatch("mercadolibre", 1);
      assert.deepEqual(batch?.changes.map((c) => [c.sku, c.changeIds.length]), [["HOT", 150]]);
      const next = await ledger.store.claimBatch("mercadolibre", 1);
      assert.deepEqual(
        next?.changes.map((c) => [c.sku, c.changeIds.length]),
        [["COLD", 1]],
        "the next listing's turn",
      );
    } finally {
      await ledger.close();
    }
  },
);

integration("replicas claiming in parallel never hand out the same change", async () => {
  const ledger = await freshLedger();
  try {
    const skus = Array.from({ length: 40 }, (_, i) => `SKU-${i}`);
    // Several changes per listing, so claims compete for the same listings too.
    await ledger.sell(Array.from({ length: 200 }, (_, i) => [[skus[i % skus.length], 1], ["SHARED", 1]]));
    const total = (await ledger.changes()).length;
    const claimed: string[] = [];
    const batches: ClaimedBatch[] = [];
    for (let round = 0; round < 100 && claimed.length < total; round++) {
      const got = await Promise.all(Array.from({ length: 8 }, () => ledger.store.claimBatch("shopify", 3)));
      for (const batch of got) {
        if (!batch) continue;
        batches.push(batch);
        for (const change of batch.changes) claimed.push(...change.changeIds);
      }
    }
    assert.equal(new Set(claimed).size, claimed.length, "no change is in two batches");
    assert.equal(claimed.length, total, "every change was claimed");
    // The ledger agrees: each change belongs to the batch that returned it.
    const owner = new Map(
      batches.flatMap((b) => b.changes.flatMap((c) => c.changeIds.map((id) => [id, b.id]))),
    );
    for (const change of await ledger.changes()) assert.equal(change.batch_id, owner.get(change.id));
  } finally {
    await ledger.close();
  }
});

integration("a claim skips the changes another replica has locked instead of waiting for them", async () => {
  const ledger = await freshLedger();
  try {
    await ledger.sell([[["A", 1]], [["B", 1]]]);
    let unlock!: () => void;
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => locked = resolve);
    const holder = ledger.sql.begin(async (tx) => {
      await tx`select id from stock_change where channel = 'shopify' and sku = 'A' for update`;
      locked();
      await new Promise<void>((resolve) => unlock = resolve);
    });
    await isLocked;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const claim = ledger.store.claimBatch("shopify", 10);
    const outcome = await Promise.race([
      claim.then(() => "claimed"),
      new Promise((resolve) => timer = setTimeout(() => resolve("waiting"), 5_000)),
    ]);
    clearTimeout(timer);
    unlock();
    await holder;
    assert.equal(outcome, "claimed", "the claim did not wait for the other replica's lock");
    assert.deepEqual((await claim)?.changes.map((c) => c.sku), ["B"]);
  } finally {
    await ledger.close();
  }
});

integration("a re-send repeats the first stored request under the same key", async () => {
  const ledger = await freshLedger();
  try {
    await ledger.sell([[["A", 2]]]);
    const batch = (await ledger.store.claimBatch("shopify", 10))!;
    const first = { mutation: "adjust", delta: -2 };
    assert.deepEqual(await ledger.store.markSending(batch, first), first);
    assert.equal(batch.sends, 1);
    // A rebuilt request (say, after a listing was resolved again) is not what goes out again.
    assert.deepEqual(await ledger.store.markSending(batch, { mutation: "rebuilt" }), first);
    assert.equal(batch.sends, 2);
    assert.equal(batch.resend, true);
    const row = await ledger.batchRow(batch.id);
    assert.deepEqual(row.request, first);
    assert.ok(row.sent_at, "the first send is stamped");
    assert.equal(row.channel_attempts, 2);
    assert.equal(row.idempotency_key, batch.idempotencyKey);
  } finally {
    await ledger.close();
  }
});

integration(
  "a batch whose lease expired is reclaimed with its key and request; its old owner can no longer send or record",
  async () => {
    const ledger = await freshLedger();
    try {
      await ledger.sell([[["A", 2]], [["B", 1]]]);
      const batch = (await ledger.store.claimBatch("shopify", 10))!;
      const request = { mutation: "adjust" };
      await ledger.store.markSending(batch, request);
      const replica = new DispatchStore(ledger.sql, POLICY);
      assert.equal(await replica.reclaimBatch("shopify"), null, "a live lease is not taken over");

      await ledger.expireLease(batch);
      const taken = await replica.reclaimBatch("shopify");
      assert.ok(taken, "the expired batch is reclaimed");
      assert.equal(taken.id, batch.id);
      assert.equal(taken.idempotencyKey, batch.idempotencyKey);
      assert.deepEqual(taken.request, request);
      assert.deepEqual(
        taken.changes.map((c) => ({ ...c, oldestCreatedAt: c.oldestCreatedAt.getTime() })),
        batch.changes.map((c) => ({ ...c, oldestCreatedAt: c.oldestCreatedAt.getTime() })),
      );
      assert.equal(taken.sends, 1);
      assert.equal(taken.resend, true);
      assert.notEqual(taken.owner, batch.owner);
      assert.equal(await ledger.store.reclaimBatch("shopify"), null, "only one replica takes it over");

      await assert.rejects(ledger.store.markSending(batch, request), LeaseLostError);
      assert.equal(await ledger.store.renewLease(batch), false, "the old owner cannot renew the lease back");
      await ledger
        .sql`update sync_batch set lease_until = now() + interval '1 second' where id = ${taken.id}`;
      assert.equal(await replica.renewLease(taken), true, "the new owner can");
      assert.ok((await ledger.batchRow(batch.id)).lease_ms > POLICY.leaseMs - 5_000, "a whole lease ahead");
      await assert.rejects(
        ledger.store.record(batch, { kind: "done", results: batch.changes.map(() => ({ kind: "applied" })) }),
        LeaseLostError,
      );
      assert.ok(
        (await ledger.changes()).every((c) => c.status === "sending"),
        "the stale owner wrote nothing",
      );
      assert.deepEqual(await replica.markSending(taken, { mutation: "other" }), request);
    } finally {
      await ledger.close();
    }
  },
);

integration("a batch a crashed replica claimed but never sent is reclaimed as a first send", async () => {
  const ledger = await freshLedger();
  try {
    await ledger.sell([[["A", 2]]]);
    const batch = (await ledger.store.claimBatch("shopify", 10))!;
    await ledger.expireLease(batch);
    const taken = await ledger.store.reclaimBatch("shopify");
    assert.equal(taken?.id, batch.id);
    assert.equal(taken?.request, null);
    assert.equal(taken?.sends, 0);
    assert.equal(taken?.resend, false);
  } finally {
    await ledger.close();
  }
});

integration(
  `a same-key channel's batch first sent over ${IDEMPOTENCY_SAFE_HOURS} h ago is not sent again`,
  async () => {
    const ledger = await freshLedger();
    try {
      await ledger.sell([[["A", 2]]]);
      const sentAgo = async (batch: ClaimedBatch, hours: number) => {
        await ledger.sql`
          update sync_batch set sent_at = now() - ${hours} * interval '1 hour' where id = ${batch.id}`;
      };
      const shopify = (await ledger.store.claimBatch("shopify", 10))!;
      await ledger.store.markSending(shopify, { n: 1 });
      await sentAgo(shopify, IDEMPOTENCY_SAFE_HOURS - 1);
      assert.deepEqual(await ledger.store.markSending(shopify, { n: 2 }), { n: 1 }, "inside the window");
      await sentAgo(shopify, IDEMPOTENCY_SAFE_HOURS + 1);
      await assert.rejects(ledger.store.markSending(shopify, { n: 3 }), KeyWindowPassedError);
      assert.equal(
        (await ledger.batchRow(shopify.id)).channel_attempts,
        2,
        "the refused send is not counted",
      );

      // MercadoLibre has no keys (it reads before it writes): no window to pass.
      const meli = (await ledger.store.claimBatch("mercadolibre", 10))!;
      await ledger.store.markSending(meli, { n: 1 });
      await sentAgo(meli, IDEMPOTENCY_SAFE_HOURS + 1);
      assert.deepEqual(await ledger.store.markSending(meli, { n: 2 }), { n: 1 });
    } finally {
      await ledger.close();
    }
  },
);

integration("recorded outcomes land on the changes: applied, failed, retried later, exhausted", async () => {
  const ledger = await freshLedger({ ...POLICY, maxAttempts: 3 });
  try {
    const [, failedSale, , exhaustedSale] = await ledger.sell([[["A", 1]], [["B", 1]], [["C", 1]], [[
      "D",
      1,
    ]]]);
    // D has been tried twice already: this claim is its last attempt.
    await ledger.sql`update stock_change set attempts = 2 where sku = 'D'`;
    const batch = (await ledger.store.claimBatch("shopify", 10))!;
    assert.deepEqual(batch.changes.map((c) => c.sku), ["A", "B", "C", "D"]);
    await ledger.store.markSending(batch, { mutation: "adjust" });
    const failed = await ledger.store.record(batch, {
      kind: "done",
      response: { ok: true },
      results: [
        { kind: "applied", quantityAfter: 7 },
        { kind: "failed", reason: "sku_not_found", error: "no listing for B" },
        { kind: "retry", reason: "http_502", error: "bad gateway" },
        { kind: "retry", reason: "http_502", error: "bad gateway" },
      ],
    });
    assert.deepEqual(
      failed.map((f) => ({ eventId: f.eventId, sku: f.sku, reason: f.reason, body: f.body })),
      [
        { eventId: failedSale.event_id, sku: "B", reason: "sku_not_found", body: failedSale },
        { eventId: exhaustedSale.event_id, sku: "D", reason: "exhausted", body: exhaustedSale },
      ],
      "the changes that failed for good come back with their sale, for a DLQ copy",
    );
    const [a, b, c, d] = await ledger.changes();
    assert.deepEqual([a.status, a.result?.quantity_after], ["applied", 7]);
    assert.deepEqual([b.status, b.error_reason, b.error], ["failed", "sku_not_found", "no listing for B"]);
    assert.deepEqual([c.status, c.batch_id, c.error_reason], ["pending", null, "http_502"]);
    assert.ok(c.wait_ms > 0, `the retry waits before it is due again (${c.wait_ms} ms)`);
    assert.deepEqual([d.status, d.error_reason], ["failed", "exhausted"]);
    assert.match(d.error!, /gave up after 3 attempts: bad gateway/);
    assert.equal((await ledger.batchRow(batch.id)).status, "done");

    assert.equal(await ledger.store.claimBatch("shopify", 10), null, "the retry is not due yet");
    await ledger.sql`update stock_change set next_attempt_at = now() where sku = 'C'`;
    const again = await ledger.store.claimBatch("shopify", 10);
    assert.deepEqual(again?.changes.map((ch) => [ch.sku, ch.attempts]), [["C", 2]]);
    assert.notEqual(again?.idempotencyKey, batch.idempotencyKey, "a new batch, a new key");
  } finally {
    await ledger.close();
  }
});

integration(
  "a change retried many times waits about the backoff maximum, not an ever-growing time",
  async () => {
    const policy = { ...POLICY, maxAttempts: 50, backoffBaseMs: 1_000, backoffMaxMs: 5_000 };
    const ledger = await freshLedger(policy);
    try {
      await ledger.sell([[["A", 1]]]);
      await ledger.sql`update stock_change set attempts = 20`;
      const batch = (await ledger.store.claimBatch("shopify", 10))!;
      await ledger.store.record(batch, {
        kind: "done",
        results: [{ kind: "retry", reason: "http_502", error: "bad gateway" }],
      });
      const [change] = await ledger.changes();
      assert.equal(change.status, "pending");
      // The maximum caps the doubling; the ±20 % jitter is spread around it (src/resilience/backoff.ts).
      assert.ok(
        change.wait_ms >= policy.backoffMaxMs * 0.8 && change.wait_ms <= policy.backoffMaxMs * 1.2,
        `waits ${change.wait_ms} ms`,
      );
    } finally {
      await ledger.close();
    }
  },
);

integration(
  "a same-key re-send waits at most the backoff maximum, or as long as the marketplace asked",
  async () => {
    const ledger = await freshLedger();
    try {
      await ledger.sell([[["A", 1]]]);
      const batch = (await ledger.store.claimBatch("shopify", 10))!;
      await ledger.store.markSending(batch, { n: 1 });
      const tenMinutes = 600_000;
      const resend = {
        kind: "resend",
        reason: "http_503",
        error: "unavailable",
        waitMs: tenMinutes,
      } as const;
      assert.deepEqual(await ledger.store.record(batch, { ...resend, countsAsAttempt: true }), []);
      let row = await ledger.batchRow(batch.id);
      assert.equal(row.status, "sending", "still in flight under its key");
      assert.ok(row.lease_ms > 0 && row.lease_ms <= POLICY.backoffMaxMs, `re-sent in ${row.lease_ms} ms`);
      assert.ok((await ledger.changes()).every((c) => c.status === "sending"));

      // Throttling is the marketplace's own wait: kept, and not counted as an attempt.
      await ledger.store.markSending(batch, { n: 1 });
      await ledger.store.record(batch, { ...resend, reason: "throttled", countsAsAttempt: false });
      row = await ledger.batchRow(batch.id);
      assert.ok(row.lease_ms > tenMinutes - 60_000, `re-sent in ${row.lease_ms} ms`);
      assert.equal(row.channel_attempts, 1, "two sends, one counted");
    } finally {
      await ledger.close();
    }
  },
);

integration("a batch re-sent maxAttempts times without an answer fails as outcome_unknown", async () => {
  const ledger = await freshLedger({ ...POLICY, maxAttempts: 2 });
  try {
    await ledger.sell([[["A", 1]]]);
    const batch = (await ledger.store.claimBatch("shopify", 10))!;
    const resend = {
      kind: "resend",
      reason: "timeout",
      error: "no answer",
      waitMs: 0,
      countsAsAttempt: true,
    } as const;
    await ledger.store.markSending(batch, { n: 1 });
    assert.deepEqual(await ledger.store.record(batch, resend), []);
    await ledger.store.markSending(batch, { n: 1 });
    const failed = await ledger.store.record(batch, resend);
    assert.deepEqual(failed.map((f) => [f.sku, f.reason]), [["A", OUTCOME_UNKNOWN]]);
    const [change] = await ledger.changes();
    assert.deepEqual([change.status, change.error_reason], ["failed", OUTCOME_UNKNOWN]);
    assert.equal((await ledger.batchRow(batch.id)).status, "failed");
  } finally {
    await ledger.close();
  }
});

integration(
  "a retried listing gives up only the changes out of attempts; one sold since is tried again",
  async () => {
    const ledger = await freshLedger({ ...POLICY, maxAttempts: 3 });
    try {
      const [old] = await ledger.sell([[["A", 1]]]);
      // The old sale's change has been tried twice; a new sale of the same SKU arrives meanwhile.
      await ledger.sql`update stock_change set attempts = 2 where channel = 'shopify'`;
      const [fresh] = await ledger.sell([[["A", 2]]]);
      const batch = (await ledger.store.claimBatch("shopify", 10))!;
      assert.deepEqual(
        batch.changes.map((c) => [c.sku, c.delta, c.attempts]),
        [["A", -3, 3]],
        "one write, both sales",
      );
      await ledger.store.markSending(batch, { mutation: "adjust" });
      const failed = await ledger.store.record(batch, {
        kind: "done",
        results: [{ kind: "retry", reason: "http_502", error: "bad gateway" }],
      });
      assert.deepEqual(failed.map((f) => [f.eventId, f.reason]), [[old.event_id, "exhausted"]]);
      const rows = await ledger.sql<{ event_id: string; status: string; attempts: number }[]>`
      select event_id, status, attempts from stock_change where channel = 'shopify' order by id`;
      assert.deepEqual(rows.map((r) => [r.event_id, r.status, r.attempts]), [
        [old.event_id, "failed", 3],
        [fresh.event_id, "pending", 1],
      ], "the new sale's change waits for its next try instead of failing after its first");
    } finally {
      await ledger.close();
    }
  },
);

integration(
  "an applied change is stamped when the marketplace answered for it, else when recorded",
  async () => {
    const ledger = await freshLedger();
    try {
      await ledger.sell([[["A", 1]], [["B", 1]]]);
      const batch = (await ledger.store.claimBatch("shopify", 10))!;
      await ledger.store.markSending(batch, { mutation: "adjust" });
      await ledger.store.record(batch, {
        kind: "done",
        results: [{ kind: "applied", quantityAfter: 1, answeredAt: Date.now() - 1_500 }, {
          kind: "applied",
          quantityAfter: 1,
        }],
      });
      const rows = await ledger.sql<{ sku: string; ago_ms: number }[]>`
      select sku, extract(epoch from now() - applied_at)::float8 * 1000 as ago_ms
        from stock_change where channel = 'shopify' order by sku`;
      assert.ok(
        rows[0].ago_ms >= 1_450 && rows[0].ago_ms < 3_000,
        `A answered 1.5 s ago: ${rows[0].ago_ms} ms`,
      );
      assert.ok(
        rows[1].ago_ms >= 0 && rows[1].ago_ms < 1_000,
        `B stamped when recorded: ${rows[1].ago_ms} ms`,
      );
    } finally {
      await ledger.close();
    }
  },
);

integration("a released batch puts its changes back untouched, due after the given wait", async () => {
  const ledger = await freshLedger();
  try {
    await ledger.sell([[["A", 2]], [["A", 1]], [["B", 1]]]);
    const before = await ledger.changes();
    const batch = (await ledger.store.claimBatch("shopify", 10))!;
    await ledger.store.release(batch);
    const after = await ledger.changes();
    assert.deepEqual(
      after.map((c) => ({ id: c.id, status: c.status, attempts: c.attempts, batch: c.batch_id })),
      before.map((c) => ({ id: c.id, status: "pending", attempts: 0, batch: null })),
      "pending again, the attempt the claim counted given back",
    );
    assert.equal((await ledger.batchRow(batch.id)).status, "superseded", "its unused key is retired");

    const next = (await ledger.store.claimBatch("shopify", 10))!;
    assert.deepEqual(next.changes.map((c) => [c.sku, c.delta, c.attempts]), [["A", -3, 1], ["B", -1, 1]]);
    assert.notEqual(next.idempotencyKey, batch.idempotencyKey);
    await ledger.store.release(next, 60_000, "marketplace refused the lookup");
    assert.equal(await ledger.store.claimBatch("shopify", 10), null, "not due before the wait");
    assert.ok((await ledger.changes()).every((c) => c.error === "marketplace refused the lookup"));

    await ledger.sql`update stock_change set next_attempt_at = now()`;
    const sent = (await ledger.store.claimBatch("shopify", 10))!;
    await ledger.store.markSending(sent, { n: 1 });
    await assert.rejects(ledger.store.release(sent), /must be re-sent, not released/);
    assert.ok((await ledger.changes()).every((c) => c.status === "sending"));
  } finally {
    await ledger.close();
  }
});

integration("a batch is sending from its claim until its outcome is recorded", async () => {
  const ledger = await freshLedger();
  try {
    await ledger.sell([[["A", 1]], [["B", 1]]]);
    const batch = (await ledger.store.claimBatch("shopify", 1))!;
    assert.equal(await ledger.store.isSending(batch.id), true, "claimed");
    await ledger.store.markSending(batch, { n: 1 });
    assert.equal(await ledger.store.isSending(batch.id), true, "sent, no answer yet");
    await ledger.store.record(batch, { kind: "done", results: [{ kind: "applied" }] });
    assert.equal(await ledger.store.isSending(batch.id), false, "recorded");

    const released = (await ledger.store.claimBatch("shopify", 1))!;
    await ledger.store.release(released);
    assert.equal(await ledger.store.isSending(released.id), false, "released");
  } finally {
    await ledger.close();
  }
});
