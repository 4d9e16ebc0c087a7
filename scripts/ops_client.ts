/**
 * Shared helpers of the operator CLIs (`deno task dlq`, `deno task resync`):
 * where the service is (`MARKETPLACE_SYNC_URL`, default http://127.0.0.1:8080),
 * the admin token (`ADMIN_TOKEN`, sent as `Authorization: Bearer`), requests
 * whose errors name the URL and the HTTP status/body, a plain-text table
 * printer and exit-code handling (0 ok, 1 failure, 2 bad usage).
 */

/** Where the service listens when `MARKETPLACE_SYNC_URL` is not set. */
export const DEFAULT_URL = "http://127.0.0.1:8080";

/**
 * A failure to report to the operator; `exitCode` 1 unless it is bad usage (2). `transient`:
 * the service could not be reached or is restarting, so asking again later may work.
 */
export class CliError extends Error {
  override name = "CliError";
  constructor(message: string, readonly exitCode = 1, readonly transient = false) {
    super(message);
  }
}

/** Bad command-line usage (exit code 2). */
export class UsageError extends CliError {
  override name = "UsageError";
  constructor(message: string) {
    super(message, 2);
  }
}

/** A JSON answer of the service. */
export interface OpsResponse<T = unknown> {
  status: number;
  body: T;
}

/** Options of {@link OpsClient}. */
export interface OpsClientOptions {
  baseUrl: string;
  token?: string;
  /** For tests. */
  fetch?: typeof fetch;
}

/** Reads the service URL and token from the environment. */
export function clientOptionsFromEnv(
  env: { get(name: string): string | undefined } = Deno.env,
): OpsClientOptions {
  const url = env.get("MARKETPLACE_SYNC_URL")?.trim() || DEFAULT_URL;
  try {
    new URL(url);
  } catch {
    throw new UsageError(`MARKETPLACE_SYNC_URL is not a URL: ${url}`);
  }
  const token = env.get("ADMIN_TOKEN")?.trim() || undefined;
  return { baseUrl: url.replace(/\/+$/, ""), token };
}

/** The message a service error body carries (`message`, else `error`), else the text. */
export function serviceMessage(body: unknown, text: string): string {
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    const message = typeof b.message === "string" ? b.message : undefined;
    const code = typeof b.error === "string" ? b.error : undefined;
    if (message && code) return `${code}: ${message}`;
    if (message ?? code) return (message ?? code)!;
  }
  return text.trim().slice(0, 2000) || "(empty body)";
}

/** An error's message with its innermost cause's (fetch itself says only "fetch failed"). */
export function describe(error: unknown): string {
  const message = (error as Error)?.message ?? String(error);
  let cause = (error as Error)?.cause;
  while ((cause as Error)?.cause) cause = (cause as Error).cause;
  const detail = (cause as Error)?.message;
  if (!detail || detail === message) return message;
  // "error sending request for url (…): client error (Connect): tcp connect error: Connection refused (os error 111)"
  return `${message}: ${detail.split(": ").slice(-1)[0]}`;
}

/** A small JSON client for the service's operator endpoints. */
export class OpsClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(options: OpsClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Absolute URL for a path (or a URL the service handed back). */
  url(path: string): string {
    if (/^https?:\/\//i.test(path)) return path;
    // Appended, not resolved: a base behind a path prefix (http://host/msync) keeps it.
    return this.baseUrl + (path.startsWith("/") ? path : `/${path}`);
  }

  /**
   * Sends a request and returns the JSON answer when its status is 2xx or one
   * of `accept`; anything else becomes a {@link CliError} naming the URL, the
   * status and the service's message.
   */
  async request<T = unknown>(
    method: string,
    path: string,
    options: { body?: unknown; accept?: number[]; timeoutMs?: number } = {},
  ): Promise<OpsResponse<T>> {
    const url = this.url(path);
    const timeoutMs = options.timeoutMs ?? 30_000;
    const headers = this.#headers("application/json");
    if (options.body !== undefined) headers["content-type"] = "application/json";
    // The timeout covers the body too: a JSON answer is small.
    const signal = AbortSignal.timeout(timeoutMs);
    const response = await this.#send(method, url, timeoutMs, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal,
    });
    const text = await response.text();
    let body: unknown = undefined;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch { /* not JSON: reported as text below */ }
    this.#check(method, url, response.status, body, text, options.accept);
    if (body === undefined && text !== "") {
      throw new CliError(
        `${method} ${url} answered HTTP ${response.status} with a non-JSON body: ${text.slice(0, 500)}`,
      );
    }
    return { status: response.status, body: body as T };
  }

  /**
   * GETs a body to read as it arrives (a report of any size): the timeout covers only the
   * wait for the answer to start, not the download. Errors as {@link request}'s.
   */
  async stream(path: string, options: { timeoutMs?: number } = {}): Promise<ReadableStream<Uint8Array>> {
    const url = this.url(path);
    const timeoutMs = options.timeoutMs ?? 30_000;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new DOMException("no answer", "TimeoutError")), timeoutMs);
    let response: Response;
    try {
      response = await this.#send("GET", url, timeoutMs, {
        headers: this.#headers("*/*"),
        signal: abort.signal,
      });
    } finally {
      clearTimeout(timer);
    }
    if (response.status < 200 || response.status >= 300) {
      const text = await response.text();
      let body: unknown = undefined;
      try {
        body = JSON.parse(text);
      } catch { /* reported as text */ }
      this.#check("GET", url, response.status, body, text);
    }
    return response.body ?? new ReadableStream({ start: (c) => c.close() });
  }

  #headers(accept: string): Record<string, string> {
    const headers: Record<string, string> = { accept };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    return headers;
  }

  async #send(method: string, url: string, timeoutMs: number, init: RequestInit): Promise<Response> {
    try {
      return await this.#fetch(url, { method, ...init });
    } catch (error) {
      // Both timeouts (AbortSignal.timeout and stream's abort reason) reject with a TimeoutError.
      if ((error as Error).name === "TimeoutError") {
        throw new CliError(`${method} ${url}: no answer within ${timeoutMs / 1000} s`, 1, true);
      }
      throw new CliError(
        `cannot reach marketplace-sync at ${this.baseUrl}: ${describe(error)} (set MARKETPLACE_SYNC_URL)`,
        1,
        true,
      );
    }
  }

  /** Throws the {@link CliError} an answer that is not 2xx (nor in `accept`) deserves. */
  #check(method: string, url: string, status: number, body: unknown, text: string, accept?: number[]): void {
    if (status === 401 || status === 403) {
      const hint = this.#token ? "check ADMIN_TOKEN" : "set ADMIN_TOKEN to the service's admin token";
      throw new CliError(
        `${method} ${url} refused (HTTP ${status}): ${serviceMessage(body, text)} (${hint})`,
      );
    }
    if ((status >= 200 && status < 300) || accept?.includes(status)) return;
    // 502/503/504: a proxy without its backend, or a service still starting (a restart).
    throw new CliError(
      `${method} ${url} failed: HTTP ${status}: ${serviceMessage(body, text)}`,
      1,
      status === 502 || status === 503 || status === 504,
    );
  }
}

