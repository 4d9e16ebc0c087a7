/**
 * A resync report as a file: CSV (for a spreadsheet) or NDJSON (one line per listing), the
 * drift lines then the listings that could not be compared, streamed page by page from the
 * ledger so a catalog of any size is never held in memory.
 */

/** The columns of a report line, drift and unresolved lines alike (empty where a kind has none). */
export const REPORT_COLUMNS = [
  "kind",
  "channel",
  "tienda_id",
  "sku",
  "source_qty",
  "in_flight",
  "marketplace_qty",
  "target",
  "difference",
  "action",
  "outcome",
  "reason",
  "error",
  // Last, so a spreadsheet or script reading the columns by position before stock rules still works.
  "rule",
] as const;

/** A CSV field: quoted when it holds a comma, a quote or a line break; a leading = + - @ is defused. */
export function csvField(value: unknown): string {
  if (value === undefined || value === null) return "";
  let text = String(value);
  // A spreadsheet would run a cell starting with these as a formula (CSV injection).
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Streams `pages` of each kind as CSV (with a header) or NDJSON. */
export function reportStream(
  format: "csv" | "ndjson",
  pages: (kind: "drift" | "unresolved") => AsyncIterable<unknown[]>,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  async function* text(): AsyncIterable<string> {
    if (format === "csv") yield REPORT_COLUMNS.join(",") + "\r\n";
    for (const kind of ["drift", "unresolved"] as const) {
      for await (const page of pages(kind)) {
        let chunk = "";
        for (const line of page as Record<string, unknown>[]) {
          const row = { kind, ...line };
          chunk += format === "csv"
            ? REPORT_COLUMNS.map((c) => csvField((row as Record<string, unknown>)[c])).join(",") + "\r\n"
            : JSON.stringify(row) + "\n";
        }
        yield chunk;
      }
    }
  }
  const source = text()[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(controller) {
      const next = await source.next();
      if (next.done) controller.close();
      else controller.enqueue(encoder.encode(next.value));
    },
    async cancel() {
      await source.return?.();
    },
  });
}
