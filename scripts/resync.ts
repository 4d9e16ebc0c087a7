/**
 * Operator CLI for a resync (push the POS stock to the marketplaces), through
 * the service's HTTP API: starts `POST /resync` (or re-attaches to a job with
 * `--follow`), follows `GET /resync/{id}` (progress with rate and ETA on
 * stderr), prints the summary and the drift report, and streams the whole
 * report to a file on request; `--cancel` stops a running job.
 *
 *   deno task resync -- (--sku A [--sku B ...] | --store TIENDA_ID | --all)
 *                       [--channel shopify|mercadolibre ...] [--dry-run]
 *                       [--csv FILE] [--ndjson FILE] [--json]
 *   deno task resync -- --follow ID [--csv FILE] [--ndjson FILE] [--json]
 *   deno task resync -- --cancel ID [--json]
 *
 * Exit code: 0 done without errors (or cancelled by --cancel), 1 otherwise, 2 bad usage.
 * `MARKETPLACE_SYNC_URL` (default http://127.0.0.1:8080) and `ADMIN_TOKEN`.
 */
import {
  ArgReader,
  cliArgs,
  clientOptionsFromEnv,
  CliError,
  OpsClient,
  runCli,
  UsageError,
} from "./ops_client.ts";
import { downloadReport, type ReportFile, type ReportFormat } from "./resync_download.ts";
import {
  exitCodeFor,
  FINAL_STATES,
  formatResyncReport,
  groupDigits,
  progressLine,
  ReportTally,
  type ResyncStatus,
  wholeInline,
} from "./resync_format.ts";

export const CHANNELS = ["shopify", "mercadolibre"] as const;

export const USAGE = `usage:
  deno task resync -- --sku A [--sku B ...]   these SKUs (every store)
  deno task resync -- --store TIENDA_ID       every mapped listing of one store
  deno task resync -- --all                   the whole catalog
  deno task resync -- --follow ID             re-attach to a job (e.g. after a restart resumed it);
                                              on an ended job: print (and write) its report
  deno task resync -- --cancel ID             stop a running job after its current listing
options:
  --channel shopify|mercadolibre   only this channel (may repeat; default: every enabled channel)
  --dry-run                        report the drift without writing anything
  --csv FILE                       when the job ends, write its whole report to FILE as CSV
  --ndjson FILE                    ... or as NDJSON (one JSON object a line); both may be given
  --json                           print the final status as JSON instead of tables
Progress (done/total, rate, ETA) goes to stderr; the summary (lines by action and outcome,
unresolved listings by reason) and the report's first 1 000 lines of each kind to stdout.
Ctrl-C stops following, not the job: --follow ID re-attaches, --cancel ID stops it.
environment: MARKETPLACE_SYNC_URL (default http://127.0.0.1:8080), ADMIN_TOKEN
exit code: 0 done without errors (--cancel: the job was cancelled),
           1 failed, cancelled, with errors, or nothing to cancel, 2 bad usage`;

/** Body of `POST /resync`. */
export interface ResyncRequest {
  skus?: string[];
  tienda_id?: string;
  all?: true;
  channels?: string[];
  dry_run?: true;
}

/** A parsed command line. */
export type ResyncCommand =
  | { command: "help" }
  | { command: "run"; body: ResyncRequest; json: boolean; files: ReportFile[] }
  | { command: "follow"; id: string; json: boolean; files: ReportFile[] }
  | { command: "cancel"; id: string; json: boolean };

