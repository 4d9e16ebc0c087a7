/**
 * The chaos scenarios. Each one builds its world, publishes a burst (with a few
 * intentionally bad events), injects its fault while the burst flows, and
 * returns; the runner then waits for convergence and checks the invariant.
 *
 * `variant` "proxy" takes a dependency away through a loopback TcpProxy (safe
 * next to other tests: the shared server keeps running); "real" restarts the
 * shared server itself (full run only).
 */
import { queuePolicy, restartPostgres, restartRabbit, restartRedis } from "./infra.ts";
import { SET_AVAILABLE } from "../../src/channels/shopify/documents.ts";
import type { SampleSale } from "../publish_sample.ts";
import { chaosCatalog, sleep, until, type World, type WorldOptions } from "./world.ts";
import type { StockRules } from "../../src/model/stock_rule.ts";

/** Size and timing knobs of a run. */
export interface RunOptions {
  bounded: boolean;
  sales: number;
  seed: number;
}

export type Variant = "proxy" | "pos_proxy" | "real" | "";

/** One scenario: how to build its world, and what to do in it. */
export interface Scenario {
  name: string;
  summary: string;
  /** Variants to run: bounded runs only ever take "proxy" or "". */
  variants(bounded: boolean): Variant[];
  world(variant: Variant, opts: RunOptions): Omit<WorldOptions, "name" | "logDir" | "seed">;
  run(world: World, variant: Variant, opts: RunOptions): Promise<void>;
  /** Convergence time allowed after `run` returns. */
  settleMs?(opts: RunOptions): number;
}

/**
 * A burst that runs while the scenario injects its fault: awaited at the end,
 * but never an unhandled rejection meanwhile (that would end the whole run).
 */
function background<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/**
 * Waits until the MeLi token chain holds a pair MeLi minted for us (not only the mark of a refresh
 * that got no answer).
 */
async function meliChainStored(world: World): Promise<void> {
  await until(
    async () =>
      (await world.sql`select 1 from oauth_token where status = 'ok' and access_token <> ''`).length > 0,
    "the MeLi token chain stored",
    30_000,
  );
}

/**
 * SIGKILLs a service (a note says when, and what `why` adds), leaves it down `downMs` and waits until the
 * restarted process is ready, as a supervisor would restart it.
 */
async function killAndRestart(
  world: World,
  svc: ReturnType<World["addService"]>,
  note: string | undefined,
  downMs = 300,
): Promise<void> {
  await svc.stop("SIGKILL");
  if (note !== undefined) world.notes.push(note);
  await sleep(downMs);
  await svc.start();
  await svc.ready();
}

/** Waits until `n` sales were published (the burst runs concurrently). */
async function published(world: World, n: number): Promise<void> {
  await until(() => world.sales.length >= n, `${n} sales published`, 600_000, 20);
}

/** Waits for every change to be settled (none pending/sending, no batch in flight), without the DLQ count. */
async function quiet(world: World, timeoutMs: number): Promise<void> {
  await until(
    async () => {
      const [r] = await world.sql<{ open: number; sending: number }[]>`
      select (select count(*)::int from stock_change where status in ('pending', 'sending')) as open,
             (select count(*)::int from sync_batch where status = 'sending') as sending`;
      const rows = (await world.ledgerRows()).length;
      return r.open === 0 && r.sending === 0 && rows >= world.expectedRows().size &&
        (await world.queueDepth(world.topology.queue)) === 0;
    },
    "ledger quiet",
    timeoutMs,
    200,
  );
}

