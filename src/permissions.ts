/**
 * Least-privilege Deno permissions, derived from the validated configuration.
 *
 * The service never runs with `-A`: `deno task start` (scripts/launch.ts), the container, the bundle and the
 * compiled binary grant exactly what {@link permissionsFor} returns for their configuration — one source of
 * truth, the same zod schema that validates the environment:
 *
 * - net: host:port of the broker, the ledger's Postgres, Redis, the POS's Postgres/Redis when set, each
 *   marketplace the service will call (only for channels that dispatch here) — for Shopify also the host its
 *   bulk operation results are downloaded from (`SHOPIFY_BULK_HOST`) —, the built-in sandboxes' loopback
 *   address when a marketplace is not configured (and `localhost`, where the Shopify sandbox serves bulk
 *   results as that host's stand-in), and the HTTP listen address;
 * - env: the variables the configuration reads plus those its libraries read ({@link LIBRARY_ENV});
 * - sys: `hostname` (the broker connection name and the resync owner);
 * - read: `SANDBOX_CATALOG` when a sandbox will load it; nothing else (modules load without read);
 * - no write, run, ffi; `--no-prompt`, so an access outside the set throws `Deno.errors.NotCapable`
 *   instead of asking a person on a TTY; `--no-remote`, so no `import("https://…")` fetches code from a
 *   host outside the list (Deno otherwise allows remote imports from deno.land, jsr.io, esm.sh, … by default).
 *
 * The same flags carry the service's runtime settings — Deno's ({@link DENO_FLAGS}) and V8's heap settings
 * ({@link V8_FLAGS}) —, and {@link SERVICE_ENV} holds the allocator settings the launcher gives the service
 * process: how the service runs is decided here too, once.
 */
import { type Config, CONFIG_VARIABLES } from "./config.ts";

/**
 * Environment variables the service's npm dependencies read through `process.env`. Deno's Node compatibility
 * layer checks each key when it is read, so an unlisted one throws NotCapable where the library reads it.
 */
export const LIBRARY_ENV: Readonly<Record<string, readonly string[]>> = {
  // postgres@3.4.9 src/index.js parseOptions(): PGHOST/PGPORT/PGUSER… when the URL leaves them out,
  // PGAPPNAME and PGTARGETSESSIONATTRS always, and `env['PG' + option.toUpperCase()]` for every option the
  // caller does not pass (ssl, max_lifetime, keep_alive, …). The README promises the usual PG* variables.
  postgres: [
    "PGHOST",
    "PGPORT",
    "PGUSERNAME",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
    "PGMAX",
    "PGSSL",
    "PGSSLNEGOTIATION",
    "PGIDLE_TIMEOUT",
    "PGCONNECT_TIMEOUT",
    "PGMAX_LIFETIME",
    "PGMAX_PIPELINE",
    "PGBACKOFF",
    "PGKEEP_ALIVE",
    "PGPREPARE",
    "PGDEBUG",
    "PGFETCH_TYPES",
    "PGPUBLICATIONS",
    "PGTARGET_SESSION_ATTRS",
  ],
  // @redis/client@6.3.1 dist/lib/client/enterprise-maintenance-manager.js (maintenance notifications).
  redis: ["REDIS_DEBUG_MAINTENANCE", "REDIS_EMIT_DIAGNOSTICS"],
  // graphql@16.14.2 jsutils/instanceOf.js, read when the Shopify client's schema module loads.
  graphql: ["NODE_ENV"],
};

/**
 * postgres.js falls back to the OS user name when a URL names no user and neither PGUSERNAME nor PGUSER is
 * set: `os.userInfo()` (denied, and caught) and then these, read outside its try.
 */
const OS_USER_ENV = ["USERNAME", "USER", "LOGNAME"];

/** System information the service reads: `Deno.hostname()` in src/main.ts and src/service/connections.ts. */
const SYS = ["hostname"];

