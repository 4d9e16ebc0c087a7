/**
 * How `deno task resync` shows a resync job to an operator: the progress line (done/total,
 * rate, ETA), the summary (lines by action and outcome, unresolved listings by reason, per
 * channel), the report's lines and the closing line. Pure functions over what
 * `GET /resync/{id}` answers (src/ops/resync_jobs.ts), so they are tested without a service.
 */
import { formatTable, truncate } from "./ops_client.ts";

/** One line of the drift report (src/ops/resync.ts `DriftLine`). */
export interface ReportLine {
  sku: string;
  tienda_id: string | null;
  channel: string;
  source_qty: number | null;
  /** Changes not applied yet the marketplace will still receive. */
  in_flight?: number | null;
  marketplace_qty: number | null;
  /** What the marketplace should show: the stock rule's value of the POS, else POS plus in flight, clamped at 0. */
  target?: number | null;
  difference: number | null;
  action: string;
  outcome?: string | null;
  error?: string | null;
  /** The stock rule the target comes from (STOCK_RULES), e.g. "buffer 2, max 40"; null or absent: none. */
  rule?: string | null;
}

/** A listing the resync could not compare. */
export interface UnresolvedLine {
  sku: string;
  tienda_id?: string | null;
  channel: string;
  reason: string;
  error?: string | null;
}

/** The job states `GET /resync/{id}` answers; every one but `running` is final. */
export const FINAL_STATES = ["done", "failed", "cancelled"] as const;

/** What `GET /resync/{id}` answers. */
export interface ResyncStatus {
  id: string;
  state: string;
  dry_run?: boolean;
  progress?: {
    done?: number;
    total?: number | null;
    /** Listings a second since the job started (or was resumed); null when not running. */
    per_second?: number | null;
    eta_seconds?: number | null;
  };
  done?: number;
  total?: number | null;
  drift_found?: number;
  written?: number;
  errors?: number;
  /** How many times another instance took the job over (its own stopped). */
  resumed?: number;
  /** The first 1 000 lines of each kind; `report_lines` / `unresolved_lines` count them all. */
  report?: ReportLine[];
  unresolved?: UnresolvedLine[];
  report_lines?: number;
  unresolved_lines?: number;
  error?: string | null;
  message?: string;
}

/** `1234567` → `1 234 567` (a space between thousands: reads the same in any locale). */
export function groupDigits(n: number): string {
  const [whole, fraction] = String(n).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, " ");
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

/** `574` → `9 min 34 s`: the largest unit and the next one (`2 h 5 min`, `3 d 4 h`, `45 s`). */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const units: [string, number][] = [["d", 86_400], ["h", 3_600], ["min", 60], ["s", 1]];
  const first = units.findIndex(([, size]) => s >= size);
  if (first === -1) return "0 s";
  const [name, size] = units[first];
  const parts = [`${Math.floor(s / size)} ${name}`];
  const next = units[first + 1];
  const rest = next ? Math.floor((s % size) / next[1]) : 0;
  if (rest > 0) parts.push(`${rest} ${next[0]}`);
  return parts.join(" ");
}

/** `85.3` → `85/s`; below 10 a decimal (`2.5/s`). */
export function formatRate(perSecond: number): string {
  return `${perSecond >= 10 ? groupDigits(Math.round(perSecond)) : Math.round(perSecond * 10) / 10}/s`;
}

const done = (s: ResyncStatus) => s.progress?.done ?? s.done ?? 0;
const total = (s: ResyncStatus) => s.progress?.total ?? s.total ?? undefined;

/** `resync ID: 1 234/50 000 checked · 85/s · ETA 9 min 34 s · 7 drift, 0 errors` */
export function progressLine(s: ResyncStatus): string {
  const t = total(s);
  // A job's total is known once it planned (read the catalogs): until then, no count to show.
  if (s.state === "running" && !t && !done(s)) return `resync ${s.id}: planning the listings to check`;
  const parts = [
    `resync ${s.id}: ${groupDigits(done(s))}/${t === undefined || t === null ? "?" : groupDigits(t)} checked`,
  ];
  const rate = s.progress?.per_second;
  if (s.state === "running" && typeof rate === "number") {
    parts.push(formatRate(rate));
    const eta = s.progress?.eta_seconds;
    if (typeof eta === "number") parts.push(`ETA ${formatDuration(eta)}`);
  }
  const sum = summaryOf(s);
  parts.push(`${groupDigits(sum.drift_found)} drift, ${groupDigits(sum.errors)} errors`);
  if (s.resumed) parts.push(`resumed ${s.resumed}× by another instance`);
  return parts.join(" · ");
}