async function admin(world: World, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${world.services[0].url}${path}`, {
    method,
    headers: { authorization: `Bearer ${world.env.ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** Sales per second that spread a burst over 5 s (bounded) or 15 s (full), so faults land mid-burst. */
const pace = (opts: RunOptions) => Math.max(5, Math.round(opts.sales / (opts.bounded ? 5 : 15)));

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Three outages of `downMs` at 25 %, 50 % and 75 % of the burst. */
async function threeOutages(
  world: World,
  total: number,
  outage: () => Promise<string>,
): Promise<void> {
  for (const at of [0.25, 0.5, 0.75]) {
    await published(world, Math.floor(total * at));
    world.notes.push(await outage());
  }
}

const rabbitRestart: Scenario = {
  name: "rabbit_restart",
  summary: "RabbitMQ restarted three times during one burst",
  variants: (bounded) => bounded ? ["proxy"] : ["proxy", "real"],
  world: (variant) => ({ proxies: variant === "proxy" ? ["rabbitmq"] : [] }),
  async run(world, variant, opts) {
    world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    const downMs = opts.bounded ? 1_000 : 3_000;
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    await threeOutages(world, sales.length, async () => {
      const at = world.sales.length;
      if (variant === "real") {
        const took = await restartRabbit(downMs);
        return `rabbitmqctl stop_app, ${secs(downMs)} down, start_app at ${at} sales (${secs(took)} in all)`;
      }
      world.proxies.rabbitmq!.cut();
      await sleep(downMs);
      world.proxies.rabbitmq!.restore();
      return `broker connections cut, refused ${secs(downMs)} at ${at} sales`;
    });
    await burst;
  },
};

const sigkill: Scenario = {
  name: "sigkill",
  summary: "service SIGKILLed three times while batches are 'sending', restarted with the same config",
  variants: () => [""],
  // Each Shopify call takes 300 ms after it is applied: a kill lands between "applied" and "recorded".
  world: () => ({ shopifyFaults: { latencyMs: 300 } }),
  async run(world, _variant, opts) {
    const svc = world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    // Not between MeLi's refresh answer and storing the pair: a process killed there loses the rotated
    // refresh token (docs/RELIABILITY.md, finding 4, still open); this scenario is about batches in flight.
    await meliChainStored(world);
    for (let kill = 1; kill <= 3; kill++) {
      await published(world, Math.floor(sales.length * kill / 5));
      let inFlight: { id: string; channel: string }[] = [];
      try {
        // Prefer a moment with a Shopify batch in flight (its key is what prevents a double decrement).
        const since = Date.now();
        inFlight = await until(
          async () => {
            const rows = await world.sql<{ id: string; channel: string }[]>`
            select id::text, channel from sync_batch where status = 'sending' and sent_at is not null`;
            const shopify = rows.some((r) => r.channel === "shopify");
            return shopify || (rows.length > 0 && Date.now() - since > (opts.bounded ? 1_000 : 3_000))
              ? rows
              : undefined;
          },
          "a batch in flight",
          20_000,
          10,
        );
      } catch {
        world.notes.push(`kill ${kill}: no batch was in flight within 20 s; killed anyway`);
      }
      await killAndRestart(
        world,
        svc,
        `SIGKILL ${kill} with ${inFlight.length} batch(es) sending (${
          [...new Set(inFlight.map((b) => b.channel))].join("+") || "none"
        }) at ${world.sales.length} sales`,
      );
    }
    await burst;
  },
  settleMs: (opts) => opts.bounded ? 45_000 : 120_000,
};

const postgresRestart: Scenario = {
  name: "postgres_restart",
  summary: "Postgres restarted mid-burst",
  variants: (bounded) => bounded ? ["proxy"] : ["proxy", "real"],
  world: (variant) => ({ proxies: variant === "proxy" ? ["postgres"] : [] }),
  async run(world, variant, opts) {
    world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    await published(world, Math.floor(sales.length * 0.4));
    // Not inside the MeLi token refresh (docs/RELIABILITY.md, finding 4): that window is not this scenario.
    await meliChainStored(world);
    const at = world.sales.length;
    if (variant === "real") {
      const took = await restartPostgres();
      world.notes.push(`pg_ctlcluster restart at ${at} sales (${secs(took)})`);
    } else {
      const downMs = opts.bounded ? 2_500 : 5_000;
      world.proxies.postgres!.cut();
      await sleep(downMs);
      world.proxies.postgres!.restore();
      world.notes.push(`Postgres connections cut, refused ${secs(downMs)} at ${at} sales`);
    }
    await burst;
  },
};

/**
 * Local TCP ports of a process's open connections to `remotePort` (Linux: the socket inodes of
 * /proc/<pid>/fd matched against /proc/net/tcp{,6}). Postgres shows them as `client_port`, which is how
 * the scenario finds the service's own backends and no one else's.
 */
async function clientPorts(pid: number, remotePort: number): Promise<number[]> {
  const inodes = new Set<string>();
  for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
    const target = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]);
  }
  const ports: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(table).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || !inodes.has(cols[9])) continue;
      const [, local] = cols[1].split(":");
      const [, remote] = cols[2].split(":");
      if (parseInt(remote, 16) === remotePort) ports.push(parseInt(local, 16));
    }
  }
  return ports;
}

const postgresBackendKills: Scenario = {
  name: "postgres_backend_kills",
  summary:
    "the service's own Postgres backends terminated every 2 s during the burst, on quorum queues with a " +
    "delivery limit of 5; the process must survive",
  variants: () => [""],
  // A crash is a failure here, not a note: the point is that the process outlives every dropped connection.
  // Quorum queues with a small delivery limit, as issue #12 saw it from outside: a crash loop there once
  // handed prefetched sales back until RabbitMQ deleted them.
  world: () => ({ crashIsFailure: true, env: { QUEUE_TYPE: "quorum", QUEUE_DELIVERY_LIMIT: "5" } }),
  async run(world, _variant, opts) {
    const svc = world.addService();
    await world.startAll();
    const pid = svc.pid!;
    const sales = world.makeSales(opts.sales, opts.seed);
    let done = false;
    const burst = background(world.burst(sales, { perSecond: pace(opts) })).finally(() => done = true);
    const port = Number(new URL(world.env.DATABASE_URL).port || 5432);
    let rounds = 0, killed = 0;
    // Through the burst, and at least 4 rounds so a short bounded burst still sees several.
    while (!done || rounds < 4) {
      await sleep(2_000);
      if (!svc.pid) continue; // died: the supervisor restarts it, check() reports the crash
      const ports = await clientPorts(svc.pid, port);
      const rows = await world.sql<{ done: boolean }[]>`
        select pg_terminate_backend(pid) as done from pg_stat_activity
        where client_port = any(${ports}::int[]) and client_addr in ('127.0.0.1', '::1')
          and pid <> pg_backend_pid()`;
      killed += rows.filter((r) => r.done).length;
      rounds++;
    }
    await burst;
    world.notes.push(
      `${killed} service backends terminated in ${rounds} rounds, every 2 s; process id ${pid} → ${
        svc.pid ?? "none"
      } (starts: ${svc.pids.join(", ")})`,
    );
  },
  settleMs: (opts) => opts.bounded ? 45_000 : 120_000,
};

