/**
 * MercadoLibre access tokens: a static `MELI_TOKEN`, or the OAuth refresh chain.
 *
 * Refresh tokens are single-use and rotate. Each refresh runs under a Postgres
 * advisory lock (one replica at a time; the others wait, then read the new
 * pair) and writes the new pair, encrypted, in the same transaction, before
 * anyone uses it. A restart continues the stored chain; a different
 * MELI_REFRESH_TOKEN in the environment (the seller authorized again) starts a
 * new one. `invalid_grant` makes the channel unhealthy; changes wait.
 *
 * A refresh request, once sent, is never aborted: MeLi spends the old refresh
 * token when it receives it, so only its answer carries the chain on. Callers
 * stop waiting at MELI_TIMEOUT (or their abort), the refresh goes on in the
 * background and stores the pair; shutdown waits for it until its own deadline.
 * A refresh that may have reached MeLi and got no answer is recorded on the
 * chain, and a later `invalid_grant` for that same refresh token is not written
 * over the chain (it pauses the chain like a broken one instead). A refresh
 * that never connected sent nothing and leaves the chain as it is.
 */
import type { Sql } from "postgres";
import type { CheckResult } from "../../model/health.ts";
import { logger } from "../../log.ts";
import { fingerprint, TokenCipher } from "./token_crypto.ts";

const log = logger("mercadolibre");

/** No token can be had now. `permanent` means an operator must act (re-authorize). */
export class AuthUnavailableError extends Error {
  override name = "AuthUnavailableError";
  constructor(message: string, readonly permanent: boolean) {
    super(message);
  }
}

/** Hands out the Bearer token for MeLi requests. */
export interface AccessTokens {
  /** A token valid now. @throws AuthUnavailableError */
  get(signal?: AbortSignal): Promise<string>;
  /** `token` got a 401: a fresh one (refreshing at most once), or undefined when none can be had. */
  rejected(token: string, signal?: AbortSignal): Promise<string | undefined>;
  health(): CheckResult;
  /** When the current token expires (undefined for a static token). */
  expiresAt(): Date | undefined;
  /**
   * Stops background work (shutdown); waits for a refresh in flight until
   * `deadline` (epoch ms) at the latest.
   */
  close?(deadline?: number): void | Promise<void>;
  /** A request with the current token succeeded. */
  accepted?(): void;
}

/** A fixed token (`MELI_TOKEN`): simple setups; nothing to refresh. */
export class StaticToken implements AccessTokens {
  #refused: string | undefined;
  constructor(private readonly token: string) {}
  get(): Promise<string> {
    return Promise.resolve(this.token);
  }
  rejected(): Promise<string | undefined> {
    this.#refused = "MercadoLibre refused MELI_TOKEN (HTTP 401): it expired or was revoked; " +
      "set a new MELI_TOKEN, or configure MELI_CLIENT_ID/MELI_CLIENT_SECRET/MELI_REFRESH_TOKEN so it is refreshed";
    return Promise.resolve(undefined);
  }
  /** A request with the token succeeded again. */
  accepted(): void {
    this.#refused = undefined;
  }
  health(): CheckResult {
    return this.#refused ? { ok: false, detail: this.#refused } : { ok: true };
  }
  expiresAt(): Date | undefined {
    return undefined;
  }
}

/** Options of {@link OAuthTokens}. */
export interface OAuthTokensOptions {
  sql: Sql;
  /** MeLi API base URL (`POST {baseUrl}/oauth/token`). */
  baseUrl: string;
  clientId: string;
  clientSecret: string;
  /** MELI_REFRESH_TOKEN: the seed of the chain. */
  refreshToken: string;
  timeoutMs: number;
  /** Counts refresh calls by outcome. */
  onRefresh?: (outcome: string) => void;
  /** How long a sent refresh waits for its answer before it counts as unanswered (default 2 min). */
  answerCapMs?: number;
}

interface TokenRow {
  access_token: string;
  refresh_token: string;
  expires_at: Date;
  refreshed_at: Date;
  seed_fingerprint: string;
  retired_seeds: string[];
  status: "ok" | "invalid_grant";
  error: string | null;
}

