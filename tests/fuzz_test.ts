/**
 * Fuzzed input (issue #7 item 3): property-generated malformed and hostile
 * `sales.created` messages (tests/fuzz/hostile_events.ts) against a real service.
 *
 * Every malformed message lands in the DLQ exactly once with a reason, a human
 * message and its body byte for byte; every hostile-but-valid one is stored with
 * its SKUs byte for byte and synced to the Shopify sandbox by search variables
 * (a SKU full of search or GraphQL syntax is not found, the catalog's own
 * metacharacter SKU is found and applied, the sandbox never sees an invalid
 * document); the work queue drains, `/healthz` answers 200 throughout and
 * `/readyz` at the end. The service's debug log of the whole run is scanned for
 * its secrets (item 4).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import type { SyncMessage } from "rabbitmq-client";
import { decodeSaleEvent, type EventLimits } from "../src/model/sale_event.ts";
import { resetLogging, setupLogging } from "../src/log.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import {
  DEFAULT_LIMITS,
  HOSTILE_KINDS,
  type HostileKind,
  hostileKinds,
  type HostileSample,
  STORE,
} from "./fuzz/hostile_events.ts";
import {
  DATABASE_URL,
  header,
  integration,
  REDIS_URL,
  SALE_ITEM_FIELDS,
  startHarness,
  waitFor,
} from "./helpers.ts";
import { describeHits, scanForSecrets } from "../scripts/support/secrets.ts";

const SEED = 0x7_0003;
const PER_KIND = Number(Deno.env.get("FUZZ_PER_KIND") ?? 5);
const VALIDATOR_RUNS = Number(Deno.env.get("FUZZ_VALIDATOR_RUNS") ?? 2_000);
const REASONS = new Set(["too_large", "invalid_encoding", "invalid_json", "invalid_event"]);
const encoder = new TextEncoder();

/** Samples of every kind, reproducible from the seed. */
function samplesOf(kinds: HostileKind[]): { kind: string; k: number; i: number; sample: HostileSample }[] {
  return kinds.flatMap((kind, k) =>
    fc.sample(kind.arbitrary, { seed: SEED + k, numRuns: PER_KIND }).map((sample, i) => ({
      kind: kind.kind,
      k,
      i,
      sample,
    }))
  );
}

/** What the validator says about a sample, checked against the sample's expectation. */
function checkDecode(sample: HostileSample, limits: EventLimits): string | undefined {
  let result;
  try {
    result = decodeSaleEvent(sample.body, {
      messageId: "fuzz",
      contentEncoding: sample.envelope?.contentEncoding,
    }, limits);
  } catch (error) {
    return `threw ${(error as Error)?.stack ?? String(error)}`;
  }
  if (!result.ok) {
    const { reason, message } = result.rejection;
    if (!REASONS.has(reason) || typeof message !== "string" || message.length === 0) {
      return `malformed rejection ${JSON.stringify(result.rejection)}`;
    }
  }
  // The validator passes what only Postgres refuses (ledger_rejected).
  const wantOk = sample.expect === "stored" || sample.reason === "ledger_rejected";
  if (result.ok !== wantOk) {
    return `expected ${wantOk ? "ok" : sample.reason}, got ${
      result.ok ? "ok" : `${result.rejection.reason}: ${result.rejection.message.slice(0, 200)}`
    }`;
  }
  if (!result.ok && sample.reason !== result.rejection.reason) {
    return `expected ${sample.reason}, got ${result.rejection.reason}: ${
      result.rejection.message.slice(0, 200)
    }`;
  }
  if (result.ok && sample.stored) {
    const got = result.event.items.map((i) => [i.sku, i.quantity]);
    const want = sample.stored.skus.map((s) => [s.sku, s.quantity]);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      return `items ${JSON.stringify(got)} ≠ ${JSON.stringify(want)}`;
    }
    if (result.event.tiendaId !== sample.stored.tiendaId) return `tienda_id ${result.event.tiendaId}`;
  }
  return undefined;
}

