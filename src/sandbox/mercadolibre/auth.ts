/**
 * OAuth of the MercadoLibre sandbox: `POST /oauth/token` (grant_type=refresh_token)
 * and the Bearer check of every other route.
 *
 * As MeLi does: refresh tokens are single-use and rotate (the one used dies, the new
 * one is the only valid one); issuing an access token does not invalidate earlier
 * unexpired ones (two replicas may briefly hold different tokens); a revoked grant
 * answers invalid_grant until the seller authorizes the app again. The static token
 * stands for a long-lived MELI_TOKEN and survives expiry and revocation of the grant.
 */
import {
  EXPIRED_TOKEN_BODY,
  INVALID_GRANT_DESCRIPTION,
  INVALID_TOKEN_BODY,
  type MeliFailure,
  oauthError,
  QUERY_TOKEN_BODY,
} from "./errors.ts";

/** `n` random hex digits. */
export function randomHex(n: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(Math.ceil(n / 2)));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, n);
}

/** `n` random decimal digits, the first not 0 (MeLi app ids are numbers). */
export function randomDigits(n: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return [...bytes].map((b, i) => (i === 0 ? 1 + (b % 9) : b % 10)).join("");
}

/** Settings of {@link MeliAuth}. */
export interface MeliAuthSettings {
  clientId: string;
  clientSecret: string;
  userId: number;
  refreshToken: string;
  staticToken: string;
  accessTokenTtlSeconds: number;
  now: () => number;
}

/** The 200 body of `/oauth/token`. */
export interface MeliTokenBody {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  scope: string;
  user_id: number;
  refresh_token: string;
}

/** What `/oauth/token` answered. */
export type TokenOutcome = { ok: true; body: MeliTokenBody } | ({ ok: false } & MeliFailure);

/** The app's grant for one seller and the access tokens issued from it. */
export class MeliAuth {
  #refreshToken: string;
  #refreshValid = true;
  /** Issued access token → expiry (ms). Deleted when the grant is revoked. */
  #issued = new Map<string, number>();

  constructor(readonly settings: MeliAuthSettings) {
    this.#refreshToken = settings.refreshToken;
  }

  /** A new refresh token in MeLi's format (`TG-<hex>-<user id>`). */
  newRefreshToken(): string {
    return `TG-${randomHex(24)}-${this.settings.userId}`;
  }

  /** The refresh token valid now (after a revocation: the last one, which no longer works). */
  currentRefreshToken(): string {
    return this.#refreshToken;
  }

  /** The seller authorizes the app again: a new refresh token, every older one invalid. */
  authorize(): string {
    this.#refreshToken = this.newRefreshToken();
    this.#refreshValid = true;
    return this.#refreshToken;
  }

  /** The seller revoked the app: the refresh token and every issued access token stop working. */
  revoke(): void {
    this.#refreshValid = false;
    this.#issued.clear();
  }

  /** Every issued access token expires now (the static token does not). */
  expireAll(): void {
    const t = this.settings.now();
    for (const token of this.#issued.keys()) this.#issued.set(token, t);
  }

  /** Number of issued access tokens still valid. */
  liveTokens(): number {
    const t = this.settings.now();
    return [...this.#issued.values()].filter((exp) => exp > t).length;
  }

  /**
   * Checks a request's credentials; undefined when it may go on. A token in the query
   * string is refused even with a good header: MeLi no longer reads it there.
   */
  check(authorization: string | null, query: URLSearchParams): MeliFailure | undefined {
    if (query.has("access_token")) return { status: 401, body: QUERY_TOKEN_BODY, invalid: true };
    const match = authorization?.match(/^Bearer\s+(\S+)\s*$/i);
    if (!match) return { status: 401, body: INVALID_TOKEN_BODY, invalid: false };
    const token = match[1];
    if (token === this.settings.staticToken) return undefined;
    const expiresAt = this.#issued.get(token);
    if (expiresAt === undefined) return { status: 401, body: INVALID_TOKEN_BODY, invalid: false };
    if (this.settings.now() >= expiresAt) return { status: 401, body: EXPIRED_TOKEN_BODY, invalid: false };
    return undefined;
  }

  /** `POST /oauth/token` with its parameters already parsed. */
  token(params: Record<string, unknown>): TokenOutcome {
    const str = (name: string) => typeof params[name] === "string" ? params[name] as string : undefined;
    const grantType = str("grant_type");
    if (grantType === undefined) {
      return fail(oauthError(400, "invalid_request", "grant_type is required", true));
    }
    if (grantType !== "refresh_token") {
      return fail(oauthError(
        400,
        "unsupported_grant_type",
        `unsupported grant_type ${JSON.stringify(grantType)}: this sandbox only takes refresh_token`,
        true,
      ));
    }
    for (const name of ["client_id", "client_secret", "refresh_token"]) {
      if (!str(name)) return fail(oauthError(400, "invalid_request", `${name} is required`, true));
    }
    // The client is checked first: a wrong secret must not burn the refresh token.
    if (str("client_id") !== this.settings.clientId || str("client_secret") !== this.settings.clientSecret) {
      return fail(oauthError(400, "invalid_client", "invalid client_id or client_secret", false));
    }
    if (!this.#refreshValid || str("refresh_token") !== this.#refreshToken) {
      return fail(oauthError(400, "invalid_grant", INVALID_GRANT_DESCRIPTION, false));
    }
    const accessToken = this.#newAccessToken();
    const ttl = this.settings.accessTokenTtlSeconds;
    this.#issued.set(accessToken, this.settings.now() + ttl * 1000);
    this.#refreshToken = this.newRefreshToken();
    return {
      ok: true,
      body: {
        access_token: accessToken,
        token_type: "Bearer",
        expires_in: ttl,
        scope: "offline_access read write",
        user_id: this.settings.userId,
        refresh_token: this.#refreshToken,
      },
    };
  }

  /** `APP_USR-<client id>-<MMddHH>-<hash>-<user id>`, as MeLi documents its tokens. */
  #newAccessToken(): string {
    return accessTokenFormat(this.settings.clientId, this.settings.userId, this.settings.now());
  }
}

/** An access token in MeLi's format, for the given app, user and time. */
export function accessTokenFormat(clientId: string, userId: number, at: number): string {
  const d = new Date(at);
  const stamp = [d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours()].map((n) => String(n).padStart(2, "0"))
    .join("");
  return `APP_USR-${clientId}-${stamp}-${randomHex(32)}-${userId}`;
}

function fail(failure: MeliFailure): TokenOutcome {
  return { ok: false, ...failure };
}