/** A refresh answer, with what the ledger row needs. */
interface MintedPair {
  access: string;
  refresh: string;
  expiresIn: number;
  expiresAt: number;
  userId: string | null;
  chainSeed: string;
  retired: string[];
}

interface Current {
  access: string;
  expiresAt: number;
  /** Refresh this long before expiry. */
  marginMs: number;
}

const CHANNEL = "mercadolibre";
// pg_advisory_xact_lock key: one lock for the MeLi token chain across replicas.
const LOCK_KEY = 0x4d454c49; // "MELI"
const RECHECK_BROKEN_MS = 5_000;
// `error` of a chain whose refresh got no answer: MeLi may have rotated the refresh token it names.
const UNANSWERED = "unanswered refresh:";

/**
 * The refresh token was refused after a refresh with it got no answer: MeLi
 * may have minted a pair we never saw. Not written over the chain, not
 * permanent (an operator decides), but paused like a broken chain.
 */
class LostAnswerError extends AuthUnavailableError {
  constructor(message: string) {
    super(message, false);
  }
}

/** Refresh margin from the token's own lifetime: 10 %, at most 10 minutes. */
export function refreshMarginMs(lifetimeMs: number): number {
  return Math.min(Math.max(lifetimeMs * 0.1, 0), 600_000);
}

/** The OAuth refresh chain, shared by replicas through the ledger. */
export class OAuthTokens implements AccessTokens {
  #current: Current | undefined;
  #inflight: Promise<Current> | undefined;
  #broken: string | undefined;
  /** A {@link LostAnswerError}'s message: refreshes pause like a broken chain's. */
  #lostAnswer: string | undefined;
  #brokenCheckedAt = 0;
  #lastError: string | undefined;
  #cipher: Promise<TokenCipher>;
  #unsaved: MintedPair | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** The refresh token of the POST in flight (shutdown marks the chain if it cannot wait for it). */
  #sending: string | undefined;

  constructor(private readonly options: OAuthTokensOptions) {
    this.#cipher = TokenCipher.fromSecret(options.clientSecret);
  }