Deno.test(`the validator never throws and agrees with every hostile kind (${VALIDATOR_RUNS} runs)`, () => {
  assert.ok(HOSTILE_KINDS.length >= 40, `${HOSTILE_KINDS.length} kinds`);
  assert.equal(new Set(HOSTILE_KINDS.map((k) => k.kind)).size, HOSTILE_KINDS.length, "kind names are unique");
  // Small limits too, so the boundaries move under the same arbitraries.
  const small: EventLimits = { maxBytes: 4096, maxItems: 5, maxQuantity: 1000 };
  const hostile = fc.oneof(
    ...HOSTILE_KINDS.map((k) => k.arbitrary.map((sample) => ({ kind: k.kind, sample }))),
  );
  const anyBytes = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.string({ unit: "binary", maxLength: 300 }).map((s) => encoder.encode(s)),
    fc.jsonValue().map((v) => encoder.encode(JSON.stringify(v) ?? "")),
  );
  // Valid sales with known fields overwritten by anything JSON can hold.
  const mutated = fc.tuple(
    fc.dictionary(
      fc.constantFrom("event_id", "venta_id", "tienda_id", "total", "metodo_pago", "timestamp", "items", "x"),
      fc.jsonValue({ maxDepth: 3 }),
      { maxKeys: 3 },
    ),
    fc.dictionary(
      fc.constantFrom(...SALE_ITEM_FIELDS),
      fc.jsonValue({ maxDepth: 2 }),
      { maxKeys: 3 },
    ),
  ).map(([top, inItem]) =>
    encoder.encode(JSON.stringify({
      tienda_id: STORE,
      items: [{ producto_sku: "A", cantidad: 1, ...inItem }],
      ...top,
    }))
  );
  fc.assert(
    fc.property(
      fc.oneof(
        { arbitrary: hostile.map((h) => ({ ...h, limits: DEFAULT_LIMITS })), weight: 4 },
        { arbitrary: anyBytes.map((body) => ({ kind: "random bytes", sample: undefined, body })), weight: 2 },
        { arbitrary: mutated.map((body) => ({ kind: "mutated sale", sample: undefined, body })), weight: 2 },
      ),
      fc.boolean(),
      (input, useSmall) => {
        if ("limits" in input) {
          const problem = checkDecode(input.sample, input.limits);
          assert.equal(problem, undefined, `${input.kind}: ${problem}`);
        } else {
          const limits = useSmall ? small : DEFAULT_LIMITS;
          const result = decodeSaleEvent(input.body, {}, limits);
          if (!result.ok) {
            assert.ok(REASONS.has(result.rejection.reason), JSON.stringify(result.rejection));
            assert.ok(result.rejection.message.length > 0);
          } else {
            assert.ok(result.event.items.length >= 1);
            assert.ok(result.event.eventId.length > 0);
          }
        }
        // Nothing a message says reaches Object.prototype.
        assert.equal(({} as Record<string, unknown>).polluted, undefined);
        assert.equal(({} as Record<string, unknown>).isAdmin, undefined);
      },
    ),
    { numRuns: VALIDATOR_RUNS, seed: SEED },
  );
});

/** Expected Shopify outcome of a stored change against the default sandbox catalog. */
function expectedShopify(tiendaId: string, sku: string): string {
  const catalog = defaultCatalog();
  if (!catalog.stores.some((s) => s.tienda_id === tiendaId)) return "store_unmapped";
  const matches = catalog.products.filter((p) => p.sku === sku).length;
  return matches === 1 ? "applied" : matches > 1 ? "sku_ambiguous" : "sku_not_found";
}

/** The body of a DLQ message as bytes. */
function bodyOf(msg: SyncMessage): Uint8Array {
  return msg.body instanceof Uint8Array ? new Uint8Array(msg.body) : encoder.encode(String(msg.body ?? ""));
}

const withPassword = (url: string, user: string, password: string): string => {
  const u = new URL(url);
  if (u.password) return url; // already has one: scanned for below
  u.username ||= user;
  u.password = password;
  return u.toString();
};

