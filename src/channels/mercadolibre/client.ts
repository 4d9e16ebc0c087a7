/**
 * A small MercadoLibre REST client: native fetch, a Bearer token from
 * {@link AccessTokens} (refreshed once on a 401), one unit of the shared
 * request budget drawn before every call, a timeout well below the broker's
 * consumer timeout, MeLi's error JSON parsed, and every outcome mapped to
 * what the caller should do. A 429 drains the shared budget (all replicas back
 * off) and is retried here with jittered backoff: nothing was applied. A write
 * under a listing lock is fenced right before each send (see listing_lock.ts).
 */
import type { ServiceMetrics } from "../../metrics.ts";
import { exponential } from "../../resilience/backoff.ts";
import { type RateBudget, sleep } from "../../sync/cost_bucket.ts";
import { fenceHeldLock } from "../../sync/listing_lock.ts";
import { type AccessTokens, AuthUnavailableError } from "./tokens.ts";

/** MeLi's error body. */
export interface MeliError {
  message: string;
  error: string;
  status: number;
  cause: unknown[];
}

/** What a call came to. */
export type MeliResult<T> =
  | { kind: "ok"; status: number; data: T; headers: Headers }
  /** No usable token (refresh failing, invalid_grant, token refused): wait, do not fail changes. */
  | { kind: "auth"; error: string; permanent: boolean }
  /** Still 429 after the retries here. */
  | { kind: "rate_limited"; error: string; waitMs: number }
  /** 409 optimistic locking: nothing applied; try again after a pause. */
  | { kind: "conflict"; error: string; meli?: MeliError }
  /** 5xx, timeout or network: for a write, it may or may not have been applied. */
  | { kind: "unavailable"; error: string }
  /** A 4xx refusal: retrying the same request cannot help. */
  | { kind: "rejected"; status: number; error: string; meli: MeliError };

/** Options of {@link MeliClient}. */
export interface MeliClientOptions {
  baseUrl: string;
  tokens: AccessTokens;
  budget: RateBudget;
  timeoutMs: number;
  metrics: ServiceMetrics;
  /** 429 retries inside one call before giving up (default 4). */
  rateLimitRetries?: number;
  /** First 429 backoff step (default 1 s, doubled each time, ±50 % jitter). */
  rateLimitBackoffMs?: number;
}

/** A request. */
export interface MeliRequest {
  /** For metrics: search_items, get_item, put_item, put_variation, get_user. */
  operation: string;
  query?: Record<string, string>;
  body?: unknown;
  /** Extra request headers (`x-version` of a user product's stock write). */
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Parses MeLi's error JSON (falls back to the raw text). */
export function parseMeliError(status: number, text: string): MeliError {
  try {
    const body = JSON.parse(text) as Partial<MeliError> & { error_description?: string };
    return {
      message: String(body.message ?? body.error_description ?? text).slice(0, 500),
      error: String(body.error ?? `http_${status}`),
      status: Number(body.status ?? status),
      cause: Array.isArray(body.cause) ? body.cause : [],
    };
  } catch {
    return { message: text.slice(0, 300) || `HTTP ${status}`, error: `http_${status}`, status, cause: [] };
  }
}

/** A human-readable line from MeLi's error, including the causes' messages. */
export function describeMeliError(e: MeliError): string {
  const causes = e.cause
    .map((c) => typeof c === "object" && c ? String((c as { message?: unknown }).message ?? "") : String(c))
    .filter(Boolean);
  return `${e.error}: ${e.message}${causes.length ? ` (${causes.join("; ")})` : ""}`;
}

/** REST client for one seller account. */
export class MeliClient {
  readonly #base: string;

  constructor(private readonly options: MeliClientOptions) {
    this.#base = options.baseUrl.replace(/\/+$/, "");
  }