/** Default ports of the URL schemes the configuration accepts. */
const DEFAULT_PORTS: Record<string, number> = {
  "amqp:": 5672,
  "amqps:": 5671,
  "postgres:": 5432,
  "postgresql:": 5432,
  "redis:": 6379,
  "rediss:": 6379,
  "http:": 80,
  "https:": 443,
};

/**
 * Deno runtime settings of the service process (docs/DECISIONS.md, "Memory"; measured with
 * `deno task bench --sections idle`, docs/BENCHMARKS.md, "Sustained stream").
 *
 * - `--no-code-cache`: with a writable DENO_DIR (`deno task start` on a host, the benchmarks) Deno keeps V8's
 *   compiled code of every module in a SQLite file there and keeps that file mapped while the process runs:
 *   ~4.5 MiB of the idle service's RSS (file pages) and ~1 MiB of malloc's heap, for a cache that only
 *   saves compiling at start-up (0.1–0.4 CPU-seconds here, once). Idle, 3 s after start-up: 96–97 MiB
 *   without it against 102–106 MiB with it. The container's DENO_DIR is read-only and holds no code cache
 *   (nothing in the image build runs the service), so there the flag changes nothing.
 */
export const DENO_FLAGS: readonly string[] = ["--no-code-cache"];

/**
 * V8 heap settings of the service process (docs/DECISIONS.md, "Memory"; measured in docs/BENCHMARKS.md,
 * "Sustained stream"). V8 sizes its heap for the machine, not for this service: on a host with a few GiB it
 * lets the young generation grow to 2 × 16 MiB semi-spaces (never given back) and, with a 4 GiB old-space
 * limit, lets the old generation grow to about 4 × its live data before collecting. The service's live heap
 * is ~20 MiB idle and ~25–45 MiB at 1 000 sales/s, so those defaults alone took it from ~127 to ~240 MiB RSS.
 *
 * - `--max-semi-space-size=2`: a young generation of 2 × 2 MiB. Short-lived garbage (decoded events, SQL
 *   rows, JSON payloads) is still collected by scavenges, just more often.
 * - `--max-old-space-size=256`: the old generation may hold up to 256 MiB of live data (5× what was measured
 *   under load) before V8 gives up with "heap out of memory". The smaller limit also makes V8 use its small
 *   heap growing factor (≈1.3 instead of up to 4), which is what keeps the old generation near its live size.
 * - `--expose-gc`: the global `gc()`, called once when start-up is done (collectStartupGarbage in
 *   src/service/process.ts) for one memory-reducing collection. Start-up leaves ~15 MiB of committed heap
 *   pages it no longer needs, which V8's own memory reducer gives back only ~30 s later: with the call the
 *   idle service measured 82–84 MiB RSS 3 s after start-up instead of 96–97 (docs/BENCHMARKS.md). Nothing
 *   else calls it. A `--v8-flags=…` given to the launcher without it just skips that collection.
 */
export const V8_FLAGS: readonly string[] = [
  "--max-semi-space-size=2",
  "--max-old-space-size=256",
  "--expose-gc",
];

/**
 * Environment defaults for the service process, set by the launcher (scripts/launch.ts) unless the
 * environment already has the variable. glibc's allocator otherwise keeps up to 8 arenas per core, and
 * raises its mmap/trim thresholds after large frees, so freed native memory (Deno's I/O and HTTP buffers)
 * stays resident: these settings took ~8 MiB off the service's steady RSS at 1 000 sales/s. Other C
 * libraries ignore the variable.
 */
export const SERVICE_ENV: Readonly<Record<string, string>> = {
  GLIBC_TUNABLES:
    "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072",
};

/**
 * `flags` with their V8 heap settings replaced by `v8Flags` (a whole `--v8-flags=…` argument), or
 * dropped when it is null (V8's own defaults).
 */
export function withV8Flags(flags: readonly string[], v8Flags: string | null): string[] {
  const rest = flags.filter((f) => !f.startsWith("--v8-flags="));
  return v8Flags === null ? rest : [...rest, v8Flags];
}

