/**
 * Benchmark section `machine` (run by `deno task bench`): CPUs, Postgres
 * version, and how busy the machine already is before the benchmark starts —
 * other work on the same cores lowers every rate, so a warning is printed.
 */
import postgres from "postgres";
import { cpuMeter, DATABASE_URL, progress, type Section } from "./harness.ts";

/** Busy share of the machine over `ms` while the benchmark does nothing. */
async function backgroundBusyPct(ms: number): Promise<number> {
  const meter = cpuMeter();
  await new Promise((r) => setTimeout(r, ms));
  return meter.stop().machineBusyPct;
}

/**
 * What the figures were measured on, including how busy the machine already
 * was: other work on the same cores lowers every rate below.
 */
export const machineSection: Section = {
  id: "machine",
  title: "Machine",
  async run() {
    const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    let postgresVersion = "unknown";
    try {
      [{ server_version: postgresVersion }] = await sql<{ server_version: string }[]>`show server_version`;
    } finally {
      await sql.end({ timeout: 5 });
    }
    const busy = await backgroundBusyPct(1000);
    if (busy > 10) {
      progress(
        `WARNING: the machine is already ${busy}% busy before the benchmark; rates will be low and noisy`,
      );
    }
    return {
      cpus: navigator.hardwareConcurrency,
      load_avg_1m: Number(Deno.loadavg()[0].toFixed(2)),
      background_busy_pct: busy,
      deno: Deno.version.deno,
      postgres: postgresVersion,
    };
  },
};