const redisRestart: Scenario = {
  name: "redis_restart",
  summary: "Redis stopped and started mid-burst (budget, MeLi locks and POS stock reads)",
  // pos_proxy: only the POS's Redis (POS_REDIS_URL) goes away; the service's own stays up.
  variants: (bounded) => bounded ? ["proxy", "pos_proxy"] : ["proxy", "pos_proxy", "real"],
  world: (variant) => ({
    proxies: variant === "proxy" ? ["redis"] : variant === "pos_proxy" ? ["pos_redis"] : [],
  }),
  async run(world, variant, opts) {
    world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    const downMs = opts.bounded ? 3_000 : 5_000;
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    await published(world, Math.floor(sales.length * 0.4));
    const at = world.sales.length;
    if (variant === "real") {
      const took = await restartRedis(downMs);
      world.notes.push(`redis shutdown + redis-server at ${at} sales (${secs(took)})`);
    } else {
      const proxy = world.proxies[variant === "pos_proxy" ? "pos_redis" : "redis"]!;
      proxy.cut();
      await sleep(downMs);
      proxy.restore();
      world.notes.push(
        `${variant === "pos_proxy" ? "POS Redis (POS_REDIS_URL)" : "Redis"} connections cut, refused ${
          secs(downMs)
        } at ${at} sales`,
      );
    }
    await burst;
  },
};

const sandboxFaults: Scenario = {
  name: "sandbox_faults",
  summary: "Shopify 20 % 5xx + lost responses + THROTTLED + 2 s latency spikes; MeLi 20 % 5xx + 429 storms",
  variants: () => [""],
  world: () => ({
    shopifyFaults: { errorRate: 0.2, lostResponseRate: 0.05 },
    meliFaults: { errorRate: 0.2, lostResponseRate: 0.05 },
    meliRatePerSecond: 30,
    env: { MELI_RATE_PER_SEC: "25" },
  }),
  async run(world, _variant, opts) {
    world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    let spikes = 0, throttles = 0, storms = 0;
    // Cycles of: a 2 s latency spike on Shopify, then THROTTLED on everything, then a MeLi 429 storm.
    for (let cycle = 0; cycle < (opts.bounded ? 1 : 4); cycle++) {
      world.shopify.setFaults({ latencyMs: 2_000 });
      spikes++;
      await sleep(2_000);
      world.shopify.setFaults({ latencyMs: 0, throttleAll: true });
      throttles++;
      await sleep(1_000);
      world.shopify.setFaults({ throttleAll: false });
      world.meli.setFaults({ rateLimitAll: true });
      storms++;
      await sleep(1_500);
      world.meli.setFaults({ rateLimitAll: false });
      await sleep(500);
    }
    await burst;
    // 20 % 5xx stays on while the backlog drains.
    const s = world.shopify.stats(), m = world.meli.stats();
    world.notes.push(
      `${spikes} latency spikes, ${throttles} THROTTLED windows, ${storms} 429 storms; ` +
        `Shopify ${s.errorsInjected} 5xx, ${s.lostResponses} lost, ${s.throttled} throttled, ` +
        `${s.idempotentReplays} key replays; MeLi ${m.errorsInjected} 5xx, ${m.lostResponses} lost, ` +
        `${m.rateLimited} 429`,
    );
  },
  settleMs: (opts) => opts.bounded ? 90_000 : 180_000,
};

