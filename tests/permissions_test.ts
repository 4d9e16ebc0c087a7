/**
 * Least-privilege runs (issue #6): the permissions derived from the configuration (src/permissions.ts), the
 * service running with exactly them and only its own variables in its environment, the launcher behind
 * `deno task start` and the container, NotCapable for everything outside the set, the offline bundle and the
 * compile task's failure when no denort runtime can be had. Needs RabbitMQ, Postgres and Redis on loopback.
 */
import assert from "node:assert/strict";
import { Connection } from "rabbitmq-client";
import postgres from "postgres";
import { topologyFromConfig } from "../src/broker/topology.ts";
import { type Config, CONFIG_VARIABLES, loadConfig } from "../src/config.ts";
import {
  describePermissions,
  LIBRARY_ENV,
  permissionsFor,
  SERVICE_ENV,
  V8_FLAGS,
} from "../src/permissions.ts";
import { TARGETS } from "../scripts/build.ts";
import { DATABASE_URL, integration, RABBITMQ_URL, testEnv } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const DENO = Deno.execPath();
const LIBRARIES = [...LIBRARY_ENV.postgres, ...LIBRARY_ENV.redis, ...LIBRARY_ENV.graphql];
const EVERY_VARIABLE = [...CONFIG_VARIABLES, ...LIBRARIES];

// --- permissionsFor -------------------------------------------------------------------------------------

Deno.test("permissionsFor: the quickstart configuration (loopback services, both sandboxes)", () => {
  const p = permissionsFor(loadConfig({}));
  assert.deepEqual(p.net, [
    "127.0.0.1:5672",
    "127.0.0.1:5432",
    "127.0.0.1:6379",
    "127.0.0.1", // the sandboxes listen on OS-chosen loopback ports and the service calls them
    "localhost", // the Shopify sandbox's bulk results, on another host name than its API (OS-chosen port)
    "0.0.0.0:8080",
  ]);
  assert.deepEqual(p.env, EVERY_VARIABLE);
  assert.deepEqual(p.sys, ["hostname"]);
  assert.deepEqual(p.read, []);
  assert.deepEqual(p.flags, [
    "--allow-net=127.0.0.1:5672,127.0.0.1:5432,127.0.0.1:6379,127.0.0.1,localhost,0.0.0.0:8080",
    `--allow-env=${EVERY_VARIABLE.join(",")}`,
    "--allow-sys=hostname",
    "--no-prompt",
    "--no-remote",
    "--no-code-cache",
    "--v8-flags=--max-semi-space-size=2,--max-old-space-size=256,--expose-gc",
  ]);
  assert.ok(
    !p.flags.some((f) => /^--allow-(write|run|ffi|read|all)\b|^-A$/.test(f)),
    "no write, run, ffi, read",
  );
  assert.deepEqual(p.reasons["127.0.0.1"], [
    "Shopify sandbox (loopback, OS-chosen port)",
    "MercadoLibre sandbox (loopback, OS-chosen port)",
  ]);
  assert.deepEqual(p.reasons["localhost"], [
    "Shopify sandbox's bulk result storage (loopback, OS-chosen port)",
  ]);
});

