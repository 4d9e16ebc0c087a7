/**
 * Service configuration, read once from the environment and validated with zod.
 *
 * Every variable has a loopback default so `deno task start` runs with no
 * configuration at all. A bad value stops start-up with one error that lists
 * every problem by variable name; secret values are never echoed back.
 */
import { z } from "zod";
import { type ChannelName, KNOWN_CHANNELS } from "./model/channel_name.ts";
import { INVENTORY_REASONS } from "./model/shopify_reasons.ts";
import { hasRules, type StockRules } from "./model/stock_rule.ts";
import { parseStockRules } from "./config_stock_rules.ts";

/** Variables whose values must never appear in logs or error messages. */
export const SECRET_VARIABLES: ReadonlySet<string> = new Set([
  "ADMIN_TOKEN",
  "SHOPIFY_TOKEN",
  "MELI_TOKEN",
  "MELI_CLIENT_SECRET",
  "MELI_REFRESH_TOKEN",
  "SHOPIFY_WEBHOOK_SECRET",
]);

/** Variables that may carry credentials inside a URL. */
const URL_VARIABLES = new Set([
  "RABBITMQ_URL",
  "DATABASE_URL",
  "REDIS_URL",
  "POS_DATABASE_URL",
  "POS_REDIS_URL",
]);

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `250ms`, `4s`, `2m`, `1h` or a bare number of milliseconds. */
export function parseDurationMs(text: string): number | undefined {
  const m = DURATION_RE.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? "ms"]);
}

const duration = (name: string) =>
  z.string().transform((text, ctx) => {
    const ms = parseDurationMs(text);
    if (ms === undefined) {
      ctx.addIssue({
        code: "custom",
        message: `${name} must be a duration like 500ms, 4s or 2m (got "${text}")`,
      });
      return z.NEVER;
    }
    return ms;
  });

const int = (min: number, max: number) =>
  z.string().trim().regex(/^-?\d+$/, "must be a whole number").transform(Number).pipe(
    z.number().int().min(min).max(max),
  );

const url = (protocols: string[]) =>
  z.string().trim().refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `must be a URL starting with ${protocols.map((p) => p + "//").join(" or ")}`);

/** How resync finds a SKU's producto_id at a store (for the Redis key): $1 tienda_id, $2 sku. */
export const DEFAULT_POS_PRODUCT_QUERY =
  "select id::text from producto where tienda_id::text = $1::text and sku = $2::text limit 1";

/**
 * Where Shopify's bulk operation results are downloaded from: `BulkOperation.url` is a signed URL
 * on Google Cloud Storage (`https://storage.googleapis.com/shopify-tiers-assets-prod-us-east1/…`).
 */
export const DEFAULT_SHOPIFY_BULK_HOST = "storage.googleapis.com";

/** MercadoLibre's API. */
export const DEFAULT_MELI_URL = "https://api.mercadolibre.com";

/**
 * The POS catalog query mirror mode and resync fall back to when a Redis stock
 * key is missing: $1 tienda_id, $2 producto_id (may be null), $3 sku.
 */
export const DEFAULT_POS_STOCK_QUERY = "select stock_actual from producto where tienda_id::text = $1::text " +
  "and (id::text = $2::text or ($2::text is null and sku = $3::text)) limit 1";

/**
 * The POS catalog resync walks for `{"all": true}`: every product at the given stores, as
 * (tienda_id, sku, producto_id) in that column order; $1 is the store ids (a text[]).
 */
export const DEFAULT_POS_CATALOG_QUERY = "select tienda_id::text, sku, id::text from producto " +
  "where tienda_id::text = any($1::text[])";

