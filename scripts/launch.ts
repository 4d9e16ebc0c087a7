/**
 * Starts the service with least-privilege permissions derived from its configuration (`deno task start`, the
 * container's CMD, `deno task dev`).
 *
 *   deno run --allow-env --allow-run=deno scripts/launch.ts [--cached-only] [--frozen] [--watch] src/main.ts
 *   deno run --allow-env --allow-run=deno scripts/launch.ts dist/marketplace-sync.js     # the bundle
 *   deno run --allow-env scripts/launch.ts --print-flags                                # flags only
 *
 * The launcher is not the service. It validates the environment with the service's own schema (a bad value:
 * the same one-error-per-variable message as the service, exit 2, nothing started), prints the granted set,
 * then runs `deno run <runtime options> <permissionsFor(config) flags> <entry>` with the environment passed
 * through, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it and exits with its exit code. It needs only env (to
 * read the configuration) and run for `deno` (found on PATH); it opens no socket and reads or writes no file.
 * The service process it starts gets net, env, sys and read scoped to its configuration and nothing else.
 */
import { ConfigError, loadConfig } from "../src/config.ts";
import { describePermissions, type Permissions, permissionsFor } from "../src/permissions.ts";

/** `deno run` options the launcher passes on; permission flags are never accepted, they are derived. */
const RUNTIME_OPTIONS = new Set(["--cached-only", "--frozen", "--watch", "--no-check", "--quiet"]);
const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"] as const;
const USAGE =
  "usage: launch.ts [--cached-only] [--frozen] [--watch] [--no-check] [--quiet] [--print-flags] " +
  "[entry, default src/main.ts]";

function fail(message: string, code: number): never {
  console.error(`marketplace-sync launcher: ${message}`);
  Deno.exit(code);
}

/** The granted-permissions line: JSON like the service's log lines, or a readable block on a TTY. */
function announce(p: Permissions, format: "auto" | "json" | "pretty", command: string[]): void {
  const pretty = format === "pretty" || (format === "auto" && Deno.stdout.isTerminal());
  if (pretty) {
    console.log(`${describePermissions(p)}\n  run   ${command.join(" ")}`);
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
  }));
}

async function main(args: string[]): Promise<number> {
  const options: string[] = [];
  let printFlags = false;
  let entry: string | undefined;
  for (const arg of args) {
    if (arg === "--print-flags") printFlags = true;
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
  const permissions = permissionsFor(config, env);
  if (printFlags) {
    console.log(permissions.flags.join(" "));
    return 0;
  }

  const command = ["deno", "run", ...options, ...permissions.flags, entry];
  announce(permissions, config.LOG_FORMAT, command);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("deno", { args: command.slice(1), stdin: "inherit" }).spawn();
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
