/**
 * Benchmark section `idle`: the service process at rest, started exactly as the `sustained` section starts
 * it (scripts/bench/sustained.ts: its own process with the derived flags and SERVICE_ENV, both channels
 * dispatching to sandboxes in the bench process) and given no load. Reports what its resident memory is made
 * of, 3 s after it answers /readyz (the moment the `sustained` section reads "idle RSS") and after
 * `--idle-seconds` (`rest_*`; V8's memory reducer first runs ~30 s after start-up), anonymous vs file-backed and per
 * group of mappings (scripts/bench/harness.ts, memorySplit), with the RSS every 5 s in between and the CPU
 * the process used. It publishes nothing, so it can run beside CPU-sensitive work. docs/BENCHMARKS.md,
 * "Where the memory goes", says what the groups hold.
 *
 * Target: idle RSS ≤ 100 MiB (issue #15).
 */
import {
  type BenchContext,
  cpuSeconds,
  type MemorySplit,
  memorySplit,
  type Section,
  type SectionResult,
} from "./harness.ts";
import { startSandboxedService } from "./sustained.ts";

const log = (text: string) => console.error(`[bench] ${text}`);
const round = (n: number) => Number(n.toFixed(1));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A memory reading as flat result fields, `<prefix>_rss_mib`, `<prefix>_anon_mib`, … */
function fields(prefix: string, m: MemorySplit): SectionResult {
  return {
    [`${prefix}_rss_mib`]: round(m.rss),
    [`${prefix}_anon_mib`]: round(m.anon),
    [`${prefix}_file_mib`]: round(m.file),
    [`${prefix}_mappings_mib`]: Object.entries(m.mappings)
      .sort((a, b) => b[1] - a[1])
      .map(([group, mib]) => `${group}:${round(mib)}`)
      .join(" "),
  };
}

export const idleSection: Section = {
  id: "idle",
  title: "The service process at rest: what its resident memory (RSS) is made of",
  async run(ctx: BenchContext): Promise<SectionResult> {
    const seconds = ctx.options.idleSeconds;
    const { child, runtime } = await startSandboxedService(ctx, "idle");
    const binary = Deno.execPath();
    await sleep(3_000); // as the sustained section reads its idle RSS
    const first = (await memorySplit(child.pid, binary))!;
    const cpuFirst = await cpuSeconds(child.pid) ?? NaN;
    log(`idle: RSS ${round(first.rss)} MiB 3 s after ready; at rest for ${seconds} s`);
    const timeline = [`3s:${Math.round(first.rss)}`];
    for (let t = 3; t < seconds;) {
      const step = Math.min(5, seconds - t);
      await sleep(step * 1000);
      t += step;
      const m = await memorySplit(child.pid, binary);
      if (m) timeline.push(`${t}s:${Math.round(m.rss)}`);
    }
    const last = (await memorySplit(child.pid, binary))!;
    const cpuLast = await cpuSeconds(child.pid) ?? NaN;
    const result: SectionResult = {
      ...fields("after_3s", first),
      rest_seconds: seconds,
      ...fields("rest", last),
      rss_timeline_mib: timeline.join(" "),
      // CPU the process used by the first reading (start-up included), then per second at rest.
      service_cpu_s_startup: Number(cpuFirst.toFixed(2)),
      service_cpu_s_per_s_at_rest: Number(((cpuLast - cpuFirst) / Math.max(1, seconds - 3)).toFixed(3)),
      runtime,
      target_rss_idle_le_100_mib: first.rss <= 100,
    };
    log(`idle: RSS ${round(first.rss)} MiB after 3 s, ${round(last.rss)} MiB after ${seconds} s`);
    return result;
  },
};