/** The final counts: the job's, else counted from the lines shown. */
export function summaryOf(s: ResyncStatus): { drift_found: number; written: number; errors: number } {
  const report = s.report ?? [];
  return {
    drift_found: s.drift_found ?? report.filter((l) => l.difference !== null && l.difference !== 0).length,
    written: s.written ?? report.filter((l) => l.outcome === "written").length,
    errors: s.errors ?? report.filter((l) => l.outcome === "error").length,
  };
}

/** What became of a line, as the summary counts it: none, would_set, set: written, set: error, skip… */
export function actionOf(line: ReportLine): string {
  if (line.action === "set") return `set: ${line.outcome ?? "not written"}`;
  if (line.outcome === "error") return `${line.action}: error`;
  return line.action;
}

/** The summary's rows in the order an operator reads them; others follow, sorted. */
const ACTION_ORDER = ["none", "would_set", "set: written", "set: error", "skip"];

/** Report lines counted by action/outcome and unresolved ones by reason, per channel. */
export class ReportTally {
  readonly actions = new Map<string, Map<string, number>>();
  readonly reasons = new Map<string, Map<string, number>>();

  /** Counts one line of the report; `kind` as the report download names it. */
  add(kind: "drift" | "unresolved", line: ReportLine | UnresolvedLine): void {
    const [table, key] = kind === "drift"
      ? [this.actions, actionOf(line as ReportLine)]
      : [this.reasons, (line as UnresolvedLine).reason];
    const row = table.get(key) ?? new Map<string, number>();
    const channel = line.channel ?? "?";
    row.set(channel, (row.get(channel) ?? 0) + 1);
    table.set(key, row);
  }

  /** Counts the lines a status carries inline. */
  static of(s: ResyncStatus): ReportTally {
    const tally = new ReportTally();
    for (const line of s.report ?? []) tally.add("drift", line);
    for (const line of s.unresolved ?? []) tally.add("unresolved", line);
    return tally;
  }

  /** How many lines have `key` (an action or a reason), on every channel or one. */
  count(key: string, channel?: string): number {
    const row = this.actions.get(key) ?? this.reasons.get(key);
    if (!row) return 0;
    return channel ? row.get(channel) ?? 0 : [...row.values()].reduce((a, b) => a + b, 0);
  }
}

/** Whether the status carries every line inline (else the summary counts the downloaded report). */
export function wholeInline(s: ResyncStatus): boolean {
  return (s.report_lines ?? 0) <= (s.report ?? []).length &&
    (s.unresolved_lines ?? 0) <= (s.unresolved ?? []).length;
}

