/**
 * The process around the service: read the configuration from the environment (our own
 * variables only), set up logging, start, give start-up's garbage back once started, wait
 * for SIGTERM/SIGINT (or a start-up step that cannot be retried), and close within
 * SHUTDOWN_TIMEOUT.
 */
import { type Config, CONFIG_VARIABLES, ConfigError, loadConfig } from "../config.ts";
import { logger, setupLogging } from "../log.ts";
import { withTimeout } from "./lifecycle.ts";

const log = logger("main");

/** The `gc` function V8's `--expose-gc` installs (V8_FLAGS in src/permissions.ts), as far as we call it. */
export type ExposedGc = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

/** What {@link collectStartupGarbage} did: the process's RSS before and after, in MiB, and how long it took. */
export interface StartupCollection {
  rssBeforeMib: number;
  rssAfterMib: number;
  ms: number;
}

/**
 * One full, memory-reducing collection (V8's "last resort" flavour: compacts the heap and gives its free
 * pages and the young generation's back to the OS), called once when start-up is done. Loading and running
 * start-up (modules, the configuration's schema, migrations, topology) leaves V8's heap with ~15 MiB of
 * committed pages it no longer needs; V8's own memory reducer gives them back too, but only ~30 s after
 * start-up, so until then the idle RSS was ~104 MiB instead of ~90 (docs/BENCHMARKS.md, "Sustained stream").
 * It takes some tens of milliseconds, once. Nothing happens when `gc` is not exposed (tests, or V8 flags
 * replaced with `launch.ts --v8-flags=…` without `--expose-gc`): the memory reducer still does it later.
 */
export function collectStartupGarbage(
  gc: ExposedGc | undefined = (globalThis as { gc?: ExposedGc }).gc,
): StartupCollection | undefined {
  if (typeof gc !== "function") return undefined;
  const mib = () => Deno.memoryUsage().rss / 1024 / 1024;
  const rssBeforeMib = mib();
  const started = performance.now();
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  return { rssBeforeMib, rssAfterMib: mib(), ms: performance.now() - started };
}

/** What the process needs of a started service. */
export interface Stoppable {
  started: Promise<void>;
  close(): Promise<void>;
}

/** Runs the service until a signal; the exit code: 0 clean, 1 failed or timed out, 2 bad configuration. */
export async function runProcess(start: (config: Config) => Stoppable): Promise<number> {
  let config: Config;
  try {
    // Only our own variables: toObject() would need access to the whole environment.
    config = loadConfig(Object.fromEntries(CONFIG_VARIABLES.map((name) => [name, Deno.env.get(name)])));
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`marketplace-sync: ${error.message}`);
      return 2;
    }
    throw error;
  }
  await setupLogging({ level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  const service = start(config);
  const stop = Promise.withResolvers<string>();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => stop.resolve(signal));
  }
  // A start-up step that cannot be retried (e.g. the sandbox port is taken) ends the process.
  let fatal = false;
  service.started.catch(() => {
    fatal = true;
    stop.resolve("start-up failure");
  });
  service.started.then(() => {
    const collected = collectStartupGarbage();
    if (collected) {
      log.debug("start-up garbage collected in {ms} ms: RSS {before} → {after} MiB", {
        ms: Math.round(collected.ms),
        before: Math.round(collected.rssBeforeMib),
        after: Math.round(collected.rssAfterMib),
      });
    }
  }, () => {});
  const signal = await stop.promise;
  log.info("received {signal}", { signal, mark: "shutdown" });
  try {
    await withTimeout(service.close(), config.SHUTDOWN_TIMEOUT, "graceful shutdown");
    return fatal ? 1 : 0;
  } catch (error) {
    log.error("{error}; exiting anyway (unacked deliveries will be redelivered)", {
      mark: "error",
      error: (error as Error).message,
    });
    return 1;
  }
}