Deno.test("permissionsFor: real Shopify and MercadoLibre accounts replace the sandboxes", () => {
  const live = {
    SHOPIFY_URL: "https://x.myshopify.com",
    SHOPIFY_TOKEN: "shpat_test",
    MELI_CLIENT_ID: "123",
    MELI_CLIENT_SECRET: "secret",
    MELI_REFRESH_TOKEN: "TG-refresh",
    MELI_TIENDA_ID: "store-1",
  };
  const loopback = ["127.0.0.1:5672", "127.0.0.1:5432", "127.0.0.1:6379"];
  assert.deepEqual(permissionsFor(loadConfig(live)).net, [
    ...loopback,
    "x.myshopify.com:443",
    "storage.googleapis.com:443", // SHOPIFY_BULK_HOST's default: where bulk operation results are downloaded
    "api.mercadolibre.com:443", // MELI_URL's default
    "0.0.0.0:8080",
  ]);
  // A static MeLi token instead of OAuth, a non-default MeLi URL, Shopify on a custom port.
  const { MELI_CLIENT_ID: _i, MELI_CLIENT_SECRET: _s, MELI_REFRESH_TOKEN: _r, ...shopifyOnly } = live;
  assert.deepEqual(
    permissionsFor(loadConfig({
      ...shopifyOnly,
      SHOPIFY_URL: "http://shop.internal:8443",
      MELI_TOKEN: "APP_USR-x",
      MELI_URL: "https://meli-proxy.internal",
    })).net,
    [
      ...loopback,
      "shop.internal:8443",
      "storage.googleapis.com:443",
      "meli-proxy.internal:443",
      "0.0.0.0:8080",
    ],
  );
  // Bulk results fetched through another host (a proxy), on its own port.
  const proxied = permissionsFor(loadConfig({ ...live, SHOPIFY_BULK_HOST: "Bulk-Proxy.internal:8443" }));
  assert.deepEqual(proxied.net.slice(3, 5), ["x.myshopify.com:443", "bulk-proxy.internal:8443"]);
  assert.deepEqual(proxied.reasons["bulk-proxy.internal:8443"], ["SHOPIFY_BULK_HOST"]);
  assert.throws(
    () => loadConfig({ ...live, SHOPIFY_BULK_HOST: "https://storage.googleapis.com/x" }),
    /SHOPIFY_BULK_HOST: must be a host name/,
  );
  // Only the channels this instance dispatches get a host; a custody-only instance reaches no marketplace.
  assert.deepEqual(permissionsFor(loadConfig({ ...live, CHANNELS: "shopify" })).net, [
    ...loopback,
    "x.myshopify.com:443",
    "storage.googleapis.com:443",
    "0.0.0.0:8080",
  ]);
  assert.deepEqual(permissionsFor(loadConfig({ ...live, DISPATCH_ENABLED: "false" })).net, [
    ...loopback,
    "0.0.0.0:8080",
  ]);
  assert.deepEqual(permissionsFor(loadConfig({ DISPATCH_ENABLED: "false" })).net, [
    ...loopback,
    "0.0.0.0:8080",
  ]);
  assert.deepEqual(permissionsFor(loadConfig(live)).env, EVERY_VARIABLE);
});

Deno.test("permissionsFor: POS_* URLs, default ports per scheme, PGHOST/PGPORT, fixed sandbox ports, listen", () => {
  const config = loadConfig({
    RABBITMQ_URL: "amqps://svc:pw@mq.internal",
    DATABASE_URL: "postgres://ledger:pw@db.internal/ledger",
    REDIS_URL: "rediss://cache.internal",
    POS_DATABASE_URL: "postgresql://pos@pos-db.internal:6432/pos",
    POS_REDIS_URL: "redis://pos-cache.internal:6380/2",
    SANDBOX_SHOPIFY_PORT: "7001",
    SANDBOX_MELI_PORT: "7002",
    SANDBOX_CATALOG: "catalog.json",
    HTTP_HOST: "::",
    HTTP_PORT: "0",
  });
  const p = permissionsFor(config);
  assert.deepEqual(p.net, [
    "mq.internal:5671",
    "db.internal:5432",
    "cache.internal:6379",
    "pos-db.internal:6432",
    "pos-cache.internal:6380",
    "127.0.0.1:7001",
    "localhost", // the bulk result storage always takes an OS-chosen port
    "127.0.0.1:7002",
    "[::]", // HTTP_PORT=0: any port of the listen address
  ]);
  assert.deepEqual(p.read, ["catalog.json"], "the sandboxes load SANDBOX_CATALOG");
  assert.ok(p.flags.includes("--allow-read=catalog.json"));
  assert.deepEqual(p.reasons["pos-db.internal:6432"], ["POS_DATABASE_URL"]);
  // POS_REDIS_URL equal to REDIS_URL is one entry; configured marketplaces read no catalog.
  const same = permissionsFor(loadConfig({
    POS_REDIS_URL: "redis://127.0.0.1:6379",
    SANDBOX_CATALOG: "catalog.json",
    SHOPIFY_URL: "https://x.myshopify.com",
    SHOPIFY_TOKEN: "t",
    MELI_TOKEN: "m",
    MELI_TIENDA_ID: "s",
  }));
  assert.deepEqual(same.net.filter((h) => h.endsWith(":6379")), ["127.0.0.1:6379"]);
  assert.deepEqual(same.read, []);
  // A Postgres URL without host, port or user: postgres.js takes PGHOST / PGPORT, then the OS user name.
  const pg = permissionsFor(loadConfig({ DATABASE_URL: "postgres:///ledger" }), {
    PGHOST: "db1,db2:6000",
    PGPORT: "5433",
  });
  assert.deepEqual(pg.net.slice(0, 3), ["127.0.0.1:5672", "db1:5433", "db2:6000"]);
  assert.deepEqual(pg.env, [...EVERY_VARIABLE, "USERNAME", "USER", "LOGNAME"]);
  assert.deepEqual(
    permissionsFor(loadConfig({ DATABASE_URL: "postgres:///ledger" }), { PGUSER: "svc" }).env,
    EVERY_VARIABLE,
  );
});