const outageThenReplay: Scenario = {
  name: "outage_then_replay",
  summary:
    "both channels fail longer than DISPATCH_MAX_ATTEMPTS=3 allows; heal; the DLQ replay alone heals it",
  variants: () => [""],
  world: () => ({
    env: { DISPATCH_MAX_ATTEMPTS: "3", DISPATCH_BACKOFF_BASE: "100ms", DISPATCH_BACKOFF_MAX: "300ms" },
  }),
  async run(world, _variant, opts) {
    world.addService();
    await world.startAll();
    const size = Math.max(10, Math.floor(opts.sales / 3));
    const timeout = opts.bounded ? 40_000 : 120_000;
    // 1. Healthy warm-up: every SKU sold once at the MeLi store, so both channels have resolved every
    //    listing (a resolution that fails waits, it never uses up attempts), and the bad events.
    await world.burst([...world.coverAllSkus(), ...world.makeSales(size, opts.seed)], {});
    await quiet(world, timeout);
    // 2. Shopify fails every mutation for sure (INTERNAL_SERVER_ERROR, key then spent: not applied);
    //    MeLi answers 5xx to everything. Changes use up their 3 attempts: exhausted → DLQ.
    world.shopify.setFaults({ internalErrorRate: 1 });
    world.meli.setFaults({ errorRate: 1 });
    const exhaustedStart = world.sales.length;
    await world.burst(world.makeSales(size, opts.seed + 1), { bad: 0 });
    await quiet(world, timeout);
    // 3. A long Shopify outage without answers: half the sends get a 5xx before anything is applied,
    //    the other half are applied but the answer is lost. Either way the client heard nothing, sends
    //    the same key again, and after 3 sends the changes are outcome_unknown (some applied, some not).
    //    MeLi is back, so these sales' only DLQ copies are Shopify's outcome_unknown ones.
    world.shopify.setFaults({ internalErrorRate: 0, errorRate: 0.5, lostResponseRate: 1 });
    world.meli.setFaults({ errorRate: 0 });
    const unknownStart = world.sales.length;
    await world.burst(world.makeSales(Math.max(5, Math.floor(size / 2)), opts.seed + 2), { bad: 0 });
    await quiet(world, timeout);
    const reasons = await world.sql<{ channel: string; error_reason: string; n: number }[]>`
      select channel, error_reason, count(*)::int as n from stock_change where status = 'failed'
       group by 1, 2 order by 1, 2`;
    world.notes.push(
      `during the outage: ${reasons.map((r) => `${r.channel} ${r.error_reason} ${r.n}`).join(", ")}`,
    );
    const unknown = reasons.find((r) => r.channel === "shopify" && r.error_reason === "outcome_unknown")?.n ??
      0;
    // 4. Heal, then replay what ran out of attempts.
    world.shopify.setFaults({ errorRate: 0, internalErrorRate: 0, lostResponseRate: 0 });
    const dlqBefore = await world.queueDepth(world.topology.deadLetterQueue);
    const exhausted = await admin(world, "POST", "/dlq/replay", { reason: "exhausted" }) as { moved: number };
    await quiet(world, timeout);
    // 5. outcome_unknown: the replay alone heals it (no resync). Within the key window each batch goes
    //    out again under its original key: Shopify answers the applied ones from its record (not applied
    //    twice) and applies the others now. Nothing is tolerated: the final quantities must be exact.
    const replaysBefore = world.shopify.stats().idempotentReplays;
    const replayedUnknown = await admin(world, "POST", "/dlq/replay", { reason: "outcome_unknown" }) as {
      moved: number;
    };
    await quiet(world, timeout);
    const stillUnknown = (await world.sql<{ n: number }[]>`
      select count(*)::int as n from stock_change where status = 'failed' and error_reason = 'outcome_unknown'`)[
      0
    ].n;
    const keyReplays = world.shopify.stats().idempotentReplays - replaysBefore;
    world.notes.push(
      `sales ${exhaustedStart}..${unknownStart} exhausted, ${unknownStart}..${world.sales.length} ` +
        `outcome_unknown on Shopify; DLQ before replay ${dlqBefore}; replayed exhausted ${exhausted.moved}; ` +
        `replayed outcome_unknown ${replayedUnknown.moved} → ${
          unknown - stillUnknown
        } of ${unknown} re-opened ` +
        `under their original key and applied (${keyReplays} answered from Shopify's key record), ` +
        `${stillUnknown} still failed; no resync`,
    );
    if (unknown === 0) world.notes.push("WARNING: the outage produced no outcome_unknown change to heal");
  },
  settleMs: (opts) => opts.bounded ? 40_000 : 120_000,
};

const threeInstances: Scenario = {
  name: "three_instances",
  summary: "three service instances on one queue and one ledger",
  variants: () => [""],
  world: () => ({ shopifyFaults: { latencyMs: 50 } }),
  async run(world, _variant, opts) {
    for (let i = 0; i < 3; i++) world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    await world.burst(sales, { perSecond: pace(opts) * 2 });
    const refreshes = world.meli.stats().refreshes;
    world.notes.push(`MeLi OAuth refreshes: ${refreshes} (one chain shared by 3 instances)`);
  },
};

