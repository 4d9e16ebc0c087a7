/**
 * Idempotency keys of `@idempotent` mutations, as Shopify documents them
 * (shopify.dev/docs/api/usage/implementing-idempotency and the mutation's user-error
 * codes): a duplicate (same key, same mutation variables) within the retention window
 * gets the original result without the change being applied again; the same key with
 * other variables is IDEMPOTENCY_KEY_PARAMETER_MISMATCH; a key whose first request is
 * still running is IDEMPOTENCY_CONCURRENT_REQUEST; a key whose first request failed
 * is IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED (retry with a new key).
 */

/** Retention window: 24 hours. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

type Entry<T> =
  | { state: "in_flight"; fingerprint: string; expiresAt: number }
  | { state: "done"; fingerprint: string; expiresAt: number; result: T }
  | { state: "failed"; fingerprint: string; expiresAt: number };

/** What a request holding a key may do. */
export type Admission<T> =
  | { kind: "new" }
  | { kind: "replay"; result: T }
  | { kind: "IDEMPOTENCY_KEY_PARAMETER_MISMATCH" }
  | { kind: "IDEMPOTENCY_CONCURRENT_REQUEST" }
  | { kind: "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" };

/** Canonical JSON (sorted keys) of a mutation's field name and coerced arguments. */
export function fingerprint(field: string, args: unknown): string {
  const canon = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canon);
    if (v && typeof v === "object") {
      return Object.fromEntries(
        Object.keys(v).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return JSON.stringify([field, canon(args)]);
}

/** Keys of one shop. Results are kept as data, so a replay is the original outcome. */
export class IdempotencyStore<T> {
  #entries = new Map<string, Entry<T>>();

  constructor(readonly ttlMs: number = IDEMPOTENCY_TTL_MS, readonly now: () => number = Date.now) {}

  #sweep(t: number): void {
    for (const [key, entry] of this.#entries) if (entry.expiresAt <= t) this.#entries.delete(key);
  }

  /** Claims `key` for a new request, or says why it cannot run. */
  begin(key: string, print: string): Admission<T> {
    const t = this.now();
    this.#sweep(t);
    const entry = this.#entries.get(key);
    if (!entry) {
      this.#entries.set(key, { state: "in_flight", fingerprint: print, expiresAt: t + this.ttlMs });
      return { kind: "new" };
    }
    if (entry.fingerprint !== print) return { kind: "IDEMPOTENCY_KEY_PARAMETER_MISMATCH" };
    if (entry.state === "in_flight") return { kind: "IDEMPOTENCY_CONCURRENT_REQUEST" };
    if (entry.state === "failed") return { kind: "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" };
    return { kind: "replay", result: entry.result };
  }

  /** Records the outcome of the request that claimed `key`. */
  complete(key: string, result: T): void {
    const entry = this.#entries.get(key);
    if (entry) this.#entries.set(key, { ...entry, state: "done", result });
  }

  /** Marks the request that claimed `key` as failed. */
  fail(key: string): void {
    const entry = this.#entries.get(key);
    if (entry) {
      this.#entries.set(key, { state: "failed", fingerprint: entry.fingerprint, expiresAt: entry.expiresAt });
    }
  }

  /** Number of live keys. */
  get size(): number {
    this.#sweep(this.now());
    return this.#entries.size;
  }
}