integration(
  `${HOSTILE_KINDS.length} kinds × ${PER_KIND} hostile messages: DLQ with a reason or stored byte for byte; the service lives on`,
  async () => {
    const started = performance.now();
    const marker = crypto.randomUUID().slice(0, 8);
    const env = {
      CHANNELS: "shopify",
      DISPATCH_ENABLED: "true",
      DISPATCH_POLL_INTERVAL: "50ms",
      DISPATCH_BACKOFF_BASE: "50ms",
      DISPATCH_BACKOFF_MAX: "500ms",
      ADMIN_TOKEN: `fuzz-admin-token-${marker}`,
      // Trust auth and a password-less Redis user accept any password: distinctive ones to scan for.
      DATABASE_URL: withPassword(DATABASE_URL, "postgres", `pg-fuzz-s3cr3t-${marker}`),
      REDIS_URL: withPassword(REDIS_URL, "default", `redis-fuzz-s3cr3t-${marker}`),
    };
    const logs: string[] = [];
    await setupLogging({ level: "debug", format: "json", write: (line) => logs.push(line) });
    const h = await startHarness(env);
    const limits = {
      maxBytes: h.config.MAX_EVENT_BYTES,
      maxItems: h.config.MAX_ITEMS_PER_EVENT,
      maxQuantity: h.config.MAX_ITEM_QUANTITY,
    };
    const kinds = hostileKinds(limits);
    const health: string[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        try {
          const r = await fetch(`${h.service.url}/healthz`);
          await r.body?.cancel();
          if (r.status !== 200) health.push(`HTTP ${r.status}`);
        } catch (error) {
          health.push((error as Error).message);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      const all = samplesOf(kinds).map((s) => {
        const id = `fuzz:${s.k}:${s.i}`;
        return {
          ...s,
          messageId: s.sample.envelope?.messageId ? `${s.sample.envelope.messageId}#${id}` : id,
        };
      });
      const byId = new Map(all.map((s) => [s.messageId, s]));
      for (let at = 0; at < all.length; at += 25) {
        await Promise.all(
          all.slice(at, at + 25).map(({ sample, messageId }) =>
            h.publish(sample.body, {
              ...(sample.envelope?.contentType !== undefined
                ? { contentType: sample.envelope.contentType }
                : {}),
              ...(sample.envelope?.contentEncoding
                ? { contentEncoding: sample.envelope.contentEncoding }
                : {}),
              headers: { "x-origin": "fuzz", ...sample.envelope?.headers },
              messageId,
            })
          ),
        );
      }
      const published = performance.now();
      const wantDlq = all.filter((s) => s.sample.expect === "dlq");
      const wantStored = all.filter((s) => s.sample.expect === "stored");

      // Consumed and acked exactly once each: a message nacked back into the queue in a loop shows here
      // (a passive queue declare does not count unacked messages).
      const counted = async () => {
        const sum = async (c: { get(): Promise<{ values: { value: number }[] }> }) =>
          (await c.get()).values.reduce((n, v) => n + v.value, 0);
        return {
          consumed: await sum(h.service.metrics.eventsConsumed),
          acked: await sum(h.service.metrics.eventsAcked),
        };
      };

      // Custody: every dead letter in, every valid sale stored, the work queue empty.
      const dead: SyncMessage[] = [];
      const copies: SyncMessage[] = [];
      const take = async () => {
        for (const msg of await h.takeDeadLetters()) (header(msg, "sync-channel") ? copies : dead).push(msg);
      };
      await waitFor(
        async () => {
          await take();
          const ids = new Set(dead.map((m) => m.messageId));
          const storedIds = (await h.sql<{ event_id: string }[]>`select event_id from sale`).map((r) =>
            r.event_id
          );
          const stored = new Set(storedIds);
          const { consumed, acked } = await counted();
          return wantDlq.every((s) => ids.has(s.messageId)) &&
            wantStored.every((s) => stored.has(s.messageId)) && await h.queueDepth() === 0 &&
            consumed === all.length && acked === all.length;
        },
        "every hostile message dead-lettered or stored, and the work queue drained",
        30_000,
        100,
      ).catch(async (error) => {
        const ids = new Set(dead.map((m) => m.messageId));
        const missing = wantDlq.filter((s) => !ids.has(s.messageId)).map((s) => `${s.kind} (${s.messageId})`);
        const { consumed, acked } = await counted();
        throw new Error(
          `${(error as Error).message}\nqueue depth ${await h.queueDepth()}, ${all.length} published, ` +
            `${consumed} consumed, ${acked} acked; missing from the DLQ: ${[...new Set(missing)].join("; ")}`,
        );
      });
      const custodyDone = performance.now();

      // Dispatch: every change settled (applied or failed) on the Shopify sandbox.
      await waitFor(
        async () =>
          (await h.sql<{ n: number }[]>`
            select count(*)::int as n from stock_change where status in ('pending', 'sending')`)[0].n === 0,
        "every stored change applied or failed",
        30_000,
        100,
      );
      await new Promise((r) => setTimeout(r, 300));
      await take();

      const problems: string[] = [];
      const reasonsByKind = new Map<string, Set<string>>();
      const note = (kind: string, what: string) => {
        if (!reasonsByKind.has(kind)) reasonsByKind.set(kind, new Set());
        reasonsByKind.get(kind)!.add(what);
      };

      // Dead letters: exactly once each, the expected reason, a message, the body intact.
      const deadById = new Map<string, SyncMessage[]>();
      for (const msg of dead) {
        const id = String(msg.messageId);
        deadById.set(id, [...deadById.get(id) ?? [], msg]);
        if (!byId.has(id) || byId.get(id)!.sample.expect !== "dlq") {
          problems.push(
            `unexpected dead letter ${id} (${header(msg, "sync-reason")}: ${header(msg, "sync-error")})`,
          );
        }
      }
      for (const s of wantDlq) {
        const got = deadById.get(s.messageId) ?? [];
        const label = `${s.kind} #${s.i}`;
        if (got.length !== 1) {
          problems.push(`${label}: ${got.length} copies in the DLQ`);
          continue;
        }
        const msg = got[0];
        const reason = header(msg, "sync-reason") ?? "";
        note(s.kind, reason);
        if (reason !== s.sample.reason) {
          problems.push(`${label}: reason ${reason}, expected ${s.sample.reason}`);
        }
        if (!(header(msg, "sync-error") ?? "").trim()) problems.push(`${label}: no sync-error`);
        if (s.sample.headersDropped) {
          const dropped = header(msg, "sync-dropped-headers") ?? "";
          if (!dropped.includes("x-origin") || !dropped.includes("x-pos-trace")) {
            problems.push(`${label}: sync-dropped-headers "${dropped}" does not name the dropped headers`);
          }
        } else if (header(msg, "x-origin") !== "fuzz" || header(msg, "sync-dropped-headers")) {
          problems.push(`${label}: original headers lost (${Object.keys(msg.headers ?? {}).join(", ")})`);
        }
        if (msg.contentEncoding !== s.sample.envelope?.contentEncoding) {
          problems.push(`${label}: content_encoding ${msg.contentEncoding}`);
        }
        const body = bodyOf(msg);
        if (body.byteLength !== s.sample.body.byteLength || !body.every((b, i) => b === s.sample.body[i])) {
          problems.push(`${label}: DLQ body differs from what was published (${body.byteLength} bytes)`);
        }
      }

      // Stored: the sale, and one change per SKU with the SKU byte for byte and the summed delta.
      const rows = await h.sql<
        {
          event_id: string;
          tienda_id: string;
          sku: string;
          sku_bytes: Uint8Array;
          delta: number;
          status: string;
          error_reason: string | null;
        }[]
      >`
        select s.event_id, c.tienda_id, c.sku, convert_to(c.sku, 'UTF8') as sku_bytes, c.delta, c.status,
               c.error_reason
          from sale s join stock_change c using (event_id)
         where c.channel = 'shopify'`;
      const changesOf = new Map<string, (typeof rows)[number][]>();
      for (const r of rows) changesOf.set(r.event_id, [...changesOf.get(r.event_id) ?? [], r]);
      const storedCount = (await h.sql<{ n: number }[]>`select count(*)::int as n from sale`)[0].n;
      if (storedCount !== wantStored.length) {
        problems.push(`${storedCount} sales stored, expected ${wantStored.length}`);
      }
      for (const s of wantStored) {
        const label = `${s.kind} #${s.i}`;
        const want = s.sample.stored!;
        const got = changesOf.get(s.messageId) ?? [];
        if (got.length !== want.skus.length) {
          problems.push(`${label}: ${got.length} changes, expected ${want.skus.length}`);
          continue;
        }
        for (const { sku, quantity } of want.skus) {
          const change = got.find((r) => r.sku === sku);
          if (!change) {
            problems.push(`${label}: SKU ${JSON.stringify(sku)} not in the ledger`);
            continue;
          }
          const bytes = encoder.encode(sku);
          const stored = new Uint8Array(change.sku_bytes);
          if (stored.byteLength !== bytes.byteLength || !stored.every((b, i) => b === bytes[i])) {
            problems.push(`${label}: SKU bytes differ in the ledger`);
          }
          if (change.delta !== -quantity) {
            problems.push(`${label}: delta ${change.delta}, expected ${-quantity}`);
          }
          if (change.tienda_id !== want.tiendaId) problems.push(`${label}: tienda_id ${change.tienda_id}`);
          const outcome = change.status === "applied" ? "applied" : change.error_reason ?? change.status;
          note(s.kind, `stored→${outcome}`);
          const expected = expectedShopify(want.tiendaId, sku);
          if (outcome !== expected) {
            problems.push(
              `${label}: Shopify outcome ${outcome} for SKU ${JSON.stringify(sku)}, expected ${expected}`,
            );
          }
        }
      }
      // The dispatcher's copies of failed sales name the channel and the reason, and only for stored sales.
      for (const msg of copies) {
        const s = byId.get(String(msg.messageId));
        if (!s || s.sample.expect !== "stored") problems.push(`DLQ copy of unknown sale ${msg.messageId}`);
        if (header(msg, "sync-channel") !== "shopify" || !header(msg, "sync-reason")) {
          problems.push(`DLQ copy ${msg.messageId} without channel or reason`);
        }
      }

      const sandbox = h.service.shopifySandbox()!;
      const stats = sandbox.stats();
      if (stats.invalid !== 0) {
        problems.push(`the Shopify sandbox refused ${stats.invalid} invalid documents`);
      }
      if (stats.unauthorized !== 0) {
        problems.push(`the Shopify sandbox answered 401 ${stats.unauthorized} times`);
      }
      if (await h.queueDepth() !== 0) problems.push(`work queue holds ${await h.queueDepth()} messages`);
      const final = await counted();
      if (final.consumed !== all.length || final.acked !== all.length) {
        problems.push(
          `${all.length} published, ${final.consumed} consumed, ${final.acked} acked (redeliveries?)`,
        );
      }
      const ready = await fetch(`${h.service.url}/readyz`);
      if (ready.status !== 200) problems.push(`/readyz ${ready.status}: ${await ready.text()}`);
      else await ready.body?.cancel();
      polling = false;
      await poller;
      if (health.length > 0) {
        problems.push(`/healthz failed ${health.length} times: ${health.slice(0, 3).join("; ")}`);
      }

      // The report: distinct reasons per kind.
      const width = Math.max(...kinds.map((k) => k.kind.length));
      const table = kinds.map((k) =>
        `  ${k.kind.padEnd(width)}  ${
          [...reasonsByKind.get(k.kind) ?? new Set(["(none)"])].sort().join(", ")
        }`
      );
      console.log(
        `fuzz: ${all.length} messages (${wantDlq.length} dlq, ${wantStored.length} stored) of ${kinds.length} kinds; ` +
          `publish ${Math.round(published - started)} ms, custody ${
            Math.round(custodyDone - published)
          } ms, ` +
          `dispatch ${
            Math.round(performance.now() - custodyDone)
          } ms; ${copies.length} dispatcher DLQ copies; ` +
          `Shopify sandbox: ${stats.executed} documents executed, ${stats.invalid} invalid\n${
            table.join("\n")
          }`,
      );
      assert.deepEqual(problems, [], problems.join("\n"));

      // Item 4 for this run: the service's own debug log holds none of its secrets.
      const secrets = [
        env.ADMIN_TOKEN,
        sandbox.token,
        new URL(env.DATABASE_URL).password,
        new URL(env.REDIS_URL).password,
      ].filter((s) => s.length >= 8);
      const text = logs.join("");
      assert.ok(logs.length > 100, `the log was captured (${logs.length} lines)`);
      assert.ok(text.includes("dead-lettered message"), "the log covers the dead letters");
      const hits = scanForSecrets(text, secrets);
      assert.deepEqual(hits, [], describeHits("fuzz service log", text, hits, secrets));
      console.log(`fuzz: scanned ${logs.length} log lines for ${secrets.length} secrets: 0 hits`);
    } finally {
      polling = false;
      await poller;
      await h.close();
      await resetLogging();
    }
  },
);