const quorumDeliveryLimit: Scenario = {
  name: "quorum_delivery_limit",
  summary: "quorum queues, QUEUE_DELIVERY_LIMIT=1 and a delivery-limit 2 policy on the DLQ: 30 GET /dlq " +
    "during the burst and a start/SIGKILL crash loop holding prefetched deliveries; over-limit sales replayed",
  variants: () => [""],
  // Custody holds deliveries up to 2 s before its batch commits: a kill in that window hands them all back.
  world: () => ({ env: { QUEUE_TYPE: "quorum", QUEUE_DELIVERY_LIMIT: "1", CUSTODY_BATCH_WAIT: "2s" } }),
  async run(world, _variant, opts) {
    // The operator's policy of the issue, on this world's DLQ only: every requeue of a dead letter counts.
    const dlq = world.topology.deadLetterQueue;
    const clear = await queuePolicy(`chaos-${dlq}`, `^${dlq.replaceAll(".", "\\.")}$`, {
      "delivery-limit": 2,
    });
    world.notes.push(
      clear ? "DLQ under a delivery-limit policy of 2" : "no rabbitmqctl: DLQ under the broker's own limit",
    );
    try {
      const svc = world.addService();
      await world.startAll();
      const sales = world.makeSales(opts.sales, opts.seed);
      const burst = background(world.burst(sales, { perSecond: pace(opts) }));
      // Peeks while bad events arrive (each one a requeue, before the fix).
      let peeks = 0, largest = 0;
      const peek = async () => {
        const listed = await admin(world, "GET", "/dlq?limit=50") as { total: number };
        peeks++;
        largest = Math.max(largest, listed.total);
      };
      for (let i = 0; i < 20; i++) {
        await peek();
        await sleep(100);
      }
      // Crash loop: the service dies while it holds a backlog of prefetched deliveries, and again.
      await published(world, Math.floor(sales.length * 0.5));
      let kills = 0;
      for (let cycle = 0; cycle < 3; cycle++) {
        await killAndRestart(world, svc, undefined); // a backlog builds up while nobody consumes
        kills++;
        await sleep(300); // prefetched and held by an open custody batch
      }
      await burst;
      for (let i = 0; i < 10; i++) await peek();
      // Whatever went over the limit is in the DLQ, not deleted: the operator replays it.
      await until(
        async () => (await world.queueDepth(world.topology.queue)) === 0,
        "work queue drained",
        30_000,
      );
      const replayed = await admin(world, "POST", "/dlq/replay", { reason: "delivery_limit" }) as {
        moved: number;
      };
      world.notes.push(
        `${peeks} GET /dlq (largest ${largest}); ${kills} SIGKILLs; ${replayed.moved} over-limit deliveries ` +
          `dead-lettered (delivery_limit) and replayed`,
      );
    } finally {
      await clear?.();
    }
  },
  settleMs: (opts) => opts.bounded ? 45_000 : 120_000,
};

const meliSlowerThanLock: Scenario = {
  name: "meli_slower_than_lock",
  summary: "three instances; MeLi answers slower than MELI_LOCK_TTL=1s, then a 429 storm longer than it",
  variants: () => [""],
  world: () => ({ meliRatePerSecond: 60, env: { MELI_LOCK_TTL: "1s", MELI_RATE_PER_SEC: "50" } }),
  async run(world, _variant, opts) {
    for (let i = 0; i < 3; i++) world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    // Half the usual pace: the burst is still flowing when the slow windows come.
    const burst = background(world.burst(sales, { perSecond: Math.max(5, Math.round(pace(opts) / 2)) }));
    await until(() => world.meli.stats().puts >= 3, "MeLi stock writes flowing", 30_000, 50);
    const before = world.meli.stats();
    let windows = 0;
    // Each window outlasts the lock's TTL: every listing's read → write spans several TTLs, so the
    // lock must be renewed while the work runs (and every write fenced) or replicas interleave.
    for (let cycle = 0; cycle < (opts.bounded ? 1 : 3); cycle++) {
      world.meli.setFaults({ latencyMs: 1_500 });
      await sleep(3_000);
      world.meli.setFaults({ latencyMs: 0, rateLimitAll: true });
      await sleep(2_500);
      world.meli.setFaults({ rateLimitAll: false, latencyMs: 1_200 });
      await sleep(2_000);
      world.meli.setFaults({ latencyMs: 0 });
      windows++;
      await sleep(500);
    }
    const m = world.meli.stats();
    await burst;
    world.notes.push(
      `${windows} slow + 429 windows longer than the 1 s lock: MeLi ${
        m.rateLimited - before.rateLimited
      } 429, ` +
        `${m.puts - before.puts} stock PUTs during them`,
    );
  },
  settleMs: (opts) => opts.bounded ? 90_000 : 180_000,
};

/**
 * Sales that never take a SKU × store below `margin` units: the invariant stays exact next to a
 * resync (which clamps Shopify at 0 where sales as deltas would go below; RELIABILITY.md finding 6).
 */
function withinStock(world: World, sales: ReturnType<World["makeSales"]>, margin: number) {
  const left = new Map<string, number>();
  for (const p of world.catalog.products) {
    for (const s of world.catalog.stores) left.set(`${p.sku}|${s.tienda_id}`, p.stock[s.tienda_id] ?? 0);
  }
  return sales.filter((sale) => {
    const after = sale.items.map((i) => {
      const key = `${i.producto_sku}|${sale.tienda_id}`;
      return [key, (left.get(key) ?? 0) - i.cantidad] as const;
    });
    if (after.some(([, n]) => n < margin)) return false;
    for (const [key, n] of after) left.set(key, n);
    return true;
  });
}

/** Sales of one unit of `hot` SKUs (in turn) at the MeLi store: both channels see every one. */
function hotSales(world: World, hot: ReturnType<World["products"]>, count: number): SampleSale[] {
  return Array.from({ length: count }, (_, n) => world.meliSale([hot[n % hot.length]]));
}