  health(): CheckResult {
    if (this.#broken) return { ok: false, detail: this.#broken };
    if (this.#lastError && (!this.#current || this.#current.expiresAt <= Date.now())) {
      return { ok: false, detail: `cannot refresh the MercadoLibre token: ${this.#lastError}` };
    }
    return { ok: true };
  }

  expiresAt(): Date | undefined {
    return this.#current ? new Date(this.#current.expiresAt) : undefined;
  }

  async get(signal?: AbortSignal): Promise<string> {
    const current = this.#current;
    if (current && Date.now() < current.expiresAt - current.marginMs) return current.access;
    // A refused chain is asked again at most every RECHECK_BROKEN_MS, not on every call.
    if (this.#broken && Date.now() - this.#brokenCheckedAt < RECHECK_BROKEN_MS) {
      throw new AuthUnavailableError(this.#broken, true);
    }
    if (this.#lostAnswer && Date.now() - this.#brokenCheckedAt < RECHECK_BROKEN_MS) {
      throw new LostAnswerError(this.#lostAnswer);
    }
    return (await this.#waitFor(this.#refreshOnce(current?.access), signal)).access;
  }

  async rejected(token: string, signal?: AbortSignal): Promise<string | undefined> {
    // Someone (this process or another replica) may have refreshed meanwhile.
    if (this.#current && this.#current.access !== token && Date.now() < this.#current.expiresAt) {
      return this.#current.access;
    }
    try {
      return (await this.#waitFor(this.#refreshOnce(token), signal)).access;
    } catch (error) {
      if (error instanceof AuthUnavailableError) return undefined;
      throw error;
    }
  }

  /**
   * Waits for a refresh up to MELI_TIMEOUT or the caller's abort. Giving up
   * does not stop the refresh: it goes on and stores MeLi's answer.
   */
  #waitFor(refresh: Promise<Current>, signal?: AbortSignal): Promise<Current> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const stop = signal ? AbortSignal.any([timeout, signal]) : timeout;
    return new Promise<Current>((resolve, reject) => {
      const giveUp = () =>
        reject(
          new AuthUnavailableError(
            timeout.aborted
              ? `MercadoLibre has not answered the token refresh within ${this.options.timeoutMs} ms ` +
                "(MELI_TIMEOUT); it goes on in the background"
              : "stopped waiting for the token refresh; it goes on in the background",
            false,
          ),
        );
      if (stop.aborted) return giveUp();
      stop.addEventListener("abort", giveUp, { once: true });
      refresh.then(resolve, reject).finally(() => stop.removeEventListener("abort", giveUp));
    });
  }

  /** One refresh per process at a time; concurrent callers share it. It has no abort: see {@link #post}. */
  #refreshOnce(stale: string | undefined): Promise<Current> {
    this.#inflight ??= this.#refresh(stale).then(
      (current) => {
        this.#current = current;
        this.#broken = undefined;
        this.#lostAnswer = undefined;
        this.#lastError = undefined;
        return current;
      },
      (error) => {
        if (error instanceof AuthUnavailableError && error.permanent) {
          this.#broken = error.message;
          this.#brokenCheckedAt = Date.now();
        } else {
          if (error instanceof LostAnswerError) {
            this.#lostAnswer = error.message;
            this.#brokenCheckedAt = Date.now();
          }
          this.#lastError = (error as Error).message;
        }
        throw error;
      },
    ).finally(() => this.#inflight = undefined);
    // Callers may have stopped waiting: the outcome is kept above, not left unhandled.
    this.#inflight.catch(() => {});
    return this.#inflight;
  }

  async #refresh(stale: string | undefined): Promise<Current> {
    const cipher = await this.#cipher;
    const seed = await fingerprint(this.options.refreshToken);
    type Step = { ok: Current } | { fail: AuthUnavailableError };
    // A pair MeLi minted for us: if the ledger cannot store it, it must not be dropped (the old one is spent).
    let minted: MintedPair | undefined;
    const unsaved = this.#unsaved;
    // One refresher at a time across replicas: a session advisory lock on a reserved connection, not a
    // transaction, because postgres.js 3.4.9 can throw an unhandled error when a connection dies inside
    // one (docs/RELIABILITY.md); a dropped connection releases a session lock all the same.
    const refreshing = this.#locked(async (tx): Promise<Step> => {
      // A pair we hold but could not store yet is the chain's newest: store it before reading the row.
      if (unsaved) await this.#store(tx, unsaved);
      const [row] = await tx<TokenRow[]>`
        select access_token, refresh_token, expires_at, refreshed_at, seed_fingerprint, retired_seeds,
               status, error
          from oauth_token where channel = ${CHANNEL}`;
      let refreshFrom = this.options.refreshToken;
      let chainSeed = seed;
      let retired = row?.retired_seeds ?? [];
      const rowIsOurs = row && (row.seed_fingerprint === seed || row.retired_seeds.includes(seed));
      if (row && rowIsOurs) {
        if (row.status === "invalid_grant") {
          return { fail: new AuthUnavailableError(row.error ?? "invalid_grant", true) };
        }
        // No pair stored yet: the row only records the first refresh's lost answer (or refusal).
        const noPair = row.access_token === "" || row.refresh_token === "";
        const access = noPair ? undefined : await cipher.decrypt(row.access_token);
        const refresh = noPair ? undefined : await cipher.decrypt(row.refresh_token);
        if (noPair) {
          // Nothing to decrypt: the chain goes on from MELI_REFRESH_TOKEN.
        } else if (access === undefined || refresh === undefined) {
          log.warning(
            "the stored MercadoLibre token cannot be decrypted (MELI_CLIENT_SECRET changed?); refreshing from MELI_REFRESH_TOKEN",
          );
        } else {
          const lifetime = row.expires_at.getTime() - row.refreshed_at.getTime();
          const current = {
            access,
            expiresAt: row.expires_at.getTime(),
            marginMs: refreshMarginMs(lifetime),
          };
          // Another replica (or an earlier run) refreshed already: use its token.
          if (access !== stale && Date.now() < current.expiresAt - current.marginMs) return { ok: current };
          refreshFrom = refresh;
          chainSeed = row.seed_fingerprint;
        }
      } else if (row) {
        // A refresh token we have not seen: the seller authorized again. Start a new chain.
        retired = [...new Set([...row.retired_seeds, row.seed_fingerprint])].slice(-20);
        log.info("MELI_REFRESH_TOKEN differs from the stored chain's seed: starting a new token chain");
      }

      this.#sending = refreshFrom;
      const answer = await this.#post(refreshFrom).finally(() => this.#sending = undefined);
      if ("unanswered" in answer) {
        // MeLi may have spent refreshFrom and minted a pair we never saw: say so on the chain, so that
        // an invalid_grant for refreshFrom later is not taken for a revoked grant.
        const mark = `${UNANSWERED}${await fingerprint(refreshFrom)}`;
        if (row) await tx`update oauth_token set error = ${mark} where channel = ${CHANNEL}`;
        else {
          await tx`
            insert into oauth_token (channel, access_token, refresh_token, expires_at, seed_fingerprint,
                                     retired_seeds, status, error)
            values (${CHANNEL}, '', '', now(), ${chainSeed}, ${retired}, 'ok', ${mark})`;
        }
        return { fail: new AuthUnavailableError(answer.unanswered, false) };
      }
      if ("transient" in answer) return { fail: new AuthUnavailableError(answer.transient, false) };
      if ("rejected" in answer) {
        const message = answer.rejected;
        if (answer.invalidGrant && row?.error === `${UNANSWERED}${await fingerprint(refreshFrom)}`) {
          // Not a revoked grant: our last refresh with this token got no answer and MeLi spent it.
          // The chain is kept as it is (an operator decides); changes wait.
          const lost = "the last MercadoLibre token refresh got no answer and MeLi has since refused its " +
            "refresh token (invalid_grant): the new pair it minted was never received. If this persists, " +
            "the seller must authorize the app again; then set MELI_REFRESH_TOKEN and restart. " +
            "Changes wait meanwhile.";
          log.error("{error}", { mark: "error", error: lost });
          return { fail: new LostAnswerError(lost) };
        }
        if (row && !rowIsOurs && row.status === "ok") {
          // A bad new seed must not clobber a working chain: keep the chain, retire the seed.
          await tx`update oauth_token set retired_seeds = array_append(retired_seeds, ${seed})
                    where channel = ${CHANNEL}`;
          log.error("MELI_REFRESH_TOKEN was refused ({error}); keeping the stored token chain", {
            mark: "error",
            error: message,
          });
          return { fail: new AuthUnavailableError(message, false) };
        }
        const keep = row ?? { access_token: "", refresh_token: "" };
        await tx`
          insert into oauth_token (channel, access_token, refresh_token, expires_at, seed_fingerprint,
                                   retired_seeds, status, error)
          values (${CHANNEL}, ${keep.access_token}, ${keep.refresh_token}, now(), ${chainSeed}, ${retired},
                  'invalid_grant', ${message})
          on conflict (channel) do update set status = 'invalid_grant', error = excluded.error,
                 seed_fingerprint = excluded.seed_fingerprint, retired_seeds = excluded.retired_seeds`;
        return { fail: new AuthUnavailableError(message, true) };
      }
      const lifetimeMs = answer.expiresIn * 1000;
      minted = { ...answer, expiresAt: Date.now() + lifetimeMs, chainSeed, retired };
      // Persisted before anyone uses it: the old refresh token is already spent.
      await this.#store(tx, minted);
      log.info("MercadoLibre access token refreshed; valid for {expires_in} s", {
        expires_in: answer.expiresIn,
      });
      return {
        ok: { access: answer.access, expiresAt: minted.expiresAt, marginMs: refreshMarginMs(lifetimeMs) },
      };
    });
    let step: Step;
    try {
      step = await refreshing;
      if (unsaved && this.#unsaved === unsaved) this.#unsaved = undefined;
    } catch (error) {
      if (!minted) throw error;
      // MeLi answered but the ledger did not take the pair (Postgres went away mid-refresh). Keep it
      // in memory and store it as soon as Postgres is back, or the chain would be lost for good.
      this.#keepStoring(minted, error as Error);
      step = {
        ok: {
          access: minted.access,
          expiresAt: minted.expiresAt,
          marginMs: refreshMarginMs(minted.expiresIn * 1000),
        },
      };
    }
    if ("fail" in step) throw step.fail;
    return step.ok;
  }

  /** Runs `work` on a reserved connection holding the chain's advisory lock. */
  async #locked<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    const connection = await this.options.sql.reserve();
    try {
      await connection`select pg_advisory_lock(${LOCK_KEY})`;
      try {
        return await work(connection);
      } finally {
        await connection`select pg_advisory_unlock(${LOCK_KEY})`.catch(() => {});
      }
    } finally {
      connection.release();
    }
  }

