/**
 * Chaos suite (issue #7): each scenario runs the service as real processes
 * against both marketplace sandboxes (configured as real APIs), publishes a
 * burst of POS sales with their stock reservations (plus a few intentionally
 * bad events), injects a fault, waits for convergence and checks the invariant
 * SKU by SKU — Shopify per store == initial − sold, MercadoLibre == max(0, POS
 * stock), every (event, channel, sku) exactly once in the ledger and applied
 * except the bad ones, no batch left sending, and the DLQ holding exactly the
 * bad events. See docs/RELIABILITY.md for what each scenario showed.
 *
 *   deno task chaos [--bounded [--parallel]] [--scenarios a,b] [--sales N] [--seed N] [--log-dir DIR]
 *
 * --bounded is the CI size: outages are simulated with loopback proxies (the
 * shared servers keep running). Without it, RabbitMQ, Postgres and Redis are
 * ALSO really restarted (rabbitmqctl, pg_ctlcluster, redis-cli shutdown): run
 * it alone, never next to other tests. --parallel (bounded only) runs the
 * scenarios at the same time, as tests/chaos_test.ts does in CI. Exit code 1
 * when any invariant fails.
 */
import { parseArgs } from "node:util";
import { ensureServicesUp } from "./infra.ts";
import { type RunOptions, type Scenario, SCENARIOS, type Variant } from "./scenarios.ts";
import { type InvariantReport, World } from "./world.ts";
import { describeHits, scanForSecrets, secretsFromEnv } from "../support/secrets.ts";

/** One scenario run's result. */
export interface ScenarioResult {
  scenario: string;
  variant: Variant;
  ok: boolean;
  durationMs: number;
  report?: InvariantReport;
  error?: string;
  secretHits: string[];
  secretScan: string;
  logDir: string;
  /** Milliseconds per phase: setup (sandboxes, topology), run (services up, burst, faults), settle, check. */
  phases: Record<string, number>;
  /** Teardown steps that did not finish in time (reported, not failed: the invariant was checked before). */
  teardown?: string[];
}

/** Runs one scenario variant end to end and checks the invariant. */
export async function runScenario(
  scenario: Scenario,
  variant: Variant,
  opts: RunOptions,
  logRoot: string,
): Promise<ScenarioResult> {
  const label = variant ? `${scenario.name}_${variant}` : scenario.name;
  const logDir = `${logRoot}/${label}`;
  await Deno.mkdir(logDir, { recursive: true });
  const started = performance.now();
  let world: World | undefined;
  const result: ScenarioResult = {
    scenario: scenario.name,
    variant,
    ok: false,
    durationMs: 0,
    secretHits: [],
    secretScan: "",
    logDir,
    phases: {},
  };
  try {
    let mark = performance.now();
    const phase = (name: string) => {
      result.phases[name] = performance.now() - mark;
      mark = performance.now();
    };
    world = await World.create({
      name: scenario.name,
      logDir,
      seed: opts.seed,
      ...scenario.world(variant, opts),
    });
    phase("setup");
    await scenario.run(world, variant, opts);
    phase("run");
    const settle = await world.converge(scenario.settleMs?.(opts) ?? (opts.bounded ? 30_000 : 120_000));
    phase("settle");
    result.report = await world.check(settle);
    phase("check");
    result.ok = result.report.ok;
  } catch (error) {
    result.error = (error as Error).stack ?? String(error);
  } finally {
    if (world) {
      await Promise.all(world.services.map((s) => s.stop("SIGTERM").catch(() => undefined)));
      // The configured secrets and the ones the sandboxes minted (the rotated MeLi refresh token).
      const { secrets, tooShort } = secretsFromEnv(world.env);
      secrets.push(...world.secrets().filter((s) => s.length >= 8));
      result.secretScan = `scripts/support/secrets.ts, ${new Set(secrets).size} secrets` +
        (tooShort.length ? `; too short to scan: ${tooShort.join(", ")}` : "");
      for (const s of world.services) {
        for (const file of s.logFiles) {
          const text = await Deno.readTextFile(file).catch(() => "");
          const hits = scanForSecrets(text, secrets);
          if (hits.length) result.secretHits.push(describeHits(file, text, hits, secrets));
        }
      }
      if (result.secretHits.length > 0) result.ok = false;
      const stuck = await world.close().catch((error) => [`teardown failed: ${(error as Error).message}`]);
      if (stuck.length > 0) result.teardown = stuck;
    }
    result.durationMs = performance.now() - started;
  }
  return result;
}

