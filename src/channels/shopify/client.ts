/**
 * A small Shopify Admin GraphQL client: native fetch, the shared cost budget
 * drawn BEFORE sending, a timeout well below the broker's consumer timeout,
 * and every way a call can go wrong mapped to what the caller should do.
 */
import type { ServiceMetrics } from "../../metrics.ts";
import type { RateBudget } from "../../sync/cost_bucket.ts";

/** `extensions.cost` of a Shopify response. */
export interface QueryCost {
  requestedQueryCost: number;
  actualQueryCost?: number | null;
  throttleStatus: { maximumAvailable: number; currentlyAvailable: number; restoreRate: number };
}

/** One GraphQL error as Shopify returns it. */
export interface GraphqlError {
  message: string;
  extensions?: { code?: string; [key: string]: unknown };
  path?: (string | number)[];
}

/** What a call came to, from the caller's point of view. */
export type CallResult<T> =
  | { kind: "ok"; data: T }
  /** Try the same request (same key) again after `waitMs`. */
  | { kind: "retry"; reason: string; error: string; waitMs?: number; countsAsAttempt: boolean }
  /** Credentials refused: wait for an operator; do not fail changes. */
  | { kind: "unauthorized"; error: string }
  /** The key is spent or unusable: send the changes again under a new key. */
  | { kind: "new_key"; reason: string; error: string }
  /** Shopify refused the document itself: retrying cannot help. */
  | { kind: "rejected"; reason: string; error: string };

/** Connection settings. */
export interface ShopifyClientOptions {
  /** Base URL, e.g. https://my-shop.myshopify.com (or the sandbox's loopback URL). */
  baseUrl: string;
  token: string;
  apiVersion: string;
  timeoutMs: number;
  budget: RateBudget;
  metrics: ServiceMetrics;
}

const INITIAL_COST_ESTIMATE = 10;

/** How to guess what a call costs before Shopify has priced one like it. */
export interface CallOptions {
  /**
   * The document repeats one part `parts` times (an alias per listing), so its cost grows with
   * the input: the cost is learned per part and a call of another size is estimated right.
   * `perPart` is the guess until Shopify has answered one.
   */
  cost?: { parts: number; perPart: number };
  /**
   * A call of a steady stream (the dispatcher's stock writes): it leaves room in the budget for one
   * query at Shopify's single-query maximum (at most half the bucket), so an occasional read whose
   * requested cost is hundreds of points (the orders poll) goes at once instead of stalling the
   * stream behind its wait.
   */
  stream?: boolean;
}

/** Shopify refuses one query whose requested cost is above 1 000 points, whatever the bucket. */
const SINGLE_QUERY_MAX_COST = 1000;

/** Admin GraphQL client for one shop. */
export class ShopifyClient {
  readonly endpoint: string;
  #costEstimate = new Map<string, number>();

  constructor(private readonly options: ShopifyClientOptions) {
    this.endpoint = `${options.baseUrl.replace(/\/+$/, "")}/admin/api/${options.apiVersion}/graphql.json`;
  }