  /** Writes a minted pair (encrypted) as the chain's current one. */
  async #store(sql: Sql, pair: MintedPair): Promise<void> {
    const cipher = await this.#cipher;
    await sql`
      insert into oauth_token (channel, access_token, refresh_token, expires_at, refreshed_at,
                               seed_fingerprint, retired_seeds, status, error, user_id)
      values (${CHANNEL}, ${await cipher.encrypt(pair.access)}, ${await cipher.encrypt(pair.refresh)},
              ${new Date(
      pair.expiresAt,
    )}, now(), ${pair.chainSeed}, ${pair.retired}, 'ok', null, ${pair.userId})
      on conflict (channel) do update set access_token = excluded.access_token,
             refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
             refreshed_at = excluded.refreshed_at, seed_fingerprint = excluded.seed_fingerprint,
             retired_seeds = excluded.retired_seeds, status = 'ok', error = null, user_id = excluded.user_id`;
  }

  /** Retries storing an unsaved pair every 2 s until it is in the ledger (or a newer refresh replaced it). */
  #keepStoring(pair: MintedPair, first: Error): void {
    this.#unsaved = pair;
    log.error(
      "the new MercadoLibre token pair could not be stored ({error}); keeping it in memory and retrying",
      {
        mark: "error",
        error: first.message,
      },
    );
    const attempt = async () => {
      if (this.#unsaved !== pair) return;
      try {
        await this.#locked((sql) => this.#store(sql, pair));
        this.#unsaved = undefined;
        log.info("the MercadoLibre token pair kept in memory is stored now");
      } catch {
        this.#retryTimer = setTimeout(attempt, 2_000);
      }
    };
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(attempt, 2_000);
  }

  /**
   * Shutdown: waits for a refresh in flight (MeLi has spent the old refresh
   * token; its answer must be stored) until `deadline` (epoch ms; the rest of
   * the shutdown budget). A refresh still in flight then is given up: the
   * chain is marked unanswered (as if the answer never came) and a warning
   * says so. Then background retries stop; an unsaved pair is logged as lost.
   */
  async close(deadline?: number): Promise<void> {
    const inflight = this.#inflight?.then(() => true, () => true);
    if (inflight) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const out = deadline === undefined
        ? new Promise<boolean>(() => {})
        : new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), deadline - Date.now()));
      const settled = await Promise.race([inflight, out]);
      clearTimeout(timer);
      if (!settled) await this.#abandon();
    }
    clearTimeout(this.#retryTimer);
    if (this.#unsaved) {
      log.error(
        "stopping with a MercadoLibre token pair that could not be stored: the seller may need to " +
          "authorize the app again",
        { mark: "error" },
      );
    }
  }

  /** Shutdown gives up on the refresh in flight: its answer will not be stored. */
  async #abandon(): Promise<void> {
    const sending = this.#sending;
    let marked = false;
    if (sending !== undefined) {
      // Best effort, bounded: the process is about to end.
      const mark = `${UNANSWERED}${await fingerprint(sending)}`;
      const seed = await fingerprint(this.options.refreshToken);
      // No row yet: the same placeholder an unanswered first refresh writes (no pair stored).
      marked = await Promise.race([
        this.options.sql`
          insert into oauth_token (channel, access_token, refresh_token, expires_at, seed_fingerprint,
                                   retired_seeds, status, error)
          values (${CHANNEL}, '', '', now(), ${seed}, '{}', 'ok', ${mark})
          on conflict (channel) do update set error = excluded.error where oauth_token.status = 'ok'`
          .then((r) => r.count > 0, () => false),
        new Promise<boolean>((r) => setTimeout(() => r(false), 1_000)),
      ]);
    }
    log.warning(
      "shutdown deadline reached with a MercadoLibre token refresh still in flight: its answer will not be " +
        "stored. MeLi may have rotated the refresh token; if the next start reports that the last refresh " +
        "got no answer and invalid_grant, check the stored pair (oauth_token) and authorize again if needed " +
        "({marked})",
      {
        marked: marked
          ? "the chain is marked unanswered"
          : sending === undefined
          ? "the request was not sent yet"
          : "the chain could not be marked",
      },
    );
  }

  /**
   * POSTs the refresh. Neither MELI_TIMEOUT nor a caller's abort nor shutdown
   * cuts it: once sent, MeLi has spent `refreshToken`. Only a far longer cap
   * ends a request that never gets an answer (it is then `unanswered`).
   */
  async #post(
    refreshToken: string,
  ): Promise<
    | { access: string; refresh: string; expiresIn: number; userId: string | null }
    | { rejected: string; invalidGrant?: true }
    | { transient: string }
    | { unanswered: string }
  > {
    const count = this.options.onRefresh ?? (() => {});
    const answerCapMs = this.options.answerCapMs ?? 120_000;
    let response: Response;
    let body: Record<string, unknown>;
    try {
      response = await fetch(`${this.options.baseUrl.replace(/\/+$/, "")}/oauth/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: new URLSearchParams({
          grant_type: "refresh_token",
          client_id: this.options.clientId,
          client_secret: this.options.clientSecret,
          refresh_token: refreshToken,
        }),
        signal: AbortSignal.timeout(answerCapMs),
      });
      body = await response.json().catch((error) => {
        if ((error as Error).name === "TimeoutError") throw error;
        return {};
      }) as Record<string, unknown>;
    } catch (error) {
      const timedOut = (error as Error).name === "TimeoutError";
      count(timedOut ? "timeout" : "network");
      if (!timedOut && neverConnected(error)) {
        // Connection refused, DNS or TLS failure: nothing reached MeLi, the refresh token is unspent.
        return { transient: `POST /oauth/token could not connect (${describe(error)})` };
      }
      return {
        unanswered: `POST /oauth/token got no answer (${
          timedOut ? `none within ${answerCapMs} ms` : describe(error)
        }): MercadoLibre may have rotated the refresh token`,
      };
    }
    if (response.ok && typeof body.access_token === "string" && typeof body.refresh_token === "string") {
      count("ok");
      const expiresIn = Number(body.expires_in);
      return {
        access: body.access_token,
        refresh: body.refresh_token,
        expiresIn: Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : 21_600,
        userId: body.user_id == null ? null : String(body.user_id),
      };
    }
    const code = String(body.error ?? `http_${response.status}`);
    const said = String(body.error_description ?? body.message ?? "").slice(0, 300);
    if (code === "invalid_grant") {
      count("invalid_grant");
      return {
        invalidGrant: true,
        rejected: `MercadoLibre refused the refresh token (invalid_grant: ${said}). ` +
          "The seller must authorize the app again; then set MELI_REFRESH_TOKEN to the new refresh token " +
          "and restart. Changes wait meanwhile.",
      };
    }
    if (code === "invalid_client" || code === "unauthorized_client") {
      count(code);
      return {
        rejected:
          `MercadoLibre refused the app credentials (${code}: ${said}); check MELI_CLIENT_ID and MELI_CLIENT_SECRET`,
      };
    }
    count(response.status >= 500 || response.status === 429 ? `http_${response.status}` : code);
    if (response.status >= 500 || response.status === 429) {
      return { transient: `POST /oauth/token answered HTTP ${response.status}` };
    }
    return { rejected: `POST /oauth/token answered HTTP ${response.status} ${code}: ${said}` };
  }
}

/** The error and its cause (Deno's fetch says "fetch failed" and puts the reason in `cause`). */
function describe(error: unknown): string {
  const cause = (error as { cause?: unknown }).cause;
  return cause instanceof Error ? `${(error as Error).message}: ${cause.message}` : (error as Error).message;
}

/**
 * True when fetch failed before a connection was made (refused, DNS, TLS):
 * no byte of the request reached the server. Deno reports these as
 * "client error (Connect)"; a reset after connecting is "(SendRequest)".
 */
function neverConnected(error: unknown): boolean {
  return /client error \(Connect\)|Connection refused|dns error/i.test(describe(error));
}