Deno.test("describePermissions says where every net entry comes from", () => {
  const text = describePermissions(permissionsFor(loadConfig({})));
  for (
    const line of [
      "127.0.0.1:5672  ← RABBITMQ_URL",
      "127.0.0.1:5432  ← DATABASE_URL",
      "127.0.0.1:6379  ← REDIS_URL",
      "0.0.0.0:8080  ← listen (HTTP_HOST:HTTP_PORT)",
      "sys   hostname",
      "read  none",
      "no write, run, ffi or remote imports",
    ]
  ) assert.ok(text.includes(line), `${line} in:\n${text}`);
});

// --- processes ------------------------------------------------------------------------------------------

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** A custody-only service on its own queue, exchange, schema and port, logging JSON. */
function serviceEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return testEnv({
    HTTP_PORT: String(freePort()),
    CHANNELS: "shopify",
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    ...overrides,
  });
}

/**
 * Variables the deno CLI itself reads to find its cache (never granted to the program: see the probe), passed
 * on when set so a child finds the packages this test run uses.
 */
function cliEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** A PATH whose `deno` is this very binary, for the launcher and build script (they run `deno` by name). */
let binDir: string | undefined;
async function pathWithThisDeno(): Promise<string> {
  if (!binDir) {
    const dir = binDir = await Deno.makeTempDir({ prefix: "permissions_bin_" });
    await Deno.symlink(DENO, `${dir}/deno`);
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  }
  return `${binDir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
}

/** Collects a child's output lines. */
function lines(stream: ReadableStream<Uint8Array>) {
  const all: string[] = [];
  const done = (async () => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      all.push(...parts);
    }
    if (buffer) all.push(buffer);
  })();
  return { all, done };
}

async function httpStatus(url: string): Promise<number> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await response.body?.cancel();
    return response.status;
  } catch {
    return 0;
  }
}

/** SIGTERM, unless the process has exited already (its status then tells what happened). */
function terminate(process: Deno.ChildProcess) {
  try {
    process.kill("SIGTERM");
  } catch {
    // already exited
  }
}

/** Polls `url` until it answers `status`; fails at once if the process exits first. */
async function waitForStatus(
  url: string,
  status: number,
  process: Deno.ChildProcess,
  stdout: string[],
  stderr: string[],
  timeoutMs = 30_000,
) {
  let exited: Deno.CommandStatus | undefined;
  process.status.then((s) => exited = s);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited) {
    if (await httpStatus(url) === status) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `${url} did not answer ${status} ${
      exited ? `(the process exited with ${exited.code})` : `within ${timeoutMs} ms`
    }; output:\n${[...stdout, ...stderr].join("\n")}`,
  );
}

/** Drops what a service declared and migrated for a test configuration. */
async function cleanup(config: Config) {
  const topology = topologyFromConfig(config);
  const rabbit = new Connection({ url: RABBITMQ_URL, retryLow: 100, retryHigh: 1000 });
  try {
    await rabbit.onConnect(5_000);
    for (
      const queue of [
        topology.queue,
        ...topology.retryQueues.map((r) => r.name),
        topology.deadLetterQueue,
      ]
    ) {
      await rabbit.queueDelete({ queue }).catch(() => {});
    }
    await rabbit.exchangeDelete({ exchange: topology.exchange }).catch(() => {});
  } finally {
    await rabbit.close();
  }
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  await sql.unsafe(`drop schema if exists ${config.LEDGER_SCHEMA} cascade`).catch(() => {});
  await sql.end({ timeout: 2 });
}

integration(
  "the service runs with only its derived permissions and only its variables in the environment",
  async () => {
    const env = serviceEnv();
    const config = loadConfig(env);
    const { flags } = permissionsFor(config, env);
    // Only configuration variables (all of them listed in --allow-env), plus the CLI's cache location.
    assert.deepEqual(Object.keys(env).filter((name) => !CONFIG_VARIABLES.includes(name)), []);
    const child = new Deno.Command(DENO, {
      args: ["run", ...flags, "src/main.ts"],
      cwd: ROOT,
      clearEnv: true,
      env: { ...env, ...cliEnv() },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = lines(child.stdout);
    const err = lines(child.stderr);
    try {
      await waitForStatus(`http://127.0.0.1:${env.HTTP_PORT}/readyz`, 200, child, out.all, err.all);
      assert.equal(await httpStatus(`http://127.0.0.1:${env.HTTP_PORT}/metrics`), 200);
    } finally {
      terminate(child);
      const status = await child.status;
      await Promise.all([out.done, err.done]);
      await cleanup(config);
      assert.equal(status.code, 0, `exit code; stderr:\n${err.all.join("\n")}`);
    }
    const output = [...out.all, ...err.all].join("\n");
    assert.doesNotMatch(output, /NotCapable|Requires \w+ access/);
    assert.match(output, /"message":"stopped"/);
  },
);

