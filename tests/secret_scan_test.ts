/**
 * Secrets never reach the logs (issue #7 item 4). Real service PROCESSES
 * (`deno run src/main.ts`, LOG_LEVEL=debug, LOG_FORMAT=json) run scenarios that
 * exercise every credential end to end, and their whole stdout + stderr is
 * scanned for every secret value they were given or that the sandboxes minted:
 *
 * - a configuration error next to secrets (and URLs whose passwords break them);
 * - everything configured: ADMIN_TOKEN (right and wrong callers), Shopify token,
 *   MeLi OAuth with 1-second access tokens (many refreshes, every minted access
 *   and refresh token recorded by a proxy in front of the sandbox), then the
 *   seller revokes the app (invalid_grant); passwords in DATABASE_URL,
 *   REDIS_URL, POS_DATABASE_URL, POS_REDIS_URL; sales flowing through both
 *   channels;
 * - wrong credentials: Shopify 401 and a refused static MELI_TOKEN.
 *
 * The scanner is proven to catch a secret the service really logs (a marker
 * planted in the queue name, which the service logs by design). RabbitMQ's
 * `guest` password is too short to scan for; its `guest:guest@` userinfo is.
 * The fuzz test (tests/fuzz_test.ts) scans its own service log the same way.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Connection } from "rabbitmq-client";
import postgres from "postgres";
import { topologyFromConfig } from "../src/broker/topology.ts";
import { loadConfig } from "../src/config.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { type ShopifySandbox, startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import {
  DATABASE_URL,
  dropTestNames,
  integration,
  RABBITMQ_URL,
  REDIS_URL,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import { Pos } from "./pos.ts";
import { describeHits, maskSecret, scanForSecrets, secretsFromEnv } from "../scripts/support/secrets.ts";

const ROOT = new URL("../", import.meta.url);
const catalog = defaultCatalog();
const STORE = catalog.stores[0].tienda_id;
const hex = (n: number) =>
  [...crypto.getRandomValues(new Uint8Array(n))].map((b) => b.toString(16).padStart(2, "0")).join("");

/** A URL with a password set (trust auth / a password-less Redis user accept any). */
function withPassword(url: string, user: string, password: string): string {
  const u = new URL(url);
  u.username ||= user;
  u.password = password;
  return u.toString();
}

/** A service process and everything it wrote. */
interface ServiceProcess {
  name: string;
  env: Record<string, string>;
  /** The HTTP base URL, from the service's own "listening on" log line. */
  url: Promise<string>;
  output(): string;
  /** SIGTERM (if still running), then the exit code. */
  stop(): Promise<number>;
  exited: Promise<number>;
}

