/**
 * Operator CLI for the dead-letter queue, through the service's HTTP API.
 *
 *   deno task dlq -- list [--limit N] [--json]
 *   deno task dlq -- replay (--all | --event-id ID... | --reason R) [--json]
 *
 * `MARKETPLACE_SYNC_URL` (default http://127.0.0.1:8080) and `ADMIN_TOKEN`.
 */
import {
  ArgReader,
  cliArgs,
  clientOptionsFromEnv,
  formatTable,
  OpsClient,
  runCli,
  truncate,
  UsageError,
} from "./ops_client.ts";

export const USAGE = `usage:
  deno task dlq -- list [--limit N] [--json]          peek at the head of the DLQ (default 50, at most 1000)
  deno task dlq -- replay --all [--json]              move every DLQ message back to the work queue
  deno task dlq -- replay --event-id ID... [--json]   only these events (the flag may repeat)
  deno task dlq -- replay --reason R [--json]         only messages dead-lettered for this reason
                                                      (--event-id and --reason together: both must match)
environment: MARKETPLACE_SYNC_URL (default http://127.0.0.1:8080), ADMIN_TOKEN`;

/** A parsed command line. */
export type DlqCommand =
  | { command: "help" }
  | { command: "list"; limit?: number; json: boolean }
  | { command: "replay"; body: { all?: true; event_ids?: string[]; reason?: string }; json: boolean };

/** Parses the arguments; throws {@link UsageError} naming the bad flag. */
export function parseDlqArgs(argv: string[]): DlqCommand {
  const args = cliArgs(argv);
  if (args.includes("--help") || args.includes("-h") || args[0] === "help") return { command: "help" };
  const [command, ...rest] = args;
  if (command === undefined) throw new UsageError("missing command: list or replay");
  if (command !== "list" && command !== "replay") {
    throw new UsageError(`unknown command "${command}": expected list or replay`);
  }
  const r = new ArgReader(rest);
  let json = false;
  if (command === "list") {
    let limit: number | undefined;
    for (let a = r.next(); a; a = r.next()) {
      if (a.arg === "--json") {
        r.noValue(a.arg, a.inline);
        json = true;
      } else if (a.arg === "--limit") {
        const v = r.value(a.arg, a.inline);
        if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 1000) {
          throw new UsageError(`--limit must be a whole number from 1 to 1000 (got "${v}")`);
        }
        limit = Number(v);
      } else {
        throw new UsageError(`unknown ${a.arg.startsWith("-") ? "flag" : "argument"} "${a.arg}" for list`);
      }
    }
    return { command, limit, json };
  }
  let all = false;
  const eventIds: string[] = [];
  let reason: string | undefined;
  for (let a = r.next(); a; a = r.next()) {
    if (a.arg === "--json") {
      r.noValue(a.arg, a.inline);
      json = true;
    } else if (a.arg === "--all") {
      r.noValue(a.arg, a.inline);
      all = true;
    } else if (a.arg === "--event-id") {
      eventIds.push(...r.values(a.arg, a.inline));
    } else if (a.arg === "--reason") {
      if (reason !== undefined) throw new UsageError("--reason may be given once");
      reason = r.value(a.arg, a.inline);
    } else {
      throw new UsageError(`unknown ${a.arg.startsWith("-") ? "flag" : "argument"} "${a.arg}" for replay`);
    }
  }
  if (all && (eventIds.length > 0 || reason !== undefined)) {
    throw new UsageError("--all cannot be combined with --event-id or --reason");
  }
  if (!all && eventIds.length === 0 && reason === undefined) {
    throw new UsageError(
      "replay needs --all, --event-id ID... or --reason R (replaying everything must be explicit)",
    );
  }
  const body: { all?: true; event_ids?: string[]; reason?: string } = {};
  if (all) body.all = true;
  if (eventIds.length > 0) body.event_ids = [...new Set(eventIds)];
  if (reason !== undefined) body.reason = reason;
  return { command, body, json };
}

/** One DLQ message as `GET /dlq` returns it (the fields the table shows). */
export interface DlqMessage {
  position: number;
  event_id: string | null;
  reason: string | null;
  channel: string | null;
  sku: string | null;
  attempts: number | null;
  last_failure: string | null;
  error: string | null;
  /** `sync-remedy`: what to fix before a replay can succeed (absent on messages dead-lettered before it existed). */
  remedy?: string | null;
}

/** The listing as a table, what to fix per reason shown, and a total line. */
export function formatDlqList(body: { total: number; messages: DlqMessage[] }): string {
  const rows = body.messages.map((m) => [
    m.position,
    m.event_id,
    m.reason,
    m.channel,
    m.sku,
    m.attempts,
    m.last_failure,
    m.error === null || m.error === undefined ? null : truncate(m.error, 60),
  ]);
  const table = formatTable(
    ["POSITION", "EVENT_ID", "REASON", "CHANNEL", "SKU", "ATTEMPTS", "LAST_FAILURE", "ERROR"],
    rows,
  );
  const total = body.total === 0
    ? "the DLQ is empty"
    : `${body.messages.length} of ${body.total} message(s) in the DLQ shown`;
  const remedies = new Map<string, string>();
  for (const m of body.messages) if (m.reason && m.remedy) remedies.set(m.reason, m.remedy);
  const fixes = [...remedies].map(([reason, remedy]) => `  ${reason}: ${remedy}`).join("\n");
  const before = fixes ? `\n\nbefore replaying:\n${fixes}` : "";
  return body.messages.length > 0 ? `${table}${before}\n\n${total}` : total;
}

/** What `POST /dlq/replay` returns. */
export interface ReplayResponse {
  moved: number;
  kept: number;
  scanned: number;
  moved_event_ids: string[];
}

/** One line (or two) saying what a replay did. */
export function formatReplay(body: ReplayResponse): string {
  const line =
    `moved ${body.moved} message(s) back to the work queue (scanned ${body.scanned}, kept ${body.kept})`;
  const ids = body.moved_event_ids ?? [];
  if (ids.length === 0) return line;
  const shown = ids.slice(0, 20).join(", ");
  return `${line}\nevents: ${shown}${ids.length > 20 ? `, … (${ids.length - 20} more)` : ""}`;
}

/** Runs the CLI with these arguments; returns the exit code. */
export async function main(argv: string[], client?: OpsClient): Promise<number> {
  const cmd = parseDlqArgs(argv);
  if (cmd.command === "help") {
    console.log(USAGE);
    return 0;
  }
  const ops = client ?? new OpsClient(clientOptionsFromEnv());
  if (cmd.command === "list") {
    const query = cmd.limit === undefined ? "" : `?limit=${cmd.limit}`;
    const { body } = await ops.request<{ total: number; messages: DlqMessage[] }>("GET", `/dlq${query}`);
    console.log(cmd.json ? JSON.stringify(body, null, 2) : formatDlqList(body));
    return 0;
  }
  // A replay of a long DLQ takes a while: every message waits for its publisher confirm.
  const { body } = await ops.request<ReplayResponse>("POST", "/dlq/replay", {
    body: cmd.body,
    timeoutMs: 30 * 60_000,
  });
  console.log(cmd.json ? JSON.stringify(body, null, 2) : formatReplay(body));
  return 0;
}

if (import.meta.main) await runCli(() => main(Deno.args), USAGE);
