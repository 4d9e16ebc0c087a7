/**
 * Single-file artifacts of the service, with the least-privilege permissions of src/permissions.ts.
 *
 *   deno task bundle                      → dist/marketplace-sync.js: one ES module, npm packages inlined;
 *                                           run it with `deno run <flags> dist/marketplace-sync.js` (the flags
 *                                           are printed) or through scripts/launch.ts. Works offline.
 *   deno task compile                     → dist/marketplace-sync (linux x86_64) and dist/marketplace-sync-aarch64
 *   deno task compile -- --target x86_64  (or aarch64): one of them
 *   deno task compile -- --allow-net=h1:5672,h2:5432,…   replaces the derived net list
 *   either task: -- --out DIR             writes into DIR instead of dist/
 *
 * A compiled binary carries its permissions: they are derived from the configuration in the environment of
 * the build, so its net allowlist is fixed at build time. Build with the production RABBITMQ_URL,
 * DATABASE_URL, REDIS_URL, SHOPIFY_URL, … set (or pass --allow-net), and rebuild when a host changes.
 *
 * `deno compile` needs the `denort` runtime of this Deno version for each target: it downloads it from
 * dl.deno.land, or takes DENORT_BIN (used for the target whose architecture it is). Where neither is possible
 * the task says so in one line and exits 1; `deno task bundle` is the offline path.
 */
import { ConfigError, loadConfig } from "../src/config.ts";
import {
  describePermissions,
  envText,
  type Permissions,
  permissionsFor,
  SERVICE_ENV,
} from "../src/permissions.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const ENTRY = "src/main.ts";
/** Compile targets: name suffix of the output file and the ELF machine of a denort built for it. */
export const TARGETS = {
  x86_64: { triple: "x86_64-unknown-linux-gnu", suffix: "", elfMachine: 0x3e },
  aarch64: { triple: "aarch64-unknown-linux-gnu", suffix: "-aarch64", elfMachine: 0xb7 },
} as const;
export type Target = keyof typeof TARGETS;

/** Thrown for a failure the task reports in one line (no stack trace). */
export class BuildError extends Error {}

function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** The service's permissions for the configuration in this environment, with an optional net override. */
export function buildPermissions(env: Record<string, string>, allowNet?: string): Permissions {
  const p = permissionsFor(loadConfig(env), env);
  if (allowNet === undefined) return p;
  const net = allowNet.split(",").map((h) => h.trim()).filter(Boolean);
  if (net.length === 0) throw new BuildError("--allow-net needs a comma-separated list of host[:port]");
  const reasons = { ...p.reasons, ...Object.fromEntries(net.map((h) => [h, ["--allow-net override"]])) };
  return {
    ...p,
    net,
    reasons,
    flags: p.flags.map((f) => f.startsWith("--allow-net=") ? `--allow-net=${net.join(",")}` : f),
  };
}

/** Runs the deno CLI in the project root; `withoutDenort` hides DENORT_BIN from it (a denort of another arch). */
function deno(args: string[], withoutDenort = false): Promise<Deno.CommandOutput> {
  const env: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1" };
  if (withoutDenort) delete env.DENORT_BIN;
  return new Deno.Command("deno", { args, cwd: ROOT, stdout: "piped", stderr: "piped", clearEnv: true, env })
    .output();
}

/** Bundles the service into `<out>/marketplace-sync.js`. */
export async function bundle(out = "dist"): Promise<{ file: string; bytes: number; ms: number }> {
  const file = `${absolute(out)}/marketplace-sync.js`;
  const started = performance.now();
  const result = await deno(["bundle", "--platform", "deno", "--output", file, ENTRY]);
  if (!result.success) {
    throw new BuildError(`deno bundle failed:\n${new TextDecoder().decode(result.stderr).trim()}`);
  }
  return { file, bytes: (await Deno.stat(file)).size, ms: Math.round(performance.now() - started) };
}

/** The ELF machine of a file (0x3e x86_64, 0xb7 aarch64), or undefined if it is not an ELF file. */
async function elfMachine(path: string): Promise<number | undefined> {
  const file = await Deno.open(path);
  try {
    const header = new Uint8Array(20);
    if ((await file.read(header)) !== 20) return undefined;
    if (header[0] !== 0x7f || header[1] !== 0x45 || header[2] !== 0x4c || header[3] !== 0x46) {
      return undefined;
    }
    return header[18] | (header[19] << 8);
  } finally {
    file.close();
  }
}