/** The pids whose parent is `pid` (Linux /proc). */
async function childrenOf(pid: number): Promise<number[]> {
  const found: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) found.push(Number(entry.name));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

integration(
  "launcher: prints the set it derived, starts the service with exactly those flags, forwards SIGTERM",
  async () => {
    const env = serviceEnv();
    const config = loadConfig(env);
    const expected = permissionsFor(config, env);
    const launcher = new Deno.Command(DENO, {
      // deno.json's start task, token for token.
      args: JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks.start.split(/\s+/).slice(1),
      cwd: ROOT,
      clearEnv: true,
      env: { ...env, ...cliEnv(), PATH: await pathWithThisDeno() },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = lines(launcher.stdout);
    const err = lines(launcher.stderr);
    let status: Deno.CommandStatus;
    try {
      await waitForStatus(`http://127.0.0.1:${env.HTTP_PORT}/readyz`, 200, launcher, out.all, err.all);
      const granted = JSON.parse(out.all[0]);
      assert.equal(granted.logger, "marketplace-sync.launch");
      const { net, env: envNames, sys, read, flags } = granted;
      assert.deepEqual({ net, env: envNames, sys, read, flags }, {
        net: expected.net,
        env: expected.env,
        sys: expected.sys,
        read: expected.read,
        flags: expected.flags,
      });
      assert.deepEqual(net, [
        "127.0.0.1:5672",
        "127.0.0.1:5432",
        "127.0.0.1:6379",
        `127.0.0.1:${env.HTTP_PORT}`,
      ]);
      // The service process is the launcher's child, and its command line carries exactly the derived flags.
      const [service] = await childrenOf(launcher.pid);
      assert.ok(service, "the launcher has a child process");
      const argv = (await Deno.readTextFile(`/proc/${service}/cmdline`)).split("\0").filter(Boolean);
      assert.deepEqual(argv.slice(1), ["run", ...expected.flags, "src/main.ts"]);
      // With the allocator defaults next to the environment it was given (which has none of them).
      assert.deepEqual(granted.service_env, SERVICE_ENV);
      // (Only the name: glibc cuts GLIBC_TUNABLES short in place as it parses it, after applying every entry.)
      const environ = (await Deno.readTextFile(`/proc/${service}/environ`)).split("\0");
      for (const name of Object.keys(SERVICE_ENV)) {
        assert.ok(environ.some((e) => e.startsWith(`${name}=`)), name);
      }
      assert.deepEqual(
        argv.filter((a) => a.startsWith("--allow-") || a === "-A"),
        expected.flags.slice(0, 3),
      );
    } finally {
      terminate(launcher);
      status = await launcher.status;
      await Promise.all([out.done, err.done]);
      await cleanup(config);
    }
    assert.equal(
      status.code,
      0,
      `the launcher exits with the service's code; stderr:\n${err.all.join("\n")}`,
    );
    assert.ok(out.all.some((l) => l.includes('"message":"received SIGTERM"')), "the service got the SIGTERM");
    assert.ok(out.all.some((l) => l.includes('"message":"stopped"')), "and stopped gracefully");
  },
);

Deno.test("launcher: a bad configuration prints the error naming each variable, exits 2, starts nothing", async () => {
  const { code, stdout, stderr } = await new Deno.Command(DENO, {
    args: ["run", "--allow-env", "--allow-run=deno", "scripts/launch.ts", "src/main.ts"],
    cwd: ROOT,
    clearEnv: true,
    env: { ...cliEnv(), PATH: await pathWithThisDeno(), HTTP_PORT: "eighty", SHOPIFY_TOKEN: "shpat_secret" },
  }).output();
  const text = new TextDecoder().decode(stderr);
  assert.equal(code, 2, text);
  assert.equal(new TextDecoder().decode(stdout), "", "no granted set: nothing was started");
  assert.match(text, /^marketplace-sync: invalid configuration \(2 problems\)/);
  assert.match(text, /HTTP_PORT: must be a whole number/);
  assert.match(text, /SHOPIFY_URL: SHOPIFY_URL and SHOPIFY_TOKEN must be set together/);
  assert.doesNotMatch(text, /shpat_secret/);
  // Permission flags are derived, never passed.
  const passed = await new Deno.Command(DENO, {
    args: ["run", "--allow-env", "--allow-run=deno", "scripts/launch.ts", "--allow-net", "src/main.ts"],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(passed.code, 64);
  assert.match(new TextDecoder().decode(passed.stderr), /permissions are derived from the configuration/);
});

Deno.test("launcher: --v8-flags=… replaces the default heap settings; the environment's GLIBC_TUNABLES wins", async () => {
  const PATH = await pathWithThisDeno();
  const run = (args: string[], env: Record<string, string> = {}) =>
    new Deno.Command(DENO, {
      args: ["run", "--allow-env", "--allow-run=deno", "scripts/launch.ts", ...args],
      cwd: ROOT,
      clearEnv: true,
      env: { ...cliEnv(), PATH, LOG_FORMAT: "json", ...env },
    }).output();
  const derived = await run(["--print-flags"]);
  assert.equal(derived.code, 0, new TextDecoder().decode(derived.stderr));
  const flags = new TextDecoder().decode(derived.stdout).trim().split(" ");
  assert.equal(flags.at(-1), `--v8-flags=${V8_FLAGS.join(",")}`);
  const replaced = await run(["--v8-flags=--max-old-space-size=512", "--print-flags", "src/main.ts"]);
  assert.equal(replaced.code, 0, new TextDecoder().decode(replaced.stderr));
  assert.deepEqual(new TextDecoder().decode(replaced.stdout).trim().split(" "), [
    ...flags.slice(0, -1),
    "--v8-flags=--max-old-space-size=512",
  ]);
  // An entry that does not exist: the launcher announces what it runs, then the service fails to load.
  const granted = async (env: Record<string, string>) => {
    const out = await run(["no-such-entry.ts"], env);
    assert.notEqual(out.code, 0);
    return JSON.parse(new TextDecoder().decode(out.stdout).split("\n")[0]).service_env;
  };
  assert.deepEqual(await granted({}), SERVICE_ENV);
  assert.deepEqual(await granted({ GLIBC_TUNABLES: "glibc.malloc.arena_max=4" }), {});
});

Deno.test("V8_FLAGS are flags this V8 knows, they bound the heap and expose gc()", async () => {
  const { code, stdout, stderr } = await new Deno.Command(DENO, {
    args: [
      "eval",
      `--v8-flags=${V8_FLAGS.join(",")}`,
      'import v8 from "node:v8"; console.log(v8.getHeapStatistics().heap_size_limit, typeof globalThis.gc)',
    ],
    clearEnv: true,
    env: cliEnv(),
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const [limit, gc] = new TextDecoder().decode(stdout).trim().split(" ");
  // --expose-gc: the start-up collection (collectStartupGarbage in src/service/process.ts) has its gc().
  assert.equal(gc, "function");
  const limitMib = Number(limit) / 1024 / 1024;
  // 256 MiB old generation plus the young generation (2 semi-spaces of 2 MiB and V8's bookkeeping).
  assert.ok(limitMib > 256 && limitMib < 300, `heap limit ${limitMib} MiB`);
});

const PROBE = `
const result = {};
async function attempt(name, fn) {
  try {
    await fn();
    result[name] = "ok";
  } catch (error) {
    result[name] = error instanceof Deno.errors.NotCapable ? "NotCapable" : error.constructor.name + ": " + error.message;
  }
}
const [redisHost, redisPort, otherPort, written] = Deno.args;
await attempt("fetch another host", () => fetch("http://127.0.0.2:8081/"));
await attempt("fetch the internet", () => fetch("https://example.com/"));
await attempt("connect to a configured host on another port", async () => (await Deno.connect({ hostname: redisHost, port: Number(otherPort) })).close());
await attempt("connect to Redis (configured)", async () => (await Deno.connect({ hostname: redisHost, port: Number(redisPort) })).close());
await attempt("listen on another port", () => Deno.listen({ hostname: "127.0.0.1", port: Number(otherPort) }).close());
await attempt("read a configuration variable", () => { if (!Deno.env.get("QUEUE")) throw new Error("QUEUE unset"); });
await attempt("read an unlisted variable", () => Deno.env.get("NOT_LISTED"));
await attempt("read HOME", () => Deno.env.get("HOME"));
await attempt("read the whole environment", () => Deno.env.toObject());
await attempt("read a file", () => Deno.readTextFile("/etc/hostname"));
await attempt("write a file", () => Deno.writeTextFile(written, "x"));
await attempt("run a program", () => new Deno.Command("/bin/sh", { args: ["-c", "true"] }).output());
await attempt("load a library (ffi)", () => Deno.dlopen("libc.so.6", {}));
await attempt("hostname", () => Deno.hostname());
await attempt("osRelease", () => Deno.osRelease());
await attempt("import remote code", () => import("https://deno.land/std/version.ts"));
console.log(JSON.stringify(result));
`;

Deno.test("the derived flags deny everything outside the configuration: NotCapable", async () => {
  const env = serviceEnv();
  const { flags } = permissionsFor(loadConfig(env), env);
  const dir = await Deno.makeTempDir({ prefix: "permissions_probe_" });
  try {
    await Deno.writeTextFile(`${dir}/probe.js`, PROBE);
    const redis = new URL(env.REDIS_URL);
    const { code, stdout, stderr } = await new Deno.Command(DENO, {
      // Exactly the service's flags; the probe stands in for code running inside the service.
      args: [
        "run",
        ...flags,
        `${dir}/probe.js`,
        redis.hostname,
        redis.port || "6379",
        String(freePort()),
        `${dir}/written`,
      ],
      cwd: dir,
      clearEnv: true,
      env: { ...env, ...cliEnv(), NOT_LISTED: "x" },
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const result = JSON.parse(new TextDecoder().decode(stdout));
    assert.deepEqual(result, {
      "fetch another host": "NotCapable",
      "fetch the internet": "NotCapable",
      "connect to a configured host on another port": "NotCapable",
      "connect to Redis (configured)": "ok",
      "listen on another port": "NotCapable",
      "read a configuration variable": "ok",
      "read an unlisted variable": "NotCapable",
      "read HOME": "NotCapable",
      "read the whole environment": "NotCapable",
      "read a file": "NotCapable",
      "write a file": "NotCapable",
      "run a program": "NotCapable",
      "load a library (ffi)": "NotCapable",
      "hostname": "ok",
      "osRelease": "NotCapable",
      "import remote code":
        'TypeError: A remote specifier was requested: "https://deno.land/std/version.ts", but --no-remote is specified.',
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- bundle and compile ---------------------------------------------------------------------------------

integration(
  "deno task bundle: one file that runs offline with the derived flags, away from the project",
  async () => {
    const buildDir = await Deno.makeTempDir({ prefix: "permissions_bundle_" });
    const runDir = await Deno.makeTempDir({ prefix: "permissions_bundle_run_" });
    const env = serviceEnv();
    const config = loadConfig(env);
    try {
      const build = await new Deno.Command(DENO, {
        args: ["task", "bundle", "--out", buildDir],
        cwd: ROOT,
        env: { PATH: await pathWithThisDeno(), NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const report = new TextDecoder().decode(build.stdout);
      assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
      console.log(report.split("\n")[0]); // bundled src/main.ts → …/marketplace-sync.js (size, time)
      // No deno.json, deno.lock or node_modules next to it: npm packages are inlined.
      await Deno.copyFile(`${buildDir}/marketplace-sync.js`, `${runDir}/marketplace-sync.js`);
      const child = new Deno.Command(DENO, {
        args: ["run", ...permissionsFor(config, env).flags, "marketplace-sync.js"],
        cwd: runDir,
        clearEnv: true,
        env: { ...env, ...cliEnv() },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = lines(child.stdout);
      const err = lines(child.stderr);
      let status: Deno.CommandStatus;
      try {
        await waitForStatus(`http://127.0.0.1:${env.HTTP_PORT}/healthz`, 200, child, out.all, err.all);
        await waitForStatus(`http://127.0.0.1:${env.HTTP_PORT}/readyz`, 200, child, out.all, err.all);
      } finally {
        terminate(child);
        status = await child.status;
        await Promise.all([out.done, err.done]);
      }
      assert.equal(status.code, 0, err.all.join("\n"));
      assert.doesNotMatch([...out.all, ...err.all].join("\n"), /NotCapable/);
    } finally {
      await cleanup(config);
      await Deno.remove(buildDir, { recursive: true });
      await Deno.remove(runDir, { recursive: true });
    }
  },
);

/** Where `deno compile` keeps a downloaded denort for a target, per `deno info`. */
async function cachedDenort(triple: string): Promise<boolean> {
  const info = await new Deno.Command(DENO, { args: ["info", "--json"], stdout: "piped", stderr: "null" })
    .output();
  const denoDir = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir as string;
  try {
    await Deno.stat(`${denoDir}/dl/release/v${Deno.version.deno}/denort-${triple}.zip`);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "deno task compile without DENORT_BIN and no reachable denort: one clear line, exit 1, fast",
  ignore: Boolean(Deno.env.get("DENORT_BIN")) || await cachedDenort(TARGETS.x86_64.triple),
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "permissions_compile_" });
    try {
      const started = performance.now();
      const { code, stdout, stderr } = await new Deno.Command(DENO, {
        args: ["task", "compile", "--out", out],
        cwd: ROOT,
        env: { PATH: await pathWithThisDeno(), NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(120_000),
      }).output();
      const seconds = (performance.now() - started) / 1000;
      const text = new TextDecoder().decode(stderr).trim();
      if (code === 0) {
        // Online: the binaries are there instead.
        for (const { suffix } of Object.values(TARGETS)) await Deno.stat(`${out}/marketplace-sync${suffix}`);
        return;
      }
      assert.equal(code, 1, text);
      const messages = text.split("\n").filter((l) => !l.startsWith("Task compile"));
      assert.equal(messages.length, 1, `one line:\n${text}`);
      assert.match(
        messages[0],
        /^marketplace-sync compile: cannot get the denort runtime for x86_64-unknown-linux-gnu \(download from dl\.deno\.land failed: .+\); set DENORT_BIN=\/path\/to\/denort .* or build on a machine with internet access; `deno task bundle` is the offline path$/,
      );
      assert.doesNotMatch(text, /Stack backtrace|at .*\.ts:\d+/);
      assert.equal(new TextDecoder().decode(stdout), "", "nothing else printed");
      assert.ok(seconds < 60, `failed fast (${seconds.toFixed(1)} s)`);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