  /**
   * Sends one request. Never throws for marketplace or network errors.
   * @throws LockLostError when a write's listing lock was lost (nothing was sent).
   */
  async request<T>(method: "GET" | "PUT", path: string, request: MeliRequest): Promise<MeliResult<T>> {
    const { budget, metrics, tokens } = this.options;
    const channel = "mercadolibre";
    const count = (outcome: string) =>
      metrics.marketplaceCalls.inc({ channel, operation: request.operation, outcome });
    const url = `${this.#base}${path}${request.query ? `?${new URLSearchParams(request.query)}` : ""}`;
    const retries = this.options.rateLimitRetries ?? 4;
    // By 429s so far in this call: the first step, doubling, ±50 %.
    const rateLimitBackoff = exponential({
      baseMs: this.options.rateLimitBackoffMs ?? 1_000,
      firstAttempt: 0,
      jitter: 0.5,
    });
    let refreshed = false;
    for (let attempt = 0;; attempt++) {
      const waited = await budget.take(1, request.signal);
      if (waited > 0) metrics.throttleWaitSeconds.inc({ channel }, waited / 1000);
      metrics.budgetLevel.set({ channel }, budget.level);
      let token: string;
      try {
        token = await tokens.get(request.signal);
      } catch (error) {
        if (error instanceof AuthUnavailableError) {
          count("no_token");
          return { kind: "auth", error: error.message, permanent: error.permanent };
        }
        throw error;
      }
      // Last thing before a write goes out (after any budget wait, refresh or 429 back-off): the
      // listing lock it runs under must still be ours, or it is not sent (throws LockLostError).
      if (method !== "GET") await fenceHeldLock();
      let response: Response;
      try {
        const timeout = AbortSignal.timeout(this.options.timeoutMs);
        response = await fetch(url, {
          method,
          headers: {
            authorization: `Bearer ${token}`,
            accept: "application/json",
            ...(request.body === undefined ? {} : { "content-type": "application/json" }),
            ...request.headers,
          },
          body: request.body === undefined ? undefined : JSON.stringify(request.body),
          signal: request.signal ? AbortSignal.any([timeout, request.signal]) : timeout,
        });
      } catch (error) {
        const timedOut = (error as Error).name === "TimeoutError";
        count(timedOut ? "timeout" : "network");
        return {
          kind: "unavailable",
          error: timedOut ? `no answer within ${this.options.timeoutMs} ms` : (error as Error).message,
        };
      }
      const text = await response.text().catch(() => "");
      if (response.ok) {
        try {
          const data = JSON.parse(text) as T;
          count("ok");
          tokens.accepted?.();
          return { kind: "ok", status: response.status, data, headers: response.headers };
        } catch {
          count("bad_response");
          return { kind: "unavailable", error: `HTTP ${response.status} with a body that is not JSON` };
        }
      }
      const meli = parseMeliError(response.status, text);
      if (response.status === 401 && !refreshed) {
        count("http_401");
        refreshed = true;
        if (await tokens.rejected(token, request.signal)) {
          attempt--; // a refreshed token is not a rate-limit retry
          continue;
        }
        const health = tokens.health();
        return { kind: "auth", error: health.detail ?? describeMeliError(meli), permanent: true };
      }
      if (response.status === 401) {
        count("http_401");
        return {
          kind: "auth",
          error: `token refused right after a refresh: ${describeMeliError(meli)}`,
          permanent: true,
        };
      }
      if (response.status === 429) {
        count("http_429");
        // The budget is per app, shared by replicas: empty it so every replica backs off.
        await budget.observe(0);
        metrics.budgetLevel.set({ channel }, 0);
        const waitMs = rateLimitBackoff(attempt);
        if (attempt >= retries) {
          return { kind: "rate_limited", error: "HTTP 429 Too Many Requests", waitMs };
        }
        await sleep(waitMs, request.signal);
        if (request.signal?.aborted) {
          return { kind: "rate_limited", error: "HTTP 429 (shutting down)", waitMs };
        }
        continue;
      }
      if (response.status === 409) {
        count("http_409");
        return { kind: "conflict", error: describeMeliError(meli), meli };
      }
      if (response.status >= 500 || response.status === 408) {
        count("http_5xx");
        return { kind: "unavailable", error: `HTTP ${response.status}: ${describeMeliError(meli)}` };
      }
      count(`http_${response.status}`);
      return { kind: "rejected", status: response.status, error: describeMeliError(meli), meli };
    }
  }
}
