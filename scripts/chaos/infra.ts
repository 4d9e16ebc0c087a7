/**
 * Real restarts of the shared RabbitMQ, Postgres and Redis (the full, on-demand
 * chaos run only: they would break every other test running at the same time),
 * with the start commands of /work/.library/env's machine doc, and a final
 * health check that brings back any server left down.
 */
import { sleep, until } from "./world.ts";

async function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<{ ok: boolean; out: string }> {
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" }).spawn();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeoutMs));
  const result = await Promise.race([child.output(), timeout]);
  clearTimeout(timer);
  if (result === "timeout") {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    return { ok: false, out: `${cmd} ${args.join(" ")}: timed out after ${timeoutMs} ms` };
  }
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  return { ok: result.success, out: text.trim() };
}

async function must(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (!r.ok) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.out.slice(0, 500)}`);
  return r.out;
}

async function portOpen(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

const pgReady = async () => (await run("pg_isready", ["-q", "-h", "127.0.0.1", "-p", "5432"], 10_000)).ok;
const redisReady = async () => (await run("redis-cli", ["-h", "127.0.0.1", "ping"], 10_000)).out === "PONG";

async function pgVersion(): Promise<string> {
  const versions: string[] = [];
  for await (const e of Deno.readDir("/etc/postgresql")) versions.push(e.name);
  versions.sort();
  if (versions.length === 0) throw new Error("no cluster under /etc/postgresql");
  return versions[0];
}

/** `rabbitmqctl stop_app`, `downMs` with the broker's AMQP port closed, `start_app`. */
export async function restartRabbit(downMs: number): Promise<number> {
  const started = performance.now();
  await must("rabbitmqctl", ["stop_app"]);
  await sleep(downMs);
  await must("rabbitmqctl", ["start_app"]);
  await must("rabbitmqctl", ["await_startup"], 120_000);
  await until(() => portOpen(5672), "RabbitMQ port 5672", 60_000, 200);
  return performance.now() - started;
}

/** `pg_ctlcluster <v> main restart` (fast shutdown: every connection is dropped). */
export async function restartPostgres(): Promise<number> {
  const started = performance.now();
  await must("pg_ctlcluster", ["--skip-systemctl-redirect", await pgVersion(), "main", "restart"]);
  await until(pgReady, "pg_isready", 60_000, 200);
  return performance.now() - started;
}

const REDIS_DIR = "/var/lib/redis";

function redisStartArgs(): string[] {
  return [
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    REDIS_DIR,
    "--logfile",
    "/var/log/redis/ci.log",
  ];
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Stops Redis and starts it again after `downMs`. The POS's stock keys live
 * there, so it is shut down with SAVE (as a POS Redis that persists would be)
 * and reloads them; a dump file this made is removed once the server is back.
 */
export async function restartRedis(downMs: number): Promise<number> {
  const started = performance.now();
  const dump = `${REDIS_DIR}/dump.rdb`;
  const hadDump = await exists(dump);
  await run("redis-cli", ["-h", "127.0.0.1", "shutdown", "save"], 30_000);
  await until(async () => !(await portOpen(6379)), "Redis down", 30_000, 100);
  await sleep(downMs);
  await Deno.mkdir(REDIS_DIR, { recursive: true });
  await Deno.mkdir("/var/log/redis", { recursive: true });
  await must("redis-server", redisStartArgs());
  await until(redisReady, "redis-cli ping", 30_000, 100);
  if (!hadDump) await Deno.remove(dump).catch(() => {});
  return performance.now() - started;
}

/** Makes sure Postgres, Redis and RabbitMQ answer, starting any that does not. Returns what it did. */
export async function ensureServicesUp(): Promise<string[]> {
  const done: string[] = [];
  if (!(await pgReady())) {
    await run("pg_ctlcluster", ["--skip-systemctl-redirect", await pgVersion(), "main", "start"]);
    done.push("started PostgreSQL");
  }
  await until(pgReady, "pg_isready", 60_000, 500);
  if (!(await redisReady())) {
    await Deno.mkdir(REDIS_DIR, { recursive: true });
    await Deno.mkdir("/var/log/redis", { recursive: true });
    await run("redis-server", redisStartArgs());
    done.push("started Redis");
  }
  await until(redisReady, "redis-cli ping", 30_000, 200);
  if (!(await portOpen(5672))) {
    const app = await run("rabbitmqctl", ["start_app"], 60_000);
    if (!app.ok) await run("rabbitmq-server", ["-detached"], 30_000);
    done.push("started RabbitMQ");
  }
  await until(() => portOpen(5672), "RabbitMQ port 5672", 120_000, 500);
  await run("rabbitmqctl", ["await_startup"], 120_000);
  return done;
}

/**
 * An operator's policy (`rabbitmqctl set_policy`, applied to queues) on the queues `pattern` matches; the
 * pattern must name only the caller's own queues. Returns its clearing, or undefined when rabbitmqctl is
 * not available here (a broker in a container): the caller says so in its notes.
 */
export async function queuePolicy(
  name: string,
  pattern: string,
  definition: Record<string, unknown>,
): Promise<(() => Promise<void>) | undefined> {
  try {
    const set = await run("rabbitmqctl", [
      "-q",
      "set_policy",
      "--apply-to",
      "queues",
      name,
      pattern,
      JSON.stringify(definition),
    ]);
    if (!set.ok) return undefined;
  } catch {
    return undefined; // no rabbitmqctl
  }
  return async () => {
    await run("rabbitmqctl", ["-q", "clear_policy", name]).catch(() => {});
  };
}
