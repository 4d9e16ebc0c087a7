/** Configuration: defaults, validation of every variable at once, secrets never echoed. */
import assert from "node:assert/strict";
import { CONFIG_VARIABLES, ConfigError, loadConfig, parseDurationMs, redactUrl } from "../src/config.ts";

Deno.test("no environment at all gives loopback defaults", () => {
  const c = loadConfig({});
  assert.equal(c.RABBITMQ_URL, "amqp://guest:guest@127.0.0.1:5672");
  assert.equal(c.DATABASE_URL, "postgres://postgres@127.0.0.1:5432/postgres");
  assert.equal(c.REDIS_URL, "redis://127.0.0.1:6379");
  assert.equal(c.HTTP_PORT, 8080);
  assert.equal(c.QUEUE, "marketplace-sync.sales.created");
  assert.equal(c.EXCHANGE, "blend_events");
  assert.deepEqual(c.RETRY_DELAYS, [1000, 4000, 9000]);
  assert.deepEqual(c.CHANNELS, ["shopify", "mercadolibre"]);
  assert.equal(c.SHOPIFY_API_VERSION, "2026-10");
  assert.equal(c.prefetch, 2 * c.CONSUMER_CONCURRENCY);
});

Deno.test("empty strings count as unset", () => {
  assert.equal(loadConfig({ HTTP_PORT: "", QUEUE: "  " }).HTTP_PORT, 8080);
});

Deno.test("values are parsed: durations, channels, numbers", () => {
  const c = loadConfig({
    RETRY_DELAYS: "500ms, 2s,1m",
    CHANNELS: " Shopify ",
    HTTP_PORT: "9000",
    PREFETCH: "50",
  });
  assert.deepEqual(c.RETRY_DELAYS, [500, 2000, 60000]);
  assert.deepEqual(c.CHANNELS, ["shopify"]);
  assert.equal(c.HTTP_PORT, 9000);
  assert.equal(c.prefetch, 50);
  assert.equal(parseDurationMs("1.5s"), 1500);
  assert.equal(parseDurationMs("soon"), undefined);
});

Deno.test("every invalid variable is reported at once, by name, without secret values", () => {
  let error: unknown;
  try {
    loadConfig({
      HTTP_PORT: "70000",
      DATABASE_URL: "mysql://root:s3cr3tpw@db/x",
      CONSUMER_CONCURRENCY: "many",
      LOG_LEVEL: "loud",
      MELI_CLIENT_ID: "123",
      MELI_USER_ID: "abc",
      ADMIN_TOKEN: "short",
      SHOPIFY_LOCATION_ID: "42",
    });
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof ConfigError);
  const names = error.problems.map((p) => p.variable).sort();
  assert.deepEqual(names, [
    "ADMIN_TOKEN",
    "CONSUMER_CONCURRENCY",
    "DATABASE_URL",
    "HTTP_PORT",
    "LOG_LEVEL",
    "MELI_CLIENT_SECRET",
    "MELI_TIENDA_ID",
    "MELI_USER_ID",
    "SHOPIFY_LOCATION_ID",
  ]);
  assert.ok(!error.message.includes("s3cr3tpw"));
  assert.ok(!error.message.includes('short"'));
  assert.match(error.message, /mysql:\/\/root:\*\*\*@db\/x/);
});

Deno.test("the design's variable names are all known", () => {
  for (
    const name of [
      "RABBITMQ_URL",
      "SHOPIFY_URL",
      "SHOPIFY_TOKEN",
      "MELI_URL",
      "MELI_TOKEN",
      "DATABASE_URL",
      "REDIS_URL",
      "HTTP_PORT",
      "ADMIN_TOKEN",
      "SHOPIFY_API_VERSION",
      "SHOPIFY_LOCATION_ID",
      "MELI_CLIENT_ID",
      "MELI_CLIENT_SECRET",
      "MELI_REFRESH_TOKEN",
      "MELI_USER_ID",
      "CHANNELS",
    ]
  ) assert.ok(CONFIG_VARIABLES.includes(name), name);
});