/** The one-line summary of a result. */
export function resultLine(r: ScenarioResult): string {
  const label = (r.variant ? `${r.scenario} (${r.variant})` : r.scenario).padEnd(28);
  const c = r.report?.counts;
  const counts = c
    ? `sales=${c.sales} events=${c.events} changes=${c.changes} applied=${c.applied} failed=${c.failed}` +
      `${c.tolerated ? ` tolerated=${c.tolerated}` : ""}${
        c.resync ? ` resync=${c.resync}` : ""
      } dlq=${c.dlq}` +
      ` crashes=${c.crashes}`
    : "no counts";
  return `${label} ${counts.padEnd(90)} ${(r.durationMs / 1000).toFixed(1).padStart(6)} s  ${
    r.ok ? "PASS" : "FAIL"
  }`;
}

/** Notes, problems, errors and the secret scan of a result, one per line. */
export function resultDetails(r: ScenarioResult): string[] {
  const out: string[] = [];
  for (const n of r.report?.notes ?? []) out.push(`    · ${n}`);
  for (const p of (r.report?.problems ?? []).slice(0, 25)) out.push(`    ✗ ${p}`);
  if ((r.report?.problems.length ?? 0) > 25) out.push(`    ✗ … ${r.report!.problems.length - 25} more`);
  if (r.error) out.push(`    ✗ ${r.error.split("\n").slice(0, 4).join("\n      ")}`);
  for (const t of r.teardown ?? []) out.push(`    · teardown: ${t} (left behind)`);
  out.push(`    · secret scan (${r.secretScan}): ${r.secretHits.length ? r.secretHits.join("; ") : "clean"}`);
  const phases = Object.entries(r.phases).map(([k, ms]) => `${k} ${(ms / 1000).toFixed(1)} s`).join(", ");
  out.push(`    · ${phases}; logs: ${r.logDir}`);
  return out;
}

/** Selects scenarios and variants for a run. */
export function plan(names: string[] | undefined, bounded: boolean): [Scenario, Variant][] {
  const unknown = (names ?? []).filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length) {
    throw new Error(
      `unknown scenario(s) ${unknown.join(", ")}; known: ${SCENARIOS.map((s) => s.name).join(", ")}`,
    );
  }
  const chosen = names?.length ? SCENARIOS.filter((s) => names.includes(s.name)) : SCENARIOS;
  return chosen.flatMap((s) => s.variants(bounded).map((v) => [s, v] as [Scenario, Variant]));
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scenarios: { type: "string" },
      bounded: { type: "boolean", default: false },
      parallel: { type: "boolean", default: false },
      sales: { type: "string" },
      seed: { type: "string", default: "7" },
      "log-dir": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task chaos [--bounded [--parallel]] [--scenarios a,b] [--sales N] [--seed N] [--log-dir DIR]",
    );
    console.log(`scenarios: ${SCENARIOS.map((s) => `\n  ${s.name.padEnd(20)} ${s.summary}`).join("")}`);
    return 0;
  }
  const bounded = values.bounded;
  if (values.parallel && !bounded) {
    console.error("--parallel needs --bounded: real restarts of shared servers cannot overlap");
    return 2;
  }
  const opts: RunOptions = {
    bounded,
    sales: Number(values.sales ?? (bounded ? 80 : 400)),
    seed: Number(values.seed),
  };
  if (!Number.isInteger(opts.sales) || opts.sales < 10) {
    console.error("--sales must be a whole number ≥ 10");
    return 2;
  }
  const runs = plan(values.scenarios?.split(",").map((s) => s.trim()).filter(Boolean), bounded);
  const logRoot = values["log-dir"] ?? await Deno.makeTempDir({ prefix: "marketplace-sync-chaos-" });
  console.log(
    `chaos: ${runs.length} scenario run(s), ${
      bounded ? "bounded (proxies only)" : "full (real restarts too)"
    }, ` +
      `${opts.sales} sales each, seed ${opts.seed}; logs in ${logRoot}`,
  );
  const results: ScenarioResult[] = [];
  const started = performance.now();
  const report = (r: ScenarioResult) => {
    results.push(r);
    console.log(resultLine(r));
    for (const line of resultDetails(r)) console.log(line);
  };
  if (values.parallel) {
    // Proxies only: each scenario's outage is its own, so they can overlap.
    await Promise.all(
      runs.map(([scenario, variant]) => runScenario(scenario, variant, opts, logRoot).then(report)),
    );
  } else {
    for (const [scenario, variant] of runs) {
      report(await runScenario(scenario, variant, opts, logRoot));
      if (!bounded) {
        const fixed = await ensureServicesUp();
        if (fixed.length) console.log(`    · ${fixed.join(", ")}`);
      }
    }
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`chaos: ${((performance.now() - started) / 1000).toFixed(1)} s in all`);
  console.log(`chaos: ${results.length - failed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