  /**
   * Sends one operation. Never throws for marketplace or network errors.
   * @param operation the document's operation name (cost is learned per name).
   * @param options how the cost grows with the input, for documents built per call.
   */
  async call<T>(
    operation: string,
    query: string,
    variables: Record<string, unknown>,
    signal?: AbortSignal,
    options: CallOptions = {},
  ): Promise<CallResult<T>> {
    const { budget, metrics } = this.options;
    const channel = "shopify";
    const count = (outcome: string) => metrics.marketplaceCalls.inc({ channel, operation, outcome });
    const parts = options.cost ? Math.max(1, options.cost.parts) : 1;
    const learned = this.#costEstimate.get(operation);
    const estimate = options.cost
      ? Math.ceil((learned ?? options.cost.perPart) * parts)
      : learned ?? INITIAL_COST_ESTIMATE;
    const keep = options.stream ? Math.min(SINGLE_QUERY_MAX_COST, budget.shape.max / 2) : 0;
    const waited = await budget.take(estimate, signal, keep);
    if (waited > 0) metrics.throttleWaitSeconds.inc({ channel }, waited / 1000);

    let response: Response;
    try {
      const timeout = AbortSignal.timeout(this.options.timeoutMs);
      response = await fetch(this.endpoint, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "accept": "application/json",
          "x-shopify-access-token": this.options.token,
        },
        body: JSON.stringify({ query, variables }),
        signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
      });
    } catch (error) {
      const timedOut = (error as Error).name === "TimeoutError";
      count(timedOut ? "timeout" : "network");
      return {
        kind: "retry",
        reason: timedOut ? "timeout" : "network",
        error: timedOut ? `no answer within ${this.options.timeoutMs} ms` : (error as Error).message,
        countsAsAttempt: true,
      };
    }

    if (response.status === 429) {
      await response.body?.cancel();
      count("http_429");
      // Retry-After is in SECONDS (it may be fractional).
      const seconds = Number(response.headers.get("retry-after"));
      return {
        kind: "retry",
        reason: "http_429",
        error: "HTTP 429 Too Many Requests",
        waitMs: Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 2_000,
        countsAsAttempt: false,
      };
    }
    if (response.status === 401 || response.status === 403) {
      const text = await response.text().catch(() => "");
      count(`http_${response.status}`);
      return {
        kind: "unauthorized",
        error: `HTTP ${response.status}: ${text.slice(0, 200)} (check SHOPIFY_TOKEN and the app's scopes)`,
      };
    }
    if (response.status >= 500 || response.status === 408) {
      await response.body?.cancel();
      count("http_5xx");
      return { kind: "retry", reason: "http_5xx", error: `HTTP ${response.status}`, countsAsAttempt: true };
    }
    let body: { data?: T | null; errors?: GraphqlError[]; extensions?: { cost?: QueryCost } };
    try {
      body = await response.json();
    } catch {
      count("bad_response");
      return {
        kind: "retry",
        reason: "bad_response",
        error: `HTTP ${response.status} with a body that is not JSON`,
        countsAsAttempt: true,
      };
    }
    if (response.status !== 200) {
      count(`http_${response.status}`);
      return {
        kind: "rejected",
        reason: `http_${response.status}`,
        error: `HTTP ${response.status}: ${JSON.stringify(body).slice(0, 300)}`,
      };
    }

    const cost = body.extensions?.cost;
    if (cost?.throttleStatus) {
      const s = cost.throttleStatus;
      this.#costEstimate.set(operation, cost.requestedQueryCost / parts);
      // Shopify holds the requested cost while the call runs and keeps the actual one (none when it
      // refused the call): what we took beyond that comes back.
      await budget.observe(
        s.currentlyAvailable,
        { max: s.maximumAvailable, restoreRate: s.restoreRate },
        estimate - (cost.actualQueryCost ?? 0),
      );
      metrics.budgetLevel.set({ channel }, s.currentlyAvailable);
    }
    const errors = body.errors ?? [];
    const codes = errors.map((e) => e.extensions?.code ?? "");
    if (codes.includes("THROTTLED")) {
      count("throttled");
      const s = cost?.throttleStatus;
      const needed = (cost?.requestedQueryCost ?? estimate) - (s?.currentlyAvailable ?? 0);
      const waitMs = s ? Math.max(100, Math.ceil(needed / s.restoreRate * 1000)) : 1_000;
      return { kind: "retry", reason: "throttled", error: "THROTTLED", waitMs, countsAsAttempt: false };
    }
    const message = errors.map((e) => `${e.extensions?.code ? `${e.extensions.code}: ` : ""}${e.message}`)
      .join("; ");
    if (codes.includes("IDEMPOTENCY_CONCURRENT_REQUEST")) {
      count("idempotency_concurrent");
      return {
        kind: "retry",
        reason: "idempotency_concurrent",
        error: message,
        waitMs: 1_000,
        countsAsAttempt: false,
      };
    }
    if (codes.includes("IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED")) {
      count("idempotency_new_key");
      return { kind: "new_key", reason: "idempotency_previous_attempt_failed", error: message };
    }
    if (codes.includes("IDEMPOTENCY_KEY_PARAMETER_MISMATCH")) {
      // Our key already carried another request: what happened to this one is unknown.
      count("idempotency_mismatch");
      return { kind: "rejected", reason: "idempotency_key_parameter_mismatch", error: message };
    }
    if (codes.includes("MAX_COST_EXCEEDED")) {
      // Priced above what one query may cost: the same document can never pass; a smaller one can.
      count("max_cost_exceeded");
      return { kind: "rejected", reason: "max_cost_exceeded", error: message };
    }
    if (codes.some((c) => c === "INTERNAL_SERVER_ERROR" || c === "SERVICE_UNAVAILABLE")) {
      count("graphql_internal");
      return { kind: "retry", reason: "graphql_internal", error: message, countsAsAttempt: true };
    }
    // Data next to errors means the operation ran (e.g. a field we asked for was
    // denied): the caller judges the payload rather than discarding an applied change.
    if (body.data == null) {
      count("graphql_error");
      return { kind: "rejected", reason: "graphql_error", error: message || "response without data" };
    }
    count("ok");
    return { kind: "ok", data: body.data };
  }
}