/** Starts `deno run src/main.ts` with exactly `env` (plus what Deno itself needs). */
function spawnService(name: string, env: Record<string, string>): ServiceProcess {
  const passthrough: Record<string, string> = {};
  for (const key of ["PATH", "HOME", "DENO_DIR", "TMPDIR", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(key);
    if (value) passthrough[key] = value;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "src/main.ts"],
    cwd: ROOT,
    env: { ...passthrough, NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const { promise: url, resolve: gotUrl, reject: noUrl } = Promise.withResolvers<string>();
  url.catch(() => {});
  const pump = async (stream: ReadableStream<Uint8Array>, label: string) => {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        if (label !== "stdout" || !line.includes("listening on")) continue;
        try {
          const parsed = JSON.parse(line);
          if (typeof parsed.url === "string") gotUrl(parsed.url);
        } catch { /* not JSON */ }
      }
    }
  };
  const pumped = Promise.all([pump(child.stdout, "stdout"), pump(child.stderr, "stderr")]);
  const exited = child.status.then(async (s) => {
    await pumped;
    noUrl(new Error(`${name} exited (${s.code}) before listening:\n${text.slice(-2000)}`));
    return s.code;
  });
  return {
    name,
    env,
    url,
    output: () => text,
    exited,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
      }, 20_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Per-process names: exchange, queues and ledger schema of its own. */
function isolatedEnv(extra: Record<string, string>): Record<string, string> {
  const id = uniqueName("sec");
  return {
    RABBITMQ_URL,
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    EXCHANGE: `blend_events.${id}`,
    QUEUE: `marketplace-sync.${id}`,
    LEDGER_SCHEMA: `msync_${id}`,
    RETRY_DELAYS: "100ms,200ms",
    LOG_LEVEL: "debug",
    LOG_FORMAT: "json",
    DISPATCH_ENABLED: "true",
    DISPATCH_POLL_INTERVAL: "50ms",
    DISPATCH_BACKOFF_BASE: "50ms",
    DISPATCH_BACKOFF_MAX: "500ms",
    ...extra,
  };
}

/** Publishes sales to a service's exchange and cleans its names up afterwards. */
async function brokerFor(env: Record<string, string>) {
  const config = loadConfig(env);
  const topology = topologyFromConfig(config);
  const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  await rabbit.onConnect(5000);
  const publisher = rabbit.createPublisher({ confirm: true });
  const sql = postgres(DATABASE_URL, {
    max: 2,
    onnotice: () => {},
    connection: { search_path: config.LEDGER_SCHEMA },
  });
  return {
    sql,
    sale: async (lines: { sku: string; qty: number }[]) => {
      const id = crypto.randomUUID();
      const body = {
        event_id: id,
        tienda_id: STORE,
        items: lines.map((l) => ({
          producto_id: catalog.products.find((p) => p.sku === l.sku)?.producto_id,
          producto_sku: l.sku,
          cantidad: l.qty,
        })),
      };
      await publisher.send(
        { exchange: topology.exchange, routingKey: topology.routingKey, messageId: id, durable: true },
        Buffer.from(JSON.stringify(body)),
      );
    },
    async close() {
      await dropTestNames(rabbit, sql, topology, config.LEDGER_SCHEMA);
      await sql.end({ timeout: 2 });
      await publisher.close();
      await rabbit.close();
    },
  };
}

/**
 * An HTTP proxy in front of the MeLi sandbox that records every access and
 * refresh token the sandbox mints (from `/oauth/token` answers) and every Bearer
 * token the service sends: the sandbox has no API listing them.
 */
function tokenRecorder(target: string, minted: Set<string>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const bearer = /^Bearer\s+(\S+)/i.exec(req.headers.get("authorization") ?? "");
    if (bearer) minted.add(bearer[1]);
    const headers = new Headers(req.headers);
    headers.delete("host");
    headers.delete("content-length");
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
    const answer = await fetch(`${target}${url.pathname}${url.search}`, {
      method: req.method,
      headers,
      body,
    });
    const bytes = new Uint8Array(await answer.arrayBuffer());
    if (url.pathname === "/oauth/token") {
      try {
        const json = JSON.parse(new TextDecoder().decode(bytes));
        for (const key of ["access_token", "refresh_token"]) {
          if (typeof json[key] === "string") minted.add(json[key]);
        }
      } catch { /* an error body */ }
    }
    const out = new Headers(answer.headers);
    out.delete("content-length");
    return new Response(bytes, { status: answer.status, headers: out });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

/** Scans one process's output; returns a report of hits (empty when clean). */
function scan(proc: ServiceProcess, secrets: string[]): string {
  const text = proc.output();
  const hits = scanForSecrets(text, secrets);
  return hits.length ? describeHits(proc.name, text, hits, secrets) : "";
}

async function getJson(url: string, token?: string): Promise<{ status: number; body: string }> {
  const r = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  return { status: r.status, body: await r.text() };
}

Deno.test("the scanner finds a secret raw, URL-encoded or JSON-escaped, by line, and refuses short ones", () => {
  const secret = 'p@ss/w0rd"x';
  const text = [
    "clean line",
    `raw ${secret} here`,
    `encoded ${encodeURIComponent(secret)}`,
    `json ${JSON.stringify({ s: secret })}`,
    "another clean line",
  ].join("\n");
  assert.deepEqual(scanForSecrets(text, [secret]), [
    { secret, line: 2 },
    { secret, line: 3 },
    { secret, line: 4 },
  ]);
  assert.deepEqual(scanForSecrets("nothing to see", [secret, "another-secret"]), []);
  assert.throws(() => scanForSecrets(text, ["guest"]), /shorter than 8/);
  const report = describeHits("x", text, scanForSecrets(text, [secret]), [secret]);
  assert.ok(!report.includes(secret), "the report masks what it found");
  assert.ok(report.includes(maskSecret(secret)));
  const fromEnv = secretsFromEnv({
    ADMIN_TOKEN: "admin-token-0123456789",
    DATABASE_URL: "postgres://u:pg%2Fs3cr3t-pass@h/db",
    REDIS_URL: "redis://:short@h",
    HTTP_HOST: "not-a-secret",
  });
  assert.deepEqual(fromEnv, { secrets: ["admin-token-0123456789", "pg/s3cr3t-pass"], tooShort: ["sh…"] });
});

integration("no configured, minted or refused secret appears in any service log", async () => {
  const started = performance.now();
  const marker = hex(4);
  const processes: ServiceProcess[] = [];
  const cleanups: (() => Promise<unknown>)[] = [];
  const secrets = new Set<string>(["guest:guest@"]);
  const minted = new Set<string>();
  try {
    // --- 1. configuration errors next to secrets --------------------------------
    const passwords = {
      pg: `cfgpg-s3cr3t-${marker}`,
      // Un-encoded / # ? @ break the URL (or make it parse wrongly): the error must still not echo them.
      redis: `red/cfgredis-s3cr3t-${marker}`,
      rabbit: `5672#cfgrabbit-s3cr3t-${marker}`, // parses: port 5672, the rest in the fragment
      pos: `a@b/cfgposdb-s3cr3t-${marker}`, // parses: password "a", the rest in the path
      posRedis: `pos?cfgposredis-s3cr3t-${marker}`,
    };
    const configEnv = {
      ADMIN_TOKEN: `short-${marker}`, // < 16 characters: invalid itself
      SHOPIFY_TOKEN: `shpat_cfg${hex(12)}`, // without SHOPIFY_URL
      MELI_CLIENT_SECRET: `meli-cfg-secret-${hex(8)}`, // without the rest of the trio
      MELI_TOKEN: `APP_USR-cfg-${hex(12)}`,
      DATABASE_URL: `mysql://postgres:${passwords.pg}@127.0.0.1/test`, // wrong scheme
      REDIS_URL: `redis://default:${passwords.redis}@127.0.0.1:6379`,
      RABBITMQ_URL: `http://guest:${passwords.rabbit}@127.0.0.1:5672`, // and the wrong scheme
      POS_DATABASE_URL: `postgresql+x://pos:${passwords.pos}@127.0.0.1/pos`,
      POS_REDIS_URL: `redis://default:${passwords.posRedis}@127.0.0.1:6379`,
      MAX_EVENT_BYTES: "lots",
      LOG_LEVEL: "debug",
      LOG_FORMAT: "json",
    };
    // Each password, and its distinctive part alone (a leak may show only what follows the / # ? @).
    for (const value of Object.values(passwords)) secrets.add(value).add(value.replace(/^.*?cfg/, "cfg"));
    for (const name of ["ADMIN_TOKEN", "SHOPIFY_TOKEN", "MELI_CLIENT_SECRET", "MELI_TOKEN"] as const) {
      secrets.add(configEnv[name]);
    }
    const bad = spawnService("config-error", configEnv);
    processes.push(bad);
    assert.equal(await bad.exited, 2, `a configuration error exits 2:\n${bad.output()}`);
    for (
      const variable of [
        "ADMIN_TOKEN",
        "SHOPIFY_URL",
        "MELI_",
        "DATABASE_URL",
        "REDIS_URL",
        "RABBITMQ_URL",
        "POS_DATABASE_URL",
        "POS_REDIS_URL",
        "MAX_EVENT_BYTES",
      ]
    ) {
      assert.ok(bad.output().includes(variable), `the error names ${variable}:\n${bad.output()}`);
    }

    // --- 2. everything configured; MeLi refreshes every second, then invalid_grant ---
    const shopify: ShopifySandbox = await startShopifySandbox({ catalog });
    cleanups.push(() => shopify.close());
    const meli: MeliSandbox = await startMeliSandbox({ catalog, tiendaId: STORE, accessTokenTtlSeconds: 1 });
    cleanups.push(() => meli.close());
    const recorder = tokenRecorder(meli.url, minted);
    cleanups.push(() => recorder.close());
    const pos = await Pos.open(catalog);
    cleanups.push(() => pos.close());
    minted.add(meli.currentRefreshToken());
    const liveEnv = isolatedEnv({
      ADMIN_TOKEN: `admin-token-${hex(12)}`,
      DATABASE_URL: withPassword(DATABASE_URL, "postgres", `livepg-s3cr3t-${marker}`),
      REDIS_URL: withPassword(REDIS_URL, "default", `liveredis-s3cr3t-${marker}`),
      POS_DATABASE_URL: withPassword(DATABASE_URL, "postgres", `liveposdb-s3cr3t-${marker}`),
      POS_REDIS_URL: withPassword(REDIS_URL, "default", `liveposredis-s3cr3t-${marker}`),
      POS_STOCK_KEY: pos.keyTemplate,
      CHANNELS: "shopify,mercadolibre",
      SHOPIFY_URL: shopify.url,
      SHOPIFY_TOKEN: shopify.token,
      SHOPIFY_LOCATIONS: JSON.stringify(Object.fromEntries(shopify.locations.map((l) => [l.tiendaId, l.id]))),
      MELI_URL: recorder.url,
      MELI_CLIENT_ID: meli.clientId,
      MELI_CLIENT_SECRET: meli.clientSecret,
      MELI_REFRESH_TOKEN: meli.currentRefreshToken(),
      MELI_TIENDA_ID: STORE,
      MELI_RATE_PER_SEC: "200",
    });
    for (const s of secretsFromEnv(liveEnv).secrets) secrets.add(s);
    secrets.add(meli.staticToken);
    const live = spawnService("live", liveEnv);
    processes.push(live);
    const broker = await brokerFor(liveEnv);
    cleanups.push(() => broker.close());
    const liveUrl = await live.url;
    await waitFor(
      async () => (await getJson(`${liveUrl}/readyz`)).status === 200,
      "live service ready",
      20_000,
    );
    const skus = ["REMERA-001", "GORRO-LANA", "MEDIAS-PACK3"];
    let sales = 0;
    for (let round = 0; round < 3; round++) {
      for (const sku of skus) {
        await pos.set(STORE, sku, (await pos.get(STORE, sku)) - 1);
        await broker.sale([{ sku, qty: 1 }]);
        sales++;
      }
      // Past the 1-second access token: the next MeLi call refreshes.
      await new Promise((r) => setTimeout(r, 1_200));
    }
    await waitFor(
      async () =>
        (await broker.sql<{ n: number }[]>`
          select count(*)::int as n from stock_change where status = 'applied'`)[0].n === sales * 2,
      `${sales * 2} changes applied on Shopify and MercadoLibre`,
      20_000,
      100,
    );
    assert.ok(meli.stats().refreshes >= 2, `MeLi tokens were refreshed (${meli.stats().refreshes})`);
    assert.equal((await getJson(`${liveUrl}/status`, liveEnv.ADMIN_TOKEN)).status, 200);
    const wrongAdmin = `wrong-admin-${hex(12)}`;
    secrets.add(wrongAdmin);
    assert.equal((await getJson(`${liveUrl}/status`, wrongAdmin)).status, 403);
    assert.equal((await getJson(`${liveUrl}/status`)).status, 401);
    // The seller revokes the app: the next refresh answers invalid_grant.
    meli.revokeTokens();
    minted.add(meli.currentRefreshToken());
    await pos.set(STORE, "REMERA-001", (await pos.get(STORE, "REMERA-001")) - 1);
    await broker.sale([{ sku: "REMERA-001", qty: 1 }]);
    await waitFor(
      async () => {
        const { status, body } = await getJson(`${liveUrl}/readyz`);
        return status === 503 && body.includes("mercadolibre") && body.includes("invalid_grant");
      },
      "/readyz naming MercadoLibre's invalid_grant",
      20_000,
    );
    assert.equal(await live.stop(), 0, "the live service stops cleanly");

    // --- 3. wrong credentials: Shopify 401, MeLi refuses the static token ----------
    const planted = `planted-${hex(8)}`;
    const wrongEnv = isolatedEnv({
      CHANNELS: "shopify,mercadolibre",
      SHOPIFY_URL: shopify.url,
      SHOPIFY_TOKEN: `shpat_${hex(16)}`,
      SHOPIFY_LOCATION_ID: shopify.locations[0].id,
      MELI_URL: recorder.url,
      MELI_TOKEN: `APP_USR-${meli.clientId}-010100-${hex(16)}-${meli.userId}`,
      MELI_TIENDA_ID: STORE,
      POS_STOCK_KEY: pos.keyTemplate,
      DATABASE_URL,
      REDIS_URL,
    });
    // The scanner must see what the service really logs: it logs its queue name by design.
    wrongEnv.QUEUE = `${wrongEnv.QUEUE}.${planted}`;
    for (const s of secretsFromEnv(wrongEnv).secrets) secrets.add(s);
    const wrong = spawnService("wrong-credentials", wrongEnv);
    processes.push(wrong);
    const wrongBroker = await brokerFor(wrongEnv);
    cleanups.push(() => wrongBroker.close());
    const wrongUrl = await wrong.url;
    await waitFor(
      async () => {
        const { body } = await getJson(`${wrongUrl}/readyz`);
        return body.startsWith("{") && JSON.parse(body).checks?.consumer?.ok === true;
      },
      "consumer attached",
      20_000,
    );
    await wrongBroker.sale([{ sku: "REMERA-001", qty: 1 }]);
    await waitFor(
      async () => {
        const { status, body } = await getJson(`${wrongUrl}/readyz`);
        const down = status === 503 ? JSON.parse(body).down as string[] : [];
        return down.includes("shopify") && down.includes("mercadolibre");
      },
      "/readyz naming Shopify's and MercadoLibre's 401",
      20_000,
    );
    assert.ok(shopify.stats().unauthorized > 0, "Shopify answered 401");
    assert.ok(meli.stats().unauthorized > 0, "MercadoLibre answered 401");
    assert.equal(await wrong.stop(), 0);

    // --- the scan -----------------------------------------------------------------
    minted.add(meli.currentRefreshToken());
    for (const token of minted) secrets.add(token);
    const scanned = [...secrets];
    const plantedHits = scanForSecrets(wrong.output(), [planted]);
    assert.ok(
      plantedHits.length > 0,
      "the scanner finds a marker the service logged (it would find a secret)",
    );
    const reports = processes.map((p) => scan(p, scanned)).filter(Boolean);
    const lines = processes.reduce((n, p) => n + p.output().split("\n").length, 0);
    console.log(
      `secret scan: ${processes.length} service processes, ${lines} lines of stdout+stderr, ` +
        `${scanned.length} secrets (${minted.size} MeLi tokens minted or sent, ${meli.stats().refreshes} refreshes); ` +
        `${reports.length === 0 ? "0 hits" : "HITS"}; ${Math.round(performance.now() - started)} ms`,
    );
    assert.equal(reports.join("\n"), "", `secrets found in service logs:\n${reports.join("\n")}`);
  } finally {
    await Promise.all(processes.map((p) => p.stop().catch(() => {})));
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  }
});