/** Moves a Shopify quantity behind the service's back, through the sandbox's own API. */
async function shopifyDrift(world: World, productoId: string, tiendaId: string, by: number): Promise<void> {
  const item = world.shopify.variants.find((v) => v.productoId === productoId)!.inventoryItemId;
  const from = world.shopify.availableFor(productoId, tiendaId)!;
  const res = await fetch(world.shopify.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", "x-shopify-access-token": world.shopify.token },
    body: JSON.stringify({
      query: SET_AVAILABLE,
      variables: {
        key: crypto.randomUUID(),
        input: {
          name: "available",
          reason: "correction",
          referenceDocumentUri: "gid://chaos/Drift/1",
          quantities: [{
            inventoryItemId: item,
            locationId: world.shopify.locationIdOf(tiendaId)!,
            quantity: from + by,
            changeFromQuantity: from,
          }],
        },
      },
    }),
  });
  const body = await res.json();
  if (body.data?.inventorySetQuantities?.userErrors?.length !== 0) {
    throw new Error(`could not set the Shopify drift: ${JSON.stringify(body)}`);
  }
}

const resyncUnderLoad: Scenario = {
  name: "resync_under_load",
  summary: "write-mode resyncs of every SKU on both channels, back to back, while the burst flows",
  variants: () => [""],
  // Slow marketplace calls, and resyncs that do not wait for live work: a sale's batch often
  // lands while a resync is mid-check.
  world: () => ({
    shopifyFaults: { latencyMs: 40 },
    meliFaults: { latencyMs: 40 },
    env: { RESYNC_LIVE_WAIT: "0s" },
  }),
  async run(world, _variant, opts) {
    world.addService();
    await world.startAll();
    // The usual burst, plus a stream of sales of three well-stocked SKUs at the MeLi store (both
    // channels), so resync checks and sales of the same listing meet. No SKU × store runs out:
    // the invariant stays exact (a resync clamps Shopify at 0; RELIABILITY.md finding 6).
    const stock = (p: ReturnType<World["products"]>[number]) => p.stock[world.meliStore] ?? 0;
    const hot = [...world.products()].sort((a, b) => stock(b) - stock(a)).slice(0, 3);
    const hotCount = Math.min(opts.sales * 2, (stock(hot[2]) - 10) * 3);
    // Three quieter SKUs drift (off by 7 on both channels) and sell nothing more: the resyncs must
    // repair them while the others sell.
    const drifted = world.products().filter((p) => !hot.includes(p) && stock(p) > 20).slice(0, 3);
    const mixed = withinStock(world, world.makeSales(opts.sales * 2, opts.seed), 5)
      .filter((s) => !s.items.some((i) => [...hot, ...drifted].some((h) => h.sku === i.producto_sku)))
      .slice(0, opts.sales);
    const busy = hotSales(world, hot, hotCount);
    const sales = mixed.flatMap((s, i) => [s, ...busy.slice(i * 2, i * 2 + 2)]);
    const skus = world.products().map((p) => p.sku);
    for (const sku of skus) world.resyncedSkus.add(sku);
    // Every SKU sold once first, so the ledger knows each one's producto_id (the POS key needs it).
    await world.burst(world.coverAllSkus(), { bad: 0 });
    await quiet(world, 30_000);
    for (const p of drifted) {
      world.meli.setQuantity(p.producto_id, world.meli.quantityOf(p.producto_id)! + 7);
      await shopifyDrift(world, p.producto_id, world.meliStore, 7);
    }
    // Resyncs stop before the last sales: what a resync got wrong is not repaired by the next one.
    let publishing = true;
    const burst = background(
      world.burst(sales, {
        perSecond: pace(opts) * 2,
        bad: 0,
        onProgress: (n) => {
          if (n >= sales.length * 0.8) publishing = false;
        },
      }),
    );
    const totals = { jobs: 0, checked: 0, drift: 0, written: 0, skipped: 0, errors: 0 };
    // Back-to-back write resyncs: one loop over the whole catalog, one over the three busy ones.
    const loop = async (scope: { all: true } | { skus: string[] }) => {
      while (publishing) {
        const job = await admin(world, "POST", "/resync", scope) as { id: string };
        const result = await until(
          async () => {
            const j = await admin(world, "GET", `/resync/${job.id}`) as {
              state: string;
              done: number;
              drift_found: number;
              written: number;
              errors: number;
              report: { outcome?: string }[];
            };
            return j.state !== "running" ? j : undefined;
          },
          "resync job",
          120_000,
          50,
        );
        totals.jobs++;
        totals.checked += result.done;
        totals.drift += result.drift_found;
        totals.written += result.written;
        totals.errors += result.errors;
        totals.skipped += result.report.filter((l) => l.outcome === "skipped").length;
        if (result.state !== "done") world.notes.push(`resync ${job.id} ended ${result.state}`);
      }
    };
    await Promise.all([loop({ all: true }), loop({ skus: hot.map((p) => p.sku) })]);
    await burst;
    world.notes.push(
      `${sales.length} sales (${Math.min(busy.length, mixed.length * 2)} of ${
        hot.map((p) => p.sku).join(", ")
      } at the MeLi store); ` +
        `${totals.jobs} write resyncs during the burst (whole catalog and busy SKUs): ${totals.checked} listing checks, ${totals.drift} with ` +
        `drift, ${totals.written} written, ${totals.skipped} skipped, ${totals.errors} errors`,
    );
  },
  settleMs: (opts) => opts.bounded ? 60_000 : 120_000,
};