/** A job id as `POST /resync` hands it out (a UUID). */
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Parses the arguments; throws {@link UsageError} naming the bad flag. */
export function parseResyncArgs(argv: string[]): ResyncCommand {
  const args = cliArgs(argv);
  if (args.includes("--help") || args.includes("-h")) return { command: "help" };
  const r = new ArgReader(args);
  const skus: string[] = [];
  const channels: string[] = [];
  const files: ReportFile[] = [];
  let store: string | undefined;
  let follow: string | undefined;
  let cancel: string | undefined;
  let all = false;
  let dryRun = false;
  let json = false;
  const jobId = (flag: string, inline?: string): string => {
    const id = r.value(flag, inline);
    if (!JOB_ID.test(id)) {
      throw new UsageError(`${flag} wants a resync id (the UUID POST /resync answered), not "${id}"`);
    }
    return id;
  };
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
      case "--follow":
        if (follow !== undefined) throw new UsageError("--follow may be given once");
        follow = jobId(a.arg, a.inline);
        break;
      case "--cancel":
        if (cancel !== undefined) throw new UsageError("--cancel may be given once");
        cancel = jobId(a.arg, a.inline);
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
      case "--csv":
      case "--ndjson": {
        const format = a.arg.slice(2) as ReportFormat;
        if (files.some((f) => f.format === format)) throw new UsageError(`${a.arg} may be given once`);
        const path = r.value(a.arg, a.inline);
        if (files.some((f) => f.path === path)) {
          throw new UsageError(`${a.arg} ${path}: --csv and --ndjson need different files`);
        }
        files.push({ format, path });
        break;
      }
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
  const job = [follow !== undefined && "--follow", cancel !== undefined && "--cancel"].filter(Boolean);
  if (job.length > 1) throw new UsageError("--follow and --cancel cannot be combined: pick one");
  if (job.length === 1) {
    // These describe a job to start; --follow and --cancel name one that exists.
    const starting = [...scopes, channels.length > 0 && "--channel", dryRun && "--dry-run"].filter(Boolean);
    if (starting.length > 0) {
      throw new UsageError(
        `${job[0]} and ${starting[0]} cannot be combined: ${job[0]} names a job already started`,
      );
    }
    if (cancel !== undefined) {
      if (files.length > 0) {
        throw new UsageError(
          `--cancel and --${files[0].format} cannot be combined: --follow ID --${
            files[0].format
          } FILE writes the report of an ended job`,
        );
      }
      return { command: "cancel", id: cancel, json };
    }
    return { command: "follow", id: follow!, json, files };
  }
  if (scopes.length === 0) {
    throw new UsageError(
      "say what to resync: --sku SKU, --store TIENDA_ID or --all (or --follow ID, --cancel ID)",
    );
  }
  if (scopes.length > 1) throw new UsageError(`${scopes.join(" and ")} cannot be combined: pick one scope`);
  const body: ResyncRequest = skus.length > 0
    ? { skus: [...new Set(skus)] }
    : store !== undefined
    ? { tienda_id: store }
    : { all: true };
  if (channels.length > 0) body.channels = channels;
  if (dryRun) body.dry_run = true;
  return { command: "run", body, json, files };
}

/** How the CLI talks to the operator and waits between polls (replaceable in tests). */
export interface ResyncIo {
  sleep(ms: number): Promise<void>;
  out(text: string): void;
  err(text: string): void;
  /**
   * A followed job's progress; `last` once it ended. On a terminal the line is rewritten in
   * place; elsewhere (a log) printed now and then. Default: {@link err}, when the line changed.
   */
  progress?(text: string, last: boolean): void;
}

/** Writes all of `text` to stderr (writeSync may write part of it). */
function writeStderr(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
}

/** The terminal: progress rewritten in place on a TTY, else a line every 10 s (and the last one). */
export function consoleIo(): ResyncIo {
  const tty = Deno.stderr.isTerminal();
  let open = false;
  let printedAt = 0;
  const endLine = () => {
    if (open) writeStderr("\n");
    open = false;
  };
  return {
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    out: (text) => (endLine(), console.log(text)),
    err: (text) => (endLine(), console.error(text)),
    progress(text, last) {
      if (tty) {
        writeStderr(`\r\x1b[2K${text}`);
        open = true;
        if (last) endLine();
        return;
      }
      if (!last && Date.now() - printedAt < 10_000) return;
      printedAt = Date.now();
      console.error(text);
    },
  };
}

/** How long to wait between polls: every 500 ms, then (a long job) every 2 s. */
export function pollDelay(polls: number): number {
  return polls < 20 ? 500 : 2_000;
}

/** How long the service may stay unreachable (a restart) before following gives up. */
const UNREACHABLE_MS = 60_000;

/** Polls `GET /resync/{id}` until the job ends, showing its progress; the final status. */
async function follow(ops: OpsClient, statusPath: string, io: ResyncIo): Promise<ResyncStatus> {
  let shown = "";
  const progress = (text: string, last: boolean) => {
    if (io.progress) io.progress(text, last);
    else if (text !== shown) io.err(text);
    shown = text;
  };
  let polls = 0;
  let unreachableMs = 0;
  for (;;) {
    let status: ResyncStatus;
    try {
      status = (await ops.request<ResyncStatus>("GET", statusPath)).body;
      if (unreachableMs > 0) io.err("the service answers again");
      unreachableMs = 0;
    } catch (error) {
      // A restart (the job is resumed) or a proxy blip should not abandon a long run; an outage does.
      if (!(error instanceof CliError && error.transient) || unreachableMs >= UNREACHABLE_MS) throw error;
      if (unreachableMs === 0) {
        io.err(`${error.message}; asking again for up to ${UNREACHABLE_MS / 1000} s (the job goes on)`);
      }
      unreachableMs += pollDelay(polls);
      await io.sleep(pollDelay(polls++));
      continue;
    }
    const ended = (FINAL_STATES as readonly string[]).includes(status.state);
    const line = progressLine(status);
    if (ended || line !== shown) progress(line, ended);
    if (ended) return status;
    await io.sleep(pollDelay(polls++));
  }
}