/** Environment variables as `NAME=value …`, the way a shell command line shows them. */
export function envText(env: Readonly<Record<string, string>>): string {
  return Object.entries(env).map(([name, value]) => `${name}=${value}`).join(" ");
}

/** The address the built-in sandboxes listen on (src/sandbox/) and the service calls. */
export const SANDBOX_HOST = "127.0.0.1";

/**
 * The name the Shopify sandbox's bulk result storage listens on and its result URLs use
 * (src/sandbox/shopify/storage.ts): another host than the API's, like Shopify's storage host.
 */
export const SANDBOX_STORAGE_HOST = "localhost";

/** The permissions a configuration needs, and the `deno run` flags that grant exactly them. */
export interface Permissions {
  /** `host:port` entries, or a bare host where the port is chosen at run time (any port of that host). */
  net: string[];
  env: string[];
  read: string[];
  sys: string[];
  /**
   * For `deno run` / `deno compile`: the `--allow-*` flags, `--no-prompt`, `--no-remote`, the Deno runtime
   * settings ({@link DENO_FLAGS}) and, last, the V8 heap settings (`--v8-flags=`, {@link V8_FLAGS}).
   */
  flags: string[];
  /** Why each net and read entry is there (the variables it comes from), for people. */
  reasons: Record<string, string[]>;
}

