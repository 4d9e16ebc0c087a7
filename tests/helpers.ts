/**
 * Test harness: every test gets its own exchange, queue, ledger schema and HTTP
 * port, and talks to the real RabbitMQ, Postgres and Redis on loopback.
 */
import { Buffer } from "node:buffer";
import { Connection, type Envelope, type SyncMessage } from "rabbitmq-client";
import postgres from "postgres";
import { originalContentEncoding } from "../src/broker/raw_body.ts";
import { type Config, loadConfig } from "../src/config.ts";
import type { Topology } from "../src/broker/topology.ts";
import { type RunningService, startService } from "../src/main.ts";
import { isolatedServiceEnv } from "../scripts/support/service_env.ts";
import { SET_AVAILABLE } from "../src/channels/shopify/documents.ts";
import type { ShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { type BucketShape, LocalBucket, type RateBudget } from "../src/sync/cost_bucket.ts";
import { ShopifyClient } from "../src/channels/shopify/client.ts";
import { createMetrics, type ServiceMetrics } from "../src/metrics.ts";

export const RABBITMQ_URL = Deno.env.get("TEST_RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5672";
export const DATABASE_URL = Deno.env.get("TEST_DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/test";
export const REDIS_URL = Deno.env.get("TEST_REDIS_URL") ?? "redis://127.0.0.1:6379";

/** Deno.test for tests that hold sockets and timers across awaits. */
export function integration(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

/** A short unique suffix for this test's names. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
}

/** Environment for a service that only touches this test's own names. */
export function testEnv(overrides: Record<string, string> = {}): Record<string, string> {
  const id = uniqueName("t");
  return {
    ...isolatedServiceEnv({ RABBITMQ_URL, DATABASE_URL, REDIS_URL }, id),
    RETRY_DELAYS: "100ms,200ms,300ms",
    // Custody tests look at pending changes; sync tests turn dispatching on.
    DISPATCH_ENABLED: "false",
    LOG_LEVEL: Deno.env.get("TEST_LOG_LEVEL") ?? "fatal",
    ...overrides,
  };
}

/** Validated config for a test service. */
export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig(testEnv(overrides));
}

/** A service plus everything a test needs to poke at it, and cleanup. */
export interface Harness {
  service: RunningService;
  config: Config;
  rabbit: Connection;
  sql: postgres.Sql;
  publish(body: unknown, envelope?: Envelope): Promise<void>;
  /** Publishes straight into our work queue, as a DLQ replay does. */
  publishToQueue(body: unknown, envelope?: Envelope): Promise<void>;
  /** Drains the DLQ and returns its messages. */
  takeDeadLetters(): Promise<SyncMessage[]>;
  queueDepth(queue?: string): Promise<number>;
  close(): Promise<void>;
}

/** Bodies as Buffers: rabbitmq-client JSON-encodes anything else that is not a string. */
function encode(body: unknown): Buffer {
  if (body instanceof Uint8Array) return Buffer.from(body);
  return Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
}

/** Starts a service with test names and returns a harness around it. */
export async function startHarness(overrides: Record<string, string> = {}): Promise<Harness> {
  const config = testConfig(overrides);
  const service = startService(config);
  await service.started;
  return await harnessFor(service, config);
}

/** Builds the probing side of a harness for a service (or config) under test. */
export async function harnessFor(service: RunningService, config: Config): Promise<Harness> {
  const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  await rabbit.onConnect(5000);
  const publisher = rabbit.createPublisher({ confirm: true });
  const sql = postgres(DATABASE_URL, {
    max: 2,
    onnotice: () => {},
    connection: { search_path: config.LEDGER_SCHEMA },
  });
  const topology = service.topology;
  return {
    service,
    config,
    rabbit,
    sql,
    publish: (body, envelope = {}) =>
      publisher.send({
        exchange: topology.exchange,
        routingKey: topology.routingKey,
        contentType: "application/json",
        durable: true,
        ...envelope,
      }, encode(body)),
    publishToQueue: (body, envelope = {}) =>
      publisher.send({
        exchange: "",
        routingKey: topology.queue,
        contentType: "application/json",
        durable: true,
        ...envelope,
      }, encode(body)),
    async takeDeadLetters() {
      const out: SyncMessage[] = [];
      for (;;) {
        const msg = await rabbit.basicGet({ queue: topology.deadLetterQueue, noAck: true });
        if (!msg) return out;
        // The service's raw-body hook is process-wide; undo its marker here too.
        out.push({ ...msg, contentEncoding: originalContentEncoding(msg.contentEncoding) });
      }
    },
    async queueDepth(queue = topology.queue) {
      const ok = await rabbit.queueDeclare({ queue, passive: true });
      return ok.messageCount;
    },
    async close() {
      await service.close();
      await dropTestNames(rabbit, sql, topology, config.LEDGER_SCHEMA);
      await sql.end({ timeout: 2 });
      await publisher.close();
      await rabbit.close();
    },
  };
}

/** Removes a test's queues, exchange and ledger schema. */
export async function dropTestNames(
  rabbit: Connection,
  sql: postgres.Sql,
  topology: Topology,
  schema: string,
): Promise<void> {
  for (const q of [topology.queue, ...topology.retryQueues.map((r) => r.name), topology.deadLetterQueue]) {
    await rabbit.queueDelete({ queue: q }).catch(() => {});
  }
  await rabbit.exchangeDelete({ exchange: topology.exchange }).catch(() => {});
  await sql.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
}

/** Polls `check` until it returns a truthy value or the time runs out. */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  what: string,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
}

/** The fields an item of a sale may carry (docs/DESIGN.md §3). */
export const SALE_ITEM_FIELDS = [
  "producto_id",
  "producto_nombre",
  "producto_sku",
  "cantidad",
  "precio_unitario",
  "subtotal",
] as const;

/** A valid sale event with overridable fields. */
export function sale(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event_id: crypto.randomUUID(),
    tienda_id: "11111111-1111-4111-8111-111111111111",
    total: 1250.5,
    metodo_pago: "EFECTIVO",
    items: [
      {
        producto_id: "22222222-2222-4222-8222-222222222222",
        producto_nombre: "Remera Blend",
        producto_sku: "REMERA-001",
        cantidad: 2,
        precio_unitario: 500.25,
        subtotal: 1000.5,
      },
    ],
    timestamp: "2024-01-15T10:30:45Z",
    ...overrides,
  };
}

/** Reads a header from a DLQ message as a string. */
export function header(msg: SyncMessage, name: string): string | undefined {
  const v = msg.headers?.[name];
  return v === undefined ? undefined : String(v);
}

/** "promtool" when Prometheus's promtool is installed (CI installs it), else undefined. */
export async function findPromtool(): Promise<string | undefined> {
  try {
    const { success } = await new Deno.Command("promtool", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return success ? "promtool" : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `rabbitmqctl` with these arguments; throws with its output when it fails. */
export async function rabbitmqctl(...args: string[]): Promise<void> {
  const out = await new Deno.Command("rabbitmqctl", {
    args: ["-q", ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(`rabbitmqctl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * An operator's policy on exactly the queues named `prefix` or `prefix.*`, as
 * `rabbitmqctl set_policy` sets it; cleared by the returned function.
 */
export async function policyOn(prefix: string, definition: Record<string, unknown>) {
  const name = `test-${prefix}`;
  const pattern = `^${prefix.replaceAll(".", "\\.")}(\\.|$)`;
  await rabbitmqctl("set_policy", "--apply-to", "queues", name, pattern, JSON.stringify(definition));
  return () => rabbitmqctl("clear_policy", name);
}

/** An operator call to a test service with its admin token: the status and the JSON body. */
export async function adminApi(
  h: Harness,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; body: any }> {
  const r = await fetch(`${h.service.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

/** Starts a resync through `POST /resync` and returns the job once it is no longer running. */
// deno-lint-ignore no-explicit-any
export async function runResync(h: Harness, token: string, request: unknown): Promise<any> {
  const started = await adminApi(h, token, "POST", "/resync", request);
  if (started.status !== 202) {
    throw new Error(`POST /resync answered ${started.status}: ${JSON.stringify(started.body)}`);
  }
  return await waitFor(
    async () => {
      const job = await adminApi(h, token, "GET", `/resync/${started.body.id}`);
      return job.body.state !== "running" ? job.body : undefined;
    },
    "resync finished",
    30_000,
  );
}

/**
 * Sets one Shopify listing behind the service's back (another system, a merchant), through the sandbox's own
 * Admin API, compared with what it holds.
 */
export async function setShopifyAvailable(
  shop: ShopifySandbox,
  ref: { item: string; location: string },
  quantity: number,
): Promise<void> {
  const res = await fetch(shop.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", "x-shopify-access-token": shop.token },
    body: JSON.stringify({
      query: SET_AVAILABLE,
      variables: {
        key: crypto.randomUUID(),
        input: {
          name: "available",
          reason: "correction",
          referenceDocumentUri: "gid://test/Merchant/1",
          quantities: [{
            inventoryItemId: ref.item,
            locationId: ref.location,
            quantity,
            changeFromQuantity: shop.available(ref.item, ref.location),
          }],
        },
      },
    }),
  });
  const body = await res.json();
  if (body.data?.inventorySetQuantities?.userErrors?.length !== 0) {
    throw new Error(`could not set the listing: ${JSON.stringify(body)}`);
  }
}

/** A rate budget, with what each call took from it before it was sent (the client's estimate of the request). */
export class RecordingBudget implements RateBudget {
  readonly takes: number[] = [];
  constructor(private readonly inner: RateBudget) {}
  get level(): number {
    return this.inner.level;
  }
  get shape(): BucketShape {
    return this.inner.shape;
  }
  take(cost: number, signal?: AbortSignal, keep?: number): Promise<number> {
    this.takes.push(cost);
    return this.inner.take(cost, signal, keep);
  }
  observe(available: number, shape?: BucketShape, refund?: number): Promise<void> {
    return this.inner.observe(available, shape, refund);
  }
}

/**
 * The service's Shopify client pointed at a sandbox as if it were the shop: the Standard budget in this process
 * and metrics of its own unless given.
 */
export function sandboxShopifyClient(
  shop: Pick<ShopifySandbox, "url" | "token" | "apiVersion">,
  options: { budget?: RateBudget; metrics?: ServiceMetrics; timeoutMs?: number } = {},
): ShopifyClient {
  return new ShopifyClient({
    baseUrl: shop.url,
    token: shop.token,
    apiVersion: shop.apiVersion,
    timeoutMs: options.timeoutMs ?? 5_000,
    budget: options.budget ?? new LocalBucket({ max: 2000, restoreRate: 100 }),
    metrics: options.metrics ?? createMetrics(`${uniqueName("shopify_client")}_`, () => Promise.resolve([])),
  });
}