/** `DELETE /resync/{id}`: 0 when it was cancelled, 1 when it had already ended. */
async function cancelJob(ops: OpsClient, id: string, json: boolean, io: ResyncIo): Promise<number> {
  const answer = await ops.request<{ error?: string; message?: string }>(
    "DELETE",
    `/resync/${encodeURIComponent(id)}`,
    { accept: [409] },
  );
  if (json) io.out(JSON.stringify(answer.body, null, 2));
  if (answer.status === 409) {
    io.err(`error: ${answer.body?.message ?? `resync ${id} has already ended: nothing to cancel`}`);
    return 1;
  }
  io.err(
    `resync ${id} cancelled: it stops after the listing it is checking; what it wrote and reported is kept ` +
      `(--follow ${id} prints its report)`,
  );
  return 0;
}

/** Writes the whole report to each file; says where on stderr. */
async function writeFiles(
  ops: OpsClient,
  status: ResyncStatus,
  files: ReportFile[],
  tally: ReportTally | undefined,
  io: ResyncIo,
): Promise<void> {
  for (const file of files) {
    const lines = await downloadReport(ops, status.id, file.format, {
      path: file.path,
      tally: file.format === "ndjson" ? tally : undefined,
    });
    io.err(
      `report: ${groupDigits(lines)} line${lines === 1 ? "" : "s"} written to ${file.path} (${file.format})`,
    );
  }
}

/** Runs the CLI with these arguments; returns the exit code. */
export async function main(argv: string[], client?: OpsClient, io: ResyncIo = consoleIo()): Promise<number> {
  const cmd = parseResyncArgs(argv);
  if (cmd.command === "help") {
    io.out(USAGE);
    return 0;
  }
  const ops = client ?? new OpsClient(clientOptionsFromEnv());
  if (cmd.command === "cancel") return await cancelJob(ops, cmd.id, cmd.json, io);
  let id: string;
  let statusPath: string;
  if (cmd.command === "follow") {
    id = cmd.id;
    statusPath = `/resync/${encodeURIComponent(id)}`;
  } else {
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
          (b.id ? ` (running resync: ${b.id}; deno task resync -- --follow ${b.id})` : ""),
      );
      return 1;
    }
    if (!started.body?.id) throw new CliError(`POST ${ops.url("/resync")} answered without a resync id`);
    id = started.body.id;
    statusPath = started.body.status_url ?? `/resync/${encodeURIComponent(id)}`;
  }
  io.err(
    `${cmd.command === "follow" ? `following resync ${id}` : `resync ${id} started`}: ` +
      `Ctrl-C stops following, not the job (--follow ${id} re-attaches, --cancel ${id} stops it)`,
  );
  const status = await follow(ops, statusPath, io);

  // The summary counts every line: those shown when they are all there, else the whole report.
  const whole = wholeInline(status);
  const tally = cmd.json ? undefined : whole ? ReportTally.of(status) : new ReportTally();
  const counted = !whole && cmd.files.some((f) => f.format === "ndjson");
  await writeFiles(ops, status, cmd.files, counted ? tally : undefined, io);
  if (tally && !whole && !counted) await downloadReport(ops, status.id, "ndjson", { tally });

  io.out(
    cmd.json
      ? JSON.stringify(status, null, 2)
      : formatResyncReport(status, { tally, files: cmd.files.map((f) => f.path) }),
  );
  if (status.state === "cancelled") {
    io.err(`error: resync ${id} was cancelled (${status.error ?? "by an operator"}): it did not finish`);
  } else if (status.state === "failed") {
    io.err(`error: resync ${id} failed: ${status.error ?? status.message ?? "see the service log"}`);
  }
  return exitCodeFor(status);
}

if (import.meta.main) await runCli(() => main(Deno.args), USAGE);