/**
 * The stock_rules scenario's `STOCK_RULES`: every kind (buffer, max, percent) at every level
 * (channel, SKU prefix, store, store + SKU prefix), on both channels, with unruled listings beside.
 */
function chaosStockRules(): StockRules {
  const [, second, third] = chaosCatalog().stores.map((s) => s.tienda_id);
  return {
    mercadolibre: { buffer: 2, max: 40, skus: { "JEAN-": { percent: 50 }, "ZAPA-": { buffer: 0, max: 5 } } },
    shopify: {
      skus: { "BUZO-": { buffer: 3 }, "CAMPERA-": { percent: 70 } },
      stores: { [second]: { max: 25, skus: { "MATE-": { buffer: 1, max: 8 } } }, [third]: { percent: 90 } },
    },
  };
}

const stockRules: Scenario = {
  name: "stock_rules",
  summary:
    "STOCK_RULES on both channels: a write resync, then a burst with two SIGKILLs and lost MeLi answers",
  variants: () => [""],
  // Shopify answers 150 ms after applying (a kill lands between "applied" and "recorded"); MeLi loses
  // 5 % of its answers. Ruled listings are absolute writes, unruled Shopify ones stay deltas.
  world: () => ({
    shopifyFaults: { latencyMs: 150 },
    meliFaults: { lostResponseRate: 0.05 },
    env: { STOCK_RULES: JSON.stringify(chaosStockRules()) },
  }),
  async run(world, _variant, opts) {
    const svc = world.addService();
    await world.startAll();
    // A rule reaches a listing at its next write (README, "Stock rules"): every SKU sold once, then a
    // whole-catalog write resync puts every ruled listing at its rule's value before the burst.
    await world.burst(world.coverAllSkus(), { bad: 0 });
    await quiet(world, 30_000);
    // Not between MeLi's refresh answer and storing the pair (docs/RELIABILITY.md, finding 4).
    await meliChainStored(world);
    const job = await admin(world, "POST", "/resync", { all: true }) as { id: string };
    const resync = await until(
      async () => {
        const j = await admin(world, "GET", `/resync/${job.id}?lines=0`) as {
          state: string;
          drift_found: number;
          written: number;
          errors: number;
        };
        return j.state !== "running" ? j : undefined;
      },
      "the whole-catalog resync",
      120_000,
      100,
    );
    world.notes.push(
      `write resync before the burst: ${resync.state}, ${resync.drift_found} listings off their rule, ` +
        `${resync.written} written, ${resync.errors} errors`,
    );
    const sales = world.makeSales(opts.sales, opts.seed);
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    for (let kill = 1; kill <= 2; kill++) {
      await published(world, Math.floor(sales.length * kill / 3));
      await killAndRestart(world, svc, `SIGKILL ${kill} at ${world.sales.length} sales`);
    }
    await burst;
  },
  settleMs: (opts) => opts.bounded ? 60_000 : 120_000,
};

const meliLocations: Scenario = {
  name: "meli_locations",
  summary:
    "a multi-origin MercadoLibre seller in delta mode (two warehouses): three SIGKILLs between a write and its record, lost answers, x-version conflicts",
  variants: () => [""],
  // Every MeLi write answers 300 ms after it is applied: a kill lands between "applied" and "recorded",
  // and the next instance must settle the write it finds persisted, never subtract the sale again.
  world: () => ({
    meliLocations: { mode: "delta" },
    meliFaults: { answerDelayMs: 300, lostResponseRate: 0.05, conflictRate: 0.1 },
  }),
  async run(world, _variant, opts) {
    const svc = world.addService();
    await world.startAll();
    const sales = world.makeSales(opts.sales, opts.seed);
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    await meliChainStored(world);
    for (let kill = 1; kill <= 3; kill++) {
      await published(world, Math.floor(sales.length * kill / 4));
      let inFlight = 0;
      try {
        inFlight = await until(
          async () => {
            const [r] = await world.sql<{ n: number }[]>`
              select count(*)::int as n from sync_batch
               where status = 'sending' and sent_at is not null and channel = 'mercadolibre'`;
            return r.n > 0 ? r.n : undefined;
          },
          "a MeLi batch in flight",
          10_000,
          5,
        );
      } catch {
        world.notes.push(`kill ${kill}: no MeLi batch was in flight within 10 s; killed anyway`);
      }
      await killAndRestart(
        world,
        svc,
        `SIGKILL ${kill} with ${inFlight} MeLi batch(es) sending at ${world.sales.length} sales`,
      );
    }
    await burst;
  },
  settleMs: (opts) => opts.bounded ? 60_000 : 120_000,
};