/** Compiles the service for one target with the given permissions embedded. */
export async function compile(
  target: Target,
  permissions: Permissions,
  out = "dist",
): Promise<{ file: string; bytes: number; ms: number }> {
  const { triple, suffix, elfMachine: machine } = TARGETS[target];
  const file = `${absolute(out)}/marketplace-sync${suffix}`;
  const denort = Deno.env.get("DENORT_BIN");
  let useDenort = false;
  if (denort) {
    let found: number | undefined;
    try {
      found = await elfMachine(denort);
    } catch (error) {
      throw new BuildError(`DENORT_BIN=${denort} cannot be read (${(error as Error).message})`);
    }
    useDenort = found === machine;
  }
  const started = performance.now();
  // `deno compile` applies the embedded --v8-flags to itself too, and a type check of the
  // whole graph needs more than the service's 256 MiB old space: check first without
  // them, then compile unchecked.
  const checked = await deno(["check", ENTRY]);
  if (!checked.success) {
    throw new BuildError(
      `type check of ${ENTRY} failed:\n${new TextDecoder().decode(checked.stderr).trim()}`,
    );
  }
  const result = await deno(
    ["compile", "--no-check", ...permissions.flags, "--target", triple, "--output", file, ENTRY],
    Boolean(denort) && !useDenort,
  );
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr);
    if (/dl\.deno\.land|denort|Setting up base binary/i.test(stderr)) {
      // The innermost "N: cause" line of the error chain, before any backtrace.
      const chain = stderr.split(/\n\s*Stack backtrace:/)[0].split("\n").map((l) => l.trim());
      const cause = chain.filter((l) => /^\d+: /.test(l)).at(-1)?.replace(/^\d+: /, "") ??
        chain.filter(Boolean).at(-1) ?? "no detail";
      throw new BuildError(
        `cannot get the denort runtime for ${triple} (${
          useDenort ? `DENORT_BIN=${denort}` : "download from dl.deno.land"
        } failed: ${cause}); set DENORT_BIN=/path/to/denort (denort ${Deno.version.deno} for ${triple}) ` +
          "or build on a machine with internet access; `deno task bundle` is the offline path",
      );
    }
    throw new BuildError(`deno compile for ${triple} failed:\n${stderr.trim()}`);
  }
  return { file, bytes: (await Deno.stat(file)).size, ms: Math.round(performance.now() - started) };
}

function parseArgs(args: string[]) {
  const [command, ...rest] = args;
  let out = "dist";
  let targets: Target[] = ["x86_64", "aarch64"];
  let allowNet: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    const value = () => arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : rest[++i];
    if (arg === "--out" || arg.startsWith("--out=")) out = value();
    else if (arg === "--target" || arg.startsWith("--target=")) {
      const t = value();
      if (t === "all") targets = ["x86_64", "aarch64"];
      else if (t in TARGETS) targets = [t as Target];
      else throw new BuildError(`--target ${t}: one of x86_64, aarch64, all`);
    } else if (arg.startsWith("--allow-net=")) allowNet = value();
    else throw new BuildError(`unexpected argument ${arg}`);
  }
  if (command !== "bundle" && command !== "compile") {
    throw new BuildError(
      "usage: build.ts bundle|compile [--out DIR] [--target x86_64|aarch64|all] " +
        "[--allow-net=host:port,…]",
    );
  }
  return { command, out, targets, allowNet };
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
/** SERVICE_ENV as `NAME=value …` (what scripts/launch.ts sets for the service process). */
const serviceEnvText = envText(SERVICE_ENV);

async function main(args: string[]): Promise<number> {
  try {
    const { command, out, targets, allowNet } = parseArgs(args);
    const permissions = buildPermissions(Deno.env.toObject(), allowNet);
    if (command === "bundle") {
      const built = await bundle(out);
      console.log(`bundled ${ENTRY} → ${built.file} (${mb(built.bytes)}, ${built.ms} ms)`);
      console.log(describePermissions(permissions));
      console.log(
        `run it (flags derived from this environment's configuration):\n  ${serviceEnvText} deno run ${
          permissions.flags.join(" ")
        } ${built.file}\nor derive them where it runs:\n  deno run --allow-env --allow-run=deno scripts/launch.ts ${built.file}`,
      );
      return 0;
    }
    // Both targets first, then what they hold: a failure prints only its one line.
    const built = [];
    for (const target of targets) built.push({ target, ...await compile(target, permissions, out) });
    console.log(describePermissions(permissions));
    for (const b of built) {
      console.log(
        `compiled ${ENTRY} for ${TARGETS[b.target].triple} → ${b.file} (${mb(b.bytes)}, ${b.ms} ms)`,
      );
    }
    console.log(
      `embedded permissions and V8 heap settings (fixed at build time): ${permissions.flags.join(" ")}`,
    );
    console.log(`set in the binary's environment where it runs (the allocator settings): ${serviceEnvText}`);
    return 0;
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`marketplace-sync: ${error.message}`);
      return 2;
    }
    if (error instanceof BuildError) {
      console.error(`marketplace-sync ${args[0] ?? "build"}: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
