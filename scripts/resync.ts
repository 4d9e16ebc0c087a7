/**
 * Operator CLI for a resync (push the POS stock to the marketplaces), through
 * the service's HTTP API: starts `POST /resync`, follows `GET /resync/{id}`
 * every 500 ms (progress on stderr) and prints the drift report.
 *
 *   deno task resync -- (--sku A [--sku B ...] | --store TIENDA_ID | --all)
 *                       [--channel shopify|mercadolibre ...] [--dry-run] [--json]
 *
 * Exit code: 0 done without errors, 1 otherwise, 2 bad usage.
 * `MARKETPLACE_SYNC_URL` (default http://127.0.0.1:8080) and `ADMIN_TOKEN`.
 */
import {
  ArgReader,
  cliArgs,
  clientOptionsFromEnv,
  CliError,
  formatTable,
  OpsClient,
  runCli,
  truncate,
  UsageError,
} from "./ops_client.ts";

export const CHANNELS = ["shopify", "mercadolibre"] as const;

export const USAGE = `usage:
  deno task resync -- --sku A [--sku B ...]   these SKUs (every store)
  deno task resync -- --store TIENDA_ID       every mapped listing of one store
  deno task resync -- --all                   every mapped listing
options:
  --channel shopify|mercadolibre   only this channel (may repeat; default: every enabled channel)
  --dry-run                        report the drift without writing anything
  --json                           print the final status as JSON instead of tables
environment: MARKETPLACE_SYNC_URL (default http://127.0.0.1:8080), ADMIN_TOKEN
exit code: 0 done without errors, 1 failed or with errors, 2 bad usage`;

/** Body of `POST /resync`. */
export interface ResyncRequest {
  skus?: string[];
  tienda_id?: string;
  all?: true;
  channels?: string[];
  dry_run?: true;
}

/** A parsed command line. */
export type ResyncCommand = { command: "help" } | { command: "run"; body: ResyncRequest; json: boolean };

/** Parses the arguments; throws {@link UsageError} naming the bad flag. */
export function parseResyncArgs(argv: string[]): ResyncCommand {
  const args = cliArgs(argv);
  if (args.includes("--help") || args.includes("-h")) return { command: "help" };
  const r = new ArgReader(args);
  const skus: string[] = [];
  const channels: string[] = [];
  let store: string | undefined;
  let all = false;
  let dryRun = false;
  let json = false;
  for (let a = r.next(); a; a = r.next()) {
    switch (a.arg) {
      case "--sku":
        skus.push(r.value(a.arg, a.inline));
        break;
      case "--store": {
        if (store !== undefined) throw new UsageError("--store may be given once");
        store = r.value(a.arg, a.inline);
        break;
      }
      case "--all":
        r.noValue(a.arg, a.inline);
        all = true;
        break;
      case "--channel": {
        const channel = r.value(a.arg, a.inline);
        if (!(CHANNELS as readonly string[]).includes(channel)) {
          throw new UsageError(`--channel must be one of ${CHANNELS.join(", ")} (got "${channel}")`);
        }
        if (!channels.includes(channel)) channels.push(channel);
        break;
      }
      case "--dry-run":
        r.noValue(a.arg, a.inline);
        dryRun = true;
        break;
      case "--json":
        r.noValue(a.arg, a.inline);
        json = true;
        break;
      default:
        throw new UsageError(`unknown ${a.arg.startsWith("-") ? "flag" : "argument"} "${a.arg}"`);
    }
  }
  const scopes = [skus.length > 0 && "--sku", store !== undefined && "--store", all && "--all"].filter(
    Boolean,
  );
  if (scopes.length === 0) throw new UsageError("say what to resync: --sku SKU, --store TIENDA_ID or --all");
  if (scopes.length > 1) throw new UsageError(`${scopes.join(" and ")} cannot be combined: pick one scope`);
  const body: ResyncRequest = skus.length > 0
    ? { skus: [...new Set(skus)] }
    : store !== undefined
    ? { tienda_id: store }
    : { all: true };
  if (channels.length > 0) body.channels = channels;
  if (dryRun) body.dry_run = true;
  return { command: "run", body, json };
}

/** One line of the drift report. */
export interface ReportLine {
  sku: string;
  tienda_id: string | null;
  channel: string;
  source_qty: number | null;
  marketplace_qty: number | null;
  difference: number | null;
  action: string;
  outcome?: string | null;
  error?: string | null;
}

/** A listing the resync could not check. */
export interface UnresolvedLine {
  sku: string;
  tienda_id?: string | null;
  channel: string;
  reason: string;
  error?: string | null;
}

/** What `GET /resync/{id}` answers (fields read tolerantly: progress may be nested or flat). */
export interface ResyncStatus {
  id: string;
  state: string;
  dry_run?: boolean;
  progress?: {
    checked?: number;
    /** Listings checked so far (the service's name for it). */
    done?: number;
    total?: number | null;
    drift?: number;
    drift_found?: number;
    errors?: number;
  };
  checked?: number;
  done?: number;
  total?: number | null;
  report?: ReportLine[];
  unresolved?: UnresolvedLine[];
  summary?: { drift_found?: number; written?: number; errors?: number };
  drift_found?: number;
  written?: number;
  errors?: number | unknown[];
  error?: string;
  message?: string;
}

const count = (value: unknown): number | undefined =>
  typeof value === "number" ? value : Array.isArray(value) ? value.length : undefined;

