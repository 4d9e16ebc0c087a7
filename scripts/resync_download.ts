/**
 * A resync job's whole report, streamed from `GET /resync/{id}/report` as it arrives and never
 * held in memory: into a file (CSV or NDJSON), or only counted for the summary. A file is
 * written as FILE.partial and renamed once complete, so a broken download never passes for a
 * whole report.
 */
import { CliError, describe, type OpsClient } from "./ops_client.ts";
import type { ReportLine, ReportTally, UnresolvedLine } from "./resync_format.ts";

/** The formats `GET /resync/{id}/report?format=` serves. */
export type ReportFormat = "csv" | "ndjson";

/** Where to write the report, in which format. */
export interface ReportFile {
  format: ReportFormat;
  path: string;
}

/** Counts a report's lines as its text streams by. */
interface LineCounter {
  lines: number;
  feed(text: string): void;
  /** @throws when the text stopped in the middle of a line: the report is not whole. */
  end(): void;
}

/** CSV rows (the header not counted): a line break inside a quoted field does not end a row. */
class CsvRows implements LineCounter {
  #rows = 0;
  #quoted = false;
  /** Inside a row: the text so far does not end with a row's line break. */
  #open = false;
  get lines(): number {
    return Math.max(0, this.#rows - 1);
  }
  feed(text: string): void {
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      // `""` inside a quoted field flips twice: still quoted.
      if (c === 34) this.#quoted = !this.#quoted;
      else if (c === 10 && !this.#quoted) this.#rows++;
      this.#open = c !== 10 || this.#quoted;
    }
  }
  end(): void {
    if (this.#open) throw new Error("the CSV stopped in the middle of a row");
  }
}

/** NDJSON lines, each handed to `tally` when there is one (JSON escapes a line break in a value). */
class NdjsonLines implements LineCounter {
  lines = 0;
  #pending = "";
  constructor(private readonly tally?: ReportTally) {}
  feed(text: string): void {
    const parts = (this.#pending + text).split("\n");
    this.#pending = parts.pop()!;
    for (const part of parts) {
      if (part.trim() === "") continue;
      this.lines++;
      if (this.tally) {
        const { kind, ...line } = JSON.parse(part) as
          & { kind: "drift" | "unresolved" }
          & Record<string, unknown>;
        this.tally.add(kind, line as unknown as ReportLine | UnresolvedLine);
      }
    }
  }
  end(): void {
    if (this.#pending.trim() !== "") throw new Error("the NDJSON stopped in the middle of a line");
  }
}

/** What to do with the streamed report: write it to `path`, count it into `tally` (NDJSON only). */
export interface DownloadOptions {
  path?: string;
  tally?: ReportTally;
}

/** Streams job `id`'s whole report; returns how many lines (drift and unresolved) it held. */
export async function downloadReport(
  ops: OpsClient,
  id: string,
  format: ReportFormat,
  options: DownloadOptions = {},
): Promise<number> {
  if (options.tally && format !== "ndjson") throw new Error("the summary counts the NDJSON report only");
  const body = await ops.stream(`/resync/${encodeURIComponent(id)}/report?format=${format}`);
  const partial = options.path === undefined ? undefined : `${options.path}.partial`;
  let file: Deno.FsFile | undefined;
  try {
    if (partial) file = await Deno.open(partial, { write: true, create: true, truncate: true });
  } catch (error) {
    await body.cancel().catch(() => {});
    throw new CliError(`cannot write the report to ${partial}: ${describe(error)}`);
  }
  const writer = file?.writable.getWriter();
  const counter: LineCounter = format === "csv" ? new CsvRows() : new NdjsonLines(options.tally);
  const decoder = new TextDecoder();
  try {
    for await (const chunk of body) {
      // Awaiting the write holds the download back to the disk's pace: nothing piles up in memory.
      await writer?.write(chunk);
      counter.feed(decoder.decode(chunk, { stream: true }));
    }
    counter.feed(decoder.decode());
    counter.end();
    await writer?.close();
  } catch (error) {
    await writer?.abort().catch(() => {});
    if (partial) await Deno.remove(partial).catch(() => {});
    const where = options.path ? ` to ${options.path}` : "";
    throw new CliError(
      `the report of resync ${id}${where} broke off after ${counter.lines} lines: ${describe(error)}`,
    );
  }
  if (partial) await Deno.rename(partial, options.path!);
  return counter.lines;
}
