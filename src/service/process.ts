/**
 * The process around the service: read the configuration from the environment (our own
 * variables only), set up logging, start, wait for SIGTERM/SIGINT (or a start-up step
 * that cannot be retried), and close within SHUTDOWN_TIMEOUT.
 */
import { type Config, CONFIG_VARIABLES, ConfigError, loadConfig } from "../config.ts";
import { logger, setupLogging } from "../log.ts";
import { withTimeout } from "./lifecycle.ts";

const log = logger("main");

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