Deno.test("redactUrl hides passwords in any URL", () => {
  assert.equal(redactUrl("amqp://guest:guest@127.0.0.1:5672"), "amqp://guest:***@127.0.0.1:5672");
  assert.equal(redactUrl("see postgres://u:p%40ss@h/db now"), "see postgres://u:***@h/db now");
  assert.equal(redactUrl("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
});

Deno.test("redactUrl hides a password that itself contains @", () => {
  assert.equal(redactUrl("amqp://svc:p@ssw0rd@rabbit:5672/"), "amqp://svc:***@rabbit:5672/");
});

Deno.test("MercadoLibre settings: one kind of credentials, a store in mirror mode, usable POS key and query", () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return [];
    } catch (e) {
      return (e as ConfigError).problems.map((p) => `${p.variable}: ${p.message}`);
    }
  };
  const trio = { MELI_CLIENT_ID: "1", MELI_CLIENT_SECRET: "s", MELI_REFRESH_TOKEN: "TG-1" };
  assert.match(
    problems({ ...trio, MELI_TOKEN: "APP_USR-1", MELI_TIENDA_ID: "t" }).join("\n"),
    /^MELI_TOKEN: set either/,
  );
  assert.deepEqual(problems({ ...trio, MELI_TIENDA_ID: "t" }), []);
  assert.match(problems(trio).join("\n"), /MELI_TIENDA_ID: is required in mirror mode/);
  assert.deepEqual(problems({ ...trio, MELI_MODE: "delta" }), [], "delta mode needs no store");
  assert.deepEqual(problems({ ...trio, CHANNELS: "shopify" }), [], "not needed with MeLi disabled");
  assert.match(
    problems({ MELI_URL: "http://10.0.0.5:9000" }).join("\n"),
    /MELI_URL: is set but no credentials/,
  );
  assert.match(
    problems({ POS_STOCK_KEY: "stock:{sku}" }).join("\n"),
    /POS_STOCK_KEY: must contain \{tienda_id\}/,
  );
  assert.match(
    problems({ POS_STOCK_QUERY: "delete from producto" }).join("\n"),
    /POS_STOCK_QUERY: must be a SELECT/,
  );
  assert.match(problems({ MELI_RATE_PER_SEC: "0" }).join("\n"), /MELI_RATE_PER_SEC/);
  const c = loadConfig({ MELI_RATE_PER_SEC: "2.5", MELI_REACTIVATE: "true" });
  assert.equal(c.MELI_RATE_PER_SEC, 2.5);
  assert.equal(c.MELI_REACTIVATE, true);
  assert.equal(c.MELI_MODE, "mirror");
  assert.equal(c.POS_STOCK_KEY, "stock:{tienda_id}:{producto_id}");
});

Deno.test("MELI_LOCATIONS: stores to selling_address or seller warehouses, named when wrong, not with MELI_TIENDA_ID", () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return [];
    } catch (e) {
      return (e as ConfigError).problems.map((p) => `${p.variable}: ${p.message}`);
    }
  };
  const trio = { MELI_CLIENT_ID: "1", MELI_CLIENT_SECRET: "s", MELI_REFRESH_TOKEN: "TG-1" };
  const warehouses = JSON.stringify({
    t1: { store_id: "1001", network_node_id: "MLA1001" },
    t2: { store_id: "1002", network_node_id: "MLA1002" },
  });
  const c = loadConfig({ ...trio, MELI_LOCATIONS: warehouses });
  assert.deepEqual(c.MELI_LOCATIONS, {
    t1: { type: "seller_warehouse", storeId: "1001", networkNodeId: "MLA1001" },
    t2: { type: "seller_warehouse", storeId: "1002", networkNodeId: "MLA1002" },
  });
  assert.deepEqual(
    problems({ ...trio, MELI_LOCATIONS: '{"t1": "selling_address"}' }),
    [],
    "no MELI_TIENDA_ID",
  );
  assert.match(
    problems({ ...trio, MELI_LOCATIONS: '{"t1": "selling_address"}', MELI_TIENDA_ID: "t1" }).join("\n"),
    /MELI_LOCATIONS: set either MELI_TIENDA_ID .* or MELI_LOCATIONS/,
  );
  const bad = (value: string) => problems({ ...trio, MELI_LOCATIONS: value }).join("\n");
  assert.match(bad('{"t1": "warehouse"}'), /MELI_LOCATIONS: store "t1" must map to .* \(got "warehouse"\)/);
  assert.match(bad('{"t1": {"store_id": 5}}'), /store "t1" must map to .*\(got \{"store_id":5\}\)/);
  assert.match(bad("not json"), /MELI_LOCATIONS: must be a JSON object/);
  assert.match(bad("{}"), /non-empty/);
  assert.match(
    bad('{"t1": "selling_address", "t2": {"store_id": "1", "network_node_id": "n"}}'),
    /mixes selling_address \(store "t1"\) with seller warehouses/,
  );
  assert.match(bad('{"t1": "selling_address", "t2": "selling_address"}'), /"t1", "t2" to selling_address/);
  assert.match(
    bad('{"t1": {"store_id": "1", "network_node_id": "n"}, "t2": {"store_id": "1", "network_node_id": "m"}}'),
    /stores "t1" and "t2" to the same store_id "1"/,
  );
});

Deno.test("LEDGER_UPKEEP_INTERVAL: 30s by default, 0 turns it off, and a too short one is refused by name", () => {
  assert.equal(loadConfig({}).LEDGER_UPKEEP_INTERVAL, 30_000);
  assert.equal(loadConfig({ LEDGER_UPKEEP_INTERVAL: "0" }).LEDGER_UPKEEP_INTERVAL, 0);
  assert.equal(loadConfig({ LEDGER_UPKEEP_INTERVAL: "5m" }).LEDGER_UPKEEP_INTERVAL, 300_000);
  assert.throws(
    () => loadConfig({ LEDGER_UPKEEP_INTERVAL: "200ms" }),
    (e: ConfigError) =>
      e.problems.some((p) => p.variable === "LEDGER_UPKEEP_INTERVAL" && /0 \(off\)/.test(p.message)),
  );
});