const EnvSchema = z.object({
  RABBITMQ_URL: url(["amqp:", "amqps:"]).default("amqp://guest:guest@127.0.0.1:5672"),
  DATABASE_URL: url(["postgres:", "postgresql:"]).default(
    "postgres://postgres@127.0.0.1:5432/postgres",
  ),
  REDIS_URL: url(["redis:", "rediss:"]).default("redis://127.0.0.1:6379"),
  HTTP_HOST: z.string().trim().min(1).default("0.0.0.0"),
  HTTP_PORT: int(0, 65535).default(8080),
  ADMIN_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),

  EXCHANGE: z.string().trim().min(1).max(255).default("blend_events"),
  ROUTING_KEY: z.string().trim().min(1).max(255).default("sales.created"),
  QUEUE: z.string().trim().min(1).max(200).default("marketplace-sync.sales.created"),
  QUEUE_TYPE: z.enum(["classic", "quorum"]).default("classic"),
  // Quorum only: returns of one delivery (crashes, requeues) before the work queue
  // dead-letters it into our DLQ. Explicit so it never depends on the broker's default.
  QUEUE_DELIVERY_LIMIT: int(1, 1_000_000).default(20),
  RETRY_DELAYS: z.string().default("1s,4s,9s").transform((text, ctx) => {
    const parts = text.split(",").map((p) => p.trim()).filter(Boolean);
    const delays = parts.map(parseDurationMs);
    if (delays.some((d) => d === undefined || d < 1) || delays.length > 10) {
      ctx.addIssue({
        code: "custom",
        message: `must be up to 10 comma-separated durations like 1s,4s,9s (got "${text}")`,
      });
      return z.NEVER;
    }
    return delays as number[];
  }),
  CONSUMER_CONCURRENCY: int(1, 5000).default(1000),
  PREFETCH: int(1, 65535).optional(),
  CUSTODY_BATCH_SIZE: int(1, 5000).default(500),
  CUSTODY_WRITERS: int(1, 64).default(2),
  // 20 ms, not 5: at a steady 1 000 sales/s, fewer and larger custody transactions (28 % fewer commits,
  // a quarter less custody statement time in a 300 s bench run; docs/BENCHMARKS.md, issue #15), for 15 ms
  // more before a sale's ack. A burst fills batches to CUSTODY_BATCH_SIZE without waiting either way.
  CUSTODY_BATCH_WAIT: duration("CUSTODY_BATCH_WAIT").default(20),
  MAX_EVENT_BYTES: int(256, 16 * 1024 * 1024).default(256 * 1024),
  MAX_ITEMS_PER_EVENT: int(1, 10_000).default(1000),
  MAX_ITEM_QUANTITY: int(1, 1_000_000_000).default(1_000_000),
  SHUTDOWN_TIMEOUT: duration("SHUTDOWN_TIMEOUT").default(25_000),

  LEDGER_SCHEMA: z.string().regex(
    /^[a-z_][a-z0-9_]{0,62}$/,
    "must be a lower-case SQL identifier",
  ).default("marketplace_sync"),
  DATABASE_POOL_SIZE: int(1, 100).default(10),

  CHANNELS: z.string().default("shopify,mercadolibre").transform((text, ctx) => {
    const names = text.split(",").map((c) => c.trim().toLowerCase()).filter(Boolean);
    const unknown = names.filter((n) => !(KNOWN_CHANNELS as readonly string[]).includes(n));
    if (unknown.length > 0) {
      ctx.addIssue({
        code: "custom",
        message: `unknown channel(s) ${unknown.map((u) => `"${u}"`).join(", ")}; known: ${
          KNOWN_CHANNELS.join(", ")
        }`,
      });
      return z.NEVER;
    }
    return [...new Set(names)] as ChannelName[];
  }),

  SHOPIFY_URL: url(["https:", "http:"]).optional(),
  SHOPIFY_TOKEN: z.string().min(1).optional(),
  SHOPIFY_API_VERSION: z.string().regex(/^\d{4}-(01|04|07|10)$/, "must look like 2026-10")
    .default("2026-10"),
  SHOPIFY_LOCATION_ID: z.string().regex(
    /^gid:\/\/shopify\/Location\/\d+$/,
    "must be a Location gid like gid://shopify/Location/123",
  ).optional(),
  SHOPIFY_LOCATIONS: z.string().transform((text, ctx) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      ctx.addIssue({
        code: "custom",
        message: 'must be a JSON object {"<tienda_id>": "gid://shopify/Location/<id>"}',
      });
      return z.NEVER;
    }
    const map = z.record(z.string().min(1), z.string().regex(/^gid:\/\/shopify\/Location\/\d+$/)).safeParse(
      parsed,
    );
    if (!map.success) {
      ctx.addIssue({
        code: "custom",
        message:
          'must map each tienda_id to a Location gid like {"<tienda_id>": "gid://shopify/Location/123"}',
      });
      return z.NEVER;
    }
    return map.data;
  }).optional(),
  SHOPIFY_REASON: z.enum(INVENTORY_REASONS).default("correction"),
  SHOPIFY_TIMEOUT: duration("SHOPIFY_TIMEOUT").default(10_000),
  SHOPIFY_BUCKET_MAX: int(1, 1_000_000).default(2000),
  SHOPIFY_RESTORE_RATE: int(1, 100_000).default(100),
  SHOPIFY_BULK_HOST: z.string().trim().toLowerCase().regex(
    /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/,
    "must be a host name, optionally with :port (e.g. storage.googleapis.com)",
  ).default(DEFAULT_SHOPIFY_BULK_HOST),
  SANDBOX_SHOPIFY_PORT: int(0, 65535).default(0),
  SANDBOX_CATALOG: z.string().min(1).optional(),

  DISPATCH_ENABLED: z.enum(["true", "false"]).default("true").transform((v) => v === "true"),
  DISPATCH_MAX_ATTEMPTS: int(1, 1000).default(20),
  DISPATCH_LEASE: duration("DISPATCH_LEASE").default(30_000),
  DISPATCH_POLL_INTERVAL: duration("DISPATCH_POLL_INTERVAL").default(100),
  DISPATCH_LANES: int(1, 16).default(2),
  DISPATCH_BACKOFF_BASE: duration("DISPATCH_BACKOFF_BASE").default(1_000),
  DISPATCH_BACKOFF_MAX: duration("DISPATCH_BACKOFF_MAX").default(300_000),
  DLQ_COPY_SWEEP: duration("DLQ_COPY_SWEEP").default(30_000),
  /**
   * How often the service looks at its ledger tables' dead rows and statistics, to VACUUM and ANALYZE
   * those autovacuum does not look after (server or table setting); 0 never does. Does nothing when
   * autovacuum runs (src/ledger/upkeep.ts).
   */
  LEDGER_UPKEEP_INTERVAL: duration("LEDGER_UPKEEP_INTERVAL").pipe(
    z.number().refine((ms) => ms === 0 || ms >= 1_000, "must be 0 (off) or at least 1s"),
  ).default(30_000),

  MELI_URL: url(["https:", "http:"]).default(DEFAULT_MELI_URL),
  MELI_TOKEN: z.string().min(1).optional(),
  MELI_CLIENT_ID: z.string().min(1).optional(),
  MELI_CLIENT_SECRET: z.string().min(1).optional(),
  MELI_REFRESH_TOKEN: z.string().min(1).optional(),
  MELI_USER_ID: z.string().regex(/^\d+$/, "must be a numeric MercadoLibre user id").optional(),
  MELI_MODE: z.enum(["mirror", "delta"]).default("mirror"),
  MELI_TIENDA_ID: z.string().trim().min(1).max(200).optional(),
  MELI_LOCATIONS: z.string().transform(parseMeliLocations).optional(),
  MELI_REACTIVATE: z.enum(["true", "false"]).default("false").transform((v) => v === "true"),
  MELI_RATE_PER_SEC: z.string().trim().regex(
    /^\d+(\.\d+)?$/,
    "must be a positive number of requests per second",
  )
    .transform(Number).pipe(z.number().positive().max(1000)).default(5),
  MELI_TIMEOUT: duration("MELI_TIMEOUT").default(10_000),
  MELI_BATCH_SIZE: int(1, 200).default(10),
  MELI_LOCK_TTL: duration("MELI_LOCK_TTL").default(30_000),
  SANDBOX_MELI_PORT: int(0, 65535).default(0),
  SANDBOX_MELI_TOKEN_TTL: int(1, 31_536_000).default(21_600),

  POS_PRODUCT_QUERY: z.string().trim().min(1).default(DEFAULT_POS_PRODUCT_QUERY).refine(
    (q) => /^\s*(select|with)\b/i.test(q) && q.includes("$1") && q.includes("$2"),
    "must be a SELECT using $1 (tienda_id) and $2 (sku)",
  ),
  RESYNC_INTERVAL: duration("RESYNC_INTERVAL").pipe(z.number().min(60_000, "must be at least 1m")).optional(),
  RESYNC_MODE: z.enum(["dry_run", "write"]).default("dry_run"),
  /** How long a resync waits, per listing, for the channel's live work to finish first. */
  RESYNC_LIVE_WAIT: duration("RESYNC_LIVE_WAIT").default(5_000),

  POS_REDIS_URL: url(["redis:", "rediss:"]).optional(),
  POS_DATABASE_URL: url(["postgres:", "postgresql:"]).optional(),
  POS_STOCK_KEY: z.string().trim().default("stock:{tienda_id}:{producto_id}").refine(
    (t) => t.includes("{tienda_id}") && (t.includes("{producto_id}") || t.includes("{sku}")),
    "must contain {tienda_id} and {producto_id} or {sku}",
  ),
  POS_STOCK_QUERY: z.string().trim().min(1).default(DEFAULT_POS_STOCK_QUERY).refine(
    (q) => /^\s*(select|with)\b/i.test(q) && q.includes("$1"),
    "must be a SELECT using $1 (tienda_id), and $2 (producto_id) and/or $3 (sku)",
  ),
  POS_CATALOG_QUERY: z.string().trim().min(1).default(DEFAULT_POS_CATALOG_QUERY).refine(
    (q) => /^\s*(select|with)\b/i.test(q) && /\$1\b/.test(q) && !/\$(?!1\b)\d+/.test(q),
    "must be a SELECT of (tienda_id, sku, producto_id) using $1 (the store ids, a text[]) and no other parameter",
  ),

  // Marketplace orders (issue #14).
  /** How often each channel's orders are polled since the stored watermark (also once at start). */
  ORDERS_POLL_INTERVAL: duration("ORDERS_POLL_INTERVAL").pipe(
    z.number().min(10_000, "must be at least 10s").max(86_400_000, "must be at most 24h"),
  ).default(120_000),
  /** Largest order webhook / notification body taken (checked before the signature and the parse). */
  WEBHOOK_MAX_BYTES: int(1024, 16 * 1024 * 1024).default(1024 * 1024),
  /** The app's API secret key: Shopify signs its webhooks with it (X-Shopify-Hmac-Sha256). */
  SHOPIFY_WEBHOOK_SECRET: z.string().min(1).optional(),
  /** The store a Shopify order draws from when its location maps to none (else the only mapped store). */
  SHOPIFY_ORDER_TIENDA_ID: z.string().trim().min(1).max(200).optional(),
  /** Most order fetches MercadoLibre notifications may cause per minute (they share the seller's budget). */
  MELI_ORDER_FETCHES_PER_MINUTE: int(1, 10_000).default(60),
  /** How often the POS outbox is looked at when no order woke it. */
  POS_OUTBOX_POLL_INTERVAL: duration("POS_OUTBOX_POLL_INTERVAL").pipe(
    z.number().min(100, "must be at least 100ms"),
  ).default(1_000),

  /** Per-channel stock rules (JSON), validated in loadConfig so each problem names its JSON path. */
  STOCK_RULES: z.string().optional(),

  LOG_LEVEL: z.enum(["trace", "debug", "info", "warning", "error", "fatal"]).default("info"),
  LOG_FORMAT: z.enum(["auto", "json", "pretty"]).default("auto"),
  METRICS_PREFIX: z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/).default("marketplace_sync_"),
});