const marketplaceOrders: Scenario = {
  name: "marketplace_orders",
  summary:
    "Shopify and MercadoLibre orders and cancellations among the POS sales; 20 % of webhooks lost, a SIGKILL, catch-up",
  variants: () => [""],
  world: () => ({
    // A fifth of Shopify's webhooks never arrive: the catch-up poll must find those orders.
    shopifyFaults: { webhookDropRate: 0.2 },
    env: { ORDERS_POLL_INTERVAL: "10s" },
  }),
  async run(world, _variant, opts) {
    const svc = world.addService();
    await world.startAll();
    // What the app's subscriptions and MercadoLibre's callback URL would point at.
    for (const topic of ["orders/create", "orders/cancelled", "refunds/create"] as const) {
      world.shopify.subscribeWebhook(topic, `${svc.url}/webhooks/shopify`);
    }
    world.meli.setNotificationUrl(`${svc.url}/webhooks/mercadolibre`);
    const sales = world.makeSales(opts.sales, opts.seed);
    const burst = background(world.burst(sales, { perSecond: pace(opts) }));
    await meliChainStored(world);
    // Well-stocked products sell online too (the POS never runs them out meanwhile).
    const stocked = world.products().filter((p) =>
      world.catalog.stores.every((s) => (p.stock[s.tienda_id] ?? 0) >= 40) &&
      world.meli.listingFor(p.producto_id)
    ).slice(0, 6);
    const count = opts.bounded ? 12 : 40;
    let refused = 0, cancelled = 0;
    for (let i = 0; i < count; i++) {
      await published(world, Math.floor(sales.length * (i + 1) / (count + 2)));
      const p = stocked[i % stocked.length];
      try {
        if (i % 2 === 0) {
          const store = world.catalog.stores[(i / 2) % world.catalog.stores.length].tienda_id;
          const order = world.shopify.placeOrder({
            tiendaId: store,
            lines: [{ sku: p.sku, quantity: 1 + (i % 3) }],
            sourceName: "pos",
          });
          world.orders.push({
            origin: "shopify",
            orderId: String(order.id),
            tiendaId: store,
            sku: p.sku,
            quantity: 1 + (i % 3),
            restocked: 0,
            restocks: [],
          });
        } else {
          const listing = world.meli.listingFor(p.producto_id)!;
          const order = world.meli.sell({
            items: [{ item_id: listing.itemId, variation_id: listing.variationId, quantity: 1 }],
          });
          world.orders.push({
            origin: "mercadolibre",
            orderId: String(order.id),
            tiendaId: world.meliStore,
            sku: p.sku,
            quantity: 1,
            restocked: 0,
            restocks: [],
          });
        }
      } catch (error) {
        refused++;
        world.notes.push(`order ${i} refused by the sandbox: ${(error as Error).message}`);
      }
      // Every fourth order is cancelled with a restock, once the service has taken the order: one
      // cancelled before anybody saw it paid has no effect at all (MercadoLibre shows it cancelled).
      if (i % 4 === 3 && world.orders.length > 0) {
        const o = world.orders[world.orders.length - 1];
        const eventId = `order:${o.origin}:${o.orderId}`;
        await until(
          async () => (await world.sql`select 1 from sale where event_id = ${eventId}`).length > 0,
          `order ${eventId} taken`,
          30_000,
          50,
        );
        if (o.origin === "shopify") {
          const order = world.shopify.cancelOrder(Number(o.orderId), { restock: true }) as {
            refunds: { id: number | string }[];
          };
          o.restocks.push(String(order.refunds[order.refunds.length - 1].id));
        } else {
          world.meli.cancelOrder(Number(o.orderId));
          o.restocks.push("cancel");
        }
        o.restocked = o.quantity;
        cancelled++;
      }
      if (i === Math.floor(count / 2)) {
        await killAndRestart(
          world,
          svc,
          `SIGKILL after ${world.orders.length} orders, at ${world.sales.length} sales`,
        );
      }
    }
    await burst;
    const dropped = world.shopify.webhookDeliveries().filter((d) => d.state !== "delivered").length;
    world.notes.push(
      `${world.orders.length} orders (${
        world.orders.filter((o) => o.origin === "shopify").length
      } Shopify, ` +
        `${world.orders.filter((o) => o.origin === "mercadolibre").length} MercadoLibre), ${cancelled} ` +
        `cancelled, ${refused} refused; ${dropped} Shopify webhooks not delivered (lost or during the kill)`,
    );
  },
  settleMs: (opts) => opts.bounded ? 60_000 : 120_000,
};

export const SCENARIOS: readonly Scenario[] = [
  rabbitRestart,
  sigkill,
  postgresRestart,
  postgresBackendKills,
  redisRestart,
  sandboxFaults,
  outageThenReplay,
  threeInstances,
  quorumDeliveryLimit,
  meliSlowerThanLock,
  resyncUnderLoad,
  stockRules,
  meliLocations,
  marketplaceOrders,
];