/** `[v6]` for IPv6 literals, as `--allow-net` wants them; anything else as is. */
function hostToken(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/**
 * Derives the permissions of the service for a validated configuration.
 * @param env the environment the service will see: only the library variables that change where it connects
 *   are looked at (PGHOST / PGPORT when a Postgres URL leaves host or port out, PGUSER / PGUSERNAME).
 */
export function permissionsFor(config: Config, env: Record<string, string | undefined> = {}): Permissions {
  const net: string[] = [];
  const read: string[] = [];
  const reasons: Record<string, string[]> = {};
  const grant = (list: string[], entry: string, why: string) => {
    if (!list.includes(entry)) list.push(entry);
    (reasons[entry] ??= []).includes(why) || reasons[entry].push(why);
  };
  const url = (variable: string, value: string) => {
    const u = new URL(value);
    const port = u.port || String(DEFAULT_PORTS[u.protocol]);
    grant(net, `${hostToken(u.hostname || "localhost")}:${port}`, variable);
  };
  let userless = false;
  const postgresUrl = (variable: string, value: string) => {
    // postgres.js: host from the URL, else PGHOST (comma-separated, each host[:port]), else localhost;
    // port from the URL, else PGPORT, else 5432.
    const u = new URL(value);
    if (!u.username && !env.PGUSERNAME && !env.PGUSER) userless = true;
    const port = u.port || env.PGPORT || "5432";
    const hosts = u.hostname ? [u.hostname] : (env.PGHOST || "localhost").split(",");
    for (const h of hosts) {
      const [host, hostPort] = h.trim().split(":"); // as postgres.js splits it
      grant(net, `${hostToken(host)}:${hostPort || port}`, variable + (u.hostname ? "" : " (PGHOST)"));
    }
  };

  url("RABBITMQ_URL", config.RABBITMQ_URL);
  postgresUrl("DATABASE_URL", config.DATABASE_URL);
  url("REDIS_URL", config.REDIS_URL);
  if (config.POS_DATABASE_URL) postgresUrl("POS_DATABASE_URL", config.POS_DATABASE_URL);
  if (config.POS_REDIS_URL) url("POS_REDIS_URL", config.POS_REDIS_URL);

  // Mirrors the channel plugs (src/channels/<name>/plug.ts): a channel's client (real API or built-in sandbox) exists only where it dispatches.
  const dispatches = (channel: "shopify" | "mercadolibre") =>
    config.DISPATCH_ENABLED && config.CHANNELS.includes(channel);
  const sandbox = (name: string, port: number) =>
    grant(
      net,
      port === 0 ? SANDBOX_HOST : `${SANDBOX_HOST}:${port}`,
      `${name} sandbox (loopback${port === 0 ? ", OS-chosen port" : ""})`,
    );
  const meliConfigured = Boolean(
    config.MELI_TOKEN || (config.MELI_CLIENT_ID && config.MELI_CLIENT_SECRET && config.MELI_REFRESH_TOKEN),
  );
  let catalogNeeded = false;
  if (dispatches("shopify")) {
    if (config.SHOPIFY_URL && config.SHOPIFY_TOKEN) {
      url("SHOPIFY_URL", config.SHOPIFY_URL);
      // Bulk operation results: signed URLs on Shopify's storage host, always https.
      url("SHOPIFY_BULK_HOST", `https://${config.SHOPIFY_BULK_HOST}`);
    } else {
      sandbox("Shopify", config.SANDBOX_SHOPIFY_PORT);
      grant(net, SANDBOX_STORAGE_HOST, "Shopify sandbox's bulk result storage (loopback, OS-chosen port)");
      catalogNeeded = true;
    }
  }
  if (dispatches("mercadolibre")) {
    if (meliConfigured) url("MELI_URL", config.MELI_URL);
    else {
      sandbox("MercadoLibre", config.SANDBOX_MELI_PORT);
      catalogNeeded = true;
    }
  }
  // Without credentials, mirror mode takes the store MercadoLibre shows from the catalog even when this
  // instance does not dispatch (mirroredStore() in src/channels/mercadolibre/plug.ts).
  if (
    config.CHANNELS.includes("mercadolibre") && !meliConfigured && config.MELI_MODE === "mirror" &&
    !config.MELI_TIENDA_ID
  ) catalogNeeded = true;
  if (catalogNeeded && config.SANDBOX_CATALOG) grant(read, config.SANDBOX_CATALOG, "SANDBOX_CATALOG");

  grant(
    net,
    `${hostToken(config.HTTP_HOST)}${config.HTTP_PORT === 0 ? "" : `:${config.HTTP_PORT}`}`,
    "listen (HTTP_HOST:HTTP_PORT)",
  );

  const envNames = [
    ...CONFIG_VARIABLES,
    ...Object.values(LIBRARY_ENV).flat(),
    ...(userless ? OS_USER_ENV : []),
  ];
  const envList = [...new Set(envNames)];
  const flags = [
    `--allow-net=${net.join(",")}`,
    `--allow-env=${envList.join(",")}`,
    `--allow-sys=${SYS.join(",")}`,
  ];
  if (read.length > 0) flags.push(`--allow-read=${read.join(",")}`);
  flags.push("--no-prompt", "--no-remote", ...DENO_FLAGS, `--v8-flags=${V8_FLAGS.join(",")}`);
  return { net, env: envList, read, sys: [...SYS], flags, reasons };
}

/** The granted set for people: one line per permission kind, each net entry with where it comes from. */
export function describePermissions(p: Permissions): string {
  const libraryNames = new Set(Object.values(LIBRARY_ENV).flat());
  const own = p.env.filter((name) => CONFIG_VARIABLES.includes(name));
  const libraries = Object.entries(LIBRARY_ENV).map(([lib, names]) =>
    `${lib}: ${names.length > 4 ? `${names.slice(0, 3).join(", ")}, … (${names.length})` : names.join(", ")}`
  );
  const other = p.env.filter((name) => !CONFIG_VARIABLES.includes(name) && !libraryNames.has(name));
  return [
    "granted permissions (derived from the configuration; everything else is denied):",
    ...p.net.map((entry, i) => `  ${i === 0 ? "net " : "    "}  ${entry}  ← ${p.reasons[entry].join(", ")}`),
    `  env   ${own.length} configuration variables; libraries: ${libraries.join("; ")}` +
    (other.length > 0 ? `; ${other.join(", ")} (postgres.js user fallback)` : ""),
    `  sys   ${p.sys.join(", ")}`,
    `  read  ${
      p.read.length > 0 ? p.read.map((r) => `${r}  ← ${p.reasons[r].join(", ")}`).join(", ") : "none"
    }`,
    "  no write, run, ffi or remote imports",
  ].join("\n");
}