/** Where a POS store's stock goes on MercadoLibre (MELI_LOCATIONS). */
export type MeliLocation =
  | { type: "selling_address" }
  | { type: "seller_warehouse"; storeId: string; networkNodeId: string };

/**
 * MELI_LOCATIONS: `{"<tienda_id>": "selling_address"}` or
 * `{"<tienda_id>": {"store_id": "…", "network_node_id": "…"}}` per store. A user product
 * has either one selling_address or seller warehouses (MeLi's distributed stock), so the
 * two are not mixed, selling_address is one store's, and a warehouse is one store's.
 */
function parseMeliLocations(text: string, ctx: z.core.$RefinementCtx<string>): Record<string, MeliLocation> {
  const fail = (message: string) => {
    ctx.addIssue({ code: "custom", message });
    return z.NEVER;
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return fail(
      'must be a JSON object {"<tienda_id>": "selling_address"} or ' +
        '{"<tienda_id>": {"store_id": "…", "network_node_id": "…"}} (got text that is not JSON)',
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Object.keys(parsed).length) {
    return fail(`must be a non-empty JSON object of tienda_id → location (got ${JSON.stringify(parsed)})`);
  }
  const out: Record<string, MeliLocation> = {};
  const warehouse = z.object({
    store_id: z.string().trim().min(1),
    network_node_id: z.string().trim().min(1),
  })
    .strict();
  for (const [tiendaId, value] of Object.entries(parsed)) {
    if (tiendaId.trim() === "") return fail(`has an empty store key (got ${JSON.stringify(value)} for it)`);
    if (value === "selling_address") {
      out[tiendaId] = { type: "selling_address" };
      continue;
    }
    const w = warehouse.safeParse(value);
    if (!w.success) {
      return fail(
        `store "${tiendaId}" must map to "selling_address" or {"store_id": "…", "network_node_id": "…"} ` +
          `(got ${JSON.stringify(value)})`,
      );
    }
    out[tiendaId] = {
      type: "seller_warehouse",
      storeId: w.data.store_id,
      networkNodeId: w.data.network_node_id,
    };
  }
  const entries = Object.entries(out);
  const selling = entries.filter(([, l]) => l.type === "selling_address").map(([t]) => t);
  if (selling.length > 0 && selling.length < entries.length) {
    return fail(
      `mixes selling_address (store "${selling[0]}") with seller warehouses: a MercadoLibre user product ` +
        "has one or the other (got both)",
    );
  }
  if (selling.length > 1) {
    return fail(
      `maps stores "${
        selling.join('", "')
      }" to selling_address, which is one location (got ${selling.length})`,
    );
  }
  const byStore = new Map<string, string>();
  for (const [tiendaId, l] of entries) {
    if (l.type !== "seller_warehouse") continue;
    const other = byStore.get(l.storeId);
    if (other) {
      return fail(
        `maps stores "${other}" and "${tiendaId}" to the same store_id "${l.storeId}" (got it twice)`,
      );
    }
    byStore.set(l.storeId, tiendaId);
  }
  return out;
}

/** The names of every variable the service reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(EnvSchema.shape);

/** Validated service configuration; `stockRules` is `STOCK_RULES` parsed (empty when unset). */
export type Config = z.infer<typeof EnvSchema> & { prefetch: number; stockRules: StockRules };

/** Whether MercadoLibre credentials are configured (else the built-in sandbox stands in). */
export function meliConfigured(config: Config): boolean {
  return Boolean(config.MELI_TOKEN || config.MELI_CLIENT_ID);
}

/**
 * Sandbox mode: no marketplace is configured, so both channels talk to the built-in
 * sandboxes and no real store can be touched (the operator routes need no token then).
 */
export function sandboxMode(config: Config): boolean {
  return !config.SHOPIFY_URL && !meliConfigured(config);
}

/** Thrown when the environment holds invalid values; lists them all. */
export class ConfigError extends Error {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super(
      `invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` +
        problems.map((p) => `  - ${p.variable}: ${p.message}`).join("\n"),
    );
    this.name = "ConfigError";
  }
}

