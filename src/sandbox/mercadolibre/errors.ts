/**
 * Error shapes of the MercadoLibre API as the sandbox reproduces them.
 *
 * Every error body is MeLi's `{message, error, status, cause}`. Sources: the generic
 * 401/403/404/429/500/502/503 bodies are the ones MercadoLibre's developer docs list
 * under "Errores"; validation errors follow the documented `validation_error` shape
 * with `cause` entries `{department, cause_id, type, code, references, message}`
 * ("Validaciones"); OAuth errors carry `error_description` and the codes of the
 * `/oauth/token` reference (invalid_grant, invalid_client, invalid_request,
 * unsupported_grant_type). The items search's 400 `invalid.scroll.id` and 403 "Searching
 * another user items is restricted." are the ones listed under "Errors" of MeLi's "Items &
 * Searches" page. Where MeLi's exact wording is not published (closed, under review,
 * Full, optimistic locking, paging bounds), the message is ours and the style MeLi's.
 */

/** A MercadoLibre error body. */
export interface MeliErrorBody {
  message: string;
  error: string;
  status: number;
  cause: MeliCause[];
  /** Only on `/oauth/token` errors. */
  error_description?: string;
}

/** One entry of `cause`. */
export interface MeliCause {
  department: string;
  cause_id: number;
  type: "error" | "warning";
  code: string;
  references: string[];
  message: string;
}

/** An error the sandbox answers: status, body and whether the request was malformed. */
export interface MeliFailure {
  status: number;
  body: MeliErrorBody;
  /** True when the client sent something wrong (recorded in `invalidRequests()`). */
  invalid: boolean;
}

/** Builds a MeLi error body. */
export function meliError(
  status: number,
  error: string,
  message: string,
  cause: MeliCause[] = [],
): MeliErrorBody {
  return { message, error, status, cause };
}

// Stable cause ids per code, so identical failures serialize identically.
const CAUSE_IDS: Record<string, number> = {};
let nextCauseId = 3000;

/** A cause entry of type "error" (department "items" unless told). */
export function cause(code: string, message: string, references: string[], department = "items"): MeliCause {
  CAUSE_IDS[code] ??= nextCauseId++;
  return { department, cause_id: CAUSE_IDS[code], type: "error", code, references, message };
}

/** 400 `validation_error` with its causes (malformed request). */
export function validationError(causes: MeliCause[]): MeliFailure {
  return { status: 400, body: meliError(400, "validation_error", "Validation error", causes), invalid: true };
}

/** 400 `body.invalid_fields`: fields MeLi does not know or does not let you update. */
export function invalidFields(fields: string[]): MeliFailure {
  const list = fields.join(", ");
  return {
    status: 400,
    body: meliError(
      400,
      "body.invalid_fields",
      `The body has invalid fields [${list}]: they do not exist or cannot be updated`,
      fields.map((f) => cause("body.invalid_fields", `Field ${f} is not allowed`, [`body.${f}`])),
    ),
    invalid: true,
  };
}

/** 400 `body.invalid`: no JSON object where one is expected. */
export function invalidBody(detail: string): MeliFailure {
  return {
    status: 400,
    body: meliError(400, "body.invalid", `A JSON object body is expected (${detail})`),
    invalid: true,
  };
}

/** A request for something real MeLi does but the sandbox does not model; loud, and not MeLi's. */
export function sandboxUnsupported(what: string): MeliFailure {
  return {
    status: 400,
    body: meliError(400, "sandbox_unsupported", `Not supported by the MercadoLibre sandbox: ${what}`),
    invalid: true,
  };
}

/** 401 for a missing, unknown or revoked access token. */
export const INVALID_TOKEN_BODY = meliError(401, "unauthorized", "invalid access token");
/** 401 for an access token past its `expires_in` (refresh it). */
export const EXPIRED_TOKEN_BODY = meliError(401, "unauthorized", "expired access token");
/** 401 for `?access_token=`: MeLi stopped accepting tokens in the query string, only the header. */
export const QUERY_TOKEN_BODY = meliError(
  401,
  "unauthorized",
  "access_token in the query string is not accepted: send it in the header 'Authorization: Bearer $ACCESS_TOKEN'",
);
/** 429, without `Retry-After` (MeLi sends none). */
export const TOO_MANY_REQUESTS_BODY = meliError(429, "too_many_requests", "Too many requests");
/** 403 for resources of another user. */
export const FORBIDDEN_BODY = meliError(403, "forbidden", "You don't have permission to access the resource");
/** 403 for `/users/{id}/items/search` of another user. */
export const SEARCH_FORBIDDEN_BODY = meliError(
  403,
  "forbidden",
  "Searching another user items is restricted.",
);
/** 400 for a scroll id that is malformed, expired or already exhausted: start a new scan. */
export const INVALID_SCROLL_BODY = meliError(
  400,
  "invalid.scroll.id",
  "Invalid Scroll Id: Error decode reading Scroll ID",
);
/** 409 optimistic locking: another write to the item won; nothing applied. */
export const CONFLICT_BODY = meliError(
  409,
  "conflict",
  "Conflict: the item was modified by another request at the same time. Retry the request",
);

/** 404 for an item id that does not exist. */
export function itemNotFound(itemId: string): MeliFailure {
  return {
    status: 404,
    body: meliError(404, "not_found", `Item with id ${itemId} not found`),
    invalid: false,
  };
}

/** 404 for an unknown route (a client bug). */
export function routeNotFound(method: string, path: string): MeliFailure {
  return {
    status: 404,
    body: meliError(404, "not_found", `Route not found: ${method} ${path}`),
    invalid: true,
  };
}

/** 405 for a known route with another method (a client bug). */
export function methodNotAllowed(method: string, path: string): MeliFailure {
  return {
    status: 405,
    body: meliError(405, "method_not_allowed", `Method ${method} not allowed on ${path}`),
    invalid: true,
  };
}

/** A 5xx body as the docs list them. */
export function serverErrorBody(status: 500 | 502 | 503): MeliErrorBody {
  if (status === 500) return meliError(500, "internal_server_error", "Internal Server Error");
  if (status === 502) return meliError(502, "bad_gateway", "Bad Gateway");
  return meliError(503, "service_not_available", "Service not available");
}

/** An `/oauth/token` error: OAuth's `error`/`error_description` inside MeLi's shape. */
export function oauthError(
  status: number,
  error: string,
  description: string,
  invalid: boolean,
): MeliFailure {
  return {
    status,
    body: { error, error_description: description, message: description, status, cause: [] },
    invalid,
  };
}

/** The invalid_grant description MeLi sends for a used, expired or revoked refresh token. */
export const INVALID_GRANT_DESCRIPTION =
  "Error validating grant. Your authorization code or refresh token may be expired or it was already used";