/** A count table: one row per key, a column per channel, a total column and row. */
function countTable(title: string, rows: Map<string, Map<string, number>>, order: string[]): string {
  const channels = [...new Set([...rows.values()].flatMap((r) => [...r.keys()]))].sort();
  const rank = (k: string) => order.includes(k) ? order.indexOf(k) : order.length;
  const keys = [...rows.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const sum = (row: Map<string, number>) => [...row.values()].reduce((a, b) => a + b, 0);
  const body = keys.map((k) => [k, ...channels.map((c) => rows.get(k)!.get(c) ?? 0), sum(rows.get(k)!)]);
  const totals = ["total", ...channels.map((c) => keys.reduce((n, k) => n + (rows.get(k)!.get(c) ?? 0), 0))];
  totals.push(keys.reduce((n, k) => n + sum(rows.get(k)!), 0));
  return formatTable([title, ...channels.map((c) => c.toUpperCase()), "TOTAL"], [...body, totals]);
}

/** The summary: lines by action/outcome, then unresolved listings by reason, each per channel. */
export function formatSummary(tally: ReportTally): string {
  const parts: string[] = [];
  if (tally.actions.size > 0) parts.push(countTable("ACTION", tally.actions, ACTION_ORDER));
  if (tally.reasons.size > 0) parts.push(countTable("UNRESOLVED", tally.reasons, []));
  return parts.join("\n\n");
}

/** Options of {@link formatResyncReport}. */
export interface ReportFormatOptions {
  /** The summary's counts; default: counted from the lines shown. */
  tally?: ReportTally;
  /** Files the whole report was written to (named when only part of it is shown). */
  files?: string[];
}

/** Where the rest of a partly shown report is. */
function moreLines(shown: number, all: number, files: string[]): string {
  const where = files.length > 0 ? `all of them are in ${files.join(" and ")}` : "--csv FILE writes them all";
  return `first ${groupDigits(shown)} of ${groupDigits(all)} lines shown; ${where}`;
}

/** The summary, the report's lines, the unresolved listings and the closing line, as plain text. */
export function formatResyncReport(s: ResyncStatus, options: ReportFormatOptions = {}): string {
  const files = options.files ?? [];
  const parts: string[] = [];
  const report = s.report ?? [];
  const unresolved = s.unresolved ?? [];
  const summary = formatSummary(options.tally ?? ReportTally.of(s));
  if (summary) parts.push(summary);
  if (report.length > 0) {
    // In flight only when some line has any: else the target is the POS value clamped at 0.
    const inFlight = report.some((l) => (l.in_flight ?? 0) !== 0);
    // The rule only when some line has one: it says why such a target is not the POS value.
    const ruled = report.some((l) => l.rule);
    const columns = [
      "SKU",
      "STORE",
      "CHANNEL",
      "POS",
      ...inFlight ? ["IN_FLIGHT"] : [],
      ...ruled ? ["RULE"] : [],
      "TARGET",
    ];
    parts.push(formatTable(
      [...columns, "MARKETPLACE", "DIFF", "ACTION", "OUTCOME"],
      report.map((l) => [
        l.sku,
        l.tienda_id ?? null,
        l.channel,
        l.source_qty ?? null,
        ...inFlight ? [l.in_flight ?? null] : [],
        ...ruled ? [l.rule || null] : [],
        l.target ?? null,
        l.marketplace_qty ?? null,
        l.difference ?? null,
        l.action,
        l.error ? `${l.outcome ?? "error"}: ${truncate(l.error, 60)}` : l.outcome ?? null,
      ]),
    ));
    if ((s.report_lines ?? 0) > report.length) parts.push(moreLines(report.length, s.report_lines!, files));
  } else {
    parts.push("no listings in the report");
  }
  if (unresolved.length > 0) {
    const all = Math.max(s.unresolved_lines ?? 0, unresolved.length);
    parts.push(
      `unresolved (${groupDigits(all)}):\n` + formatTable(
        ["SKU", "STORE", "CHANNEL", "REASON", "DETAIL"],
        unresolved.map((
          u,
        ) => [u.sku, u.tienda_id ?? null, u.channel, u.reason, u.error ? truncate(u.error, 80) : null]),
      ),
    );
    if (all > unresolved.length) parts.push(moreLines(unresolved.length, all, files));
  }
  parts.push(closingLine(s));
  return parts.join("\n\n");
}

/** `done (dry run: nothing written): drift_found 5, written 0, errors 0`, and why a job ended early. */
export function closingLine(s: ResyncStatus): string {
  const sum = summaryOf(s);
  const t = total(s);
  const at = `${groupDigits(done(s))}/${
    t === undefined || t === null ? "?" : groupDigits(t)
  } listings checked`;
  const ended = s.state === "failed"
    ? `; FAILED: ${s.error ?? s.message ?? "see the service log"}`
    : s.state === "cancelled"
    ? `; CANCELLED at ${at} (${s.error ?? "cancelled"}): what it wrote is kept, the rest was not checked`
    : "";
  const resumed = s.resumed ? `; resumed ${s.resumed}× by another instance` : "";
  return `${s.state}${
    s.dry_run ? " (dry run: nothing written)" : ""
  }: drift_found ${sum.drift_found}, written ${sum.written}, errors ${sum.errors}${resumed}${ended}`;
}

/** 0 when the resync is done without errors; 1 when it failed, was cancelled or wrote with errors. */
export function exitCodeFor(s: ResyncStatus): number {
  return s.state === "done" && summaryOf(s).errors === 0 ? 0 : 1;
}