/**
 * Validates an environment map and returns the configuration.
 * Empty strings count as unset, so `FOO=` in a compose file means "default".
 * @throws ConfigError naming every invalid variable (never its secret value).
 */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const input: Record<string, string> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name];
    if (value !== undefined && value.trim() !== "") input[name] = value;
  }
  const result = EnvSchema.safeParse(input);
  const problems: { variable: string; message: string }[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      const variable = String(issue.path[0] ?? "environment");
      problems.push({ variable, message: describeIssue(variable, issue.message, input) });
    }
  }
  // Cross-variable rules are checked on the raw input so they are reported
  // together with the per-variable problems above.
  const meliOAuth = ["MELI_CLIENT_ID", "MELI_CLIENT_SECRET", "MELI_REFRESH_TOKEN"];
  const meliSet = meliOAuth.filter((name) => input[name] !== undefined);
  if (meliSet.length > 0 && meliSet.length < meliOAuth.length) {
    problems.push({
      variable: meliOAuth.find((name) => input[name] === undefined)!,
      message: "MELI_CLIENT_ID, MELI_CLIENT_SECRET and MELI_REFRESH_TOKEN must be set together",
    });
  }
  if (input.MELI_TOKEN !== undefined && meliSet.length > 0) {
    problems.push({
      variable: "MELI_TOKEN",
      message:
        "set either MELI_TOKEN (static token) or MELI_CLIENT_ID/MELI_CLIENT_SECRET/MELI_REFRESH_TOKEN, not both",
    });
  }
  const meliConfigured = input.MELI_TOKEN !== undefined || meliSet.length > 0;
  // A non-default MELI_URL without credentials would silently sync to the sandbox instead.
  if (input.MELI_URL !== undefined && input.MELI_URL.trim() !== DEFAULT_MELI_URL && !meliConfigured) {
    problems.push({
      variable: "MELI_URL",
      message:
        "is set but no credentials are: set MELI_TOKEN or the MELI_CLIENT_ID/SECRET/REFRESH_TOKEN trio " +
        "(leave MELI_URL unset for the sandbox)",
    });
  }
  const meliEnabled = (input.CHANNELS ?? "shopify,mercadolibre").split(",").map((c) => c.trim())
    .includes("mercadolibre");
  if (
    meliEnabled && meliConfigured && (input.MELI_MODE ?? "mirror") === "mirror" &&
    input.MELI_TIENDA_ID === undefined && input.MELI_LOCATIONS === undefined
  ) {
    problems.push({
      variable: "MELI_TIENDA_ID",
      message: "is required in mirror mode: name the store (tienda_id) whose stock MercadoLibre shows " +
        "(or map stores to MercadoLibre stock locations with MELI_LOCATIONS)",
    });
  }
  if (input.MELI_TIENDA_ID !== undefined && input.MELI_LOCATIONS !== undefined) {
    problems.push({
      variable: "MELI_LOCATIONS",
      message: "set either MELI_TIENDA_ID (one store → available_quantity) or MELI_LOCATIONS (stores → " +
        "MercadoLibre stock locations), not both",
    });
  }
  let stockRules: StockRules = {};
  if (input.STOCK_RULES !== undefined) {
    const parsed = parseStockRules(input.STOCK_RULES);
    if ("problems" in parsed) {
      for (const p of parsed.problems) problems.push({ variable: p.path, message: p.message });
    } else stockRules = parsed.rules;
  }
  // A MeLi rule makes delta-mode listings absolute: they show one store's POS stock, so name the store.
  if (
    meliEnabled && hasRules(stockRules, "mercadolibre") && input.MELI_MODE === "delta" &&
    input.MELI_TIENDA_ID === undefined && input.MELI_LOCATIONS === undefined
  ) {
    problems.push({
      variable: "MELI_TIENDA_ID",
      message: "(or MELI_LOCATIONS) is required when STOCK_RULES has a mercadolibre rule in delta mode " +
        "(MELI_MODE=delta): a ruled listing is written from its store's POS stock. Mind that MercadoLibre then " +
        "follows that store (or those stores) only — other stores' sales no longer reach it; to keep a " +
        "MercadoLibre stock that every store's sales lower, leave STOCK_RULES.mercadolibre unset",
    });
  }
  if ((input.SHOPIFY_URL === undefined) !== (input.SHOPIFY_TOKEN === undefined)) {
    problems.push({
      variable: input.SHOPIFY_URL === undefined ? "SHOPIFY_URL" : "SHOPIFY_TOKEN",
      message: "SHOPIFY_URL and SHOPIFY_TOKEN must be set together (leave both unset for the sandbox)",
    });
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  const data = result.data;
  // Twice the concurrency keeps the next deliveries buffered while handlers work
  // (rabbitmq-client's advice; measured +12 % custody rate in docs/BENCHMARKS.md).
  return { ...data, prefetch: data.PREFETCH ?? Math.min(65535, data.CONSUMER_CONCURRENCY * 2), stockRules };
}

