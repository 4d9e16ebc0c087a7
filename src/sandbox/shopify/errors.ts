/**
 * Error shapes of the Shopify Admin API as the sandbox reproduces them.
 *
 * Sources: the 401 body is the one Shopify sends for a bad access token (quoted in
 * community.shopify.com threads); THROTTLED and its `documentation` link from a
 * throttled response quoted on community.shopify.com (t/254776); the missing
 * `@idempotent` and missing `changeFromQuantity` messages from a live 2026-era store
 * (github luke-selrai/openclaw-workshop-kit#218); validation messages follow
 * graphql-ruby, which Shopify runs (`Field 'x' doesn't exist on type 'Y'`,
 * `undefinedField`). Where the exact wording is not published, the message is ours
 * and the code is Shopify's.
 */
import { GraphQLError, type GraphQLFormattedError, type SourceLocation } from "graphql";

/** Body of a 401 for a missing or wrong `X-Shopify-Access-Token`. */
export const UNAUTHORIZED_BODY = {
  errors: "[API] Invalid API key or access token (unrecognized login or wrong password)",
};

/** Body of a 404 (unknown API version or path). */
export const NOT_FOUND_BODY = { errors: "Not Found" };

/** Body of a 400 for a request without a usable `query`. */
export const MISSING_QUERY_BODY = { errors: { query: "Required parameter missing or invalid" } };

/** The top-level error of a throttled request. */
export function throttledError(): GraphQLFormattedError {
  return {
    message: "Throttled",
    extensions: { code: "THROTTLED", documentation: "https://shopify.dev/api/usage/rate-limits" },
  };
}

/** A query whose requested cost is above what one query may cost. */
export function maxCostExceededError(cost: number, maxCost: number): GraphQLFormattedError {
  return {
    message: `Query cost is ${cost}, which exceeds the single query max cost limit (${maxCost}).`,
    extensions: { code: "MAX_COST_EXCEEDED", cost, maxCost },
  };
}

/** Shopify's internal error (an injected fault inside a mutation). */
export function internalError(requestId: string): GraphQLError {
  return new GraphQLError(
    `Internal error. Looks like something went wrong on our end.\nRequest ID: ${requestId} (include this in support requests).`,
    { extensions: { code: "INTERNAL_SERVER_ERROR", requestId } },
  );
}

/** A Shopify request error with a code (BAD_REQUEST, INVALID_FIELD_ARGUMENTS, …). */
export function requestError(
  message: string,
  code: string,
  where?: { locations?: readonly SourceLocation[]; path?: (string | number)[] },
): GraphQLFormattedError {
  return {
    message,
    ...(where?.locations ? { locations: where.locations } : {}),
    ...(where?.path ? { path: where.path } : {}),
    extensions: { code },
  };
}

/** The request asks for something the sandbox does not model; loud, and not Shopify's. */
export function sandboxUnsupported(message: string): GraphQLError {
  return new GraphQLError(`Not supported by the Shopify sandbox: ${message}`, {
    extensions: { code: "SANDBOX_UNSUPPORTED" },
  });
}

const RULES: [RegExp, (m: RegExpMatchArray) => { message: string; extensions: Record<string, unknown> }][] = [
  [/^Cannot query field "(.+?)" on type "(.+?)"\./, (m) => ({
    message: `Field '${m[1]}' doesn't exist on type '${m[2]}'`,
    extensions: { code: "undefinedField", typeName: m[2], fieldName: m[1] },
  })],
  [/^Unknown argument "(.+?)" on field "(?:.+?)\.(.+?)"\./, (m) => ({
    message: `Field '${m[2]}' doesn't accept argument '${m[1]}'`,
    extensions: { code: "argumentNotAccepted", name: m[2], typeName: "Field", argumentName: m[1] },
  })],
  [/^Field "(.+?)" argument "(.+?)" of type "(.+?)" is required, but it was not provided\./, (m) => ({
    message: `Field '${m[1]}' is missing required arguments: ${m[2]}`,
    extensions: { code: "missingRequiredArguments", className: "Field", name: m[1], arguments: m[2] },
  })],
  [/^Field "(.+?)" of type "(.+?)" must have a selection of subfields\./, (m) => ({
    message: `Field must have selections (field '${m[1]}' returns ${
      m[2].replace(/[[\]!]/g, "")
    } but has no selections. Did you mean '${m[1]} { ... }'?)`,
    extensions: {
      code: "selectionMismatch",
      nodeName: `field '${m[1]}'`,
      typeName: m[2].replace(/[[\]!]/g, ""),
    },
  })],
  [/^Unknown directive "@(.+?)"\./, (m) => ({
    message: `Directive @${m[1]} is not defined`,
    extensions: { code: "undefinedDirective", directiveName: m[1] },
  })],
];

/**
 * A graphql-js validation error in Shopify's (graphql-ruby's) words where the rule
 * is a common one; graphql-js's own message otherwise.
 */
export function shopifyValidationError(error: GraphQLError): GraphQLFormattedError {
  const formatted = error.toJSON();
  for (const [pattern, build] of RULES) {
    const m = error.message.match(pattern);
    if (m) {
      const { message, extensions } = build(m);
      return { message, ...(formatted.locations ? { locations: formatted.locations } : {}), extensions };
    }
  }
  return formatted;
}
