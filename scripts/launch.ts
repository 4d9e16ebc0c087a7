/**
 * Starts the service with least-privilege permissions derived from its configuration (`deno task start`, the
 * container's CMD, `deno task dev`).
 *
 *   deno run --allow-env --allow-run=deno scripts/launch.ts [--cached-only] [--frozen] [--watch] src/main.ts
 *   deno run --allow-env --allow-run=deno scripts/launch.ts --v8-flags=--max-old-space-size=512 src/main.ts
 *   deno run --allow-env --allow-run=deno scripts/launch.ts dist/marketplace-sync.js     # the bundle
 *   deno run --allow-env scripts/launch.ts --print-flags                                # flags only
 *
 * The launcher is not the service. It validates the environment with the service's own schema (a bad value:
 * the same one-error-per-variable message as the service, exit 2, nothing started), prints the granted set,
 * then runs `deno run <runtime options> <permissionsFor(config) flags> <entry>` with the environment passed
 * through (plus the allocator defaults of SERVICE_ENV for variables the environment does not set), forwards
 * SIGTERM/SIGINT/SIGHUP/SIGQUIT to it and exits with its exit code. The derived flags end with the service's
 * V8 heap settings (V8_FLAGS in src/permissions.ts); `--v8-flags=…` given to the launcher replaces them. It needs only env (to
 * read the configuration) and run for `deno` (found on PATH); it opens no socket and reads or writes no file.
 * The service process it starts gets net, env, sys and read scoped to its configuration and nothing else.
 */
import { ConfigError, loadConfig } from "../src/config.ts";
import {
  describePermissions,
  envText,
  type Permissions,
  permissionsFor,
  SERVICE_ENV,
  withV8Flags,
} from "../src/permissions.ts";

/** `deno run` options the launcher passes on; permission flags are never accepted, they are derived. */
const RUNTIME_OPTIONS = new Set(["--cached-only", "--frozen", "--watch", "--no-check", "--quiet"]);
const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"] as const;
const USAGE =
  "usage: launch.ts [--cached-only] [--frozen] [--watch] [--no-check] [--quiet] [--v8-flags=…] [--print-flags] " +
  "[entry, default src/main.ts]";

function fail(message: string, code: number): never {
  console.error(`marketplace-sync launcher: ${message}`);
  Deno.exit(code);
}

/** The granted-permissions line: JSON like the service's log lines, or a readable block on a TTY. */
function announce(
  p: Permissions,
  format: "auto" | "json" | "pretty",
  command: string[],
  serviceEnv: Record<string, string>,
): void {
  const pretty = format === "pretty" || (format === "auto" && Deno.stdout.isTerminal());
  const shown = envText(serviceEnv);
  if (pretty) {
    console.log(`${describePermissions(p)}\n  run   ${shown ? `${shown} ` : ""}${command.join(" ")}`);
    return;
  }
  const { net, env, sys, read, flags } = p;
  console.log(JSON.stringify({
    time: new Date().toISOString(),
    level: "info",
    logger: "marketplace-sync.launch",
    message:
      `granted permissions: net ${net.join(",")}; env ${env.length} variables; sys ${sys.join(",")}; ` +
      `read ${read.join(",") || "none"}; no write, run or ffi`,
    net,
    env,
    sys,
    read,
    flags,
    command,
    service_env: serviceEnv,
  }));
}

async function main(args: string[]): Promise<number> {
  const options: string[] = [];
  let printFlags = false;
  let v8Flags: string | undefined;
  let entry: string | undefined;
  for (const arg of args) {
    if (arg === "--") continue; // `deno task start -- --print-flags` passes the separator on
    else if (arg === "--print-flags") printFlags = true;
    else if (arg.startsWith("--v8-flags=")) v8Flags = arg;
    else if (RUNTIME_OPTIONS.has(arg)) options.push(arg);
    else if (arg === "-A" || /^--(allow|deny)-/.test(arg)) {
      fail(`${arg}: permissions are derived from the configuration (src/permissions.ts), not passed`, 64);
    } else if (arg.startsWith("-") || entry !== undefined) fail(`unexpected argument ${arg}\n${USAGE}`, 64);
    else entry = arg;
  }
  entry ??= "src/main.ts";

  const env = Deno.env.toObject();
  let config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    // Word for word what the service prints for the same environment.
    console.error(`marketplace-sync: ${error.message}`);
    return 2;
  }
  const derived = permissionsFor(config, env);
  // The operator's --v8-flags=… replaces the default heap settings (the last entry of the derived flags).
  const permissions: Permissions = v8Flags === undefined
    ? derived
    : { ...derived, flags: withV8Flags(derived.flags, v8Flags) };
  if (printFlags) {
    console.log(permissions.flags.join(" "));
    return 0;
  }

  const command = ["deno", "run", ...options, ...permissions.flags, entry];
  // Allocator defaults only where the environment is silent: an operator's own value wins.
  const serviceEnv = Object.fromEntries(
    Object.entries(SERVICE_ENV).filter(([name]) => env[name] === undefined),
  );
  announce(permissions, config.LOG_FORMAT, command, serviceEnv);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("deno", { args: command.slice(1), stdin: "inherit", env: serviceEnv }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) fail("cannot start the service: `deno` is not on PATH", 127);
    throw error;
  }
  for (const signal of SIGNALS) {
    Deno.addSignalListener(signal, () => {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
    });
  }
  // A child killed by a signal reports 128 + its number, as a shell does.
  return (await child.status).code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