function describeIssue(variable: string, message: string, input: Record<string, string>) {
  if (SECRET_VARIABLES.has(variable)) return `${message} (value hidden)`;
  const raw = input[variable];
  if (raw === undefined || message.includes("got")) return message;
  const shown = URL_VARIABLES.has(variable) ? urlWithoutPassword(raw) : raw;
  return `${message} (got "${shown.length > 80 ? shown.slice(0, 80) + "…" : shown}")`;
}

/**
 * A URL variable's value for an error message. redactUrl's pattern cannot tell
 * where a password with an un-encoded / # ? or space ends, so the password is
 * removed through the parsed URL; a value that does not parse, or whose path,
 * query or fragment holds an "@" (the rest of such a password), shows its
 * scheme only.
 */
function urlWithoutPassword(raw: string): string {
  const text = raw.trim();
  const url = URL.canParse(text) ? new URL(text) : undefined;
  if (!url || (url.pathname + url.search + url.hash).includes("@")) {
    const scheme = /^([a-z][a-z0-9+.-]*:)/i.exec(text)?.[1] ?? "";
    return `${scheme}… (rest hidden: not a valid URL, and it may hold a password)`;
  }
  if (url.password) url.password = "***";
  return url.href;
}

/** Replaces the password in a URL's userinfo with `***`, for logs and errors. */
export function redactUrl(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^\s"/?#]*@/gi, "$1***@");
}
