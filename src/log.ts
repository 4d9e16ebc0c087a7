/**
 * Logging setup (LogTape): JSON lines for machines, emoji-marked lines for people.
 *
 * Modules take a logger with `getLogger(["marketplace-sync", "<area>"])` and log
 * structured properties (`event_id`, `channel`, `sku`, `attempt`, …). A `mark`
 * property picks the emoji on a TTY: received 📥, done ✅, retry 🔄, error ❌,
 * shutdown 🛑. Secrets are redacted twice: by field name (token, password,
 * authorization, …) and by pattern in the rendered line (URL credentials,
 * Bearer values, JWTs).
 */
import { configure, getLogger, type Logger, type LogRecord, reset } from "@logtape/logtape";
import { DEFAULT_REDACT_FIELDS, JWT_PATTERN, redactByField, redactByPattern } from "@logtape/redaction";

/** Category root for every logger of the service. */
export const LOG_ROOT = "marketplace-sync";

/** Returns the logger for one area of the service (`broker`, `ledger`, …). */
export function logger(area: string): Logger {
  return getLogger([LOG_ROOT, area]);
}

/** What a log line is about, rendered as an emoji on a TTY. */
export type Mark = "received" | "done" | "retry" | "error" | "shutdown" | "start";

const MARKS: Record<Mark, string> = {
  received: "📥",
  done: "✅",
  retry: "🔄",
  error: "❌",
  shutdown: "🛑",
  start: "🚀",
};

const REDACTED = "[REDACTED]";

/** Patterns scrubbed from every rendered line, whatever field they hid in. */
const LINE_PATTERNS = [
  // user:password@ in any URL
  { pattern: /(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s"]*:)[^\s"/?#]*@/gi, replacement: "$1***@" },
  // Authorization: Bearer xxx / X-Shopify-Access-Token values
  { pattern: /(Bearer\s+)[A-Za-z0-9._~+/=-]+/g, replacement: `$1${REDACTED}` },
  { pattern: /\bshp(at|ca|pa|ss)_[A-Za-z0-9]+/g, replacement: REDACTED },
  { pattern: /\b(APP_USR|TG)-[A-Za-z0-9-]{10,}/g, replacement: REDACTED },
  // OAuth secrets in form bodies or JSON (MercadoLibre token refresh)
  {
    pattern: /((?:access_token|refresh_token|client_secret|password)\\?"?\s*[=:]\s*\\?"?)[^&"\\\s,}]+/gi,
    replacement: `$1${REDACTED}`,
  },
  JWT_PATTERN,
];

function renderMessage(record: LogRecord): string {
  return record.message.map((part) =>
    typeof part === "string" ? part : part instanceof Error ? part.message : JSON.stringify(part)
  ).join("");
}

/** One JSON object per line with stable top-level keys. */
export function jsonLine(record: LogRecord): string {
  const { mark: _mark, ...properties } = record.properties;
  return JSON.stringify({
    time: new Date(record.timestamp).toISOString(),
    level: record.level,
    logger: record.category.join("."),
    message: renderMessage(record),
    ...properties,
  }, (_key, value) => value instanceof Error ? { name: value.name, message: value.message } : value) +
    "\n";
}

/** A readable line with the original design's emoji markers. */
export function prettyLine(record: LogRecord): string {
  const { mark, ...properties } = record.properties;
  // Properties already spelled out in the message are not repeated after it.
  const template = Array.isArray(record.rawMessage) ? record.rawMessage.join("") : String(record.rawMessage);
  for (const key of Object.keys(properties)) if (template.includes(`{${key}}`)) delete properties[key];
  const emoji = MARKS[mark as Mark] ??
    (record.level === "error" || record.level === "fatal" ? "❌" : record.level === "warning" ? "⚠️ " : "  ");
  const time = new Date(record.timestamp).toISOString().slice(11, 23);
  const extras = Object.entries(properties)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v instanceof Error ? v.message : v)}`)
    .join(" ");
  return `${time} ${emoji} ${record.level.padEnd(7)} ${record.category.slice(1).join(".") || "main"}: ${
    renderMessage(record)
  }${extras ? "  " + extras : ""}\n`;
}

/** Options for {@link setupLogging}. */
export interface LoggingOptions {
  level: "trace" | "debug" | "info" | "warning" | "error" | "fatal";
  format: "auto" | "json" | "pretty";
  /** Where lines go; stdout by default. Tests pass a collector. */
  write?: (line: string) => void;
}

/**
 * Configures LogTape for the whole process (call once, from the composition root).
 * JSON when stdout is not a TTY or `format` is `json`.
 */
export async function setupLogging(options: LoggingOptions): Promise<void> {
  const pretty = options.format === "pretty" ||
    (options.format === "auto" && Deno.stdout.isTerminal());
  const format = redactByPattern(pretty ? prettyLine : jsonLine, LINE_PATTERNS);
  const write = options.write ?? ((line: string) => console.log(line.trimEnd()));
  const sink = redactByField((record: LogRecord) => write(format(record)), {
    fieldPatterns: [...DEFAULT_REDACT_FIELDS, /authori[sz]ation/i, /cookie/i, /^x-shopify-access-token$/i],
    action: () => REDACTED,
  });
  await configure({
    reset: true,
    sinks: { main: sink },
    loggers: [
      { category: [LOG_ROOT], sinks: ["main"], lowestLevel: options.level },
      { category: ["logtape", "meta"], sinks: ["main"], lowestLevel: "warning" },
    ],
  });
}

/** Removes the logging configuration (tests). */
export async function resetLogging(): Promise<void> {
  await reset();
}