/** Shortens text to `max` characters (with an ellipsis), on one line. */
export function truncate(text: string, max: number): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length <= max ? line : `${line.slice(0, Math.max(0, max - 1))}…`;
}

/** How a cell is printed: empty for null/undefined, numbers right-aligned. */
function cell(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value).replace(/\s+/g, " ");
}

/** A plain-text table: a header row, then one row per item; numbers are right-aligned. */
export function formatTable(columns: string[], rows: unknown[][]): string {
  const text = rows.map((r) => columns.map((_, i) => cell(r[i])));
  const numeric = columns.map((_, i) =>
    rows.length > 0 && rows.every((r) => r[i] === null || r[i] === undefined || typeof r[i] === "number")
  );
  const width = columns.map((c, i) => Math.max(c.length, ...text.map((r) => [...r[i]].length)));
  const line = (cells: string[], header = false) =>
    cells.map((c, i) => {
      const pad = " ".repeat(width[i] - [...c].length);
      return numeric[i] && !header ? pad + c : c + pad;
    }).join("  ").trimEnd();
  return [line(columns, true), ...text.map((r) => line(r))].join("\n");
}

/** Drops the `--` that `deno task x -- args` may pass through. */
export function cliArgs(args: string[]): string[] {
  return args[0] === "--" ? args.slice(1) : args;
}

/** A flag parser with usage errors that name the bad flag. */
export class ArgReader {
  #i = 0;
  constructor(readonly args: string[]) {}

  /** The next argument, split as [flag, inline value] for `--flag=value`. */
  next(): { arg: string; inline?: string } | undefined {
    if (this.#i >= this.args.length) return undefined;
    const arg = this.args[this.#i++];
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    return eq > 0 ? { arg: arg.slice(0, eq), inline: arg.slice(eq + 1) } : { arg };
  }

  /** The value of a flag: inline (`--x=v`) or the next argument (which must not be a flag). */
  value(flag: string, inline?: string): string {
    if (inline !== undefined) {
      if (inline === "") throw new UsageError(`${flag} needs a value`);
      return inline;
    }
    const v = this.args[this.#i];
    if (v === undefined || v.startsWith("--")) throw new UsageError(`${flag} needs a value`);
    this.#i++;
    return v;
  }

  /** Values following a flag up to the next flag (`--event-id A B C`). */
  values(flag: string, inline?: string): string[] {
    const out = [this.value(flag, inline)];
    if (inline !== undefined) return out;
    while (this.#i < this.args.length && !this.args[this.#i].startsWith("--")) out.push(this.args[this.#i++]);
    return out;
  }

  /** Refuses a value given to a flag that takes none. */
  noValue(flag: string, inline?: string): void {
    if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
  }
}

/** Runs a CLI's main: prints errors to stderr and exits with the right code. */
export async function runCli(main: () => Promise<number>, usage: string): Promise<never> {
  let code: number;
  try {
    code = await main();
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}\n\n${usage}`);
      code = 2;
    } else if (error instanceof CliError) {
      console.error(`error: ${error.message}`);
      code = error.exitCode;
    } else {
      console.error(`error: ${(error as Error)?.stack ?? String(error)}`);
      code = 1;
    }
  }
  Deno.exit(code);
}