/** The final counts: the service's summary, else counted from the report. */
export function summaryOf(s: ResyncStatus): { drift_found: number; written: number; errors: number } {
  const report = s.report ?? [];
  return {
    drift_found: count(s.summary?.drift_found) ?? count(s.drift_found) ??
      report.filter((l) => l.difference !== null && l.difference !== 0).length,
    written: count(s.summary?.written) ?? count(s.written) ??
      report.filter((l) => l.outcome === "applied" || l.outcome === "written").length,
    errors: count(s.summary?.errors) ?? count(s.errors) ??
      report.filter((l) => l.error || l.outcome === "error" || l.outcome === "failed").length,
  };
}

/** `resync <id>: 120/500 checked, 7 drift, 0 errors` */
export function progressLine(s: ResyncStatus): string {
  const p = s.progress ?? {};
  const checked = count(p.checked) ?? count(p.done) ?? count(s.checked) ?? count(s.done) ?? 0;
  const total = count(p.total) ?? count(s.total);
  const drift = count(p.drift) ?? count(p.drift_found) ?? count(s.summary?.drift_found) ??
    count(s.drift_found) ?? 0;
  const errors = count(p.errors) ?? count(s.summary?.errors) ?? count(s.errors) ?? 0;
  return `resync ${s.id}: ${checked}/${total ?? "?"} checked, ${drift} drift, ${errors} errors`;
}

/** The report, the unresolved listings and a summary line, as plain text. */
export function formatResyncReport(s: ResyncStatus): string {
  const parts: string[] = [];
  const report = s.report ?? [];
  if (report.length > 0) {
    parts.push(formatTable(
      ["SKU", "STORE", "CHANNEL", "SOURCE", "MARKETPLACE", "DIFF", "ACTION", "OUTCOME"],
      report.map((l) => [
        l.sku,
        l.tienda_id ?? null,
        l.channel,
        l.source_qty ?? null,
        l.marketplace_qty ?? null,
        l.difference ?? null,
        l.action,
        l.error ? `${l.outcome ?? "error"}: ${truncate(l.error, 60)}` : l.outcome ?? null,
      ]),
    ));
  } else {
    parts.push("no listings in the report");
  }
  const unresolved = s.unresolved ?? [];
  if (unresolved.length > 0) {
    parts.push(
      `unresolved (${unresolved.length}):\n` + formatTable(
        ["SKU", "STORE", "CHANNEL", "REASON", "DETAIL"],
        unresolved.map((
          u,
        ) => [u.sku, u.tienda_id ?? null, u.channel, u.reason, u.error ? truncate(u.error, 80) : null]),
      ),
    );
  }
  const sum = summaryOf(s);
  const failed = s.state === "failed" ? `; FAILED: ${s.error ?? s.message ?? "see the service log"}` : "";
  parts.push(
    `${s.state}${
      s.dry_run ? " (dry run: nothing written)" : ""
    }: drift_found ${sum.drift_found}, written ${sum.written}, errors ${sum.errors}${failed}`,
  );
  return parts.join("\n\n");
}

/** 0 when the resync is done without errors, else 1. */
export function exitCodeFor(s: ResyncStatus): number {
  return s.state === "done" && summaryOf(s).errors === 0 ? 0 : 1;
}

/** How the CLI waits between polls (replaceable in tests). */
export interface ResyncIo {
  sleep(ms: number): Promise<void>;
  out(text: string): void;
  err(text: string): void;
}

const defaultIo: ResyncIo = {
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  out: (text) => console.log(text),
  err: (text) => console.error(text),
};

/** Runs the CLI with these arguments; returns the exit code. */
export async function main(argv: string[], client?: OpsClient, io: ResyncIo = defaultIo): Promise<number> {
  const cmd = parseResyncArgs(argv);
  if (cmd.command === "help") {
    io.out(USAGE);
    return 0;
  }
  const ops = client ?? new OpsClient(clientOptionsFromEnv());
  const started = await ops.request<{ id?: string; status_url?: string; error?: string; message?: string }>(
    "POST",
    "/resync",
    { body: cmd.body, accept: [409] },
  );
  if (started.status === 409) {
    const b = started.body ?? {};
    if (cmd.json) io.out(JSON.stringify(b, null, 2));
    io.err(
      `error: ${b.error ?? "conflict"}: ${b.message ?? "a resync of this scope is already running"}` +
        (b.id ? ` (running resync: ${b.id})` : ""),
    );
    return 1;
  }
  const id = started.body?.id;
  if (!id) throw new CliError(`POST ${ops.url("/resync")} answered without a resync id`);
  const statusPath = started.body.status_url ?? `/resync/${encodeURIComponent(id)}`;
  let last = "";
  let unreachable = 0;
  for (;;) {
    let status: ResyncStatus;
    try {
      status = (await ops.request<ResyncStatus>("GET", statusPath)).body;
      unreachable = 0;
    } catch (error) {
      // A blip (e.g. a proxy restart) should not abandon a long run; a real outage does.
      if (error instanceof CliError && error.message.startsWith("cannot reach") && ++unreachable < 10) {
        await io.sleep(500);
        continue;
      }
      throw error;
    }
    const line = progressLine(status);
    if (line !== last) io.err(line);
    last = line;
    if (status.state === "done" || status.state === "failed") {
      io.out(cmd.json ? JSON.stringify(status, null, 2) : formatResyncReport(status));
      return exitCodeFor(status);
    }
    await io.sleep(500);
  }
}

if (import.meta.main) await runCli(() => main(Deno.args), USAGE);
